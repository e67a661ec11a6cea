"""
The client adapter: L{HubClientProtocol}, L{HubClientFactory} and L{connect}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import SplitResult, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectionResponse
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._autobahn import BoundedDropMixin, FastPathMixin, final_close_reason
from ._base_error import HubArgumentError
from ._connection import (
    CallFailed,
    CallSucceeded,
    ClientConnection,
    ConnectionState,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerHeartbeatReceived,
)
from ._deprecate import reactor_keyword_deprecated
from ._errors import (
    CallTimeoutError,
    ConnectionClosedError,
    ConnectTimeoutError,
    DisconnectKind,
    DisconnectReason,
    HandshakeError,
    HubError,
    kind_for_close,
)
from ._heartbeat import (
    ClockOffset,
    HeartbeatConfigurationError,
    HeartbeatPolicy,
    HeartbeatVerdict,
    StallDetector,
    _check_positive,
    utc_from_us,
)
from ._hub import receiver_methods
from ._metrics import ClientMetrics
from ._ratelimit import LogRateLimiter, peer_text
from ._receivers import find_receiver_method
from ._sentinel import UNSET, Unset
from ._wire import (
    HEARTBEAT_TIMEOUT_REASON,
    SUBPROTOCOL,
    ClientInvoke,
    Close,
    CloseCode,
    ErrorCode,
    ProtocolError,
    ReceiverCall,
    TooManyMessagesError,
    close_reason_bytes,
)

InterfaceT = TypeVar("InterfaceT")


class HubProxy:
    """
    Calls hub methods as attributes: C{proxy.join("lobby")} is
    C{client.call("join", "lobby")}.  Built by L{HubClientProtocol.proxy}.
    """

    __slots__ = ("_call", "_allowed")

    def __init__(self, call: Callable[..., Any], allowed: frozenset[str] | None) -> None:
        self._call = call
        self._allowed = allowed

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or (self._allowed is not None and name not in self._allowed):
            raise AttributeError(f"the hub interface has no method {name!r}")
        call = self._call

        def remote(*args: Any, **kwargs: Any) -> Any:
            return call(name, *args, **kwargs)

        remote.__name__ = name
        return remote


def make_proxy(call: Callable[..., Any], interface: type[InterfaceT] | None) -> InterfaceT:
    """A L{HubProxy} typed as C{interface} (whose public method names it allows)."""
    return cast(InterfaceT, HubProxy(call, receiver_methods(interface)))
_log = Logger()


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


@dataclass(frozen=True)
class HubClientOptions:
    """
    Client settings.

    @ivar heartbeat: our own heartbeat, the same L{HeartbeatPolicy} type the
        server takes (its C{metadata_provider} and C{ping_fallback} are
        server-only and ignored here).  None: off, the default; the
        server's heartbeats are answered either way.
    @ivar heartbeat_interval: shorthand for C{heartbeat}: seconds between
        our own heartbeats (None: off).
    @ivar heartbeat_timeout: shorthand: seconds without an answer before we
        declare the server gone (None: never; RTT and clock offset are
        still measured).
    @ivar on_server_heartbeat: called with a L{ServerHeartbeatEvent}.
    @ivar on_heartbeat_response: called with a L{ClientHeartbeatEvent}.
    @ivar on_heartbeat_timeout: called (no arguments) when our heartbeat
        times out, just before the connection is dropped.
    @ivar any_traffic_counts: shorthand: any data from the server since the
        oldest unanswered heartbeat counts as an answer.
    @ivar stall_grace: shorthand: when our own reactor was stalled right
        before the timeout fired, give the server one more exchange.
    @ivar call_timeout: default seconds a call may wait for its result
        (None: until the connection closes).
    @ivar max_message_size: largest message we accept, bytes.
    @ivar metrics: a L{ClientMetrics} to keep this client's Prometheus
        metrics in (round trip, clock offset and error, heartbeat timeouts,
        disconnects, reconnects); None: none kept.
    @ivar on_disconnected: called with the L{DisconnectReason} when the
        connection ends, whoever ended it (e.g. C{PEER_TIMED_OUT} when the
        server's heartbeat timed us out), so no one has to poll
        L{HubClientProtocol.wait_for_disconnect}.
    @ivar max_messages_per_frame: most messages one frame from the server may
        hold; over it none of them is handled and we close with 1008.
    """

    heartbeat_interval: float | None = None
    heartbeat_timeout: float | None = None
    on_server_heartbeat: Callable[[ServerHeartbeatEvent], object] | None = None
    on_heartbeat_response: Callable[[ClientHeartbeatEvent], object] | None = None
    on_heartbeat_timeout: Callable[[], object] | None = None
    any_traffic_counts: bool = False
    stall_grace: bool = True
    call_timeout: float | None = None
    max_message_size: int = 1024 * 1024
    max_messages_per_frame: int = 1024
    extra_headers: dict[str, str] = field(default_factory=dict)
    heartbeat: HeartbeatPolicy | None = None
    on_disconnected: Callable[[DisconnectReason], object] | None = None
    metrics: ClientMetrics | None = None

    def __post_init__(self) -> None:
        _check_positive("interval", self.heartbeat_interval)
        _check_positive("timeout", self.heartbeat_timeout)
        if self.max_messages_per_frame <= 0:
            raise ValueError("max_messages_per_frame must be positive")
        policy = self.heartbeat
        if policy is None:
            if self.heartbeat_interval is None:
                return
            policy = HeartbeatPolicy(
                enabled=True, interval=self.heartbeat_interval, timeout=self.heartbeat_timeout,
                any_traffic_counts=self.any_traffic_counts, stall_grace=self.stall_grace,
            )
            object.__setattr__(self, "heartbeat", policy)
        elif self.heartbeat_interval is not None and (
            (self.heartbeat_interval, self.heartbeat_timeout) != (policy.interval, policy.timeout)
            or (self.any_traffic_counts, self.stall_grace) != (policy.any_traffic_counts, policy.stall_grace)
        ):
            raise HeartbeatConfigurationError("give heartbeat= or the heartbeat_interval/heartbeat_timeout shorthands, not both")
        # The shorthand fields always mirror the policy in force.
        enabled = policy.enabled
        object.__setattr__(self, "heartbeat_interval", policy.interval if enabled else None)
        object.__setattr__(self, "heartbeat_timeout", policy.timeout if enabled else None)
        object.__setattr__(self, "any_traffic_counts", policy.any_traffic_counts)
        object.__setattr__(self, "stall_grace", policy.stall_grace)

    @classmethod
    def heartbeat_every(cls, interval: float, timeout: float | None | Unset = UNSET, **kwargs: Any) -> HubClientOptions:
        """The one-call form: beat every C{interval}s, timeout 3x interval unless given."""
        policy = HeartbeatPolicy.every(interval, timeout)
        return cls(heartbeat=policy, **kwargs)


class ClientConnectionViews:
    """
    What both clients (Twisted and asyncio) tell about their connection,
    read from the sans-IO core: one implementation for both.
    """

    core: ClientConnection[Any]
    disconnect_reason: DisconnectReason | None

    def _now(self) -> float:
        raise NotImplementedError

    @property
    def connection_id(self) -> str:
        """The id the server gave this connection (in its WELCOME)."""
        welcome = self.core.welcome
        return welcome.connection_id if welcome else ""

    @property
    def is_connected(self) -> bool:
        """The hub handshake is done and the connection has not ended."""
        return self.core.state is ConnectionState.OPEN and self.disconnect_reason is None

    @property
    def round_trip(self) -> float:
        """RTT of our newest answered heartbeat, seconds (0.0 before any)."""
        return self.core.heartbeat.latency

    @property
    def clock_offset(self) -> ClockOffset | None:
        """Best estimate of server clock - our clock, with its error bound."""
        return self.core.clock_sync.best

    def server_now(self) -> datetime:
        """
        The server's current time (aware UTC datetime), from our clock and
        the estimated offset; our own clock when no estimate exists yet.
        """
        now = self._now()
        best = self.core.clock_sync.best
        if best is not None:
            now += best.offset
        return datetime.fromtimestamp(now, tz=UTC)


class HubClientProtocol(ClientConnectionViews, FastPathMixin, BoundedDropMixin, WebSocketClientProtocol):  # type: ignore[misc]
    """
    One connection to one hub, as the client sees it.

    Get one from L{connect}.  C{call} returns a Deferred of the result;
    receiver methods of the factory's receiver object are called for the
    server's receiver calls.
    """

    factory: HubClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.core: ClientConnection[Deferred[Any]] = ClientConnection()
        #: fires with this protocol once the hub handshake is done; cancelling
        #: it (a connect timeout) abandons the handshake and closes the socket
        self.ready: Deferred[HubClientProtocol] = Deferred(self._abandon_handshake)
        self._disconnected: Deferred[DisconnectReason] | None = None
        self._waiters: list[Deferred[DisconnectReason]] = []
        self.disconnect_reason: DisconnectReason | None = None
        self._close_reason: DisconnectReason | None = None
        self._handling = 0
        self._heartbeat_loop: LoopingCall | None = None
        self._heartbeat_check: IDelayedCall | None = None
        self._next_beat_due = 0.0
        self.stall = StallDetector()
        self._handshake_status: tuple[int | None, str] | None = None
        self._abandoned_stage: str | None = None
        #: one log line per second about the server's mistakes (unknown receiver methods)
        self._peer_log = LogRateLimiter()

    # -- public API ----------------------------------------------------------
    def _now(self) -> float:
        return self.factory.clock.seconds()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Call a hub method; the Deferred fires with its result or a L{HubError}."""
        return self.invoke(method, list(args), kwargs or None)

    def invoke(
        self, method: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
        timeout: float | None | Unset = UNSET,
    ) -> Deferred[Any]:
        """L{call} with explicit argument containers and an optional timeout."""
        if not self.is_connected:
            return fail(ConnectionClosedError(self.disconnect_reason or self._not_open()))
        core = self.core
        call_id = 0

        def cancel(d: Deferred[Any]) -> None:
            core.forget_call(call_id)

        deferred: Deferred[Any] = Deferred(cancel)
        try:
            size_limit = core.send_limit(self.factory.options.max_message_size)
            call_id = core.invoke(deferred, method, args or [], kwargs, size_limit)
        except (TypeError, ValueError, OverflowError) as e:
            # Unencodable or oversized arguments: this call fails, the connection lives.
            return fail(HubError(ErrorCode.INVALID_ARGUMENTS, f"{method}: {e}"))
        limit = self.factory.options.call_timeout if timeout is UNSET else timeout
        if limit is not None:
            deferred.addTimeout(
                limit, self.factory.clock,
                onTimeoutCancel=lambda v, s: Failure(CallTimeoutError(f"{method!r} got no result within {s}s")),
            )
        if not self._handling:
            self._flush()
        return deferred

    def proxy(self, interface: type[InterfaceT] | None = None) -> InterfaceT:
        """
        The hub as an object: C{chat = client.proxy(ChatApi)}, then
        C{await chat.join("lobby", "ann")}.

        C{interface} is a class (typically a C{typing.Protocol}) declaring the
        hub's methods with C{Deferred[...]} return types: type checkers then
        check your calls, and calling a method it does not declare raises
        AttributeError before anything is sent.  Without one, any name goes.
        """
        return make_proxy(self.call, interface)

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call a hub method without waiting for (or getting) a result."""
        if not self.is_connected:
            raise ConnectionClosedError(self.disconnect_reason or self._not_open())
        self.core.notify(method, list(args), kwargs or None)
        if not self._handling:
            self._flush()

    def disconnect(self, reason: str = "") -> Deferred[DisconnectReason]:
        """Close normally; fires with the L{DisconnectReason} once closed."""
        waiter = self.wait_for_disconnect()
        if self.disconnect_reason is None and self._close_reason is None:
            self._close_reason = DisconnectReason(DisconnectKind.NORMAL, CloseCode.NORMAL, reason, True)
            if self.state == self.STATE_OPEN:
                self.core.closing()
                self.sendCloseFrame(CloseCode.NORMAL, close_reason_bytes(reason) or None)
            else:
                self.dropConnection(abort=True)
        return waiter

    def wait_for_disconnect(self) -> Deferred[DisconnectReason]:
        """Fires with the L{DisconnectReason} when the connection ends."""
        d: Deferred[DisconnectReason] = Deferred()
        if self.disconnect_reason is not None:
            d.callback(self.disconnect_reason)
        else:
            self._waiters.append(d)
        return d

    @property
    def handshake_stage(self) -> str:
        """
        What the handshake waits for: C{"upgrade"} (the server's answer to the
        WebSocket upgrade), C{"welcome"} (the hub's WELCOME) or C{"done"}.
        """
        if self._abandoned_stage is not None:
            return self._abandoned_stage  # where it stood when abandoned
        if self.ready.called:
            return "done"
        return "upgrade" if self.state == self.STATE_CONNECTING else "welcome"

    def _abandon_handshake(self, ready: Deferred[HubClientProtocol]) -> None:
        """Whoever waited for the handshake gave up on it (a timeout): close the socket now."""
        self._abandoned_stage = self.handshake_stage
        if self._close_reason is None:
            self._close_reason = DisconnectReason(
                DisconnectKind.HANDSHAKE_FAILED, None, f"handshake abandoned waiting for the {self.handshake_stage}", True
            )
        self.dropConnection(abort=True)

    def _not_open(self) -> DisconnectReason:
        return DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "not connected")

    # -- handshake -----------------------------------------------------------
    def onConnect(self, response: ConnectionResponse) -> None:
        if response.protocol != SUBPROTOCOL:
            self._handshake_status = (None, f"server chose subprotocol {response.protocol!r}, not {SUBPROTOCOL}")
            self.dropConnection(abort=True)

    def failHandshake(self, reason: str) -> None:
        status: int | None = None
        line = getattr(self, "http_status_line", "") or ""
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else reason
        self._handshake_status = (status, reason)
        super().failHandshake(reason)

    def onOpen(self) -> None:
        self.count_any_traffic = self.factory.options.any_traffic_counts
        self.core.max_messages_per_frame = self.factory.options.max_messages_per_frame
        self.core.hello(self.factory.options.max_message_size)
        self._flush()

    # -- receiving -----------------------------------------------------------
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.disconnect_reason is not None:
            return
        if not isBinary:
            self._protocol_error("text frames are not supported", CloseCode.UNSUPPORTED_DATA)
            return
        self._handling += 1
        try:
            for event in self.core.receive_frame(payload, self.factory.clock.seconds()):
                kind = type(event)
                if kind is CallSucceeded:
                    event.token.callback(event.value)  # type: ignore[union-attr]
                elif kind is CallFailed:
                    error = event.error  # type: ignore[union-attr]
                    event.token.errback(HubError(error.code, error.message, error.detail))  # type: ignore[union-attr]
                elif kind is ReceiverCall:
                    self._receiver_call(event)  # type: ignore[arg-type]
                elif kind is ServerHeartbeatReceived:
                    self._server_heartbeat(event)  # type: ignore[arg-type]
                elif kind is HeartbeatAnswered:
                    self._heartbeat_answered(event)  # type: ignore[arg-type]
                elif kind is ClientInvoke:
                    self._client_invoke(event)  # type: ignore[arg-type]
                elif kind is HandshakeCompleted:
                    self._handshake_completed()
                elif kind is Close:
                    self._close_reason = DisconnectReason(
                        kind_for_close(event.code, False), event.code, event.reason  # type: ignore[union-attr]
                    )
        except TooManyMessagesError as e:
            _log.info("the server sent {error}; closing with {code}", error=e, code=CloseCode.POLICY_VIOLATION)
            self._protocol_error(str(e), CloseCode.POLICY_VIOLATION)
        except ProtocolError as e:
            _log.info("protocol error from the server: {error}", error=e)
            self._protocol_error(str(e)[:100], CloseCode.PROTOCOL_ERROR)
        except Exception:
            _log.failure("unexpected error handling a frame from the server")
            self._protocol_error("internal error", CloseCode.INTERNAL_ERROR)
        finally:
            self._handling -= 1
            if not self._handling:
                self._flush()

    def _handshake_completed(self) -> None:
        policy = self.factory.options.heartbeat
        if policy is not None and policy.enabled and self.core.server_takes_heartbeats:
            self._start_heartbeat(policy.interval)
        if not self.ready.called:
            self.ready.callback(self)

    def _receiver_call(self, call: ReceiverCall) -> None:
        function = self._receiver_method(call.method)
        if function is None:
            suppressed = self._peer_log.allow(self.factory.clock.seconds())
            if suppressed is not None:
                _log.warn(
                    "the server called receiver method {method}, which the receiver {lacks}"
                    + (" ({suppressed} similar lines suppressed)" if suppressed else ""),
                    method=peer_text(call.method), lacks=self._why_not_callable(call.method), suppressed=suppressed,
                )
            return
        try:
            result = function(*call.args, **(call.kwargs or {}))
        except Exception:
            _log.failure("receiver method {method} raised", method=call.method)
            return
        if isinstance(result, Deferred) or hasattr(result, "__await__"):
            maybeDeferred(lambda: result).addErrback(
                lambda f: _log.failure("receiver method {method} failed", f, method=call.method)
            )

    def _receiver_method(self, name: str) -> Callable[..., Any] | None:
        """
        The receiver method the server may call by this name: a public
        callable of the receiver object and, when the factory has a
        C{receiver_interface}, one that the interface declares.
        """
        return find_receiver_method(self.factory.receiver, name, self.factory.receiver_allowed)

    def _why_not_callable(self, name: str) -> str:
        allowed = self.factory.receiver_allowed
        if allowed is not None and not name.startswith("_") and name not in allowed:
            return "interface does not declare"
        return "lacks"

    def _client_invoke(self, call: ClientInvoke) -> None:
        call_id = call.call_id
        function = self._receiver_method(call.method)
        if function is None:
            self.core.reply_error(call_id, ErrorCode.UNKNOWN_METHOD, f"the client has no method {peer_text(call.method)}")
            self._flush_unless_handling()
            return
        maybeDeferred(function, *call.args, **(call.kwargs or {})).addCallbacks(
            lambda value: self._replied(self.core.reply, call_id, value),
            lambda failure: self._client_invoke_failed(call_id, call.method, failure),
        )

    def _client_invoke_failed(self, call_id: int, method: str, failure: Failure) -> None:
        if failure.check(HubError):
            error = failure.value
            self._replied(self.core.reply_error, call_id, error.code, error.message, error.detail)  # type: ignore[union-attr]
            return
        _log.failure("receiver method {method} raised", failure, method=method)
        self._replied(self.core.reply_error, call_id, ErrorCode.INTERNAL, "internal error")

    def _replied(self, reply: Callable[..., None], *args: Any) -> None:
        if not self.is_connected:
            return
        reply(*args)
        self._flush_unless_handling()

    def _flush_unless_handling(self) -> None:
        if not self._handling:
            self._flush()

    # -- heartbeats ----------------------------------------------------------
    def _server_heartbeat(self, event: ServerHeartbeatReceived) -> None:
        callback = self.factory.options.on_server_heartbeat
        if callback is None:
            return
        message = event.message
        try:
            server_time = utc_from_us(message.server_time_us)
        except (OverflowError, ValueError, OSError):
            _log.warn("server heartbeat time {us}us is out of range; callback skipped", us=message.server_time_us)
            return
        self._safely(callback, ServerHeartbeatEvent(message.sequence, server_time, message.metadata))

    def _start_heartbeat(self, interval: float) -> None:
        self._heartbeat_loop = LoopingCall(self._beat)
        self._heartbeat_loop.clock = self.factory.clock
        self._next_beat_due = self.factory.clock.seconds() + interval
        self._heartbeat_loop.start(interval, now=False)
        _log.debug("client heartbeat timer started: interval={interval}s", interval=interval)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat_loop is not None:
            if self._heartbeat_loop.running:
                self._heartbeat_loop.stop()
            self._heartbeat_loop = None
            _log.debug("client heartbeat timer stopped")
        if self._heartbeat_check is not None:
            if self._heartbeat_check.active():
                self._heartbeat_check.cancel()
            self._heartbeat_check = None

    def _beat(self) -> None:
        clock = self.factory.clock
        now = clock.seconds()
        policy = self.factory.options.heartbeat
        assert policy is not None
        self.stall.observe(self._next_beat_due, now)
        self._next_beat_due = now + policy.interval
        sequence, _ = self.core.send_heartbeat(now)
        _log.debug("client heartbeat {sequence} sent", sequence=sequence)
        if not self._handling:
            self._flush()
        self._arm_heartbeat_check()

    def _arm_heartbeat_check(self) -> None:
        # One timer at most, re-armed lazily when it fires: answers only
        # update the tracker, they never cancel or move a timer.
        if self._heartbeat_check is not None:
            return
        policy = self.factory.options.heartbeat
        assert policy is not None
        deadline = self.core.heartbeat.deadline(policy.timeout)
        if deadline is None:
            return
        clock = self.factory.clock
        self._heartbeat_check = clock.callLater(max(deadline - clock.seconds(), 0.0), self._check_heartbeat, deadline)

    def _check_heartbeat(self, due: float) -> None:
        self._heartbeat_check = None
        if self.disconnect_reason is not None or self._close_reason is not None:
            return
        policy = self.factory.options.heartbeat
        assert policy is not None
        now = self.factory.clock.seconds()
        self.stall.observe(due, now)
        last_stall_at = self.stall.last_stall_at if policy.stall_grace else None
        verdict = self.core.heartbeat.check(now, policy, self.core.last_received, last_stall_at)
        if verdict is HeartbeatVerdict.TIMED_OUT:
            self._heartbeat_timed_out(policy)
            return
        if verdict is HeartbeatVerdict.GRACE:
            _log.info("heartbeat timeout deferred: our reactor was stalled ({lag:.3f}s late)", lag=self.stall.max_lag)
        self._arm_heartbeat_check()

    def _heartbeat_answered(self, event: HeartbeatAnswered) -> None:
        _log.debug("client heartbeat {sequence} answered in {rtt:.4f}s", sequence=event.sequence, rtt=event.latency)
        metrics = self.factory.options.metrics
        if metrics is not None and event.clock is not None:
            metrics.answered(event.latency, event.clock.offset, event.clock.error)
        callback = self.factory.options.on_heartbeat_response
        if callback is not None and event.clock is not None:
            self._safely(callback, ClientHeartbeatEvent(event.sequence, event.latency, event.clock))

    def _heartbeat_timed_out(self, policy: HeartbeatPolicy) -> None:
        _log.info("server heartbeat timed out after {timeout}s: closing with 4001", timeout=policy.timeout)
        if self.factory.options.metrics is not None:
            self.factory.options.metrics.heartbeat_timeouts.inc()
        self._close_reason = DisconnectReason(
            DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "the server did not answer our heartbeat", True
        )
        callback = self.factory.options.on_heartbeat_timeout
        if callback is not None:
            self._safely(callback)
        self._stop_heartbeat()
        if self.state == self.STATE_OPEN:
            # Tell the server why (CLOSE, then the close frame 4001), then
            # drop without waiting for a reply from a server presumed gone.
            self.core.send(Close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON))
            self._flush()
            self.core.closing()
            self.sendCloseFrame(CloseCode.HEARTBEAT_TIMEOUT, close_reason_bytes(HEARTBEAT_TIMEOUT_REASON))
            self.drop_after_close(self.factory.clock)
        else:
            self.dropConnection(abort=True)

    # -- sending -------------------------------------------------------------
    def _flush(self) -> None:
        if self.state != self.STATE_OPEN:
            return
        for frame in self.core.frames_to_send(self.core.send_limit(self.factory.options.max_message_size)):
            self.sendMessage(frame, isBinary=True)

    # -- closing -------------------------------------------------------------
    def _protocol_error(self, reason: str, code: int) -> None:
        if self._close_reason is None:
            self._close_reason = DisconnectReason(DisconnectKind.PROTOCOL_ERROR, code, reason, True)
        if self.state == self.STATE_OPEN:
            self.core.closing()
            self.sendCloseFrame(code, close_reason_bytes(reason))
        else:
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.disconnect_reason is not None:
            return
        self.cancel_drop()
        self._stop_heartbeat()
        if not self.ready.called:
            status, text = self._handshake_status or (None, reason or "connection closed during the handshake")
            self.disconnect_reason = DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, None, text)
            failure = Failure(HandshakeError(status, text))
            self.ready.errback(failure)
        else:
            self.disconnect_reason = self._final_reason(reason)
        for deferred in self.core.closed():
            deferred.errback(ConnectionClosedError(self.disconnect_reason))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.disconnect_reason)
        if self.factory.options.metrics is not None:
            self.factory.options.metrics.disconnects.labels(self.disconnect_reason.kind.value).inc()
        if self.factory.options.on_disconnected is not None:
            self._safely(self.factory.options.on_disconnected, self.disconnect_reason)
        self.factory.connection_ended(self, self.disconnect_reason)

    def _final_reason(self, reason: str | None) -> DisconnectReason:
        return final_close_reason(self, self._close_reason, reason)

    def _safely(self, function: Callable[..., object], *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            _log.failure("client callback {name} raised", name=getattr(function, "__name__", repr(function)))


class HubClientFactory(WebSocketClientFactory):
    """
    Builds L{HubClientProtocol}s for one hub URL.

    @param receiver: the object whose methods the server may call.
    @param receiver_interface: a class (e.g. a C{typing.Protocol}) declaring
        the receiver methods the server may call; others are refused like
        missing ones.  Without it, every public (no leading underscore)
        callable attribute of C{receiver} may be called.
    @param clock: time source and timer host (default: the global reactor,
        resolved when first needed); autobahn is given it as its reactor.
        C{reactor=} is a deprecated name for it.
    """

    protocol = HubClientProtocol  # type: ignore[assignment]
    #: take the autobahn fast path (twisted_hub/_autobahn.py) when the installed
    #: autobahn is a tested version; set False (on the class or an instance) for
    #: stock autobahn on every frame
    fast_path: bool = True

    @reactor_keyword_deprecated
    def __init__(
        self,
        url: str,
        receiver: object | None = None,
        options: HubClientOptions | None = None,
        clock: IReactorTime | None = None,
        *,
        reactor: IReactorTime | None = None,
        receiver_interface: type | None = None,
    ) -> None:
        if clock is None:
            clock = reactor  # the deprecated name (it warned)
        websocket_url_parts(url)
        options = options or HubClientOptions()
        super().__init__(
            url, protocols=[SUBPROTOCOL], reactor=clock, headers=dict(options.extra_headers) or None,
        )
        # autobahn resolved the reactor (the global one unless given): our timers use it too.
        self.clock: IReactorTime = clock if clock is not None else self.reactor
        self.receiver = receiver
        #: the receiver method names the server may call (None: every public method of the receiver)
        self.receiver_allowed = receiver_methods(receiver_interface)
        self.options = options
        self.on_connection_ended: Callable[[HubClientProtocol, DisconnectReason], object] | None = None
        self.setProtocolOptions(
            maxMessagePayloadSize=options.max_message_size,
            maxFramePayloadSize=options.max_message_size,
            failByDrop=False,
        )

    def connection_ended(self, protocol: HubClientProtocol, reason: DisconnectReason) -> None:
        if self.on_connection_ended is not None:
            self.on_connection_ended(protocol, reason)


def hub_url(url: str, hub: str | None) -> str:
    """The URL of one hub: C{url} with the hub name as its last path segment."""
    if not hub:
        return url
    return url.rstrip("/") + "/" + hub


def websocket_url_parts(url: str) -> SplitResult:
    """
    The parts of a ws:// or wss:// URL.

    @raise HubArgumentError: it is not one.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise HubArgumentError(f"not a WebSocket URL: {url!r}")
    return parts


def endpoint_for(url: str, reactor: Any) -> IStreamClientEndpoint:
    """
    A client endpoint for a ws:// or wss:// URL, connecting through
    C{reactor}.

    @raise HubArgumentError: C{url} is not a ws:// or wss:// URL.
    """
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    parts = websocket_url_parts(url)
    host = parts.hostname or "localhost"
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port)
    if secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


@reactor_keyword_deprecated
def connect(
    url: str,
    hub: str | None = None,
    receiver: object | None = None,
    options: HubClientOptions | None = None,
    *,
    clock: IReactorTime | None = None,
    endpoint: IStreamClientEndpoint | None = None,
    reactor: IReactorTime | None = None,
    timeout: float = 30.0,
    receiver_interface: type | None = None,
) -> Deferred[HubClientProtocol]:
    """
    Connect to a hub; fires with the connected L{HubClientProtocol} once the
    hub handshake is done, or fails with L{HandshakeError} / a connection
    error.

        client = await connect("ws://127.0.0.1:8080/hub", "chat", receiver=me)
        print(await client.call("join", "lobby"))

    @param url: C{ws://} or C{wss://} URL of the hub endpoint.
    @param hub: hub name, appended to the URL path (omit if the URL names it).
    @param receiver: object whose public methods the server may call.
    @param receiver_interface: if given, only the methods this class declares
        may be called on C{receiver} (others answer C{unknown-method}).
    @param clock: the reactor: time source and timer host (the timeout,
        heartbeats, call timeouts), and what the default endpoint connects
        through (default: the global reactor).  With an C{endpoint} it may
        be a plain C{IReactorTime} such as C{task.Clock}.  C{reactor=} is a
        deprecated name for it.
    @param endpoint: connect through this endpoint instead of one for the
        URL's host and port on C{clock} (see L{endpoint_for}).
    @param timeout: seconds for the whole handshake: the TCP (and TLS)
        connection, the WebSocket upgrade and the hub's WELCOME.  Past it the
        Deferred fails with L{ConnectTimeoutError} (a L{HandshakeError}) and
        the socket is closed.
    @raise HubArgumentError: C{url} is not a ws:// or wss:// URL.
    """
    if clock is None:
        clock = reactor  # the deprecated name (it warned)
    if clock is None:
        from twisted.internet import reactor as global_reactor

        clock = cast(IReactorTime, global_reactor)
    full_url = hub_url(url, hub)
    factory = HubClientFactory(full_url, receiver, options, clock, receiver_interface=receiver_interface)
    if endpoint is None:
        endpoint = endpoint_for(full_url, clock)
    client: list[HubClientProtocol] = []

    def connected(protocol: Any) -> Deferred[HubClientProtocol]:
        client.append(protocol)
        return cast(HubClientProtocol, protocol).ready

    def timed_out(result: Any, seconds: float) -> Any:
        stage = client[0].handshake_stage if client else "connection"
        return Failure(ConnectTimeoutError(stage, seconds)) if isinstance(result, Failure) else result

    ready: Deferred[HubClientProtocol] = endpoint.connect(factory).addCallback(connected)
    # One budget for every stage; on expiry, cancelling the endpoint's
    # Deferred abandons the TCP attempt, cancelling ready closes the socket.
    ready.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    return ready
