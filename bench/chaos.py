"""
The chaos test of issue 21 (docs/resumption.md): real processes, numbered
traffic both ways, connections cut at random, a node restarted, a node killed.

    python3 bench/chaos.py                      # the full form: 3 nodes, 300 clients, 1,000 cuts, a restart, a kill -9
    python3 bench/chaos.py --quick              # CI's form (tests/test_chaos.py): 1 node, 24 clients, ~200 cuts
    python3 bench/chaos.py --nodes 3 --clients 30 --seconds 60 --cuts 200 --kill --restart

The set-up: one ``redis-server``; N ``twistd hub`` nodes on it
(``--redis ... --resume-window 30``, the hub bench/_chaos_hub.py); haproxy
in front of them, ``balance roundrobin`` in ``mode tcp``, no stickiness;
the fault injector bench/_chaos_cutter.py in front of haproxy, resetting
random connections; and client processes of the three kinds, each with K
clients with resume on: bench/_chaos_twisted.py (``ReconnectingHubClient``),
bench/_chaos_asyncio.py (``ReconnectingAsyncHubClient``) and
js/test/chaos-client.mjs (the JavaScript ``ReconnectingHubClient``, in Node).

The traffic: every client calls ``work(name, n)`` for n = 1, 2, 3 ... (a
few in flight), and the hub records each run in its node's run file and
sends the caller ``numbered(session, k)`` from a counter in
``connection.items``; every client joins the group ``all`` and broadcasts
``shout(name, m)`` for m = 1, 2, 3 ...  Each client checks what arrives as
it arrives (bench/_chaos_ledger.py); :func:`verdict` merges the clients'
summaries with the nodes' run files.  What it proves is in
tests/test_chaos.py's docstring.

Prints one JSON summary (``problems`` lists every failed check; exit status
1 when there is one).  Only 127.0.0.1; every process is started here and
ended by its PID; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JS = ROOT / "js"
HUB = "bench/_chaos_hub.py:ChaosHub"
KINDS = ("twisted", "asyncio", "javascript")
#: the reasons a refused resume may give (docs/protocol.md 10.5)
TYPED_REASONS = frozenset({"window-expired", "buffer-overflowed", "session-unknown", "backplane-state-lost", "token-invalid"})
DUPLICATE_CALL = "duplicate-call"
#: a resume must come within the backoff the client drew plus this (issue 21)
RESUME_SLACK = 1.0
#: seconds a stopping node waits for its sessions to be claimed (--shutdown-timeout), and how long after
#: the SIGTERM the cuts are held (outages that start in it are the restart's)
RESTART_HANDOVER = 5.0
RESTART_QUIET = 8.0
#: what a node logs when a session another node held resumes on it (twisted_hub/_core/server_resume.py)
MOVED_LINE = "resumed its session from another node"
#: outages that start this long after the kill (and cuts are held from 1 s before to this long after) are the kill's
KILL_QUIET = 3.0


#: at most this long a lull waits for every session's snapshot (ack_delay, 5 s, makes sessions quiet)
LULL_LIMIT = 20.0


#: counts the session snapshots in Redis (Lua): keys holding a snapshot, not a taken mark, which
#: is msgpack [0, token] (0x92 0x00; the chaos nodes share no secret, so values are not signed)
COUNT_SNAPSHOTS = (
    "local n = 0 "
    "for _, k in ipairs(redis.call('KEYS', 'twisted-hub:v1:session:*')) do "
    "local v = redis.call('GET', k) "
    "if v and string.sub(v, 1, 2) ~= '\\146\\0' then n = n + 1 end "
    "end "
    "return n"
)


def redis_snapshots(port: int) -> int:
    """How many session snapshots the Redis on 127.0.0.1:C{port} holds (one EVAL, RESP read by hand)."""
    script = COUNT_SNAPSHOTS.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"*3\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(script), script))
        reply = b""
        while b"\r\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                raise HarnessError("Redis closed the connection before answering EVAL")
            reply += chunk
    head = reply.split(b"\r\n", 1)[0]
    if not head.startswith(b":"):
        raise HarnessError(f"Redis answered the snapshot count with {head!r}")
    return int(head[1:])


def wait_for_snapshots(port: int, sessions: int, limit: float) -> int:
    """
    Ask Redis every 0.2 s until it holds a snapshot of each of C{sessions}
    sessions, at most C{limit} s; the count.  A key marked taken (a session
    restored elsewhere, not yet written again by its new node) is no snapshot.
    """
    deadline = time.monotonic() + limit
    while True:
        count = redis_snapshots(port)
        if count >= sessions or time.monotonic() >= deadline:
            return count
        time.sleep(0.2)


class HarnessError(RuntimeError):
    """The set-up failed (a tool missing, a process that did not start): not a verdict on resume."""


@dataclass(frozen=True)
class Settings:
    nodes: int = 3
    clients_per_kind: int = 100
    processes_per_kind: int = 2
    seconds: float = 180.0
    cuts: int = 1000
    kill: bool = True
    #: when the kill comes, as a share of the traffic phase
    kill_at: float = 0.5
    #: the kill lands in a lull: the clients stop their traffic, the harness waits until Redis holds a
    #: snapshot of every session (docs/resumption.md, "When a node dies"), then kills; every session
    #: of the killed node must then resume on another node, nothing lost (QUIET_KILL_BOUND)
    kill_lull: bool = False
    #: a rolling restart of the first node (SIGTERM, then a new process on its port): its sessions must all resume
    restart: bool = True
    restart_at: float = 0.25
    window: float = 30.0
    #: per client: 2 calls in flight, one every 0.5 s each; a broadcast every 10 s (300 clients: ~1,200
    #: calls/s and 30 broadcasts/s to 300 members, ~9,000 receiver calls/s, what 2 shared cores carry)
    pace: float = 0.5
    inflight: int = 2
    shout_every: float = 10.0
    retry_initial: float = 0.2
    retry_max: float = 2.0
    half_share: float = 0.2
    seed: int = 21


#: CI's form (tests/test_chaos.py): about a minute of cuts, 8 clients of each kind
QUICK = Settings(nodes=1, clients_per_kind=8, processes_per_kind=1, seconds=55.0, cuts=200, kill=False,
                 restart=False, pace=0.1, shout_every=1.0)


@dataclass(frozen=True)
class NodeKillBound:
    """
    What a session whose node was killed may lose: the documented bound the
    chaos test holds the kill to.  ``may_start_afresh``: such a session may be
    refused (with one of ``reasons``) and start a fresh session instead of
    resuming; when False it must resume, and then nothing may be lost or
    doubled (the checks every resumed session passes).
    ``may_answer_duplicate_call``: its calls may fail ``duplicate-call``.
    """

    may_start_afresh: bool = True
    reasons: frozenset[str] = TYPED_REASONS
    #: a call that was running on the killed node may settle as an error ``duplicate-call`` (it may
    #: have run, and is never run again: docs/resumption.md, "What can be lost when a node dies")
    may_answer_duplicate_call: bool = True


#: The documented bound (docs/resumption.md, "When a node dies"): of the sessions a node held
#: when it was killed, those quiet then resume on another node from their snapshot in Redis (a
#: claim nobody answers reads it), with nothing lost or doubled (the checks every resumed
#: session passes); the others are refused ``session-unknown`` and start afresh; a call of a
#: session that had moved away from it and was still running there is answered
#: ``duplicate-call``.  Every other session resumes, with nothing lost or doubled.
KILL_BOUND = NodeKillBound(reasons=frozenset({"session-unknown"}))
#: The bound of a kill in a lull (``Settings.kill_lull``): every session was quiet and its snapshot in
#: Redis, so every session the kill dropped resumes on another node, with nothing lost or doubled.
QUIET_KILL_BOUND = NodeKillBound(may_start_afresh=False)


def bound_for(settings: Settings) -> NodeKillBound:
    """The bound a run's kill is held to."""
    return QUIET_KILL_BOUND if settings.kill_lull else KILL_BOUND


@dataclass
class Outcome:
    """Everything one run produced, for :func:`verdict`."""

    settings: Settings
    clients: list[dict[str, Any]] = field(default_factory=list)
    runs: Counter[tuple[str, int]] = field(default_factory=Counter)
    cutter: dict[str, Any] = field(default_factory=dict)
    kill_wall: float | None = None
    #: when the first node was sent SIGTERM (a rolling restart), and how it ended
    restart_wall: float | None = None
    restart_exit: int | None = None
    killed_pid: int | None = None
    killed_signal: int | None = None
    #: in a lull (Settings.kill_lull): the session snapshots Redis held when the node was killed, of how many sessions
    snapshots_at_kill: tuple[int, int] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: CPU seconds each process used, read just before the end (which process ran out of CPU)
    cpu: dict[str, float | None] = field(default_factory=dict)
    #: the nodes' and haproxy's output (the last 20,000 lines of each): kept by --save, for a post-mortem
    logs: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


# -- processes ------------------------------------------------------------------------
class Proc:
    """A process we started: its output lines (stdout and stderr) kept, JSON lines parsed, stdin for commands."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT,
                 stdin: bool = True) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=str(cwd), env={**os.environ, **(env or {})}, text=True, bufsize=1,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._new_line = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()
            if line.startswith("{"):
                try:
                    self.events.put(json.loads(line))
                except ValueError:
                    pass
        self.events.put(None)
        with self._new_line:
            self._eof = True
            self._new_line.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching C{pattern} (past or future), within C{timeout} s."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    match = compiled.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise HarnessError(f"{self.name}: no {pattern!r} within {timeout:.0f}s{self.tail()}")
                self._new_line.wait(min(left, 0.5))

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(f"{self.name}: no {event!r} within {timeout:.0f}s{self.tail()}")
            try:
                message = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if message is None:
                raise HarnessError(f"{self.name} exited (status {self.proc.wait()}) before {event!r}{self.tail()}")
            if message.get("event") == event:
                return message

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def tail(self, lines: int = 30) -> str:
        return f"\n--- {self.name} (pid {self.pid}), last lines ---\n" + "\n".join(self.lines[-lines:])

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) this process used so far (Linux /proc), or None."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)

    def kill9(self) -> int:
        """SIGKILL this process (by its PID); the signal that ended it."""
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        return -self.proc.returncode

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (by PID) if it still runs; SIGKILL after C{timeout} s."""
        self.terminate()
        self.wait_or_kill(timeout)

    def terminate(self) -> None:
        """SIGTERM (by PID) if it still runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout: float) -> int:
        """Wait C{timeout} s for it to end, then SIGKILL it (by PID); its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HarnessError(f"{name} is not installed: {install} (scripts/test and .ci/run do it)")
    return path


def wait_listening(port: int, process: Proc, timeout: float) -> None:
    """Until 127.0.0.1:C{port} accepts a connection (haproxy says nothing when it is ready)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if process.proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"{process.name}: not listening on {port} within {timeout:.0f}s{process.tail()}") from None
            time.sleep(0.05)


HAPROXY_CONFIG = """\
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    retries 3
    option redispatch 1
frontend chaos
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""


def haproxy_config(port: int, node_ports: list[int]) -> str:
    """Round robin over the nodes, no stickiness; a dead node is out after one failed check (0.5 s)."""
    servers = "\n".join(
        f"    server node{i} 127.0.0.1:{node_port} check inter 500ms fall 1 rise 2" for i, node_port in enumerate(node_ports)
    )
    return HAPROXY_CONFIG.format(port=port, servers=servers)


def split(total: int, parts: int) -> list[int]:
    """C{total} clients over C{parts} processes, as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def client_argv(kind: str, url: str, prefix: str, count: int, s: Settings, seed: int) -> tuple[list[str], Path]:
    common = [
        url, "--prefix", prefix, "--count", str(count), "--pace", str(s.pace), "--inflight", str(s.inflight),
        "--shout-every", str(s.shout_every), "--retry-initial", str(s.retry_initial), "--retry-max", str(s.retry_max),
        "--settle", str(s.window), "--seed", str(seed),
    ]
    if kind == "twisted":
        return [sys.executable, str(HERE / "_chaos_twisted.py"), *common], ROOT
    if kind == "asyncio":
        return [sys.executable, str(HERE / "_chaos_asyncio.py"), *common], ROOT
    return [tool("node", "apt-get install nodejs"), "test/chaos-client.mjs", *common], JS


def check_javascript() -> None:
    """The JS client needs js/node_modules (fail, never skip, without them); js/dist is built when older than js/src."""
    node = tool("node", "apt-get install nodejs")
    if not (JS / "node_modules" / "ws").is_dir():
        raise HarnessError("js/node_modules is missing: cd js && npm ci --no-audit --no-fund")
    built = JS / "dist" / "index.js"
    newest_source = max(path.stat().st_mtime for path in (JS / "src").glob("*.ts"))
    if built.is_file() and built.stat().st_mtime >= newest_source:
        return
    done = subprocess.run([node, "build.mjs"], cwd=JS, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise HarnessError(f"node build.mjs failed in js/:\n{done.stdout}\n{done.stderr}")


def versions() -> dict[str, str]:
    def first_line(*argv: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"

    return {
        "haproxy": first_line("haproxy", "-v"), "redis": first_line("redis-server", "--version"),
        "node": first_line("node", "--version"), "python": sys.version.split()[0],
    }


# -- the run --------------------------------------------------------------------------
def run(s: Settings, workdir: Path, log: Any = None) -> Outcome:
    """Set up, make traffic and faults for C{s.seconds}, collect what everyone saw; stop every process started."""
    say = (lambda text: print(f"chaos: {text}", file=log, flush=True)) if log is not None else (lambda text: None)
    redis_path = tool("redis-server", "apt-get install redis-server")
    haproxy_path = tool("haproxy", "apt-get install haproxy")
    check_javascript()
    outcome = Outcome(settings=s, versions=versions())
    runs_dir = workdir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    procs: list[Proc] = []
    started = time.monotonic()

    def start(name: str, argv: list[str], **kwargs: Any) -> Proc:
        proc = Proc(name, argv, **kwargs)
        procs.append(proc)
        return proc

    try:
        redis_port = free_port()
        redis = start("redis-server", [
            redis_path, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no",
        ], stdin=False)
        redis.wait_for("Ready to accept connections", 15)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        def start_node(name: str, port: int = 0) -> Proc:
            return start(name, [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
                "--logfile=-", "hub", "--listen", f"tcp:{port}:interface=127.0.0.1", "--hub", HUB, "--redis", redis_url,
                # (a stopping node waits this long for its sessions to be claimed: a rolling restart)
                "--resume-window", str(s.window), "--shutdown-timeout", str(RESTART_HANDOVER),
                # behind a balancer every client comes from one address (docs/deploying.md says the same for nginx)
                "--max-connections-per-ip", "0",
            ], env={"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "CHAOS_RUNS": str(runs_dir),
                    "PYTHONUNBUFFERED": "1"}, stdin=False)

        nodes = [start_node(f"node{i}") for i in range(s.nodes)]
        node_ports = [int(node.wait_for(r"Site starting on (\d+)", 60).group(1)) for node in nodes]
        for node in nodes:
            node.wait_for("connected to Redis at", 30)
        haproxy_port = free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(haproxy_port, node_ports))
        haproxy = start("haproxy", [haproxy_path, "-f", str(config), "-db"], stdin=False)
        wait_listening(haproxy_port, haproxy, 15)
        cutter = start("cutter", [
            sys.executable, str(HERE / "_chaos_cutter.py"), str(haproxy_port), "--rate", str(s.cuts / s.seconds),
            "--half-share", str(s.half_share), "--seed", str(s.seed),
        ], env={"PYTHONUNBUFFERED": "1"})
        url = f"ws://127.0.0.1:{cutter.expect('ready', 30)['port']}/hub"
        clients: list[Proc] = []
        for k, kind in enumerate(KINDS):
            for p, count in enumerate(split(s.clients_per_kind, s.processes_per_kind)):
                argv, cwd = client_argv(kind, url, f"{kind[:2]}{p}", count, s, s.seed * 100 + 10 * k + p)
                clients.append(start(f"{kind} clients {p}", argv, cwd=cwd, env={
                    "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1",
                }))
        for client in clients:
            client.expect("ready", 120)
        outcome.seconds["set_up"] = round(time.monotonic() - started, 1)
        say(f"{len(clients)} client processes ready after {outcome.seconds['set_up']}s; traffic and cuts for {s.seconds:g}s")

        traffic = time.monotonic()
        for client in clients:
            client.send("go")
        cutter.send("go")
        if s.restart and s.nodes > 1:
            time.sleep(max(0.0, traffic + s.seconds * s.restart_at - 1.0 - time.monotonic()))
            cutter.send("pause")
            cutter.expect("paused", 10)
            time.sleep(1.0)
            outcome.restart_wall = time.time()
            nodes[0].terminate()
            say(f"SIGTERM {nodes[0].pid} ({nodes[0].name}): a rolling restart")
            outcome.restart_exit = nodes[0].wait_or_kill(RESTART_HANDOVER + 10)
            nodes[0] = start_node("node0-restarted", node_ports[0])
            nodes[0].wait_for("connected to Redis at", 30)
            time.sleep(max(0.0, outcome.restart_wall + RESTART_QUIET - time.time()))
            cutter.send("unpause")
            cutter.expect("unpaused", 10)
        if s.kill and s.nodes > 1:
            time.sleep(max(0.0, traffic + s.seconds * s.kill_at - 1.0 - time.monotonic()))
            cutter.send("pause")
            cutter.expect("paused", 10)
            time.sleep(1.0)
            if s.kill_lull:
                for client in clients:
                    client.send("hush")
                for client in clients:
                    client.expect("hushed", s.window + 10)
                sessions = 3 * s.clients_per_kind
                outcome.snapshots_at_kill = (wait_for_snapshots(redis_port, sessions, LULL_LIMIT), sessions)
                say(f"a lull: {outcome.snapshots_at_kill[0]} of {sessions} sessions have their snapshot in Redis")
            victim = nodes[-1]
            outcome.kill_wall = time.time()
            outcome.killed_pid = victim.pid
            outcome.killed_signal = victim.kill9()
            say(f"kill -9 {victim.pid} ({victim.name})")
            time.sleep(KILL_QUIET)
            if s.kill_lull:
                for client in clients:
                    client.send("go")
            cutter.send("unpause")
            cutter.expect("unpaused", 10)
        time.sleep(max(0.0, s.seconds - (time.monotonic() - traffic)))
        cutter.send("stop")
        outcome.cutter = cutter.expect("cutter", 10)
        outcome.seconds["traffic"] = round(time.monotonic() - traffic, 1)
        say(f"cuts stopped: {outcome.cutter}")

        settling = time.monotonic()
        for client in clients:
            client.send("stop")
        expected: dict[str, int] = {}
        for client in clients:
            expected.update(client.expect("stopped", s.window + 20)["last"])
        line = "expect " + json.dumps(expected)
        for client in clients:
            client.send(line)
        for client in clients:
            outcome.clients.extend(client.expect("result", 40)["clients"])
        outcome.seconds["settle"] = round(time.monotonic() - settling, 1)
        outcome.cpu = {proc.name: proc.cpu_seconds() for proc in procs if proc.proc.poll() is None}
    finally:
        for proc in reversed(procs):  # (all at once: a node's stop may wait for its sessions' clients)
            proc.terminate()
        for proc in reversed(procs):
            proc.stop()
        outcome.logs = {proc.name: proc.lines[-20_000:] for proc in procs if proc.name.startswith(("node", "haproxy"))}
    for path in runs_dir.glob("runs-*.log"):
        for line in path.read_text().splitlines():
            name, n = line.split()
            outcome.runs[(name, int(n))] += 1
    outcome.seconds["total"] = round(time.monotonic() - started, 1)
    return outcome


# -- the checks -------------------------------------------------------------------------
def at_the_restart(outage: dict[str, Any], outcome: Outcome) -> bool:
    """Did this outage start with the rolling restart (no cut came from 1 s before the SIGTERM to RESTART_QUIET after)?"""
    wall = outcome.restart_wall
    return wall is not None and wall - 0.05 <= outage["at"] <= wall + RESTART_QUIET


def check_restart(outcome: Outcome) -> tuple[dict[str, Any], list[str]]:
    """
    The sessions the rolling restart dropped (docs/resumption.md, "Rolling
    restarts"): every one resumed on another node (none refused), and the
    stopped node ended by itself (its handover bounded by its shutdown
    timeout).  Their loss and doubles are checked with every session's.
    """
    problems: list[str] = []
    resumed = fresh = 0
    for client in outcome.clients:
        for outage in client["outages"]:
            if not at_the_restart(outage, outcome):
                continue
            if outage["outcome"] == "resumed":
                resumed += 1
            else:
                fresh += 1
                problems.append(f"{client['name']}: its session did not resume after the rolling restart ({outage})")
    if resumed + fresh == 0:
        problems.append("the rolling restart dropped no session (no outage began at it)")
    # (twistd ends a SIGTERM'd run by raising the same signal again once the reactor stopped: -15 is clean)
    if outcome.restart_exit not in (0, -signal.SIGTERM):
        problems.append(f"the restarted node ended with {outcome.restart_exit}, not a clean stop (0 or -15)")
    unclaimed = [line for line in outcome.logs.get("node0", []) if "were not claimed" in line]
    if unclaimed:
        problems.append(f"the restarted node ended sessions nobody claimed: {unclaimed[0]}")
    return {"sessions": resumed + fresh, "resumed": resumed, "fresh": fresh}, problems


def at_the_kill(outage: dict[str, Any], outcome: Outcome) -> bool:
    """Did this outage start with the node's kill (no cut came from 1 s before it to KILL_QUIET after)?"""
    return outcome.kill_wall is not None and outcome.kill_wall - 0.05 <= outage["at"] <= outcome.kill_wall + KILL_QUIET


def check_node_kill(outcome: Outcome, bound: NodeKillBound) -> tuple[dict[str, Any], list[str]]:
    """
    The sessions the kill dropped, held to C{bound}: each one resumed, or
    (when the bound allows it) was refused with a typed reason and started
    a fresh session.  Counts both.  Loss and doubles of the sessions that
    resumed are checked with every other session's (L{verdict}).
    """
    problems: list[str] = []
    resumed = fresh = duplicate_calls = 0
    reasons: Counter[str] = Counter()
    for client in outcome.clients:
        if any(at_the_kill(outage, outcome) for outage in client["outages"]):
            duplicate_calls += sum(1 for error in client["calls"]["failed"].values() if DUPLICATE_CALL in error)
        for outage in client["outages"]:
            if not at_the_kill(outage, outcome):
                continue
            if outage["outcome"] == "resumed":
                resumed += 1
                continue
            fresh += 1
            reasons.update(outage["reasons"])
            if not bound.may_start_afresh:
                problems.append(f"{client['name']}: its session did not resume after the node's kill ({outage})")
            elif not outage["reasons"] or not set(outage["reasons"]) <= bound.reasons:
                problems.append(f"{client['name']}: a fresh session after the kill without a typed reason ({outage})")
    if resumed + fresh == 0:
        problems.append("the kill -9 dropped no session (no outage began at it)")
    if outcome.killed_signal != signal.SIGKILL:
        problems.append(f"the killed node ended with signal {outcome.killed_signal}, not SIGKILL")
    if duplicate_calls and not bound.may_answer_duplicate_call:
        problems.append(f"{duplicate_calls} call(s) of sessions on the killed node failed {DUPLICATE_CALL}")
    summary = {"sessions": resumed + fresh, "resumed": resumed, "fresh": fresh, "reasons": dict(reasons),
               "duplicate_calls": duplicate_calls}
    return summary, problems


def verdict(outcome: Outcome, bound: NodeKillBound = KILL_BOUND) -> dict[str, Any]:
    """Every check of tests/test_chaos.py's docstring, over one run: the counts, and C{problems} (empty: passed)."""
    s = outcome.settings
    problems: list[str] = []
    problem_counts: Counter[str] = Counter()

    def problem(category: str, text: str) -> None:
        problem_counts[category] += 1
        if problem_counts[category] <= 20:  # (the first 20 of each kind; all are counted)
            problems.append(text)

    clients = outcome.clients
    names = {client["name"] for client in clients}
    if len(clients) != 3 * s.clients_per_kind:
        problem("summaries", f"{len(clients)} client summaries, expected {3 * s.clients_per_kind}")
    failed_shouts = {client["name"]: set(client["broadcast"]["failed"]) for client in clients}
    # -- client -> server: every answered call ran exactly once, none ran twice
    issued = {client["name"]: client["calls"]["issued"] for client in clients}
    for (name, n), count in outcome.runs.items():
        if count > 1:
            problem("ran-twice", f"({name}, {n}) ran {count} times")
        if name not in names or n > issued.get(name, 0):
            problem("ran-never-called", f"({name}, {n}) ran but was never called")
    per_kind: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    resume_seconds: list[float] = []
    over_backoff: list[float] = []
    outages_not_at_kill = 0
    for client in clients:
        name, calls = client["name"], client["calls"]
        tally = per_kind[client["kind"]]
        unanswered = {int(n) for n in calls["failed"]} | set(calls["hanging"])
        for n in range(1, calls["issued"] + 1):
            if n not in unanswered and outcome.runs[(name, n)] != 1:
                problem("answered-not-run-once", f"({name}, {n}) was answered but ran {outcome.runs[(name, n)]} times")
        if calls["hanging"]:
            problem("calls-hanging", f"{name}: calls left hanging: {calls['hanging'][:10]}")
        if calls["wrong"] or calls["settled_twice"]:
            problem("wrong-answers", f"{name}: wrong answers {calls['wrong']}, settled twice {calls['settled_twice']}")
        refused = sum(client["refusals"].values())
        failed = calls["failed"]
        if any(at_the_kill(outage, outcome) for outage in client["outages"]):
            # (a call running on the killed node may settle duplicate-call: check_node_kill holds them to its bound)
            failed = {n: error for n, error in failed.items() if DUPLICATE_CALL not in error}
        if failed and not refused:
            problem("calls-failed-in-resumed-sessions",
                    f"{name}: {len(failed)} call(s) failed in sessions that always resumed: {list(failed.items())[:3]}")
        # -- server -> client: numbered receiver calls, no gap, no double, none behind its answer
        s2c = client["s2c"]
        if s2c["lost"] or s2c["doubled"] or s2c["answer_before_numbered"]:
            problem("receiver-calls-lost-or-doubled",
                    f"{name}: numbered receiver calls lost {s2c['lost']}, doubled {s2c['doubled']}, "
                    f"missing at their answer {s2c['answer_before_numbered']}: {s2c['examples']}")
        # -- group broadcasts: in order, no double, no gap (but shouts that failed may or may not have gone out)
        heard = client["broadcast"]
        if heard["doubled_or_late"]:
            problem("broadcasts-doubled",
                    f"{name}: broadcasts doubled or out of order: {heard['doubled_or_late']} {heard['examples']}")
        gaps = [[sender, m] for sender, m in heard["gaps"] if m not in failed_shouts.get(sender, set())]
        if gaps or heard["gap_count"] > len(heard["gaps"]):
            problem("broadcasts-lost", f"{name}: broadcasts lost ({heard['gap_count']}): {gaps[:10]}")
        if client.get("missing_at_end"):
            problem("broadcasts-missing-at-end", f"{name}: the last broadcasts never came: {client['missing_at_end']}")
        if heard["hanging"]:
            problem("broadcasts-hanging", f"{name}: broadcast calls left hanging: {heard['hanging'][:10]}")
        # -- outages: each resumed within its backoff + 1 s, or (only at the kill) started afresh with a reason
        if client["open_outage"]:
            problem("never-came-back", f"{name}: a dropped connection never came back")
        for outage in client["outages"]:
            if at_the_kill(outage, outcome) or at_the_restart(outage, outcome):
                continue  # (held to their own checks: check_node_kill, check_restart)
            outages_not_at_kill += 1
            if outage["outcome"] != "resumed":
                problem("cut-not-resumed", f"{name}: a cut was not resumed: {outage['outcome']} {outage['reasons']}")
                continue
            resume_seconds.append(outage["seconds"])
            over_backoff.append(outage["seconds"] - outage["backoff"])
            if outage["seconds"] > outage["backoff"] + RESUME_SLACK:
                problem("resume-slower-than-backoff-plus-1s",
                        f"{name}: resumed {outage['seconds']:.2f}s after the drop, backoff {outage['backoff']:.2f}s + "
                        f"{RESUME_SLACK:g}s allowed")
        tally.update(
            clients=1, issued=calls["issued"], answered=calls["answered"], failed=len(calls["failed"]),
            numbered=s2c["received"], shouts=heard["shouts"], heard=heard["heard"], drops=client["drops"],
            resumes=client["resumes"], refusals=refused,
            skipped_after_fresh=heard["skipped_after_fresh"] + client["missing_at_end_after_fresh"],
        )
    for kind, tally in per_kind.items():
        if tally["answered"] == 0 or tally["heard"] == 0 or tally["numbered"] == 0:
            problem("no-traffic", f"{kind}: no traffic ({dict(tally)})")
        if tally["resumes"] == 0:
            problem("kind-never-resumed", f"{kind}: no client of this kind resumed (the cuts missed it)")
    cuts = outcome.cutter.get("cuts", 0) + outcome.cutter.get("half_cuts", 0)
    if outages_not_at_kill < cuts // 2:
        problem("cuts-missed-the-clients",
                f"{cuts} cuts but only {outages_not_at_kill} outages: the cuts did not reach the clients")
    # resumes that landed on another node than the one holding the session (the nodes' log lines)
    moved = sum(
        1 for name, lines in outcome.logs.items() if name.startswith("node")
        for line in lines if MOVED_LINE in line
    )
    if s.nodes > 1 and moved == 0:
        problem("no-session-moved", f"{s.nodes} nodes, but no session resumed on another node than its own")
    restart: dict[str, Any] | None = None
    if s.restart and s.nodes > 1:
        restart, restart_problems = check_restart(outcome)
        for text in restart_problems:
            problem("rolling-restart", text)
    kill: dict[str, Any] | None = None
    if s.kill and s.nodes > 1:
        kill, kill_problems = check_node_kill(outcome, bound)
        if outcome.snapshots_at_kill is not None:
            kill["snapshots_at_kill"] = list(outcome.snapshots_at_kill)
        for text in kill_problems:
            problem("node-kill", text)

    def quantile(values: list[float], q: float) -> float | None:
        return round(sorted(values)[min(len(values) - 1, int(q * len(values)))], 3) if values else None

    return {
        "settings": asdict(s),
        "versions": outcome.versions,
        "seconds": outcome.seconds,
        "cpu_seconds": outcome.cpu,
        "cuts": outcome.cutter,
        "kinds": {kind: dict(tally) for kind, tally in per_kind.items()},
        "runs": sum(outcome.runs.values()),
        "outages": outages_not_at_kill,
        "moved": moved,
        "resume_seconds": {"p50": quantile(resume_seconds, 0.5), "p99": quantile(resume_seconds, 0.99),
                           "max": quantile(resume_seconds, 1.0)},
        "resume_minus_backoff": {"p50": quantile(over_backoff, 0.5), "p99": quantile(over_backoff, 0.99),
                                 "max": quantile(over_backoff, 1.0)},
        "restart": restart,
        "kill": kill,
        "problem_counts": dict(problem_counts),
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI's form: 1 node, 24 clients, ~200 cuts in 55 s, no kill")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--clients", type=int, help="clients of each kind (three kinds)")
    parser.add_argument("--processes", type=int, help="processes of each kind")
    parser.add_argument("--seconds", type=float, help="seconds of traffic and cuts")
    parser.add_argument("--cuts", type=int, help="cuts over those seconds (on average)")
    parser.add_argument("--kill", action=argparse.BooleanOptionalAction, help="kill -9 one node half-way (needs 2+ nodes)")
    parser.add_argument("--kill-lull", action=argparse.BooleanOptionalAction,
                        help="the kill lands in a lull, once every session's snapshot is in Redis: all must resume")
    parser.add_argument("--restart", action=argparse.BooleanOptionalAction,
                        help="a rolling restart of the first node a quarter of the way (needs 2+ nodes)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--save", metavar="PATH", help="also write everything the run produced (clients' summaries, runs) here")
    args = parser.parse_args()
    s = QUICK if args.quick else Settings()
    chosen = {"nodes": args.nodes, "clients_per_kind": args.clients, "processes_per_kind": args.processes,
              "seconds": args.seconds, "cuts": args.cuts, "kill": args.kill, "kill_lull": args.kill_lull,
              "restart": args.restart,
              "seed": args.seed}
    s = replace(s, **{key: value for key, value in chosen.items() if value is not None})
    with tempfile.TemporaryDirectory(prefix="twisted-hub-chaos-") as workdir:
        try:
            outcome = run(s, Path(workdir), log=sys.stderr)
        except HarnessError as e:
            print(f"chaos: {e}", file=sys.stderr)
            return 2
    if args.save:
        raw = {**asdict(outcome), "runs": [[name, n, count] for (name, n), count in outcome.runs.items()]}
        Path(args.save).write_text(json.dumps(raw))
    report = verdict(outcome, bound_for(s))
    print(json.dumps(report, indent=1))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
