"""
A hub client process for the real-process heartbeat tests.

    python3 tests/helpers/heartbeat_client.py ws://127.0.0.1:PORT/hub/rooms lobby

Connects, joins the group, prints "READY <connection id>", then idles
(answering server heartbeats from its message handler) until killed.
"""

from __future__ import annotations

import sys


def main() -> None:
    url, room = sys.argv[1], sys.argv[2]
    from twisted.internet import reactor

    from twisted_hub import connect

    def joined(client: object) -> None:
        print(f"READY {client.connection_id}", flush=True)  # type: ignore[attr-defined]

    def failed(failure: object) -> None:
        print(f"FAILED {failure}", flush=True)
        reactor.stop()  # type: ignore[attr-defined]

    def connected(client: object) -> object:
        return client.call("join", room).addCallback(lambda _: joined(client))  # type: ignore[attr-defined]

    connect(url).addCallback(connected).addErrback(failed)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
