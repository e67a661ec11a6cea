"""
The reactor turn in which a server loses many connections at once, with
lost connections torn down at most 256 per turn (``paced``, the default:
``twisted_hub._twisted.loss_pacing``) and all in that turn (``unpaced``),
side by side, interleaved (issue 24 item 4; docs/performance.md, "A reconnect
storm against one process").

    python3 bench/loss_turn.py --clients 5000 --repeats 3

Per repeat and mode: a hub server in this process (EPoll reactor, server
heartbeats every 5 s) and one ``bench/_wsload.py --reconnect`` process with
``--clients`` connections; once all are open the load process resets every
one at once (RST) and reopens them with full jitter.  Measured over the next
2 s: the longest reactor turn's work (from the poll's return to the end of
the turn's I/O handling, and each run of timers; the wait inside the poll is
not work) and the server CPU.  Prints one JSON line per run and a summary
with the median of each mode and the ratio paced ÷ unpaced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import HUB_NAME, ROOT, raise_nofile

WINDOW = 2.0


def serve_one(clients: int, per_turn: int | None) -> dict[str, float]:
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor, threads

    from twisted_hub import HeartbeatPolicy, Hub, HubServerFactory, hub, method

    @hub(HUB_NAME)
    class BenchHub(Hub):
        @method
        def echo(self, value: object) -> object:
            return value

    factory = HubServerFactory(
        [BenchHub], allowed_origins=["*"], max_connections_per_ip=None,
        heartbeat=HeartbeatPolicy(enabled=True, interval=5, timeout=15),
    )
    if per_turn is None:
        factory.loss_pacer.per_turn = 10**9  # every loss torn down in its own turn
    port = reactor.listenTCP(0, factory, backlog=4096, interface="127.0.0.1")
    turns: list[float] = []
    state = {"recording": False, "polled": 0.0}
    poller = reactor._poller  # type: ignore[attr-defined]

    class TimedPoller:
        def poll(self, *args: object) -> object:
            events = poller.poll(*args)
            state["polled"] = time.perf_counter()
            return events

        def __getattr__(self, name: str) -> object:
            return getattr(poller, name)

    reactor._poller = TimedPoller()  # type: ignore[attr-defined]
    do_iteration, run_timers = reactor.doIteration, reactor.runUntilCurrent

    def iteration(delay: float | None) -> None:
        do_iteration(delay)
        if state["recording"]:
            turns.append(time.perf_counter() - state["polled"])

    def timers() -> None:
        started = time.perf_counter()
        run_timers()
        if state["recording"]:
            turns.append(time.perf_counter() - started)

    reactor.doIteration = iteration  # type: ignore[method-assign]
    reactor.runUntilCurrent = timers  # type: ignore[method-assign]
    load = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "bench", "_wsload.py"), "--reconnect", "--concurrency", "100",
         "hub", str(port.getHost().port), str(clients)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )
    result: dict[str, float] = {}

    def wait_ready() -> None:
        assert load.stdout is not None
        for line in load.stdout:
            event = json.loads(line)
            if event["event"] == "ready":
                if event["conns"] != clients:
                    raise SystemExit(f"only {event['conns']} of {clients} connections opened")
                return
            if event["event"] == "error":
                raise SystemExit(f"load process: {event}")
        raise SystemExit("the load process ended before it was ready")

    def reset(_: object) -> None:
        assert load.stdin is not None
        opened = factory.connection_count
        cpu = time.process_time()
        state["recording"] = True
        load.stdin.write(b"drop\n")
        load.stdin.flush()

        def done() -> None:
            state["recording"] = False
            result.update(
                open=opened, longest_turn_ms=round(max(turns) * 1e3, 1),
                cpu_ms=round((time.process_time() - cpu) * 1e3, 1),
            )
            load.kill()
            load.wait()
            reactor.stop()

        reactor.callLater(WINDOW, done)

    def failed(failure: object) -> None:
        print(failure, file=sys.stderr)
        load.kill()
        reactor.stop()

    threads.deferToThread(wait_ready).addCallbacks(reset, failed)
    reactor.run()
    if not result:
        raise SystemExit("no measurement")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", choices=["paced", "unpaced"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        raise_nofile()
        print(json.dumps(serve_one(args.clients, None if args.serve == "unpaced" else 256)))
        return
    runs: dict[str, list[dict[str, float]]] = {"paced": [], "unpaced": []}
    for repeat in range(args.repeats):
        for mode in ("paced", "unpaced"):
            out = subprocess.run(
                [sys.executable, __file__, "--serve", mode, "--clients", str(args.clients)],
                check=True, capture_output=True, text=True, timeout=300,
            )
            run = json.loads(out.stdout.strip().splitlines()[-1])
            runs[mode].append(run)
            print(json.dumps({"repeat": repeat + 1, "mode": mode, **run}), flush=True)
    summary = {}
    for key in ("longest_turn_ms", "cpu_ms"):
        paced = statistics.median(run[key] for run in runs["paced"])
        unpaced = statistics.median(run[key] for run in runs["unpaced"])
        summary[key] = {"paced": paced, "unpaced": unpaced, "paced/unpaced": round(paced / unpaced, 2)}
    print(json.dumps({"clients": args.clients, "repeats": args.repeats, "median": summary}))


if __name__ == "__main__":
    main()
