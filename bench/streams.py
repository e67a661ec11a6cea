#!/usr/bin/env python3
"""
A stream against the same data sent as receiver calls.  (docs/performance.md, docs/streams.md)

    python3 bench/streams.py
    python3 bench/streams.py --repeats 3 --small 20000 --large 400

Side by side, in one run, over 127.0.0.1: a hub server in a process of its
own (this script with C{--serve}), the Twisted client in this one.  Each
case moves C{count} items of C{size} bytes (msgpack bin) from the server to
the client:

- C{stream}: C{client.stream("blobs", count, size)}, a hub method's async
  generator under credit-based flow control (C{--window}, default the
  default window of 16 items), each item taken as it arrives;
- C{receiver calls}: C{client.call("push", count, size)}, the hub method
  sending C{self.clients.caller.item(payload)} C{count} times (no flow
  control: every call is written at once), the client counting them.

Two sizes: 100-byte items (C{--small} of them) and 16 KiB items
(C{--large}); each total stays under the server's 4 MiB unread-output limit,
which receiver calls would otherwise hit.  Time from the request to the last
item on the client's clock; items/s and MB/s (10^6 bytes of item payload)
per case: the median [min..max] of C{--repeats} repeats, the cases of one
repeat interleaved; the ratio stream / receiver calls within each repeat.
No timing assertion: numbers only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted_hub import Hub, HubClientOptions, hub, method  # noqa: E402

SMALL, LARGE = 100, 16 * 1024


def payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@hub("bench")
class StreamBenchHub(Hub):
    @method
    async def blobs(self, count: int, size: int) -> AsyncIterator[bytes]:
        data = payload(size)
        for _ in range(count):
            yield data

    @method
    def push(self, count: int, size: int) -> int:
        data = payload(size)
        caller = self.clients.caller
        for _ in range(count):
            caller.item(data)
        return count


def serve() -> None:
    from twisted.internet import reactor

    from twisted_hub import HubServerFactory

    factory = HubServerFactory([StreamBenchHub], url="ws://127.0.0.1/hub")
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


class Counter:
    """The client's receiver: counts the items the server pushes and fires when all came."""

    def __init__(self) -> None:
        self.expected = 0
        self.seen = 0
        self.bytes = 0
        self.done: Any = None

    def item(self, data: bytes) -> None:
        self.seen += 1
        self.bytes += len(data)
        if self.seen == self.expected and self.done is not None and not self.done.called:
            self.done.callback(None)


async def run_case(client: Any, counter: Counter, case: str, count: int, size: int, window: int) -> float:
    from twisted.internet.defer import Deferred

    received = 0
    started = time.perf_counter()
    if case == "stream":
        async for item in client.open_stream("blobs", [count, size], None, window=window):
            received += len(item)
    else:
        counter.expected, counter.seen, counter.bytes = count, 0, 0
        counter.done = Deferred()
        await client.call("push", count, size)
        if counter.seen < count:
            await counter.done
        received = counter.bytes
    elapsed = time.perf_counter() - started
    assert received == count * size, (case, received)
    return elapsed


async def measure(reactor: Any, port: int, args: argparse.Namespace) -> dict[tuple[str, int], list[float]]:
    from twisted_hub import connect

    counter = Counter()
    options = HubClientOptions(max_message_size=4 * 1024 * 1024)
    client = await connect(f"ws://127.0.0.1:{port}/hub", "bench", counter, options, clock=reactor, timeout=30)
    cases = [(case, size) for size in (SMALL, LARGE) for case in ("stream", "receiver calls")]
    counts = {SMALL: args.small, LARGE: args.large}
    results: dict[tuple[str, int], list[float]] = {key: [] for key in cases}
    for case, size in cases:  # warm-up, not recorded
        await run_case(client, counter, case, counts[size] // 10, size, args.window)
    for _ in range(args.repeats):
        for case, size in cases:
            results[(case, size)].append(await run_case(client, counter, case, counts[size], size, args.window))
    await client.disconnect()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", type=int, default=20_000, help="items of 100 bytes per case")
    parser.add_argument("--large", type=int, default=200, help="items of 16 KiB per case")
    parser.add_argument("--window", type=int, default=16, help="the stream's credit window, in items (default: 16)")
    parser.add_argument("--record", metavar="PATH", help="also write the results as JSON to PATH (docs/performance.md)")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"], stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"the server did not start: {line!r}")
        port = int(line.split()[1])
        from twisted.internet.defer import ensureDeferred
        from twisted.internet.task import react

        outcome: dict[str, Any] = {}

        def run(reactor: Any) -> Any:
            d = ensureDeferred(measure(reactor, port, args))
            d.addCallback(lambda results: outcome.update(results=results))
            return d

        try:
            react(run)
        except SystemExit as e:
            if e.code:
                raise
    finally:
        server.terminate()
        server.wait(timeout=10)
    counts = {SMALL: args.small, LARGE: args.large}
    report(outcome["results"], counts, args.repeats, args.window)
    if args.record:
        record(args.record, outcome["results"], counts, args)


def record(path: str, results: dict[tuple[str, int], list[float]], counts: dict[int, int], args: Any) -> None:
    """The run as JSON: what bench/_results.ratio_strings reads to check the ratios docs/performance.md quotes."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    ratios = {}
    for size in (SMALL, LARGE):
        values = [c / s for s, c in zip(results[("stream", size)], results[("receiver calls", size)], strict=True)]
        ratios[f"{counts[size]} x {size} B"] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    document = {
        "bench": "streams",
        "command": "python3 bench/streams.py " + " ".join(sys.argv[1:]),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "load_average": os.getloadavg(),
        "window": args.window,
        "repeats": args.repeats,
        "seconds": {f"{case}, {counts[size]} x {size} B": times for (case, size), times in results.items()},
        "stream_ratios": ratios,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
        f.write("\n")


def report(results: dict[tuple[str, int], list[float]], counts: dict[int, int], repeats: int, window: int) -> None:
    print(f"{repeats} interleaved repeats; median [min..max]; stream window {window}; Python {sys.version.split()[0]}")
    print(f"{'case':<26} {'items/s':>28} {'MB/s':>22} {'stream / calls':>16}")
    for size in (SMALL, LARGE):
        count = counts[size]
        for case in ("stream", "receiver calls"):
            times = results[(case, size)]
            rates = [count / t for t in times]
            mbs = [count * size / t / 1e6 for t in times]
            ratio = ""
            if case == "stream":
                ratios = [c / s for s, c in zip(times, results[("receiver calls", size)], strict=True)]
                ratio = f"{statistics.median(ratios):.2f}x"
            print(
                f"{case + f' ({count} x {size} B)':<26} "
                f"{statistics.median(rates):>10,.0f} [{min(rates):,.0f}..{max(rates):,.0f}] "
                f"{statistics.median(mbs):>7.1f} [{min(mbs):.1f}..{max(mbs):.1f}] {ratio:>16}"
            )


if __name__ == "__main__":
    main()
