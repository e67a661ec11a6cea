#!/usr/bin/env python3
"""
A reconnect storm against one server process, with bystanders watching it
(issue 13, "connection storms"; issue 24 item 4).

    python3 bench/storm.py --clients 19000 --bystanders 500 --repeats 3 [--record NAME --note TEXT]
    python3 bench/storm.py --quick          # CI's smoke test: 200 + 20 clients
    python3 bench/storm.py --crash          # the server crashes instead (SIGKILL, restarted on its port)

One hub server (``bench/_server.py hub``, server heartbeats every
``--heartbeat`` s, timeout ``--timeout`` s, no connection caps) and, per repeat:

1. **bystanders** (``--bystanders``, one ``bench/_wsload.py --watch``
   process) connect first and stay connected on the same server process the
   whole time: they answer the server's heartbeats, send their own client
   heartbeats (every ``--client-heartbeat`` s) and count every connection
   whose heartbeat was left unanswered for ``--client-timeout`` s (a false
   timeout: a real client would have dropped a healthy connection), and how
   many shorter timeouts (3 s: ``HeartbeatPolicy.FAST_DETECTION``; 10 s)
   would have dropped; also every connection they lose (a server heartbeat
   timeout closes with 4001), the longest round trip of their heartbeats
   and the longest gap between two server heartbeats; the server reports its
   longest reactor turn;
2. **storm clients** (``--clients``, split over load processes of at most
   ``--per-load`` connections, ``_wsload.py --reconnect``) connect;
3. every storm client's connection is **reset at once** (the ``drop``
   command: ``SO_LINGER`` 0 and close, an RST from every client, as when a
   proxy or a network path in front of the server fails; the server process
   lives on, so the bystanders stay where they are), and each comes back
   with full jitter: attempt n waits uniform(0, min(10, 0.5 * 2**(n-1))) s,
   the shape of ``full_jitter_policy``; an attempt may take ``--open-timeout``
   s from connect to the hub welcome;
4. measured: the time from the reset until every storm client is back (and
   the median and 99th percentile of each one's), the server's CPU over that
   window, the attempts, refused and otherwise failed ones, the connections
   the kernel dropped at the full listen queue (TcpExt ListenDrops), the
   server's peak of open files against its open-file limit; then, after a settling
   window of one server timeout plus one interval (a heartbeat missed in the
   storm times out within it), the bystanders' figures and any storm client
   lost again.

A repeat that produced no numbers is a failure (``failures`` in the result
file); one whose numbers show a bystander lost or falsely timed out, a storm
client lost again, or the server holding other than clients + bystanders is
"not met" (``unmet``: what the storm must keep, recorded with its numbers).
Either makes the exit status 1.

Open files: the server holds one file per connection plus a few (about 10:
listening socket, log, stdio, epoll); every process raises its soft limit to
its hard one, and the run refuses to start when clients + bystanders + the
server's other files + 100 exceed the server's limit (on the development
machine the hard limit is 20,000, so 20,000 clients cannot be held by one
process there; docs/performance.md, "A reconnect storm").  The open-file
limit of this process and of the server are printed and recorded.

``--crash`` is the storm of 2026-11-30 (docs/performance-history.md): no
bystanders, the server is killed with SIGKILL and a new one started on its
port at once.  127.0.0.1 only; every process is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import ROOT, cpu_seconds, library_versions, now, open_file_limit, open_file_limit_line  # noqa: E402
from _results import RECORDED_DIR, fmt, spread  # noqa: E402
from run import BenchError, Child, Processes, git_commit  # noqa: E402

#: files the server may need besides its connections and what it had open at start: accepts of
#: new connections while reset ones are not yet closed, the log's rotation, a Python import
FD_MARGIN = 100

#: the rows of the table in docs/performance.md (primary first): metric -> label
LABELS = [
    ("back_s", "s from the reset until every storm client is back"),
    ("back_p50_s", "s until half of them are back"),
    ("back_p99_s", "s until 99 % are back"),
    ("server_cpu_s", "server CPU s in that window"),
    ("server_cpu_pct", "% of one core (server, that window)"),
    ("server_cpu_us_per_reconnect", "server CPU µs per reconnection"),
    ("attempts", "connection attempts"),
    ("attempts_refused", "attempts refused"),
    ("attempts_failed", "attempts failed otherwise (errors, timeouts)"),
    ("attempts_timed_out", "of which not at the welcome within --open-timeout"),
    ("listen_drops", "connections the kernel dropped at the full listen queue"),
    ("bystander_false_timeouts", "bystanders timed out by their client heartbeat timeout (false timeouts)"),
    ("bystander_would_time_out_3s", "bystanders a 3 s client timeout would have dropped"),
    ("bystander_would_time_out_10s", "bystanders a 10 s client timeout would have dropped"),
    ("bystander_closes", "bystander connections lost"),
    ("storm_closes_after", "storm connections lost after they were back"),
    ("bystander_rtt_max_ms", "bystanders' slowest heartbeat round trip, ms"),
    ("bystander_rtt_p99_ms", "bystanders' heartbeat round trip p99, ms"),
    ("bystander_beat_gap_max_s", "longest gap between server heartbeats (bystanders), s"),
    ("server_turn_max_s", "server's longest reactor turn, s"),
    ("server_fds_max", "server open files, peak"),
    ("server_nofile", "server open-file limit (soft)"),
    ("conns_after", "connections on the server at the end"),
    ("open_s", "s to open every connection at first"),
]


@dataclass
class StormSettings:
    repeats: int = 1
    clients: int = 19_000
    bystanders: int = 500
    per_load: int = 2500
    heartbeat: float = 5.0
    timeout: float = 15.0
    client_heartbeat: float = 1.0
    client_timeout: float = 15.0
    open_timeout: float = 30.0
    settle: float = -1.0  # < 0: one server timeout plus one interval
    crash: bool = False
    #: session resumption on (BENCH_HUB_RESUME=1: the server and every client): the storm resumes
    resume: bool = False
    #: py-spy's raw profile of the server from 1 s before the reset, for this many seconds (0: none)
    profile_s: float = 0.0
    profile_to: str = ""

    def settle_s(self) -> float:
        return self.settle if self.settle >= 0 else self.timeout + self.heartbeat


def quick_settings() -> StormSettings:
    # Timeouts with room for a loaded CI machine (its scheduling stalls reach seconds): the smoke
    # run proves the storm mechanics; the frozen-server test proves the counts can fail.
    return StormSettings(clients=200, bystanders=20, per_load=100, heartbeat=1.0, timeout=6.0,
                         client_heartbeat=0.5, client_timeout=5.0, settle=2.0)


class FdSampler:
    """The peak of a process's open files, sampled every C{interval} s in a thread until stopped."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.peak = self.process.num_fds()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self.process.num_fds())
            except Exception:  # the process is gone: the peak so far stands
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def split(total: int, per_load: int) -> list[int]:
    """C{total} connections over as few load processes as hold at most C{per_load} each, evenly."""
    if total <= 0:
        return []
    count = -(-total // per_load)
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


def check_capacity(clients: int, soft_limit: int, fds_at_start: int) -> None:
    """Refuse a run the server cannot hold (one file per connection), saying how many would fit."""
    if soft_limit < 0:
        return  # unlimited
    needed = clients + fds_at_start + FD_MARGIN
    if needed > soft_limit:
        raise BenchError(
            f"{clients} connections cannot be held by one server process here: its open-file limit is "
            f"{soft_limit}, and it needs one file per connection plus the {fds_at_start} it has open and "
            f"{FD_MARGIN} to spare ({needed}); at most {soft_limit - fds_at_start - FD_MARGIN} clients fit. "
            f"Raise the limit (ulimit -n, LimitNOFILE) or run fewer clients.")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def listen_drops() -> int | None:
    """
    The kernel's count of connections dropped at a full listen queue (TcpExt ListenDrops, which
    includes ListenOverflows; this network namespace, Linux), or None where it cannot be read.
    """
    try:
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
    except OSError:
        return None
    if len(lines) != 2:
        return None
    fields = dict(zip(lines[0][1:], lines[1][1:]))
    return int(fields["ListenDrops"]) if "ListenDrops" in fields else None


def server_nofile(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0])


def impl_of(s: StormSettings) -> str:
    """The processes' implementation: C{hub}, or C{hub-resume} (resume on, bench/run.py's impl_env)."""
    return "hub-resume" if s.resume else "hub"


def start_server(procs: Processes, s: StormSettings, port: int = 0) -> tuple[Child, int]:
    name = "server" if not port else "server again"
    server = procs.start(name, "_server.py", "hub", "--heartbeat", str(s.heartbeat), "--timeout", str(s.timeout),
                         "--port", str(port), impl=impl_of(s))
    return server, int(server.expect("ready", 20)["port"])


def counts(loads: list[Child]) -> list[dict[str, Any]]:
    for load in loads:
        load.send("count")
    return [load.expect("count", 20) for load in loads]


def one_storm(s: StormSettings) -> dict[str, Any]:
    """One repeat: a fresh server, bystanders, storm clients, the reset, the way back; its figures."""
    with Processes() as procs:
        server, port = start_server(procs, s)
        nofile = server_nofile(server.pid)
        sampler = FdSampler(server.pid)
        try:
            check_capacity(s.clients + s.bystanders, nofile, sampler.peak)
            watchers: list[Child] = []
            if s.bystanders:
                watchers.append(procs.start(
                    "bystanders", "_wsload.py", "hub", str(port), str(s.bystanders), "--timeout", "60",
                    "--watch", str(s.client_heartbeat), str(s.client_timeout), impl=impl_of(s)))
                if watchers[0].expect("ready", 75)["conns"] != s.bystanders:
                    raise BenchError("not every bystander connected")
            opened = now()
            loads = [procs.start(f"load {i}", "_wsload.py", "hub", str(port), str(share), "--timeout", "150",
                                 "--reconnect", "--open-timeout", str(s.open_timeout), impl=impl_of(s))
                     for i, share in enumerate(split(s.clients, s.per_load))]
            ready = sum(load.expect("ready", 170)["conns"] for load in loads)
            open_s = now() - opened
            if ready != s.clients:
                raise BenchError(f"only {ready} of {s.clients} storm clients connected")
            time.sleep(min(2.0, s.heartbeat))  # a heartbeat or two on every connection before the storm
            profiler = None
            if s.profile_s:
                profiler = subprocess.Popen(["py-spy", "record", "-p", str(server.pid), "-d", str(int(s.profile_s)),
                                             "-r", "100", "-f", "raw", "-o", s.profile_to],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            for child in [*watchers, server]:  # measured from here: wait until each has read it
                child.send("mark")
                child.expect("marked", 20)
            cpu0 = cpu_seconds(server.pid)
            drops0 = listen_drops()
            t_lost = now()
            if s.crash:
                os.kill(server.pid, signal.SIGKILL)  # a crash, not a shutdown
                server.proc.wait(timeout=10)
                sampler.stop()
                server, _ = start_server(procs, s, port)
                cpu0 = cpu_seconds(server.pid)
                sampler = FdSampler(server.pid)
            else:
                for load in loads:
                    load.send("drop")
                dropped = sum(load.expect("dropped", 20)["conns"] for load in loads)
                if dropped != s.clients:
                    raise BenchError(f"{dropped} of {s.clients} storm connections were reset")
            restored = [load.expect("restored", 240) for load in loads]
            cpu = cpu_seconds(server.pid) - cpu0
            drops1 = listen_drops()
            back_s = max(r["t_last"] for r in restored) - t_lost
            time.sleep(s.settle_s())
            watched = counts(watchers)
            stormed = counts(loads)
            server.send("stats")
            stats = server.expect("stats", 20)
            conns_after = int(stats["conns"])
            if profiler is not None:
                profiler.wait(timeout=s.profile_s + 30)
        finally:
            fds_max = sampler.stop()
    delays = [d for r in restored for d in r["delays"]]
    rtts_max = max((w["rtt_max"] for w in watched), default=0.0)
    result: dict[str, Any] = {
        "back_s": back_s,
        "back_p50_s": percentile(delays, 0.5),
        "back_p99_s": percentile(delays, 0.99),
        "server_cpu_s": cpu,
        "server_cpu_pct": cpu / back_s * 100,
        "server_cpu_us_per_reconnect": cpu / s.clients * 1e6,
        "attempts": sum(r["attempts"] for r in restored),
        "attempts_refused": sum(r["attempts_refused"] for r in restored),
        "attempts_failed": sum(r["open_timeouts"] + sum(r["other_errors"].values()) for r in restored),
        "attempts_timed_out": sum(r["open_timeouts"] for r in restored),
        # -1: not known (no /proc/net/netstat)
        "listen_drops": drops1 - drops0 if drops0 is not None and drops1 is not None else -1,
        "bystander_false_timeouts": sum(w["client_timeouts"] for w in watched),
        "bystander_would_time_out_3s": sum(w["would_time_out"]["3.0"] for w in watched),
        "bystander_would_time_out_10s": sum(w["would_time_out"]["10.0"] for w in watched),
        "bystander_closes": sum(w["unexpected_closes"] for w in watched),
        # a crash loses every connection "unexpectedly": there, only the losses after they were back count
        "storm_closes_after": sum(c["closes_since_back" if s.crash else "unexpected_closes"] for c in stormed),
        "bystander_rtt_max_ms": rtts_max * 1000,
        "bystander_rtt_p99_ms": max((w["rtt_p99"] for w in watched), default=0.0) * 1000,
        "bystander_beat_gap_max_s": max((w["beat_gap_max"] for w in watched), default=0.0),
        "server_turn_max_s": stats["lag_max"],
        "server_fds_max": fds_max,
        "server_nofile": nofile,
        "conns_after": conns_after,
        "open_s": open_s,
    }
    errors: dict[str, int] = {}
    for r in restored:
        for name, n in r["other_errors"].items():
            errors[name] = errors.get(name, 0) + n
    close_codes: dict[str, int] = {}
    for c in watched + stormed:
        for code, n in c["close_codes"].items():
            close_codes[code] = close_codes.get(code, 0) + n
    # kept in the result file, not in the table
    result["other_errors"] = errors
    result["close_codes"] = close_codes
    would: dict[str, int] = {}
    for w in watched:
        for limit, n in w["would_time_out"].items():
            would[limit] = would.get(limit, 0) + n
    result["bystanders_would_time_out"] = would
    result["bystander_heartbeats"] = {"sent": sum(w["sent"] for w in watched),
                                      "answered": sum(w["answered"] for w in watched)}
    if s.resume:
        refusals: dict[str, int] = {}
        for r in restored:
            for reason, n in r["resume_refusals"].items():
                refusals[reason] = refusals.get(reason, 0) + n
        result["resumes"] = sum(r["resumes"] for r in restored)
        result["resume_refusals"] = refusals
    return result


def problems_of(result: dict[str, Any], s: StormSettings) -> list[str]:
    """What makes a repeat a failure: a bystander lost or falsely timed out, a client not back, a server short of them."""
    found = []
    for key in ("bystander_false_timeouts", "bystander_closes", "storm_closes_after"):
        if result[key]:
            found.append(f"{key} = {result[key]}")
    if result["conns_after"] != s.clients + s.bystanders:
        found.append(f"the server holds {result['conns_after']} connections, not {s.clients + s.bystanders}")
    if s.resume and not s.crash and result["resumes"] != s.clients:
        found.append(f"{result['resumes']} of {s.clients} sessions resumed (refused: {result['resume_refusals']})")
    return found


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a result file (as bench/run.py's, with no reference): per metric, median [min..max]."""
    metrics = {name: {"hub": spread([r[name] for r in results]) if results else None} for name, _ in LABELS}
    return {"storm": {"metrics": metrics, "ratios": {}}}


def show(result: dict[str, Any]) -> str:
    shown = ", ".join(f"{name} {fmt(result[name]) if isinstance(result[name], float) else result[name]}"
                      for name, _ in LABELS)
    if "resumes" in result:
        shown += f", resumes {result['resumes']}, resume_refusals {result['resume_refusals']}"
    return shown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = StormSettings()
    parser.add_argument("--clients", type=int, default=defaults.clients, help="storm clients")
    parser.add_argument("--bystanders", type=int, default=defaults.bystanders,
                        help="clients connected to the same server the whole time")
    parser.add_argument("--per-load", type=int, default=defaults.per_load, help="connections per load process at most")
    parser.add_argument("--heartbeat", type=float, default=defaults.heartbeat, help="server heartbeat interval, s")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="server heartbeat timeout, s")
    parser.add_argument("--client-heartbeat", type=float, default=defaults.client_heartbeat,
                        help="the bystanders' own heartbeat interval, s")
    parser.add_argument("--client-timeout", type=float, default=defaults.client_timeout,
                        help="the bystanders' heartbeat timeout, s")
    parser.add_argument("--open-timeout", type=float, default=defaults.open_timeout,
                        help="seconds one reconnection attempt may take (connect to hub welcome)")
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--profile", nargs=2, metavar=("SECONDS", "FILE"),
                        help="py-spy record the server (raw) from 1 s before the reset for SECONDS into FILE")
    parser.add_argument("--crash", action="store_true", help="kill and restart the server instead (no bystanders)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 storm clients, 20 bystanders")
    parser.add_argument("--resume", action="store_true",
                        help="session resumption on, server and clients: every storm client resumes its session")
    parser.add_argument("--record", metavar="NAME",
                        help="write the result file to bench/results/recorded/NAME.json (committed; the docs cite it)")
    parser.add_argument("--note", default="", help="a note kept in the result file (e.g. what else loaded the machine)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="where a result file goes without --record")
    args = parser.parse_args()
    if args.quick:
        s = quick_settings()
        s.repeats = args.repeats
    else:
        s = StormSettings(
            repeats=args.repeats, clients=args.clients, bystanders=args.bystanders, per_load=args.per_load,
            heartbeat=args.heartbeat, timeout=args.timeout, client_heartbeat=args.client_heartbeat,
            client_timeout=args.client_timeout, open_timeout=args.open_timeout,
        )
    s.crash = args.crash
    s.resume = args.resume
    if args.profile:
        s.profile_s, s.profile_to = float(args.profile[0]), os.path.abspath(args.profile[1])
    if s.crash:
        s.bystanders = 0  # nothing survives a crash of the only server
    if s.clients <= 0 or s.per_load <= 0 or s.repeats <= 0:
        parser.error("--clients, --per-load and --repeats must be > 0")
    command = "python3 bench/storm.py " + shlex.join(sys.argv[1:])
    print(open_file_limit_line(), flush=True)
    print(f"{s.clients} storm clients in {len(split(s.clients, s.per_load))} load process(es), "
          f"{s.bystanders} bystanders; server heartbeat {s.heartbeat:g} s / {s.timeout:g} s, "
          f"bystanders' own {s.client_heartbeat:g} s / {s.client_timeout:g} s", flush=True)
    versions = library_versions()
    commit = git_commit()
    load_before = os.getloadavg()
    started = time.time()
    results: list[dict[str, Any] | None] = []
    failures: list[str] = []  # repeats that produced no numbers
    unmet: list[str] = []  # repeats whose numbers miss what the storm must keep (problems_of)
    for repeat in range(s.repeats):
        try:
            result: dict[str, Any] | None = one_storm(s)
        except BenchError as e:
            result = None
            failures.append(f"storm #{repeat + 1}: {e}")
        results.append(result)
        if result is not None:
            unmet += [f"storm #{repeat + 1}: {p}" for p in problems_of(result, s)]
            print(f"[{time.time() - started:6.1f}s] #{repeat + 1}: {show(result)}; other errors: "
                  f"{result['other_errors'] or 'none'}; close codes seen: {result['close_codes'] or 'none'}",
                  flush=True)
    got = [r for r in results if r is not None]
    summary = summarize(got)
    for name, label in LABELS:
        sp = summary["storm"]["metrics"][name]["hub"]
        if sp is not None:
            print(f"  {label:<58} {fmt(sp['median'])} [{fmt(sp['min'])}..{fmt(sp['max'])}]")
    document = {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "quick": args.quick,
        "note": args.note,
        "commit": commit,
        "impls": ["hub"],
        "settings": asdict(s),
        "versions": versions,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg": os.getloadavg(), "open_file_limit": open_file_limit()},
        "method": "per repeat: a fresh server; bystanders connect, then the storm clients; every storm connection "
                  "is reset at once (RST) and reopened with full jitter; times from the reset (system-wide "
                  "monotonic clock); spreads = median, min, max over the repeats",
        "labels": {"storm": [list(pair) for pair in LABELS]},
        "runs": {"storm": {"hub": results}},
        "summary": summary,
        "failures": failures,
        "unmet": unmet,
    }
    out = RECORDED_DIR if args.record else args.out
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{args.record}.json" if args.record
                        else f"storm-{'quick-' if args.quick else ''}{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
    print(f"results: {os.path.relpath(path, ROOT)}  ({time.time() - started:.0f}s)")
    for failure in failures:
        print(f"FAILURE: {failure}", file=sys.stderr)
    for problem in unmet:
        print(f"NOT MET: {problem}", file=sys.stderr)
    return 1 if failures or unmet or not got else 0


if __name__ == "__main__":
    sys.exit(main())
