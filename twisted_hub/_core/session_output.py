"""
What one server connection sends, without I/O: L{SessionOutput}.

Answers to calls (the L{twisted_hub._twisted.dispatch.CallAnswers} a dispatcher
writes to), hub messages and frames prepared once for many connections, all
in order; answers are held while a frame (or a batch of queued calls) is
handled so that they leave together, then flushed as the client allows.  It
also keeps the two rate-limited log lines about a connection's calls (the
peer's mistakes, the errors the server chose).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .connection import ServerConnection
from .log import CoreLog
from .ratelimit import LogRateLimiter
from .replay_log import Broadcast
from .session import Lifecycle

__all__ = ["PreparedFrame", "ServerTransport", "SessionOutput"]


class PreparedFrame(Protocol):
    """A frame built once for many connections (autobahn's C{PreparedMessage}); C{payload} is the message."""

    @property
    def payload(self) -> bytes: ...


class ServerTransport(Protocol):
    """What a L{twisted_hub._core.server_session.ServerSession} needs from the connection that carries it."""

    @property
    def peer(self) -> str | None:
        """The client's address, for log lines."""

    @property
    def can_send(self) -> bool:
        """Frames can be sent: the WebSocket is open and no close has started."""

    def send_frame(self, payload: bytes, urgent: bool = False) -> None:
        """
        Send one binary WebSocket message; C{urgent} (a heartbeat or an
        answer to one): ahead of any frames the transport holds back.
        """

    def send_prepared(self, prepared: PreparedFrame, urgent: bool = False) -> bool:
        """Send a frame prepared once for many connections; False: it cannot send now (closing)."""

    def send_raw(self, data: bytes, urgent: bool = False) -> None:
        """Write bytes that are already a WebSocket frame (a ping built once for many)."""

    def send_close(self, code: int, reason: str, drop_after: bool) -> None:
        """
        Start the WebSocket closing handshake with C{code}; C{drop_after}:
        close the socket once the close frame is written, without waiting
        for the peer's reply.
        """

    def abort(self) -> None:
        """Drop the connection now."""

    def moved_away(self, code: int = 4006, reason: str = "session resumed elsewhere") -> None:
        """
        Its session resumed on a newer connection: forget the session and
        close with 4006 (C{session-moved}, docs/protocol.md section 10.5);
        or (C{code} 1001) this node stops and hands the session to another.
        """

    def queued_bytes(self) -> int | None:
        """
        Bytes written toward the client that are still on our side (the
        transport's buffers and the socket's unacknowledged bytes), or None
        when the transport cannot tell (L{twisted_hub._sendqueue}).
        """

    def receiving(self) -> tuple[int, bool]:
        """Bytes received from the client so far, and whether a message is half received now."""


class SessionOutput:
    """
    One connection's outgoing side: queueing into the sans-IO core, holding
    answers while a frame is handled, flushing to the transport.

    @ivar holding: answers are held (not flushed) while this is above zero.
    """

    __slots__ = (
        "transport", "_send_prepared", "_send_frame", "core", "lifecycle", "max_message_size", "connection_id", "hub_name",
        "_seconds", "_log", "holding", "peer_log", "_call_log",
    )

    def __init__(
        self,
        transport: ServerTransport,
        core: ServerConnection[Any],
        lifecycle: Lifecycle,
        max_message_size: int,
        connection_id: str,
        hub_name: str,
        seconds: Callable[[], float],
        log: CoreLog,
    ) -> None:
        self.transport = transport
        # bound once: the fan-out calls one per member, every answer the other
        self._send_prepared = transport.send_prepared
        self._send_frame = transport.send_frame
        self.core = core
        self.lifecycle = lifecycle
        self.max_message_size = max_message_size
        self.connection_id = connection_id
        self.hub_name = hub_name
        self._seconds = seconds
        self._log = log
        self.holding = 0
        #: created at the first log line about a peer mistake / a call answered with an error
        self.peer_log: LogRateLimiter | None = None
        self._call_log: LogRateLimiter | None = None

    # -- answering calls (CallAnswers: the dispatcher decides, see _dispatch.py) --
    def answer_result(self, call_id: int, method: str, value: Any) -> bool:
        if self.lifecycle.closing_locally:
            return True
        problem = self.core.send_result(call_id, value, self.max_message_size)
        if problem is not None:
            self._log.error(
                "result of {hub}.{method} (call {call_id} on {id}) not sent: {problem}; answered [internal]",
                hub=self.hub_name, method=method, call_id=call_id, id=self.connection_id, problem=problem,
            )
        if not self.holding:
            self.flush()
        return problem is None

    def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        if self.lifecycle.closing_locally:
            return
        self.core.send_error(call_id, code, message, detail)
        if not self.holding:
            self.flush()

    def peer_mistake(self, format: str, **fields: Any) -> None:
        """
        Log one line about something the peer got wrong, at most one line per
        connection per second (the line says how many were suppressed).
        """
        limiter = self.peer_log
        if limiter is None:
            limiter = self.peer_log = LogRateLimiter()
        suppressed = limiter.allow(self._seconds())
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        self._log.info(format, id=self.connection_id, suppressed=suppressed, **fields)

    def call_failed(self, format: str, **fields: Any) -> None:
        """
        Log one debug line about a call answered with an error the server
        chose (a L{HubError}, a refusal), at most one per connection per
        second (counted apart from L{peer_mistake}'s lines).
        """
        limiter = self._call_log
        if limiter is None:
            limiter = self._call_log = LogRateLimiter()
        suppressed = limiter.allow(self._seconds())
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        self._log.debug(format, id=self.connection_id, suppressed=suppressed, **fields)

    def hold_answers(self) -> None:
        self.holding += 1

    def release_answers(self) -> None:
        self.holding -= 1
        if not self.holding:
            self.flush()

    # -- sending (HubConnection) -------------------------------------------------
    def write_message(self, payload: bytes) -> None:
        """Queue one encoded message; it leaves at the end of the current frame's handling."""
        if self.lifecycle.closing_locally:
            return
        if not self.core.queue_payload(payload):
            self._not_sent(len(payload), self.core.peer_max_message_size or 0)
            return
        if not self.holding:
            self.flush()

    def send_prepared(self, prepared: Broadcast) -> None:
        """Send a frame prepared once for many connections (keeps order with queued messages)."""
        # The fan-out's hot path: once per member and broadcast.
        if self.lifecycle.closing_locally:
            return
        core = self.core
        limit = core.peer_max_message_size
        if limit is not None and len(prepared.payload) > limit:
            self._not_sent(len(prepared.payload), limit)
            return
        if core.has_outgoing:
            self.flush()
        link = core.resume
        if link is not None:
            kept = link.ledger.sent
            if kept.tail is prepared.after:
                kept.tail = prepared.mark  # the next entry of the log whose run it holds (replay_log.py)
            else:
                link.sent_broadcast(prepared)
        if self._send_prepared(prepared.frame):
            core.messages_sent += 1

    def rebind(self, transport: ServerTransport, lifecycle: Lifecycle) -> None:
        """
        Send through C{transport} from now on, in C{lifecycle}: a resumed
        session's new connection, or the stand-in of a detached one
        (docs/resumption.md).  The hub layer's bound methods stay valid.
        """
        self.transport = transport
        self._send_prepared = transport.send_prepared
        self._send_frame = transport.send_frame
        self.lifecycle = lifecycle

    def send_urgent_prepared(self, prepared: PreparedFrame) -> None:
        """Send a heartbeat frame prepared once for many connections, ahead of held frames."""
        if self.core.has_outgoing:
            self.flush()
        if self._send_prepared(prepared, True):
            self.core.messages_sent += 1

    def flush(self) -> None:
        """Send what the core queued, batched as the client allows."""
        core = self.core
        if not core.has_outgoing or not self.transport.can_send:
            return  # (closing, e.g. kicked inside a call: the transport refuses to send)
        send = self._send_frame
        for frame in core.urgent_frames_to_send():
            send(frame, True)
        for frame in core.frames_to_send(core.send_limit(self.max_message_size)):
            send(frame)

    def _not_sent(self, size: int, limit: int) -> None:
        self._log.warn(
            "a {size}-byte message was not sent to {id}: over the {limit}-byte limit it announced",
            size=size, id=self.connection_id, limit=limit,
        )
