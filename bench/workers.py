#!/usr/bin/env python3
"""
``twistd hub --workers 2`` against ``--workers 1``, side by side:
``python3 bench/workers.py [--quick] [--repeats N]``.

Starts its own ``redis-server`` (free loopback port, persistence off); both
cases run the same command (the supervisor, its workers, the Redis
backplane, ``--metrics``), only ``--workers`` differs, interleaved over the
repeats.  Clients are ``bench/_wsload.py`` processes (the hub's wire, minimal
asyncio clients).

- ``fanout``: ``--fanout-members`` connections in one group, a trigger client
  calls ``fanout(M, 100)`` (one message per reactor turn on the worker that
  holds it; with 2 workers one ``PUBLISH`` each, and the other worker
  delivers to its members).  Server CPU (supervisor + workers, from
  /proc) per delivered message, Redis CPU per message, delivered messages
  per second (from the trigger's answer to the last arrival).
- ``idle``: ``--idle-conns`` connections, server heartbeats every 1 s,
  answered by the clients; server CPU per heartbeat answered over a
  ``--window`` second window.
- connections held: each worker's ``twisted_hub_connections`` from the
  combined ``/metrics``.

Everything runs on this machine: the clients take CPU from the same cores
as the server, so compare the two cases of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import cpu_seconds, now, open_file_limit_line  # noqa: E402
from run import BenchError, Processes  # noqa: E402
from scaleout import Redis  # noqa: E402

HUB = os.path.join(HERE, "_workers_hub.py") + ":WorkersBenchHub"


class Supervisor:
    """``twistd hub --workers N`` of our own; stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, workers: int, redis_url: str, heartbeat: bool) -> None:
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile=-",
            "hub", "--workers", str(workers), "--listen", "tcp:0:interface=127.0.0.1", "--hub", HUB,
            "--redis", redis_url, "--metrics", "--max-connections", "0", "--max-connections-per-ip", "0",
        ]
        if heartbeat:
            argv += ["--heartbeat-interval", "1", "--heartbeat-timeout", "3"]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
        self.workers = workers
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.port = int(self.wait(r"supervising \d+ hub worker\(s\) on 127\.0\.0\.1:(\d+)").group(1))
            self.wait(rf"all {workers} hub workers are listening")
            self.pids = [int(m) for m in re.findall(r"worker \d+ is listening \(pid (\d+)\)", "\n".join(self.lines))]
            self.wait("connected to Redis at", count=workers)
        except BaseException:
            self.stop()  # never left running
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._seen:
                self.lines.append(raw.decode(errors="replace"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait(self, pattern: str, timeout: float = 30.0, count: int = 1) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        with self._seen:
            while True:
                matches = [m for m in map(compiled.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise BenchError(f"supervisor: no {pattern!r}:\n{''.join(self.lines[-20:])}")
                self._seen.wait(min(left, 0.5))

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in [self.proc.pid, *self.pids])

    def connections(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {
            worker: float(value)
            for worker, value in re.findall(r'twisted_hub_connections\{hub="bench",worker="(\d+)"\} (\S+)', text)
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_loads(procs: Processes, port: int, total: int, per_process: int = 2000) -> list[Any]:
    count = max(1, -(-total // per_process))
    loads = [
        procs.start(f"load {i}", "_wsload.py", "hub", str(port), str(total // count + (i < total % count)),
                    "--path", "/hub", "--timeout", "60")
        for i in range(count)
    ]
    ready = sum(load.expect("ready", 90)["conns"] for load in loads)
    if ready != total:
        raise BenchError(f"only {ready} of {total} connections ready")
    return loads


def redis_cpu(redis: Redis) -> float:
    return cpu_seconds(redis.proc.pid)


def fanout_case(workers: int, redis: Redis, members: int, messages: int) -> dict[str, Any]:
    redis.command("FLUSHALL")
    supervisor = Supervisor(workers, redis.url, heartbeat=False)
    try:
        with Processes() as procs:
            loads = start_loads(procs, supervisor.port, members)
            held = supervisor.connections()
            time.sleep(1.0)  # every worker's mirror counts the others' members (joins travel through Redis)

            def burst(count: int) -> tuple[float, float, float, int, float]:
                for load in loads:
                    load.send(f"arm {count}")
                time.sleep(0.1)
                cpu0, redis0 = supervisor.cpu(), redis_cpu(redis)
                started = now()
                trigger = subprocess.run(
                    [sys.executable, "-m", "twisted_hub", "call", "--timeout", "120", f"ws://127.0.0.1:{supervisor.port}/hub",
                     "bench.fanout", str(count), "100"],
                    cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, timeout=150,
                )
                answered = now()
                if trigger.returncode != 0:
                    raise BenchError(f"trigger failed: {trigger.stdout!r} {trigger.stderr!r}")
                done = [load.expect("done", 60) for load in loads]
                t_last = max(d["t_last"] for d in done)
                return (supervisor.cpu() - cpu0, redis_cpu(redis) - redis0, t_last - started,
                        sum(d["frames"] for d in done), answered - started)

            burst(max(1, messages // 10))  # warm-up
            cpu, rcpu, seconds, delivered, call_seconds = burst(messages)
    finally:
        supervisor.stop()
    if delivered != members * messages:
        raise BenchError(f"delivered {delivered} of {members * messages}")
    return {
        "server_cpu_us_per_delivered": cpu / delivered * 1e6,
        "redis_cpu_us_per_message": rcpu / messages * 1e6,
        # from launching the trigger client (its start-up, ~0.5 s, included) to the last delivery
        "seconds": seconds,
        "delivered_per_s": delivered / seconds,
        "call_seconds": call_seconds,
        "held": held,
    }


def idle_case(workers: int, redis: Redis, conns: int, window: float) -> dict[str, Any]:
    redis.command("FLUSHALL")
    supervisor = Supervisor(workers, redis.url, heartbeat=True)
    try:
        with Processes() as procs:
            loads = start_loads(procs, supervisor.port, conns)
            held = supervisor.connections()
            time.sleep(3.0)  # warm-up: heartbeats running on every connection

            def beats() -> int:
                total = 0
                for load in loads:
                    load.send("count")
                    total += load.expect("count", 10)["beats"]
                return total

            beats0, cpu0 = beats(), supervisor.cpu()
            time.sleep(window)
            answered, cpu = beats() - beats0, supervisor.cpu() - cpu0
    finally:
        supervisor.stop()
    return {
        "server_cpu_us_per_heartbeat": cpu / answered * 1e6 if answered else float("nan"),
        "server_cpu_share": cpu / window,
        "heartbeats_per_s": answered / window,
        "held": held,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny numbers, one repeat (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fanout-members", type=int, default=1000)
    parser.add_argument("--fanout-messages", type=int, default=200)
    parser.add_argument("--idle-conns", type=int, default=4000)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.fanout_members, args.fanout_messages, args.idle_conns, args.window = 1, 40, 20, 100, 2.0
    print(open_file_limit_line(), flush=True)
    redis = Redis()
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for repeat in range(args.repeats):
            for workers in (1, 2):
                fan = fanout_case(workers, redis, args.fanout_members, args.fanout_messages)
                runs.setdefault(f"fanout-w{workers}", []).append(fan)
                print(f"repeat {repeat + 1} fanout, {workers} worker(s): "
                      f"{fan['server_cpu_us_per_delivered']:.2f} us server CPU per delivered message, "
                      f"{fan['redis_cpu_us_per_message']:.0f} us Redis CPU per message, {fan['seconds']:.2f} s "
                      f"({fan['delivered_per_s']:.0f} delivered/s, trigger start-up included), held {fan['held']}",
                      flush=True)
            for workers in (1, 2):
                idle = idle_case(workers, redis, args.idle_conns, args.window)
                runs.setdefault(f"idle-w{workers}", []).append(idle)
                print(f"repeat {repeat + 1} idle, {workers} worker(s): "
                      f"{idle['server_cpu_us_per_heartbeat']:.1f} us server CPU per heartbeat, "
                      f"{idle['heartbeats_per_s']:.0f} heartbeats/s, {idle['server_cpu_share'] * 100:.1f}% of a core, "
                      f"held {idle['held']}", flush=True)
    finally:
        redis.stop()

    def median(case: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[case])

    def ratio(key: str, kind: str) -> list[float]:
        # --quick's few heartbeats may cost less than the 10 ms tick of the CPU clock: nan, not a crash
        return [b[key] / a[key] if a[key] else float("nan")
                for a, b in zip(runs[f"{kind}-w1"], runs[f"{kind}-w2"], strict=True)]

    print(f"fan-out: {args.fanout_members} members, {args.fanout_messages} messages of 100 B; idle: "
          f"{args.idle_conns} connections, heartbeat 1 s, {args.window:g} s window; repeats {args.repeats}")
    for workers in (1, 2):
        print(f"  {workers} worker(s): {median(f'fanout-w{workers}', 'server_cpu_us_per_delivered'):.2f} us/delivered, "
              f"{median(f'idle-w{workers}', 'server_cpu_us_per_heartbeat'):.1f} us/heartbeat (medians)")
    fan_ratio, idle_ratio = ratio("server_cpu_us_per_delivered", "fanout"), ratio("server_cpu_us_per_heartbeat", "idle")
    print(f"  2 workers / 1 worker, CPU per delivered message: {statistics.median(fan_ratio):.2f} "
          f"[{min(fan_ratio):.2f}..{max(fan_ratio):.2f}]; per heartbeat: {statistics.median(idle_ratio):.2f} "
          f"[{min(idle_ratio):.2f}..{max(idle_ratio):.2f}]")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", f"workers-{time.strftime('%Y%m%dT%H%M%S')}{'-quick' if args.quick else ''}.json")
    with open(out, "w") as f:
        json.dump({"settings": vars(args), "runs": runs,
                   "ratios": {"fanout_cpu_per_delivered": fan_ratio, "idle_cpu_per_heartbeat": idle_ratio}}, f, indent=1)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
