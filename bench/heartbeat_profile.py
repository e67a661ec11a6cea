#!/usr/bin/env python3
"""
What one idle heartbeat costs the server, by function: ``python3 bench/heartbeat_profile.py [--conns N] [--seconds S]``.

One server (``bench/_server.py IMPL --heartbeat 1``, as in ``bench/run.py``'s idle cases),
N idle connections from ``bench/_wsload.py`` answering every heartbeat, a warm-up, then
cProfile in the server for S seconds of 1 s heartbeats.  Prints the heartbeats answered in
that window (as the load processes count them), and per heartbeat: function calls in
total, and the functions with the most own time and the most calls (calls per heartbeat
are deterministic; times are cProfile's, inflated by it and by the machine's load).
``--impls hub autobahn`` profiles raw autobahn's autoPing the same way.  Bounded: every
wait has a deadline, and only the processes started here are stopped (by PID).
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import Processes, Settings, start_loads, start_server  # noqa: E402


def short(filename: str) -> str:
    for marker in ("site-packages/", "/twisted_hub/", "/lib/python3"):
        at = filename.find(marker)
        if at >= 0:
            rest = filename[at + len(marker):]
            return "twisted_hub/" + rest if marker == "/twisted_hub/" else rest
    return filename


def profile(impl: str, conns: int, seconds: float, warmup: float, top: int, keep: str | None) -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="hb-profile-"), "stats")
    with Processes() as procs:
        server, port = start_server(procs, impl, 1.0, 3.0)
        loads, ready, _ = start_loads(procs, impl, port, conns, Settings(), 120.0)
        time.sleep(warmup)

        def beats() -> int:
            for load in loads:
                load.send("count")
            return sum(load.expect("count", 30)["beats"] for load in loads)

        server.send("profile")
        server.expect("profiling", 30)
        before = beats()
        time.sleep(seconds)
        after = beats()
        server.send(f"profile_stop {path}")
        server.expect("profiled", 60)
    answered = after - before
    stats = pstats.Stats(path)
    if keep:
        stats.dump_stats(keep)
    os.unlink(path)
    os.rmdir(os.path.dirname(path))
    rows = stats.stats  # type: ignore[attr-defined]
    total_calls = sum(nc for (_, nc, _, _, _) in rows.values())
    print(f"\n== {impl}: {ready} connections, {answered} heartbeats answered in {seconds:.0f} s of profiling ==")
    print(f"function calls per heartbeat: {total_calls / answered:.1f}"
          f"; profiled CPU per heartbeat: {stats.total_tt / answered * 1e6:.1f} us")  # type: ignore[attr-defined]
    entries = [(func, nc, tt) for func, (_, nc, tt, _, _) in rows.items()]
    for title, key in (("own time", lambda e: -e[2]), ("calls", lambda e: -e[1])):
        print(f"\n  by {title}: us/beat  calls/beat  function")
        for (filename, line, name), nc, tt in sorted(entries, key=key)[:top]:
            print(f"  {tt / answered * 1e6:8.2f}  {nc / answered:8.2f}  {short(filename)}:{line}({name})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--impls", nargs="+", default=["hub"], choices=["hub", "autobahn"])
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--keep", metavar="PATH", help="also write the statistics to PATH.IMPL (pstats)")
    args = parser.parse_args()
    for impl in args.impls:
        profile(impl, args.conns, args.seconds, args.warmup, args.top, f"{args.keep}.{impl}" if args.keep else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
