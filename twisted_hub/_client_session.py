"""
The client's decisions, for every client adapter: L{ClientSession}.

The Twisted client (L{twisted_hub._client.HubClientProtocol}, over autobahn)
and the asyncio client (L{twisted_hub.aio.AsyncHubClient}, over websockets)
differ only in how bytes move, how timers run and how a result is waited
for.  Everything else happens here, once: what an incoming frame means
(results, errors, receiver calls, client-result requests, heartbeats, the
server's CLOSE), what a receiver method's outcome is answered with, when
our heartbeat has timed out and what that costs, how a protocol error
closes, and why the connection ended (L{twisted_hub._session.Lifecycle}).

No reactor and no event loop: time is passed in, and the adapter is reached
through the small L{ClientIO} interface.  Logging goes through
C{twisted.logger} (which imports no reactor); the asyncio client gives its
session a logger that forwards to the standard C{logging} module.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from twisted.logger import Logger
from twisted.python.failure import Failure

from ._connection import (
    CallFailed,
    CallSucceeded,
    ClientConnection,
    ConnectionState,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerHeartbeatReceived,
)
from ._errors import ConnectionClosedError, DisconnectKind, DisconnectReason, HandshakeError, HubError, kind_for_close
from ._heartbeat import ClockOffset, HeartbeatVerdict, StallDetector, Traffic, utc_from_us
from ._logging import HUB_LOG_OBSERVER
from ._ratelimit import LogRateLimiter, peer_text
from ._receivers import find_receiver_method
from ._session import TEXT_FRAME_CLOSE, Lifecycle, SessionState, close_for_frame_error
from ._wire import (
    CAP_TOKEN_REFRESH,
    HEARTBEAT_TIMEOUT_REASON,
    OUR_CAPABILITIES,
    ClientInvoke,
    Close,
    CloseCode,
    ErrorCode,
    ProtocolError,
    ReceiverCall,
    TokenResult,
    TooManyMessagesError,
)

if TYPE_CHECKING:
    from ._client import HubClientOptions

__all__ = ["ClientConnectionViews", "ClientHeartbeatEvent", "ClientIO", "ClientSession", "ServerHeartbeatEvent"]

TokenT = TypeVar("TokenT")
TokenT_contra = TypeVar("TokenT_contra", contravariant=True)

#: the client's log (the Twisted client's namespace, kept)
CLIENT_LOG = Logger(namespace="twisted_hub._client", observer=HUB_LOG_OBSERVER)


@dataclass(frozen=True, slots=True)
class ServerHeartbeatEvent:
    """A heartbeat from the server (MagicOnion's C{ServerHeartbeatEvent})."""

    sequence: int
    #: when the server sent it, an aware UTC datetime
    server_time: datetime
    #: bytes from the server's metadata provider, or None
    metadata: bytes | None


@dataclass(frozen=True, slots=True)
class ClientHeartbeatEvent:
    """The server answered our heartbeat (MagicOnion's C{ClientHeartbeatEvent})."""

    sequence: int
    #: full round trip, seconds
    round_trip: float
    #: the clock-offset sample this exchange gave
    clock: ClockOffset


class ClientIO(Protocol[TokenT_contra]):
    """What a client adapter does for its L{ClientSession}: moving bytes, timers, waiting."""

    def send_frames(self, frames: list[bytes], urgent: bool = False) -> None:
        """
        Send these binary frames, in order (nothing once the WebSocket is
        not open).  C{urgent} (heartbeats and answers to them): ahead of
        any frames the adapter holds back.
        """

    def send_close(self, code: int, reason: str, wait_for_peer: bool) -> None:
        """
        Send our close frame after what is queued.  C{wait_for_peer}: let the
        closing handshake finish; else close TCP once it is written (bounded),
        the peer being presumed gone.  Before the WebSocket is open: abort.
        """

    def call_succeeded(self, token: TokenT_contra, value: Any) -> None:
        """Our call (C{token}) got its result."""

    def call_failed(self, token: TokenT_contra, error: Exception) -> None:
        """Our call (C{token}) failed with C{error}."""

    def await_result(
        self, result: Awaitable[Any], on_result: Callable[[Any], object], on_error: Callable[[Failure], object],
    ) -> None:
        """Wait for a receiver method's awaitable result, then call back with its value or failure."""

    def handshake_done(self) -> None:
        """The hub handshake is done: whoever waits for the connection may go on."""

    def handshake_failed(self, error: HandshakeError) -> None:
        """The connection ended before the hub handshake was done."""

    def start_heartbeat(self, interval: float) -> None:
        """Call L{ClientSession.beat} every C{interval} seconds and L{ClientSession.check_heartbeat} at its deadlines."""

    def stop_heartbeat(self) -> None:
        """Stop those timers."""

    def disconnected(self, reason: DisconnectReason) -> None:
        """The connection ended (pending calls have failed): wake whoever waits for it."""

    def traffic(self) -> Traffic:
        """
        Bytes written toward the server and still queued on our side, bytes
        received and whether a message is half received: read while our
        heartbeat is unanswered ("progress counts as life").
        """

    def seconds(self) -> float:
        """The adapter's clock, seconds."""

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        """Call C{function} in C{delay} seconds; return what cancels that."""


def refresh_delay(expires_in: float) -> float:
    """
    When a client asks its provider for a fresh token, seconds from now,
    for a token that expires in C{expires_in}: a fifth of its lifetime
    before it expires, but never more than a minute before.
    """
    return max(expires_in - min(60.0, expires_in * 0.2), 0.0)


class ClientSession(Generic[TokenT]):
    """
    One client connection's state and decisions, whatever carries its bytes.

    The adapter feeds it frames (L{receive_frame}), calls (L{invoke},
    L{notify}), timer firings (L{beat}, L{check_heartbeat}), its own close
    decisions (L{disconnect}, L{abandon_handshake}, L{refused}) and the end
    of the transport (L{connection_lost}); the session answers through
    L{ClientIO}.  Call L{configure} before the WebSocket opens.
    """

    options: HubClientOptions

    def __init__(self, io: ClientIO[TokenT], log: Logger = CLIENT_LOG) -> None:
        self.io = io
        self.log = log
        self.core: ClientConnection[TokenT] = ClientConnection()
        self.lifecycle = Lifecycle()
        self.stall = StallDetector()
        #: when our next heartbeat is due (for stall detection)
        self.next_beat_due = 0.0
        self.receiver: object | None = None
        self.receiver_allowed: frozenset[str] | None = None
        #: the HTTP status and text of a refused handshake, if the adapter saw one
        self._refusal: tuple[int | None, str] | None = None
        self._heartbeat_running = False
        #: frames being handled: sending waits until the outermost one is done
        self._handling = 0
        #: one log line per second about the server's mistakes (unknown receiver methods)
        self._peer_log = LogRateLimiter()
        #: cancels the timer of the next token refresh
        self._cancel_refresh: Callable[[], object] | None = None
        #: when the server said the connection's token expires (our clock); None: never / unknown
        self.token_expires_at: float | None = None
        #: fresh tokens the server accepted on this connection
        self.tokens_refreshed = 0

    def configure(self, options: HubClientOptions, receiver: object | None, receiver_allowed: frozenset[str] | None) -> None:
        """
        The settings and the receiver object (and the names it may be called
        by, None: any public one).  Apart from the constructor because the
        Twisted adapter learns them from its factory only once connected.
        """
        self.options = options
        self.receiver = receiver
        self.receiver_allowed = receiver_allowed
        self.core.max_messages_per_frame = options.max_messages_per_frame
        if callable(options.access_token):
            # A provider can give fresh tokens: tell the server we can refresh.
            self.core.capabilities = (*OUR_CAPABILITIES, CAP_TOKEN_REFRESH)

    # -- state ---------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        """The hub handshake is done and the connection has not ended or begun closing."""
        return self.core.state is ConnectionState.OPEN and not self.lifecycle.closed

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why the connection ended (None while it lives)."""
        return self.lifecycle.ended

    def closed_error(self) -> ConnectionClosedError:
        """The error for a call made when the connection is not open."""
        reason = self.lifecycle.ended or DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "not connected")
        return ConnectionClosedError(reason)

    # -- sending -------------------------------------------------------------
    def opened(self) -> None:
        """The WebSocket is open: say hello."""
        self.core.hello(self.options.max_message_size)
        self.flush()

    def invoke(self, token: TokenT, method: str, args: list[Any], kwargs: dict[str, Any] | None) -> int:
        """
        Queue a call; return its id.

        @raise ConnectionClosedError: the connection is not open.
        @raise HubError: C{invalid-arguments}, the arguments cannot be encoded
            or are over the size limit (nothing is sent; the connection lives).
        """
        if not self.is_connected:
            raise self.closed_error()
        core = self.core
        try:
            call_id = core.invoke(token, method, args, kwargs, core.send_limit(self.options.max_message_size))
        except (TypeError, ValueError, OverflowError) as e:
            raise HubError(ErrorCode.INVALID_ARGUMENTS, f"{method}: {e}") from None
        if not self._handling:
            self.flush()
        return call_id

    def notify(self, method: str, args: list[Any], kwargs: dict[str, Any] | None) -> None:
        """Queue a call without a result; raise L{ConnectionClosedError} when not open."""
        if not self.is_connected:
            raise self.closed_error()
        self.core.notify(method, args, kwargs)
        if not self._handling:
            self.flush()

    def flush(self) -> None:
        """Hand what the core has queued to the adapter (after the frame being handled, if any)."""
        if self._handling or self.lifecycle.closed:
            return
        core = self.core
        urgent = core.urgent_frames_to_send()
        if urgent:
            self.io.send_frames(urgent, True)
        frames = core.frames_to_send(core.send_limit(self.options.max_message_size))
        if frames:
            self.io.send_frames(frames)

    # -- receiving -----------------------------------------------------------
    def receive_frame(self, payload: bytes, now: float, binary: bool = True) -> None:
        """One WebSocket message from the server, received at C{now}."""
        if self.lifecycle.closed:
            return
        if not binary:
            self.close_for_error(*TEXT_FRAME_CLOSE)
            return
        self._handling += 1
        try:
            for event in self.core.receive_frame(payload, now):
                match event:
                    case CallSucceeded():
                        self.io.call_succeeded(event.token, event.value)
                    case CallFailed():
                        error = event.error
                        self.io.call_failed(event.token, HubError(error.code, error.message, error.detail))
                    case ReceiverCall():
                        self._receiver_call(event, now)
                    case ServerHeartbeatReceived():
                        self._server_heartbeat(event)
                    case HeartbeatAnswered():
                        self._heartbeat_answered(event)
                    case ClientInvoke():
                        self._client_invoke(event)
                    case HandshakeCompleted():
                        self._handshake_completed(now)
                    case TokenResult():
                        self._token_answered(event, now)
                    case Close():
                        self.lifecycle.peer_closing(event.code, event.reason)
        except TooManyMessagesError as e:
            self.log.info("the server sent {error}; closing with {code}", error=e, code=CloseCode.POLICY_VIOLATION)
            self.close_for_error(*close_for_frame_error(e))
        except ProtocolError as e:
            self.log.info("protocol error from the server: {error}", error=e)
            self.close_for_error(*close_for_frame_error(e))
        except Exception as e:
            self.log.failure("unexpected error handling a frame from the server")
            self.close_for_error(*close_for_frame_error(e))
        finally:
            self._handling -= 1
            if not self._handling:
                self.flush()

    def _handshake_completed(self, now: float) -> None:
        self.lifecycle.opened()
        policy = self.options.heartbeat
        if policy is not None and policy.enabled and self.core.server_takes_heartbeats:
            self.next_beat_due = now + policy.interval
            self._heartbeat_running = True
            self.io.start_heartbeat(policy.interval)
            self.log.debug("client heartbeat timer started: interval={interval}s", interval=policy.interval)
        welcome = self.core.welcome
        if welcome is not None and welcome.expires_in is not None:
            self.token_expires_at = now + welcome.expires_in
            self._schedule_refresh(refresh_delay(welcome.expires_in))
        self.io.handshake_done()

    # -- fresh tokens (docs/auth.md) ---------------------------------------------
    def _schedule_refresh(self, delay: float) -> None:
        """Ask the token provider again in C{delay} seconds (if it can refresh and the server takes tokens)."""
        self._stop_refresh()
        if not callable(self.options.access_token) or not self.core.server_takes_tokens:
            return
        self._cancel_refresh = self.io.call_later(delay, self.refresh_token)

    def _stop_refresh(self) -> None:
        cancel, self._cancel_refresh = self._cancel_refresh, None
        if cancel is not None:
            cancel()

    def refresh_token(self) -> None:
        """
        Get a fresh token from the provider now and hand it to the server
        (called by the refresh timer; callable to refresh early).
        """
        self._cancel_refresh = None
        provider = self.options.access_token
        if not self.is_connected or not callable(provider) or not self.core.server_takes_tokens:
            return
        try:
            token = provider()
        except Exception:
            self._refresh_failed(Failure())
            return
        if inspect.isawaitable(token):
            self.io.await_result(token, self._send_token, self._refresh_failed)
        else:
            self._send_token(token)

    def _send_token(self, token: object) -> None:
        if not self.is_connected:
            return
        if not isinstance(token, str) or not token:
            self.log.warn("the access token provider gave no token ({token!r}); the connection keeps its old one",
                          token=type(token).__name__)
            self._retry_refresh()
            return
        self.core.send_token(token)
        self.flush()

    def _refresh_failed(self, failure: Failure) -> None:
        self.log.failure("the access token provider failed; the connection keeps its old token", failure)
        self._retry_refresh()

    def _token_answered(self, answer: TokenResult, now: float) -> None:
        self.token_expires_at = None if answer.expires_in is None else now + answer.expires_in
        if answer.error is None:
            self.tokens_refreshed += 1
            self.log.debug("fresh token accepted; it expires in {expires_in}s", expires_in=answer.expires_in)
            if answer.expires_in is not None:
                self._schedule_refresh(refresh_delay(answer.expires_in))
            else:
                self._stop_refresh()
            return
        self.log.warn("the server refused the fresh token: [{code}] {message}", code=answer.error, message=answer.message)
        self._retry_refresh()

    def _retry_refresh(self) -> None:
        """Try again in half the time the current token has left (none: give up; the server closes with 4005)."""
        if self.token_expires_at is None:
            return
        left = self.token_expires_at - self.io.seconds()
        if left > 1.0:
            self._schedule_refresh(left / 2)

    # -- receivers -----------------------------------------------------------
    def _receiver_method(self, name: str) -> Callable[..., Any] | None:
        """
        The receiver method the server may call by this name: a public
        callable of the receiver object and, when a receiver interface is
        given, one that the interface declares.
        """
        return find_receiver_method(self.receiver, name, self.receiver_allowed)

    def _receiver_call(self, call: ReceiverCall, now: float) -> None:
        function = self._receiver_method(call.method)
        if function is None:
            suppressed = self._peer_log.allow(now)
            if suppressed is not None:
                allowed = self.receiver_allowed
                declared = allowed is None or call.method.startswith("_") or call.method in allowed
                self.log.warn(
                    "the server called receiver method {method}, which the receiver {lacks}"
                    + (" ({suppressed} similar lines suppressed)" if suppressed else ""),
                    method=peer_text(call.method), lacks="lacks" if declared else "interface does not declare",
                    suppressed=suppressed,
                )
            return
        try:
            result = function(*call.args, **(call.kwargs or {}))
        except Exception:
            self.log.failure("receiver method {method} raised", method=call.method)
            return
        if inspect.isawaitable(result):
            method = call.method
            self.io.await_result(
                result, _ignore, lambda f: self.log.failure("receiver method {method} failed", f, method=method)
            )

    def _client_invoke(self, call: ClientInvoke) -> None:
        call_id = call.call_id
        function = self._receiver_method(call.method)
        if function is None:
            self.core.reply_error(call_id, ErrorCode.UNKNOWN_METHOD, f"the client has no method {peer_text(call.method)}")
            return
        try:
            result = function(*call.args, **(call.kwargs or {}))
        except Exception:
            self._client_invoke_failed(call_id, call.method, Failure())
            return
        if inspect.isawaitable(result):
            self.io.await_result(
                result, lambda value: self._replied(call_id, value),
                lambda failure: self._client_invoke_failed(call_id, call.method, failure),
            )
        else:
            self._replied(call_id, result)

    def _client_invoke_failed(self, call_id: int, method: str, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, HubError):
            self._reply_error(call_id, error.code, error.message, error.detail)
            return
        self.log.failure("receiver method {method} raised", failure, method=method)
        self._reply_error(call_id, ErrorCode.INTERNAL, "internal error")

    def _replied(self, call_id: int, value: Any) -> None:
        if self.is_connected:
            self.core.reply(call_id, value)
            self.flush()

    def _reply_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        if self.is_connected:
            self.core.reply_error(call_id, code, message, detail)
            self.flush()

    # -- heartbeats ----------------------------------------------------------
    def _server_heartbeat(self, event: ServerHeartbeatReceived) -> None:
        callback = self.options.on_server_heartbeat
        if callback is None:
            return
        message = event.message
        try:
            server_time = utc_from_us(message.server_time_us)
        except (OverflowError, ValueError, OSError):
            self.log.warn("server heartbeat time {us}us is out of range; callback skipped", us=message.server_time_us)
            return
        self._safely(callback, ServerHeartbeatEvent(message.sequence, server_time, message.metadata))

    def _heartbeat_answered(self, event: HeartbeatAnswered) -> None:
        self.log.debug("client heartbeat {sequence} answered in {rtt:.4f}s", sequence=event.sequence, rtt=event.latency)
        clock = event.clock
        if clock is None:
            return
        metrics = self.options.metrics
        if metrics is not None:
            metrics.answered(event.latency, clock.offset, clock.error)
        callback = self.options.on_heartbeat_response
        if callback is not None:
            self._safely(callback, ClientHeartbeatEvent(event.sequence, event.latency, clock))

    def beat(self, now: float) -> None:
        """The heartbeat timer fired: send our heartbeat (nothing once the connection is closing)."""
        policy = self.options.heartbeat
        assert policy is not None
        if self.lifecycle.state is not SessionState.OPEN:
            return
        self.stall.observe(self.next_beat_due, now)
        self.next_beat_due = now + policy.interval
        traffic = self.io.traffic()
        if self.core.heartbeat.timeout_started_at is not None:
            # An earlier beat is unanswered: is the server taking our data, or sending its own?
            self.core.heartbeat.sample(now, traffic)
        sequence, _ = self.core.send_heartbeat(now, traffic.written)
        self.log.debug("client heartbeat {sequence} sent", sequence=sequence)
        self.flush()

    def heartbeat_deadline(self) -> float | None:
        """When the oldest unanswered heartbeat times out (None: nothing to check)."""
        policy = self.options.heartbeat
        assert policy is not None
        return self.core.heartbeat.deadline(policy.timeout)

    def check_heartbeat(self, now: float, due: float | None) -> bool:
        """
        A heartbeat deadline (due at C{due}; None: the adapter already
        reported this wake-up's lateness to L{beat}) is checked at C{now}.
        False when checking is over: the server timed out (the connection is
        closing with 4001) or the connection is no longer open.
        """
        if self.lifecycle.state is not SessionState.OPEN:
            return False
        policy = self.options.heartbeat
        assert policy is not None
        if due is not None:
            self.stall.observe(due, now)
        last_stall_at = self.stall.last_stall_at if policy.stall_grace else None
        tracker = self.core.heartbeat
        if tracker.timeout_started_at is not None:
            tracker.sample(now, self.io.traffic())
        avoided = tracker.timeouts_avoided
        verdict = tracker.check(now, policy, self.core.last_received, last_stall_at)
        if verdict is HeartbeatVerdict.TIMED_OUT:
            self._heartbeat_timed_out(policy.timeout)
            return False
        if verdict is HeartbeatVerdict.GRACE:
            self.log.info("heartbeat timeout deferred: our event loop was stalled ({lag:.3f}s late)", lag=self.stall.max_lag)
        elif tracker.timeouts_avoided != avoided:
            self.log.debug("heartbeat unanswered past its timeout, but the data between us is moving: kept")
            if self.options.metrics is not None:
                self.options.metrics.heartbeat_timeouts_avoided.inc()
        return True

    def _heartbeat_timed_out(self, timeout: float | None) -> None:
        self.log.info("server heartbeat timed out after {timeout}s: closing with 4001", timeout=timeout)
        if not self.lifecycle.close_locally(
            DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "the server did not answer our heartbeat"
        ):
            return
        if self.options.metrics is not None:
            self.options.metrics.heartbeat_timeouts.inc()
        callback = self.options.on_heartbeat_timeout
        if callback is not None:
            self._safely(callback)
        self._stop_heartbeat()
        # Tell the server why (CLOSE, then the close frame 4001), then drop
        # without waiting for a reply from a server presumed gone.
        self.core.send(Close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON))
        self.flush()
        self.core.closing()
        self.io.send_close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON, False)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat_running:
            self._heartbeat_running = False
            self.io.stop_heartbeat()
            self.log.debug("client heartbeat timer stopped")

    # -- closing -------------------------------------------------------------
    def disconnect(self, reason: str) -> None:
        """The user closes normally (nothing happens when this side already decided)."""
        self._close_locally(DisconnectKind.NORMAL, CloseCode.NORMAL, reason)

    def close_for_error(self, code: int, reason: str) -> None:
        """Close for a frame we cannot handle (L{twisted_hub._session.close_for_frame_error})."""
        self._close_locally(DisconnectKind.PROTOCOL_ERROR, code, reason)

    def _close_locally(self, kind: DisconnectKind, code: int, reason: str) -> None:
        if self.lifecycle.close_locally(kind, code, reason):
            self.core.closing()
            self.io.send_close(code, reason, True)

    def websocket_failed(self, code: int, reason: str) -> bool:
        """
        The WebSocket layer refused what the server sent as it arrived and
        has sent close C{code} on its own: 1009 (a message over
        C{max_message_size}), 1002 (bad framing), 1007 (invalid UTF-8, seen
        on arrival by autobahn).  This side's decision, like one of the
        session's own: it is the reason (unless this side decided before),
        pending calls fail with it, heartbeats stop.

        True when it is this side's first decision: the adapter then closes
        TCP once the close frame is written (aborting it if that takes more
        than a second) without waiting for the server's answer, which could
        not be read anyway, the byte stream being lost past the refused
        frame (RFC 6455 section 7.1.7).
        """
        if not self.lifecycle.close_locally(kind_for_close(code, True), code, reason):
            return False
        self.log.info(
            "the server sent what our WebSocket layer refused: closing with {code} ({reason})", code=code, reason=reason
        )
        self._stop_heartbeat()
        self.core.closing()
        return True

    def abandon_handshake(self, stage: str) -> None:
        """Whoever waited for the handshake gave up on it (a timeout); the adapter drops the socket."""
        self.lifecycle.close_locally(DisconnectKind.HANDSHAKE_FAILED, None, f"handshake abandoned waiting for the {stage}")

    def refused(self, status: int | None, text: str) -> None:
        """The server refused the WebSocket upgrade (HTTP C{status}) or answered it wrongly."""
        self._refusal = (status, text)

    def connection_lost(self, observed: DisconnectReason, lost_text: str | None = None) -> DisconnectReason:
        """
        The transport is gone; C{observed} is what the closing handshake
        showed (L{twisted_hub._session.ended_reason}), C{lost_text} the
        transport's own words, for a handshake that never completed.  Fails
        the pending calls, tells the adapter and the user; return the reason.
        """
        lifecycle = self.lifecycle
        if lifecycle.ended is not None:
            return lifecycle.ended
        self._stop_heartbeat()
        self._stop_refresh()
        if self.core.welcome is None:
            status, text = self._refusal or (None, lost_text or "connection closed during the handshake")
            reason = lifecycle.finish_handshake(text)
            self.io.handshake_failed(HandshakeError(status, reason.message))
        else:
            reason = lifecycle.finish(observed)
        # Every pending call was handed to the connection: it may have run.
        error = ConnectionClosedError(reason, may_have_run=True)
        for token in self.core.closed():
            self.io.call_failed(token, error)
        self.io.disconnected(reason)
        if self.options.metrics is not None:
            self.options.metrics.disconnects.labels(reason.kind.value).inc()
        if self.options.on_disconnected is not None:
            self._safely(self.options.on_disconnected, reason)
        return reason

    def _safely(self, function: Callable[..., object], *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            self.log.failure("client callback {name} raised", name=getattr(function, "__name__", repr(function)))


def _ignore(result: object) -> None:
    """A receiver method's result: the server wants none."""


class ClientConnectionViews:
    """
    What both clients (Twisted and asyncio) tell about their connection,
    read from their L{ClientSession}: one implementation for both.
    """

    session: ClientSession[Any]

    def _now(self) -> float:
        raise NotImplementedError

    @property
    def core(self) -> ClientConnection[Any]:
        """The sans-IO core of this connection."""
        return self.session.core

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why the connection ended (None while it lives)."""
        return self.session.lifecycle.ended

    @property
    def stall(self) -> StallDetector:
        """How late our own timers ran (our event loop's stalls)."""
        return self.session.stall

    @property
    def connection_id(self) -> str:
        """The id the server gave this connection (in its WELCOME)."""
        welcome = self.session.core.welcome
        return welcome.connection_id if welcome else ""

    @property
    def is_connected(self) -> bool:
        """The hub handshake is done and the connection has not ended."""
        return self.session.is_connected

    @property
    def round_trip(self) -> float:
        """RTT of our newest answered heartbeat, seconds (0.0 before any)."""
        return self.session.core.heartbeat.latency

    @property
    def clock_offset(self) -> ClockOffset | None:
        """Best estimate of server clock - our clock, with its error bound."""
        return self.session.core.clock_sync.best

    def server_now(self) -> datetime:
        """
        The server's current time (aware UTC datetime), from our clock and
        the estimated offset; our own clock when no estimate exists yet.
        """
        now = self._now()
        best = self.session.core.clock_sync.best
        if best is not None:
            now += best.offset
        return datetime.fromtimestamp(now, tz=UTC)
