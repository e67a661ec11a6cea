"""
Tests for the broadcast log (L{twisted_hub._core.replay_log}): a group's
broadcasts kept once for all its resumable members must number, keep, bound,
acknowledge, replay, export and restore exactly as if every member had kept
every message itself (L{ReplayBuffer.append}).  Time is passed in.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._backplane.interface import TARGET_ALL, TARGET_GROUP, TARGET_ONLY, Target
from twisted_hub._core.connection import ClientConnection
from twisted_hub._core.errors import DisconnectKind, DisconnectReason
from twisted_hub._core.heartbeat import HeartbeatPolicy
from twisted_hub._core.replay_log import UNSHARED, Broadcast, BroadcastLog
from twisted_hub._core.resume import ENTRY_OVERHEAD, ReplayBuffer, ResumePolicy, ResumeRefusedError, SessionLedger
from twisted_hub._core.resume_link import ResumeLink
from twisted_hub._core.wire import (
    CAP_BATCH,
    CAP_HEARTBEAT,
    CAP_RESUME,
    Ack,
    ReceiverCall,
    ResumeReason,
    SessionGrant,
    decode_frame,
    encode,
)
from twisted_hub._hubs.hub import HubRuntime
from twisted_hub._twisted.server_io import TwistedServerSession

from .test_server_session import EchoHub, FakeHost, FakeTransport, Prepared, SessionCase


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def deliver(buffer: ReplayBuffer, broadcast: Broadcast, now: float) -> None:
    """What L{SessionOutput.send_prepared} and L{ResumeLink.sent_broadcast} do for one member."""
    if buffer.tail is broadcast.after:
        buffer.tail = broadcast.mark
    elif broadcast.log is None or broadcast.mark is None:
        buffer.append(broadcast.payload, now)
    else:
        buffer.join_run(broadcast.log, broadcast.mark, broadcast.payload, now)


def outcome(buffer: ReplayBuffer, received: int, now: float, max_bytes: int, max_age: float) -> Any:
    """What a resume from C{received} would get, on a copy (the buffer itself is left as it is)."""
    copy = ReplayBuffer.restore(buffer.export(now), max_bytes, max_age, now)
    try:
        return copy.replay(received, now)
    except ResumeRefusedError as refused:
        return refused.reason


@dataclass
class Member:
    """One member twice: keeping through the log, and keeping every message itself (the reference)."""

    max_bytes: int
    max_age: float
    shared: ReplayBuffer = field(init=False)
    alone: ReplayBuffer = field(init=False)

    def __post_init__(self) -> None:
        self.shared = ReplayBuffer(self.max_bytes, self.max_age)
        self.alone = ReplayBuffer(self.max_bytes, self.max_age)


def _payload(n: int, size: int) -> bytes:
    return n.to_bytes(4, "big") + b"." * size


operations = st.lists(
    st.one_of(
        st.tuples(st.just("broadcast"), st.lists(st.booleans(), min_size=3, max_size=3), st.integers(0, 120)),
        st.tuples(st.just("other group"), st.lists(st.booleans(), min_size=3, max_size=3), st.integers(0, 120)),
        st.tuples(st.just("unshared"), st.lists(st.booleans(), min_size=3, max_size=3), st.integers(0, 120)),
        st.tuples(st.just("private"), st.integers(0, 2), st.integers(0, 120)),
        st.tuples(st.just("ack"), st.integers(0, 2), st.floats(0, 1)),
        st.tuples(st.just("expire"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("tick"), st.sampled_from([0, 0, 1, 2, 7]), st.just(0)),
        st.tuples(st.just("move"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("look"), st.integers(0, 2), st.just(0)),
    ),
    max_size=80,
)


class EquivalenceTests(SynchronousTestCase):
    """Keeping through a log is indistinguishable from keeping one by one."""

    @settings(max_examples=300, deadline=None)
    @given(
        ops=operations, max_bytes=st.integers(60, 1500), max_age=st.sampled_from([3.0, 10.0]),
        max_entries=st.integers(1, 9),
    )
    def test_every_member_keeps_what_it_would_keep_alone(
        self, ops: list[tuple[str, Any, Any]], max_bytes: int, max_age: float, max_entries: int
    ) -> None:
        """
        Whatever the broadcasts (to all or some members, of two groups), private messages,
        acknowledgements, age sweeps, moves to another node and reads in
        between, and however small the log: each member's numbers, size,
        and what a resume from any point gets (the messages, or the refusal
        and its reason) are those of a buffer that kept every message itself.
        Whole seconds, so the age records of both fall on the same spans.
        """
        clock = Clock(100.0)
        log = BroadcastLog(clock, max_bytes, max_entries)
        other = BroadcastLog(clock, max_bytes, max_entries)
        members = [Member(max_bytes, max_age) for _ in range(3)]
        n = 0
        for op, who, value in ops:
            n += 1
            if op in ("broadcast", "other group", "unshared"):
                payload = _payload(n, value)
                if op == "unshared":
                    broadcast = Broadcast(object(), payload)
                else:
                    broadcast = (log if op == "broadcast" else other).add(object(), payload)
                for member, receives in zip(members, who):
                    if receives:
                        deliver(member.shared, broadcast, clock.now)
                        member.alone.append(payload, clock.now)
            elif op == "private":
                payload = _payload(n, value)
                members[who].shared.append(payload, clock.now)
                members[who].alone.append(payload, clock.now)
            elif op == "ack":
                alone = members[who].alone
                received = alone.acked + int((alone.last_sent - alone.acked) * value)
                members[who].shared.ack(received)
                alone.ack(received)
            elif op == "expire":
                self.assertEqual(members[who].shared.expire(clock.now), members[who].alone.expire(clock.now))
            elif op == "tick":
                clock.now += who
            elif op == "move":  # to another node and back: no run survives an export
                member = members[who]
                member.shared = ReplayBuffer.restore(member.shared.export(clock.now), max_bytes, max_age, clock.now)
                member.alone = ReplayBuffer.restore(member.alone.export(clock.now), max_bytes, max_age, clock.now)
            else:  # "look": reading a buffer settles its run
                self.assertEqual(members[who].shared.size, members[who].alone.size)
            self.assertLessEqual(len(log), max_entries)
            self.assertLessEqual(len(other), max_entries)
        for member in members:
            shared, alone = member.shared, member.alone
            self.assertEqual((shared.last_sent, shared.acked), (alone.last_sent, alone.acked))
            for received in range(alone.acked, alone.last_sent + 1):
                self.assertEqual(
                    outcome(shared, received, clock.now, max_bytes, max_age),
                    outcome(alone, received, clock.now, max_bytes, max_age),
                )
            self.assertEqual((len(shared), shared.size), (len(alone), alone.size))
            self.assertLessEqual(shared.size, max_bytes)


class LogTests(SynchronousTestCase):
    """The log's own behaviour: one entry per broadcast, the fast path, its bounds."""

    def test_a_member_that_keeps_up_holds_only_a_mark(self) -> None:
        """
        The first broadcast is kept as any message; after it, members that
        received the previous entry only move their tail, and nothing more is
        kept in their buffers until they are read.
        """
        clock = Clock(5.0)
        log = BroadcastLog(clock, 10_000)
        buffers = [ReplayBuffer() for _ in range(3)]
        first = log.add("frame", b"a")
        for buffer in buffers:
            self.assertIsNot(buffer.tail, first.after)
            deliver(buffer, first, clock.now)
        for n in range(2, 6):
            broadcast = log.add("frame", b"m%d" % n)
            for buffer in buffers:
                self.assertIs(buffer.tail, broadcast.after)  # the fast path
                deliver(buffer, broadcast, clock.now)
        self.assertEqual(len(log), 5)
        self.assertEqual(set(map(id, log.holders)), set(map(id, buffers)))
        for buffer in buffers:
            self.assertEqual(list(buffer._kept), [b"a"])  # (nothing of the run copied yet)
            self.assertEqual(buffer.last_sent, 5)  # reading it numbers and keeps the run
            self.assertEqual(list(buffer._kept), [b"a", b"m2", b"m3", b"m4", b"m5"])
            self.assertEqual(buffer.size, 9 + 5 * ENTRY_OVERHEAD)

    def test_an_acknowledgement_inside_the_run_copies_nothing(self) -> None:
        """A member that acknowledges what its run holds never copies it into its buffer."""
        clock = Clock()
        log = BroadcastLog(clock, 10_000)
        buffer = ReplayBuffer()
        buffer.append(b"own", 0.0)
        for n in range(4):
            deliver(buffer, log.add("frame", b"b%d" % n), 0.0)
        buffer.ack(3)
        self.assertEqual((len(buffer._kept), buffer.acked), (0, 3))
        self.assertEqual(buffer.replay(3, 0.0), [b"b2", b"b3"])

    def test_a_member_that_missed_an_entry_joins_again(self) -> None:
        """Excluded from one broadcast (or refused it): its numbers skip nothing, its replay lacks only that one."""
        log = BroadcastLog(Clock(), 10_000)
        buffer = ReplayBuffer()
        deliver(buffer, log.add("f", b"1"), 0.0)
        log.add("f", b"missed")
        third = log.add("f", b"3")
        self.assertIsNot(buffer.tail, third.after)
        deliver(buffer, third, 0.0)
        self.assertEqual(buffer.replay(0, 0.0), [b"1", b"3"])
        self.assertEqual(buffer.last_sent, 2)

    def test_a_message_of_its_own_closes_the_run(self) -> None:
        """A private message between two broadcasts: kept in order, and the next broadcast joins the log again."""
        log = BroadcastLog(Clock(), 10_000)
        buffer = ReplayBuffer()
        deliver(buffer, log.add("f", b"1"), 0.0)
        self.assertEqual(buffer.append(b"own", 0.0), 2)
        self.assertIsNone(buffer.tail)
        self.assertNotIn(id(buffer), set(map(id, log.holders)))
        deliver(buffer, log.add("f", b"3"), 0.0)
        self.assertEqual(buffer.replay(0, 0.0), [b"1", b"own", b"3"])

    def test_an_unshared_broadcast_is_kept_on_its_own(self) -> None:
        """A broadcast outside any log follows nothing a buffer holds: the member keeps it itself."""
        buffer = ReplayBuffer()
        broadcast = Broadcast("f", b"x")
        self.assertIs(broadcast.after, UNSHARED)
        deliver(buffer, broadcast, 0.0)
        self.assertEqual(buffer.replay(0, 0.0), [b"x"])

    def test_the_log_holds_at_most_max_entries(self) -> None:
        """
        Past C{max_entries} the log settles every run into its buffer and
        forgets its entries; members that fell behind are let go, the others
        go on by the fast path.
        """
        log = BroadcastLog(Clock(), 10_000, max_entries=4)
        keeps_up, falls_behind = ReplayBuffer(), ReplayBuffer()
        for n in range(4):
            broadcast = log.add("f", b"%d" % n)
            deliver(keeps_up, broadcast, 0.0)
            if n < 2:
                deliver(falls_behind, broadcast, 0.0)
        self.assertEqual(len(log), 4)
        fifth = log.add("f", b"4")
        self.assertEqual((len(log), log.first), (1, 4))
        self.assertEqual(list(keeps_up._kept), [b"0", b"1", b"2", b"3"])
        self.assertEqual(list(falls_behind._kept), [b"0", b"1"])
        self.assertEqual(log.holders, [keeps_up])
        self.assertIsNone(falls_behind.tail)
        self.assertIs(keeps_up.tail, fifth.after)
        deliver(keeps_up, fifth, 0.0)
        self.assertEqual(keeps_up.replay(2, 0.0), [b"2", b"3", b"4"])

    def test_the_log_settles_past_its_byte_bound(self) -> None:
        """The log holds about C{max_bytes}: past it, its entries are settled into the members' own bounded buffers."""
        log = BroadcastLog(Clock(), max_bytes=100)
        buffer = ReplayBuffer(max_bytes=3 * (40 + ENTRY_OVERHEAD))
        for n in range(7):
            deliver(buffer, log.add("f", bytes([n]) * 40), 0.0)
            self.assertLessEqual(len(log) * 40, 100 + 40)
        self.assertEqual(buffer.last_sent, 7)
        self.assertEqual(len(buffer), 3)
        with self.assertRaises(ResumeRefusedError) as refused:
            buffer.replay(3, 0.0)
        self.assertEqual(refused.exception.reason, ResumeReason.BUFFER_OVERFLOWED)
        self.assertEqual(buffer.replay(4, 0.0), [bytes([4]) * 40, bytes([5]) * 40, bytes([6]) * 40])

    def test_a_run_too_old_is_refused_window_expired(self) -> None:
        """The age bound holds for what a run holds: a resume that needs an expired broadcast is refused."""
        clock = Clock(0.0)
        log = BroadcastLog(clock, 10_000)
        buffer = ReplayBuffer(max_age=10.0)
        deliver(buffer, log.add("f", b"old"), clock.now)
        clock.now = 8.0
        deliver(buffer, log.add("f", b"new"), clock.now)
        self.assertEqual(buffer.expire(10.0), 1)
        with self.assertRaises(ResumeRefusedError) as refused:
            buffer.replay(0, 10.0)
        self.assertEqual(refused.exception.reason, ResumeReason.WINDOW_EXPIRED)
        self.assertEqual(buffer.replay(1, 10.0), [b"new"])

    def test_an_open_run_moves_with_its_session(self) -> None:
        """Export settles the run: the restored buffer (another node) replays it with the same numbers."""
        log = BroadcastLog(Clock(), 10_000)
        buffer = ReplayBuffer()
        buffer.append(b"own", 0.0)
        for n in range(3):
            deliver(buffer, log.add("f", b"b%d" % n), 0.0)
        moved = ReplayBuffer.restore(buffer.export(1.0), 10_000, 120.0, 50.0)
        self.assertEqual((moved.last_sent, moved.tail), (4, None))
        self.assertEqual(moved.replay(1, 50.0), [b"b0", b"b1", b"b2"])
        self.assertEqual(moved.append(b"next", 50.0), 5)

    def test_an_ended_session_leaves_nothing_in_the_log(self) -> None:
        """The log holds its members weakly: a buffer dropped with its session is gone from it."""
        log = BroadcastLog(Clock(), 10_000)
        buffer = ReplayBuffer()
        deliver(buffer, log.add("f", b"1"), 0.0)
        self.assertEqual(len(log.holders), 1)
        del buffer
        gc.collect()
        self.assertEqual(len(log.holders), 0)

    def test_an_acknowledgement_beyond_the_run_is_refused(self) -> None:
        """The numbers of an open run count: acknowledging past them is the peer's protocol error."""
        from twisted_hub._core.wire import ProtocolError

        log = BroadcastLog(Clock(), 10_000)
        buffer = ReplayBuffer()
        for n in range(2):
            deliver(buffer, log.add("f", b"%d" % n), 0.0)
        with self.assertRaises(ProtocolError):
            buffer.ack(3)
        buffer.ack(2)
        self.assertEqual(buffer.last_sent, 2)

    def test_a_log_nobody_holds_keeps_only_its_newest_entry(self) -> None:
        """Broadcasts to members that do not resume (or all left): the log keeps one entry, for a member joining at it."""
        log = BroadcastLog(Clock(), 10_000)
        for n in range(5):
            log.add("f", b"%d" % n)
            self.assertEqual(len(log), 1)
        buffer = ReplayBuffer()
        deliver(buffer, log.add("f", b"5"), 0.0)
        deliver(buffer, log.add("f", b"6"), 0.0)
        self.assertEqual((len(log), log.first), (2, 5))
        buffer.append(b"own", 0.0)  # leaves the run
        log.add("f", b"7")
        self.assertEqual((len(log), log.first), (1, 7))
        self.assertEqual(buffer.replay(0, 0.0), [b"5", b"6", b"own"])

    def test_bad_bounds_are_refused(self) -> None:
        """A log needs a positive byte bound and entry count."""
        with self.assertRaises(ValueError):
            BroadcastLog(Clock(), 0)
        with self.assertRaises(ValueError):
            BroadcastLog(Clock(), 10, max_entries=0)


# -- a group's broadcasts through the server's sessions ------------------------------------


class OrderedTransport(FakeTransport):
    """A fake transport that records frames and prepared frames in one list, in the order they left."""

    def __init__(self) -> None:
        super().__init__()
        self.left: list[bytes] = []

    def send_frame(self, payload: bytes, urgent: bool = False) -> None:
        super().send_frame(payload, urgent)
        self.left.append(payload)

    def send_prepared(self, prepared: Any, urgent: bool = False) -> bool:
        sent = super().send_prepared(prepared, urgent)
        if sent:
            self.left.append(prepared.payload)
        return sent


class GroupBroadcastTests(SessionCase):
    """
    The server's fan-out (L{HubRuntime.send_to}, L{SessionOutput.send_prepared})
    with a broadcast log: what each session numbers and keeps is exactly
    what its client received, in order, whatever else it was sent.
    """

    def setUp(self) -> None:
        super().setUp()
        self.host = FakeHost(self.clock, resume=ResumePolicy(ack_every=1000))
        self.logs_made: list[BroadcastLog] = []

        def make_log() -> BroadcastLog:
            log = BroadcastLog(self.clock.seconds, 1 << 20, max_entries=5)
            self.logs_made.append(log)
            return log

        self.runtime = HubRuntime(
            EchoHub, lambda: EchoHub(self.journal), backplane=self.host.backplane,
            heartbeat=HeartbeatPolicy(), max_message_size=self.host.max_message_size, prepare=Prepared,
            broadcast_log=make_log,
        )

    def member(self) -> tuple[TwistedServerSession, OrderedTransport, ClientConnection[Any]]:
        """A resumable session whose client core counts what it receives (as ClientResumption does)."""
        transport = OrderedTransport()
        session = self.new_session(transport)
        session.opened()
        client: ClientConnection[Any] = ClientConnection((CAP_BATCH, CAP_HEARTBEAT, CAP_RESUME))
        for frame in transport.left:
            client.receive_frame(frame, self.clock.seconds())
        transport.left.clear()
        client.hello(1024 * 1024)
        self.to_server(client, session)
        [grant] = [m for frame in transport.left for m in client.receive_frame(frame, self.clock.seconds())]
        assert isinstance(grant, SessionGrant)
        transport.left.clear()
        client.resume = ResumeLink(SessionLedger(ResumePolicy()), self.clock.seconds)
        return session, transport, client

    def test_what_each_member_keeps_is_what_it_received(self) -> None:
        """
        Broadcasts to the group, one excluding a member, one to every
        connection, a private call, a member leaving and joining again, a
        log that settles: every session's numbers match its client's count,
        and a resume from the start would replay exactly what it received.
        """
        members = [self.member() for _ in range(3)]
        for session, _, _ in members:
            self.runtime.groups.add("room", session)
        room = Target(TARGET_GROUP, "room", ())
        first, second, third = (session for session, _, _ in members)
        for n in range(3):
            self.runtime.send_to(room, "said", [n], None)
        self.runtime.send_to(Target(TARGET_GROUP, "room", (second.connection_id,)), "said", ["not to the second"], None)
        self.runtime.send_to(Target(TARGET_ONLY, None, (first.connection_id,)), "said", ["first only"], None)
        self.clock.advance(3)
        self.runtime.send_to(Target(TARGET_ALL, None, ()), "said", ["everyone"], None)
        self.runtime.groups.remove("room", third)
        self.runtime.send_to(room, "said", ["without the third"], None)
        self.runtime.groups.add("room", third)
        for n in range(6):
            self.runtime.send_to(room, "said", [n], None)
        self.assertEqual(len(self.logs_made), 2)  # the group's and every connection's
        self.assertTrue(all(len(log) <= 5 for log in self.logs_made))
        self.assertEqual(len(self.logs_made[1]), 1)  # every connection's: nobody holds a run of it now
        expected_counts = {first: 13, second: 11, third: 11}
        for session, transport, client in members:
            received = [m for frame in transport.left for m in client.receive_frame(frame, self.clock.seconds())]
            assert client.resume is not None and session.core.resume is not None
            kept = session.core.resume.ledger.sent
            self.assertEqual(client.resume.ledger.received.received, expected_counts[session])
            self.assertEqual(kept.last_sent, expected_counts[session])
            replay = ReplayBuffer.restore(kept.export(self.clock.seconds()), 1 << 20, 120.0, 0.0).replay(0, 0.0)
            self.assertEqual([m for payload in replay for m in decode_frame(payload)], received)

    def test_a_resume_replays_the_broadcasts_missed(self) -> None:
        """A member acknowledges part of a run and drops; broadcasts go on while it is detached: a resume gets what it lacks."""
        (session, transport, client), (other, _, _) = self.member(), self.member()
        for member in (session, other):
            self.runtime.groups.add("room", member)
        room = Target(TARGET_GROUP, "room", ())
        for n in range(4):
            self.runtime.send_to(room, "said", [n], None)
        got = [m for frame in transport.left for m in client.receive_frame(frame, self.clock.seconds())]
        self.assertEqual([m.args for m in got], [[0], [1], [2], [3]])
        session.receive(encode(Ack(2)), True)
        transport.can_send = False
        session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "peer dropped"))
        for n in range(4, 7):
            self.runtime.send_to(room, "said", [n], None)
        assert session.core.resume is not None
        kept = session.core.resume.ledger.sent
        now = self.clock.seconds()
        self.assertEqual(ReplayBuffer.restore(kept.export(now), 1 << 20, 120.0, now).replay(2, now),
                         [encode(ReceiverCall("said", [n])) for n in range(2, 7)])
        self.assertEqual(kept.replay(4, now), [encode(ReceiverCall("said", [n])) for n in range(4, 7)])

    def test_a_group_that_empties_takes_its_log_with_it(self) -> None:
        """The runtime keeps a group's log while the group has members; a group made again starts a new one."""
        session, transport, client = self.member()
        self.runtime.groups.add("room", session)
        room = Target(TARGET_GROUP, "room", ())
        self.runtime.send_to(room, "said", [1], None)
        self.runtime.send_to(room, "said", [2], None)  # (one member: written, not prepared; no log)
        other, _, _ = self.member()
        self.runtime.groups.add("room", other)
        self.runtime.send_to(room, "said", [3], None)
        self.runtime.send_to(room, "said", [4], None)
        self.assertEqual(len(self.logs_made), 1)
        self.runtime.groups.remove("room", session)
        self.runtime.groups.remove("room", other)
        self.assertNotIn("room", self.runtime._logs)
        for member in (session, other):
            self.runtime.groups.add("room", member)
        self.runtime.send_to(room, "said", [5], None)
        self.assertEqual(len(self.logs_made), 2)
        received = [m.args for frame in transport.left for m in client.receive_frame(frame, self.clock.seconds())]
        self.assertEqual(received, [[1], [2], [3], [4], [5]])
        assert session.core.resume is not None
        self.assertEqual(session.core.resume.ledger.sent.replay(2, self.clock.seconds()),
                         [encode(ReceiverCall("said", [n])) for n in (3, 4, 5)])
