#!/usr/bin/env python3
"""
Slowloris against ``twistd hub``: ``python3 bench/slow_handshakes.py [--slow 1000] [--handshake-timeout 30]``.

Starts ``twistd hub`` in a child process on 127.0.0.1, opens ``--slow``
connections from 127.0.0.2 that each send part of an upgrade request and
then nothing, has
a new client (from 127.0.0.1) connect and call ``echo.echo`` (the
command-line client, in its own process) while they are held, and reports:
how many slow connections the server held and how many it refused at once
(the per-address cap: they all come from one address), whether and how fast the new client was served, and
how many slow connections were left after the handshake deadline.  With
``--no-per-ip-cap`` the server holds them all (the total cap and the deadline
are what remain).  Exit status 1 when the new client was not served or a slow
connection outlived the deadline.  See docs/deploying.md, "Limits and abuse".
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import select
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTIAL = b"GET /hub/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


def open_count(sockets: list[socket.socket]) -> int:
    """Sockets the server has not closed (a read would block)."""
    count = 0
    for s in sockets:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                count += 1  # it answered something; still open
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def wait_for_port(child: subprocess.Popen[bytes], limit: float) -> int:
    assert child.stdout is not None
    deadline = time.monotonic() + limit
    buffered = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(child.stdout.fileno(), 65536)
        if not chunk:
            break
        buffered += chunk
        match = re.search(rb"Site starting on (\d+)", buffered)
        if match:
            return int(match.group(1))
    raise SystemExit("twistd hub did not start:\n" + buffered.decode("utf-8", "replace"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=1000, help="slow handshakes to hold open [1000]")
    parser.add_argument("--handshake-timeout", type=float, default=30.0,
                        help="the server's deadline; long enough to hold them all while the client calls [30]")
    parser.add_argument("--no-per-ip-cap", action="store_true", help="run the server with --max-connections-per-ip 0")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.slow + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))  # the child inherits it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"open-file limit (RLIMIT_NOFILE): soft {soft}, hard {hard} (the server inherits it)", flush=True)
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
        "--logfile=-", "hub", "--listen", "tcp:0:interface=127.0.0.1",
        "--handshake-timeout", str(args.handshake_timeout),
    ]
    if args.no_per_ip_cap:
        command += ["--max-connections-per-ip", "0"]
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    slow: list[socket.socket] = []
    try:
        port = wait_for_port(child, 30.0)
        started = time.monotonic()
        for _ in range(args.slow):
            # From 127.0.0.2: the attacker's address; the new client comes from 127.0.0.1.
            s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
            s.settimeout(None)
            s.sendall(PARTIAL)
            slow.append(s)
        opened_in = time.monotonic() - started
        call_started = time.monotonic()
        call = subprocess.run(
            [sys.executable, "-m", "twisted_hub", "call", f"ws://127.0.0.1:{port}/hub", "echo.echo", '"served"',
             "--timeout", "10"],
            cwd=ROOT, env=env, capture_output=True, timeout=60,
        )
        call_seconds = time.monotonic() - call_started
        held = open_count(slow)  # after the call: every connection had been accepted
        served = call.returncode == 0 and call.stdout.strip() == b'"served"'
        remaining_wait = args.handshake_timeout + 1.0 - (time.monotonic() - started - opened_in)
        if remaining_wait > 0:
            time.sleep(remaining_wait)  # a benchmark waiting out the server's deadline on purpose
        left = open_count(slow)
        print(f"slow handshakes opened: {args.slow} in {opened_in:.2f} s")
        print(f"held by the server while the new client called: {held}; closed at once (caps): {args.slow - held}")
        print(f"new client served: {served} (call took {call_seconds:.2f} s, exit {call.returncode})")
        print(f"slow connections open {args.handshake_timeout + 1:g} s after the last was accepted: {left}")
        return 0 if served and left == 0 else 1
    finally:
        for s in slow:
            s.close()
        child.terminate()
        child.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
