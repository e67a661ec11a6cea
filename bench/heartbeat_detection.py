"""
How fast does a client notice a frozen server?  (docs/heartbeat.md)

    python3 bench/heartbeat_detection.py --trials 20 --interval 0.5 --timeout 1.0

Starts tests/helpers/heartbeat_server.py, then per trial: connects with
client heartbeats on, waits a random phase of the heartbeat cycle, freezes
the server with SIGSTOP and measures the time until the client reports
TIMED_OUT; SIGCONT, next trial.  Prints every delay, and the overshoot
beyond interval + timeout (the worst case the design allows) as a
distribution.  127.0.0.1 only; the server process is ended by its PID.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "helpers" / "heartbeat_server.py")],
        stdout=subprocess.PIPE, env=env, cwd=ROOT,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline().decode()
            if line.startswith("PORT "):
                return process, int(line.split()[1])
    process.kill()
    raise RuntimeError("server did not start")


async def trials(reactor: Any, args: argparse.Namespace, port: int, server: subprocess.Popen[bytes]) -> list[float]:
    from twisted.internet import task

    from twisted_hub import DisconnectKind, HeartbeatPolicy, HubClientOptions, connect

    delays = []
    options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=args.interval, timeout=args.timeout))
    for trial in range(args.trials):
        client = await connect(f"ws://127.0.0.1:{port}/hub/probe", options=options)
        await client.call("echo", trial)
        await task.deferLater(reactor, random.uniform(0.5, 0.5 + args.interval), lambda: None)
        os.kill(server.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        reason = await client.wait_for_disconnect().addTimeout(args.interval + args.timeout + 10, reactor)
        delays.append(time.monotonic() - frozen_at)
        os.kill(server.pid, signal.SIGCONT)
        if reason.kind is not DisconnectKind.TIMED_OUT:
            raise RuntimeError(f"trial {trial}: unexpected {reason}")
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    server, port = start_server()
    try:
        from twisted.internet import defer, task

        result: list[float] = []

        async def run(reactor: Any) -> None:
            result.extend(await trials(reactor, args, port, server))

        try:
            task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
        except SystemExit as exit:
            if exit.code:
                raise
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)
    worst_case = args.interval + args.timeout
    over = sorted((d - worst_case) * 1000 for d in result)
    print(f"trials={len(result)} interval={args.interval}s timeout={args.timeout}s worst case={worst_case}s")
    print("delays (s):", " ".join(f"{d:.3f}" for d in result))
    print(
        "overshoot beyond interval+timeout (ms): "
        f"min {over[0]:.1f}  median {statistics.median(over):.1f}  "
        f"p90 {over[int(0.9 * (len(over) - 1))]:.1f}  max {over[-1]:.1f}"
    )


if __name__ == "__main__":
    main()
