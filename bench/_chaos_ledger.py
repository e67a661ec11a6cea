"""
What one chaos client saw (bench/chaos.py): the Python clients' bookkeeping,
shared by bench/_chaos_twisted.py and bench/_chaos_asyncio.py;
js/test/chaos-client.mjs keeps the same ledger in JavaScript and prints the
same summary.  Each check is made as the traffic arrives; the summary holds
the counts (and the first few examples of each kind of fault) for the
harness to judge.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

#: examples kept per kind of fault (counts are always complete)
EXAMPLES = 10


class Ledger:
    """One client's calls, numbered receiver calls, broadcasts heard and outages."""

    def __init__(self, name: str) -> None:
        self.name = name
        # client -> server: work(name, n)
        self.last_n = 0
        self.pending: set[int] = set()
        self.answered = 0
        self.failed: dict[int, str] = {}
        self.wrong: list[Any] = []
        self.settled_twice = 0
        # server -> client: numbered(session, k), per session
        self.sessions: list[str] = []
        self.numbered_last: dict[str, int] = {}
        self.s2c_received = 0
        self.s2c_lost = 0
        self.s2c_doubled = 0
        self.answer_before_numbered = 0
        self.s2c_examples: list[Any] = []
        # broadcasts: shout(name, m) out, heard(sender, m) in
        self.last_m = 0
        self.shouts_answered_max = 0
        self.shouts_failed: list[int] = []
        self.shouts_pending: set[int] = set()
        self.heard_last: dict[str, int] = {}
        self.heard_epoch: dict[str, int] = {}
        self.heard = 0
        self.heard_doubled_or_late = 0
        self.heard_gaps: list[list[Any]] = []  # [sender, m] never heard, within one session
        self.heard_gap_count = 0
        self.heard_skipped_after_fresh = 0
        self.heard_examples: list[Any] = []
        # sessions and outages
        self.fresh_epoch = 0  # fresh sessions after the first one
        self.joined_epoch = -1  # the fresh_epoch of the last session that joined the group (-1: none yet)
        self.connected_once = False
        self.drop_at: float | None = None
        self.drop_wall = 0.0
        self.backoff = 0.0
        self.drops = 0
        self.outages: list[dict[str, Any]] = []
        self.stopping = False

    # -- client -> server ---------------------------------------------------------
    def next_call(self) -> int:
        self.last_n += 1
        self.pending.add(self.last_n)
        return self.last_n

    def answer(self, n: int, result: Any) -> None:
        if n not in self.pending:
            self.settled_twice += 1
            return
        self.pending.discard(n)
        if not (isinstance(result, list) and len(result) == 4 and result[0] == self.name and result[1] == n):
            self._example(self.wrong, [n, result])
            return
        self.answered += 1
        _, _, k, session = result
        if self.numbered_last.get(session, 0) < k:
            # numbered(session, k) is sent before this answer, on the same session: it is lost (or late)
            self.answer_before_numbered += 1
            self._example(self.s2c_examples, ["answer-before-numbered", session, k, self.numbered_last.get(session, 0)])

    def call_failed(self, n: int, error: BaseException | str) -> None:
        if n not in self.pending:
            self.settled_twice += 1
            return
        self.pending.discard(n)
        if not isinstance(error, str):
            error = f"{type(error).__name__}: {getattr(error, 'code', '')} {error}"
        self.failed[n] = error[:200]

    # -- server -> client ---------------------------------------------------------
    def numbered(self, session: str, k: int) -> None:
        self.s2c_received += 1
        last = self.numbered_last.get(session, 0)
        if k <= last:
            self.s2c_doubled += 1
            self._example(self.s2c_examples, ["doubled-or-late", session, k, last])
            return
        if k > last + 1:
            self.s2c_lost += k - last - 1
            self._example(self.s2c_examples, ["gap", session, last, k])
        self.numbered_last[session] = k

    def heard_from(self, sender: str, m: int) -> None:
        self.heard += 1
        last = self.heard_last.get(sender, 0)
        if m <= last:
            self.heard_doubled_or_late += 1
            self._example(self.heard_examples, ["doubled-or-late", sender, m, last])
            return
        if m > last + 1:
            if self.heard_epoch.get(sender, 0) < self.fresh_epoch:
                # our session was refused and we rejoined: what went to the group meanwhile is not ours
                self.heard_skipped_after_fresh += m - last - 1
            else:
                self.heard_gap_count += m - last - 1
                for missing in range(last + 1, m):
                    if len(self.heard_gaps) < 1000:
                        self.heard_gaps.append([sender, missing])
        self.heard_last[sender] = m
        self.heard_epoch[sender] = self.fresh_epoch

    def next_shout(self) -> int:
        self.last_m += 1
        self.shouts_pending.add(self.last_m)
        return self.last_m

    def shout_answered(self, m: int) -> None:
        self.shouts_pending.discard(m)
        self.shouts_answered_max = max(self.shouts_answered_max, m)

    def shout_failed(self, m: int) -> None:
        self.shouts_pending.discard(m)
        self.shouts_failed.append(m)

    def missing_from(self, expected: dict[str, int]) -> int:
        """Broadcasts still to come: each sender's last answered shout not heard yet (see L{tail_missing})."""
        return sum(self.tail_missing(expected)[0].values())

    def tail_missing(self, expected: dict[str, int]) -> tuple[dict[str, int], int]:
        """
        Of each sender's last answered broadcasts (C{expected}), how many
        did not come; and how many of those are excused: from a sender not
        heard since our session was refused and we rejoined (its last ones
        may have gone out before we were back in the group).  Not excused
        when we never rejoined after the refusal: then nothing could reach
        us (a client stuck after a refusal, say), and that is a loss.
        """
        missing: dict[str, int] = {}
        excused = 0
        rejoined = self.joined_epoch == self.fresh_epoch
        for sender, last in expected.items():
            lacking = last - self.heard_last.get(sender, 0)
            if lacking <= 0:
                continue
            if rejoined and self.heard_epoch.get(sender, 0) < self.fresh_epoch:
                excused += lacking
            else:
                missing[sender] = lacking
        return missing, excused

    # -- sessions -----------------------------------------------------------------
    def joined(self, session: str) -> None:
        """A session (the first, or a fresh one after a refusal) joined the group."""
        self.sessions.append(session)
        self.joined_epoch = self.fresh_epoch

    def fresh_session(self, reasons: list[str]) -> None:
        """A connection started a session (not a resume)."""
        if self.connected_once:
            self.fresh_epoch += 1
            self._outage_over("fresh", reasons)
        self.connected_once = True
        self.backoff = 0.0

    def resumed(self) -> None:
        self._outage_over("resumed", [])
        self.backoff = 0.0

    def dropped(self) -> None:
        if self.stopping:
            return
        self.drops += 1
        if self.drop_at is None:
            self.drop_at = time.monotonic()
            self.drop_wall = time.time()

    def retry_delay(self, delay: float) -> float:
        """The retry policy drew C{delay} seconds: part of this outage's backoff."""
        self.backoff += delay
        return delay

    def _outage_over(self, outcome: str, reasons: list[str]) -> None:
        if self.drop_at is None:
            # (a fresh session without a drop seen first: a refusal on a reconnect we did not see drop)
            self.outages.append({"at": time.time(), "seconds": 0.0, "backoff": self.backoff, "outcome": outcome,
                                 "reasons": reasons, "drop_seen": False})
            return
        self.outages.append({
            "at": round(self.drop_wall, 3), "seconds": round(time.monotonic() - self.drop_at, 4),
            "backoff": round(self.backoff, 4), "outcome": outcome, "reasons": reasons, "drop_seen": True,
        })
        self.drop_at = None

    def _example(self, into: list[Any], example: Any) -> None:
        if len(into) < EXAMPLES:
            into.append(example)

    def summary(self, kind: str, resumes: int, refusals: dict[str, int], expected: dict[str, int]) -> dict[str, Any]:
        """What this client saw; C{expected}: each sender's last answered broadcast (what must have come)."""
        return {
            "name": self.name, "kind": kind,
            "calls": {
                "issued": self.last_n, "answered": self.answered, "failed": self.failed,
                "hanging": sorted(self.pending), "wrong": self.wrong, "settled_twice": self.settled_twice,
            },
            "s2c": {
                "received": self.s2c_received, "lost": self.s2c_lost, "doubled": self.s2c_doubled,
                "answer_before_numbered": self.answer_before_numbered, "examples": self.s2c_examples,
                "sessions": self.sessions,
            },
            "broadcast": {
                "shouts": self.last_m, "answered_max": self.shouts_answered_max, "failed": self.shouts_failed,
                "hanging": sorted(self.shouts_pending), "heard": self.heard, "heard_last": self.heard_last,
                "doubled_or_late": self.heard_doubled_or_late, "gaps": self.heard_gaps, "gap_count": self.heard_gap_count,
                "skipped_after_fresh": self.heard_skipped_after_fresh, "examples": self.heard_examples,
            },
            "drops": self.drops,
            "outages": self.outages,
            "open_outage": self.drop_at is not None,
            "resumes": resumes,
            "refusals": {reason: count for reason, count in refusals.items() if count},
            "missing_at_end": self.tail_missing(expected)[0],
            "missing_at_end_after_fresh": self.tail_missing(expected)[1],
        }


def arguments(description: str) -> argparse.Namespace:
    """The command line every chaos client process takes (bench/chaos.py passes it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("url", help="ws://127.0.0.1:PORT/hub (the fault injector in front of haproxy)")
    parser.add_argument("--prefix", required=True, help="client names are PREFIX-0, PREFIX-1, ...")
    parser.add_argument("--count", type=int, required=True, help="clients in this process")
    parser.add_argument("--pace", type=float, default=0.1, help="seconds between a work loop's calls")
    parser.add_argument("--inflight", type=int, default=2, help="work loops per client (calls in flight)")
    parser.add_argument("--shout-every", type=float, default=1.0, help="seconds between a client's broadcasts")
    parser.add_argument("--retry-initial", type=float, default=0.2, help="full-jitter backoff: first ceiling (s)")
    parser.add_argument("--retry-max", type=float, default=2.0, help="full-jitter backoff: largest ceiling (s)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds calls in flight get to settle at stop")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def say(event: str, **fields: Any) -> None:
    """One JSON line on stdout for bench/chaos.py."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def refusal_reasons(before: dict[str, int], now: dict[str, int]) -> list[str]:
    """The reasons counted between two snapshots of a client's C{resume_refusals}."""
    return sorted(reason for reason, count in now.items() if count > before.get(reason, 0))
