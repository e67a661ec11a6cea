"""
Twisted-side heartbeat timers for the server.

L{ServerHeartbeatScheduler}: one C{LoopingCall} per heartbeat configuration,
shared by every connection using it.  Each tick encodes the heartbeat once
and writes the same prepared frame to every member; members whose client did
not announce the C{heartbeat} capability get one WebSocket ping frame, also
built once per tick, and answer with a pong.

A member whose earlier heartbeat is still unanswered at a tick, and every
member whose deadline is checked, has its output sampled
(L{HeartbeatTracker.sample_output}): a client still taking the data queued
ahead of our heartbeat is alive ("progress counts as life"); members that
answered in time cost nothing more.

Timeouts cost one C{callLater} per tick for the whole configuration, not one
per connection: a tick's deadline (tick time + timeout) is the deadline of
every member whose oldest unanswered heartbeat is that tick's, and answering
just updates the member's L{HeartbeatTracker} (no timer is cancelled).  When
a deadline fires, each member's tracker gives the verdict
(L{HeartbeatTracker.check}, the rule shared with the client).

The client's own heartbeat is per connection and lives in
L{twisted_hub._twisted.client.HubClientProtocol}; it uses the same tracker and verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .._core.heartbeat import HeartbeatPolicy, HeartbeatTracker, HeartbeatVerdict, StallDetector
from .._core.wire import ServerHeartbeat, encode, to_us
from .._support.logging import HUB_LOG_OBSERVER

if TYPE_CHECKING:
    from autobahn.websocket.protocol import PreparedMessage


def ping_frame(sequence: int) -> bytes:
    """
    A server-to-client WebSocket ping frame (unmasked) whose payload is the
    heartbeat sequence as 8 big-endian bytes; the pong echoes it.
    """
    return b"\x89\x08" + (sequence & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


def ping_sequence(payload: bytes) -> int | None:
    """The heartbeat sequence a pong echoes, or None if it is not one of ours."""
    if len(payload) != 8:
        return None
    return int.from_bytes(payload, "big")


class HeartbeatMember(Protocol):
    """What the scheduler needs from a server connection."""

    connection_id: str
    #: True: this member is checked with WebSocket pings, not hub heartbeats
    heartbeat_by_ping: bool

    @property
    def heartbeat_tracker(self) -> HeartbeatTracker: ...

    @property
    def last_received(self) -> float: ...

    def send_heartbeat(self, prepared: PreparedMessage) -> None:
        """Send the tick's heartbeat frame, ahead of any frames held back."""

    def send_ping(self, frame: bytes) -> None: ...

    def sample_progress(self, now: float) -> None:
        """Sample the data moving to and from the client into the tracker (L{HeartbeatTracker.sample_output})."""

    @property
    def bytes_sent(self) -> int:
        """Bytes written toward the client so far (L{HeartbeatTracker.sent})."""

    def heartbeat_timed_out(self) -> None: ...


class ServerHeartbeatScheduler:
    """Beats for every connection sharing one L{HeartbeatPolicy}."""

    log = Logger(observer=HUB_LOG_OBSERVER)

    def __init__(
        self,
        policy: HeartbeatPolicy,
        clock: IReactorTime,
        prepare: Callable[[bytes], PreparedMessage],
        stall_detector: StallDetector,
        on_tick: Callable[[float, int, int, int], object] | None = None,
    ) -> None:
        self.policy = policy
        #: told (now, beats sent now, beats sent at the previous tick, answers
        #: since the previous tick) at each tick
        self.on_tick = on_tick
        self._sent_before = 0
        self.clock = clock
        self._prepare = prepare
        self.stall = stall_detector
        self.members: dict[str, HeartbeatMember] = {}
        #: one sequence for every connection of this configuration
        self.sequence = 0
        #: answers since the last tick (logged per tick)
        self.acknowledged = 0
        self._loop: LoopingCall | None = None
        self._next_due = 0.0
        self._checks: set[IDelayedCall] = set()

    def add(self, member: HeartbeatMember) -> None:
        self.members[member.connection_id] = member
        if self._loop is None:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._next_due = self.clock.seconds() + self.policy.interval
            self._loop.start(self.policy.interval, now=False)
            self.log.debug(
                "heartbeat timer started: interval {interval}s, timeout {timeout_text}",
                interval=self.policy.interval,
                timeout=self.policy.timeout,
                timeout_text="never" if self.policy.timeout is None else f"{self.policy.timeout:g}s",
            )

    def remove(self, member: HeartbeatMember) -> None:
        self.members.pop(member.connection_id, None)
        member.heartbeat_tracker.stop()
        if not self.members:
            self.stop()

    def stop(self) -> None:
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None
            self.log.debug("heartbeat timer stopped: interval={interval}s", interval=self.policy.interval)
        for call in self._checks:
            if call.active():
                call.cancel()
        self._checks.clear()

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.stall.observe(self._next_due, now)
        self._next_due = now + self.policy.interval
        self.sequence += 1
        sequence = self.sequence
        prepared: PreparedMessage | None = None
        ping: bytes | None = None
        for member in list(self.members.values()):
            tracker = member.heartbeat_tracker
            if tracker.timeout_started_at is not None:
                # An earlier beat is still unanswered: is the client taking
                # the data queued ahead of it?  (Members that answered cost
                # nothing here.)
                member.sample_progress(now)
            if member.heartbeat_by_ping:
                if ping is None:
                    ping = ping_frame(sequence)
                member.send_ping(ping)
            else:
                if prepared is None:
                    prepared = self._prepare(encode(ServerHeartbeat(sequence, to_us(now), self._metadata())))
                member.send_heartbeat(prepared)
            tracker.sent(sequence, now, member.bytes_sent)
        self.log.debug(
            "heartbeat {sequence} sent to {count} connections; {acknowledged} answers since the last one",
            sequence=sequence, count=len(self.members), acknowledged=self.acknowledged,
        )
        if self.on_tick is not None:
            self.on_tick(now, len(self.members), self._sent_before, self.acknowledged)
        self._sent_before = len(self.members)
        self.acknowledged = 0
        if self.members and self.policy.timeout is not None:
            self._schedule_check(self.policy.timeout)

    def _metadata(self) -> bytes | None:
        provider = self.policy.metadata_provider
        if provider is None:
            return None
        try:
            return provider()
        except Exception:
            # Logged once per tick (the provider runs once per tick); the beat still goes.
            self.log.failure("heartbeat metadata provider failed; sending no metadata")
            return None

    def _schedule_check(self, delay: float) -> None:
        due = self.clock.seconds() + delay

        def check() -> None:
            self._checks.discard(call)
            self._check(due)

        call = self.clock.callLater(delay, check)
        self._checks.add(call)

    def _check_progress_deadline(self, deadline: float) -> None:
        """
        Some members were kept by their progress until C{deadline}: make
        sure a check runs then.  Progress dated at a tick falls on a check
        that tick scheduled; progress dated at a check needs one more.
        """
        if any(abs(call.getTime() - deadline) < 1e-6 for call in self._checks):
            return
        self._schedule_check(max(deadline - self.clock.seconds(), 0.0))

    def _check(self, due: float) -> None:
        now = self.clock.seconds()
        self.stall.observe(due, now)
        policy = self.policy
        last_stall_at = self.stall.last_stall_at if policy.stall_grace else None
        graced = 0
        progressing_until: float | None = None
        # A check falls due at the same instant as a tick (due = a tick + timeout), and
        # the reactor runs the two in either order.  A wait that this instant's tick
        # began (no older heartbeat unanswered) has its own check, a timeout from now:
        # it is passed over here, as when the check runs first.  Otherwise every idle
        # member's progress was read (a syscall each) at every other tick for nothing.
        # (Only a wait this check cannot time out anyway: a timeout shorter than half
        # the interval has its own checks before this one.)
        assert policy.timeout is not None  # (checks are scheduled only with a timeout)
        began_now, timeout = due - policy.interval / 2, policy.timeout
        for member in list(self.members.values()):
            tracker = member.heartbeat_tracker
            started = tracker.timeout_started_at
            if started is None or (started > began_now and now < started + timeout - 1e-6):
                continue
            member.sample_progress(now)
            avoided = tracker.timeouts_avoided
            verdict = tracker.check(now, policy, member.last_received, last_stall_at)
            if verdict is HeartbeatVerdict.GRACE:
                graced += 1
            elif verdict is HeartbeatVerdict.PROGRESSING:
                if tracker.timeouts_avoided != avoided:
                    self.log.debug(
                        "heartbeat of {id} unanswered past its timeout, but the client is taking the data "
                        "queued for it: kept", id=member.connection_id,
                    )
                deadline = tracker.deadline(policy.timeout)
                if deadline is not None and (progressing_until is None or deadline < progressing_until):
                    progressing_until = deadline
            elif verdict is HeartbeatVerdict.TIMED_OUT and member.connection_id in self.members:
                self.log.debug("heartbeat timed out for {id}", id=member.connection_id)
                member.heartbeat_timed_out()
        if progressing_until is not None:
            self._check_progress_deadline(progressing_until)
        if graced:
            self.log.info(
                "heartbeat timeout of {count} connection(s) deferred: our reactor was stalled ({lag:.3f}s late)",
                count=graced, lag=self.stall.max_lag,
            )
            assert policy.timeout is not None
            self._schedule_check(policy.timeout)
