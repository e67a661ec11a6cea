"""
The client's decisions, for every client adapter: L{ClientSession}.

The Twisted client (L{twisted_hub._twisted.client.HubClientProtocol}, over autobahn)
and the asyncio client (L{twisted_hub.aio.AsyncHubClient}, over websockets)
differ only in how bytes move, how timers run and how a result is waited
for.  Everything else happens here, once: what an incoming frame means
(results, errors, receiver calls, client-result requests, heartbeats, the
server's CLOSE), how a protocol error closes, and why the connection ended
(L{twisted_hub._core.session.Lifecycle}).  Three units hold one decision each:
L{ClientReceiver} (the server's calls on the receiver object),
L{ClientHeartbeat} (our beats, their timeout verdict and what it costs) and
L{TokenRefresh} (when to ask for a fresh token, what an answer means).

No reactor and no event loop: time is passed in, and the adapter is reached
through the small L{ClientIO} interface.  No Twisted either: the session logs
through the L{CoreLog} its adapter gives it (the Twisted client's emits
C{twisted.logger} events, the asyncio client's writes to the standard
C{logging} module).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from .client_closing import ClientClosing
from .client_common import ClientHeartbeatEvent, ClientIO, HubClientOptions, ServerHeartbeatEvent
from .client_heartbeat import ClientHeartbeat
from .client_receiver import ClientReceiver
from .client_resume import ClientResumption, ends_session
from .client_streams import ClientStreams
from .client_token import TokenRefresh
from .connection import (
    CallFailed,
    CallSucceeded,
    ClientConnection,
    ConnectionState,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerHeartbeatReceived,
)
from .errors import ConnectionClosedError, DisconnectKind, DisconnectReason, HandshakeError, HubError
from .heartbeat import ClockOffset, StallDetector
from .log import CoreLog
from .session import TEXT_FRAME_CLOSE, Lifecycle, close_for_frame_error
from .wire import (
    CAP_RESUME,
    CAP_TOKEN_REFRESH,
    OUR_CAPABILITIES,
    ClientInvoke,
    Close,
    CloseCode,
    ErrorCode,
    ProtocolError,
    ReceiverCall,
    Resumed,
    ResumeRefused,
    SessionGrant,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamItem,
    TokenResult,
    TooManyMessagesError,
)

__all__ = ["ClientConnectionViews", "ClientHeartbeatEvent", "ClientIO", "ClientSession", "ServerHeartbeatEvent"]

TokenT = TypeVar("TokenT")


class ClientSession(ClientClosing, Generic[TokenT]):
    """
    One client connection's state and decisions, whatever carries its bytes.

    The adapter feeds it frames (L{receive_frame}), calls (L{invoke},
    L{notify}), timer firings (to its units: C{heartbeat.beat},
    C{heartbeat.check}, C{tokens.refresh}), its own close
    decisions (L{disconnect}, L{abandon_handshake}, L{refused}) and the end
    of the transport (L{connection_lost}); the session answers through
    L{ClientIO}.  Call L{configure} before the WebSocket opens.
    """

    options: HubClientOptions
    #: the reconnecting client's resumable session (docs/resumption.md; None: no resume)
    resumption: ClientResumption[Any] | None = None

    def __init__(self, io: ClientIO[TokenT], log: CoreLog) -> None:
        self.io = io
        self.log = log
        self.core: ClientConnection[TokenT] = ClientConnection()
        self.lifecycle = Lifecycle()
        self.receivers = ClientReceiver(self)
        self.heartbeat = ClientHeartbeat(self)
        self.tokens = TokenRefresh(self)
        #: the streams of this connection: results we consume, arguments we produce (docs/streams.md)
        self.streams = ClientStreams(self)
        #: the HTTP status and text of a refused handshake, if the adapter saw one
        self._refusal: tuple[int | None, str] | None = None
        #: frames being handled: sending waits until the outermost one is done
        self._handling = 0

    def configure(
        self, options: HubClientOptions, receiver: object | None, receiver_allowed: frozenset[str] | None,
        resumption: ClientResumption[Any] | None = None,
    ) -> None:
        """
        The settings and the receiver object (and the names it may be called
        by, None: any public one).  Apart from the constructor because the
        Twisted adapter learns them from its factory only once connected.
        """
        self.options = options
        self.receivers.receiver = receiver
        self.receivers.allowed = receiver_allowed
        self.core.max_messages_per_frame = options.max_messages_per_frame
        if callable(options.access_token):
            # A provider can give fresh tokens: tell the server we can refresh.
            self.core.capabilities = (*OUR_CAPABILITIES, CAP_TOKEN_REFRESH)
        if resumption is not None:
            self.resumption = resumption
            self.core.capabilities = (*self.core.capabilities, CAP_RESUME)

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
        """The WebSocket is open: say hello (to resume: once the WELCOME says the server can)."""
        resumption = self.resumption
        if resumption is not None and resumption.resumable:
            return
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
                        self.receivers.call(event, now)
                    case ServerHeartbeatReceived():
                        self.heartbeat.server_heartbeat(event)
                    case HeartbeatAnswered():
                        self.heartbeat.answered(event)
                    case ClientInvoke():
                        if self.core.resume is None or self.resumption is None or self.resumption.admit(self, event, now):
                            self.receivers.invoke(event)
                    case HandshakeCompleted():
                        self._handshake_completed(now)
                    case TokenResult():
                        self.tokens.answered(event, now)
                    case StreamItem() | StreamEnd() | StreamCredit() | StreamCancel():
                        self.streams.message(event)
                    case Close():
                        self.lifecycle.peer_closing(event.code, event.reason)
                    case SessionGrant() | Resumed() | ResumeRefused():
                        assert self.resumption is not None  # (the core takes them only after we announced resume)
                        self.resumption.answer(self, event, now)
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
            if self.resumption is not None and self.core.resume is not None and not self.lifecycle.closing_locally:
                self.resumption.frame_handled(self, now)
            if not self._handling:
                self.flush()

    def _handshake_completed(self, now: float) -> None:
        resumption = self.resumption
        if resumption is not None and resumption.welcomed(self):
            return  # HELLO + RESUME went out: the handshake completes with the answer
        self.handshake_finished(now)

    def handshake_finished(self, now: float) -> None:
        """The hub handshake is done (with resume: the session is granted, resumed or started afresh)."""
        self.lifecycle.opened()
        self.heartbeat.start(now)
        welcome = self.core.welcome
        if welcome is not None:
            self.tokens.welcomed(welcome.expires_in, now)
        self.io.handshake_done()

    # -- closing (ClientClosing: disconnect, close_for_error, websocket_failed, abandon_handshake) --
    def refused(self, status: int | None, text: str) -> None:
        """The server refused the WebSocket upgrade (HTTP C{status}) or answered it wrongly."""
        self._refusal = (status, text)

    def connection_lost(self, observed: DisconnectReason, lost_text: str | None = None) -> DisconnectReason:
        """
        The transport is gone; C{observed} is what the closing handshake
        showed (L{twisted_hub._core.session.ended_reason}), C{lost_text} the
        transport's own words, for a handshake that never completed.  Fails
        the pending calls, tells the adapter and the user; return the reason.
        """
        lifecycle = self.lifecycle
        if lifecycle.ended is not None:
            return lifecycle.ended
        self.heartbeat.stop()
        self.tokens.stop()
        if self.core.welcome is None:
            status, text = self._refusal or (None, lost_text or "connection closed during the handshake")
            reason = lifecycle.finish_handshake(text)
            self.io.handshake_failed(HandshakeError(status, reason.message))
        else:
            reason = lifecycle.finish(observed)
        # Every pending call was handed to the connection: it may have run.
        error = ConnectionClosedError(reason, may_have_run=True)
        resumption = self.resumption
        ending = None
        if resumption is not None and self.core.resume is not None and resumption.resumable and not ends_session(reason):
            resumption.detached(self)  # its calls and streams wait for the resume
        else:
            self.streams.close(error)
            if resumption is not None and self.core.resume is not None:
                ending = resumption  # (its calls are the core's: they fail below)
        for token in self.core.closed():
            self.io.call_failed(token, error)
        if ending is not None:
            ending.end()
        self.io.disconnected(reason)
        if self.options.metrics is not None:
            self.options.metrics.disconnected(reason.kind.value)
        if self.options.on_disconnected is not None:
            self.safely(self.options.on_disconnected, reason)
        return reason

    def safely(self, function: Callable[..., object], *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            self.log.failure("client callback {name} raised", name=getattr(function, "__name__", repr(function)))




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
        return self.session.heartbeat.stall

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
