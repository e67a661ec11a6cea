#!/usr/bin/env python3
"""
Cross-node fan-out on Redis: ``python3 bench/scaleout.py [--quick] [--repeats N]``.

Starts its own ``redis-server`` (free loopback port, persistence off) and
runs, interleaved, with the same load processes as ``bench/run.py``:

- ``hub1``: one twisted-hub process, one group of 500 members;
- ``hub2``: two twisted-hub processes on Redis (``RedisBackplane``), 250
  members each, the messages sent from the first;
- ``sio2``: two python-socketio servers on Redis (``AsyncRedisManager``,
  its scale-out), 250 members each, the messages emitted from the first
  (each emit awaited, so its loop runs between messages).

The hub cases run in two ways: ``-turns`` sends one message per reactor
turn (as when the messages come from separate calls), ``-burst`` sends all
of them in one turn (as ``bench/run.py``'s fanout).  In a burst, Twisted
writes the PUBLISHes to Redis only when the turn ends, so the second node
starts when the first has served its own members: the nodes work one after
the other instead of side by side.

Each case sends 200 messages of 100 bytes to the group and reports
delivered messages per second (every member of every node, from the first
send to the last arrival) and Redis ``PUBLISH`` calls per message (from
Redis's ``INFO commandstats``).  Targets (issue 14): ``hub2`` >= 0.6 x
``hub1`` and >= 3 x ``sio2``, one ``PUBLISH`` per message.  ``--quick`` is a
smoke test: tiny numbers, one repeat, no threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import open_file_limit_line  # noqa: E402
from run import BenchError, Processes, Settings, server_stats, start_loads  # noqa: E402

CASES = ("hub1-turns", "hub2-turns", "hub1-burst", "hub2-burst", "sio2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A redis-server of our own; stopped (by its PID) on exit."""

    def __init__(self) -> None:
        path = shutil.which("redis-server")
        if path is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.command("PING")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def command(self, *args: str) -> bytes:
        """One command over a fresh connection (RESP), answer as raw bytes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            s.sendall(request.encode())
            data = b""
            while not data.endswith(b"\r\n") or (data.startswith(b"$") and data.count(b"\r\n") < 2):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data

    def publishes(self) -> int:
        stats = self.command("INFO", "commandstats").decode()
        for line in stats.splitlines():
            if line.startswith("cmdstat_publish:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def fanout_case(case: str, redis: Redis, s: Settings) -> dict[str, float]:
    impl = "socketio" if case == "sio2" else "hub"
    nodes = 1 if case.startswith("hub1") else 2
    per_node = s.fanout_members // nodes
    # A fresh start for every case: the previous case's nodes may still hold
    # presence leases in Redis (up to the lease) and would be counted.
    redis.command("FLUSHALL")
    with Processes() as procs:
        servers, loads = [], []
        for i in range(nodes):
            argv = ["_server.py", impl] + (["--redis", redis.url] if nodes > 1 else [])
            server = procs.start(f"{case} server {i}", *argv)
            port = int(server.expect("ready", 20)["port"])
            servers.append(server)
            loads += start_loads(procs, impl, port, per_node, s, 30)[0]
        if impl == "hub":
            # Every node must count every member before we measure.
            deadline = time.monotonic() + 15
            while server_stats(servers[0]).get("group") != per_node * nodes:
                if time.monotonic() > deadline:
                    raise BenchError(f"{case}: the first node never counted {per_node * nodes} members")
                time.sleep(0.1)
        elif nodes > 1:
            time.sleep(1.0)  # AsyncRedisManager's listener subscribes in the background

        def burst(messages: int) -> tuple[float, float, int, int]:
            for load in loads:
                load.send(f"arm {messages}")
            time.sleep(0.05)
            published = redis.publishes()
            # socketio awaits each emit (its loop runs between messages); the hub cases send either
            # one message per reactor turn (as when they come from separate calls) or all in one turn.
            command = "fanout_turns" if case.endswith("turns") else "fanout"
            servers[0].send(f"{command} {messages} {s.fanout_size}")
            started = servers[0].expect("fanout", 30)
            done = [load.expect("done", 30) for load in loads]
            return started["t0"], max(d["t_last"] for d in done), sum(d["frames"] for d in done), (
                redis.publishes() - published
            )

        burst(max(1, s.fanout_messages // 10))  # warm-up
        t0, t_last, delivered, published = burst(s.fanout_messages)
    expected = per_node * nodes * s.fanout_messages
    if delivered != expected:
        raise BenchError(f"{case}: delivered {delivered} of {expected}")
    return {
        "delivered_per_s": delivered / (t_last - t0),
        "publishes_per_msg": published / s.fanout_messages,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(open_file_limit_line(), flush=True)
    s = Settings(fanout_members=40, fanout_messages=20) if args.quick else Settings()
    repeats = 1 if args.quick else args.repeats
    redis = Redis()
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    try:
        for repeat in range(repeats):
            for case in CASES:
                result = fanout_case(case, redis, s)
                runs[case].append(result)
                print(f"repeat {repeat + 1} {case}: {result['delivered_per_s']:.0f} msgs/s, "
                      f"{result['publishes_per_msg']:.2f} PUBLISH/msg", flush=True)
    finally:
        redis.stop()
    median = {case: statistics.median(r["delivered_per_s"] for r in results) for case, results in runs.items()}
    def ratio(ours: str, reference: str) -> list[float]:
        return [a["delivered_per_s"] / b["delivered_per_s"] for a, b in zip(runs[ours], runs[reference])]

    ratios = {
        "hub2/hub1 (turns)": ratio("hub2-turns", "hub1-turns"),
        "hub2/hub1 (burst)": ratio("hub2-burst", "hub1-burst"),
        "hub2/sio2 (turns)": ratio("hub2-turns", "sio2"),
        "hub2/sio2 (burst)": ratio("hub2-burst", "sio2"),
    }
    print(f"members {s.fanout_members}, messages {s.fanout_messages} x {s.fanout_size} B, repeats {repeats}")
    for case in CASES:
        pubs = statistics.median(r["publishes_per_msg"] for r in runs[case])
        print(f"  {case}: {median[case]:.0f} delivered msgs/s (median), {pubs:.2f} PUBLISH per message")
    for name, values in ratios.items():
        target = 0.6 if "hub1" in name else 3.0
        verdict = "" if args.quick else (" ok" if statistics.median(values) >= target else " BELOW TARGET")
        print(f"  {name}: {statistics.median(values):.2f} [{min(values):.2f}..{max(values):.2f}] "
              f"(target >= {target}){verdict}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", f"scaleout-{time.strftime('%Y%m%dT%H%M%S')}{'-quick' if args.quick else ''}.json")
    with open(out, "w") as f:
        json.dump({"settings": {"members": s.fanout_members, "messages": s.fanout_messages, "size": s.fanout_size},
                   "runs": runs, "ratios": ratios}, f, indent=1)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
