"""
A broadcast kept once for all its resumable members: L{BroadcastLog}
(docs/resumption.md, "How it is built"; docs/performance.md, "What session
resumption costs").

Without it a fan-out to N resumable members numbers and keeps every message
N times, in Python, one L{twisted_hub._core.resume.ReplayBuffer.append} per
member.  With it, a broadcast to a group is appended once to the group's
log, and a member that received the log's previous entry as its own
previous message only moves its C{tail} to the new entry (one identity test
and one store in L{twisted_hub._core.session_output.SessionOutput.send_prepared}):
its buffer holds an open I{run} of the log, from C{_run_from} to C{tail}.
The run is numbered and kept into the member's own buffer, in bulk (a slice
and C{deque.extend}, in C), whenever the buffer is read (an ACK, a replay,
an export, the age sweep, its size) or a message not from this run is
kept: the bounds then apply exactly as if every message had been kept one
by one (a buffer keeps the longest newest run of messages that fits its
byte bound, whatever the order of appends and acknowledgements; ages are
per span, as always).  A member that missed an entry (it left the group,
was excluded, refused the message as too large, or got a message of its
own in between) fails the identity test and joins the log again at the
entry it does get (that one is kept as any message is, the run starts
after it): contiguity is checked, not assumed, so no membership hook is
needed.  (So a member that alternates between two groups' broadcasts
gains nothing: each of its messages is kept on its own.)

The log itself holds at most C{max_entries} entries and about
C{max_bytes}: past either it settles every member's run into the member's
buffer (each then bounded by its own policy) and forgets its entries.  A
log no buffer holds a run of keeps only its newest entry.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final
from weakref import ref

if TYPE_CHECKING:
    from .resume import ReplayBuffer

__all__ = ["UNSHARED", "Broadcast", "BroadcastLog", "LogMark"]

#: The longest span of time whose entries share one age record, seconds (ReplayBuffer.MARK_SPAN)
MARK_SPAN: Final = 1.0
#: The most entries a log holds before it settles its members' runs
DEFAULT_MAX_ENTRIES: Final = 4096


class LogMark:
    """One entry of a L{BroadcastLog}: its index there.  Compared by identity."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"LogMark({self.index})"


#: What a broadcast outside any log follows: no buffer's tail is ever this
UNSHARED: Final = LogMark(-1)

_first_of = itemgetter(0)  # (a span record's first index, for bisect)


class Broadcast:
    """
    One message framed once for many connections, as the fan-out hands it
    to each: C{frame} (the transport's prepared frame), C{payload} (the
    encoded message), and its place in a log (C{log}, C{mark}; C{after}: the
    log's entry before it, L{UNSHARED} outside a log).
    """

    __slots__ = ("frame", "payload", "log", "mark", "after")

    def __init__(
        self, frame: Any, payload: bytes, log: BroadcastLog | None = None, mark: LogMark | None = None,
        after: LogMark = UNSHARED,
    ) -> None:
        self.frame = frame
        self.payload = payload
        self.log = log
        self.mark = mark
        self.after = after


class BroadcastLog:
    """
    The sequenced messages broadcast to one group (or to every connection)
    of a hub, kept once for the members whose buffers hold a run of them.

    The buffers with an open run here are held weakly (a session that ends
    leaves nothing behind), by their id: joining a log is a dict store, and
    a buffer that moves on is forgotten when the log next settles.
    """

    __slots__ = ("_now", "max_bytes", "max_entries", "_payloads", "_spans", "_first", "_bytes", "_last", "holding",
                 "__weakref__")

    def __init__(self, now: Callable[[], float], max_bytes: int, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_bytes < 1 or max_entries < 1:
            raise ValueError("max_bytes and max_entries must be >= 1")
        self._now = now
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._payloads: list[bytes] = []
        # [first index, first at, last at] per span of at most MARK_SPAN seconds, oldest first
        self._spans: list[list[float]] = []
        #: the index of the oldest entry held (_payloads[0])
        self._first = 0
        self._bytes = 0
        # the newest entry (what the next one follows)
        self._last = LogMark(-1)
        #: id(buffer) -> a weak reference to it, for the buffers that joined a run here
        #: (L{ReplayBuffer.join_run} adds itself; some may have moved on since: L{holders})
        self.holding: dict[int, ref[ReplayBuffer]] = {}

    def __len__(self) -> int:
        return len(self._payloads)

    @property
    def first(self) -> int:
        """The index of the oldest entry still held."""
        return self._first

    def add(self, frame: Any, payload: bytes) -> Broadcast:
        """Append one broadcast (read the time once for all its members); what to hand each member."""
        if self._payloads and (
            len(self._payloads) >= self.max_entries or self._bytes >= self.max_bytes or not self.holding
        ):
            self.settle()  # (no holders: nobody needs what it holds; a member may join at the new entry)
        now = self._now()
        index = self._first + len(self._payloads)
        self._payloads.append(payload)
        self._bytes += len(payload)
        spans = self._spans
        if spans and now - spans[-1][1] < MARK_SPAN:
            spans[-1][2] = now
        else:
            spans.append([index, now, now])
        mark = LogMark(index)
        after, self._last = self._last, mark
        return Broadcast(frame, payload, self, mark, after)

    @property
    def holders(self) -> list[ReplayBuffer]:
        """The buffers with an open run here."""
        return [buffer for buffer in (weak() for weak in self.holding.values()) if buffer is not None
                and buffer._log is self]

    def release(self, buffer: ReplayBuffer) -> None:
        """C{buffer} holds no run here any more."""
        self.holding.pop(id(buffer), None)

    def newest(self, index: int) -> tuple[bytes, float, float] | None:
        """
        Entry C{index}'s payload and its span's times, when it is in the
        newest span (the common case of a run of one entry); else None.
        """
        span = self._spans[-1]
        return (self._payloads[index - self._first], span[1], span[2]) if index >= span[0] else None

    def entries(self, start: int, end: int) -> tuple[list[bytes], list[tuple[int, float, float]]]:
        """
        The payloads of entries C{start} to C{end} - 1, and their age
        records: (offset from C{start}, first at, last at) per span.
        """
        if start < self._first:
            raise ValueError(f"entry {start} is no longer held (the oldest is {self._first})")
        first = self._first
        payloads = self._payloads[start - first : end - first]
        spans: list[tuple[int, float, float]] = []
        records = self._spans
        # (the span holding entry start, then the later ones that begin before end)
        for span_first, first_at, last_at in islice(records, max(bisect_right(records, start, key=_first_of) - 1, 0), None):
            if span_first >= end:
                break
            spans.append((max(int(span_first) - start, 0), first_at, last_at))
        return payloads, spans

    def settle(self) -> None:
        """
        Number and keep every holder's run into its buffer, let go of the
        holders that fell behind (they join again at their next broadcast),
        and forget every entry.
        """
        last = self._last
        holders = {}
        for weak in list(self.holding.values()):
            buffer = weak()
            if buffer is None or buffer._log is not self:
                continue  # (gone, or it moved on to another log or a message of its own)
            buffer.settle_run()
            if buffer.tail is last:
                holders[id(buffer)] = weak
            else:
                buffer.leave_run()
        self.holding = holders
        self._first += len(self._payloads)
        self._payloads = []
        self._spans = []
        self._bytes = 0
