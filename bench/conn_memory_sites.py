#!/usr/bin/env python3
"""
Where an idle connection's memory goes: ``python3 bench/conn_memory_sites.py [--conns N] [--impls hub autobahn]``.

For each implementation: one server (``bench/_server.py IMPL --heartbeat 1``, as in
``bench/run.py``'s idle cases: hub ``HeartbeatPolicy.every(1.0, 3.0)``, autobahn
``autoPingInterval=1``), started under tracemalloc (``PYTHONTRACEMALLOC``); a snapshot of
its Python allocations before any connection, then N idle connections from
``bench/_wsload.py`` (answering every heartbeat; with ``--client-heartbeat S`` the hub
clients send their own heartbeat every S seconds as well), a few heartbeat rounds, and a
second snapshot.  The difference, divided by N, is what one connection keeps, by
allocation site (file and line, and by module), the largest first; and the server's RSS
per connection over the same interval (inflated by tracemalloc's own bookkeeping: compare
it only between implementations of one run).

Nearly deterministic, unlike RSS: the same tree gives the same bytes per connection
within about 1 % (shared tables such as the reactor's resize at different moments; the
hub's total varied by 2 B between two runs, autobahn's by 77 B).  Prints the tables, and with
``--json PATH`` writes them.  Bounded: every wait has a deadline, and only the processes
started here are stopped (by PID).  See docs/performance.md, "Where an idle connection's
memory goes".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import BenchError, Child, Processes, impl_env, server_stats  # noqa: E402

#: frames kept per allocation: the site, and who called it (--by traceback)
FRAMES = 8


def short(filename: str) -> str:
    """A file name from where its package starts (site-packages, the checkout, the stdlib)."""
    for marker in ("site-packages/", "dist-packages/", "/twisted_hub/", "/lib/python3"):
        at = filename.find(marker)
        if at >= 0:
            rest = filename[at + len(marker):]
            return "twisted_hub/" + rest if marker == "/twisted_hub/" else rest
    return filename


def diff(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, key: str, conns: int, top: int,
         ) -> list[dict[str, Any]]:
    """The C{top} largest growths grouped by C{key} ("lineno", "filename" or "traceback"), per connection."""
    rows = []
    for stat in after.compare_to(before, key):
        if stat.size_diff <= 0:
            continue
        frames = stat.traceback if key == "traceback" else stat.traceback[:1]
        where = [f"{short(f.filename)}:{f.lineno}" if key != "filename" else short(f.filename) for f in frames]
        rows.append({"site": where[0] if key != "traceback" else " <- ".join(where),
                     "bytes_per_conn": stat.size_diff / conns, "blocks_per_conn": stat.count_diff / conns})
    rows.sort(key=lambda r: -r["bytes_per_conn"])
    return rows[:top]


def measure(impl: str, conns: int, rounds: float, client_heartbeat: float | None, top: int) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="conn-sites-")
    with Processes() as procs:
        server = Child(f"{impl} server", ["_server.py", impl, "--heartbeat", "1", "--timeout", "3"],
                       dict(impl_env(impl), PYTHONTRACEMALLOC=str(FRAMES)))
        procs.children.append(server)
        port = int(server.expect("ready", 90)["port"])
        server_stats(server)  # warms the stats path (its first gc.collect, its imports)
        first = os.path.join(workdir, "before")
        server.send(f"snapshot {first}")
        before_rss = server.expect("snapshot", 60)["rss"]
        argv = ["_wsload.py", impl, str(port), str(conns), "--timeout", "120"]
        if client_heartbeat and impl == "hub":
            argv += ["--watch", str(client_heartbeat), str(client_heartbeat * 3)]
        load = Child(f"{impl} load", argv, impl_env(impl))
        procs.children.append(load)
        ready = load.expect("ready", 150)["conns"]
        if ready != conns:
            raise BenchError(f"{impl}: {ready} of {conns} connections opened")
        time.sleep(rounds)  # heartbeat rounds: what a heartbeat leaves behind counts too
        second = os.path.join(workdir, "after")
        server.send(f"snapshot {second}")
        after = server.expect("snapshot", 120)
        if after["conns"] != conns:
            raise BenchError(f"{impl}: the server holds {after['conns']} of {conns} connections")
    snap0, snap1 = tracemalloc.Snapshot.load(first), tracemalloc.Snapshot.load(second)
    for path in (first, second):
        os.unlink(path)
    os.rmdir(workdir)
    total = sum(s.size_diff for s in snap1.compare_to(snap0, "filename")) / conns
    return {
        "impl": impl, "conns": conns, "bytes_per_conn": total,
        "rss_per_conn_traced": (after["rss"] - before_rss) / conns,
        "by_line": diff(snap0, snap1, "lineno", conns, top),
        "by_module": diff(snap0, snap1, "filename", conns, top),
        "by_traceback": diff(snap0, snap1, "traceback", conns, top),
    }


def show(result: dict[str, Any], tracebacks: bool) -> None:
    print(f"\n== {result['impl']}: {result['conns']} idle connections, heartbeats on ==")
    print(f"Python allocations: {result['bytes_per_conn']:,.0f} B/connection"
          f" (RSS with tracemalloc on: {result['rss_per_conn_traced']:,.0f} B/connection)")
    tables = [("by line", "by_line"), ("by module", "by_module")]
    if tracebacks:
        tables.append(("by traceback", "by_traceback"))
    for title, key in tables:
        print(f"\n  {title}:  B/conn  blocks/conn  site")
        for row in result[key]:
            print(f"  {row['bytes_per_conn']:10,.1f}  {row['blocks_per_conn']:6.2f}  {row['site']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--impls", nargs="+", default=["hub", "autobahn"], choices=["hub", "autobahn"])
    parser.add_argument("--rounds", type=float, default=3.0, help="seconds of 1 s heartbeats before the second snapshot")
    parser.add_argument("--client-heartbeat", type=float, metavar="S",
                        help="hub clients send their own heartbeat every S seconds too")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--tracebacks", action="store_true", help="also group by the full traceback (8 frames)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()
    results = [measure(impl, args.conns, args.rounds, args.client_heartbeat, args.top) for impl in args.impls]
    for result in results:
        show(result, args.tracebacks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(["python3", "bench/conn_memory_sites.py", *sys.argv[1:]]),
                       "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
