"""
Heartbeat logic without I/O: policies, per-connection trackers, clock sync
and stall detection.  Every function takes the time explicitly; the Twisted
adapters own the timers.
"""

from __future__ import annotations

import enum
import os
import sys
import warnings
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any, ClassVar, NamedTuple, Protocol

from .base_error import HubArgumentError
from .sentinel import UNSET, Unset

#: Timeout used when only an interval is given (Tank's rule: 3 x interval).
DEFAULT_TIMEOUT_FACTOR = 3.0


class HeartbeatConfigurationError(HubArgumentError):
    """An interval or timeout that cannot work (zero, negative, not a number); a L{HubArgumentError}."""


class HeartbeatConfigurationWarning(UserWarning):
    """A configuration that works but is likely to cause false timeouts."""


class MetadataProvider(Protocol):
    """
    Writes optional metadata bytes into every server heartbeat.

    Called once per heartbeat tick (not once per connection); the bytes are
    shared by every connection of the tick.  Return None to send no metadata.
    """

    def __call__(self) -> bytes | None: ...


#: the twisted_hub package (this file is in its _core/ folder)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_stacklevel() -> int:
    """
    The C{stacklevel} that makes a warning point at the user's line: the
    first caller outside this package, dataclasses and generated code.
    """
    frame: FrameType | None = sys._getframe(1)  # whoever calls warnings.warn
    level = 1
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_PACKAGE_DIR) or filename.startswith("<") or filename.endswith("dataclasses.py")):
            return level
        frame = frame.f_back
        level += 1
    return level


def _seconds(name: str, value: float) -> float:
    """A duration in seconds, rounded to whole microseconds; still positive."""
    rounded = round(float(value), 6)
    if not rounded > 0:
        raise HeartbeatConfigurationError(f"heartbeat {name} must be at least 1 microsecond, got {value!r}")
    return rounded


def _check_positive(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HeartbeatConfigurationError(f"heartbeat {name} must be a number of seconds, got {value!r}")
    if not value > 0:
        raise HeartbeatConfigurationError(f"heartbeat {name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    """
    How one side beats: on or off, how often, and when it gives up.

    @ivar enabled: send heartbeats at all.
    @ivar interval: seconds between heartbeats.
    @ivar timeout: seconds an unanswered heartbeat may wait before the peer
        is declared gone, counted from the oldest unanswered heartbeat.
        None: never disconnect (latency is still measured).
    @ivar metadata_provider: server only; called once per tick.
    @ivar any_traffic_counts: treat any data received from the peer since
        the oldest unanswered heartbeat as a sign of life: for a peer that
        keeps sending while its answers are delayed.  It does not cover
        answers queued behind our own output (the peer then sends nothing);
        "progress counts as life" does, always on (L{HeartbeatTracker}).
    @ivar stall_grace: when our own reactor was stalled right before a
        timeout fired, give the peer one more exchange before disconnecting.
    @ivar ping_fallback: server only; connections whose client did not
        announce the C{heartbeat} capability (a plain WebSocket client, an
        old client) are checked with WebSocket ping/pong on the same
        schedule and timeout instead of going unchecked.

    Presets, as class attributes: L{PROXY_SAFE}, L{FAST_DETECTION}, L{MOBILE}.
    """

    #: For a path through a proxy with a 60 s idle limit (nginx's default
    #: proxy_read_timeout, AWS ALB, Heroku's 55 s): a beat every 20 s, well
    #: inside the idle limit, and a 45 s timeout that tolerates one lost beat.
    PROXY_SAFE: ClassVar[HeartbeatPolicy]
    #: Fast detection on a LAN or loopback: 1 s / 3 s.
    FAST_DETECTION: ClassVar[HeartbeatPolicy]
    #: Mobile clients: sparse beats (30 s / 90 s) to save battery and radio wake-ups.
    MOBILE: ClassVar[HeartbeatPolicy]

    enabled: bool = False
    interval: float = 30.0
    timeout: float | None = None
    metadata_provider: MetadataProvider | None = None
    any_traffic_counts: bool = False
    stall_grace: bool = True
    ping_fallback: bool = True

    def __post_init__(self) -> None:
        _check_positive("interval", self.interval)
        _check_positive("timeout", self.timeout)
        if self.interval is None:
            raise HeartbeatConfigurationError("heartbeat interval must be a number of seconds, got None")
        # Seconds are floats on the wire and in equality (every(5) == every(5.0)),
        # in whole microseconds so no float noise (0.6000000000000001) reaches the wire.
        object.__setattr__(self, "interval", _seconds("interval", self.interval))
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _seconds("timeout", self.timeout))
        if self.enabled and self.timeout is not None and self.timeout < self.interval:
            warnings.warn(
                f"heartbeat timeout {self.timeout}s is shorter than the interval "
                f"{self.interval}s: a single lost heartbeat or answer disconnects the peer; "
                f"a timeout of at least the interval tolerates one loss",
                HeartbeatConfigurationWarning,
                stacklevel=_user_stacklevel(),
            )

    @classmethod
    def every(cls, interval: float, timeout: float | None | Unset = UNSET) -> HeartbeatPolicy:
        """
        The one-call form: heartbeats every C{interval} seconds, timeout
        C{3 * interval} unless given.
        """
        _check_positive("interval", interval)
        if timeout is UNSET:
            timeout = interval * DEFAULT_TIMEOUT_FACTOR
        return cls(enabled=True, interval=interval, timeout=timeout)

    def overridden(
        self,
        enabled: bool | None = None,
        interval: float | None = None,
        timeout: float | None | Unset = UNSET,
        metadata_provider: MetadataProvider | None | Unset = UNSET,
    ) -> HeartbeatPolicy:
        """
        This policy with some settings replaced; an argument left out (or
        None for C{enabled}/C{interval}) keeps the current value.
        """
        changes: dict[str, Any] = {}
        if enabled is not None:
            changes["enabled"] = enabled
        if interval is not None:
            changes["interval"] = interval
        if timeout is not UNSET:
            changes["timeout"] = timeout
        if metadata_provider is not UNSET:
            changes["metadata_provider"] = metadata_provider
        return replace(self, **changes)


HeartbeatPolicy.PROXY_SAFE = HeartbeatPolicy(enabled=True, interval=20.0, timeout=45.0)
HeartbeatPolicy.FAST_DETECTION = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)
HeartbeatPolicy.MOBILE = HeartbeatPolicy(enabled=True, interval=30.0, timeout=90.0)


class HeartbeatVerdict(enum.Enum):
    """What L{HeartbeatTracker.check} decides about the peer."""

    #: nothing is waiting for an answer
    ALIVE = "alive"
    #: heartbeats are unanswered, but the deadline has not come
    WAITING = "waiting"
    #: the deadline passed right after our own event loop stalled: the
    #: answers may be unread in our socket buffer, so one more timeout
    GRACE = "grace"
    #: no answer within the timeout, but the peer is taking the data we
    #: queued for it (our heartbeat waits behind that data): alive, until
    #: a timeout passes without progress
    PROGRESSING = "progressing"
    #: no sign of life within the timeout of the oldest unanswered heartbeat
    TIMED_OUT = "timed-out"


#: Unanswered heartbeats whose send time a tracker remembers; older ones
#: still count as unanswered (the timeout keeps running from the oldest),
#: only their round trip can no longer be measured.
MAX_REMEMBERED_HEARTBEATS = 64

#: Timers may fire a hair early in float arithmetic; this much counts as on time.
_DEADLINE_SLACK = 1e-6

#: The least backlog (bytes still on our side), and the least of a half-received
#: message arriving between two samples, that counts as progress.  Heartbeats,
#: their answers and pings are a few dozen bytes: caught in flight by a sample
#: and acknowledged by a frozen peer's kernel a moment later, they must not look
#: like a peer taking its data.  A heartbeat behind less than this waits less
#: than a timeout on any link faster than 4 KiB per timeout.
MIN_PROGRESS_BYTES = 4096


class Traffic(NamedTuple):
    """
    What an adapter reads of its connection for "progress counts as life"
    (L{HeartbeatTracker.sample}).

    @ivar written: bytes handed to the transport toward the peer so far.
    @ivar queued: how many of them are still on our side (None: the
        transport cannot tell).
    @ivar received: bytes received from the peer so far.
    @ivar receiving: a message from the peer is half received now.
    """

    written: int
    queued: int | None
    received: int
    receiving: bool


class ProgressSamples:
    """
    Whether the data between us and a peer is still moving while a
    heartbeat waits for its answer: the "progress counts as life" half of
    L{HeartbeatTracker}, which holds the deadline back while it does.

    Progress counts as life: a heartbeat queued behind a backlog of our own
    output (a large result on a slow link) is answered only once the peer
    has taken everything before it.  So while such a backlog is being
    consumed the peer is alive: the adapter samples how much it wrote
    toward the peer and how much of that is still queued on our side
    (L{sample_output}); a sample that finds the peer took more than at the
    previous sample, while a backlog (L{MIN_PROGRESS_BYTES} or more) was
    queued then, is progress, and the deadline is at least C{timeout} after
    the last sample that showed it (L{progress_at}).  The adapters sample at least once per heartbeat
    interval while a heartbeat is unanswered, so a peer that stops
    consuming (frozen, gone) is dropped within interval + timeout of its
    last progress, which comes once every buffer between us is full.
    Without a backlog nothing is learned: a frozen peer's kernel still
    takes the few bytes of a heartbeat.

    The same holds the other way (L{sample_input}): the peer's answer waits
    behind the large message the peer is sending us; while that message is
    still coming in, the peer is alive.

    And what no sample shows -- our output already acknowledged by a proxy
    that ends the TCP connection (nginx) and held in its buffers, or sitting
    in a socket buffer we cannot read (the kernel's, outside Linux) -- the
    peer's own heartbeats stand in for (L{HeartbeatTracker.peer_heartbeat}): they travel the
    other way, unhindered, while our heartbeat waits behind output we wrote
    before it, and the peer checks its side itself.
    """

    __slots__ = ("progress_at", "_taken", "_backlog", "_received", "_receiving")

    def __init__(self) -> None:
        #: when a sample last showed the peer taking queued data (or its
        #: large message still coming in), or None
        self.progress_at: float | None = None
        # the most the peer had taken at any sample (None: no sample yet),
        # and what was still queued at the previous sample
        self._taken: int | None = None
        self._backlog = 0
        # the same for the peer's data coming in: most bytes received at a
        # sample, whether a message was half received at the previous one
        self._received: int | None = None
        self._receiving = False

    def sample_output(self, now: float, written: int, queued: int | None) -> bool:
        """
        A sample of our output toward the peer at C{now}: C{written} bytes
        handed to the transport so far (never decreasing), C{queued} of
        them still on our side (the transport's buffer and, where the OS
        tells, the socket's unacknowledged bytes; None: unknown, the
        sample is ignored).  Return True when it shows progress: the peer
        took more than at any earlier sample of this wait while a backlog
        of at least L{MIN_PROGRESS_BYTES} was queued at the previous one.
        L{progress_at} becomes C{now}.

        The consumption happened at some moment since the previous
        sample, so progress is seen up to one sampling gap late; the
        adapters sample at least once per interval while a heartbeat is
        unanswered, so a peer that stops consuming is still dropped within
        interval + timeout of its last progress.  The samples of one wait
        are compared with each other only: once every heartbeat is
        answered, the next sample starts afresh.

        An estimate of C{queued} may be too high (bytes added below us,
        such as TLS records, counted as queued) but must not be too low:
        too high only hides progress.
        """
        if queued is None:
            return False
        taken = written - queued
        best, backlog = self._taken, self._backlog
        self._backlog = queued
        if best is None or taken > best:
            self._taken = taken
            if best is not None and backlog >= MIN_PROGRESS_BYTES:
                self.progress_at = now
                return True
        return False

    def sample_input(self, now: float, received: int, receiving: bool) -> bool:
        """
        A sample of the peer's data coming in at C{now}: C{received} bytes
        received so far (never decreasing), and whether we are in the
        middle of a message (part of it received, the rest to come).
        Return True when it shows progress: we were in the middle of a
        message at the previous sample and at least L{MIN_PROGRESS_BYTES}
        arrived since -- the
        peer's own bulk data, behind which its answer to our heartbeat
        waits, is still coming.  As for L{sample_output}, L{progress_at}
        becomes C{now}.

        Complete small messages do not count (that is what
        C{any_traffic_counts} adds): a peer that keeps sending but never
        answers is not excused, one whose answer is stuck behind the large
        message it is sending is.
        """
        best, was_receiving = self._received, self._receiving
        self._receiving = receiving
        if best is None or received > best:
            self._received = received
            if best is not None and was_receiving and received - best >= MIN_PROGRESS_BYTES:
                self.progress_at = now
                return True
        return False

    def sample(self, now: float, traffic: Traffic) -> bool:
        """L{sample_output} and L{sample_input} from one reading of the connection; True when either shows progress."""
        out = self.sample_output(now, traffic.written, traffic.queued)
        return self.sample_input(now, traffic.received, traffic.receiving) or out

    def _forget_samples(self) -> None:
        """Nothing is waiting for an answer: the next wait's samples start afresh."""
        self.progress_at = None
        self._taken = None
        self._backlog = 0
        self._received = None
        self._receiving = False


class HeartbeatTracker(ProgressSamples):
    """
    Heartbeats one side sent, the answers it got, and the verdict: the one
    implementation of the liveness rule, used by the server's heartbeat, the
    client's heartbeat and the WebSocket-ping fallback alike.

    The rule: an answer to heartbeat I{k} proves the peer was alive when it
    answered, so it clears every heartbeat up to I{k}.  The timeout runs
    from the oldest heartbeat still unanswered; the peer is gone when no
    answer arrives within C{timeout} of it.  So answers may arrive after
    later heartbeats have left: any round trip shorter than the timeout is
    tolerated, whatever the interval.

    Progress counts as life: see L{ProgressSamples}, whose samples can hold
    the deadline back (L{deadline}).
    """

    __slots__ = ("newest_sequence", "timeout_started_at", "latency", "acks", "grace_until", "grace_used",
                 "timeouts_avoided", "_unanswered", "_answered_through", "_first_sequence", "_excused",
                 "_written_through")

    def __init__(self) -> None:
        super().__init__()
        self.newest_sequence: int | None = None
        #: when the running timeout started (the oldest unanswered send), or None
        self.timeout_started_at: float | None = None
        #: round-trip time of the newest answer (0.0 before any)
        self.latency = 0.0
        self.acks = 0
        #: a stall grace extends the deadline to at least this time
        self.grace_until = 0.0
        #: the grace was given and no answer came since
        self.grace_used = False
        #: deadlines passed with the peer making progress (each unanswered
        #: heartbeat counted once): the timeouts "progress counts as life" avoided
        self.timeouts_avoided = 0
        # (sequence, sent at) of unanswered heartbeats, oldest first
        self._unanswered: list[tuple[int, float, int | None]] = []
        self._answered_through: int | None = None
        self._first_sequence = 0
        # the current oldest unanswered heartbeat was already counted in timeouts_avoided
        self._excused = False
        # bytes written toward the peer before the newest answered heartbeat (each
        # unanswered one keeps its own, when the adapter said, in _unanswered)
        self._written_through = 0

    def sent(self, sequence: int, now: float, written: int | None = None) -> bool:
        """
        Record a send; return True when it started a new timeout.
        C{written}: the bytes written toward the peer before this heartbeat,
        for L{peer_heartbeat} (None: not known; the peer's heartbeats then
        never stand in for progress).
        """
        if self.newest_sequence is None:
            self._first_sequence = sequence
        self.newest_sequence = sequence
        unanswered = self._unanswered
        unanswered.append((sequence, now, written))
        if len(unanswered) > MAX_REMEMBERED_HEARTBEATS:
            del unanswered[0]
        if self.timeout_started_at is None:
            self.timeout_started_at = now
            return True
        return False

    def acknowledged(self, sequence: int, now: float) -> float | None:
        """
        Record an answer to heartbeat C{sequence}: it clears every
        heartbeat up to it.  Return its round trip, or None when it clears
        nothing (a duplicate, an answer to a heartbeat never sent, or to one
        too old to remember).
        """
        newest = self.newest_sequence
        if newest is None or sequence > newest or sequence < self._first_sequence:
            return None
        through = self._answered_through
        if through is not None and sequence <= through:
            return None
        self._answered_through = sequence
        unanswered = self._unanswered
        cleared = 0
        sent_at: float | None = None
        for seq, at, written in unanswered:
            if seq > sequence:
                break
            cleared += 1
            if seq == sequence:
                sent_at = at
            if written is not None and written > self._written_through:
                self._written_through = written
        if cleared:
            del unanswered[:cleared]
        self.timeout_started_at = unanswered[0][1] if unanswered else None
        self.grace_used = False
        self._excused = False
        if not unanswered:
            self._forget_samples()
        self.acks += 1
        if sent_at is None:
            return None
        self.latency = now - sent_at
        return self.latency

    def heard_from(self, at: float) -> None:
        """
        Any other sign of life at C{at} ("any traffic counts"): clears the
        heartbeats sent up to then, without measuring a round trip.
        """
        unanswered = self._unanswered
        cleared = 0
        for _, sent_at, written in unanswered:
            if sent_at > at:
                break
            cleared += 1
            if written is not None and written > self._written_through:
                self._written_through = written
        if cleared:
            del unanswered[:cleared]
        if self.timeout_started_at is not None and self.timeout_started_at <= at:
            self.timeout_started_at = unanswered[0][1] if unanswered else None
            self.grace_used = False
            self._excused = False
            if not unanswered:
                self._forget_samples()

    def peer_heartbeat(self, now: float) -> bool:
        """
        The peer's own heartbeat arrived at C{now}.  Return True, and make
        C{now} the latest progress (L{progress_at}), when our oldest
        unanswered heartbeat was written after at least
        L{MIN_PROGRESS_BYTES} more output than the newest answered one: our
        heartbeat may be waiting behind that output in buffers no sample
        sees (a proxy's, a kernel's we cannot read), while the peer's
        heartbeat, travelling the other way, shows the peer runs and reaches
        us.  The peer checks on its side that our data keeps arriving.
        Without such output a peer's heartbeats never excuse an unanswered
        one of ours (nothing can be holding ours up).
        """
        unanswered = self._unanswered
        if not unanswered:
            return False
        written = unanswered[0][2]
        if written is None or written - self._written_through < MIN_PROGRESS_BYTES:
            return False
        self.progress_at = now
        return True

    def deadline(self, timeout: float | None) -> float | None:
        """When the peer is declared gone unless an answer comes (None: never)."""
        started = self.timeout_started_at
        if started is None or timeout is None:
            return None
        deadline = started + timeout
        progress = self.progress_at
        if progress is not None and progress + timeout > deadline:
            deadline = progress + timeout
        return deadline if deadline > self.grace_until else self.grace_until

    def check(
        self, now: float, policy: HeartbeatPolicy, last_received: float, last_stall_at: float | None
    ) -> HeartbeatVerdict:
        """
        The verdict at C{now}, under C{policy} (its timeout, C{any_traffic_counts}
        and C{stall_grace}), and the peer's progress (L{sample_output}).

        @param last_received: when anything last arrived from the peer.
        @param last_stall_at: when our own event loop was last seen stalled
            (L{StallDetector.last_stall_at}).
        """
        started = self.timeout_started_at
        if started is None or policy.timeout is None:
            return HeartbeatVerdict.ALIVE
        if policy.any_traffic_counts and last_received >= started:
            self.heard_from(last_received)
            started = self.timeout_started_at
            if started is None:
                return HeartbeatVerdict.ALIVE
        deadline = self.deadline(policy.timeout)
        assert deadline is not None
        if now < deadline - _DEADLINE_SLACK:
            if now < max(started + policy.timeout, self.grace_until) - _DEADLINE_SLACK:
                return HeartbeatVerdict.WAITING
            # Only the peer's progress holds the deadline back.
            if not self._excused:
                self._excused = True
                self.timeouts_avoided += 1
            return HeartbeatVerdict.PROGRESSING
        if policy.stall_grace and not self.grace_used and last_stall_at is not None and last_stall_at > started:
            # Our own loop was stalled while we waited: the answers may be
            # sitting unread in the socket buffer.  One more timeout first.
            self.grace_used = True
            self.grace_until = now + policy.timeout
            return HeartbeatVerdict.GRACE
        return HeartbeatVerdict.TIMED_OUT

    @property
    def unanswered(self) -> int:
        """How many heartbeats this tracker remembers as unanswered."""
        return len(self._unanswered)

    def stop(self) -> None:
        """Forget every heartbeat (unregistered, or closing)."""
        self.timeout_started_at = None
        self.newest_sequence = None
        self._answered_through = None
        self._unanswered.clear()
        self.grace_until = 0.0
        self.grace_used = False
        self._excused = False
        self._forget_samples()


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """
    Estimated offset of the server's clock to ours.

    C{server_time = local_time + offset}, within +/- C{error} seconds.
    """

    offset: float
    error: float
    round_trip: float


class ClockSync:
    """
    NTP-style estimate of the server's clock from heartbeat exchanges.

    Each exchange gives four times: t0 (we sent, our clock), t1 = t2 (the
    server received and answered, its clock), t3 (we received, our clock).
    Offset = t1 - (t0 + t3) / 2 with error <= (t3 - t0) / 2.  Of the last
    C{window} samples we keep the one with the lowest round trip: queueing
    delay only ever adds to the round trip, so the fastest exchange is the
    most symmetric one.
    """

    def __init__(self, window: int = 8) -> None:
        self._samples: deque[ClockOffset] = deque(maxlen=window)
        self.best: ClockOffset | None = None

    def add(self, t0: float, t1: float, t3: float) -> ClockOffset:
        round_trip = max(t3 - t0, 0.0)
        sample = ClockOffset(t1 - (t0 + t3) / 2.0, round_trip / 2.0, round_trip)
        self._samples.append(sample)
        self.best = min(self._samples, key=lambda s: s.round_trip)
        return sample


def utc_from_us(microseconds: int) -> datetime:
    """An aware UTC datetime from microseconds since the epoch."""
    return datetime.fromtimestamp(microseconds / 1_000_000, tz=UTC)


class StallDetector:
    """
    Tells whether our own event loop was stalled recently.

    A timer that fires late by more than C{threshold} seconds means the
    loop could not run: answers from the peer may be sitting unread in the
    socket buffer.  Feed it every timer firing with the time it was due.
    """

    def __init__(self, threshold: float = 0.25) -> None:
        self.threshold = threshold
        self.last_stall_at: float | None = None
        self.last_lag = 0.0
        self.max_lag = 0.0
        #: timers that fired later than C{threshold}
        self.stalls = 0

    def observe(self, due: float, now: float) -> float:
        """Record a timer that was due at C{due} and ran at C{now}; return its lag."""
        lag = now - due
        self.last_lag = lag
        if lag > self.max_lag:
            self.max_lag = lag
        if lag > self.threshold:
            self.last_stall_at = now
            self.stalls += 1
        return lag

    def stalled_since(self, started_at: float) -> bool:
        """
        True when a stall ended after C{started_at}: a timeout window that
        began then overlapped a stall, so the peer's answers may be unread.
        """
        return self.last_stall_at is not None and self.last_stall_at > started_at

