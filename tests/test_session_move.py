"""
The pure parts of a session moving between nodes (docs/resumption.md,
"Across nodes"): the ledgers' and the token record's export and restore,
L{MovedSession}'s bytes, the backplane's new messages, L{SendHistory} and
L{SessionMoves} on a fake publisher and clock.  The exchange over real
sockets and a real Redis is in tests/test_resume_nodes.py.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from twisted_hub._backplane.interface import TARGET_ALL, TARGET_GROUP, TARGET_ONLY, ClaimAnswer, Target
from twisted_hub._backplane.moves import SendHistory, SessionMoves
from twisted_hub._backplane.wire import (
    Claim,
    Forward,
    Handover,
    Kick,
    MalformedMessage,
    Moved,
    NodeCodec,
    NodeMessage,
    Send,
)
from twisted_hub._core.resume import (
    CallDeduplicator,
    MoveError,
    ReceiveWindow,
    ReplayBuffer,
    ResumeRefusedError,
    SessionRegistry,
    SessionToken,
    Verdict,
)
from twisted_hub._core.session_move import ForwardLink, MovedSession
from twisted_hub._core.wire import Resume, ResumeReason

from .test_server_core import Log


# -- the ledgers and the token ------------------------------------------------------------
def test_a_replay_buffer_goes_on_where_it_was() -> None:
    """Restored on another node (another clock): the same numbers, replay, ages and drop records."""
    sent = ReplayBuffer(max_bytes=10_000, max_age=30.0)
    for n in range(5):
        sent.append(b"m%d" % n, 100.0 + n)
    sent.ack(2)
    moved = ReplayBuffer.restore(sent.export(104.0), 10_000, 30.0, now=5000.0)
    assert (moved.last_sent, moved.acked, len(moved), moved.size) == (5, 2, 3, sent.size)
    assert moved.replay(2, 5000.0) == [b"m2", b"m3", b"m4"]
    assert moved.append(b"m5", 5000.0) == 6
    # the oldest message kept was 2 s old when exported: its age goes on from there
    assert moved.expire(5000.0 + 27.5) == 0
    assert moved.expire(5000.0 + 28.5) == 1
    with pytest.raises(ResumeRefusedError) as refused:
        moved.replay(2, 5028.5)
    assert refused.value.reason == ResumeReason.WINDOW_EXPIRED


def test_a_smaller_bound_on_the_new_node_drops_the_oldest_as_an_overflow() -> None:
    sent = ReplayBuffer(max_bytes=10_000, max_age=30.0)
    for _ in range(4):
        sent.append(b"x" * 100, 1.0)
    moved = ReplayBuffer.restore(sent.export(1.0), 300, 30.0, 1.0)
    assert moved.size <= 300 and moved.last_sent == 4
    with pytest.raises(ResumeRefusedError) as refused:
        moved.replay(0, 1.0)
    assert refused.value.reason == ResumeReason.BUFFER_OVERFLOWED


def test_the_receive_window_and_the_calls_go_on() -> None:
    window = ReceiveWindow(ack_every=10, ack_delay=2.0)
    for _ in range(3):
        window.receive(1.0)
    window.acknowledge()
    window.receive(1.5)
    moved = ReceiveWindow(ack_every=10, ack_delay=2.0)
    moved.restore(window.export(), now=50.0)
    assert (moved.received, moved.acknowledged) == (4, 3)
    assert not moved.ack_due(51.0) and moved.ack_due(52.0)  # (the ack that was due is due here too)

    calls = CallDeduplicator(max_calls=10, max_age=30.0)
    for call_id in (1, 2, 3):
        calls.begin(call_id, 1.0)
    calls.settle(1, b"answer-1", 1.0)
    calls.settle(2, b"answer-2", 2.0)
    restored = CallDeduplicator(max_calls=10, max_age=30.0)
    restored.restore(calls.export(now=3.0), now=100.0)
    assert restored.running == frozenset({3})
    assert restored.begin(1, 100.0).answer == b"answer-1"
    assert restored.begin(3, 100.0).verdict == Verdict.RUNNING
    assert restored.begin(4, 100.0).verdict == Verdict.NEW
    assert restored.expire(100.0 + 28.0) == 1  # answer-1 was 2 s old when it moved


def test_a_token_record_moves_with_its_earlier_tokens_and_never_its_secret() -> None:
    record, token = SessionToken.issue(b"epch")
    rotated = record.rotate()  # (RESUMED not confirmed yet: the first token still works)
    exported = record.export()
    assert all(part not in token for part in exported if isinstance(part, bytes) and len(part) == 16)
    moved = SessionToken.restore(msgpack.unpackb(msgpack.packb(exported)))
    assert moved.matches(token) and moved.matches(rotated)
    key, digest = SessionToken.claim_of(rotated)
    assert key == moved.key and moved.matches_claim(key, digest)
    assert not moved.matches_claim(key, b"\0" * 32)
    moved.confirm()
    assert not moved.matches(token)


@pytest.mark.parametrize("state", [
    None, [1, 2], [1, 3, [], [], []], [1, 0, ["not bytes"], [], []], [1, 0, [], [[1, "a", 2]], []],
    [1, 0, [], [], [[1, "no-such-reason"]]],
])
def test_a_malformed_buffer_is_refused(state: Any) -> None:
    with pytest.raises(MoveError):
        ReplayBuffer.restore(state, 1000, 30.0, 0.0)


def test_a_registry_adopts_a_session_and_resumes_it_in_its_own_epoch() -> None:
    """The epoch of the node that issued the token stays the session's; the new node's registry resumes it."""
    origin = SessionRegistry(epoch=b"aaaa")
    session, grant = origin.open(None, "a-1")
    session.ledger.sent.append(b"kept", 0.0)
    key, digest = SessionToken.claim_of(grant.token)
    assert origin.find_key(key) is session
    origin.hand_over(session)
    assert origin.find_key(key) is None and origin.moved_out == 1
    assert not origin.knows(grant.token)  # (a late resume there asks the other nodes again)

    here = SessionRegistry(epoch=b"bbbb")
    ledger = session.ledger
    adopted = here.adopt(
        SessionToken.restore(session.token.export()), ledger.sent.export(0.0), ledger.received.export(),
        ledger.calls.export(0.0), "a-1", 10.0,
    )
    assert here.knows(grant.token) and here.moved_in == 1
    resumption = here.resume(Resume(grant.token, 0), object(), 10.0)
    assert resumption.replay == [b"kept"] and resumption.resumed.connection_id == "a-1" and adopted.detached_at is None
    with pytest.raises(MoveError):
        here.adopt(adopted.token, [0, 0, [], [], []], [0, 0], [[], [], 0, 0], "a-1", 10.0)


# -- a moved session's bytes ---------------------------------------------------------------
def moved_session(**changes: Any) -> MovedSession:
    fields: dict[str, Any] = dict(
        hub="chat", connection_id="a-1", token=[b"e" * 4, b"s" * 12, b"d" * 32, []], sent=[0, 0, [], [], []],
        received=[0, 0], calls=[[], [], 0, 0], next_call_id=3, user="ann", items={"k": 1}, groups=["room"],
    )
    fields.update(changes)
    return MovedSession(**fields)


def test_a_moved_session_round_trips() -> None:
    session = moved_session()
    assert MovedSession.decode(session.encode()) == session


def test_items_that_msgpack_cannot_carry_stop_the_move() -> None:
    with pytest.raises(MoveError, match="connection.items cannot move"):
        moved_session(items={"socket": object()}).encode()


@pytest.mark.parametrize("data", [
    b"\xc1", msgpack.packb([2]), msgpack.packb([1, "h", 5, [], [], [], [], [], 1, None, {}, []]),
    msgpack.packb([1, "h", "c", [], [], [], [], 0, None, {}, []]),
    msgpack.packb([1, "h", "c", [], [], [], [], 1, None, {1: 2}, []]),
])
def test_what_is_not_a_moved_session_is_refused(data: bytes) -> None:
    with pytest.raises(MoveError):
        MovedSession.decode(data)


def test_a_forward_link_passes_on_sequenced_messages_only() -> None:
    forwarded: list[bytes] = []
    link = ForwardLink(forwarded.append)
    result = msgpack.packb([4, 7, "done"])
    heartbeat = msgpack.packb([9, 1])
    link.sent(result)
    link.sent(heartbeat)
    link.sent_answer(7, result)
    assert forwarded == [result]


# -- the backplane's messages ---------------------------------------------------------------
@pytest.mark.parametrize("message", [
    Claim("chat", b"k" * 16, b"d" * 32, "ann", 7),
    Handover("chat", b"k" * 16, 7, "", "", b"state", {"node-a": 12, "node-b": 0}),
    Handover("chat", b"k" * 16, 7, "window-expired", "the session is over", b"", {}),
    Moved("chat", "a-1", "node-b"),
    Forward("chat", "a-1", b"\x93\x04\x07\xa4done"),
])
def test_the_new_messages_round_trip(message: Any) -> None:
    codec = NodeCodec("node-a")
    decoded = NodeCodec("node-b").decode(b"ch", codec.encode(b"ch", message, 1.0), 1.0)
    assert decoded.body == message and decoded.origin == "node-a"


@pytest.mark.parametrize("fields", [
    [7, "node-a", 1, 0, "chat", "not bytes", b"d", "", 1],
    [7, "node-a", 1, 0, "chat", b"k", b"d", "", -1],
    [8, "node-a", 1, 0, "chat", b"k", 1, "", "", b"", {"n": "x"}],
    [10, "node-a", 1, 0, "chat", "a-1", "not bytes"],
])
def test_malformed_new_messages_are_refused(fields: list[Any]) -> None:
    with pytest.raises(MalformedMessage):
        NodeCodec("node-b").decode(b"ch", msgpack.packb(fields, use_bin_type=True), 1.0)


# -- the history of hub-wide calls -----------------------------------------------------------
def send(hub: str, kind: str, group: str | None = None, ids: tuple[str, ...] = (), payload: bytes = b"") -> Send:
    return Send(hub, Target(kind, group, ids), payload)


def test_the_history_gives_what_came_after_the_cutoffs_for_the_session() -> None:
    history = SendHistory(size=100)
    history.add("a", 1, send("chat", TARGET_GROUP, "room", payload=b"a1"))
    history.add("b", 5, send("chat", TARGET_GROUP, "room", payload=b"b5"))
    history.add("a", 2, send("chat", TARGET_GROUP, "other", payload=b"a2-other-group"))
    history.add("a", 3, send("chat", TARGET_ALL, None, ("x-1",), payload=b"a3-excludes-it"))
    history.add("a", 4, send("news", TARGET_ALL, payload=b"a4-other-hub"))
    history.add("b", 6, send("chat", TARGET_ALL, payload=b"b6"))
    history.add("c", 1, send("chat", TARGET_GROUP, "room", ("y-1",), payload=b"c1"))
    history.add("a", 5, send("chat", TARGET_ONLY, None, ("x-1",), payload=b"a5-never-hub-wide"))
    assert history.after("chat", "x-1", frozenset({"room"}), {"a": 0, "b": 5}) == [b"a1", b"b6", b"c1"]
    assert history.after("chat", "x-1", frozenset({"room"}), {"a": 1, "b": 6, "c": 1}) == []


def test_a_node_the_old_node_never_heard_counts_from_the_claim_on() -> None:
    """
    A node absent from the cut-offs: the old node started after its calls
    (a restarted node) or it began publishing after the claim went out;
    only its calls recorded after the claim are the session's.
    """
    history = SendHistory(size=100)
    history.add("gone", 1, send("chat", TARGET_ALL, payload=b"before-the-old-node-joined"))
    since = history.added
    history.add("new", 1, send("chat", TARGET_ALL, payload=b"after-the-claim"))
    assert history.after("chat", "x-1", frozenset(), {}, since) == [b"after-the-claim"]
    assert history.after("chat", "x-1", frozenset(), {"gone": 0}, since) == [b"before-the-old-node-joined",
                                                                           b"after-the-claim"]


def test_the_history_is_bounded() -> None:
    history = SendHistory(size=3)
    for seq in range(1, 6):
        history.add("a", seq, send("chat", TARGET_ALL, payload=b"%d" % seq))
    assert len(history) == 3 and history.after("chat", "x", frozenset(), {}) == [b"3", b"4", b"5"]


# -- SessionMoves on a fake publisher and clock ---------------------------------------------
class Hubs:
    """What SessionMoves reaches of a node's hubs: it holds session "k" for connection "a-1" until handed over."""

    def __init__(self) -> None:
        self.held = {"a-1"}
        self.delivered: list[tuple[str, bytes]] = []
        self.gone: list[str] = []
        self.forwards: dict[str, Any] = {}

    def knows(self, hub: str) -> bool:
        return hub == "chat"

    def hand_over(self, hub: str, key: bytes, digest: bytes, user: str | None, forward: Any) -> Any:
        if key != b"k":
            return None
        if digest != b"good":
            return "token-invalid", "the token does not match the session", b""
        self.held.discard("a-1")
        self.forwards["a-1"] = forward("a-1")
        return "", "", b"state"

    def forwarded(self, hub: str, connection_id: str, payload: bytes) -> bool:
        if connection_id not in self.held:
            return False
        self.delivered.append((connection_id, payload))
        return True

    def node_gone(self, token: str) -> None:
        self.gone.append(token)


class Node:
    def __init__(self, token: str, timers: list[Any], drain: Any = None, restore: Any = None) -> None:
        self.published: list[tuple[str | None, Any]] = []
        self.timers = timers

        def call_later(delay: float, function: Any) -> Any:
            entry = [delay, function, True]
            timers.append(entry)
            return lambda: entry.__setitem__(2, False)

        self.moves = SessionMoves(
            token, lambda node, message: self.published.append((node, message)), lambda: {token: 4, "z": 9},
            call_later, Log(), claim_timeout=2.0, drain=drain, restore=restore,
        )
        self.hubs = self.moves.hubs = Hubs()  # type: ignore[assignment]

    def hear(self, origin: str, body: Any) -> None:
        message = NodeMessage(origin, 1, 0.0, body)
        match body:
            case Claim():
                self.moves.heard_claim(message, body)
            case Handover():
                self.moves.heard_handover(message, body)
            case Moved():
                self.moves.heard_moved(body)
            case Forward():
                self.moves.heard_forward(message, body)


def test_a_claim_answered_with_the_session() -> None:
    timers: list[Any] = []
    claimant, holder = Node("c", timers), Node("h", timers)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", "ann", answers.append)
    [(channel, claim)] = claimant.published
    assert channel is None and claim == Claim("chat", b"k", b"good", "ann", 1)
    holder.hear("c", claim)
    [(to, handover)] = holder.published
    assert to == "c" and handover.state == b"state" and handover.cutoffs == {"h": 4, "z": 9}
    assert holder.moves.node_of("a-1") == "c" and holder.moves.handed_over == 1
    claimant.hear("h", handover)
    assert answers == [ClaimAnswer("", "", b"state", {"h": 4, "z": 9}, "h")]
    assert not timers[0][2]  # (its timeout was cancelled)
    # what a call still running on the holder sends goes to the claimant
    holder.hubs.forwards["a-1"](b"answer")
    assert holder.published[-1] == ("c", Forward("chat", "a-1", b"answer"))
    assert (holder.moves.forwarded, claimant.moves.claims_won, claimant.moves.claims_refused) == (1, 1, 0)
    # the claimant installs it and announces it
    assert claimant.moves.arrived("chat", "a-1", ["room"], {"h": 4}) == []
    assert claimant.published[-1] == (None, Moved("chat", "a-1", "c"))


def test_a_claim_nobody_answers_times_out_session_unknown_and_a_late_handover_is_counted() -> None:
    timers: list[Any] = []
    claimant = Node("c", timers)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    [(delay, fire, _)] = timers
    assert delay == 2.0
    fire()
    assert [a.reason for a in answers] == ["session-unknown"] and claimant.moves.claims_unanswered == 1
    claimant.hear("h", Handover("chat", b"k", 1, "", "", b"state", {}))
    assert len(answers) == 1 and claimant.moves.late_handovers == 1


def test_a_claim_nobody_answers_is_answered_from_the_snapshot_when_one_is_kept() -> None:
    """docs/resumption.md, "When a node dies": the snapshot's state and cut-offs, marked restored."""
    timers: list[Any] = []
    reads: list[tuple[str, bytes, Any]] = []
    claimant = Node("c", timers, restore=lambda hub, key, then: reads.append((hub, key, then)))
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    timers[0][1]()
    [(hub, key, then)] = reads
    assert (hub, key, answers) == ("chat", b"k", [])  # (nothing answered while Redis is read)
    then((b"snapshot", {"h": 3}))
    [answer] = answers
    assert (answer.state, answer.cutoffs, answer.restored, answer.node, answer.reason) == (
        b"snapshot", {"h": 3}, True, "", "")
    assert answer.since == 0  # (the history had recorded nothing when the claim went out)
    assert (claimant.moves.claims_restored, claimant.moves.claims_unanswered) == (1, 0)
    # its holder was alive after all, only slow: its late handover is no lost session
    claimant.hear("h", Handover("chat", b"k", 1, "", "", b"state", {}))
    assert len(answers) == 1 and claimant.moves.late_handovers == 0


def test_a_failure_reading_the_snapshot_is_logged_and_the_claim_unanswered() -> None:
    def broken(hub: str, key: bytes, then: Any) -> None:
        raise RuntimeError("a bug")

    timers: list[Any] = []
    claimant = Node("c", timers, restore=broken)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    timers[0][1]()
    assert [a.reason for a in answers] == ["session-unknown"] and claimant.moves.claims_unanswered == 1
    assert claimant.moves._log.lines[-1] == ("failure", "reading a session's snapshot failed")  # type: ignore[attr-defined]


def test_a_claim_nobody_answers_and_no_snapshot_is_unanswered() -> None:
    timers: list[Any] = []
    claimant = Node("c", timers, restore=lambda hub, key, then: then(None))
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    timers[0][1]()
    assert [(a.reason, a.restored) for a in answers] == [("session-unknown", False)]
    assert (claimant.moves.claims_restored, claimant.moves.claims_unanswered) == (0, 1)
    claimant.hear("h", Handover("chat", b"k", 1, "", "", b"state", {}))
    assert claimant.moves.late_handovers == 1  # (this one is lost: its client started afresh)


def test_a_timed_out_claim_first_handles_what_redis_sent_and_takes_an_answer_found_there() -> None:
    # A busy claimant: the holder's HANDOVER arrived but waits unread when the claim's timer
    # fires (seen in the chaos run's rolling restart, where 18 of 105 sessions were lost so)
    timers: list[Any] = []
    draining: list[Any] = []
    claimant, holder = Node("c", timers, draining.append), Node("h", timers)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    [(_, claim)] = claimant.published
    holder.hear("c", claim)
    [(_, handover)] = holder.published
    timers[0][1]()  # the timeout fires before the handover is read
    assert answers == [] and len(draining) == 1
    backstop = timers[-1]
    assert backstop[0] == 2.0 and backstop[2]
    claimant.hear("h", handover)  # read while draining
    assert [a.state for a in answers] == [b"state"] and not backstop[2]
    draining[0]()  # what Redis sent before the timeout is handled: nothing left to answer
    assert len(answers) == 1
    assert (claimant.moves.claims_won, claimant.moves.claims_unanswered, claimant.moves.late_handovers) == (1, 0, 0)


def test_a_timed_out_claim_with_nothing_in_the_backlog_is_unanswered() -> None:
    timers: list[Any] = []
    draining: list[Any] = []
    claimant = Node("c", timers, draining.append)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    timers[0][1]()
    assert answers == []
    draining[0]()
    assert [a.reason for a in answers] == ["session-unknown"] and not timers[-1][2]
    assert claimant.moves.claims_unanswered == 1


def test_a_drain_that_never_ends_is_cut_short_by_the_backstop() -> None:
    timers: list[Any] = []
    draining: list[Any] = []
    claimant = Node("c", timers, draining.append)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    timers[0][1]()
    timers[-1][1]()  # another claim_timeout passed: the backstop
    assert [a.reason for a in answers] == ["session-unknown"]
    draining[0]()  # (a late end of the drain changes nothing)
    assert len(answers) == 1 and claimant.moves.claims_unanswered == 1


def test_a_drain_that_fails_is_logged_and_the_claim_is_unanswered_at_once() -> None:
    def broken_drain(then: Any) -> None:
        raise RuntimeError("a bug")

    timers: list[Any] = []
    claimant = Node("c", timers, broken_drain)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"good", None, answers.append)
    timers[0][1]()
    assert [a.reason for a in answers] == ["session-unknown"] and not timers[-1][2]
    log = claimant.moves._log
    assert isinstance(log, Log)
    assert ("failure", "waiting for what Redis sent before a claim timed out failed") in log.lines


def test_a_claim_with_the_wrong_token_is_refused_by_the_holder() -> None:
    timers: list[Any] = []
    claimant, holder = Node("c", timers), Node("h", timers)
    answers: list[ClaimAnswer] = []
    claimant.moves.claim("chat", b"k", b"bad", None, answers.append)
    [(_, claim)] = claimant.published
    holder.hear("c", claim)
    [(to, handover)] = holder.published
    assert (to, handover.reason, handover.state) == ("c", ResumeReason.TOKEN_INVALID, b"")
    assert holder.moves.handed_over == 0
    claimant.hear("h", handover)
    assert [a.reason for a in answers] == [ResumeReason.TOKEN_INVALID]
    assert (claimant.moves.claims_refused, claimant.moves.claims_won, claimant.moves.claims_unanswered) == (1, 0, 0)
    assert "a-1" in holder.hubs.held
    holder.hear("c", Claim("chat", b"other", b"good", "", 4))  # not held here: no answer
    assert len(holder.published) == 1


def test_forwards_go_on_to_where_the_connection_moved_never_back() -> None:
    node = Node("b", [])
    node.hubs.held = set()
    node.hear("a", Forward("chat", "a-1", b"x"))  # not here, not known to have moved on: dropped
    assert node.published == []
    node.hear("c", Moved("chat", "a-1", "c"))
    node.hear("c", Forward("chat", "a-1", b"y"))  # (from c itself: never sent back)
    assert node.published == []
    node.hear("a", Forward("chat", "a-1", b"z"))
    assert node.published == [("c", Forward("chat", "a-1", b"z"))]
    assert node.moves.forwarded == 1  # (the dropped one and the one not sent back are not counted)
    assert node.moves.node_of("a-1") == "c" and node.moves.node_of("q-2") == "q"
    node.moves.kick_on(Kick("chat", "a-1", "bye"))
    assert node.published[-1] == ("c", Kick("chat", "a-1", "bye"))


def test_a_failure_in_a_move_is_logged_and_stays_there() -> None:
    """
    A bug of ours while handing over or taking over a session is logged with
    its traceback and does not escape into the backplane's link to Redis.
    """
    timers: list[Any] = []
    holder = Node("h", timers)

    def broken_hand_over(*args: Any) -> Any:
        raise RuntimeError("a bug")

    holder.hubs.hand_over = broken_hand_over  # type: ignore[method-assign]
    holder.hear("c", Claim("chat", b"k", b"good", "", 1))
    assert holder.published == []  # (the claimant refuses after its timeout)
    log = holder.moves._log
    assert isinstance(log, Log) and ("failure", "handing a session over to node {node} failed") in log.lines

    claimant = Node("c", timers)

    def broken_answer(answer: ClaimAnswer) -> None:
        raise RuntimeError("another bug")

    claimant.moves.claim("chat", b"k", b"good", None, broken_answer)
    claimant.hear("h", Handover("chat", b"k", 1, "", "", b"state", {}))
    log = claimant.moves._log
    assert isinstance(log, Log) and ("failure", "{what} failed") in log.lines
    assert claimant.moves.claims_won == 1
