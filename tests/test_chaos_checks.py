"""
The chaos test's judge and ledgers (bench/chaos.py, bench/_chaos_ledger.py,
js/test/chaos-ledger.mjs), without processes: every check of
tests/test_chaos.py fails on the fault it is there for and passes on a clean
run, and the Python and JavaScript ledgers report the same for the same
events.  (The real-process runs are tests/test_chaos.py.)
"""

from __future__ import annotations

import copy
import importlib
import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _bench_module(name: str) -> Any:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


chaos = _bench_module("chaos")
ledgers = _bench_module("_chaos_ledger")

KILL_AT = 1000.0


def summary(name: str, kind: str) -> dict[str, Any]:
    """A clean client: 3 calls answered, 3 numbered, 2 broadcasts of each of 3 senders heard, one cut resumed."""
    return {
        "name": name, "kind": kind,
        "calls": {"issued": 3, "answered": 3, "failed": {}, "hanging": [], "wrong": [], "settled_twice": 0},
        "s2c": {"received": 3, "lost": 0, "doubled": 0, "answer_before_numbered": 0, "examples": [], "sessions": ["s"]},
        "broadcast": {"shouts": 2, "answered_max": 2, "failed": [], "hanging": [], "heard": 6,
                      "heard_last": {"tw": 2, "as": 2, "js": 2}, "doubled_or_late": 0, "gaps": [], "gap_count": 0,
                      "skipped_after_fresh": 0, "examples": []},
        "drops": 1,
        "outages": [{"at": 900.0, "seconds": 0.4, "backoff": 0.1, "outcome": "resumed", "reasons": [], "drop_seen": True}],
        "open_outage": False, "resumes": 1, "refusals": {}, "missing_at_end": {}, "missing_at_end_after_fresh": 0,
    }


def outcome(nodes: int = 1) -> Any:
    settings = replace(chaos.QUICK, clients_per_kind=1, nodes=nodes, kill=nodes > 1, restart=False)
    clients = [summary("tw", "twisted"), summary("as", "asyncio"), summary("js", "javascript")]
    result = chaos.Outcome(settings=settings, clients=clients, cutter={"cuts": 4, "half_cuts": 2})
    result.runs = Counter({(name, n): 1 for name in ("tw", "as", "js") for n in (1, 2, 3)})
    if nodes > 1:
        result.kill_wall, result.killed_signal = KILL_AT, 9
        # one resume landed on another node (what the node logs then)
        result.logs = {"node1": [f"2026-12-07 [twisted_hub] tw-1 {chaos.MOVED_LINE} (2 message(s) replayed)"]}
    return result


def problems(result: Any, bound: Any = None) -> list[str]:
    return list(chaos.verdict(result, bound or chaos.KILL_BOUND)["problems"])


def client(result: Any, name: str) -> dict[str, Any]:
    return next(c for c in result.clients if c["name"] == name)


def killed(result: Any, name: str, reasons: list[str]) -> None:
    """C{name}'s session was on the killed node: dropped at the kill, refused for C{reasons}, fresh."""
    c = client(result, name)
    c["outages"].append({"at": KILL_AT + 0.2, "seconds": 0.5, "backoff": 0.2, "outcome": "fresh", "reasons": reasons,
                         "drop_seen": True})
    c["refusals"] = {reason: 1 for reason in reasons}


def test_a_clean_run_passes() -> None:
    """The clean outcome has no problem: the checks below fail on their fault, not on everything."""
    report = chaos.verdict(outcome())
    assert report["problems"] == []
    assert report["kinds"]["javascript"]["answered"] == 3 and report["outages"] == 3


def test_a_call_run_twice_fails() -> None:
    """Two lines for one call in the nodes' run files: 'ran 2 times'."""
    result = outcome()
    result.runs[("as", 2)] = 2
    assert any("(as, 2) ran 2 times" in p for p in problems(result))


def test_an_answered_call_that_never_ran_fails() -> None:
    """An answered call with no line in any run file (its run was lost, or answered twice from one run)."""
    result = outcome()
    del result.runs[("js", 3)]
    assert problems(result) == ["(js, 3) was answered but ran 0 times"]


def test_a_run_nobody_called_fails() -> None:
    """A line for a call beyond what the client issued."""
    result = outcome()
    result.runs[("tw", 4)] = 1
    assert problems(result) == ["(tw, 4) ran but was never called"]


def test_hanging_and_failed_calls() -> None:
    """A call left hanging fails; a failed call fails too unless that client's session was refused."""
    result = outcome()
    client(result, "tw")["calls"]["hanging"] = [3]
    client(result, "as")["calls"]["failed"] = {"2": "ConnectionClosedError"}
    found = problems(result)
    assert any("tw: calls left hanging: [3]" in p for p in found)
    assert any("as: 1 call(s) failed in sessions that always resumed" in p for p in found)
    refused = outcome(nodes=3)
    client(refused, "as")["calls"]["failed"] = {"2": "the session could not be resumed (session-unknown)"}
    killed(refused, "as", ["session-unknown"])
    assert problems(refused) == []


def test_server_to_client_loss_and_doubles_fail() -> None:
    """A numbered receiver call lost, doubled, or missing when its answer came: each fails."""
    for field in ("lost", "doubled", "answer_before_numbered"):
        result = outcome()
        client(result, "js")["s2c"][field] = 1
        assert len(problems(result)) == 1 and "js: numbered receiver calls" in problems(result)[0], field


def test_broadcast_gaps_are_excused_only_at_failed_shouts() -> None:
    """A gap at a broadcast whose call failed is excused; at one that was answered, or doubled, it fails."""
    result = outcome()
    client(result, "as")["broadcast"]["gaps"] = [["tw", 2]]
    client(result, "as")["broadcast"]["gap_count"] = 1
    assert problems(result) == ["as: broadcasts lost (1): [['tw', 2]]"]
    client(result, "tw")["broadcast"]["failed"] = [2]
    client(result, "tw")["refusals"] = {"session-unknown": 1}  # (why its shout could fail)
    assert problems(result) == []
    doubled = outcome()
    client(doubled, "tw")["broadcast"]["doubled_or_late"] = 1
    assert "tw: broadcasts doubled or out of order" in problems(doubled)[0]
    late = outcome()
    client(late, "js")["missing_at_end"] = {"as": 1}
    assert problems(late) == ["js: the last broadcasts never came: {'as': 1}"]


def test_resume_time_is_held_to_backoff_plus_a_second() -> None:
    """A cut resumed 1.1 s after the drop with 0.1 s of backoff passes; 1.11 s fails; one never over fails."""
    result = outcome()
    client(result, "tw")["outages"][0]["seconds"] = 1.1
    assert problems(result) == []
    client(result, "tw")["outages"][0]["seconds"] = 1.11
    assert problems(result) == ["tw: resumed 1.11s after the drop, backoff 0.10s + 1s allowed"]
    never = outcome()
    client(never, "js")["open_outage"] = True
    assert problems(never) == ["js: a dropped connection never came back"]


def test_a_cut_that_was_not_resumed_fails() -> None:
    """A refusal outside the kill (the 3-node case until sessions live in Redis) fails."""
    result = outcome()
    client(result, "as")["outages"][0].update(outcome="fresh", reasons=["session-unknown"])
    assert "as: a cut was not resumed: fresh ['session-unknown']" in problems(result)


def test_the_node_kill_is_held_to_its_bound() -> None:
    """At the kill: resumed or fresh with a typed reason, counted; a stricter bound or an untyped reason fails."""
    result = outcome(nodes=3)
    killed(result, "tw", ["session-unknown"])
    client(result, "js")["outages"].append(
        {"at": KILL_AT + 0.1, "seconds": 0.3, "backoff": 0.2, "outcome": "resumed", "reasons": [], "drop_seen": True})
    report = chaos.verdict(result)
    assert report["problems"] == []
    assert report["kill"] == {"sessions": 2, "resumed": 1, "fresh": 1, "reasons": {"session-unknown": 1},
                              "duplicate_calls": 0}
    strict = chaos.NodeKillBound(may_start_afresh=False)
    last = client(result, "tw")["outages"][-1]
    assert problems(result, strict) == [f"tw: its session did not resume after the node's kill ({last})"]
    untyped = outcome(nodes=3)
    killed(untyped, "tw", [])
    assert "a fresh session after the kill without a typed reason" in problems(untyped)[0]
    nothing = outcome(nodes=3)
    assert problems(nothing) == ["the kill -9 dropped no session (no outage began at it)"]


def test_duplicate_call_answers_at_the_kill_are_held_to_the_bound() -> None:
    """A call running on the killed node may settle duplicate-call (counted); not elsewhere, nor under a stricter bound."""
    result = outcome(nodes=3)
    js = client(result, "js")
    js["outages"].append({"at": KILL_AT + 0.1, "seconds": 0.3, "backoff": 0.2, "outcome": "resumed", "reasons": [],
                          "drop_seen": True})
    js["calls"]["failed"] = {"2": "HubError: duplicate-call this call ran once; its answer is no longer kept"}
    report = chaos.verdict(result)
    assert report["problems"] == [] and report["kill"]["duplicate_calls"] == 1
    assert problems(result, chaos.NodeKillBound(may_answer_duplicate_call=False)) == [
        "1 call(s) of sessions on the killed node failed duplicate-call"]
    elsewhere = outcome()
    client(elsewhere, "js")["calls"]["failed"] = {"2": "HubError: duplicate-call ..."}
    assert "js: 1 call(s) failed in sessions that always resumed" in problems(elsewhere)[0]


def test_cuts_that_missed_the_clients_fail() -> None:
    """Far more cuts than outages: the fault injector was not in the path."""
    result = outcome()
    result.cutter = {"cuts": 10, "half_cuts": 0}
    assert problems(result) == ["10 cuts but only 3 outages: the cuts did not reach the clients"]


#: one client's events: calls, numbered receiver calls, broadcasts, a drop and a resume, a refusal
EVENTS: list[list[Any]] = [
    ["fresh", []], ["joined", "s1"],
    ["call"], ["call"], ["numbered", "s1", 1], ["answer", 1, ["me", 1, 1, "s1"]],
    ["answer", 2, ["me", 2, 2, "s1"]],  # numbered 2 never came: lost
    ["numbered", "s1", 3], ["numbered", "s1", 3],  # a gap (2) and a double
    ["heard", "a", 1], ["heard", "a", 3], ["heard", "a", 3], ["heard", "b", 1],
    ["dropped"], ["retry", 0.25], ["resumed"],
    ["call"], ["failed", 3, "session lost"], ["failed", 3, "again"],
    ["dropped"], ["retry", 0.5], ["fresh", ["session-unknown"]], ["joined", "s2"],
    ["heard", "b", 4], ["heard", "a", 5],  # after a fresh session: skipped, not lost
    ["heard", "a", 7],  # then a gap again
    ["shout"], ["shout"], ["shout_answered", 1], ["shout_failed", 2], ["shout"],
    ["call"], ["answer", 4, ["someone else", 4, 1, "s2"]],
]
EXPECTED = {"a": 8, "b": 4, "c": 2}  # c: never heard since the fresh session (excused)
#: fields that depend on the clock
TIMED = ("at", "seconds")


def feed_python(events: list[list[Any]] | None = None, expected: dict[str, int] | None = None) -> dict[str, Any]:
    ledger = ledgers.Ledger("me")
    calls: list[int] = []
    for event in EVENTS if events is None else events:
        match event:
            case ["fresh", reasons]:
                ledger.fresh_session(reasons)
            case ["joined", session]:
                ledger.joined(session)
            case ["call"]:
                calls.append(ledger.next_call())
            case ["answer", n, result]:
                ledger.answer(n, result)
            case ["failed", n, error]:
                ledger.call_failed(n, error)
            case ["numbered", session, k]:
                ledger.numbered(session, k)
            case ["heard", sender, m]:
                ledger.heard_from(sender, m)
            case ["dropped"]:
                ledger.dropped()
            case ["retry", delay]:
                ledger.retry_delay(delay)
            case ["resumed"]:
                ledger.resumed()
            case ["shout"]:
                ledger.next_shout()
            case ["shout_answered", m]:
                ledger.shout_answered(m)
            case ["shout_failed", m]:
                ledger.shout_failed(m)
    return dict(ledger.summary("k", 1, {"session-unknown": 1, "window-expired": 0}, EXPECTED if expected is None else expected))


JS_FEED = """
import { Ledger } from "./test/chaos-ledger.mjs";
const ledger = new Ledger("me");
for (const [name, ...args] of EVENTS) {
  switch (name) {
    case "fresh": ledger.freshSession(args[0]); break;
    case "joined": ledger.joined(args[0]); break;
    case "call": ledger.nextCall(); break;
    case "answer": ledger.answer(args[0], args[1]); break;
    case "failed": ledger.callFailed(args[0], args[1]); break;
    case "numbered": ledger.numbered(args[0], args[1]); break;
    case "heard": ledger.heardFrom(args[0], args[1]); break;
    case "dropped": ledger.dropped(); break;
    case "retry": ledger.backoff += args[0]; break;
    case "resumed": ledger.resumed(); break;
    case "shout": ledger.nextShout(); break;
    case "shout_answered": ledger.shoutAnswered(args[0]); break;
    case "shout_failed": ledger.shoutFailed(args[0]); break;
  }
}
console.log(JSON.stringify(ledger.summary("k", 1, { "session-unknown": 1, "window-expired": 0 }, EXPECTED)));
"""


def untimed(report: dict[str, Any]) -> dict[str, Any]:
    report = copy.deepcopy(report)
    for outage in report["outages"]:
        for key in TIMED:
            outage.pop(key)
    return report


def test_the_python_ledger_catches_each_fault() -> None:
    """Fed the events above: one numbered lost (and one missing at its answer), one doubled, gaps, doubles, skips."""
    report = feed_python()
    assert report["calls"] == {"issued": 4, "answered": 2, "failed": {3: "session lost"}, "hanging": [],
                               "wrong": [[4, ["someone else", 4, 1, "s2"]]], "settled_twice": 1}
    assert (report["s2c"]["lost"], report["s2c"]["doubled"], report["s2c"]["answer_before_numbered"]) == (1, 1, 1)
    heard = report["broadcast"]
    assert heard["gaps"] == [["a", 2], ["a", 6]] and heard["gap_count"] == 2
    assert heard["skipped_after_fresh"] == 2 + 1  # b 2..3, a 4
    assert heard["doubled_or_late"] == 1
    assert (heard["answered_max"], heard["failed"], heard["hanging"]) == (1, [2], [3])
    assert report["missing_at_end"] == {"a": 1} and report["missing_at_end_after_fresh"] == 2
    assert [(o["outcome"], o["backoff"], o["reasons"]) for o in report["outages"]] == [
        ("resumed", 0.25, []), ("fresh", 0.5, ["session-unknown"])]
    assert report["s2c"]["sessions"] == ["s1", "s2"] and report["drops"] == 2


def feed_javascript(events: list[list[Any]], expected: dict[str, int]) -> dict[str, Any]:
    """js/test/chaos-ledger.mjs's summary after C{events}, in Node."""
    from .test_javascript import _tool

    script = f"const EVENTS = {json.dumps(events)};\nconst EXPECTED = {json.dumps(expected)};\n" + JS_FEED
    done = subprocess.run([_tool("node"), "--input-type=module", "-e", script], cwd=ROOT / "js", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_javascript_ledger_reports_the_same() -> None:
    """js/test/chaos-ledger.mjs, fed the same events in Node, reports what the Python ledger does."""
    python = json.loads(json.dumps(feed_python()))  # (int keys become strings, as in JSON)
    assert untimed(feed_javascript(EVENTS, EXPECTED)) == untimed(python)


#: a receiver refused after hearing a's 1: its fresh session never rejoined (a client stuck after a refusal)
NEVER_REJOINED: list[list[Any]] = [
    ["fresh", []], ["joined", "s1"], ["heard", "a", 1], ["dropped"], ["retry", 0.1], ["fresh", ["session-unknown"]],
]


@pytest.mark.parametrize("ledger", ["python", "javascript"])
def test_broadcasts_missed_after_a_refusal_are_excused_only_once_the_client_rejoined(ledger: str) -> None:
    """
    The last broadcasts a receiver lacks from a sender it has not heard since
    its session was refused are excused once its fresh session rejoined the
    group (they may have gone out before); if it never rejoined, nothing
    could reach it: they are missing, and the judge says so.
    """
    def feed(events: list[list[Any]]) -> dict[str, Any]:
        return feed_python(events, {"a": 3}) if ledger == "python" else feed_javascript(events, {"a": 3})

    stuck = feed(NEVER_REJOINED)
    assert (stuck["missing_at_end"], stuck["missing_at_end_after_fresh"]) == ({"a": 2}, 0)
    result = outcome()
    client(result, "js").update(missing_at_end=stuck["missing_at_end"])
    assert problems(result) == ["js: the last broadcasts never came: {'a': 2}"]
    rejoined = feed([*NEVER_REJOINED, ["joined", "s2"]])
    assert (rejoined["missing_at_end"], rejoined["missing_at_end_after_fresh"]) == ({}, 2)


def test_three_nodes_without_a_moved_session_fail() -> None:
    """With several nodes, no resume that landed on another node than its own (none logged) fails the run."""
    result = outcome(nodes=3)
    killed(result, "tw", ["session-unknown"])
    assert problems(result) == []
    result.logs = {"node1": ["tw-1 resumed its session (2 message(s) replayed)"], "haproxy": [chaos.MOVED_LINE]}
    assert problems(result) == ["3 nodes, but no session resumed on another node than its own"]


def test_a_rolling_restart_must_lose_no_session() -> None:
    """Every session the restart dropped resumed (none refused), and the stopped node ended cleanly (status 0)."""
    result = outcome(nodes=3)
    killed(result, "tw", ["session-unknown"])
    result.settings = replace(result.settings, restart=True)
    result.restart_wall, result.restart_exit = KILL_AT - 10.0, 0
    assert problems(result) == ["the rolling restart dropped no session (no outage began at it)"]
    c = client(result, "as")
    c["outages"].append({"at": KILL_AT - 9.9, "seconds": 0.6, "backoff": 0.2, "outcome": "resumed", "reasons": [],
                         "drop_seen": True})
    assert problems(result) == []
    assert chaos.verdict(result)["restart"] == {"sessions": 1, "resumed": 1, "fresh": 0}
    c["outages"][-1].update(outcome="fresh", reasons=["session-unknown"])
    c["refusals"] = {"session-unknown": 1}
    assert any("did not resume after the rolling restart" in p for p in problems(result))
    result.restart_exit = -9
    assert any("not a clean stop" in p for p in problems(result))
    result.restart_exit = -15
    result.logs["node0"] = ["handing over: 2 session(s) were not claimed within 5 s and end here (1 moved so far)"]
    assert any("ended sessions nobody claimed" in p for p in problems(result))


def test_the_kill_bound_allows_only_session_unknown() -> None:
    """The documented bound: a session of the killed node is refused session-unknown; another reason fails."""
    result = outcome(nodes=3)
    killed(result, "as", ["backplane-state-lost"])
    assert any("without a typed reason" in p for p in problems(result))


@pytest.mark.parametrize(("total", "parts", "shares"), [(100, 2, [50, 50]), (8, 1, [8]), (10, 3, [4, 3, 3])])
def test_split(total: int, parts: int, shares: list[int]) -> None:
    """Clients are spread over a kind's processes as evenly as possible."""
    assert chaos.split(total, parts) == shares


def test_haproxy_config_is_round_robin_without_stickiness() -> None:
    """balance roundrobin in mode tcp, one server line per node, no stick table or cookie."""
    config = chaos.haproxy_config(8000, [9001, 9002, 9003])
    assert "mode tcp" in config and "balance roundrobin" in config and "bind 127.0.0.1:8000" in config
    assert [line.split()[2] for line in config.splitlines() if line.strip().startswith("server")] == [
        "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    assert "stick" not in config and "cookie" not in config


@pytest.mark.parametrize(("missing", "install"), [("haproxy", "apt-get install haproxy"),
                                                  ("redis-server", "apt-get install redis-server")])
def test_a_missing_tool_fails_the_run(missing: str, install: str, monkeypatch: Any, tmp_path: Path) -> None:
    """No haproxy (or redis-server): the run stops with an error naming the install, before starting anything."""
    which = chaos.shutil.which
    monkeypatch.setattr(chaos.shutil, "which", lambda name: None if name == missing else which(name))
    with pytest.raises(chaos.HarnessError, match=f"{missing} is not installed: {install}"):
        chaos.run(chaos.QUICK, tmp_path)
    assert not (tmp_path / "runs").exists()
