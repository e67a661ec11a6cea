"""
Heartbeats on a slow link: no false timeouts, and a dead link still found in
bound.  (docs/heartbeat.md, "Measured detection delay")

    python3 bench/slow_link.py --clients 20 --one-way 0.6 --interval 1 --timeout 3 --duration 60

One process: a hub server with server heartbeats, and N clients with their
own heartbeats, every byte through a TCP proxy on 127.0.0.1 that delays each
direction by --one-way seconds (round trip twice that).  After --duration
seconds it counts the connections either side dropped (a false timeout: the
peer was alive), then blackholes the proxy and measures how long each side
takes to report TIMED_OUT; the bound is interval + timeout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests._delay_proxy import DelayingProxy  # noqa: E402


async def run(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet import task
    from twisted.internet.defer import DeferredList

    from twisted_hub import DisconnectKind, HeartbeatPolicy, Hub, HubClientOptions, HubServerFactory, connect
    from twisted_hub.types import DisconnectReason

    server_drops: list[tuple[float, DisconnectReason]] = []

    class SlowHub(Hub):
        hub_name = "slow"

        def on_disconnected(self, reason: DisconnectReason) -> None:
            server_drops.append((time.monotonic(), reason))

    policy = HeartbeatPolicy(enabled=True, interval=args.interval, timeout=args.timeout)
    listening = reactor.listenTCP(0, HubServerFactory([SlowHub], heartbeat=policy), interface="127.0.0.1")
    proxy = DelayingProxy(reactor, listening.getHost().port, delay=args.one_way)
    port = proxy.listen()
    options = HubClientOptions(heartbeat=policy)
    clients = []
    for _ in range(args.clients):
        clients.append(await connect(f"ws://127.0.0.1:{port}/hub/slow", options=options).addTimeout(30, reactor))
    await task.deferLater(reactor, args.duration, lambda: None)
    client_drops = [c.disconnect_reason for c in clients if c.disconnect_reason is not None]
    round_trips = [c.round_trip for c in clients]
    print(
        f"clients={args.clients} one-way={args.one_way}s (rtt {2 * args.one_way:.1f}s) "
        f"interval={args.interval}s timeout={args.timeout}s duration={args.duration}s"
    )
    print(f"false timeouts: client side {len(client_drops)}, server side {len(server_drops)}")
    print(f"client-measured round trip: median {statistics.median(round_trips):.3f}s")
    proxy.blackhole = True
    blackholed_at = time.monotonic()
    waits = [c.wait_for_disconnect() for c in clients]
    await DeferredList(waits).addTimeout(args.interval + args.timeout + 10, reactor)
    client_delays = sorted(c.disconnected_at - blackholed_at for c in clients)  # type: ignore[attr-defined]
    await task.deferLater(reactor, 1.0, lambda: None)
    server_delays = sorted(at - blackholed_at for at, r in server_drops if r.kind is DisconnectKind.TIMED_OUT)
    kinds = {c.disconnect_reason.kind.value for c in clients if c.disconnect_reason is not None}
    bound = args.interval + args.timeout
    print(f"blackholed: client reasons {sorted(kinds)}; bound interval+timeout = {bound:.1f}s")
    print(
        f"client detection (s): min {client_delays[0]:.3f} "
        f"median {statistics.median(client_delays):.3f} max {client_delays[-1]:.3f}"
    )
    if server_delays:
        print(
            f"server detection (s): n={len(server_delays)} min {server_delays[0]:.3f} "
            f"median {statistics.median(server_delays):.3f} max {server_delays[-1]:.3f}"
        )
    await proxy.stop()
    await listening.stopListening()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--one-way", type=float, default=0.6)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()

    from twisted.internet import defer, task

    from twisted_hub.types import HubClientProtocol

    # Record when each client learned its connection was gone.
    original = HubClientProtocol.onClose

    def on_close(self: Any, *a: Any) -> None:
        if not hasattr(self, "disconnected_at"):
            self.disconnected_at = time.monotonic()
        original(self, *a)

    HubClientProtocol.onClose = on_close  # type: ignore[method-assign]
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
