"""
Tests for the pure units of session resumption (L{twisted_hub._core.resume}):
the replay buffer, the receive window, the call deduplicator and the
session token.  Time is passed in; nothing here waits.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._core.base_error import HubArgumentError
from twisted_hub._core.resume import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_WINDOW,
    ENTRY_OVERHEAD,
    TOKEN_BYTES,
    CallDeduplicator,
    ClientResumeState,
    ReceiveWindow,
    ReplayBuffer,
    ResumePolicy,
    ResumeRefusedError,
    SessionRegistry,
    SessionToken,
    Verdict,
    check_resume,
)
from twisted_hub._core.wire import ProtocolError, Resume, ResumeReason, ResumeRefused, SessionGrant, decode_frame, encode


def _message(n: int, size: int = 10) -> bytes:
    return n.to_bytes(4, "big") + b"x" * (size - 4)


class ReplayBufferTests(SynchronousTestCase):
    """Numbering, acknowledgement, bounds and replay of what a side sends."""

    def test_numbersFromOne(self) -> None:
        """Each appended message gets the next number, starting at 1."""
        buffer = ReplayBuffer()
        self.assertEqual([buffer.append(_message(i), 0.0) for i in range(3)], [1, 2, 3])
        self.assertEqual(buffer.last_sent, 3)
        self.assertEqual(len(buffer), 3)
        self.assertEqual(buffer.size, 3 * (10 + ENTRY_OVERHEAD))

    def test_ackDropsCovered(self) -> None:
        """An acknowledgement drops every message up to it, and its bytes."""
        buffer = ReplayBuffer()
        for i in range(5):
            buffer.append(_message(i), 0.0)
        buffer.ack(3)
        self.assertEqual(len(buffer), 2)
        self.assertEqual(buffer.size, 2 * (10 + ENTRY_OVERHEAD))
        self.assertEqual(buffer.replay(3, 0.0), [_message(3), _message(4)])
        buffer.ack(5)
        self.assertEqual((len(buffer), buffer.size), (0, 0))

    def test_ackBeyondSentIsProtocolError(self) -> None:
        """A peer that acknowledges a message never sent breaks the protocol."""
        buffer = ReplayBuffer()
        buffer.append(b"a", 0.0)
        with self.assertRaises(ProtocolError) as caught:
            buffer.ack(2)
        self.assertIn("only 1 were sent", str(caught.exception))

    def test_ackBackwardsIsProtocolError(self) -> None:
        """Acknowledgements never go back; a repeated one is fine."""
        buffer = ReplayBuffer()
        for i in range(3):
            buffer.append(_message(i), 0.0)
        buffer.ack(2)
        buffer.ack(2)
        with self.assertRaises(ProtocolError):
            buffer.ack(1)
        self.assertEqual(buffer.acked, 2)

    def test_replayFromAPoint(self) -> None:
        """Replay gives what the peer lacks, in order, and keeps it until acknowledged."""
        buffer = ReplayBuffer()
        for i in range(1, 6):
            buffer.append(_message(i), float(i))
        self.assertEqual(buffer.replay(2, 6.0), [_message(3), _message(4), _message(5)])
        self.assertEqual(buffer.replay(2, 6.0), [_message(3), _message(4), _message(5)])
        self.assertEqual(buffer.replay(5, 6.0), [])

    def test_overflowOnlyMattersIfNeeded(self) -> None:
        """Past the byte bound the oldest go; a peer that had them resumes, one that lacked them is refused."""
        per = 10 + ENTRY_OVERHEAD
        buffer = ReplayBuffer(max_bytes=3 * per)
        for i in range(1, 6):
            buffer.append(_message(i), 0.0)
        self.assertEqual(len(buffer), 3)
        self.assertLessEqual(buffer.size, 3 * per)
        with self.assertRaises(ResumeRefusedError) as caught:
            buffer.replay(1, 0.0)
        self.assertEqual(caught.exception.reason, ResumeReason.BUFFER_OVERFLOWED)
        self.assertIn("message 2 was dropped", str(caught.exception))
        self.assertEqual(buffer.replay(2, 0.0), [_message(3), _message(4), _message(5)])

    def test_messageLargerThanBuffer(self) -> None:
        """A message larger than the buffer is numbered, not kept, and everything before it goes too."""
        buffer = ReplayBuffer(max_bytes=200)
        buffer.append(_message(1), 0.0)
        self.assertEqual(buffer.append(b"x" * 500, 0.0), 2)
        self.assertEqual(buffer.append(_message(3), 0.0), 3)
        self.assertEqual(len(buffer), 1)
        with self.assertRaises(ResumeRefusedError) as caught:
            buffer.replay(1, 0.0)
        self.assertEqual(caught.exception.reason, ResumeReason.BUFFER_OVERFLOWED)
        self.assertEqual(buffer.replay(2, 0.0), [_message(3)])

    def test_ageBound(self) -> None:
        """Messages older than max_age go; a peer that lacked them is refused with window-expired."""
        buffer = ReplayBuffer(max_age=10.0)
        buffer.append(_message(1), 0.0)
        buffer.append(_message(2), 5.0)
        self.assertEqual(buffer.expire(9.999), 0)
        self.assertEqual(buffer.expire(10.0), 1)
        self.assertEqual(len(buffer), 1)
        with self.assertRaises(ResumeRefusedError) as caught:
            buffer.replay(0, 10.0)
        self.assertEqual(caught.exception.reason, ResumeReason.WINDOW_EXPIRED)
        self.assertEqual(buffer.replay(1, 12.0), [_message(2)])
        with self.assertRaises(ResumeRefusedError):
            buffer.replay(1, 15.0)

    def test_ageOfASpanIsItsNewestMessage(self) -> None:
        """
        Messages within one mark span share one age record, that of the
        newest (kept apart from the marks while the span is open): they
        expire together once it is max_age old, never before; the next
        span's messages stay.
        """
        buffer = ReplayBuffer(max_age=10.0)
        for t in (0.0, 0.4, 0.9):  # one span (MARK_SPAN is 1 s)
            buffer.append(_message(int(t * 10)), t)
        buffer.append(_message(20), 2.0)  # the next span
        self.assertEqual(buffer.expire(10.89), 0)  # 0.0 is 10.89 s old, but 0.9 only 9.99
        self.assertEqual(buffer.expire(10.9), 3)
        self.assertEqual(buffer.replay(3, 10.9), [_message(20)])
        self.assertEqual(buffer.expire(11.99), 0)
        self.assertEqual(buffer.expire(12.0), 1)
        self.assertEqual(len(buffer), 0)

    def test_tooLargeMessageLeavesNoAgeRecord(self) -> None:
        """
        A message larger than the buffer is numbered, not kept, and drops
        what was kept; the next message kept starts its own age record.
        """
        buffer = ReplayBuffer(max_bytes=100, max_age=10.0)
        buffer.append(_message(1), 0.0)
        self.assertEqual(buffer.append(_message(2, size=100), 0.5), 2)
        self.assertEqual((len(buffer), buffer.size), (0, 0))
        self.assertEqual(buffer.append(_message(3), 0.7), 3)
        self.assertEqual(buffer.expire(10.69), 0)
        self.assertEqual(buffer.expire(10.7), 1)
        buffer.append(_message(4), 20.0)  # kept empty, then again
        self.assertEqual(buffer.replay(3, 20.0), [_message(4)])

    def test_ackDropsExactlyTheAcknowledgedBytes(self) -> None:
        """Acknowledging part of the kept messages frees exactly their bytes, whatever their sizes."""
        buffer = ReplayBuffer()
        sizes = [10, 20, 30, 40, 50]
        for i, size in enumerate(sizes):
            buffer.append(_message(i, size), 0.0)
        buffer.ack(3)
        self.assertEqual(buffer.size, 40 + 50 + 2 * ENTRY_OVERHEAD)
        self.assertEqual(buffer.replay(3, 0.0), [_message(3, 40), _message(4, 50)])

    def test_firstDropReasonReported(self) -> None:
        """When both bounds dropped messages, the reason of the first one the peer lacks is reported."""
        per = 10 + ENTRY_OVERHEAD
        buffer = ReplayBuffer(max_bytes=2 * per, max_age=10.0)
        buffer.append(_message(1), 0.0)
        buffer.expire(10.0)  # 1 expired
        for i in range(2, 5):
            buffer.append(_message(i), 11.0)  # 2 overflowed
        with self.assertRaises(ResumeRefusedError) as caught:
            buffer.replay(0, 11.0)
        self.assertEqual(caught.exception.reason, ResumeReason.WINDOW_EXPIRED)
        with self.assertRaises(ResumeRefusedError) as caught:
            buffer.replay(1, 11.0)
        self.assertEqual(caught.exception.reason, ResumeReason.BUFFER_OVERFLOWED)
        self.assertEqual(buffer.replay(2, 11.0), [_message(3), _message(4)])

    def test_alternatingDropsStayBounded(self) -> None:
        """Drops alternating between the two reasons without acks keep a short record."""
        buffer = ReplayBuffer(max_bytes=2 * (10 + ENTRY_OVERHEAD), max_age=1.0)
        now = 0.0
        for i in range(1, 200):
            for _ in range(3):
                buffer.append(_message(i), now)
            now += 2.0
            buffer.expire(now)
        self.assertLessEqual(len(buffer._dropped), 8)
        with self.assertRaises(ResumeRefusedError):
            buffer.replay(0, now)

    def test_badBounds(self) -> None:
        with self.assertRaises(ValueError):
            ReplayBuffer(max_bytes=0)
        with self.assertRaises(ValueError):
            ReplayBuffer(max_age=0)

    @settings(max_examples=200, deadline=None)
    @given(
        sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=60),
        cap=st.integers(min_value=60, max_value=2000),
        received=st.integers(min_value=0, max_value=60),
    )
    def test_replayIsExactlyTheMissingSuffix(self, sizes: list[int], cap: int, received: int) -> None:
        """
        Whatever the sizes and bound: the buffer never holds more than its
        bound, and a replay either gives exactly the messages after the
        peer's point, in order, or is refused because one of them was dropped.
        """
        buffer = ReplayBuffer(max_bytes=cap)
        sent = []
        for n, size in enumerate(sizes, start=1):
            data = n.to_bytes(2, "big") + b"." * size
            sent.append(data)
            self.assertEqual(buffer.append(data, 0.0), n)
            self.assertLessEqual(buffer.size, cap)
        received = min(received, len(sent))
        try:
            replayed = buffer.replay(received, 0.0)
        except ResumeRefusedError as e:
            self.assertEqual(e.reason, ResumeReason.BUFFER_OVERFLOWED)
            # something after the peer's point is really missing
            self.assertLess(len(buffer) + received, len(sent))
        else:
            self.assertEqual(replayed, sent[received:])


class ReceiveWindowTests(SynchronousTestCase):
    """Counting what arrives, duplicates, gaps and when to acknowledge."""

    def test_receiveCounts(self) -> None:
        window = ReceiveWindow()
        self.assertEqual([window.receive(0.0) for _ in range(3)], [1, 2, 3])
        self.assertEqual(window.received, 3)

    def test_acceptInOrderDuplicateGap(self) -> None:
        """The next number is handled, an old one is a duplicate, a later one is a gap."""
        window = ReceiveWindow()
        self.assertTrue(window.accept(1, 0.0))
        self.assertTrue(window.accept(2, 0.0))
        self.assertFalse(window.accept(2, 0.0))
        self.assertFalse(window.accept(1, 0.0))
        with self.assertRaises(ProtocolError) as caught:
            window.accept(5, 0.0)
        self.assertIn("messages 3..4 are missing", str(caught.exception))
        self.assertEqual(window.received, 2)
        with self.assertRaises(ProtocolError):
            window.accept(0, 0.0)

    def test_ackDue(self) -> None:
        """An ACK is due after ack_every unacknowledged messages; acknowledging resets the count."""
        window = ReceiveWindow(ack_every=3)
        window.receive(0.0)
        window.receive(0.0)
        self.assertFalse(window.ack_due(0.0))
        window.receive(0.0)
        self.assertTrue(window.ack_due(0.0))
        self.assertEqual(window.acknowledge(), 3)
        self.assertEqual(window.unacknowledged, 0)
        self.assertFalse(window.ack_due(0.0))
        with self.assertRaises(ValueError):
            ReceiveWindow(ack_every=0)
        with self.assertRaises(ValueError):
            ReceiveWindow(ack_delay=0)

    def test_ackDueByTime(self) -> None:
        """One message is acknowledged at the latest ack_delay after it arrived; nothing waiting, nothing due."""
        window = ReceiveWindow(ack_every=64, ack_delay=5.0)
        self.assertIsNone(window.ack_deadline())
        self.assertFalse(window.ack_due(100.0))
        window.receive(10.0)
        window.receive(12.0)
        self.assertEqual(window.ack_deadline(), 15.0)
        self.assertFalse(window.ack_due(14.99))
        self.assertTrue(window.ack_due(15.0))
        window.acknowledge()
        self.assertIsNone(window.ack_deadline())
        self.assertFalse(window.ack_due(30.0))
        self.assertTrue(window.accept(3, 31.0))
        self.assertEqual(window.ack_deadline(), 36.0)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=40), max_size=80))
    def test_deliversEachOnceInOrder(self, numbers: list[int]) -> None:
        """Any stream of numbers: what is handled is 1, 2, 3... once each; a gap raises and changes nothing."""
        window = ReceiveWindow()
        handled = []
        for n in numbers:
            before = window.received
            try:
                if window.accept(n, 0.0):
                    handled.append(n)
            except ProtocolError:
                self.assertGreater(n, before + 1)
                self.assertEqual(window.received, before)
        self.assertEqual(handled, list(range(1, len(handled) + 1)))
        self.assertEqual(window.received, len(handled))


class CallDeduplicatorTests(SynchronousTestCase):
    """A call sent again never runs twice."""

    def test_newRunningSettled(self) -> None:
        calls = CallDeduplicator()
        self.assertEqual(calls.begin(1, 0.0).verdict, Verdict.NEW)
        self.assertEqual(calls.begin(1, 0.0).verdict, Verdict.RUNNING)
        calls.settle(1, b"answer-1", 1.0)
        seen = calls.begin(1, 2.0)
        self.assertEqual((seen.verdict, seen.answer), (Verdict.SETTLED, b"answer-1"))
        self.assertEqual(len(calls), 1)

    def test_settleUnknownRaises(self) -> None:
        """Settling a call that is not running is the caller's bug, and says so."""
        with self.assertRaises(KeyError):
            CallDeduplicator().settle(7, b"", 0.0)

    def test_ageBoundForgets(self) -> None:
        """Answers are kept max_age; after that a repeat is FORGOTTEN, never run again."""
        calls = CallDeduplicator(max_age=10.0)
        calls.begin(1, 0.0)
        calls.settle(1, b"a", 0.0)
        self.assertEqual(calls.begin(1, 9.9).verdict, Verdict.SETTLED)
        self.assertEqual(calls.begin(1, 10.0).verdict, Verdict.FORGOTTEN)
        self.assertEqual(calls.begin(2, 10.0).verdict, Verdict.NEW)

    def test_countBoundForgetsOldest(self) -> None:
        """At most max_calls answers are kept, the oldest go first."""
        calls = CallDeduplicator(max_calls=2)
        for call_id in (1, 2, 3):
            calls.begin(call_id, 0.0)
            calls.settle(call_id, b"a%d" % call_id, 0.0)
        self.assertEqual(calls.begin(1, 0.0).verdict, Verdict.FORGOTTEN)
        self.assertEqual(calls.begin(2, 0.0).answer, b"a2")
        self.assertEqual(calls.begin(3, 0.0).answer, b"a3")
        self.assertEqual(calls.forgotten_through, 1)

    def test_runningNeverEvicted(self) -> None:
        """A call still running is not forgotten by the count bound."""
        calls = CallDeduplicator(max_calls=1)
        calls.begin(1, 0.0)
        for call_id in (2, 3):
            calls.begin(call_id, 0.0)
            calls.settle(call_id, b"", 0.0)
        self.assertEqual(calls.begin(1, 0.0).verdict, Verdict.RUNNING)
        calls.abandon(1)
        self.assertEqual(calls.begin(1, 0.0).verdict, Verdict.FORGOTTEN)

    def test_badBounds(self) -> None:
        with self.assertRaises(ValueError):
            CallDeduplicator(max_calls=0)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=30), max_size=120), st.integers(min_value=1, max_value=8))
    def test_neverRunsTwice(self, arrivals: list[int], max_calls: int) -> None:
        """Whatever arrives (repeats in any order), each call id runs at most once, and memory stays bounded."""
        calls = CallDeduplicator(max_calls=max_calls)
        ran: list[int] = []
        for call_id in arrivals:
            if calls.begin(call_id, 0.0).verdict == Verdict.NEW:
                ran.append(call_id)
                calls.settle(call_id, b"r", 0.0)
            self.assertLessEqual(len(calls), max_calls)
        self.assertEqual(len(ran), len(set(ran)))


class SessionTokenTests(SynchronousTestCase):
    """Unguessable, checked in constant time, rotated, never shown."""

    def test_issueAndMatch(self) -> None:
        epoch = SessionToken.new_epoch()
        record, token = SessionToken.issue(epoch)
        self.assertEqual(len(token), TOKEN_BYTES)
        self.assertTrue(record.matches(token))
        self.assertFalse(record.matches(token[:-1] + bytes([token[-1] ^ 1])))
        self.assertFalse(record.matches(token[:-1]))
        self.assertEqual(SessionToken.parse(token)[0], epoch)

    def test_secretsDiffer(self) -> None:
        """Two sessions never share an id or a secret (128 random bits each)."""
        epoch = SessionToken.new_epoch()
        tokens = {SessionToken.issue(epoch)[1] for _ in range(200)}
        self.assertEqual(len(tokens), 200)
        self.assertEqual(len({t[16:] for t in tokens}), 200)

    def test_rotationRefusesOldToken(self) -> None:
        """After a rotation the client confirms, the new token matches and the old one does not."""
        record, old = SessionToken.issue(SessionToken.new_epoch())
        new = record.rotate()
        self.assertNotEqual(old, new)
        self.assertEqual(old[:16], new[:16])
        self.assertFalse(record.confirmed)
        record.confirm()
        self.assertTrue(record.confirmed)
        self.assertTrue(record.matches(new))
        self.assertFalse(record.matches(old))

    def test_unconfirmedRotationsKeepEarlierTokens(self) -> None:
        """
        A resume cut before its RESUMED arrives leaves the client with the token
        it resumed with: the earlier tokens match until the client confirms the
        newest, however many resumes were cut that way (up to the bound).
        """
        record, first = SessionToken.issue(SessionToken.new_epoch())
        second = record.rotate()  # its RESUMED lost with the link
        third = record.rotate()  # the client resumed with `first` again; lost too
        for token in (first, second, third):
            self.assertTrue(record.matches(token))
        record.confirm()
        self.assertEqual([record.matches(t) for t in (first, second, third)], [False, False, True])
        # at most UNCONFIRMED_TOKENS earlier ones are kept
        tokens = [third] + [record.rotate() for _ in range(SessionToken.UNCONFIRMED_TOKENS + 1)]
        self.assertEqual([record.matches(t) for t in tokens], [False] + [True] * (len(tokens) - 1))

    def test_neverShown(self) -> None:
        """Neither the token nor the secret appears in repr/str; only the session id."""
        record, token = SessionToken.issue(SessionToken.new_epoch())
        for text in (repr(record), str(record)):
            self.assertNotIn(token.hex(), text)
            self.assertNotIn(token[16:].hex(), text)
            self.assertNotIn(record.digest.hex(), text)
            self.assertIn(record.session_id.hex(), text)

    def test_parseRefusesOtherLayouts(self) -> None:
        with self.assertRaises(ResumeRefusedError) as caught:
            SessionToken.parse(b"x" * 16)
        self.assertEqual(caught.exception.reason, ResumeReason.TOKEN_INVALID)
        with self.assertRaises(ValueError):
            SessionToken(b"e", b"s", b"d")

    def test_checkResumeReasons(self) -> None:
        """Each refusal reason, in the documented order, and a pass."""
        epoch = SessionToken.new_epoch()
        record, token = SessionToken.issue(epoch)
        check_resume(record, token, epoch, shared=True)

        def reason(*args: object, **kwargs: object) -> str:
            with self.assertRaises(ResumeRefusedError) as caught:
                check_resume(*args, **kwargs)  # type: ignore[arg-type]
            return caught.exception.reason

        other = bytes(b ^ 0xFF for b in epoch)
        self.assertEqual(reason(record, b"short" * 4, epoch, shared=True), ResumeReason.TOKEN_INVALID)
        self.assertEqual(reason(record, token, other, shared=True), ResumeReason.BACKPLANE_STATE_LOST)
        self.assertEqual(reason(record, token, other, shared=False), ResumeReason.SESSION_UNKNOWN)
        expired = ResumeReason.WINDOW_EXPIRED
        self.assertEqual(reason(record, token, epoch, shared=True, ended=expired), expired)
        overflowed = ResumeReason.BUFFER_OVERFLOWED
        self.assertEqual(reason(record, token, epoch, shared=True, ended=overflowed), overflowed)
        self.assertEqual(reason(None, token, epoch, shared=True), ResumeReason.SESSION_UNKNOWN)
        old = token
        record.rotate()
        record.confirm()
        self.assertEqual(reason(record, old, epoch, shared=True), ResumeReason.TOKEN_INVALID)


class PolicyTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """ResumePolicy's defaults are the ones docs/resumption.md's "Knobs" table states (read from the doc, not copied)."""
        policy = ResumePolicy()
        self.assertEqual((policy.window, policy.buffer_bytes), (DEFAULT_WINDOW, DEFAULT_BUFFER_BYTES))
        doc = (Path(__file__).resolve().parent.parent / "docs" / "resumption.md").read_text(encoding="utf-8")
        knobs = doc.split("\n## Knobs\n", 1)[1].split("\n## ", 1)[0]
        stated = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", knobs, re.MULTILINE))
        units = {"s": 1, "MiB": 1024 * 1024}
        read = {}
        for knob, text in stated.items():
            number, unit = re.match(r"([\d,.]+) (\S+)", text).groups()  # type: ignore[union-attr]
            read[knob] = float(number.replace(",", "")) * units.get(unit, 1)
        self.assertEqual(sorted(read), sorted(f.name for f in dataclasses.fields(ResumePolicy)))
        self.assertEqual(read, {name: float(getattr(policy, name)) for name in read})

    def test_refusesNonsense(self) -> None:
        """Nonsense knobs raise HubArgumentError: a TwistedHubError (docs/api.md), still a ValueError."""
        for kwargs in ({"window": 0}, {"buffer_bytes": 0}, {"ack_every": 0}, {"ack_delay": 0}, {"max_calls": 0}):
            with self.assertRaises(HubArgumentError, msg=repr(kwargs)) as raised:
                ResumePolicy(**kwargs)  # type: ignore[arg-type]
            self.assertIsInstance(raised.exception, ValueError)


class LayerTests(SynchronousTestCase):
    def test_importsNoTwisted(self) -> None:
        """The module is sans-IO: importing it loads no Twisted, autobahn or zope."""
        code = (
            "import sys, twisted_hub._core.resume\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('twisted', 'autobahn', 'zope', 'txredisapi')]\n"
            "print(','.join(sorted(bad)))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        self.assertEqual(out.stdout.strip(), "")


class DocumentTests(SynchronousTestCase):
    """docs/resumption.md states the defaults the code has, and names files that exist."""

    def setUp(self) -> None:
        from pathlib import Path

        self.root = Path(__file__).resolve().parent.parent
        self.text = (self.root / "docs" / "resumption.md").read_text(encoding="utf-8")

    def test_knobDefaults(self) -> None:
        """Each knob row's default is ResumePolicy's."""
        import re

        rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", self.text, re.M)}
        policy = ResumePolicy()
        self.assertEqual(rows["window"].strip(), f"{policy.window:g} s")
        self.assertEqual(rows["buffer_bytes"].split()[0:2], [f"{policy.buffer_bytes // (1024 * 1024)}", "MiB"])
        self.assertEqual(rows["ack_every"].strip(), f"{policy.ack_every} messages")
        self.assertEqual(rows["ack_delay"].strip(), f"{policy.ack_delay:g} s")
        self.assertEqual(rows["max_calls"].split()[0], f"{policy.max_calls:,}")
        self.assertIn(f"{ENTRY_OVERHEAD} bytes each", self.text)

    def test_builtPartsExist(self) -> None:
        """Every file the "built" rows name exists; resume is opt-in (no default announces it)."""
        import re

        table = self.text.split("## What is built", 1)[1].split("\n## ", 1)[0]
        built = [line for line in table.splitlines() if "| **built**" in line]
        self.assertGreaterEqual(len(built), 6)
        for line in built:
            for path in re.findall(r"`((?:twisted_hub|js|tests|docs)/[\w/.-]+)`", line):
                self.assertTrue((self.root / path).exists(), path)
            for path in re.findall(r"`(_\w+/[\w/.-]+\.py)`", line):
                self.assertTrue((self.root / "twisted_hub" / path).exists(), path)
        self.assertIn("Both sides opt in", self.text)
        from twisted_hub._core.wire import CAP_RESUME, OUR_CAPABILITIES

        self.assertNotIn(CAP_RESUME, OUR_CAPABILITIES)


class _Pair:
    """A server registry and a client state exchanging numbered messages, no I/O."""

    def __init__(self, policy: ResumePolicy | None = None, **registry: object) -> None:
        self.registry = SessionRegistry(policy, **registry)  # type: ignore[arg-type]
        self.session, grant = self.registry.open("conn-1", "c-1")
        self.client = ClientResumeState(policy)
        # the grant crosses the wire like any message
        (decoded,) = decode_frame(encode(grant))
        assert isinstance(decoded, SessionGrant)
        self.client.granted(decoded, "c-1")

    def server_sends(self, text: str, now: float = 0.0) -> bytes:
        data = text.encode()
        self.session.ledger.sent.append(data, now)
        return data

    def client_sends(self, text: str, now: float = 0.0) -> bytes:
        data = text.encode()
        self.client.ledger.sent.append(data, now)
        return data


class SessionRegistryTests(SynchronousTestCase):
    """Issue, detach, resume with replay both ways, rotation, expiry and every refusal."""

    def test_resumeReplaysBothWays(self) -> None:
        """Each side gets exactly what it lacks, in order; the token rotates; counters move."""
        pair = _Pair()
        s1, s2, s3 = (pair.server_sends(t) for t in ("s1", "s2", "s3"))
        pair.client.ledger.received.receive(0.0)  # the client got s1 only
        c1, c2 = pair.client_sends("c1"), pair.client_sends("c2")
        pair.session.ledger.received.receive(0.0)  # the server got c1 only
        pair.registry.detach(pair.session, 10.0)
        s4 = pair.server_sends("s4", 11.0)  # sent while the client is away
        request = pair.client.request()
        self.assertEqual(request.received, 1)
        (wire_request,) = decode_frame(encode(request))
        assert isinstance(wire_request, Resume)
        resumption = pair.registry.resume(wire_request, "conn-2", 20.0)
        self.assertEqual(resumption.replay, [s2, s3, s4])
        self.assertIsNone(resumption.previous)
        self.assertIs(resumption.session, pair.session)
        self.assertEqual(resumption.resumed.received, 1)
        # RESUME and RESUMED are acknowledgements: nothing is due on either side
        self.assertEqual(pair.session.ledger.received.unacknowledged, 0)
        self.assertEqual(pair.client.ledger.received.unacknowledged, 0)
        self.assertEqual(resumption.resumed.connection_id, "c-1")
        pair.client.connection_id = "c-2"  # what the new connection's WELCOME said
        self.assertEqual(pair.client.resumed(resumption.resumed, 20.0), [c2])
        self.assertEqual(pair.client.connection_id, "c-1")
        del s1, c1
        self.assertEqual((pair.registry.resumed, pair.registry.replayed), (1, 3))
        self.assertEqual(pair.session.attachment, "conn-2")
        self.assertIsNone(pair.session.detached_at)
        # once the client showed it has the new token (its first message on
        # the new connection), the old one is refused, and that leaves the session alone
        pair.session.token.confirm()
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(request, "thief", 21.0)
        self.assertEqual(caught.exception.reason, ResumeReason.TOKEN_INVALID)
        self.assertEqual(pair.registry.refused[ResumeReason.TOKEN_INVALID], 1)
        self.assertEqual(len(pair.registry), 1)
        # the rotated one works, and takes the session from the attached connection
        again = pair.registry.resume(pair.client.request(), "conn-3", 22.0)
        self.assertEqual(again.previous, "conn-2")
        self.assertEqual(again.replay, [s2, s3, s4])

    def test_windowExpiry(self) -> None:
        """Detached for the window: expire ends it; a late resume is told window-expired."""
        pair = _Pair(ResumePolicy(window=30.0))
        pair.registry.detach(pair.session, 0.0)
        self.assertEqual(pair.registry.expire(29.9), [])
        self.assertEqual(pair.registry.expire(30.0), [pair.session])
        self.assertEqual(len(pair.registry), 0)
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(pair.client.request(), "conn-2", 31.0)
        self.assertEqual(caught.exception.reason, ResumeReason.WINDOW_EXPIRED)
        # remembered for one more window, then unknown
        pair.registry.expire(60.0)
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(pair.client.request(), "conn-2", 61.0)
        self.assertEqual(caught.exception.reason, ResumeReason.SESSION_UNKNOWN)

    def test_expiredBetweenTimerTicks(self) -> None:
        """A resume after the window but before the expiry timer ran is refused all the same."""
        pair = _Pair(ResumePolicy(window=30.0))
        pair.registry.detach(pair.session, 0.0)
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(pair.client.request(), "conn-2", 30.0)
        self.assertEqual(caught.exception.reason, ResumeReason.WINDOW_EXPIRED)
        self.assertEqual(len(pair.registry), 0)

    def test_overflowEndsTheSession(self) -> None:
        """A resume that needs a dropped message is refused buffer-overflowed; the session is over."""
        pair = _Pair(ResumePolicy(buffer_bytes=2 * (2 + ENTRY_OVERHEAD)))
        for text in ("s1", "s2", "s3"):
            pair.server_sends(text)
        pair.registry.detach(pair.session, 0.0)
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(pair.client.request(), "conn-2", 1.0)
        self.assertEqual(caught.exception.reason, ResumeReason.BUFFER_OVERFLOWED)
        self.assertEqual(pair.registry.refused[ResumeReason.BUFFER_OVERFLOWED], 1)
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(pair.client.request(), "conn-2", 2.0)
        self.assertEqual(caught.exception.reason, ResumeReason.BUFFER_OVERFLOWED)

    def test_unknownAndEpochs(self) -> None:
        """Another process's token is session-unknown; another epoch of shared state is backplane-state-lost."""
        pair = _Pair()
        other = SessionRegistry()
        with self.assertRaises(ResumeRefusedError) as caught:
            other.resume(pair.client.request(), "c", 0.0)
        self.assertEqual(caught.exception.reason, ResumeReason.SESSION_UNKNOWN)
        shared = SessionRegistry(shared=True)
        with self.assertRaises(ResumeRefusedError) as caught:
            shared.resume(pair.client.request(), "c", 0.0)
        self.assertEqual(caught.exception.reason, ResumeReason.BACKPLANE_STATE_LOST)
        same_epoch = SessionRegistry(epoch=pair.registry.epoch)
        with self.assertRaises(ResumeRefusedError) as caught:
            same_epoch.resume(pair.client.request(), "c", 0.0)
        self.assertEqual(caught.exception.reason, ResumeReason.SESSION_UNKNOWN)
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(Resume(b"x" * 20, 0), "c", 0.0)
        self.assertEqual(caught.exception.reason, ResumeReason.TOKEN_INVALID)

    def test_clientClaimingTooMuchIsProtocolError(self) -> None:
        """A client that says it received more than was sent breaks the protocol."""
        pair = _Pair()
        pair.server_sends("s1")
        with self.assertRaises(ProtocolError):
            pair.registry.resume(Resume(pair.client.request().token, 2), "c", 0.0)

    def test_endedByTheHub(self) -> None:
        """A session the server ended (kick, close) cannot be resumed."""
        pair = _Pair()
        pair.registry.end(pair.session, 0.0)
        with self.assertRaises(ResumeRefusedError) as caught:
            pair.registry.resume(pair.client.request(), "c", 1.0)
        self.assertEqual(caught.exception.reason, ResumeReason.WINDOW_EXPIRED)

    def test_endedRememberedBounded(self) -> None:
        registry = SessionRegistry(max_ended=3)
        for _ in range(5):
            session, _ = registry.open("c", "c")
            registry.end(session, 0.0)
        self.assertEqual(len(registry._ended), 3)

    def test_reprShowsNoSecret(self) -> None:
        pair = _Pair()
        token = pair.client.request().token
        for text in (repr(pair.session), repr(pair.client), repr(pair.client.request())):
            self.assertNotIn(token.hex(), text)
            self.assertNotIn(repr(token), text)


class ClientResumeStateTests(SynchronousTestCase):
    def test_noSessionNoRequest(self) -> None:
        state = ClientResumeState()
        self.assertFalse(state.resumable)
        with self.assertRaises(ValueError):
            state.request()

    def test_refusalStartsAfresh(self) -> None:
        """A refusal forgets the session and its numbering; unknown reasons read as session-unknown."""
        pair = _Pair()
        pair.client_sends("c1")
        pair.client.ledger.received.receive(0.0)
        self.assertEqual(pair.client.refused(ResumeRefused(ResumeReason.TOKEN_INVALID, "")), ResumeReason.TOKEN_INVALID)
        self.assertFalse(pair.client.resumable)
        self.assertEqual((pair.client.ledger.sent.last_sent, pair.client.ledger.received.received), (0, 0))
        self.assertEqual(pair.client.refused(ResumeRefused("from-the-future", "")), ResumeReason.SESSION_UNKNOWN)
        self.assertEqual(pair.client.last_refusal, ResumeReason.SESSION_UNKNOWN)

    def test_serverClaimingLessThanItAcknowledged(self) -> None:
        """RESUMED below what the server acknowledged means lost state: a protocol error."""
        pair = _Pair()
        pair.client_sends("c1")
        pair.client_sends("c2")
        pair.client.ledger.sent.ack(2)
        registry_answer = pair.registry.resume(pair.client.request(), "c", 0.0).resumed
        with self.assertRaises(ProtocolError):
            pair.client.resumed(registry_answer, 0.0)


class ResumeModelTests(SynchronousTestCase):
    """
    The units together over a lossy link: any interleaving of sends,
    deliveries, acknowledgements and cuts (everything in flight lost, then
    a resume) ends with each side having received exactly what the other
    sent, in order, once.
    """

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(["c_send", "s_send", "c_deliver", "s_deliver", "c_ack", "s_ack", "cut"]), max_size=120))
    def test_nothingLostNothingDoubled(self, actions: list[str]) -> None:
        pair = _Pair()
        server, client = pair.session.ledger, pair.client
        c2s: list[tuple[str, object]] = []
        s2c: list[tuple[str, object]] = []
        sent = {"c": [], "s": []}  # type: dict[str, list[bytes]]
        got = {"c": [], "s": []}  # type: dict[str, list[bytes]]
        now = 0.0
        connection = 1

        def deliver(queue: list[tuple[str, object]], to: str) -> None:
            kind, value = queue.pop(0)
            ledger = server if to == "s" else client.ledger
            if kind == "ack":
                assert isinstance(value, int)
                ledger.sent.ack(value)
            else:
                assert isinstance(value, bytes)
                ledger.received.receive(now)
                got[to].append(value)

        for action in actions:
            now += 1.0
            if action == "c_send":
                data = b"c%d" % len(sent["c"])
                client.ledger.sent.append(data, now)
                sent["c"].append(data)
                c2s.append(("msg", data))
            elif action == "s_send":
                data = b"s%d" % len(sent["s"])
                server.sent.append(data, now)
                sent["s"].append(data)
                s2c.append(("msg", data))
            elif action == "c_deliver" and c2s:
                deliver(c2s, "s")
            elif action == "s_deliver" and s2c:
                deliver(s2c, "c")
            elif action == "c_ack":
                c2s.append(("ack", client.ledger.received.acknowledge()))
            elif action == "s_ack":
                s2c.append(("ack", server.received.acknowledge()))
            elif action == "cut":
                c2s.clear()
                s2c.clear()
                pair.registry.detach(pair.session, now)
                connection += 1
                resumption = pair.registry.resume(client.request(), f"conn-{connection}", now)
                s2c.extend(("msg", data) for data in resumption.replay)
                c2s.extend(("msg", data) for data in client.resumed(resumption.resumed, now))
        while c2s or s2c:
            if c2s:
                deliver(c2s, "s")
            if s2c:
                deliver(s2c, "c")
        self.assertEqual(got["s"], sent["c"])
        self.assertEqual(got["c"], sent["s"])

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from(["c_send", "c_send", "s_send", "s_send", "c_deliver", "s_deliver", "c_ack", "s_ack", "cut"]),
            max_size=150,
        ),
        st.integers(min_value=50, max_value=300),
        st.floats(min_value=3.0, max_value=40.0),
    )
    @example(["s_send"] * 10 + ["cut", "s_send", "s_deliver", "c_send", "c_deliver"], 60, 40.0)  # overflowed
    @example(["s_send", "c_ack", "c_ack", "c_ack", "c_ack", "cut", "c_send"], 400, 3.0)  # expired
    @example(["s_send", "s_deliver", "c_ack", "s_send"] * 5 + ["cut"], 120, 40.0)  # resumes
    def test_boundedBuffersRefuseOnlyWhatTheyMust(self, actions: list[str], buffer_bytes: int, window: float) -> None:
        """
        With small bounds, a resume may be refused, but only with a bound's
        reason, and what each side received of the session before that is
        exactly a prefix of what the other sent: a refusal loses, it never
        duplicates or reorders.  Resumes that succeed lose nothing.
        """
        policy = ResumePolicy(window=window, buffer_bytes=buffer_bytes)
        pair = _Pair(policy)
        c2s: list[tuple[str, object]] = []
        s2c: list[tuple[str, object]] = []
        sent: dict[str, list[bytes]] = {"c": [], "s": []}
        got: dict[str, list[bytes]] = {"c": [], "s": []}
        now = 0.0

        def deliver(queue: list[tuple[str, object]], to: str) -> None:
            kind, value = queue.pop(0)
            ledger = pair.session.ledger if to == "s" else pair.client.ledger
            if kind == "ack":
                assert isinstance(value, int)
                ledger.sent.ack(value)
            else:
                assert isinstance(value, bytes)
                ledger.received.receive(now)
                got[to].append(value)

        def check_prefixes() -> None:
            self.assertEqual(got["s"], sent["c"][: len(got["s"])])
            self.assertEqual(got["c"], sent["s"][: len(got["c"])])

        for action in actions:
            now += 1.0
            if action in ("c_send", "s_send"):
                side = action[0]
                data = b"%s%d" % (side.encode(), len(sent[side]))
                ledger = pair.client.ledger if side == "c" else pair.session.ledger
                ledger.sent.append(data, now)
                sent[side].append(data)
                (c2s if side == "c" else s2c).append(("msg", data))
            elif action == "c_deliver" and c2s:
                deliver(c2s, "s")
            elif action == "s_deliver" and s2c:
                deliver(s2c, "c")
            elif action == "c_ack":
                c2s.append(("ack", pair.client.ledger.received.acknowledge()))
            elif action == "s_ack":
                s2c.append(("ack", pair.session.ledger.received.acknowledge()))
            elif action == "cut":
                c2s.clear()
                s2c.clear()
                pair.registry.detach(pair.session, now)
                try:
                    resumption = pair.registry.resume(pair.client.request(), "conn", now)
                    s2c.extend(("msg", data) for data in resumption.replay)
                    c2s.extend(("msg", data) for data in pair.client.resumed(resumption.resumed, now))
                except ResumeRefusedError as refused:
                    self.assertIn(refused.reason, (ResumeReason.BUFFER_OVERFLOWED, ResumeReason.WINDOW_EXPIRED))
                    check_prefixes()
                    event("refused")
                    c2s.clear()
                    s2c.clear()
                    # a fresh session, numbered from 1 again
                    pair.client.refused(ResumeRefused(refused.reason, ""))
                    pair.session, grant = pair.registry.open("conn", "c")
                    pair.client.granted(grant, "c")
                    sent = {"c": [], "s": []}
                    got = {"c": [], "s": []}
        while c2s or s2c:
            if c2s:
                deliver(c2s, "s")
            if s2c:
                deliver(s2c, "c")
        self.assertEqual(got["s"], sent["c"])
        self.assertEqual(got["c"], sent["s"])


class ReasonsAgreeTests(SynchronousTestCase):
    """The five refusal reasons are the same in protocol.md, the Python codec and the JavaScript codec."""

    def test_sameEverywhere(self) -> None:
        import re
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        protocol = (root / "docs" / "protocol.md").read_text(encoding="utf-8")
        section = protocol.split("## 10. Session resumption", 1)[1]
        table = section.split("| Reason | When |", 1)[1].split("\n\n", 1)[0]
        documented = tuple(re.findall(r"^\| `([a-z-]+)` \|", table, re.M))
        self.assertEqual(documented, ResumeReason.ALL)
        wire_ts = (root / "js" / "src" / "wire.ts").read_text(encoding="utf-8")
        block = wire_ts.split("export const ResumeReason = {", 1)[1].split("}", 1)[0]
        self.assertEqual(tuple(re.findall(r'"([a-z-]+)"', block)), ResumeReason.ALL)
