"""
The pure parts of session resumption (docs/resumption.md, docs/protocol.md
section 10): numbering and keeping what we send, counting what we receive,
settling calls once, and the session token.

Sans-IO: no Twisted, no autobahn, no clock of its own (every method that
needs the time takes C{now}, in seconds, from the caller), no logging.  The
session (server and client) owns one of each per session and feeds them;
that integration is the next step of issue 21 (docs/resumption.md, "What is
built").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final
from weakref import ref

from .base_error import HubArgumentError, TwistedHubError
from .replay_log import MARK_SPAN as _MARK_SPAN  # (ReplayBuffer.MARK_SPAN, read as a global on its hot path)
from .replay_log import BroadcastLog, LogMark
from .wire import (
    SESSION_TOKEN_MAX_BYTES,
    SESSION_TOKEN_MIN_BYTES,
    ProtocolError,
    Resume,
    Resumed,
    ResumeReason,
    ResumeRefused,
    SessionGrant,
)

#: How long a session outlives its connection, seconds: the default resume
#: window, and the default age bound of what is kept for the peer
#: (docs/resumption.md, "Knobs", says why 120 s).
DEFAULT_WINDOW: Final = 120.0
#: The default byte bound of what is kept for the peer: one largest message
#: (the default max_message_size, 1 MiB), so any message the hub may send can
#: be kept (docs/resumption.md, "Knobs").
DEFAULT_BUFFER_BYTES: Final = 1024 * 1024
#: Bookkeeping bytes counted per kept message on top of its encoded size, so
#: a flood of tiny messages is bounded too.
ENTRY_OVERHEAD: Final = 48
#: Send an ACK once this many sequenced messages arrived unacknowledged
#: (traffic is one-sided: nothing to piggy-back on).
DEFAULT_ACK_EVERY: Final = 256
#: Send an ACK at the latest this many seconds after a sequenced message
#: arrived unacknowledged, whatever else happens (no heartbeats, slow
#: one-sided traffic), so the peer never keeps for long what we have.
DEFAULT_ACK_DELAY: Final = 5.0
#: The most settled calls a CallDeduplicator keeps (the oldest go first).
DEFAULT_MAX_CALLS: Final = 4096


class ResumeRefusedError(TwistedHubError):
    """
    A session cannot be resumed; C{reason} is one of
    L{twisted_hub._wire.ResumeReason} (what RESUME_REFUSED carries).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ResumePolicy:
    """
    The knobs of resumption, for one side.

    @ivar window: seconds a session outlives its connection; also the age
        bound of the replay buffer and of the call deduplicator.
    @ivar buffer_bytes: the byte bound of the replay buffer (encoded
        messages plus L{ENTRY_OVERHEAD} each).
    @ivar ack_every: send an ACK after this many unacknowledged messages
        received when there is no heartbeat to carry the acknowledgement.
    @ivar ack_delay: send an ACK at the latest this many seconds after an
        unacknowledged message arrived.
    @ivar max_calls: the most settled calls kept for deduplication.
    """

    window: float = DEFAULT_WINDOW
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    ack_every: int = DEFAULT_ACK_EVERY
    ack_delay: float = DEFAULT_ACK_DELAY
    max_calls: int = DEFAULT_MAX_CALLS

    def __post_init__(self) -> None:
        # A HubArgumentError (a ValueError): every exception twisted-hub raises is a TwistedHubError (docs/api.md).
        if not self.window > 0:
            raise HubArgumentError(f"window must be > 0 seconds, got {self.window!r}")
        if self.buffer_bytes < 1:
            raise HubArgumentError(f"buffer_bytes must be >= 1, got {self.buffer_bytes!r}")
        if self.ack_every < 1:
            raise HubArgumentError(f"ack_every must be >= 1, got {self.ack_every!r}")
        if not self.ack_delay > 0:
            raise HubArgumentError(f"ack_delay must be > 0 seconds, got {self.ack_delay!r}")
        if self.max_calls < 1:
            raise HubArgumentError(f"max_calls must be >= 1, got {self.max_calls!r}")


class MoveError(TwistedHubError, ValueError):
    """
    A session's state cannot move to another node (its C{connection.items}
    are not msgpack values), or what arrived is not a moved session's state
    (docs/resumption.md, "Across nodes").
    """


def _fields(state: object, count: int, what: str) -> list[Any]:
    if type(state) is not list or len(state) != count:  # noqa: E721
        raise MoveError(f"{what} is a list of {count} values")
    return state


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise MoveError(f"a moved session's state is malformed: {what}")


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0  # noqa: E721


def _is_mark(mark: object) -> bool:
    return (
        type(mark) is list and len(mark) == 3 and _is_count(mark[0])  # noqa: E721
        and all(type(age) in (int, float) for age in mark[1:])
    )


class _KeptMessages:
    """
    Numbered messages kept for the peer, bounded by bytes and by age, with
    the record of what was dropped and why: L{ReplayBuffer}'s storage.
    """

    # ReplayBuffer.append runs once per message sent: what it touches is kept in few places
    # (slots, and the newest span's times in them rather than in its mark)
    __slots__ = ("max_bytes", "max_age", "_kept", "_marks", "_span_at", "_last_at", "_bytes", "_last_sent", "acked",
                 "_dropped")

    def __init__(self, max_bytes: int = DEFAULT_BUFFER_BYTES, max_age: float = DEFAULT_WINDOW) -> None:
        if max_bytes < 1 or not max_age > 0:
            raise ValueError("max_bytes must be >= 1 and max_age > 0")
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._kept: deque[bytes] = deque()
        # [first sequence, first sent at, last sent at] of each span, oldest first; the newest
        # span's "last sent at" lives in _last_at (written into its mark when the next span
        # opens, and when expire reads the marks), its "first sent at" also in _span_at
        self._marks: deque[list[float]] = deque()
        self._span_at = self._last_at = 0.0
        self._bytes = 0
        #: the last sequence number given out
        self._last_sent = 0
        #: the highest sequence the peer acknowledged
        self.acked = 0
        # (last sequence dropped, reason), oldest first; sequences <= acked pruned
        self._dropped: list[tuple[int, str]] = []

    @property
    def _first(self) -> int:
        """The number of the oldest kept message (last_sent + 1 when none is)."""
        return self._last_sent - len(self._kept) + 1

    def _open_span(self, sequence: int, now: float) -> None:
        """Message C{sequence}, kept at C{now}, starts a new span of age record."""
        marks = self._marks
        if marks:
            marks[-1][2] = self._last_at
        marks.append([sequence, now, now])
        self._span_at = now

    def _over_bound(self, size: int, sequence: int) -> None:
        """Message C{sequence} (C{size} bytes with its overhead) took the buffer past its byte bound."""
        if size > self.max_bytes:
            # larger than the whole buffer: numbered but not kept, and everything older
            # is dropped too (a replay must be contiguous)
            self._kept.pop()
            self._bytes -= size
            self._drop_oldest(len(self._kept), ResumeReason.BUFFER_OVERFLOWED)
            self._forget_marks()  # (the span it opened, if it opened one)
            self._drop_through(sequence, ResumeReason.BUFFER_OVERFLOWED)
            return
        self._shrink()

    def _shrink(self) -> None:
        """Drop the oldest messages until the bytes bound holds again (an overflow)."""
        kept, popleft = self._kept, self._kept.popleft
        excess = self._bytes - self.max_bytes
        freed = 0
        while freed < excess:
            freed += len(popleft()) + ENTRY_OVERHEAD
        self._bytes -= freed
        self._forget_marks()
        self._drop_through(self._last_sent - len(kept), ResumeReason.BUFFER_OVERFLOWED)

    def _drop_oldest(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        last = self._first + count - 1
        self._bytes -= _pop_oldest(self._kept, count) + count * ENTRY_OVERHEAD
        self._forget_marks()
        self._drop_through(last, reason)

    def _forget_marks(self) -> None:
        """Forget the age records of spans whose every message is gone."""
        marks, first = self._marks, self._first
        while len(marks) > 1 and marks[1][0] <= first:
            marks.popleft()
        if marks and not self._kept:
            marks.clear()

    def _drop_through(self, sequence: int, reason: str) -> None:
        if self._dropped and self._dropped[-1][1] == reason:
            self._dropped[-1] = (sequence, reason)
        else:
            self._dropped.append((sequence, reason))
        # alternating reasons without an ack in between: keep the list short,
        # the first reason (what the peer needs first) is the one reported
        if len(self._dropped) > 8:
            first = self._dropped[0][1]
            self._dropped[:2] = [(self._dropped[1][0], first)]

    def _keep(self, data: bytes, first_at: float, last_at: float) -> None:
        """Keep one message of a span of age record from C{first_at} to C{last_at} (L{_extend} of one)."""
        self._last_sent = sequence = self._last_sent + 1
        self._kept.append(data)
        self._bytes += len(data) + ENTRY_OVERHEAD
        if not self._marks or last_at - self._span_at >= _MARK_SPAN:
            self._open_span(sequence, first_at)
        self._last_at = last_at
        if self._bytes > self.max_bytes:
            self._over_bound(len(data) + ENTRY_OVERHEAD, sequence)

    def _extend(self, payloads: Sequence[bytes], spans: Iterable[tuple[int, float, float]]) -> None:
        """
        Keep C{payloads} (numbered after the last), whose ages are C{spans}
        ((offset of its first payload, first at, last at) per span).
        """
        first = self._last_sent + 1
        self._last_sent += len(payloads)
        self._kept.extend(payloads)
        self._bytes += sum(map(len, payloads)) + len(payloads) * ENTRY_OVERHEAD
        for offset, first_at, last_at in spans:
            if not self._marks or last_at - self._span_at >= _MARK_SPAN:
                self._open_span(first + offset, first_at)
            self._last_at = last_at
        if self._bytes > self.max_bytes:
            self._shrink()


class ReplayBuffer(_KeptMessages):
    """
    What one side sent and the peer has not acknowledged yet, numbered.

    L{append} gives every sequenced message its number (1, 2, ...; the
    numbers are per session and direction, never on the wire: both sides
    count).  L{ack} drops what the peer acknowledged.  The buffer is bounded
    by bytes and by age: past either bound the oldest messages are dropped,
    and that only matters if the peer later needs them, when L{replay}
    refuses with the reason that dropped the first message the peer lacks
    (C{buffer-overflowed} or C{window-expired}).

    It keeps the encoded C{bytes} themselves (a broadcast's one payload is
    shared by every member's buffer) and no object per message: the kept
    messages are contiguous up to L{last_sent}, so their numbers are
    implied, and their ages are kept per span of at most L{MARK_SPAN}
    seconds (a message is dropped for its age once the newest message of
    its span is older than C{max_age}: at most L{MARK_SPAN} late).

    A group's broadcasts are kept once for all its members in a
    L{twisted_hub._core.replay_log.BroadcastLog}: this buffer then holds an
    open run of that log (its entries C{_run_from} to C{tail}), numbered
    and kept here in bulk whenever the buffer is read (L{settle_run}).
    """

    #: the longest span of time whose messages share one age record, seconds
    MARK_SPAN: Final = _MARK_SPAN

    __slots__ = ("tail", "_log", "_run_from", "_weak", "__weakref__")

    def __init__(self, max_bytes: int = DEFAULT_BUFFER_BYTES, max_age: float = DEFAULT_WINDOW) -> None:
        super().__init__(max_bytes, max_age)
        #: the newest log entry this buffer's open run holds (None: no run)
        self.tail: LogMark | None = None
        self._log: BroadcastLog | None = None
        self._run_from = 0  # the run's first entry not numbered here yet
        self._weak: ref[ReplayBuffer] | None = None  # (made at the first run, for the logs to hold)

    def __len__(self) -> int:
        if self._log is not None:
            self.settle_run()
        return len(self._kept)

    @property
    def size(self) -> int:
        """Bytes held now (encoded messages plus the per-message overhead)."""
        if self._log is not None:
            self.settle_run()
        return self._bytes

    @property
    def last_sent(self) -> int:
        """The last sequence number given out."""
        if self._log is not None:
            self.settle_run()
        return self._last_sent

    @property
    def numbered(self) -> int:
        """L{last_sent}, without settling the open run (nothing is copied: a cheap look)."""
        tail = self.tail
        return self._last_sent if tail is None else self._last_sent + tail.index + 1 - self._run_from

    def join_run(self, log: BroadcastLog, mark: LogMark, data: bytes, now: float) -> int:
        """
        Entry C{mark} of C{log} (C{data}) is the next message, and it does
        not follow this buffer's run (the fan-out's slow path; its fast path
        moves L{tail}): keep it as L{append} does, and hold a run of the log
        from the next entry.  Return its number.
        """
        tail = self.tail
        if tail is not None:
            if self._run_from <= tail.index:
                self.settle_run()
            self._log = None  # (it stays among that log's holders until the log settles: cheaper)
        sequence = self.append(data, now)
        self._log, self.tail, self._run_from = log, mark, mark.index + 1
        weak = self._weak
        if weak is None:
            weak = self._weak = ref(self)
        log.holding[id(self)] = weak
        return sequence

    def settle_run(self) -> None:
        """Number and keep the open run's entries not kept yet (in bulk), with their ages and the bounds."""
        log, tail = self._log, self.tail
        assert log is not None and tail is not None
        start, end = self._run_from, tail.index + 1
        if start >= end:
            return
        self._run_from = end
        if start == tail.index:  # (a run of one entry: one broadcast by the fast path, then something else)
            one = log.newest(start)
            if one is not None:
                self._keep(*one)
                return
        self._extend(*log.entries(start, end))

    def leave_run(self) -> None:
        """Settle the open run and close it (a message not from its log comes next)."""
        log = self._log
        assert log is not None
        self.settle_run()
        log.release(self)
        self._log = self.tail = None

    def append(self, data: bytes, now: float) -> int:
        """
        Keep C{data} (one encoded sequenced message) and return its number.

        A message larger than the whole buffer is numbered but not kept (it
        counts as an overflow if the peer turns out to need it).
        """
        # (one bound check on the common path covers both rare cases: a message larger than
        # the buffer, and the buffer full)
        if self._log is not None:
            self.leave_run()
        self._last_sent = sequence = self._last_sent + 1
        self._kept.append(data)
        self._bytes += len(data) + ENTRY_OVERHEAD
        if not self._marks or now - self._span_at >= _MARK_SPAN:
            self._open_span(sequence, now)
        self._last_at = now
        if self._bytes > self.max_bytes:
            self._over_bound(len(data) + ENTRY_OVERHEAD, sequence)
        return sequence

    def ack(self, received: int) -> None:
        """
        The peer has received everything up to C{received}: forget it.

        @raise ProtocolError: C{received} is beyond what was sent, or below
            an earlier acknowledgement (a peer never unreceives).
        """
        numbered = self.numbered  # (the open run's too, not kept here yet)
        if received > numbered:
            raise ProtocolError(f"acknowledged {received} but only {numbered} were sent")
        if received < self.acked:
            raise ProtocolError(f"acknowledged {received} after {self.acked}: acknowledgements never go back")
        self.acked = received
        kept = self._kept
        if received > self._last_sent:
            # into the open run: everything kept here goes, and the run's first entries are
            # never kept (a member that keeps up acknowledges its run without copying it)
            self._run_from += received - self._last_sent
            self._last_sent = received
            kept.clear()
            self._marks.clear()
            self._bytes = 0
        else:
            count = min(received - self._first + 1, len(kept))
            if count > 0:
                self._bytes -= _pop_oldest(kept, count) + count * ENTRY_OVERHEAD
                self._forget_marks()
        if self._dropped:
            self._dropped = [(last, why) for last, why in self._dropped if last > received]

    def expire(self, now: float) -> int:
        """Drop what is older than the age bound; return how many were dropped."""
        if self._log is not None:
            self.settle_run()
        marks = self._marks
        if marks:
            marks[-1][2] = self._last_at
        count = 0
        while marks and now - marks[0][2] >= self.max_age:
            end = int(marks[1][0]) - 1 if len(marks) > 1 else self._last_sent
            span = end - self._first + 1
            if span > 0:
                self._drop_oldest(span, ResumeReason.WINDOW_EXPIRED)
                count += span
            else:
                marks.popleft()
        return count

    def replay(self, received: int, now: float) -> list[bytes]:
        """
        The messages the peer lacks when it says it received up to
        C{received}, oldest first; they stay kept until acknowledged.
        Acknowledges C{received} (see L{ack} for the errors).

        @raise ResumeRefusedError: a message the peer lacks was dropped
            (its reason: C{buffer-overflowed} or C{window-expired}).
        """
        self.ack(received)
        self.expire(now)  # (settles the open run)
        if self._dropped:
            last, why = self._dropped[0]
            raise ResumeRefusedError(
                why, f"message {received + 1} was dropped ({why}); {last - received} message(s) lost"
            )
        return list(self._kept)

    def export(self, now: float) -> list[Any]:
        """
        This buffer as plain values, for another node to L{restore}
        (docs/resumption.md, "Across nodes"): the numbers, the kept messages,
        their ages (relative to C{now}: clocks of two nodes need not agree)
        and what was dropped.
        """
        if self._log is not None:
            self.settle_run()
        marks = self._marks
        if marks:
            marks[-1][2] = self._last_at
        return [
            self._last_sent, self.acked, list(self._kept),
            [[int(first), now - first_at, now - last_at] for first, first_at, last_at in marks],
            [[last, why] for last, why in self._dropped],
        ]

    @classmethod
    def restore(cls, state: list[Any], max_bytes: int, max_age: float, now: float) -> ReplayBuffer:
        """
        A buffer from L{export}'s values, with this node's bounds and clock.

        @raise MoveError: the values are not an exported buffer.
        """
        last_sent, acked, kept, marks, dropped = _fields(state, 5, "a replay buffer")
        buffer = cls(max_bytes, max_age)
        _require(_is_count(last_sent) and _is_count(acked) and acked <= last_sent, "its numbers")
        _require(type(kept) is list and all(type(k) is bytes for k in kept) and len(kept) <= last_sent, "its messages")
        _require(type(marks) is list and all(_is_mark(m) for m in marks), "its age records")
        _require(
            type(dropped) is list and all(type(d) is list and len(d) == 2 and _is_count(d[0])
                                          and d[1] in ResumeReason.ALL for d in dropped),
            "its drop records",
        )
        buffer._last_sent, buffer.acked = last_sent, acked
        buffer._kept = deque(kept)
        buffer._bytes = sum(map(len, kept)) + len(kept) * ENTRY_OVERHEAD
        buffer._marks = deque([float(first), now - first_age, now - last_age] for first, first_age, last_age in marks)
        if buffer._marks:
            buffer._span_at, buffer._last_at = buffer._marks[-1][1], buffer._marks[-1][2]
        buffer._dropped = [(last, why) for last, why in dropped]
        if buffer._bytes > max_bytes:  # (this node's bound is smaller)
            buffer._shrink()
        return buffer


def _pop_oldest(kept: deque[bytes], count: int) -> int:
    """
    Drop the C{count} oldest of C{kept}; return their bytes.  (In C, not one
    bytecode per message: an acknowledgement covers up to C{ack_every}.)
    """
    if count >= len(kept):  # (the common case: an acknowledgement of everything kept)
        size = sum(map(len, kept))
        kept.clear()
        return size
    return sum(map(len, islice(iter(kept.popleft, None), count)))


class ReceiveWindow:
    """
    What one side received of the peer's sequenced messages.

    Messages carry no number on the wire: L{receive} counts them.  Where a
    number is known (a replay read back from shared storage, whose entries
    are numbered), L{accept} checks it: a number already received is a
    duplicate (dropped: C{False}), one past the next is a gap, a protocol
    error.  It also says when an acknowledgement is due.
    """

    def __init__(self, ack_every: int = DEFAULT_ACK_EVERY, ack_delay: float = DEFAULT_ACK_DELAY) -> None:
        if ack_every < 1 or not ack_delay > 0:
            raise ValueError("ack_every must be >= 1 and ack_delay > 0")
        self.ack_every = ack_every
        self.ack_delay = ack_delay
        #: the last sequence received (0: none yet)
        self.received = 0
        #: the last sequence we acknowledged to the peer
        self.acknowledged = 0
        # when the oldest message not acknowledged yet arrived (None: none)
        self._waiting_since: float | None = None

    def receive(self, now: float) -> int:
        """One more sequenced message arrived at C{now}; return its number."""
        self.received += 1
        if self._waiting_since is None:
            self._waiting_since = now
        return self.received

    def accept(self, sequence: int, now: float) -> bool:
        """
        Message C{sequence} arrived: C{True} to handle it, C{False} for a
        duplicate (drop it).

        @raise ProtocolError: a gap (C{sequence} is past the next one
            expected: something in between was lost), or not a sequence.
        """
        if sequence < 1:
            raise ProtocolError(f"sequence {sequence} is not a sequence number (they start at 1)")
        if sequence <= self.received:
            return False
        if sequence > self.received + 1:
            missing = f"{self.received + 1}..{sequence - 1}"
            raise ProtocolError(f"sequence {sequence} after {self.received}: messages {missing} are missing")
        self.received = sequence
        if self._waiting_since is None:
            self._waiting_since = now
        return True

    @property
    def unacknowledged(self) -> int:
        """Messages received since the last acknowledgement we sent."""
        return self.received - self.acknowledged

    def ack_due(self, now: float) -> bool:
        """
        Should a standalone ACK go now?  Yes once C{ack_every} messages are
        unacknowledged, or the oldest of them arrived C{ack_delay} ago.
        """
        if self._waiting_since is None:
            return False
        return self.unacknowledged >= self.ack_every or now - self._waiting_since >= self.ack_delay

    def ack_deadline(self) -> float | None:
        """When L{ack_due} turns true by time alone (for a timer), or None: nothing waits."""
        return None if self._waiting_since is None else self._waiting_since + self.ack_delay

    def acknowledge(self) -> int:
        """The value to put in an acknowledgement now (and remember it was sent)."""
        self.acknowledged = self.received
        self._waiting_since = None
        return self.received

    def export(self) -> list[int]:
        """What was received and acknowledged, for another node (L{restore})."""
        return [self.received, self.acknowledged]

    def restore(self, state: list[Any], now: float) -> None:
        """
        Take over L{export}'s counts (another node received up to there); an
        acknowledgement that was due there is due here.

        @raise MoveError: the values are not exported counts.
        """
        received, acknowledged = _fields(state, 2, "a receive window")
        _require(_is_count(received) and _is_count(acknowledged) and acknowledged <= received, "its counts")
        self.received, self.acknowledged = received, acknowledged
        self._waiting_since = now if received > acknowledged else None


class Verdict:
    """What L{CallDeduplicator.begin} says about a call id."""

    #: never seen: run the call
    NEW: Final = "new"
    #: seen and still running: do not run it again; its answer will come
    RUNNING: Final = "running"
    #: seen and settled: send the stored answer again, do not run it
    SETTLED: Final = "settled"
    #: seen, settled, and its answer no longer kept: do not run it; answer
    #: it with an error (code C{duplicate-call}, docs/protocol.md section 10.6)
    FORGOTTEN: Final = "forgotten"


@dataclass(frozen=True, slots=True)
class Seen:
    """L{CallDeduplicator.begin}'s answer: the verdict and, when settled, the answer's bytes."""

    verdict: str
    answer: bytes | None = None


_NEW = Seen(Verdict.NEW)
_RUNNING = Seen(Verdict.RUNNING)


class CallDeduplicator:
    """
    The call ids one side has seen from its peer on a session, and their
    answers, so a call sent again (after a resume whose state lagged) gets
    its answer again instead of running twice.

    Call ids of a resumable session strictly increase (docs/protocol.md
    section 10.6), so an id at or below the highest one ever forgotten and
    not kept is known to be a repeat: L{Verdict.FORGOTTEN}, never run.
    Bounded: settled answers are kept C{max_age} seconds and at most
    C{max_calls} of them (the oldest go first); running calls are bounded by
    the session's own limit on pending calls.
    """

    def __init__(self, max_calls: int = DEFAULT_MAX_CALLS, max_age: float = DEFAULT_WINDOW) -> None:
        if max_calls < 1 or not max_age > 0:
            raise ValueError("max_calls must be >= 1 and max_age > 0")
        self.max_calls = max_calls
        self.max_age = max_age
        self._running: set[int] = set()
        # call id -> (settled at, answer), in settling order
        self._settled: OrderedDict[int, tuple[float, bytes]] = OrderedDict()
        #: every id at or below this one was seen (and forgotten if not kept)
        self.forgotten_through = 0
        self.highest = 0

    def __len__(self) -> int:
        return len(self._running) + len(self._settled)

    def begin(self, call_id: int, now: float) -> Seen:
        """A call with C{call_id} arrived: may it run?  (C{NEW}: it is now running.)"""
        settled = self._settled
        if settled and now - next(iter(settled.values()))[0] >= self.max_age:
            self.expire(now)
        if call_id in self._running:
            return _RUNNING
        kept = self._settled.get(call_id)
        if kept is not None:
            return Seen(Verdict.SETTLED, kept[1])
        if call_id <= self.forgotten_through:
            return Seen(Verdict.FORGOTTEN)
        self._running.add(call_id)
        if call_id > self.highest:
            self.highest = call_id
        return _NEW

    @property
    def running(self) -> frozenset[int]:
        """The ids of the calls running now."""
        return frozenset(self._running)

    @property
    def running_count(self) -> int:
        """How many calls run now."""
        return len(self._running)

    def is_running(self, call_id: int) -> bool:
        """Is C{call_id} running (begun, not settled or abandoned)?"""
        return call_id in self._running

    def settle(self, call_id: int, answer: bytes, now: float) -> None:
        """
        The call C{call_id} finished; C{answer} is its encoded RESULT or
        ERROR, kept for a repeat.

        @raise KeyError: the call is not running (a bug of the caller).
        """
        self._running.remove(call_id)
        self._settled[call_id] = (now, answer)
        while len(self._settled) > self.max_calls:
            self._forget(next(iter(self._settled)))

    def abandon(self, call_id: int) -> None:
        """A running call will never settle (the session ended): forget it."""
        self._running.discard(call_id)

    def expire(self, now: float) -> int:
        """Forget answers settled more than C{max_age} ago; return how many."""
        count = 0
        while self._settled:
            call_id, (settled_at, _) = next(iter(self._settled.items()))
            if now - settled_at < self.max_age:
                break
            self._forget(call_id)
            count += 1
        return count

    def export(self, now: float) -> list[Any]:
        """
        The calls seen, for another node (L{restore}): the running ids, the
        kept answers with their ages, and the two high-water marks.
        """
        settled = [[call_id, now - at, answer] for call_id, (at, answer) in self._settled.items()]
        return [sorted(self._running), settled, self.forgotten_through, self.highest]

    def restore(self, state: list[Any], now: float) -> None:
        """
        Take over L{export}'s calls (this deduplicator is new).

        @raise MoveError: the values are not exported calls.
        """
        running, settled, forgotten_through, highest = _fields(state, 4, "a call table")
        _require(type(running) is list and all(_is_count(c) for c in running), "its running calls")
        _require(
            type(settled) is list and all(type(e) is list and len(e) == 3 and _is_count(e[0])
                                          and type(e[1]) in (int, float) and type(e[2]) is bytes for e in settled),
            "its answers",
        )
        _require(_is_count(forgotten_through) and _is_count(highest), "its marks")
        self._running = set(running)
        self._settled = OrderedDict((call_id, (now - age, answer)) for call_id, age, answer in settled)
        self.forgotten_through, self.highest = forgotten_through, highest

    def _forget(self, call_id: int) -> None:
        del self._settled[call_id]
        self.forgotten_through = max(self.forgotten_through, call_id)


#: The reference token layout (opaque to clients): epoch tag, session id, secret.
EPOCH_BYTES: Final = 4
SESSION_ID_BYTES: Final = 12
SECRET_BYTES: Final = 16
TOKEN_BYTES: Final = EPOCH_BYTES + SESSION_ID_BYTES + SECRET_BYTES
assert SESSION_TOKEN_MIN_BYTES <= TOKEN_BYTES <= SESSION_TOKEN_MAX_BYTES


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


class SessionToken:
    """
    The server's side of a session token: what identifies a session and
    proves the holder may resume it.

    A token (32 bytes on the wire) is the epoch it was issued in (4 bytes),
    the session id (12 random bytes) and a secret (16 random bytes, 128
    bits, from L{secrets.token_bytes}).  The server keeps only the secret's
    SHA-256 (so state in shared storage does not hand out tokens), compares
    in constant time, and L{rotate}s the secret on every successful resume
    so an old token is refused.  Neither the token nor the secret ever
    appears in C{repr} or C{str}.

    A rotated token reaches the client in RESUMED; a link that dies before
    RESUMED arrives leaves the client with the token it resumed with.  So
    the tokens issued since the client last proved it holds the newest one
    stay valid beside it (at most L{UNCONFIRMED_TOKENS}) until L{confirm}:
    the first hub message on the connection that resumed (a client sends
    nothing between its RESUME and the answer, docs/protocol.md 10.5).  An
    old token stolen after a resume that went through is refused.
    """

    __slots__ = ("epoch", "session_id", "_digest", "_unconfirmed")

    #: earlier tokens kept valid while the newest is unconfirmed (a chain of resumes each cut before its answer)
    UNCONFIRMED_TOKENS = 4

    def __init__(self, epoch: bytes, session_id: bytes, digest: bytes) -> None:
        if len(epoch) != EPOCH_BYTES or len(session_id) != SESSION_ID_BYTES or len(digest) != 32:
            raise ValueError("epoch, session id or digest of the wrong size")
        self.epoch = epoch
        self.session_id = session_id
        self._digest = digest
        #: digests of earlier tokens still valid: the newest one was not confirmed yet
        self._unconfirmed: tuple[bytes, ...] = ()

    @classmethod
    def issue(cls, epoch: bytes) -> tuple[SessionToken, bytes]:
        """A new session in C{epoch}: its server-side record and the token to send (SESSION)."""
        session_id = secrets.token_bytes(SESSION_ID_BYTES)
        secret = secrets.token_bytes(SECRET_BYTES)
        return cls(epoch, session_id, _digest(secret)), epoch + session_id + secret

    @staticmethod
    def new_epoch() -> bytes:
        """A fresh epoch tag (a node without a backplane: one per process; with one: one per Redis state)."""
        return secrets.token_bytes(EPOCH_BYTES)

    @staticmethod
    def parse(token: bytes) -> tuple[bytes, bytes, bytes]:
        """
        Split a token from the wire into (epoch, session id, secret).

        @raise ResumeRefusedError: C{token-invalid}: not a token of this layout.
        """
        if len(token) != TOKEN_BYTES:
            raise ResumeRefusedError(ResumeReason.TOKEN_INVALID, f"a session token has {TOKEN_BYTES} bytes")
        return (
            token[:EPOCH_BYTES],
            token[EPOCH_BYTES : EPOCH_BYTES + SESSION_ID_BYTES],
            token[EPOCH_BYTES + SESSION_ID_BYTES :],
        )

    @property
    def digest(self) -> bytes:
        """The secret's SHA-256: what shared storage keeps."""
        return self._digest

    def matches(self, token: bytes) -> bool:
        """Is C{token} this session's current token?  (Constant time in the secret.)"""
        if len(token) != TOKEN_BYTES:
            return False
        epoch, session_id, secret = self.parse(token)
        same_session = hmac.compare_digest(epoch + session_id, self.epoch + self.session_id)
        digest = _digest(secret)
        same_secret = hmac.compare_digest(digest, self._digest)
        for earlier in self._unconfirmed:  # (each compared, whatever the others gave)
            same_secret |= hmac.compare_digest(digest, earlier)
        return same_session and same_secret

    @staticmethod
    def claim_of(token: bytes) -> tuple[bytes, bytes]:
        """
        What another node is asked to check a token by (docs/resumption.md,
        "Across nodes"): the session key (epoch and session id) and the
        secret's SHA-256, never the secret itself.

        @raise ResumeRefusedError: C{token-invalid}: not a token of this layout.
        """
        epoch, session_id, secret = SessionToken.parse(token)
        return epoch + session_id, _digest(secret)

    @property
    def key(self) -> bytes:
        """The epoch and session id: what names the session among every node's."""
        return self.epoch + self.session_id

    def matches_claim(self, key: bytes, digest: bytes) -> bool:
        """L{matches} for a token known by L{claim_of}'s values (constant time in the digest)."""
        same_session = hmac.compare_digest(key, self.key)
        same_secret = hmac.compare_digest(digest, self._digest)
        for earlier in self._unconfirmed:
            same_secret |= hmac.compare_digest(digest, earlier)
        return same_session and same_secret

    def export(self) -> list[Any]:
        """This record as plain values for the node the session moves to (digests only: no secret)."""
        return [self.epoch, self.session_id, self._digest, list(self._unconfirmed)]

    @classmethod
    def restore(cls, state: list[Any]) -> SessionToken:
        """
        The record L{export} gave.

        @raise MoveError: the values are not an exported record.
        """
        epoch, session_id, digest, unconfirmed = _fields(state, 4, "a token record")
        _require(all(type(v) is bytes for v in (epoch, session_id, digest)), "its token")
        _require(type(unconfirmed) is list and all(type(d) is bytes and len(d) == 32 for d in unconfirmed)
                 and len(unconfirmed) <= cls.UNCONFIRMED_TOKENS, "its earlier tokens")
        record = cls(epoch, session_id, digest)
        record._unconfirmed = tuple(unconfirmed)
        return record

    def rotate(self) -> bytes:
        """
        A new secret for this session; return the new token (RESUMED).  The
        old one keeps matching only until L{confirm}.
        """
        self._unconfirmed = (*self._unconfirmed, self._digest)[-self.UNCONFIRMED_TOKENS :]
        secret = secrets.token_bytes(SECRET_BYTES)
        self._digest = _digest(secret)
        return self.epoch + self.session_id + secret

    @property
    def confirmed(self) -> bool:
        """Only the newest token matches (the client showed it has it)."""
        return not self._unconfirmed

    def confirm(self) -> None:
        """The client holds the newest token: the earlier ones stop matching."""
        self._unconfirmed = ()

    def __repr__(self) -> str:
        return f"SessionToken(session_id={self.session_id.hex()}, secret=<hidden>)"

    __str__ = __repr__


def check_resume(
    record: SessionToken | None, token: bytes, epoch: bytes, *, shared: bool, ended: str | None = None
) -> None:
    """
    The server's check of a RESUME's token against the session it names
    (C{record}: None when no session has that id) in the current C{epoch}.

    @param shared: the session state lives in a backplane (so another epoch
        means that state was lost), not in this process (so another epoch
        means another process: the session is unknown here).
    @param ended: the session is over, for this reason (C{window-expired}
        when it outlived its window, C{buffer-overflowed} when a resume found
        a message dropped): reported as it is.
    @raise ResumeRefusedError: with the typed reason, in this order:
        C{token-invalid} (malformed), C{backplane-state-lost} or
        C{session-unknown} (issued in another epoch), C{ended}'s reason,
        C{session-unknown} (no record), C{token-invalid} (the secret does
        not match).
    """
    token_epoch, _, _ = SessionToken.parse(token)
    if not hmac.compare_digest(token_epoch, epoch):
        if shared:
            raise ResumeRefusedError(
                ResumeReason.BACKPLANE_STATE_LOST, "the session was issued before the shared state was lost"
            )
        raise ResumeRefusedError(ResumeReason.SESSION_UNKNOWN, "the session was issued by another server process")
    if ended is not None:
        raise ResumeRefusedError(ended, "the session is over")
    if record is None:
        raise ResumeRefusedError(ResumeReason.SESSION_UNKNOWN, "no such session")
    if not record.matches(token):
        raise ResumeRefusedError(ResumeReason.TOKEN_INVALID, "the token does not match the session")


class SessionLedger:
    """
    One side's state of one resumable session: what it sent (a
    L{ReplayBuffer}), what it received (a L{ReceiveWindow}) and the peer's
    call ids (a L{CallDeduplicator}), bounded by one L{ResumePolicy}.
    """

    def __init__(self, policy: ResumePolicy) -> None:
        self.policy = policy
        self.sent = ReplayBuffer(policy.buffer_bytes, policy.window)
        self.received = ReceiveWindow(policy.ack_every, policy.ack_delay)
        self.calls = CallDeduplicator(policy.max_calls, policy.window)

    def replay_for(self, peer_received: int, now: float) -> list[bytes]:
        """
        What the peer lacks when it has received up to C{peer_received}
        (L{ReplayBuffer.replay}).
        """
        return self.sent.replay(peer_received, now)


class ResumableSession:
    """
    A server-side session in a L{SessionRegistry}: its token record, its
    ledger, and the connection it is attached to (an opaque handle of the
    caller's; None while detached).
    """

    __slots__ = ("token", "ledger", "attachment", "detached_at", "connection_id", "owner")

    def __init__(self, token: SessionToken, ledger: SessionLedger, attachment: object, connection_id: str) -> None:
        #: what the caller keeps the session's state in (the server's session object)
        self.owner: object | None = None
        self.token = token
        #: the hub's id for this session's connection, kept across resumes
        self.connection_id = connection_id
        self.ledger = ledger
        self.attachment: object | None = attachment
        self.detached_at: float | None = None

    @property
    def session_id(self) -> bytes:
        return self.token.session_id

    def __repr__(self) -> str:
        state = "attached" if self.attachment is not None else f"detached since {self.detached_at}"
        return f"ResumableSession({self.session_id.hex()}, {state})"


@dataclass(frozen=True, slots=True)
class Resumption:
    """
    A successful L{SessionRegistry.resume}: the session, what to send
    (C{resumed}, then C{replay} in order), and the connection the session
    was still attached to, which the caller closes with 4006 (None: none).
    """

    session: ResumableSession
    resumed: Resumed
    replay: list[bytes]
    previous: object | None


class SessionRegistry:
    """
    The server's resumable sessions of one node (or, with C{shared}, its
    view of sessions kept in a backplane): issue, detach, resume, expire.

    Pure: the caller passes the time and opaque connection handles, sends
    what it is given and runs the hub's hooks.  A session ends (L{expire}
    returns it) C{window} seconds after it was detached; the ids of ended
    sessions are remembered for one more window (at most C{max_ended}) so a
    late resume is refused with C{window-expired} rather than
    C{session-unknown}.  Counts resumes and refusals by reason.
    """

    def __init__(
        self, policy: ResumePolicy | None = None, epoch: bytes | None = None, *, shared: bool = False,
        max_ended: int = 10_000,
    ) -> None:
        self.policy = policy or ResumePolicy()
        self.epoch = epoch if epoch is not None else SessionToken.new_epoch()
        self.shared = shared
        self.max_ended = max_ended
        self._sessions: dict[bytes, ResumableSession] = {}
        # session id -> (when it ended, why: a ResumeReason), oldest first
        self._ended: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self.resumed = 0
        self.replayed = 0
        self.refused: dict[str, int] = dict.fromkeys(ResumeReason.ALL, 0)
        #: sessions handed to another node / taken over from one (docs/resumption.md, "Across nodes")
        self.moved_out = 0
        self.moved_in = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, attachment: object, connection_id: str) -> tuple[ResumableSession, SessionGrant]:
        """
        A new session for a connection (C{connection_id}: the id its WELCOME
        gave, which the session keeps); send the grant (SESSION) before anything else.
        """
        record, token = SessionToken.issue(self.epoch)
        while record.session_id in self._sessions:  # pragma: no cover - 96 random bits
            record, token = SessionToken.issue(self.epoch)
        session = ResumableSession(record, SessionLedger(self.policy), attachment, connection_id)
        self._sessions[record.session_id] = session
        return session, SessionGrant(token, self.policy.window)

    def detach(self, session: ResumableSession, now: float) -> None:
        """Its connection is gone (timeout, lost transport): keep it for the window."""
        session.attachment = None
        session.detached_at = now

    def end(self, session: ResumableSession, now: float, reason: str = ResumeReason.WINDOW_EXPIRED) -> None:
        """
        The session is over (kicked, closed, refused, expired): forget it,
        remembering for a window that it ended and why (what a late RESUME is told).
        """
        if self._sessions.pop(session.session_id, None) is not None:
            self._ended[session.session_id] = (now, reason)
            while len(self._ended) > self.max_ended:
                self._ended.popitem(last=False)

    def expire(self, now: float) -> list[ResumableSession]:
        """End and return the sessions detached for longer than the window (run their on_disconnected)."""
        window = self.policy.window
        ended = [
            s for s in self._sessions.values() if s.detached_at is not None and now - s.detached_at >= window
        ]
        for session in ended:
            self.end(session, now)
        while self._ended and now - next(iter(self._ended.values()))[0] >= window:
            self._ended.popitem(last=False)
        for session in self._sessions.values():
            session.ledger.sent.expire(now)
            session.ledger.calls.expire(now)
        return ended

    def resume(self, request: Resume, attachment: object, now: float) -> Resumption:
        """
        A RESUME arrived on a new connection (C{attachment}).

        @raise ResumeRefusedError: the typed reason (counted); the caller
            sends RESUME_REFUSED and opens a fresh session with L{open}.
        @raise ProtocolError: the client's C{received} is beyond what the
            session sent, or below what it acknowledged.
        """
        try:
            session = self._check(request.token, now)
            replay = session.ledger.replay_for(request.received, now)
        except ResumeRefusedError as refused:
            self.refused[refused.reason] = self.refused.get(refused.reason, 0) + 1
            # a session that cannot be resumed any more is over; a bad token
            # (someone else's guess, an old copy) leaves the real one alone
            ended = self._session_of(request.token)
            if ended is not None and refused.reason != ResumeReason.TOKEN_INVALID:
                self.end(ended, now, refused.reason)
            raise
        previous = session.attachment
        session.attachment = attachment
        session.detached_at = None
        token = session.token.rotate()
        self.resumed += 1
        self.replayed += len(replay)
        # RESUMED carries our count: it is an acknowledgement
        received = session.ledger.received.acknowledge()
        return Resumption(session, Resumed(received, token, session.connection_id), replay, previous)

    @property
    def detached(self) -> int:
        """Sessions kept without a connection now."""
        return sum(1 for session in self._sessions.values() if session.detached_at is not None)

    @property
    def buffer_bytes(self) -> int:
        """Bytes kept for the clients now (every session's replay buffer)."""
        return sum(session.ledger.sent.size for session in self._sessions.values())

    def find(self, token: bytes) -> ResumableSession | None:
        """The session a RESUME's C{token} names (None: none here), whether or not the token is right."""
        return self._session_of(token)

    def knows(self, token: bytes) -> bool:
        """Does this registry hold, or remember the end of, the session C{token} names?"""
        if len(token) != TOKEN_BYTES:
            return True  # (malformed: refused here, token-invalid)
        session_id = token[EPOCH_BYTES : EPOCH_BYTES + SESSION_ID_BYTES]
        return session_id in self._sessions or session_id in self._ended

    def find_key(self, key: bytes) -> ResumableSession | None:
        """The session L{SessionToken.claim_of}'s C{key} names (None: none here)."""
        session = self._sessions.get(key[EPOCH_BYTES:])
        return session if session is not None and session.token.key == key else None

    def ended_reason(self, key: bytes) -> str | None:
        """Why the session C{key} names ended here, if it did within the last window."""
        ended = self._ended.get(key[EPOCH_BYTES:])
        return ended[1] if ended is not None else None

    def hand_over(self, session: ResumableSession) -> None:
        """
        The session moved to another node (docs/resumption.md, "Across
        nodes"): forget it without remembering an end, so a late resume
        that reaches this node asks the others again.
        """
        if self._sessions.pop(session.session_id, None) is not None:
            self.moved_out += 1

    def adopt(
        self, token: SessionToken, sent: list[Any], received: list[Any], calls: list[Any], connection_id: str,
        now: float,
    ) -> ResumableSession:
        """
        A session another node handed over, from its exported state; it is
        detached until L{resume} attaches it.

        @raise MoveError: the state is malformed, or the session is here already.
        """
        if token.session_id in self._sessions:
            raise MoveError("a session with this id is here already")
        policy = self.policy
        ledger = SessionLedger(policy)
        ledger.sent = ReplayBuffer.restore(sent, policy.buffer_bytes, policy.window, now)
        ledger.received.restore(received, now)
        ledger.calls.restore(calls, now)
        session = ResumableSession(token, ledger, None, connection_id)
        session.detached_at = now
        self._sessions[token.session_id] = session
        self._ended.pop(token.session_id, None)
        self.moved_in += 1
        return session

    def count_refusal(self, reason: str) -> None:
        """Count a refusal the caller decided (e.g. another user's connection presenting the token)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _session_of(self, token: bytes) -> ResumableSession | None:
        if len(token) != TOKEN_BYTES:
            return None
        return self._sessions.get(token[EPOCH_BYTES : EPOCH_BYTES + SESSION_ID_BYTES])

    def _check(self, token: bytes, now: float) -> ResumableSession:
        session = self._session_of(token)
        session_id = token[EPOCH_BYTES : EPOCH_BYTES + SESSION_ID_BYTES]
        ended: str | None = None
        if session is None:
            if session_id in self._ended:
                ended = self._ended[session_id][1]
        elif session.detached_at is not None and now - session.detached_at >= self.policy.window:
            ended = ResumeReason.WINDOW_EXPIRED
        # (a session taken over from another node keeps the epoch it was issued in)
        epoch = session.token.epoch if session is not None else self.epoch
        check_resume(session.token if session else None, token, epoch, shared=self.shared, ended=ended)
        assert session is not None
        return session


class ClientResumeState:
    """
    The client's side of a resumable session: the token (never shown), the
    ledger, and the checks of the server's answers.
    """

    def __init__(self, policy: ResumePolicy | None = None) -> None:
        self.policy = policy or ResumePolicy()
        self._token: bytes | None = None
        self.window: float | None = None
        #: the session's connection id (from WELCOME, then from each RESUMED)
        self.connection_id: str | None = None
        self.ledger = SessionLedger(self.policy)
        #: the reason of the last refusal (None: none yet)
        self.last_refusal: str | None = None

    @property
    def resumable(self) -> bool:
        """Has the server granted a session to resume?"""
        return self._token is not None

    def granted(self, grant: SessionGrant, connection_id: str) -> None:
        """
        SESSION: a new session (the first, or after a refusal) for the
        connection C{connection_id} (its WELCOME's id): numbering starts again.
        """
        self._token = grant.token
        self.connection_id = connection_id
        self.window = grant.window
        self.ledger = SessionLedger(self.policy)

    def request(self) -> Resume:
        """
        The RESUME to send after HELLO, in the same frame: it acknowledges
        what we received and says what we sent (a node restoring the
        session from its snapshot compares both, docs/resumption.md).
        """
        if self._token is None:
            raise ValueError("no session to resume")
        return Resume(self._token, self.ledger.received.acknowledge(), self.ledger.sent.last_sent)

    def resumed(self, answer: Resumed, now: float) -> list[bytes]:
        """
        RESUMED: take the rotated token; return our messages the server
        lacks, to send in order before anything new.

        @raise ProtocolError: the server's C{received} is beyond what we
            sent or below what it acknowledged (its state was lost unnoticed).
        @raise ResumeRefusedError: we dropped a message the server lacks
            (our bound); the caller closes and starts afresh.
        """
        replay = self.ledger.replay_for(answer.received, now)
        self._token = answer.token
        self.connection_id = answer.connection_id
        return replay

    def refused(self, answer: ResumeRefused) -> str:
        """RESUME_REFUSED: the session is gone; return the reason (unknown ones read as session-unknown)."""
        reason = answer.reason if answer.reason in ResumeReason.ALL else ResumeReason.SESSION_UNKNOWN
        self.last_refusal = reason
        self._token = None
        self.window = None
        self.ledger = SessionLedger(self.policy)
        return reason

    def __repr__(self) -> str:
        return f"ClientResumeState(resumable={self.resumable}, received={self.ledger.received.received})"
