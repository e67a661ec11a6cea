#!/usr/bin/env python3
"""
twisted-hub benchmark suite: ``python3 bench/run.py [--quick] [--repeats N] [--only CASE ...]``.

Runs, in one go and side by side, each case for four implementations:
``hub`` (twisted-hub), ``autobahn`` (raw autobahn on Twisted: the limit of our
stack), ``socketio`` (python-socketio AsyncServer on aiohttp + AsyncClient,
msgpack serializer) and ``websockets`` (websockets' asyncio server and client,
msgpack echo, compression off), the references each at its library's
documented best (docs/performance.md, "The references"; the asyncio ones on
uvloop):

- ``rpc1`` / ``rpc100`` (100-byte argument), ``rpc1-16k`` / ``rpc30-16k`` /
  ``rpc100-16k`` (16 KiB) and ``rpc1-256k`` (256 KiB): RPC round trips per
  second over one connection with 1, 30 or 100 calls in flight;
- ``fanout``: one group of 500 members, 200 messages of 100 bytes, one
  broadcast per reactor (event-loop) turn: delivered messages per second (and
  server CPU per delivered message); ``fanout-burst``: the same with all 200
  broadcasts in one turn (the method of runs before 2026-11-29);
- ``accept`` (2,000 connections, 16 opening at a time) and ``accept1`` (500,
  one at a time): connections per second through TCP connect, the WebSocket
  upgrade and the first exchange (hub: HELLO and WELCOME; the others: one
  small echo call; socket.io: its namespace connect), each kept open, and
  server CPU per connection; ``accept-own`` (only with ``--only``): 500 connections opened one at
  a time with each library's own client (bench/_rpc_client.py ``--connect``), server and client
  CPU per connection;
- ``idle1000`` / ``idle5000`` (and ``idle10000`` and ``idle19000``, only with ``--only``; 19,000 is what one
  server process holds under a 20,000-file limit): N idle connections with a 1 s heartbeat: server
  CPU over a measured window (baseline of the idle server subtracted), and
  server memory per connection (RSS delta / N).

Server and clients run in separate processes on 127.0.0.1; repeats are
interleaved (hub, autobahn, socketio, hub, autobahn, socketio, ...); every
figure is reported as median [min..max] and every comparison as a ratio
ours / reference taken within one repeat.  Results go to stdout and, as JSON,
to ``bench/results/`` (``--record NAME``: ``bench/results/recorded/NAME.json``,
committed, the files docs/performance.md cites).  ``--quick`` is a smoke test
(tiny N, short windows, one repeat); with ``--check-against FILE ...`` it also
fails when a number is missing or not finite, or when throughput ratios leave a
wide band around a recorded quick baseline (bench/_results.py): a sanity check,
never a timing threshold.  ``--impls hub autobahn autobahn-stock`` runs a reference
as it ran before 2026-12-07 beside the reviewed one.  See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    ROOT,
    cpu_seconds,
    library_versions,
    now,
    open_file_limit,
    open_file_limit_line,
    rss_bytes,
)
from _results import RECORDED_DIR, band_problems, fmt, fmt_spread, load, spread  # noqa: E402

IMPLS = ("hub", "autobahn", "socketio", "websockets")
#: the references as they ran before 2026-12-07 (BENCH_REFERENCES=stock in their processes),
#: run only when named with --impls, side by side with the reviewed ones
STOCK_IMPLS = ("autobahn-stock", "websockets-stock")


def base_impl(impl: str) -> str:
    """
    The implementation a child process runs: C{autobahn-stock} is C{autobahn} with BENCH_REFERENCES=stock;
    C{hub-resume} is C{hub} with session resumption on, server and clients (bench/resume_cost.py).
    """
    return impl.removesuffix("-stock").removesuffix("-resume")


def impl_env(impl: str) -> dict[str, str]:
    env = {"BENCH_REFERENCES": "stock" if impl.endswith("-stock") else "best"}
    if impl.endswith("-resume"):
        env["BENCH_HUB_RESUME"] = "1"
    return env
#: RPC cases: name -> (calls in flight, bytes in the argument)
RPC_CASES = {
    "rpc1": (1, 100),
    "rpc100": (100, 100),
    "rpc1-16k": (1, 16384),
    "rpc30-16k": (30, 16384),
    "rpc100-16k": (100, 16384),
    "rpc1-256k": (1, 262144),
}
#: accept cases: name -> (connections opened, how many open at a time)
ACCEPT_CASES = {"accept": (2000, 16), "accept1": (500, 1)}
CASES = (*RPC_CASES, "fanout", "fanout-burst", *ACCEPT_CASES, "idle1000", "idle5000")
#: cases run only when named with --only (long, and heavy for a shared machine)
EXTRA_CASES = ("idle10000", "idle19000", "accept-own")
#: hard bound of one case run (one implementation, one repeat)
CASE_LIMIT = 60.0
#: ... except the largest idle cases, whose connections alone take up to idle_connect_limit to open
LONG_CASE_LIMIT = {"idle10000": 120.0, "idle19000": 150.0}


@dataclass
class Settings:
    repeats: int = 3
    rpc_warmup: float = 1.0
    rpc_duration: float = 5.0
    fanout_members: int = 500
    fanout_messages: int = 200
    fanout_size: int = 100
    idle_n: dict[str, int] = field(
        default_factory=lambda: {"idle1000": 1000, "idle5000": 5000, "idle10000": 10000, "idle19000": 19000}
    )
    idle_interval: float = 1.0
    idle_timeout: float = 3.0
    idle_baseline: float = 1.5
    idle_warmup: float = 3.0
    idle_window: float = 20.0
    idle_connect_limit: float = 25.0
    #: idle10000 / idle19000: their connections take longer to open
    idle_connect_limit_large: float = 80.0
    conns_per_load_process: int = 2500
    accept_conns: dict[str, int] = field(default_factory=lambda: {name: n for name, (n, _) in ACCEPT_CASES.items()})
    accept_limit: float = 30.0
    #: accept-own: connections opened one at a time with each library's own client
    accept_own_conns: int = 500


def quick_settings() -> Settings:
    return Settings(
        repeats=1, rpc_warmup=0.3, rpc_duration=0.6, fanout_members=40, fanout_messages=20,
        idle_n={"idle1000": 20, "idle5000": 50, "idle10000": 100, "idle19000": 190},
        idle_baseline=0.3, idle_warmup=1.2, idle_window=1.5,
        accept_conns={"accept": 100, "accept1": 30}, accept_own_conns=30,
    )


class BenchError(Exception):
    pass


class Child:
    """A process we started: JSON lines in on stdout, commands out on stdin."""

    def __init__(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(extra_env or {})
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            cwd=HERE, env=env,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {event!r} within {timeout:.0f}s{self._tail()}")
            try:
                message = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if message is None:
                raise BenchError(f"{self.name} exited (code {self.proc.poll()}) waiting for {event!r}{self._tail()}")
            if message.get("event") == "error":
                raise BenchError(f"{self.name}: {message}{self._tail()}")
            if message.get("event") == event:
                return message

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def _tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace")[-1500:]
        return f"\n--- {self.name} stderr ---\n{text}" if text.strip() else ""

    def stop(self) -> None:
        """Ask it to quit; kill it (by its PID) if it does not."""
        try:
            if self.proc.poll() is None:
                self.send("quit")
                try:
                    self.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.stderr.close()


class Processes:
    """Every process of one case run; all stopped (or killed) on exit."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, name: str, *argv: str, impl: str = "") -> Child:
        """Start a child; C{impl} given: as that implementation (C{-stock}: with BENCH_REFERENCES=stock)."""
        child = Child(name, list(argv), impl_env(impl) if impl else None)
        self.children.append(child)
        return child

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            child.stop()


def start_server(procs: Processes, impl: str, heartbeat: float = 0.0, timeout: float = 3.0) -> tuple[Child, int]:
    server = procs.start(
        f"{impl} server", "_server.py", base_impl(impl), "--heartbeat", str(heartbeat), "--timeout", str(timeout),
        impl=impl,
    )
    port = server.expect("ready", 20)["port"]
    return server, int(port)


# -- cases -------------------------------------------------------------------
def case_rpc(impl: str, inflight: int, size: int, s: Settings) -> dict[str, float]:
    with Processes() as procs:
        server, port = start_server(procs, impl)
        client = procs.start(
            f"{impl} rpc client", "_rpc_client.py", base_impl(impl), str(port), "--inflight", str(inflight),
            "--size", str(size), "--warmup", str(s.rpc_warmup), "--duration", str(s.rpc_duration),
            "--server-pid", str(server.pid), impl=impl,
        )
        result = client.expect("result", s.rpc_warmup + s.rpc_duration + 25)
    calls = result["calls"]
    if calls <= 0:
        raise BenchError(f"{impl}: no call completed")
    return {
        "calls_per_s": calls / result["elapsed"],
        "server_cpu_us_per_call": result["server_cpu"] / calls * 1e6,
        "client_cpu_us_per_call": result["client_cpu"] / calls * 1e6,
    }


def start_loads(
    procs: Processes, impl: str, port: int, total: int, s: Settings, connect_limit: float, partial: bool = False
) -> tuple[list[Child], int, float]:
    """Open C{total} connections from load processes; return them, how many are ready, and how long it took."""
    count = max(1, -(-total // s.conns_per_load_process))
    loads = []
    for i in range(count):
        share = total // count + (1 if i < total % count else 0)
        loads.append(procs.start(
            f"{impl} load {i}", "_wsload.py", base_impl(impl), str(port), str(share), "--timeout", str(connect_limit),
            impl=impl,
        ))
    reports = [load.expect("ready", connect_limit + 15) for load in loads]
    ready = sum(r["conns"] for r in reports)
    if ready != total and not partial:
        raise BenchError(f"{impl}: only {ready} of {total} connections ready")
    return loads, ready, max(r["seconds"] for r in reports)


def server_stats(server: Child) -> dict[str, Any]:
    server.send("stats")
    return server.expect("stats", 10)


def case_fanout(impl: str, s: Settings, per_turn: bool) -> dict[str, float]:
    with Processes() as procs:
        server, port = start_server(procs, impl)
        loads, _, _ = start_loads(procs, impl, port, s.fanout_members, s, 30)
        members = server_stats(server)["conns"]
        if members != s.fanout_members:
            raise BenchError(f"{impl}: server sees {members} members, expected {s.fanout_members}")

        def burst(messages: int) -> tuple[float, float, int, float]:
            for load in loads:
                load.send(f"arm {messages}")
            time.sleep(0.05)  # let the loads read "arm" before the first frame lands
            cpu0 = cpu_seconds(server.pid)
            server.send(f"fanout {messages} {s.fanout_size}{' turn' if per_turn else ''}")
            started = server.expect("fanout", 30)
            done = [load.expect("done", 30) for load in loads]
            cpu = cpu_seconds(server.pid) - cpu0
            delivered = sum(d["frames"] for d in done)
            return started["t0"], max(d["t_last"] for d in done), delivered, cpu

        burst(max(1, s.fanout_messages // 10))  # warm-up
        t0, t_last, delivered, cpu = burst(s.fanout_messages)
    expected = s.fanout_members * s.fanout_messages
    if delivered != expected:
        raise BenchError(f"{impl}: delivered {delivered} of {expected}")
    return {
        "delivered_per_s": delivered / (t_last - t0),
        "server_cpu_us_per_msg": cpu / delivered * 1e6,
    }


def case_accept(impl: str, n: int, concurrency: int, s: Settings) -> dict[str, float]:
    """
    One load process opens C{n} connections, C{concurrency} at a time, each
    through TCP connect, the upgrade and the first exchange (hub: HELLO and
    WELCOME; autobahn and websockets: one echo call, C{--first-echo};
    socket.io: the namespace connect), and keeps them open.  Rate = connections
    / seconds from its first connect to the last first exchange done.
    """
    with Processes() as procs:
        server, port = start_server(procs, impl)
        cpu0 = cpu_seconds(server.pid)
        load = procs.start(
            f"{impl} accept load", "_wsload.py", base_impl(impl), str(port), str(n), "--concurrency", str(concurrency),
            "--timeout", str(s.accept_limit), "--first-echo", impl=impl,
        )
        report = load.expect("ready", s.accept_limit + 15)
        cpu = cpu_seconds(server.pid) - cpu0
    if report["conns"] != n:
        raise BenchError(f"{impl}: only {report['conns']} of {n} connections opened in {report['seconds']:.1f}s")
    return {
        "conns_per_s": n / report["seconds"],
        "server_cpu_us_per_conn": cpu / n * 1e6,
    }


def case_accept_own(impl: str, n: int, s: Settings) -> dict[str, float]:
    """
    C{accept-own}: one client process opens C{n} connections one at a time
    with its library's own client (bench/_rpc_client.py C{--connect}; hub:
    C{connect()}, HELLO and WELCOME; autobahn and websockets: the upgrade and
    one echo call), after a warm-up of C{n / 10}.  Both sides' CPU per
    connection is measured: issue 24's target counts the client's as well.
    """
    with Processes() as procs:
        server, port = start_server(procs, impl)
        client = procs.start(
            f"{impl} opening client", "_rpc_client.py", base_impl(impl), str(port), "--connect", str(n),
            "--server-pid", str(server.pid), impl=impl,
        )
        result = client.expect("result", s.accept_limit + 30)
    return {
        "conns_per_s": n / result["elapsed"],
        "server_cpu_us_per_conn": result["server_cpu"] / n * 1e6,
        "client_cpu_us_per_conn": result["client_cpu"] / n * 1e6,
        "total_cpu_us_per_conn": (result["server_cpu"] + result["client_cpu"]) / n * 1e6,
    }


def case_idle(impl: str, n: int, s: Settings) -> dict[str, float]:
    with Processes() as procs:
        server, port = start_server(procs, impl, s.idle_interval, s.idle_timeout)
        time.sleep(0.3)
        rss0 = server_stats(server)["rss"]
        b0, bt0 = cpu_seconds(server.pid), now()
        time.sleep(s.idle_baseline)
        baseline_rate = (cpu_seconds(server.pid) - b0) / (now() - bt0)
        # A server that cannot open N connections within the limit is measured
        # with those it opened (reported as "conns"), to keep the case bounded.
        limit = s.idle_connect_limit_large if n >= 10_000 else s.idle_connect_limit
        loads, opened, connect_s = start_loads(procs, impl, port, n, s, limit, partial=True)
        time.sleep(s.idle_warmup)

        def sample() -> tuple[float, float, int, int]:
            t, cpu = now(), cpu_seconds(server.pid)
            beats = closed = 0
            for load in loads:
                load.send("count")
            for load in loads:
                c = load.expect("count", 10)
                beats += c["beats"]
                closed += c["closed"]
            return t, cpu, beats, closed

        t0, cpu0, beats0, _ = sample()
        time.sleep(s.idle_window)
        t1, cpu1, beats1, closed = sample()
        stats = server_stats(server)
    window = t1 - t0
    beats = beats1 - beats0
    if closed:
        raise BenchError(f"{impl}: {closed} connections closed during the idle window")
    if beats <= 0:
        raise BenchError(f"{impl}: no heartbeat answered")
    gross = cpu1 - cpu0
    net = max(0.0, gross - baseline_rate * window)
    return {
        "server_cpu_pct": net / window * 100,
        "server_cpu_us_per_beat": net / beats * 1e6,
        "server_cpu_pct_gross": gross / window * 100,
        "baseline_cpu_pct": baseline_rate * 100,
        "beats_per_s": beats / window,
        "beats_expected_per_s": stats["conns"] / s.idle_interval,
        "mem_kb_per_conn": (stats["rss"] - rss0) / max(1, stats["conns"]) / 1024,
        "conns": stats["conns"],
        "conns_wanted": n,
        "connect_s": connect_s,
    }


def run_case(case: str, impl: str, s: Settings) -> dict[str, float]:
    if case in RPC_CASES:
        inflight, size = RPC_CASES[case]
        return case_rpc(impl, inflight, size, s)
    if case.startswith("fanout"):
        return case_fanout(impl, s, per_turn=case == "fanout")
    if case in ACCEPT_CASES:
        return case_accept(impl, s.accept_conns[case], ACCEPT_CASES[case][1], s)
    if case == "accept-own":
        return case_accept_own(impl, s.accept_own_conns, s)
    return case_idle(impl, s.idle_n[case], s)


# -- reporting ---------------------------------------------------------------
#: case -> (metric, higher is better, unit)
PRIMARY = {
    **{case: ("calls_per_s", True, "calls/s") for case in RPC_CASES},
    "fanout": ("delivered_per_s", True, "msgs/s"),
    "fanout-burst": ("delivered_per_s", True, "msgs/s"),
    **{case: ("conns_per_s", True, "connections/s") for case in ACCEPT_CASES},
    "accept-own": ("conns_per_s", True, "connections/s"),
    "idle1000": ("server_cpu_us_per_beat", False, "us CPU/beat"),
    "idle5000": ("server_cpu_us_per_beat", False, "us CPU/beat"),
    "idle10000": ("server_cpu_us_per_beat", False, "us CPU/beat"),
    "idle19000": ("server_cpu_us_per_beat", False, "us CPU/beat"),
}
SECONDARY = {
    **{case: [("server_cpu_us_per_call", False, "us server CPU/call"),
              ("client_cpu_us_per_call", False, "us client CPU/call")] for case in RPC_CASES},
    "fanout": [("server_cpu_us_per_msg", False, "us server CPU/msg")],
    "fanout-burst": [("server_cpu_us_per_msg", False, "us server CPU/msg")],
    **{case: [("server_cpu_us_per_conn", False, "us server CPU/connection")] for case in ACCEPT_CASES},
    "accept-own": [("server_cpu_us_per_conn", False, "us server CPU/connection"),
                   ("client_cpu_us_per_conn", False, "us client CPU/connection"),
                   ("total_cpu_us_per_conn", False, "us CPU/connection, both sides")],
    "idle1000": [("server_cpu_pct", False, "% server CPU (net)"), ("mem_kb_per_conn", False, "KB RSS/conn"),
                 ("beats_per_s", True, "heartbeats answered/s"), ("conns", True, "connections open")],
    "idle5000": [("server_cpu_pct", False, "% server CPU (net)"), ("mem_kb_per_conn", False, "KB RSS/conn"),
                 ("beats_per_s", True, "heartbeats answered/s"), ("conns", True, "connections open")],
    "idle10000": [("server_cpu_pct", False, "% server CPU (net)"), ("mem_kb_per_conn", False, "KB RSS/conn"),
                  ("beats_per_s", True, "heartbeats answered/s"), ("conns", True, "connections open"),
                  ("connect_s", False, "s to open all connections")],
    "idle19000": [("server_cpu_pct", False, "% server CPU (net)"), ("mem_kb_per_conn", False, "KB RSS/conn"),
                  ("beats_per_s", True, "heartbeats answered/s"), ("conns", True, "connections open"),
                  ("connect_s", False, "s to open all connections")],
}
#: (case, metric, reference, comparison, bound): ratio = ours / reference; issue 24's targets
#: (reported, never a pass/fail of the suite: speed targets are met in benchmarks, not in tests)
TARGETS = [
    ("rpc1", "calls_per_s", "websockets", ">=", 1.1),
    ("rpc30-16k", "calls_per_s", "autobahn", ">=", 1.0),
    ("fanout", "delivered_per_s", "autobahn", ">=", 1.5),
    ("fanout", "delivered_per_s", "websockets", ">=", 1.0),
    ("accept", "conns_per_s", "autobahn", ">=", 1.0),
    ("accept1", "conns_per_s", "autobahn", ">=", 1.0),
    ("accept-own", "conns_per_s", "autobahn", ">=", 1.0),
    ("accept-own", "total_cpu_us_per_conn", "autobahn", "<=", 1.0),
    ("idle1000", "server_cpu_us_per_beat", "autobahn", "<=", 0.45),
    ("idle5000", "server_cpu_us_per_beat", "autobahn", "<=", 0.45),
    ("idle10000", "server_cpu_us_per_beat", "autobahn", "<=", 0.45),
    ("idle19000", "server_cpu_us_per_beat", "autobahn", "<=", 0.45),
]
MEMORY_TARGET_KB = 11.0  # issue 24


def summarize(runs: dict[str, dict[str, list[dict[str, float] | None]]]) -> dict[str, Any]:
    """Per case: per-impl spreads of every metric, and per-repeat ratios ours / reference."""
    summary: dict[str, Any] = {}
    for case, by_impl in runs.items():
        metrics = [PRIMARY[case][0]] + [m for m, _, _ in SECONDARY[case]]
        entry: dict[str, Any] = {"metrics": {}, "ratios": {}}
        for metric in metrics:
            entry["metrics"][metric] = {}
            for impl, results in by_impl.items():
                # (a metric newer than a recorded file is absent from its runs)
                values = [r[metric] for r in results if r is not None and metric in r]
                entry["metrics"][metric][impl] = spread(values) if values else None
            entry["ratios"][metric] = {}
            for ref in [impl for impl in by_impl if impl != "hub"]:
                pairs = [
                    ours[metric] / theirs[metric]
                    for ours, theirs in zip(by_impl.get("hub", []), by_impl.get(ref, []))
                    if ours is not None and theirs is not None and metric in ours and theirs.get(metric, 0) > 0
                ]
                entry["ratios"][metric][ref] = spread(pairs) if pairs else None
        summary[case] = entry
    return summary


def report(summary: dict[str, Any], s: Settings, command: str) -> list[str]:
    out = [f"# command: {command}", f"# {s.repeats} interleaved repeat(s); "
           "median [min..max]; ratio = hub / reference, per repeat"]
    for case, entry in summary.items():
        impls = list(entry["metrics"][PRIMARY[case][0]])
        primary, _, unit = PRIMARY[case]
        out.append("")
        out.append(f"== {case} ({unit})")
        for metric, _, label in [PRIMARY[case]] + SECONDARY[case]:
            row = "  ".join(f"{impl}={fmt_spread(entry['metrics'][metric].get(impl))}" for impl in impls
                            if entry["metrics"][metric].get(impl))
            ratios = entry["ratios"][metric]
            rs = "  ".join(f"hub/{ref}={fmt_spread(ratios.get(ref))}" for ref in impls if ratios.get(ref))
            out.append(f"  {label:<28} {row}")
            out.append(f"  {'':<28} {rs}")
    out.append("")
    out.append("== targets (informational; never a pass/fail of the suite)")
    for case, metric, ref, op, bound in TARGETS:
        sp = summary.get(case, {}).get("ratios", {}).get(metric, {}).get(ref)
        if sp is None:
            continue
        ok = sp["median"] >= bound if op == ">=" else sp["median"] <= bound
        out.append(f"  {case:<10} {metric:<24} hub/{ref:<10} {op} {bound:<4}: {fmt(sp['median'])}  "
                   f"{'met' if ok else 'MISSED'}")
    for case in ("idle1000", "idle5000", "idle10000", "idle19000"):
        sp = summary.get(case, {}).get("metrics", {}).get("mem_kb_per_conn", {}).get("hub")
        if sp:
            ok = sp["median"] <= MEMORY_TARGET_KB
            out.append(f"  {case:<9} {'mem_kb_per_conn':<24} hub {'<=':>12} {MEMORY_TARGET_KB:g} KB: "
                       f"{fmt(sp['median'])}  {'met' if ok else 'MISSED'}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny N, short windows, 1 repeat")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per case")
    parser.add_argument("--only", nargs="+", choices=CASES + EXTRA_CASES, help="run only these cases")
    parser.add_argument("--impls", nargs="+", choices=IMPLS + STOCK_IMPLS, default=list(IMPLS),
                        help="hub first; autobahn-stock / websockets-stock: the references as before 2026-12-07")
    parser.add_argument("--window", type=float, help="idle measuring window, seconds")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--metrics", action="store_true",
                        help="the hub server keeps Prometheus metrics (for their cost, docs/performance.md)")
    parser.add_argument("--record", metavar="NAME",
                        help="write the result file to bench/results/recorded/NAME.json (committed; the docs cite it)")
    parser.add_argument("--note", default="", help="a note kept in the result file (e.g. what else loaded the machine)")
    parser.add_argument("--check-against", nargs="+", metavar="FILE", default=[],
                        help="recorded result files: fail unless the throughput ratios lie within their bands "
                             "(bench/_results.py, docs/performance.md 'What CI checks')")
    args = parser.parse_args()
    if args.impls[0] != "hub":
        parser.error("--impls: hub comes first (every ratio is hub / reference)")
    recorded = [load(path) for path in args.check_against]
    if args.metrics:
        os.environ["BENCH_HUB_METRICS"] = "1"  # inherited by the hub server processes
    s = quick_settings() if args.quick else Settings()
    if args.repeats:
        s.repeats = args.repeats
    if args.window:
        s.idle_window = args.window
    cases = args.only or list(CASES)
    command = "python3 bench/run.py " + shlex.join(sys.argv[1:])
    print(open_file_limit_line(), flush=True)
    versions = library_versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    load_before = os.getloadavg()
    commit = git_commit()  # before the run: the tree it measured
    started = time.time()
    runs: dict[str, dict[str, list[dict[str, float] | None]]] = {}
    failures: list[str] = []
    for case in cases:
        runs[case] = {impl: [] for impl in args.impls}
        for repeat in range(s.repeats):
            for impl in args.impls:
                t = time.monotonic()
                try:
                    result: dict[str, float] | None = run_case(case, impl, s)
                except BenchError as e:
                    result = None
                    failures.append(f"{case}/{impl}#{repeat}: {e}")
                took = time.monotonic() - t
                runs[case][impl].append(result)
                shown = "FAILED" if result is None else fmt(result[PRIMARY[case][0]])
                print(f"[{time.time() - started:6.1f}s] {case:<10} {impl:<10} #{repeat + 1}: "
                      f"{shown} {PRIMARY[case][2]} ({took:.1f}s)", flush=True)
                limit = LONG_CASE_LIMIT.get(case, CASE_LIMIT)
                if took > limit:
                    failures.append(f"{case}/{impl}#{repeat}: took {took:.0f}s (> {limit:.0f}s)")
    summary = summarize(runs)
    lines = report(summary, s, command)
    print("\n".join(lines))
    for failure in failures:
        print(f"FAILURE: {failure}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "quick": args.quick,
        "note": args.note,
        "commit": commit,
        "impls": args.impls,
        "settings": asdict(s),
        "versions": versions,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg": os.getloadavg(), "runner_rss": rss_bytes(),
                    "open_file_limit": open_file_limit()},
        "method": "each ratio = hub's figure / the reference's figure within one repeat (repeats interleaved: "
                  "every implementation of a case, then the next repeat); spreads = median, min, max over repeats",
        "runs": runs,
        "summary": summary,
        "failures": failures,
    }
    if args.record:
        os.makedirs(RECORDED_DIR, exist_ok=True)
        path = os.path.join(RECORDED_DIR, f"{args.record}.json")
    else:
        path = os.path.join(args.out, f"bench-{'quick-' if args.quick else ''}{stamp}.json")
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
    print(f"\nresults: {os.path.relpath(path, ROOT)}  ({time.time() - started:.0f}s)")
    # The suite fails only when a case produced no numbers, never on a timing threshold.
    missing = [f"{case}/{impl}" for case, by_impl in runs.items() for impl, rs in by_impl.items()
               if not any(r is not None for r in rs)]
    if missing:
        print(f"no numbers for: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.check_against:
        problems, band_report = band_problems(runs, summary, recorded, quick=args.quick)
        print("\n== sanity and band against " + ", ".join(os.path.relpath(p, ROOT) for p in args.check_against))
        print("\n".join(band_report))
        for problem in problems:
            print(f"CHECK FAILED: {problem}", file=sys.stderr)
        if problems:
            return 1
    return 0


def git_commit() -> str:
    """The commit the run measured (with C{+dirty} when the tree had changes), or "" outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty and commit else "")


def metric_labels() -> dict[str, list[tuple[str, str]]]:
    """case -> [(metric, label)], the primary metric first: the rows of docs/performance.md's tables."""
    return {case: [(PRIMARY[case][0], PRIMARY[case][2])] + [(m, label) for m, _, label in SECONDARY[case]]
            for case in PRIMARY}


if __name__ == "__main__":
    sys.exit(main())
