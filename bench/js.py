#!/usr/bin/env python3
"""
The JavaScript client against the hub, side by side with the Python client:
``python3 bench/js.py [--quick] [--repeats N] [--only CASE ...]``.

- ``rpc1`` / ``rpc100``: RPC round trips per second over one connection with
  1 and 100 calls in flight, Python client (``_rpc_client.py hub``) and Node
  client (``_rpc_client.mjs``, js/dist) against the same ``bench`` hub server,
  a fresh server per run, repeats interleaved;
- ``fanout``: one group of 500 members, 200 messages of 100 bytes, the members
  being one Node process of 500 full JavaScript clients (``_wsload.mjs``: each
  decodes every frame and calls its receiver) versus the minimal Python frame
  counter of bench/run.py (``_wsload.py hub``): delivered messages per second,
  and the CPU per delivered message of the server and of the receiving process.
  The JS client is not the bottleneck when its CPU per message stays below the
  server's and the delivery rate matches the minimal receiver's.

Needs ``js/node_modules`` (``npm ci`` in js/) and builds js/dist first.
Reports median [min..max] and per-repeat ratios node / python; JSON goes to
``bench/results/``.  ``--quick`` is a smoke test, never a timing threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import ROOT, cpu_seconds, open_file_limit_line  # noqa: E402
from run import BenchError, Child, Processes, Settings, fmt_spread, quick_settings, spread, start_server  # noqa: E402

CASES = ("rpc1", "rpc100", "fanout")
CLIENTS = ("python", "node")


class NodeChild(Child):
    """A Node process speaking the same JSON-lines protocol as the Python children."""

    def __init__(self, name: str, argv: list[str]) -> None:
        node = shutil.which("node")
        if node is None:
            raise BenchError("node is not installed")
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [node, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd=HERE,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()


def start_node(procs: Processes, name: str, *argv: str) -> Child:
    child = NodeChild(name, list(argv))
    procs.children.append(child)
    return child


def case_rpc(client: str, inflight: int, s: Settings) -> dict[str, float]:
    with Processes() as procs:
        server, port = start_server(procs, "hub")
        window = ["--inflight", str(inflight), "--warmup", str(s.rpc_warmup), "--duration", str(s.rpc_duration),
                  "--server-pid", str(server.pid)]
        if client == "python":
            child = procs.start("python rpc client", "_rpc_client.py", "hub", str(port), *window)
        else:
            child = start_node(procs, "node rpc client", "_rpc_client.mjs", str(port), *window,
                               "--clk-tck", str(os.sysconf("SC_CLK_TCK")))
        cpu0 = cpu_seconds(child.pid)
        result = child.expect("result", s.rpc_warmup + s.rpc_duration + 25)
        # The Node client measures its own CPU over the window; the Python one is
        # measured here over its whole run (warm-up included), an upper bound.
        client_cpu = result.get("client_cpu", cpu_seconds(child.pid) - cpu0)
    calls = result["calls"]
    if calls <= 0:
        raise BenchError(f"{client}: no call completed")
    return {
        "calls_per_s": calls / result["elapsed"],
        "server_cpu_us_per_call": result["server_cpu"] / calls * 1e6,
        "client_cpu_us_per_call": client_cpu / calls * 1e6,
    }


def case_fanout(client: str, s: Settings) -> dict[str, float]:
    with Processes() as procs:
        server, port = start_server(procs, "hub")
        members = s.fanout_members
        if client == "python":
            load = procs.start("python load", "_wsload.py", "hub", str(port), str(members), "--timeout", "30")
        else:
            load = start_node(procs, "node load", "_wsload.mjs", str(port), str(members), "--timeout", "30")
        ready = load.expect("ready", 45)["conns"]
        if ready != members:
            raise BenchError(f"{client}: {ready} of {members} members ready")

        def burst(messages: int) -> tuple[float, float, int, float, float]:
            load.send(f"arm {messages}")
            time.sleep(0.05)  # let the load read "arm" before the first frame lands
            server_cpu0, load_cpu0 = cpu_seconds(server.pid), cpu_seconds(load.pid)
            server.send(f"fanout {messages} {s.fanout_size}")
            started = server.expect("fanout", 30)
            done = load.expect("done", 60)
            return (started["t0"], done["t_last"], done["frames"],
                    cpu_seconds(server.pid) - server_cpu0, cpu_seconds(load.pid) - load_cpu0)

        burst(max(1, s.fanout_messages // 10))  # warm-up
        t0, t_last, delivered, server_cpu, load_cpu = burst(s.fanout_messages)
    if delivered != members * s.fanout_messages:
        raise BenchError(f"{client}: delivered {delivered} of {members * s.fanout_messages}")
    return {
        "delivered_per_s": delivered / (t_last - t0),
        "server_cpu_us_per_msg": server_cpu / delivered * 1e6,
        "receiver_cpu_us_per_msg": load_cpu / delivered * 1e6,
    }


METRICS = {
    "rpc1": ["calls_per_s", "server_cpu_us_per_call", "client_cpu_us_per_call"],
    "rpc100": ["calls_per_s", "server_cpu_us_per_call", "client_cpu_us_per_call"],
    "fanout": ["delivered_per_s", "server_cpu_us_per_msg", "receiver_cpu_us_per_msg"],
}


def run_case(case: str, client: str, s: Settings) -> dict[str, float]:
    if case == "rpc1":
        return case_rpc(client, 1, s)
    if case == "rpc100":
        return case_rpc(client, 100, s)
    return case_fanout(client, s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: short windows, 1 repeat")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per case")
    parser.add_argument("--only", nargs="+", choices=CASES, help="run only these cases")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    print(open_file_limit_line(), flush=True)
    s = quick_settings() if args.quick else Settings()
    if args.repeats:
        s.repeats = args.repeats
    node = shutil.which("node")
    if node is None:
        print("node is not installed", file=sys.stderr)
        return 1
    subprocess.run([node, "build.mjs"], cwd=os.path.join(ROOT, "js"), check=True, stdout=subprocess.DEVNULL)
    command = "python3 bench/js.py " + " ".join(sys.argv[1:])
    started = time.time()
    runs: dict[str, dict[str, list[dict[str, float] | None]]] = {}
    failures: list[str] = []
    for case in args.only or list(CASES):
        runs[case] = {client: [] for client in CLIENTS}
        for repeat in range(s.repeats):
            for client in CLIENTS:
                try:
                    result: dict[str, float] | None = run_case(case, client, s)
                except BenchError as e:
                    result = None
                    failures.append(f"{case}/{client}#{repeat}: {e}")
                runs[case][client].append(result)
                shown = "FAILED" if result is None else fmt_spread(spread([result[METRICS[case][0]]]))
                print(f"[{time.time() - started:6.1f}s] {case:<7} {client:<6} #{repeat + 1}: {shown} "
                      f"{METRICS[case][0]}", flush=True)
    print(f"\n# command: {command}\n# median [min..max]; ratio = node / python, per repeat")
    summary: dict[str, Any] = {}
    for case, by_client in runs.items():
        print(f"\n== {case}")
        summary[case] = {}
        for metric in METRICS[case]:
            row = {c: spread([r[metric] for r in rs if r is not None]) for c, rs in by_client.items()
                   if any(r is not None for r in rs)}
            ratios = [n[metric] / p[metric] for p, n in zip(by_client["python"], by_client["node"])
                      if p is not None and n is not None and p[metric] > 0]
            summary[case][metric] = {"by_client": row, "ratio_node_python": spread(ratios) if ratios else None}
            cells = "  ".join(f"{c}={fmt_spread(row.get(c))}" for c in CLIENTS)
            ratio = fmt_spread(spread(ratios)) if ratios else "n/a"
            print(f"  {metric:<26} {cells}  node/python={ratio}")
    for failure in failures:
        print(f"FAILURE: {failure}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"js-{'quick-' if args.quick else ''}{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump({"command": command, "runs": runs, "summary": summary, "failures": failures}, f, indent=2)
    print(f"\nresults: {os.path.relpath(path, ROOT)}  ({time.time() - started:.0f}s)")
    missing = [f"{case}/{c}" for case, by in runs.items() for c, rs in by.items() if not any(r is not None for r in rs)]
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
