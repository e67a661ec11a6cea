"""
Where the time of one fan-out goes, counted rather than timed:
``python3 bench/fanout_profile.py [--impls hub hub-resume] [--repeats N] [--opcodes]
[--callgrind DIR] [--strace] [--profile DIR] [--perf DIR] [--members N] [--messages N]``.

bench/run.py's ``fanout`` case (one group of 500 members, 200 broadcasts of
100 bytes, one per reactor turn, after a warm-up of 20), once per
implementation (``--repeats``: that many times, the order alternating),
reporting per delivered message:

- the server's CPU (user and system apart), the load process's CPU, the
  wall time and how busy each process was, so that a client that runs at a
  full core (the bench measuring itself, not the server) shows; the
  server's context switches and garbage collections;
- with ``--opcodes`` (Twisted servers): the Python bytecodes the server ran
  per delivered message, in total and by function (``sys.settrace``: slow,
  but a count that does not depend on what else loads the machine);
- with ``--profile DIR``: the server under cProfile for the measured
  broadcasts only (``DIR/IMPL.prof``), and per delivered message the calls
  that count I/O: ``socket.send`` (one ``send()`` syscall each),
  ``transport.write`` (Twisted buffering a write for the next turn),
  WebSocket frames written, ``socket.recv`` and hub frames received (the
  clients' ACKs), with the top functions by own time;
- with ``--strace``: the server's and the load's system calls during the
  measured broadcasts (``strace -c``; slows both, so its timings mean
  nothing, its counts do);
- with ``--callgrind DIR``: the server under valgrind's callgrind,
  instrumented for the measured broadcasts only: user-space machine
  instructions per delivered message (interpreter, libraries; not the
  kernel), reproducible to about 1 % (``DIR/IMPL.callgrind.1`` for
  ``callgrind_annotate``; use ``--members 100``, it runs 50 times slower;
  ``BENCH_CALLGRIND_OPTIONS=--cache-sim=yes`` adds simulated cache misses);
- with ``--perf DIR``: ``perf record -e cpu-clock`` of the server
  (``DIR/IMPL.perf``, for ``perf report``: interpreter, libc and kernel
  symbols).

Resume on (``hub-resume``) acknowledges every ``BENCH_HUB_ACK_EVERY``
messages (256, as the clients do by default; set it to tell the cost of
the acknowledgements from that of keeping).  With the default 200
broadcasts no member acknowledges by count: ``--messages 1024`` has each
member send four ``ACK`` frames.

A diagnostic, not a result file: nothing here is recorded.  Loopback only;
every process (and strace) ends by its PID.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pstats
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import ROOT, cpu_seconds  # noqa: E402
from run import (  # noqa: E402
    BenchError,
    Child,
    Processes,
    Settings,
    base_impl,
    impl_env,
    server_stats,
    start_loads,
    start_server,
)

#: cProfile entries counted per delivered message: label -> (file suffix or "~", function name)
COUNTED = {
    "socket send()": ("~", "<method 'send' of '_socket.socket' objects>"),
    "socket recv()": ("~", "<method 'recv' of '_socket.socket' objects>"),
    "transport.write": ("twisted/internet/abstract.py", "write"),
    "frames written (sendData)": ("twisted_hub/_twisted/server.py", "sendData"),
    "hub frames received": ("twisted_hub/_core/connection.py", "receive_frame"),
    "acks handled": ("twisted_hub/_core/resume.py", "ack"),
    "reactor turns (doPoll)": ("twisted/internet/epollreactor.py", "doPoll"),
}


def strace_start(pid: int, out: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let it attach
    return proc


def strace_stop(proc: subprocess.Popen[bytes], out: str) -> dict[str, int]:
    proc.send_signal(signal.SIGINT)  # (our own child, by its PID) detach and write the summary
    proc.wait(timeout=10)
    calls: dict[str, int] = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    return calls


def counted(path: str) -> dict[str, int]:
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    found = dict.fromkeys(COUNTED, 0)
    for (filename, _line, name), (_cc, nc, _tt, _ct, _callers) in stats.items():
        for label, (suffix, function) in COUNTED.items():
            if name == function and (filename == suffix or filename.endswith(suffix)):
                found[label] += nc
    return found


#: BENCH_CALLGRIND_OPTIONS: more valgrind options (e.g. --cache-sim=yes: simulated cache misses too)
CALLGRIND_OPTIONS = os.environ.get("BENCH_CALLGRIND_OPTIONS", "").split()


class CallgrindChild(Child):
    """A server under C{valgrind --tool=callgrind}, instrumenting nothing until told to (L{callgrind})."""

    def __init__(self, name: str, argv: list[str], extra_env: dict[str, str] | None, out: str) -> None:
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(extra_env or {})
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", *CALLGRIND_OPTIONS, f"--callgrind-out-file={out}",
             sys.executable, *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd=HERE, env=env,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()


def callgrind(pid: int, *command: str) -> None:
    subprocess.run(["callgrind_control", *command, str(pid)], check=True, stdout=subprocess.DEVNULL, timeout=120)


def instructions(out: str) -> int:
    """The instructions (Ir) in the dumps written so far by one callgrind run (its C{totals:} lines)."""
    total = 0
    for path in glob.glob(out + ".*"):
        with open(path) as f:
            total += sum(int(line.split()[1]) for line in f if line.startswith("totals:"))
    return total


def run(impl: str, s: Settings, args: argparse.Namespace) -> dict[str, object]:
    with Processes() as procs:
        if args.callgrind:
            out = os.path.join(args.callgrind, f"{impl}.callgrind")
            for old in glob.glob(out + "*"):
                os.remove(old)
            server = CallgrindChild(f"{impl} server", ["_server.py", base_impl(impl), "--heartbeat", "0.0"],
                                    impl_env(impl), out)
            procs.children.append(server)
            port = int(server.expect("ready", 120)["port"])
        else:
            server, port = start_server(procs, impl)
        loads, _, _ = start_loads(procs, impl, port, s.fanout_members, s, 30)
        if server_stats(server)["conns"] != s.fanout_members:
            raise BenchError(f"{impl}: not every member is connected")

        twisted = impl.startswith(("hub", "autobahn"))  # the servers that take gc, opcodes, profile

        def burst(messages: int, measure: bool) -> dict[str, object]:
            for load in loads:
                load.send(f"arm {messages}")
            time.sleep(0.05)
            traces = []
            if measure and args.strace:
                traces = [(strace_start(p.pid, f"/tmp/fanout-{impl}-{p.name.split()[-2]}.strace"),
                           f"/tmp/fanout-{impl}-{p.name.split()[-2]}.strace") for p in (server, loads[0])]
            perf = None
            if measure and args.perf:
                perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-o",
                                         os.path.join(args.perf, f"{impl}.perf"), "-p", str(server.pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            if measure and args.opcodes and twisted:
                server.send("opcodes")
                server.expect("counting", 10)
            if measure and args.profile and twisted:
                server.send("profile")
                server.expect("profiling", 10)
            gc0 = gc1 = {"collections": [0, 0, 0], "objects": 0}
            if twisted:
                server.send("gc")
                gc0 = server.expect("gc", 10)
            times0 = psutil.Process(server.pid).cpu_times()
            switches0 = psutil.Process(server.pid).num_ctx_switches()
            result_opcodes = 0
            if measure and args.callgrind:
                callgrind(server.pid, "--zero")
                callgrind(server.pid, "--instr=on")
            cpu0, lcpu0 = cpu_seconds(server.pid), sum(cpu_seconds(load.pid) for load in loads)
            server.send(f"fanout {messages} {s.fanout_size} turn")
            started = server.expect("fanout", 60)
            done = [load.expect("done", 60) for load in loads]
            cpu, lcpu = cpu_seconds(server.pid) - cpu0, sum(cpu_seconds(load.pid) for load in loads) - lcpu0
            if measure and args.callgrind:
                callgrind(server.pid, "--dump=burst")
                callgrind(server.pid, "--instr=off")
            times1 = psutil.Process(server.pid).cpu_times()
            switches1 = psutil.Process(server.pid).num_ctx_switches()
            if measure and args.opcodes and twisted:
                server.send("opcodes_stop")
                counted_opcodes = server.expect("opcodes", 30)
                result_opcodes = counted_opcodes["count"]
            if perf is not None:
                perf.send_signal(signal.SIGINT)  # our own child, by its PID
                perf.wait(timeout=20)
            if twisted:
                server.send("gc")
                gc1 = server.expect("gc", 10)
            result: dict[str, object] = {
                "opcodes_per_msg": (result_opcodes / sum(d["frames"] for d in done)
                                    if measure and args.opcodes and twisted else None),
                "opcodes_top": ([[name, round(n / sum(d["frames"] for d in done), 2)] for name, n in counted_opcodes["top"]]
                                if measure and args.opcodes and twisted else None),
                "gc_runs": [b - a for a, b in zip(gc0["collections"], gc1["collections"], strict=True)],
                "gc_objects": gc1["objects"],
                "server_switches": [switches1.voluntary - switches0.voluntary,
                                    switches1.involuntary - switches0.involuntary],
            }
            if measure and args.profile and twisted:
                path = os.path.join(args.profile, f"{impl}.prof")
                server.send(f"profile_stop {path}")
                server.expect("profiled", 30)
                result["profile"] = path
            for name, (proc, out) in zip(("server", "load"), traces, strict=False):
                result[f"{name}_syscalls"] = strace_stop(proc, out)
            delivered = sum(d["frames"] for d in done)
            if measure and args.callgrind:
                result["instructions_per_msg"] = instructions(os.path.join(args.callgrind, f"{impl}.callgrind")) / delivered
            wall = max(d["t_last"] for d in done) - started["t0"]
            result.update(delivered=delivered, wall_s=wall, server_cpu_s=cpu, load_cpu_s=lcpu,
                          server_cpu_us_per_msg=cpu / delivered * 1e6,
                          server_user_us_per_msg=(times1.user - times0.user) / delivered * 1e6,
                          server_system_us_per_msg=(times1.system - times0.system) / delivered * 1e6,
                          load_cpu_us_per_msg=lcpu / delivered * 1e6,
                          delivered_per_s=delivered / wall, load_busy=lcpu / wall, server_busy=cpu / wall)
            return result

        burst(max(1, s.fanout_messages // 10), False)
        return burst(s.fanout_messages, True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impls", nargs="+", default=["hub", "hub-resume"])
    parser.add_argument("--strace", action="store_true", help="count system calls (strace -c) of the measured burst")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the server during the measured burst")
    parser.add_argument("--callgrind", metavar="DIR",
                        help="run the server under valgrind's callgrind: user-space instructions of the burst")
    parser.add_argument("--opcodes", action="store_true", help="count the server's Python bytecodes (sys.settrace)")
    parser.add_argument("--perf", metavar="DIR", help="perf record (cpu-clock) the server during the measured burst")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="run the implementations this many times, the order alternating")
    args = parser.parse_args()
    s = Settings()
    s.fanout_members = args.members or s.fanout_members
    s.fanout_messages = args.messages or s.fanout_messages
    for directory in (args.profile, args.perf, args.callgrind):
        if directory:
            os.makedirs(directory, exist_ok=True)
    runs = [impl for r in range(args.repeats) for impl in (args.impls if r % 2 == 0 else args.impls[::-1])]
    for impl in runs:
        result = run(impl, s, args)
        delivered = int(result["delivered"])  # type: ignore[call-overload]
        print(f"== {impl}: " + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                           for k, v in result.items() if not k.endswith(("syscalls", "_top"))}))
        for name in ("server_syscalls", "load_syscalls"):
            calls = result.get(name)
            if isinstance(calls, dict):
                per = {k: round(v / delivered, 4) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:8]}
                print(f"  {name} per delivered message: {per}")
        top = result.get("opcodes_top")
        if isinstance(top, list):
            print(f"  server bytecodes per delivered message: {result['opcodes_per_msg']:.1f}; by function:")
            for name, n in top:
                print(f"    {n:8.2f}  {name}")
        path = result.get("profile")
        if isinstance(path, str):
            per = {k: round(v / delivered, 4) for k, v in counted(path).items()}
            print(f"  server calls per delivered message: {per}")
            stats = pstats.Stats(path, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(14)
    return 0


if __name__ == "__main__":
    sys.exit(main())
