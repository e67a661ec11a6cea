"""
Until the sessions negotiate the resume capability (docs/resumption.md),
a server treats its messages exactly as before the codec knew them: kinds
20-24 and a heartbeat carrying an ack close that connection with 4002, and
other connections carry on.  Through the whole server (HubTestServer).
"""

from __future__ import annotations

import msgpack

from twisted_hub._core.wire import CloseCode

from . import test_server

_TOKEN = bytes(range(32))


class ResumeMessagesRefusedTests(test_server.ServerTestBase):
    send_raw = test_server.BadInputTests.send_raw
    check_closed = test_server.BadInputTests.check_closed

    def refused(self, array: list[object]) -> None:
        bad, good = self.send_raw(msgpack.packb(array, use_bin_type=True))
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_resume(self) -> None:
        """RESUME (a client kind of resume) closes with 4002."""
        self.refused([21, _TOKEN, 0])

    def test_ack(self) -> None:
        """ACK closes with 4002."""
        self.refused([24, 0])

    def test_server_kinds(self) -> None:
        """SESSION, RESUMED and RESUME_REFUSED from a client close with 4002."""
        self.refused([20, _TOKEN, 120.0])

    def test_resumed(self) -> None:
        self.refused([22, 0, _TOKEN, "c"])

    def test_resume_refused(self) -> None:
        self.refused([23, "window-expired", ""])

    def test_heartbeat_answer_with_ack(self) -> None:
        """A heartbeat answer carrying the resume ack field closes with 4002."""
        self.refused([10, 1, 0])

    def test_client_heartbeat_with_ack(self) -> None:
        """A client heartbeat carrying the resume ack field closes with 4002."""
        self.refused([11, 1, 0, 0])
