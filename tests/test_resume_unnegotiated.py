"""
Until the sessions negotiate the resume capability (docs/resumption.md),
a server treats its messages exactly as before the codec knew them: kinds
20-24 and a heartbeat carrying an ack close that connection with 4002, and
other connections carry on.  Through the whole server (HubTestServer).
"""

from __future__ import annotations

import msgpack

from twisted_hub._wire import CloseCode

from . import test_server

_TOKEN = bytes(range(32))


class ResumeMessagesRefusedTests(test_server.ServerTestBase):
    send_raw = test_server.BadInputTests.send_raw
    check_closed = test_server.BadInputTests.check_closed

    def test_resume_kinds(self) -> None:
        """RESUME and ACK (client kinds) and the server-only kinds 20, 22, 23 close with 4002."""
        arrays: list[list[object]] = [
            [21, _TOKEN, 0],
            [24, 0],
            [20, _TOKEN, 120.0],
            [22, 0, _TOKEN],
            [23, "window-expired", ""],
        ]
        for array in arrays:
            self.setUp()
            bad, good = self.send_raw(msgpack.packb(array, use_bin_type=True))
            self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_heartbeat_acks(self) -> None:
        """A heartbeat answer or a client heartbeat with the resume ack field closes with 4002."""
        for array in ([10, 1, 0], [11, 1, 0, 0]):
            self.setUp()
            bad, good = self.send_raw(msgpack.packb(array))
            self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)
