"""
Twisted-side heartbeat timers.

L{ServerHeartbeatScheduler}: one C{LoopingCall} per heartbeat configuration,
shared by every connection using it.  Each tick encodes the heartbeat once
and writes the same prepared frame to every member.  Timeouts cost one
C{callLater} per tick for the whole configuration, not one per connection:
every member whose timeout starts at a tick starts it at the same instant,
so they share one deadline; acknowledging just clears a field (no timer is
cancelled).  When the deadline fires, members whose timeout still runs from
that instant have timed out.

The client's own heartbeat is per connection ("wait the interval, send",
timeout on C{callLater}) and lives in L{twisted_hub._client.HubClientProtocol}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ._connection import to_us
from ._heartbeat import HeartbeatPolicy, StallDetector
from ._wire import ServerHeartbeat, encode

if TYPE_CHECKING:
    from autobahn.websocket.protocol import PreparedMessage


class HeartbeatMember(Protocol):
    """What the scheduler needs from a server connection."""

    connection_id: str
    heartbeat_grace_used: bool

    @property
    def heartbeat_tracker(self) -> Any: ...

    @property
    def last_received(self) -> float: ...

    def send_prepared(self, prepared: PreparedMessage) -> None: ...

    def heartbeat_timed_out(self) -> None: ...


class ServerHeartbeatScheduler:
    """Beats for every connection sharing one L{HeartbeatPolicy}."""

    log = Logger()

    def __init__(
        self,
        policy: HeartbeatPolicy,
        clock: IReactorTime,
        prepare: Callable[[bytes], PreparedMessage],
        stall_detector: StallDetector,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._prepare = prepare
        self.stall = stall_detector
        self.members: dict[str, HeartbeatMember] = {}
        #: one sequence for every connection of this configuration
        self.sequence = 0
        #: answers to the newest heartbeat since the last tick (logged per tick)
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
                "heartbeat timer started: interval={interval}s timeout={timeout}s",
                interval=self.policy.interval,
                timeout=self.policy.timeout,
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
        metadata = None
        provider = self.policy.metadata_provider
        if provider is not None:
            try:
                metadata = provider()
            except Exception:
                self.log.failure("heartbeat metadata provider failed; sending no metadata")
        prepared = self._prepare(encode(ServerHeartbeat(sequence, to_us(now), metadata)))
        started: list[HeartbeatMember] = []
        for member in list(self.members.values()):
            member.send_prepared(prepared)
            if member.heartbeat_tracker.sent(sequence, now):
                started.append(member)
        self.log.debug(
            "heartbeat {sequence} sent to {count} connections; {acknowledged} acknowledged since the last one",
            sequence=sequence, count=len(self.members), acknowledged=self.acknowledged,
        )
        self.acknowledged = 0
        if started and self.policy.timeout is not None:
            self._schedule_check(started, now)

    def _schedule_check(self, members: list[HeartbeatMember], started_at: float) -> None:
        timeout = self.policy.timeout
        assert timeout is not None
        due = started_at + timeout

        def check() -> None:
            self._checks.discard(call)
            self._check(members, started_at, due)

        call = self.clock.callLater(timeout, check)
        self._checks.add(call)

    def _check(self, members: list[HeartbeatMember], started_at: float, due: float) -> None:
        now = self.clock.seconds()
        self.stall.observe(due, now)
        stalled = self.policy.stall_grace and self.stall.stalled_since(started_at)
        graced: list[HeartbeatMember] = []
        for member in members:
            tracker = member.heartbeat_tracker
            if tracker.timeout_started_at != started_at or member.connection_id not in self.members:
                continue  # answered, unregistered or gone
            if self.policy.any_traffic_counts and member.last_received >= started_at:
                tracker.timeout_started_at = None  # alive; the next beat starts afresh
                continue
            if stalled and not member.heartbeat_grace_used:
                # Our own loop was stalled: answers may be unread in the socket
                # buffer.  One more exchange before we believe the peer is gone.
                member.heartbeat_grace_used = True
                tracker.timeout_started_at = now
                graced.append(member)
                self.log.info(
                    "heartbeat timeout of {id} deferred: our reactor was stalled "
                    "({lag:.3f}s late)",
                    id=member.connection_id,
                    lag=self.stall.max_lag,
                )
                continue
            self.log.debug("heartbeat timed out for {id}", id=member.connection_id)
            member.heartbeat_timed_out()
        if graced:
            self._schedule_check(graced, now)
