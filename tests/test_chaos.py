"""
Issue 21's chaos test, CI's short form (the full one: ``python3 bench/chaos.py``).

The set-up, all real processes on 127.0.0.1 (bench/chaos.py): one
``redis-server``; N ``twistd hub`` nodes on it, each with ``--redis`` and
``--resume-window 30`` serving bench/_chaos_hub.py; haproxy in front of
them, ``balance roundrobin`` in ``mode tcp``, no stickiness; a fault
injector in front of haproxy (bench/_chaos_cutter.py) that resets a random
connection about 3.6 times a second, 80 % both halves (RST to the client and
to haproxy), 20 % the client's half only (the server's side stays open and
hears nothing); and three client processes, one per kind, 8 clients each,
all with resume on: Twisted ``ReconnectingHubClient``, asyncio
``ReconnectingAsyncHubClient`` and the JavaScript ``ReconnectingHubClient``
in Node.

The traffic, numbered both ways: each client calls ``work(name, n)`` for
n = 1, 2, 3 ... with two calls in flight; the hub appends ``name n`` to its
node's run file (flushed) and sends the caller ``numbered(session, k)``,
k from a counter kept in ``connection.items``; each client joined the group
``all`` before the traffic began and broadcasts ``shout(name, m)`` for
m = 1, 2, 3 ... to it.  At the end every client stops calling, its calls
settle, and it waits until it has heard every sender's last answered
broadcast.

What a passing run proves (bench/chaos.py's ``verdict``, every check over
every client of every kind):

- client to server: every call a client saw answered ran exactly once (its
  line is in exactly one node's run file, once); no call ran twice; no line
  is there that no client called; every call settled exactly once with its
  own answer (``[name, n, k, session]``), none is left hanging, and no call
  failed in a session that always resumed;
- server to client: each session's ``numbered`` calls arrive as 1, 2, 3 ...
  with no gap and no double, and each one before the answer of the call that
  sent it (so none was lost at the end either); ``connection.items`` carried
  the counter over every resume;
- broadcasts: from each sender, every receiver hears 1, 2, 3 ... in order,
  no double, no gap, up to the sender's last answered broadcast (a gap is
  excused only at a broadcast whose call failed, which may or may not have
  gone out, and, from a sender not heard since, after the receiver's own
  session was refused and it rejoined the group);
- every dropped connection came back, and every cut was resumed (no
  refusal, none outside the kill) within the backoff the client drew for it
  plus 1 s (measured by each client from the drop to ``on_resumed``);
- the cuts reached the clients (at least one outage for every two cuts) and
  every kind resumed and carried traffic.

With 1 node (``test_one_node``) every resume finds its session where it
was.  With 3 nodes (``test_three_nodes_a_restart_and_a_kill``) the cuts send
about two resumes in three to another node, which claims the session from
the node holding it (docs/resumption.md, "Across nodes"); at least one
outage in three must be such a move (counted from the nodes' log lines).  A
quarter of the way the first node gets SIGTERM and a new process takes its
port (a rolling restart): every session it held must resume on another node
(``check_restart``; it exits cleanly, having handed every session over).
Half-way another node gets ``kill -9``, held to ``check_node_kill``.  Here
the kill lands in a lull (``kill_lull``): the clients stop their traffic,
the harness waits until Redis holds a snapshot of every session
(docs/resumption.md, "When a node dies"), then kills: every session the
kill dropped must resume on another node (``QUIET_KILL_BOUND``), its
traffic then checked like every other's.  The full form kills under load
(``KILL_BOUND``, the documented bound): a session the kill dropped resumed,
or was refused ``session-unknown`` and started afresh (counted).

A missing redis-server, haproxy, node or js/node_modules fails the test,
never skips it.  Bounded: every wait in the harness has a deadline; every
process is started by the harness and ended by its PID.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench_module(name: str) -> Any:
    """A module of bench/ (not a package: its scripts import each other by name)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


chaos = _bench_module("chaos")

pytestmark = [pytest.mark.timeout(300), pytest.mark.long_process]


def run_and_judge(settings: Any, workdir: Path) -> dict[str, Any]:
    outcome = chaos.run(settings, workdir, log=sys.stderr)
    report = chaos.verdict(outcome, chaos.bound_for(settings))
    shown = {key: value for key, value in report.items() if key != "problems"}
    print(json.dumps(shown, indent=1), file=sys.stderr)
    assert report["problems"] == [], "\n".join(report["problems"][:40])
    return report


def test_one_node(tmp_path: Path) -> None:
    """1 node behind haproxy, ~200 random cuts in 55 s over 24 clients of 3 kinds: nothing lost, doubled or left hanging."""
    report = run_and_judge(chaos.QUICK, tmp_path)
    cuts = report["cuts"]["cuts"] + report["cuts"]["half_cuts"]
    assert cuts >= 150, report["cuts"]
    for kind in chaos.KINDS:
        tally = report["kinds"][kind]
        assert tally["clients"] == 8 and tally["refusals"] == 0 and tally["resumes"] >= 10, (kind, tally)


def test_three_nodes_a_restart_and_a_kill(tmp_path: Path) -> None:
    """
    3 nodes behind haproxy round robin, ~150 cuts in 40 s, a rolling restart
    of one node and a kill -9 of another: every cut resumes, most of them on
    another node than the one that held the session (each one is counted
    from the nodes' log lines); every session of the restarted node resumes
    elsewhere; the kill lands in a lull, once Redis holds every session's
    snapshot, and every session it dropped resumes on another node with
    nothing lost or doubled (the kill under load, where sessions with
    traffic in flight are refused, is the full form's: bench/chaos.py).
    """
    settings = replace(chaos.QUICK, nodes=3, kill=True, kill_lull=True, restart=True, seconds=40.0, cuts=150)
    report = run_and_judge(settings, tmp_path)
    kill = report["kill"]
    assert kill is not None and kill["sessions"] > 0
    # the kill came in a lull, with a snapshot of every session in Redis: every one of its sessions resumed
    snapshots, sessions = kill["snapshots_at_kill"]
    assert snapshots == sessions == 24, kill
    assert kill["resumed"] == kill["sessions"] and kill["fresh"] == 0, kill
    assert report["restart"] is not None and report["restart"]["resumed"] == report["restart"]["sessions"] > 0
    # round robin over 3 nodes: about two resumes in three land on another node
    assert report["moved"] >= report["outages"] // 3, (report["moved"], report["outages"])
    for kind in chaos.KINDS:
        assert report["kinds"][kind]["resumes"] >= 5, (kind, report["kinds"][kind])
