"""
The server side of tests/test_hostile.py: a hub hostile clients attack, and
a script serving it in one of two ways (the third, C{twistd hub}, loads the
hub with C{--hub tests.helpers.hostile:HostileHub}).

    python3 -m tests.helpers.hostile tcp|site MAX_OUTGOING_BUFFER

prints "PORT n" once it listens on 127.0.0.1.  Every disconnect is printed
as "GONE <connection id> <close code> <kind>", so a test sees the server's
own disconnect reason, and every join as "JOINED <connection id> <group>".
"""

from __future__ import annotations

import sys
from typing import Any

from twisted_hub import Hub, HubResource, HubServerFactory, hub, method
from twisted_hub.types import DisconnectReason


@hub("hostile")
class HostileHub(Hub):
    """Methods that make the server write a lot to one client or to a group."""

    @method
    def echo(self, data: Any) -> Any:
        return data

    @method
    def join(self, group: str) -> str:
        self.groups.add(group)
        print(f"JOINED {self.connection.id} {group}", flush=True)
        return self.connection.id

    @method
    def members(self, group: str) -> int:
        return self.groups.count(group)

    @method
    def blast(self, group: str, size: int, count: int) -> int:
        """Broadcast C{count} messages of C{size} bytes to C{group}."""
        payload = b"x" * size
        for _ in range(count):
            self.clients.group(group).said(payload)
        return count

    def on_disconnected(self, reason: DisconnectReason) -> None:
        # Under twistd, stdout goes to the log (one line per print).
        print(f"GONE {self.connection.id} {reason.code} {reason.kind.value}", flush=True)


def main(argv: list[str]) -> None:
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    mode, limit = argv[0], int(argv[1])
    factory = HubServerFactory([HostileHub], max_outgoing_buffer=limit)
    listening: Any
    if mode == "tcp":
        listening = factory
    elif mode == "site":
        root = Resource()  # type: ignore[no-untyped-call]
        root.putChild(b"hub", HubResource(factory))
        listening = Site(root)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    port = reactor.listenTCP(0, listening, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
