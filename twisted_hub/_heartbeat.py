"""
Heartbeat logic without I/O: policies, per-connection trackers, clock sync
and stall detection.  Every function takes the time explicitly; the Twisted
adapters own the timers.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

#: Timeout used when only an interval is given (Tank's rule: 3 x interval).
DEFAULT_TIMEOUT_FACTOR = 3.0


class HeartbeatConfigurationError(ValueError):
    """An interval or timeout that cannot work (zero, negative, not a number)."""


class HeartbeatConfigurationWarning(UserWarning):
    """A configuration that works but is likely to cause false timeouts."""


class MetadataProvider(Protocol):
    """
    Writes optional metadata bytes into every server heartbeat.

    Called once per heartbeat tick (not once per connection); the bytes are
    shared by every connection of the tick.  Return None to send no metadata.
    """

    def __call__(self) -> bytes | None: ...


_UNSET: object = object()


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
    @ivar any_traffic_counts: treat any inbound data received since the
        oldest unanswered heartbeat as a sign of life (useful when answers
        can queue behind bulk data).
    @ivar stall_grace: when our own reactor was stalled right before a
        timeout fired, give the peer one more exchange before disconnecting.
    """

    enabled: bool = False
    interval: float = 30.0
    timeout: float | None = None
    metadata_provider: MetadataProvider | None = None
    any_traffic_counts: bool = False
    stall_grace: bool = True

    def __post_init__(self) -> None:
        _check_positive("interval", self.interval)
        _check_positive("timeout", self.timeout)
        if self.interval is None:
            raise HeartbeatConfigurationError("heartbeat interval must be a number of seconds, got None")
        # Seconds are floats on the wire and in equality (every(5) == every(5.0)).
        object.__setattr__(self, "interval", float(self.interval))
        if self.timeout is not None:
            object.__setattr__(self, "timeout", float(self.timeout))
        if self.enabled and self.timeout is not None and self.timeout < self.interval:
            warnings.warn(
                f"heartbeat timeout {self.timeout}s is shorter than the interval "
                f"{self.interval}s: a single lost heartbeat or answer disconnects the peer; "
                f"a timeout of at least the interval tolerates one loss",
                HeartbeatConfigurationWarning,
                stacklevel=3,
            )

    @classmethod
    def every(cls, interval: float, timeout: float | None | object = _UNSET) -> HeartbeatPolicy:
        """
        The one-call form: heartbeats every C{interval} seconds, timeout
        C{3 * interval} unless given.
        """
        _check_positive("interval", interval)
        if timeout is _UNSET:
            timeout = interval * DEFAULT_TIMEOUT_FACTOR
        return cls(enabled=True, interval=interval, timeout=timeout)  # type: ignore[arg-type]

    def overridden(
        self,
        enabled: bool | None = None,
        interval: float | None = None,
        timeout: float | None | object = _UNSET,
        metadata_provider: MetadataProvider | None | object = _UNSET,
    ) -> HeartbeatPolicy:
        """
        This policy with some settings replaced; an argument left out (or
        None for C{enabled}/C{interval}) keeps the current value.
        """
        changes: dict[str, object] = {}
        if enabled is not None:
            changes["enabled"] = enabled
        if interval is not None:
            changes["interval"] = interval
        if timeout is not _UNSET:
            changes["timeout"] = timeout
        if metadata_provider is not _UNSET:
            changes["metadata_provider"] = metadata_provider
        return replace(self, **changes)  # type: ignore[arg-type]


#: Presets for a path through a proxy with a 60 s idle limit (nginx's
#: default proxy_read_timeout, AWS ALB, Heroku's 55 s): a beat well inside
#: the idle limit, and a timeout that tolerates one lost beat.
PROXY_SAFE = HeartbeatPolicy(enabled=True, interval=20.0, timeout=45.0)
#: Fast detection on a LAN or loopback.
FAST_DETECTION = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)
#: Mobile clients: sparse beats to save battery and radio wake-ups.
MOBILE = HeartbeatPolicy(enabled=True, interval=30.0, timeout=90.0)


class HeartbeatTracker:
    """
    Bookkeeping for the heartbeats one side sends and the answers it gets.

    The timeout runs from the oldest unanswered heartbeat: sending starts it
    unless it is already running, and only the answer to the newest
    heartbeat stops it.  So a timeout longer than the interval works.
    """

    __slots__ = ("newest_sequence", "newest_sent_at", "timeout_started_at", "latency", "acks")

    def __init__(self) -> None:
        self.newest_sequence: int | None = None
        self.newest_sent_at = 0.0
        #: when the running timeout started (the oldest unanswered send), or None
        self.timeout_started_at: float | None = None
        #: round-trip time of the last answered newest heartbeat (0.0 before any)
        self.latency = 0.0
        self.acks = 0

    def sent(self, sequence: int, now: float) -> bool:
        """Record a send; return True when it started a new timeout."""
        self.newest_sequence = sequence
        self.newest_sent_at = now
        if self.timeout_started_at is None:
            self.timeout_started_at = now
            return True
        return False

    def acknowledged(self, sequence: int, now: float) -> float | None:
        """
        Record an answer; return the round-trip time when it answers the
        newest heartbeat (which stops the timeout), else None.
        """
        if sequence != self.newest_sequence:
            return None
        self.latency = now - self.newest_sent_at
        self.timeout_started_at = None
        self.acks += 1
        return self.latency

    def stop(self) -> None:
        """Forget the running timeout (unregistered, or closing)."""
        self.timeout_started_at = None
        self.newest_sequence = None


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

    def observe(self, due: float, now: float) -> float:
        """Record a timer that was due at C{due} and ran at C{now}; return its lag."""
        lag = now - due
        self.last_lag = lag
        if lag > self.max_lag:
            self.max_lag = lag
        if lag > self.threshold:
            self.last_stall_at = now
        return lag

    def stalled_since(self, started_at: float) -> bool:
        """
        True when a stall ended after C{started_at}: a timeout window that
        began then overlapped a stall, so the peer's answers may be unread.
        """
        return self.last_stall_at is not None and self.last_stall_at > started_at

