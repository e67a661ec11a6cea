"""
A reconnect storm: N clients all lose their server at once and come back
with full-jitter backoff (issue 13, "connection storms").

    python3 bench/storm.py --clients 5000

Starts a hub server (``bench/_server.py hub``, heartbeats every 1 s), opens N
connections from load processes (``bench/_wsload.py --reconnect``: attempt n
waits uniform(0, min(10, 0.5 * 2**(n-1))) s, the same full jitter as
``full_jitter_policy``), kills the server with SIGKILL (a crash: no close
frames), starts a new one on the same port at once, and measures: the time
until every client is back (from the loss, as each load process saw it), the
new server's CPU seconds meanwhile, connection attempts refused while no
server listened, and any other connection error (e.g. too many open files:
"no connection refused for lack of resources"). 127.0.0.1 only; every
process is ended by its PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import BenchError, Processes, Settings  # noqa: E402


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 clients")
    args = parser.parse_args()
    clients = 200 if args.quick else args.clients
    per_load = Settings().conns_per_load_process
    with Processes() as procs:
        server = procs.start("server", "_server.py", "hub", "--heartbeat", "1", "--timeout", "3")
        port = int(server.expect("ready", 20)["port"])
        loads = []
        count = max(1, -(-clients // per_load))
        for i in range(count):
            share = clients // count + (1 if i < clients % count else 0)
            loads.append(procs.start(f"load {i}", "_wsload.py", "hub", str(port), str(share), "--timeout", "60", "--reconnect"))
        ready = sum(load.expect("ready", 90)["conns"] for load in loads)
        if ready != clients:
            raise BenchError(f"only {ready} of {clients} connections opened")
        os.kill(server.pid, signal.SIGKILL)  # a crash, not a shutdown
        killed_at = time.monotonic()
        server.proc.wait(timeout=10)
        restarted = procs.start("server again", "_server.py", "hub", "--heartbeat", "1", "--timeout", "3",
                                "--port", str(port))
        restarted.expect("ready", 20)
        up_after = time.monotonic() - killed_at
        cpu_before = cpu_seconds(restarted.pid)
        reports = [load.expect("restored", 120) for load in loads]
        back_after = time.monotonic() - killed_at
        cpu = cpu_seconds(restarted.pid) - cpu_before
        refused = sum(r["attempts_refused"] for r in reports)
        errors: dict[str, int] = {}
        for r in reports:
            for name, n in r["other_errors"].items():
                errors[name] = errors.get(name, 0) + n
    print(f"clients {clients}; server restarted {up_after:.2f} s after the kill")
    print(f"all back {back_after:.2f} s after the kill (slowest load process: {max(r['seconds'] for r in reports):.2f} s"
          " from its first lost connection)")
    print(f"new server CPU while they came back: {cpu:.2f} s")
    print(f"attempts refused (no server yet): {refused}; other connection errors: {errors or 'none'}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
