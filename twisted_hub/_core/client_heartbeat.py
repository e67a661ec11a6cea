"""
A client's heartbeats (docs/heartbeat.md): when ours go out, when the
server has not answered in time and what that costs, and what the server's
heartbeats and answers mean to the user's callbacks and metrics:
L{ClientHeartbeat}, one unit of a L{twisted_hub._core.client_session.ClientSession}.

Sans-IO: time is passed in; the adapter runs the timers
(L{ClientIO.start_heartbeat}) and calls L{ClientHeartbeat.beat} and
L{ClientHeartbeat.check} when they fire.  The verdict itself is
L{twisted_hub._core.heartbeat.HeartbeatTracker.check}'s, the same rule the server
applies.
"""

from __future__ import annotations

from .client_common import ClientHeartbeatEvent, ServerHeartbeatEvent, SessionParts
from .connection import HeartbeatAnswered, ServerHeartbeatReceived
from .errors import DisconnectKind
from .heartbeat import HeartbeatVerdict, StallDetector, utc_from_us
from .session import SessionState
from .wire import HEARTBEAT_TIMEOUT_REASON, Close, CloseCode

__all__ = ["ClientHeartbeat"]


class ClientHeartbeat:
    """Our heartbeat on one connection: its schedule, its timeout verdict, the stalls of our own loop."""

    def __init__(self, session: SessionParts) -> None:
        self.session = session
        #: how late our own timers ran (our event loop's stalls)
        self.stall = StallDetector()
        #: when our next heartbeat is due (for stall detection)
        self.next_beat_due = 0.0
        self._running = False

    def start(self, now: float) -> None:
        """The hub handshake is done at C{now}: start beating, if our policy and the server say so."""
        session = self.session
        policy = session.options.heartbeat
        if policy is not None and policy.enabled and session.core.server_takes_heartbeats:
            self.next_beat_due = now + policy.interval
            self._running = True
            session.io.start_heartbeat(policy.interval)
            session.log.debug("client heartbeat timer started: interval={interval}s", interval=policy.interval)

    def stop(self) -> None:
        """Stop the adapter's heartbeat timers (if they run)."""
        if self._running:
            self._running = False
            self.session.io.stop_heartbeat()
            self.session.log.debug("client heartbeat timer stopped")

    # -- the server's heartbeats and answers ------------------------------------
    def server_heartbeat(self, event: ServerHeartbeatReceived) -> None:
        """A heartbeat from the server (already answered by the core): tell the user's callback."""
        session = self.session
        callback = session.options.on_server_heartbeat
        if callback is None:
            return
        message = event.message
        try:
            server_time = utc_from_us(message.server_time_us)
        except (OverflowError, ValueError, OSError):
            session.log.warn("server heartbeat time {us}us is out of range; callback skipped", us=message.server_time_us)
            return
        session.safely(callback, ServerHeartbeatEvent(message.sequence, server_time, message.metadata))

    def answered(self, event: HeartbeatAnswered) -> None:
        """The server answered our heartbeat: the metrics and the user's callback get the round trip and clock sample."""
        session = self.session
        session.log.debug("client heartbeat {sequence} answered in {rtt:.4f}s", sequence=event.sequence, rtt=event.latency)
        clock = event.clock
        if clock is None:
            return
        metrics = session.options.metrics
        if metrics is not None:
            metrics.answered(event.latency, clock.offset, clock.error)
        callback = session.options.on_heartbeat_response
        if callback is not None:
            session.safely(callback, ClientHeartbeatEvent(event.sequence, event.latency, clock))

    # -- our heartbeats ---------------------------------------------------------
    def beat(self, now: float) -> None:
        """The heartbeat timer fired: send our heartbeat (nothing once the connection is closing)."""
        session = self.session
        policy = session.options.heartbeat
        assert policy is not None
        if session.lifecycle.state is not SessionState.OPEN:
            return
        core = session.core
        self.stall.observe(self.next_beat_due, now)
        self.next_beat_due = now + policy.interval
        traffic = session.io.traffic()
        if core.heartbeat.timeout_started_at is not None:
            # An earlier beat is unanswered: is the server taking our data, or sending its own?
            core.heartbeat.sample(now, traffic)
        sequence, _ = core.send_heartbeat(now, traffic.written)
        session.log.debug("client heartbeat {sequence} sent", sequence=sequence)
        session.flush()

    def deadline(self) -> float | None:
        """When the oldest unanswered heartbeat times out (None: nothing to check)."""
        policy = self.session.options.heartbeat
        assert policy is not None
        return self.session.core.heartbeat.deadline(policy.timeout)

    def check(self, now: float, due: float | None) -> bool:
        """
        A heartbeat deadline (due at C{due}; None: the adapter already
        reported this wake-up's lateness to L{beat}) is checked at C{now}.
        False when checking is over: the server timed out (the connection is
        closing with 4001) or the connection is no longer open.
        """
        session = self.session
        if session.lifecycle.state is not SessionState.OPEN:
            return False
        policy = session.options.heartbeat
        assert policy is not None
        if due is not None:
            self.stall.observe(due, now)
        last_stall_at = self.stall.last_stall_at if policy.stall_grace else None
        tracker = session.core.heartbeat
        if tracker.timeout_started_at is not None:
            tracker.sample(now, session.io.traffic())
        avoided = tracker.timeouts_avoided
        verdict = tracker.check(now, policy, session.core.last_received, last_stall_at)
        if verdict is HeartbeatVerdict.TIMED_OUT:
            self._timed_out(policy.timeout)
            return False
        if verdict is HeartbeatVerdict.GRACE:
            session.log.info("heartbeat timeout deferred: our event loop was stalled ({lag:.3f}s late)", lag=self.stall.max_lag)
        elif tracker.timeouts_avoided != avoided:
            session.log.debug("heartbeat unanswered past its timeout, but the data between us is moving: kept")
            if session.options.metrics is not None:
                session.options.metrics.timeout_avoided()
        return True

    def _timed_out(self, timeout: float | None) -> None:
        session = self.session
        session.log.info("server heartbeat timed out after {timeout}s: closing with 4001", timeout=timeout)
        if not session.lifecycle.close_locally(
            DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "the server did not answer our heartbeat"
        ):
            return
        if session.options.metrics is not None:
            session.options.metrics.heartbeat_timed_out()
        callback = session.options.on_heartbeat_timeout
        if callback is not None:
            session.safely(callback)
        self.stop()
        # Tell the server why (CLOSE, then the close frame 4001), then drop
        # without waiting for a reply from a server presumed gone.
        session.core.send(Close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON))
        session.flush()
        session.core.closing()
        session.io.send_close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON, False)
