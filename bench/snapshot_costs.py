"""
What keeping quiet sessions' snapshots costs a node, in-process:
``python3 bench/snapshot_costs.py [--number N] [--repeats R]``.

With a Redis backplane and resume on, a node looks at a session after each
acknowledgement it sends or receives (never per message:
twisted_hub/_core/session_snapshot.py) and writes its snapshot when it is
quiet and changed (docs/resumption.md, "When a node dies").  Timed here:

- ``busy check``: the look at a session with something unacknowledged (the
  common case under traffic: it returns at the first count);
- ``quiet, unchanged``: the look at a quiet session whose snapshot is
  written already at the same counts: nothing is encoded or sent (what
  every acknowledgement of an idle session costs);
- ``encode``: a changed quiet session's state, encoded (``snapshot_state``);
- ``write``: what a changed quiet session adds: the Redis value (the
  snapshot, hub and cut-offs packed, signed with a secret) and its ``SET``
  command's bytes, as ``SessionStore.save`` builds them (no socket).

Best of R repeats of N runs each, nanoseconds per run, the cost of an
empty call taken off.  A diagnostic, not a result file: nothing is
recorded, no socket is opened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgpack  # noqa: E402
from move_costs import best_ns, timing_options  # noqa: E402  (bench/, this script's directory)

from twisted_hub._backplane.redis_commands import RedisKeys, resp_size  # noqa: E402
from twisted_hub._backplane.wire import NodeCodec, Signer  # noqa: E402
from twisted_hub._core.resume import ResumePolicy, SessionLedger, SessionToken  # noqa: E402
from twisted_hub._core.session_snapshot import check_snapshot, quiet, snapshot_state  # noqa: E402


def session(items: dict[str, Any], groups: list[str]) -> Any:
    """The parts of a ServerSession the snapshot reads: a session that made 40 calls and got 200 messages."""
    ledger = SessionLedger(ResumePolicy())
    for n in range(200):
        ledger.sent.append(b"\x93\x06\xa4item\x91" + bytes([n % 100]), 0.0)
    ledger.sent.ack(200)
    for n in range(1, 41):
        ledger.received.received += 1
        ledger.calls.begin(n, 0.0)
        ledger.calls.settle(n, b"\x93\x04" + bytes([n]) + b"\x01", 0.0)
    ledger.received.acknowledge()
    token, _ = SessionToken.issue(SessionToken.new_epoch())
    record = SimpleNamespace(ledger=ledger, token=token)
    resumable = SimpleNamespace(record=record, detached=False, running_on=None, saved=None, saved_at=(0, 0))
    return SimpleNamespace(
        resumable=resumable, claiming=None, streams=None, hub_name="ChatHub", connection_id="5f3a9c01-12",
        core=SimpleNamespace(pending_count=0, next_call_id=1), tokens=SimpleNamespace(user=None),
        carried=lambda: (items, groups),
    )


def main() -> None:
    number, repeats, empty = timing_options(__doc__, 100_000)

    quiet_one = session({"rooms": {"lobby": "ann"}}, ["lobby"])
    busy_one = session({"rooms": {"lobby": "ann"}}, ["lobby"])
    busy_one.resumable.record.ledger.sent.append(b"\x93\x06\xa4item\x91\x01", 0.0)
    saved = snapshot_state(quiet_one)

    def unchanged() -> None:
        check_snapshot(quiet_one)  # (written already at these counts: not encoded again)

    quiet_one.host = SimpleNamespace(save_snapshot=lambda hub, key, state: True)
    check_snapshot(quiet_one)

    keys = RedisKeys("twisted-hub")
    codec = NodeCodec("node-a", Signer([b"a-shared-secret-of-enough-length"]))
    cutoffs = {"node-a": 120_000, "node-b": 118_500, "node-c": 119_900}
    key = quiet_one.resumable.record.token.key

    def write() -> int:
        name = keys.session(key)
        data = msgpack.packb([1, "ChatHub", saved, cutoffs], use_bin_type=True)
        return resp_size(("SET", name, codec.session_value(name, data), "PX", 240_000))

    print(f"snapshot {len(saved)} bytes; SET command {write()} bytes")
    assert not quiet(busy_one) and quiet_one.resumable.saved == saved
    runs: list[tuple[str, Callable[[], object]]] = [
        ("busy check", lambda: quiet(busy_one)), ("quiet, unchanged", unchanged),
        ("encode", lambda: snapshot_state(quiet_one)), ("write", write),
    ]
    for name, run in runs:
        print(f"{name:>18}: {best_ns(run, number, repeats, empty):7.0f} ns")


if __name__ == "__main__":
    main()
