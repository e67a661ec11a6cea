#!/usr/bin/env python3
"""
Server memory through connection floods: ``python3 bench/memory.py [--conns N] [--cycles C] [--slow K]``.

One twisted-hub server (``bench/_server.py hub``, a bare ``HubServerFactory`` on
listenTCP, heartbeats off, default limits) and, on 127.0.0.1:

1. **connection floods**: C cycles of opening N idle hub connections
   (``bench/_wsload.py``) and closing them all.  Per cycle: RSS with the N
   connections open, the peak (``VmHWM``, reset before each cycle) and the
   RSS once every connection is gone (after ``gc.collect()`` in the server);
   with ``--trim``, also after ``malloc_trim(0)`` (what glibc could give back).
2. **slow-consumer flood**: K clients at once that each call ``echo`` with
   400 x 64 KiB and never read the results (``tests/helpers/hostile_client.py``);
   the server drops each at ``max_outgoing_buffer`` (4 MiB).  The peak while
   they are dropped and the RSS afterwards.

RSS and its peak are read from ``/proc/PID/status`` (Linux); the peak is
restarted through ``/proc/PID/clear_refs``.  Prints one table and writes JSON
to ``bench/results/``.  Bounded: every wait has a deadline, and only the
processes started here are stopped (by PID).  See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import ROOT, memory, open_file_limit, open_file_limit_line, reset_peak  # noqa: E402
from run import BenchError, Child, Processes, Settings, server_stats, start_loads, start_server  # noqa: E402

MiB = 1024 * 1024


def wait_for_connections(server: Child, wanted: int, timeout: float) -> int:
    """Poll the server's connection count until it is C{wanted}; return the last count."""
    deadline = time.monotonic() + timeout
    while True:
        conns = int(server_stats(server)["conns"])
        if conns == wanted or time.monotonic() > deadline:
            return conns
        time.sleep(0.2)


def trim(server: Child) -> int:
    """Ask the server to give free heap back to the system (malloc_trim); its RSS afterwards."""
    server.send("trim")
    return int(server.expect("trim", 10)["rss"])


def connection_cycles(
    server: Child, port: int, procs: Processes, conns: int, cycles: int, trim_each: bool
) -> list[dict[str, Any]]:
    settings = Settings()
    results = []
    for cycle in range(1, cycles + 1):
        server_stats(server)  # gc.collect() in the server
        before = memory(server.pid)["VmRSS"]
        reset_peak(server.pid)
        started = time.monotonic()
        loads, ready, _ = start_loads(procs, "hub", port, conns, settings, connect_limit=60.0, partial=True)
        open_rss = server_stats(server)["rss"]
        for load in loads:
            load.stop()
        left = wait_for_connections(server, 0, 30.0)
        if left:
            raise BenchError(f"cycle {cycle}: {left} connections still open 30 s after the clients quit")
        server_stats(server)
        after = memory(server.pid)
        trimmed = trim(server) if trim_each else None
        results.append({
            "cycle": cycle, "conns": ready, "rss_before": before, "rss_open": open_rss,
            "peak": after["VmHWM"], "rss_after": after["VmRSS"], "rss_after_trim": trimmed,
            "seconds": time.monotonic() - started,
        })
        print(f"cycle {cycle}: {ready} connections, RSS {before / MiB:.1f} -> open {open_rss / MiB:.1f}"
              f" (peak {after['VmHWM'] / MiB:.1f}) -> closed {after['VmRSS'] / MiB:.1f} MiB"
              + (f", after malloc_trim {trimmed / MiB:.1f} MiB" if trimmed is not None else ""), flush=True)
    return results


def slow_consumer_flood(server: Child, port: int, slow: int) -> dict[str, Any]:
    server_stats(server)
    before = memory(server.pid)["VmRSS"]
    reset_peak(server.pid)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    attackers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.hostile_client", str(port), "echo", "400", str(64 * 1024)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for _ in range(slow)
    ]
    try:
        deadline = time.monotonic() + 60.0
        outcomes = []
        for attacker in attackers:  # each prints ready, then sent or reset
            assert attacker.stdout is not None
            lines = []
            while len(lines) < 2 and time.monotonic() < deadline:
                line = attacker.stdout.readline().strip()
                if not line:
                    break
                lines.append(line)
            outcomes.append(lines[-1] if lines else "?")
        left = wait_for_connections(server, 0, 30.0)
        server_stats(server)
        after = memory(server.pid)
    finally:
        for attacker in attackers:
            attacker.kill()
            attacker.wait(timeout=5)
    result = {
        "clients": slow, "dropped": slow - left, "outcomes": outcomes, "rss_before": before,
        "peak": after["VmHWM"], "rss_after": after["VmRSS"],
    }
    print(f"slow-consumer flood: {slow} clients, {slow - left} dropped, RSS {before / MiB:.1f}"
          f" (peak {after['VmHWM'] / MiB:.1f}) -> after {after['VmRSS'] / MiB:.1f} MiB", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--slow", type=int, default=20, help="slow consumers in the second flood")
    parser.add_argument("--trim", action="store_true", help="call malloc_trim(0) in the server after each cycle")
    args = parser.parse_args()
    print(open_file_limit_line(), flush=True)
    with Processes() as procs:
        server, port = start_server(procs, "hub")
        server_stats(server)
        start = memory(server.pid)["VmRSS"]
        print(f"server idle: RSS {start / MiB:.1f} MiB", flush=True)
        cycles = connection_cycles(server, port, procs, args.conns, args.cycles, args.trim)
        flood = slow_consumer_flood(server, port, args.slow) if args.slow else None
    report = {"command": " ".join(["python3", "bench/memory.py", *sys.argv[1:]]), "rss_idle": start,
              "open_file_limit": open_file_limit(),
              "cycles": cycles, "slow_consumer_flood": flood, "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", time.strftime("memory-%Y%m%d-%H%M%S.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
