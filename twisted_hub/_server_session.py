"""
One server connection, apart from how its bytes move: L{ServerSession}.

A session owns the sans-IO core (L{ServerConnection}), the connection's hub
instance and its L{CallDispatcher}, and makes every per-connection decision
of the server: what a received frame does, how calls are answered, client
results and their timeouts, heartbeat membership and its timeout, when and
how to close (through L{Lifecycle}), and the bookkeeping once the connection
is gone (groups, counts, logs, pending calls, hooks).  It reaches its
transport only through L{ServerTransport}, which L{HubServerProtocol}
implements for autobahn; another transport implements the same few methods
and copies no decision.  Timers come from the server's injected clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._auth import Authenticator, Credentials, User, refusal_of, run_authenticator, token_from_request
from ._backplane import Backplane
from ._backpressure import OutputBudget
from ._connection import (
    CallFailed,
    CallSucceeded,
    ConnectionState,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerConnection,
)
from ._dispatch import CallDispatcher, FilteredCallDispatcher
from ._errors import CallTimeoutError, ConnectionClosedError, DisconnectKind, DisconnectReason, HubError
from ._filters import ConnectionEvent
from ._heartbeat import HeartbeatPolicy, HeartbeatTracker, Traffic
from ._hub import ConnectionContext, Hub, HubRuntime, PreparedFrame
from ._liveness import ServerHeartbeatScheduler, ping_sequence
from ._logging import HUB_LOG_OBSERVER
from ._metrics import HeartbeatWindow, HubMetrics, RecentDisconnects
from ._ratelimit import LogRateLimiter, bounded_text, peer_field
from ._server_streams import PLAIN_RESULTS, ServerStreams
from ._session import TEXT_FRAME_CLOSE, Lifecycle, SessionState, close_for_frame_error
from ._wire import (
    HEARTBEAT_TIMEOUT_REASON,
    PING_TIMEOUT_REASON,
    TOKEN_EXPIRED_REASON,
    ClientHeartbeat,
    Close,
    CloseCode,
    ErrorCode,
    Invoke,
    MessageKind,
    Notify,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamItem,
    Token,
)

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

__all__ = ["ServerSession", "ServerTransport", "SessionHost"]

_log = Logger(observer=HUB_LOG_OBSERVER)
#: one info line per connection opened and closed (docs/operations.md), in a
#: namespace of its own so it can be filtered or shipped separately
_connection_log = Logger(namespace="twisted_hub.connections", observer=HUB_LOG_OBSERVER)


class ServerTransport(Protocol):
    """What a L{ServerSession} needs from the connection that carries it."""

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

    def queued_bytes(self) -> int | None:
        """
        Bytes written toward the client that are still on our side (the
        transport's buffers and the socket's unacknowledged bytes), or None
        when the transport cannot tell (L{twisted_hub._sendqueue}).
        """

    def receiving(self) -> tuple[int, bool]:
        """Bytes received from the client so far, and whether a message is half received now."""


class SessionHost(Protocol):
    """What a L{ServerSession} reads from its server (L{HubServerFactory}): settings, clock, shared state."""

    clock: IReactorTime
    max_message_size: int
    max_messages_per_frame: int
    max_pending_calls: int
    max_pending_bytes: int
    client_result_timeout: float
    hello_timeout: float
    debug: bool
    connection_count: int
    metrics: HubMetrics | None
    heartbeat_window: HeartbeatWindow
    recent_disconnects: RecentDisconnects
    backplane: Backplane
    authenticator: Authenticator | None
    authentication_timeout: float

    def scheduler_for(self, policy: HeartbeatPolicy) -> ServerHeartbeatScheduler: ...


#: the error code a refused fresh token is answered with, by the refusal's HTTP status
_TOKEN_ERRORS = {
    401: ErrorCode.UNAUTHENTICATED, 403: ErrorCode.FORBIDDEN, 503: ErrorCode.TIMEOUT, 500: ErrorCode.INTERNAL,
}


class ServerSession:
    """
    One hub connection on the server, from its routed upgrade request to
    its end.  Made when the request reached a hub (before C{on_connecting});
    L{opened} once the WebSocket is open, L{receive} for each message,
    L{transport_closed} once.

    @ivar hub: this connection's hub instance.
    @ivar lifecycle: where the connection stands and why it ends.
    @ivar output: the transport's unread-output count (its slow-consumer rule).
    """

    def __init__(
        self,
        transport: ServerTransport,
        host: SessionHost,
        runtime: HubRuntime[ServerSession],
        request: ConnectionRequest,
        output: OutputBudget,
    ) -> None:
        self.transport = transport
        # bound once: the fan-out calls one per member, every answer the other
        self._send_prepared = transport.send_prepared
        self._send_frame = transport.send_frame
        self.host = host
        self.runtime = runtime
        self.lifecycle = Lifecycle()
        self.output = output
        self.connection_id = host.backplane.new_connection_id()
        self.heartbeat_policy = runtime.heartbeat_policy
        self.heartbeat_scheduler: ServerHeartbeatScheduler | None = None
        #: checked with WebSocket pings: the client did not announce heartbeats
        self.heartbeat_by_ping = False
        self.ack_callback: Callable[[float], object] | None = None
        self.core: ServerConnection[Deferred[Any]] = ServerConnection(self.connection_id)
        self.core.max_messages_per_frame = host.max_messages_per_frame
        self._clock = host.clock
        self._max_message_size = host.max_message_size
        #: answers are held (not flushed) while this is above zero: one frame's handling, a batch
        self._holding = 0
        self._closed_waiters: list[Deferred[None]] = []
        self._hello_deadline: IDelayedCall | None = None
        #: created at the first log line about a peer mistake / a call answered with an error
        self._peer_log: LogRateLimiter | None = None
        self._call_log: LogRateLimiter | None = None
        self._opened_at = 0.0
        self.request = request
        #: the authenticator running for this connection's upgrade (cancelled if it goes away meanwhile)
        self._authenticating: Deferred[User] | None = None
        #: closes the connection when its user's token expires
        self._expiry: IDelayedCall | None = None
        #: the newest fresh token applied (answers to older ones apply nothing)
        self._token_sequence = 0
        self.streams = ServerStreams(self.core, self.flush, self.method_crashed, host.max_message_size, debug=host.debug)
        hub = runtime.make_hub()
        hub._runtime = runtime
        hub.connection = ConnectionContext(self, request)
        self.hub: Hub = hub
        filters = runtime.filters
        if filters is not None and filters.call is not None:
            self.dispatcher: CallDispatcher = FilteredCallDispatcher(
                hub, runtime.methods, self, concurrent=runtime.hub_class.concurrent,
                max_pending_calls=host.max_pending_calls, max_pending_bytes=host.max_pending_bytes,
                debug=host.debug, metrics=runtime.metrics, call_chain=filters.call, clock=host.clock,
            )
        else:
            self.dispatcher = CallDispatcher(
                hub, runtime.methods, self, concurrent=runtime.hub_class.concurrent,
                max_pending_calls=host.max_pending_calls, max_pending_bytes=host.max_pending_bytes,
                debug=host.debug, metrics=runtime.metrics, now=host.clock.seconds,
            )

    # -- what the hub layer reads (ConnectionControl) ---------------------------
    @property
    def is_open(self) -> bool:
        return self.core.state is ConnectionState.OPEN

    @property
    def connecting(self) -> bool:
        return self.lifecycle.state is SessionState.CONNECTING

    @property
    def heartbeat_latency(self) -> float:
        return self.core.heartbeat.latency

    @property
    def heartbeat_active(self) -> bool:
        return self.heartbeat_scheduler is not None

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why this connection ended, once it has (None while open)."""
        return self.lifecycle.ended

    @property
    def bytes_sent(self) -> int:
        """Bytes written to this client (read by the metrics)."""
        return self.output.bytes_sent

    @property
    def calls_in_progress(self) -> int:
        """Hub calls this connection is running or has queued."""
        return self.dispatcher.in_progress

    @property
    def bytes_in_progress(self) -> int:
        """Encoded size of the calls this connection is running (asynchronously) or has queued."""
        return self.dispatcher.pending_bytes

    def when_closed(self) -> Deferred[None]:
        """Fires once this connection has closed (now, if it has)."""
        waiter: Deferred[None] = Deferred()
        if self.lifecycle.closed:
            waiter.callback(None)
        else:
            self._closed_waiters.append(waiter)
        return waiter

    # -- authentication (docs/auth.md) --------------------------------------------
    def authenticate(self) -> Deferred[User] | None:
        """Run the server's authenticator on the upgrade request (None: the server has none)."""
        authenticator = self.host.authenticator
        if authenticator is None:
            return None
        token, source = token_from_request(self.request)
        credentials = Credentials(token, source, self.runtime.hub_class.hub_name, self.request, self._clock.seconds())
        running = run_authenticator(authenticator, credentials, self._clock, self.host.authentication_timeout)
        if not running.called:
            self._authenticating = running
        return running

    def authenticated(self, user: User) -> None:
        """The authenticator accepted the connection: this is its user."""
        self._authenticating = None
        self.hub.connection.user = user

    def _arm_expiry(self) -> None:
        """Close the connection when its user's token expires (a fresh token moves this)."""
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        user = self.hub.connection.user
        if user is None or user.expires_at is None:
            return
        self._expiry = self._clock.callLater(max(user.expires_at - self._clock.seconds(), 0.0), self._token_expired)

    def _token_expired(self) -> None:
        self._expiry = None
        _log.info("{id}: its access token expired and no fresh one came; closing", id=self.connection_id)
        self.close_with(CloseCode.TOKEN_EXPIRED, TOKEN_EXPIRED_REASON, DisconnectKind.TOKEN_EXPIRED)

    def _fresh_token(self, message: Token) -> None:
        """The client handed over a fresh token: authenticate it; the same user's replaces the old."""
        authenticator = self.host.authenticator
        assert authenticator is not None  # (the core takes Token only when we announced token-refresh)
        previous = self.hub.connection.user
        credentials = Credentials(
            message.token, "refresh", self.runtime.hub_class.hub_name, self.request, self._clock.seconds(), previous,
        )
        sequence = message.sequence
        what = f"a fresh token of {self.connection_id}"
        running = run_authenticator(authenticator, credentials, self._clock, self.host.authentication_timeout)
        running.addCallbacks(self._token_accepted, self._token_refused, callbackArgs=(sequence,), errbackArgs=(sequence, what))

    def _token_accepted(self, user: User, sequence: int) -> None:
        if self.lifecycle.closing_locally:
            return
        previous = self.hub.connection.user
        if previous is not None and user.id != previous.id:
            self._answer_token(sequence, ErrorCode.FORBIDDEN, "the fresh token is for another user")
            return
        if sequence > self._token_sequence:
            self._token_sequence = sequence
            self.hub.connection.user = user
            self._arm_expiry()
        self._answer_token(sequence, None, "")

    def _token_refused(self, failure: Failure, sequence: int, what: str) -> None:
        if self.lifecycle.closing_locally:
            return
        refusal = refusal_of(failure, what)
        code = _TOKEN_ERRORS.get(refusal.status, ErrorCode.UNAUTHENTICATED)
        _log.info("{id}: fresh token refused ({code}: {reason})", id=self.connection_id, code=code, reason=refusal.reason)
        self._answer_token(sequence, code, refusal.reason)

    def _answer_token(self, sequence: int, error: str | None, message: str) -> None:
        user = self.hub.connection.user
        self.core.token_result(sequence, user.expires_in(self._clock.seconds()) if user is not None else None, error, message)
        if not self._holding:
            self.flush()

    # -- opening --------------------------------------------------------------
    def opened(self) -> None:
        """The WebSocket is open: welcome the client, join the hub's connections, run C{on_connected}."""
        self.lifecycle.opened()
        runtime, host = self.runtime, self.host
        policy = self.heartbeat_policy
        user = self.hub.connection.user
        expires_in = user.expires_in(self._clock.seconds()) if user is not None else None
        refresh = host.authenticator is not None
        if policy.enabled:
            self.core.welcome(
                policy.interval, policy.timeout, self._max_message_size, token_refresh=refresh, expires_in=expires_in,
            )
        else:
            self.core.welcome(None, None, self._max_message_size, token_refresh=refresh, expires_in=expires_in)
        self.flush()
        self._arm_expiry()
        runtime.connections[self.connection_id] = self
        host.connection_count += 1
        self._opened_at = self._clock.seconds()
        if runtime.metrics is not None:
            runtime.metrics.connects.inc()
        _connection_log.info(
            "{hub} connection {id} opened from {peer}",
            hub=runtime.hub_class.hub_name, id=self.connection_id, peer=peer_field(self.transport.peer),
        )
        self._hello_deadline = self._clock.callLater(host.hello_timeout, self._no_hello)
        self._call_hook("on_connected")

    def _no_hello(self) -> None:
        self._hello_deadline = None
        _log.info("{id} sent no hello within {timeout}s; closing", id=self.connection_id, timeout=self.host.hello_timeout)
        self.close_with(CloseCode.HANDSHAKE_FAILED, "no hello", DisconnectKind.HANDSHAKE_FAILED)

    # -- receiving --------------------------------------------------------------
    def receive(self, payload: bytes, is_binary: bool) -> None:
        """One WebSocket message arrived.  Nothing is handled once this side decided to close."""
        if self.lifecycle.closing_locally:
            return
        if not is_binary:
            _log.info("text frame from {peer} ({id}); closing", peer=peer_field(self.transport.peer), id=self.connection_id)
            self.close_with(*TEXT_FRAME_CLOSE, DisconnectKind.PROTOCOL_ERROR)
            return
        core = self.core
        self._holding += 1
        try:
            now = self._clock.seconds()
            events = core.receive_frame(payload, now)
            metrics = self.host.metrics
            if metrics is not None:
                metrics.frame_messages.observe(core.last_frame_messages)
            # A call's size (for max_pending_bytes) is its frame's share.
            call_size = len(payload) // len(events) if len(events) > 1 else len(payload)
            for event in events:
                match event:
                    case Invoke() if event.kind == MessageKind.STREAM_INVOKE or event.streams:
                        self.dispatcher.receive(self.streams.received_call(event), call_size)
                    case Invoke() | Notify():
                        self.dispatcher.receive(event, call_size)
                    case StreamItem() | StreamEnd() | StreamCredit() | StreamCancel():
                        self.streams.receive(event)
                    case ClientHeartbeat():
                        core.answer_heartbeat(event, now)
                    case CallSucceeded():
                        event.token.callback(event.value)
                    case CallFailed():
                        error = event.error
                        event.token.errback(HubError(error.code, error.message, error.detail))
                    case HeartbeatAnswered():
                        self._heartbeat_answered(event)
                    case HandshakeCompleted():
                        self._handshake_completed()
                    case Token():
                        self._fresh_token(event)
                    case Close():
                        self.lifecycle.peer_closing(event.code, event.reason)
        except Exception as e:
            # a frame the core refused (docs/protocol.md section 6), or a bug of ours
            code, reason = close_for_frame_error(e)
            if code == CloseCode.POLICY_VIOLATION:
                _log.info(
                    "{peer} ({id}) sent {error}; closing with {code}",
                    peer=peer_field(self.transport.peer), id=self.connection_id, error=e, code=code,
                )
            elif code == CloseCode.PROTOCOL_ERROR:
                _log.info(
                    "protocol error from {peer} ({id}): {error}; closing",
                    peer=peer_field(self.transport.peer), id=self.connection_id, error=e,
                )
            else:
                _log.failure("unexpected error handling a frame from {id}", id=self.connection_id)
            self.close_with(code, reason, DisconnectKind.PROTOCOL_ERROR)
        finally:
            self._holding -= 1
            if not self._holding:
                self.flush()

    def _handshake_completed(self) -> None:
        if self._hello_deadline is not None:
            self._hello_deadline.cancel()
            self._hello_deadline = None
        policy = self.heartbeat_policy
        if not policy.enabled:
            return
        if self.core.peer_takes_heartbeats:
            self.heartbeat_by_ping = False
        elif policy.ping_fallback:
            # No connection goes unchecked: a client that does not speak our
            # heartbeat still answers WebSocket pings (RFC 6455 requires it).
            self.heartbeat_by_ping = True
        else:
            return
        self.heartbeat_scheduler = self.host.scheduler_for(policy)
        self.heartbeat_scheduler.add(self)

    # -- heartbeat member (ServerHeartbeatScheduler) ----------------------------
    @property
    def heartbeat_tracker(self) -> HeartbeatTracker:
        return self.core.heartbeat

    @property
    def last_received(self) -> float:
        return self.core.last_received

    def sample_progress(self, now: float) -> None:
        """
        Tell the heartbeat tracker how much of our output the client has
        taken and whether its own large message is still coming in
        (progress counts as life).
        """
        transport = self.transport
        received, receiving = transport.receiving()
        self.core.heartbeat.sample(now, Traffic(self.output.bytes_sent, transport.queued_bytes(), received, receiving))

    def heartbeat_timed_out(self) -> None:
        metrics = self.host.metrics
        if metrics is not None:
            metrics.heartbeat_timeouts.inc()
        if self.heartbeat_by_ping:
            _log.info("{id} answered no WebSocket ping in time; closing", id=self.connection_id)
            self.close_with(CloseCode.HEARTBEAT_TIMEOUT, PING_TIMEOUT_REASON, DisconnectKind.TIMED_OUT)
        else:
            _log.info("{id} answered no heartbeat in time; closing", id=self.connection_id)
            self.close_with(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON, DisconnectKind.TIMED_OUT)

    def send_ping(self, frame: bytes) -> None:
        """Send a WebSocket ping frame built once for many connections (urgent: ahead of held frames)."""
        if self.lifecycle.closing_locally or not self.transport.can_send:
            return
        if self.core.has_outgoing:
            self.flush()
        self.transport.send_raw(frame, True)

    def send_heartbeat(self, prepared: PreparedFrame) -> None:
        """Send the tick's heartbeat frame, prepared once for many connections (urgent: ahead of held frames)."""
        if self.lifecycle.closing_locally:
            return
        if self.core.has_outgoing:
            self.flush()
        if self._send_prepared(prepared, True):
            self.core.messages_sent += 1

    def pong(self, payload: bytes) -> None:
        """A WebSocket pong arrived: with the ping fallback, it answers a heartbeat."""
        if not self.heartbeat_by_ping or self.heartbeat_scheduler is None:
            return
        sequence = ping_sequence(payload)
        if sequence is None:
            return
        latency = self.core.heartbeat.acknowledged(sequence, self._clock.seconds())
        if latency is not None:
            self._heartbeat_answered(HeartbeatAnswered(sequence, latency))

    def _heartbeat_answered(self, event: HeartbeatAnswered) -> None:
        # No log event per ack (that costs ~5% of the server's heartbeat CPU,
        # docs/performance.md): the scheduler logs the count once per tick.
        scheduler = self.heartbeat_scheduler
        if scheduler is not None:
            scheduler.acknowledged += 1
        self.host.heartbeat_window.latencies.append(event.latency)
        metrics = self.host.metrics
        if metrics is not None:
            metrics.heartbeat_latency.observe(event.latency)
        callback = self.ack_callback
        if callback is not None:
            try:
                callback(event.latency)
            except Exception:
                _log.failure("heartbeat ack callback raised")

    def stop_heartbeat(self) -> None:
        """Stop heartbeats (and their timeout) for this connection."""
        scheduler = self.heartbeat_scheduler
        if scheduler is not None:
            self.heartbeat_scheduler = None
            scheduler.remove(self)

    # -- answering calls (CallAnswers: the dispatcher decides, see _dispatch.py) --
    def answer_result(self, call_id: int, method: str, value: Any) -> bool:
        if self.lifecycle.closing_locally:
            return True
        streams = self.streams
        if (streams.calls or type(value) not in PLAIN_RESULTS) and streams.involved(call_id, value):
            return streams.answer(call_id, method, value)
        problem = self.core.send_result(call_id, value, self._max_message_size)
        if problem is not None:
            _log.error(
                "result of {hub}.{method} (call {call_id} on {id}) not sent: {problem}; answered [internal]",
                hub=self.runtime.hub_class.hub_name, method=method, call_id=call_id, id=self.connection_id,
                problem=problem,
            )
        if not self._holding:
            self.flush()
        return problem is None

    def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        if self.lifecycle.closing_locally:
            return
        if self.streams.calls:
            self.streams.forget(call_id)
        self.core.send_error(call_id, code, message, detail)
        if not self._holding:
            self.flush()

    def peer_mistake(self, format: str, **fields: Any) -> None:
        """
        Log one line about something the peer got wrong, at most one line per
        connection per second (the line says how many were suppressed).
        """
        limiter = self._peer_log
        if limiter is None:
            limiter = self._peer_log = LogRateLimiter()
        suppressed = limiter.allow(self._clock.seconds())
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        _log.info(format, id=self.connection_id, suppressed=suppressed, **fields)

    def call_failed(self, format: str, **fields: Any) -> None:
        """
        Log one debug line about a call answered with an error the server
        chose (a L{HubError}, a refusal), at most one per connection per
        second (counted apart from L{peer_mistake}'s lines).
        """
        limiter = self._call_log
        if limiter is None:
            limiter = self._call_log = LogRateLimiter()
        suppressed = limiter.allow(self._clock.seconds())
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        _log.debug(format, id=self.connection_id, suppressed=suppressed, **fields)

    def method_crashed(self, method: str, failure: Failure) -> None:
        _log.failure(
            "hub method {hub}.{method} raised (on {id})", failure,
            hub=self.runtime.hub_class.hub_name, method=method, id=self.connection_id,
        )

    def hold_answers(self) -> None:
        self._holding += 1

    def release_answers(self) -> None:
        self._holding -= 1
        if not self._holding:
            self.flush()

    # -- client results ---------------------------------------------------------
    def invoke_client(
        self, method: str, args: list[Any], kwargs: dict[str, Any] | None, timeout: float | None
    ) -> Deferred[Any]:
        """Call a client receiver and wait for its result (see L{ConnectionContext.invoke})."""
        core = self.core
        if core.state is not ConnectionState.OPEN or self.lifecycle.closing_locally:
            reason = self.lifecycle.ended or self.lifecycle.decided or DisconnectReason(DisconnectKind.CONNECTION_LOST)
            return fail(ConnectionClosedError(reason))
        call_id = 0

        def cancel(d: Deferred[Any]) -> None:
            core.forget_call(call_id)

        deferred: Deferred[Any] = Deferred(cancel)
        call_id = core.invoke_client(deferred, method, args, kwargs)
        limit = self.host.client_result_timeout if timeout is None else timeout
        deferred.addTimeout(
            limit,
            self._clock,
            onTimeoutCancel=lambda value, seconds: Failure(
                CallTimeoutError(f"client did not answer {method!r} within {seconds}s")
            ),
        )
        if not self._holding:
            self.flush()
        return deferred

    # -- sending (HubConnection) -------------------------------------------------
    def write_message(self, payload: bytes) -> None:
        """Queue one encoded message; it leaves at the end of the current frame's handling."""
        if self.lifecycle.closing_locally:
            return
        if not self.core.queue_payload(payload):
            self._not_sent(len(payload), self.core.peer_max_message_size or 0)
            return
        if not self._holding:
            self.flush()

    def send_prepared(self, prepared: PreparedFrame) -> None:
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
        if self._send_prepared(prepared):
            core.messages_sent += 1

    def flush(self) -> None:
        """Send what the core queued, batched as the client allows."""
        core = self.core
        if not core.has_outgoing or not self.transport.can_send:
            return  # (closing, e.g. kicked inside a call: the transport refuses to send)
        send = self._send_frame
        for frame in core.urgent_frames_to_send():
            send(frame, True)
        for frame in core.frames_to_send(core.send_limit(self._max_message_size)):
            send(frame)

    def _not_sent(self, size: int, limit: int) -> None:
        _log.warn(
            "a {size}-byte message was not sent to {id}: over the {limit}-byte limit it announced",
            size=size, id=self.connection_id, limit=limit,
        )

    # -- closing -----------------------------------------------------------------
    def close_with(self, code: int, reason: str, kind: DisconnectKind) -> None:
        """
        Close this connection with a close code the client understands.  The
        first decision stands (L{Lifecycle}): a second close does nothing.
        The hub's CLOSE message leaves before the WebSocket close frame; on a
        heartbeat timeout the socket is closed without waiting for the
        presumably dead peer's reply.
        """
        if not self.lifecycle.close_locally(kind, code, reason):
            return
        if not self.transport.can_send:
            self.transport.abort()
            return
        core = self.core
        if core.state is not ConnectionState.CLOSED:
            core.send(Close(code, reason))
            self.flush()
            core.closing()
        self.transport.send_close(code, reason, code == CloseCode.HEARTBEAT_TIMEOUT)

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (a shutdown's stragglers)."""
        self.transport.abort()

    def slow_consumer(self) -> None:
        """
        The output budget refused a write (L{OutputBudget.take}): this
        client reads too slowly; the adapter drops it right after.
        """
        _log.warn(
            "{id} does not read its data ({size} bytes waiting, limit {limit}): disconnecting",
            id=self.connection_id, size=self.output.refused_at, limit=self.output.limit,
        )
        if self.lifecycle.close_locally(DisconnectKind.SLOW_CONSUMER, CloseCode.SLOW_CONSUMER, "outgoing buffer limit"):
            if self.runtime.metrics is not None:
                self.runtime.metrics.slow_consumer_closes.inc()

    def transport_closed(self, observed: DisconnectReason) -> DisconnectReason:
        """
        The transport is gone; C{observed} is what its closing handshake
        showed (used when neither side decided at the hub level).  Leave
        every group, count and log the disconnect, fail pending client
        results, run C{on_disconnected}, fire L{when_closed}.  Return the
        reason.  A connection that never opened (refused) only ends.
        """
        was = self.lifecycle.state
        reason = self.lifecycle.finish(observed)
        self.output.stopped = True
        authenticating, self._authenticating = self._authenticating, None
        if authenticating is not None and not authenticating.called:
            authenticating.cancel()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        if self._hello_deadline is not None:
            self._hello_deadline.cancel()
            self._hello_deadline = None
        runtime = self.runtime
        if was is SessionState.CONNECTING or runtime.connections.get(self.connection_id) is not self:
            self._fire_closed_waiters()
            return reason  # never opened (refused handshake), or already ended
        self.stop_heartbeat()
        runtime.groups.remove_everywhere(self)
        del runtime.connections[self.connection_id]
        self.host.connection_count -= 1
        runtime.traffic.retire(self)
        self._log_closed(reason)
        self.dispatcher.close()
        self.streams.closed(reason)
        # Client results still awaited were sent: the client may have run them.
        for deferred in self.core.closed():
            deferred.errback(ConnectionClosedError(reason, may_have_run=True))
        self._call_hook("on_disconnected", reason)
        self._fire_closed_waiters()
        if self._peer_log is not None and self._peer_log.suppressed:
            _log.info(
                "{id}: {suppressed} more lines about its mistakes were suppressed",
                id=self.connection_id, suppressed=self._peer_log.suppressed,
            )
        return reason

    def _fire_closed_waiters(self) -> None:
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _log_closed(self, reason: DisconnectReason) -> None:
        """Count a disconnect, remember it for the status page and log one line about it."""
        runtime = self.runtime
        now = self._clock.seconds()
        hub_name = runtime.hub_class.hub_name
        if runtime.metrics is not None:
            runtime.metrics.disconnects[reason.kind].inc()
        text = bounded_text(reason.message or "")
        self.host.recent_disconnects.add(now, hub_name, self.connection_id, reason.kind.value, reason.code, text)
        # "closed: normal (1000) bye; from ...", "closed: normal (1000); from ...", "closed: connection-lost; from ..."
        how = "{kind}" + (" ({code})" if reason.code is not None else "") + (" {reason}" if text else "")
        _connection_log.info(
            "{hub} connection {id} closed: " + how + "; from {peer} after {duration:.1f}s",
            hub=hub_name, id=self.connection_id, peer=peer_field(self.transport.peer), duration=now - self._opened_at,
            kind=reason.kind.value, code=reason.code, reason=text, locally=reason.locally,
        )

    def _call_hook(self, name: str, *args: Any) -> None:
        filters = self.runtime.filters
        chain = None if filters is None else filters.on_connected if name == "on_connected" else filters.on_disconnected
        if chain is None:
            result = maybeDeferred(getattr(self.hub, name), *args)
        else:
            result = chain(ConnectionEvent(self.hub, args[0] if args else None, self._clock))
        result.addErrback(lambda f: _log.failure("{hook} of {id} failed", f, hook=name, id=self.connection_id))
