"""
A hub server process for the real-process heartbeat tests.

    python3 tests/helpers/heartbeat_server.py --interval 0.5 --timeout 1.0

Listens on a free 127.0.0.1 port and prints "PORT <n>" when ready.  The
"probe" hub has echo(value), block(seconds) and stall_after_next_beat(seconds)
(both block the reactor on purpose) and reports every disconnect as "DISCONNECTED <id> <kind>" on stdout,
followed by "DROPPED <id> <time.monotonic() at that moment>" (the machine's monotonic clock, which the
test process shares: when the server dropped it, not when a busy test process read the line),
and "GRACE <message>" whenever it deferred heartbeat timeouts because its own reactor was stalled
(docs/heartbeat.md, "Stall awareness": those peers get one more exchange).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--no-stall-grace", action="store_true")
    parser.add_argument("--any-traffic-counts", action="store_true")
    parser.add_argument("--socket-buffer", type=int, default=0, help="SO_RCVBUF/SO_SNDBUF of every connection")
    args = parser.parse_args()

    from twisted.internet import reactor

    from twisted_hub import HeartbeatPolicy, Hub, HubServerFactory, method
    from twisted_hub._twisted.liveness import ServerHeartbeatScheduler
    from twisted_hub.types import DisconnectReason

    # Process-wide on purpose: the patched tick below (a patch of the class,
    # so every connection's scheduler) consumes what any ProbeHub asked for.
    stall_after_beat: list[float] = []
    original_tick = ServerHeartbeatScheduler._tick

    def tick_then_maybe_stall(self: ServerHeartbeatScheduler) -> None:
        if not stall_after_beat:
            original_tick(self)
            return
        # Block right after a heartbeat was written: it leaves only when the
        # reactor runs again, its answer comes after that, and its timeout
        # check fires late.  The beat stays in Twisted's buffer as it does
        # when it is not the connection's first write of the reactor turn or
        # the socket buffer is full; a beat sent straight to the socket
        # (write_through) would be answered during the stall and read before
        # the check, and no grace would be needed.
        from twisted_hub._twisted import fastpath as _autobahn

        direct = _autobahn.write_through
        _autobahn.write_through = lambda transport, data: transport.write(data)
        try:
            original_tick(self)
        finally:
            _autobahn.write_through = direct
        time.sleep(stall_after_beat.pop())
        print("STALLED", flush=True)

    ServerHeartbeatScheduler._tick = tick_then_maybe_stall  # type: ignore[method-assign]

    class ProbeHub(Hub):
        hub_name = "probe"

        def __init__(self, stall_requests: list[float]) -> None:
            self.stall_requests = stall_requests

        @method
        def echo(self, value: Any) -> Any:
            return value

        @method
        def block(self, seconds: float) -> float:
            time.sleep(seconds)  # a stalled reactor, on purpose
            return seconds

        @method
        def stall_after_next_beat(self, seconds: float) -> None:
            self.stall_requests.append(seconds)

        def on_disconnected(self, reason: DisconnectReason) -> None:
            print(f"DISCONNECTED {self.connection.id} {reason.kind.value}", flush=True)
            print(f"DROPPED {self.connection.id} {time.monotonic():.6f}", flush=True)

    policy = HeartbeatPolicy()
    if args.interval is not None:
        policy = HeartbeatPolicy(
            enabled=True, interval=args.interval, timeout=args.timeout, stall_grace=not args.no_stall_grace,
            any_traffic_counts=args.any_traffic_counts,
        )
    # Any origin: the slow-link browser client runs in a blank page (its Origin is "null"), and the
    # default (same host only, docs/deploying.md) refuses it; only this test's clients reach the port.
    factory = HubServerFactory([partial(ProbeHub, stall_after_beat)], heartbeat=policy, allowed_origins=["*"])
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    if args.socket_buffer:
        # Set on the listening socket, so every accepted connection has it
        # from its start (and Linux does not grow it): a stopped server's
        # kernel then takes only that much of what clients send.
        import socket

        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.socket_buffer)
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.socket_buffer)
    from twisted.logger import formatEvent, globalLogPublisher

    def report_grace(event: dict[str, Any]) -> None:
        if "reactor was stalled" in (event.get("log_format") or ""):
            print(f"GRACE {formatEvent(event)}", flush=True)

    globalLogPublisher.addObserver(report_grace)
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
