"""
One server connection's place in its heartbeat group, without I/O:
L{HeartbeatMembership}.

After the hub handshake a connection joins the shared heartbeat tick of
its policy (the adapter's L{twisted_hub._twisted.liveness.ServerHeartbeatScheduler},
reached through L{HeartbeatGroup}): with hub heartbeats when the client
announced them, else with WebSocket pings when the policy allows that
fallback, else not at all.  This unit is the tick's member: it sends what
the tick built once for many, samples the traffic that counts as life,
takes the answers (reporting their latency) and closes the connection when
the answers stop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .connection import HeartbeatAnswered
from .errors import DisconnectKind
from .heartbeat import HeartbeatPolicy, Traffic
from .session_output import PreparedFrame
from .wire import HEARTBEAT_TIMEOUT_REASON, PING_TIMEOUT_REASON, CloseCode

if TYPE_CHECKING:
    from .server_session import ServerSession

__all__ = ["HeartbeatGroup", "HeartbeatMembership"]


class HeartbeatGroup(Protocol):
    """A shared heartbeat tick (the adapter's scheduler, one per policy)."""

    acknowledged: int

    def add(self, member: HeartbeatMembership) -> None: ...

    def remove(self, member: HeartbeatMembership) -> None: ...


class HeartbeatMembership:
    """
    The heartbeat side of one L{ServerSession}.

    @ivar group: the tick this connection is a member of (None: not checked).
    @ivar heartbeat_by_ping: checked with WebSocket pings (the client did
        not announce heartbeats).
    @ivar ack_callback: the hub's callback for each answer's latency.
    """

    __slots__ = (
        "_session", "_output", "_lifecycle", "_out", "connection_id", "heartbeat_tracker", "group", "heartbeat_by_ping",
        "ack_callback",
    )

    def __init__(self, session: ServerSession[Any]) -> None:
        self._session = session
        # What the tick reads of every member: held directly, not through the session (the
        # tick walks every connection each interval; each hop costs).
        self._output = session.output
        self._lifecycle = session.lifecycle
        self._out = session.out
        self.connection_id = session.connection_id
        #: the connection's tracker (L{HeartbeatTracker}: the core's, for the connection's life)
        self.heartbeat_tracker = session.core.heartbeat
        self.group: HeartbeatGroup | None = None
        self.heartbeat_by_ping = False
        self.ack_callback: Callable[[float], object] | None = None

    def join(self, policy: HeartbeatPolicy, group_for: Callable[[HeartbeatPolicy], HeartbeatGroup]) -> None:
        """The hub handshake is done: join C{policy}'s tick, the way the client can be checked."""
        if not policy.enabled:
            return
        if self._session.core.peer_takes_heartbeats:
            self.heartbeat_by_ping = False
        elif policy.ping_fallback:
            # No connection goes unchecked: a client that does not speak our
            # heartbeat still answers WebSocket pings (RFC 6455 requires it).
            self.heartbeat_by_ping = True
        else:
            return
        self.group = group_for(policy)
        self.group.add(self)

    def leave(self) -> None:
        """Stop heartbeats (and their timeout) for this connection."""
        group = self.group
        if group is not None:
            self.group = None
            group.remove(self)

    # -- the tick's member (HeartbeatMember) --------------------------------------
    @property
    def last_received(self) -> float:
        return self._session.core.last_received

    @property
    def bytes_sent(self) -> int:
        """Bytes written toward the client so far (the tick's L{HeartbeatTracker.sent} records it per beat)."""
        return self._output.bytes_sent

    def sample_progress(self, now: float) -> None:
        """
        Tell the heartbeat tracker how much of our output the client has
        taken and whether its own large message is still coming in
        (progress counts as life).
        """
        session = self._session
        transport = session.transport
        received, receiving = transport.receiving()
        session.core.heartbeat.sample(now, Traffic(session.output.bytes_sent, transport.queued_bytes(), received, receiving))

    def heartbeat_timed_out(self) -> None:
        session = self._session
        session.observer.heartbeat_timed_out()
        if self.heartbeat_by_ping:
            session.log.info("{id} answered no WebSocket ping in time; closing", id=self.connection_id)
            session.close_with(CloseCode.HEARTBEAT_TIMEOUT, PING_TIMEOUT_REASON, DisconnectKind.TIMED_OUT)
        else:
            session.log.info("{id} answered no heartbeat in time; closing", id=self.connection_id)
            session.close_with(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON, DisconnectKind.TIMED_OUT)

    def send_ping(self, frame: bytes) -> None:
        """Send a WebSocket ping frame built once for many connections (urgent: ahead of held frames)."""
        session = self._session
        if session.lifecycle.closing_locally or not session.transport.can_send:
            return
        if session.core.has_outgoing:
            session.out.flush()
        session.transport.send_raw(frame, True)

    def send_heartbeat(self, prepared: PreparedFrame) -> None:
        """Send the tick's heartbeat frame, prepared once for many connections (urgent: ahead of held frames)."""
        if self._lifecycle.closing_locally:
            return
        self._out.send_urgent_prepared(prepared)

    # -- answers ------------------------------------------------------------------
    def pong(self, sequence: int | None, now: float) -> None:
        """A WebSocket pong echoing C{sequence} arrived: with the ping fallback, it answers a heartbeat."""
        if not self.heartbeat_by_ping or self.group is None or sequence is None:
            return
        latency = self._session.core.heartbeat.acknowledged(sequence, now)
        if latency is not None:
            self.answered(HeartbeatAnswered(sequence, latency))

    def answered(self, event: HeartbeatAnswered) -> None:
        # No log event per ack (that costs ~5% of the server's heartbeat CPU,
        # docs/performance.md): the group logs the count once per tick.
        group = self.group
        if group is not None:
            group.acknowledged += 1
        self._session.observer.heartbeat_answered(event.latency)
        callback = self.ack_callback
        if callback is not None:
            try:
                callback(event.latency)
            except Exception as e:
                self._session.log.failure("heartbeat ack callback raised", e)
