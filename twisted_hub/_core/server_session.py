"""
One server connection, apart from how its bytes move and how time passes:
L{ServerSession}.

A session owns the sans-IO protocol core (L{ServerConnection}) and makes
every per-connection decision of the server: what a received frame does,
when the client must have said hello, when and how to close (through
L{Lifecycle}), and the bookkeeping once the connection is gone.  Its units
hold one decision each: L{SessionOutput} (answers and sending),
L{ClientResults} (the server awaiting client methods), L{HeartbeatMembership}
(the shared heartbeat tick) and L{TokenLifetime} (the user's token).

No reactor, no Deferred, no Twisted: time is read from the adapter and
timers are the adapter's (L{ServerIO.call_later}); client results resolve
through tokens the adapter made; hub calls go to a L{CallSink} the adapter
built; metrics and the status page hear of what happens through a
L{SessionObserver}.  The Twisted adapter is
L{twisted_hub._twisted.server_io.TwistedServerSession} (with L{HubServerProtocol}
as the transport); another transport implements the same few methods and
copies no decision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .backpressure import OutputBudget
from .client_results import ClientResults, PendingResult, ResultIO
from .connection import (
    CallFailed,
    CallSucceeded,
    ConnectionState,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerConnection,
)
from .errors import ConnectionClosedError, DisconnectKind, DisconnectReason
from .heartbeat import HeartbeatPolicy
from .heartbeat_member import HeartbeatGroup, HeartbeatMembership
from .log import CoreLog
from .observer import SessionObserver
from .ratelimit import peer_field
from .resume import ResumePolicy, SessionRegistry
from .server_resume import SessionResume, admit_call, resume_session, start_session
from .server_token import TokenIO, TokenLifetime
from .server_views import ServerSessionViews
from .session import TEXT_FRAME_CLOSE, Lifecycle, close_for_frame_error
from .session_closing import SessionClosing
from .session_move import MovableSession
from .session_output import ServerTransport, SessionOutput
from .streams import NO_STREAMS, StreamSink
from .wire import (
    CAP_RESUME,
    ClientHeartbeat,
    Close,
    CloseCode,
    Invoke,
    MessageKind,
    Notify,
    Resume,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamItem,
    Token,
)

if TYPE_CHECKING:
    from .user import User

__all__ = ["CallSink", "ServerIO", "ServerSession", "ServerTransport", "SessionHost"]

TokenT = TypeVar("TokenT")
TokenT_contra = TypeVar("TokenT_contra", contravariant=True)


class ServerIO(ResultIO[TokenT_contra], TokenIO, Protocol[TokenT_contra]):
    """What a server adapter does for its L{ServerSession} besides moving bytes (L{ServerTransport})."""

    def seconds(self) -> float:
        """The adapter's clock, seconds."""

    def joined(self) -> None:
        """The connection opened: the hub layer counts it among its hub's connections."""

    def left(self) -> None:
        """The opened connection ended: the hub layer forgets it (its connections, groups, traffic)."""

    def run_hook(self, name: str, reason: DisconnectReason | None) -> None:
        """Run the hub's C{on_connected} / C{on_disconnected(reason)} (and their filters); log a failure."""

    def closed(self) -> None:
        """The session has ended: wake whoever waits for that."""


class SessionHost(Protocol):
    """What a L{ServerSession} reads from its server (L{HubServerFactory}): settings and one shared count."""

    @property
    def max_message_size(self) -> int: ...

    @property
    def max_messages_per_frame(self) -> int: ...

    @property
    def client_result_timeout(self) -> float: ...

    @property
    def hello_timeout(self) -> float: ...

    @property
    def authenticator(self) -> object | None: ...

    connection_count: int

    def scheduler_for(self, policy: HeartbeatPolicy) -> HeartbeatGroup: ...

    @property
    def resume_policy(self) -> ResumePolicy | None:
        """Sessions are resumable with this policy (None: resume is off)."""

    def resume_registry(self, hub_name: str) -> SessionRegistry:
        """The resumable sessions of hub C{hub_name}."""

    @property
    def moves_sessions(self) -> bool:
        """A session this node does not hold may be claimed from another node (a backplane that moves them)."""

    def claim_session(self, session: ServerSession[Any], key: bytes, digest: bytes, user: str | None) -> None:
        """
        Ask the other nodes for the session C{key} names (the token's secret
        hashes to C{digest}, the client is C{user}); answer through
        L{twisted_hub._core.server_resume.claim_answered}, within a bound.
        """

    @property
    def snapshots(self) -> bool:
        """Quiet sessions are written to a shared store, so they outlive this node (docs/resumption.md)."""

    def save_snapshot(self, hub_name: str, key: bytes, state: bytes) -> bool:
        """Write the snapshot C{state} of session C{key}; False when it could not be sent (try again later)."""

    def forget_snapshot(self, key: bytes) -> None:
        """Delete the snapshot of session C{key} (it ended, or its token rotated)."""


class CallSink(Protocol):
    """Where a session's received calls go (the adapter's L{twisted_hub._twisted.dispatch.CallDispatcher})."""

    @property
    def in_progress(self) -> int: ...

    @property
    def pending_bytes(self) -> int: ...

    def receive(self, invocation: Invoke | Notify, size: int) -> None: ...

    def close(self) -> None: ...


class ServerSession(ServerSessionViews, MovableSession, Generic[TokenT]):
    """
    One hub connection on the server, from its routed upgrade request to
    its end.  Made when the request reached a hub (before C{on_connecting});
    L{opened} once the WebSocket is open, L{receive} for each message,
    L{transport_closed} once.  The adapter sets L{dispatcher} before the
    WebSocket opens, and serves streams by overriding L{open_streams}.

    @ivar lifecycle: where the connection stands and why it ends.
    @ivar output: the transport's unread-output count (its slow-consumer rule).
    """

    dispatcher: CallSink
    #: the connection's streams (docs/streams.md), once it has any (L{open_streams})
    streams: StreamSink | None = None
    #: the session's resume state, once its client negotiated C{resume} (docs/resumption.md)
    resumable: SessionResume | None = None

    def __init__(
        self,
        transport: ServerTransport,
        io: ServerIO[TokenT],
        host: SessionHost,
        connection_id: str,
        hub_name: str,
        heartbeat_policy: HeartbeatPolicy,
        output: OutputBudget,
        observer: SessionObserver,
        log: CoreLog,
        connection_log: CoreLog,
    ) -> None:
        self.transport = transport
        self.io = io
        self.host = host
        self.connection_id = connection_id
        self.hub_name = hub_name
        self.heartbeat_policy = heartbeat_policy
        self.output = output
        self.observer = observer
        self.log = log
        self.lifecycle = Lifecycle()
        self.core: ServerConnection[PendingResult[TokenT]] = ServerConnection(connection_id)
        self.core.max_messages_per_frame = host.max_messages_per_frame
        self.out = SessionOutput(
            transport, self.core, self.lifecycle, host.max_message_size, connection_id, hub_name, io.seconds, log,
        )
        # the hub layer's hot paths (fan-out, answers), bound once
        self.write_message = self.out.write_message
        self.send_prepared = self.out.send_prepared
        self.flush = self.out.flush
        self.results: ClientResults[TokenT] = ClientResults(self.core, io, host.client_result_timeout)
        self.heartbeat = HeartbeatMembership(self)
        self.tokens = TokenLifetime(self, io)
        self.closing = SessionClosing(self, connection_log)
        self._cancel_hello: Callable[[], object] | None = None

    def close_with(self, code: int, reason: str, kind: DisconnectKind) -> None:
        """Close with a close code the client understands (L{SessionClosing.close_with}: the first decision stands)."""
        self.closing.close_with(code, reason, kind)

    def open_streams(self) -> StreamSink:
        """The streams, made when first needed (the adapter's; here none: stream messages are protocol errors)."""
        return NO_STREAMS

    def authenticated(self, user: User) -> None:
        """The authenticator accepted the connection: this is its user."""
        assert self.tokens.slot is not None
        self.tokens.slot.user = user

    # -- opening --------------------------------------------------------------
    def opened(self) -> None:
        """The WebSocket is open: welcome the client, join the hub's connections, run C{on_connected}."""
        self.lifecycle.opened()
        host, io = self.host, self.io
        policy = self.heartbeat_policy
        now = io.seconds()
        user = self.tokens.user
        expires_in = user.expires_in(now) if user is not None else None
        refresh = host.authenticator is not None
        size = host.max_message_size
        resume = host.resume_policy is not None
        if policy.enabled:
            self.core.welcome(policy.interval, policy.timeout, size, token_refresh=refresh, expires_in=expires_in, resume=resume)
        else:
            self.core.welcome(None, None, size, token_refresh=refresh, expires_in=expires_in, resume=resume)
        self.flush()
        self.tokens.arm_expiry(now)
        self._cancel_hello = io.call_later(host.hello_timeout, self._no_hello)
        if not resume:
            self.closing.opened()
            io.run_hook("on_connected", None)
        # With resume the connection joins its hub at HELLO: a HELLO + RESUME
        # makes it carry an existing session instead (docs/resumption.md).

    def adopted(self, newcomer: ServerSession[Any]) -> None:
        """
        This session resumed over C{newcomer}'s connection (L{SessionResume.take_over}):
        take its user (its token was checked on the new upgrade).  Adapters add their part.
        """
        mine, theirs = self.tokens.slot, newcomer.tokens.slot
        if mine is not None and theirs is not None:
            mine.user = theirs.user

    def _no_hello(self) -> None:
        self._cancel_hello = None
        self.log.info("{id} sent no hello within {timeout}s; closing", id=self.connection_id, timeout=self.host.hello_timeout)
        self.close_with(CloseCode.HANDSHAKE_FAILED, "no hello", DisconnectKind.HANDSHAKE_FAILED)

    def stop_hello_deadline(self) -> None:
        cancel, self._cancel_hello = self._cancel_hello, None
        if cancel is not None:
            cancel()

    # -- receiving --------------------------------------------------------------
    def receive(self, payload: bytes, is_binary: bool) -> None:
        """One WebSocket message arrived.  Nothing is handled once this side decided to close."""
        if self.lifecycle.closing_locally:
            return
        if self.claiming is not None:
            self.hold(payload, is_binary)
            return
        if not is_binary:
            self.log.info("text frame from {peer} ({id}); closing", peer=peer_field(self.transport.peer), id=self.connection_id)
            self.close_with(*TEXT_FRAME_CLOSE, DisconnectKind.PROTOCOL_ERROR)
            return
        core, out = self.core, self.out
        out.holding += 1
        now = 0.0
        try:
            now = self.io.seconds()
            events = core.receive_frame(payload, now)
            self.observer.frame_received(core.last_frame_messages)
            # A call's size (for max_pending_bytes) is its frame's share.
            call_size = len(payload) // len(events) if len(events) > 1 else len(payload)
            for event in events:
                match event:
                    case Invoke() if event.kind == MessageKind.STREAM_INVOKE or event.streams:
                        self.dispatcher.receive((self.streams or self.open_streams()).received_call(event), call_size)
                    case Invoke() | Notify():
                        if core.resume is None or isinstance(event, Notify) or admit_call(self, event):
                            self.dispatcher.receive(event, call_size)
                    case StreamItem() | StreamEnd() | StreamCredit() | StreamCancel():
                        (self.streams or self.open_streams()).receive(event)
                    case ClientHeartbeat():
                        core.answer_heartbeat(event, now)
                    case CallSucceeded():
                        self.results.succeeded(event.token, event.value)
                    case CallFailed():
                        self.results.failed(event.token, event.error)
                    case HeartbeatAnswered():
                        self.heartbeat.answered(event)
                    case HandshakeCompleted():
                        self.stop_hello_deadline()
                        if self.host.resume_policy is not None:
                            if type(events[-1]) is Resume:
                                continue  # the session it resumes joins the heartbeat (SessionResume.take_over)
                            start_session(self, CAP_RESUME in event.capabilities)
                        self.heartbeat.join(self.heartbeat_policy, self.host.scheduler_for)
                    case Resume():
                        resume_session(self, event)
                        return
                    case Token():
                        self.tokens.fresh_token(event)
                    case Close():
                        self.lifecycle.peer_closing(event.code, event.reason)
        except Exception as e:
            # a frame the core refused (docs/protocol.md section 6), or a bug of ours
            code, reason = close_for_frame_error(e)
            peer = peer_field(self.transport.peer)
            if code == CloseCode.POLICY_VIOLATION:
                self.log.info(
                    "{peer} ({id}) sent {error}; closing with {code}", peer=peer, id=self.connection_id, error=e, code=code,
                )
            elif code == CloseCode.PROTOCOL_ERROR:
                self.log.info("protocol error from {peer} ({id}): {error}; closing", peer=peer, id=self.connection_id, error=e)
            else:
                self.log.failure("unexpected error handling a frame from {id}", e, id=self.connection_id)
            self.close_with(code, reason, DisconnectKind.PROTOCOL_ERROR)
        finally:
            out.holding -= 1
            resumable = self.resumable
            if resumable is not None and not resumable.detached and now:
                resumable.frame_handled(now)
            if not out.holding:
                self.flush()

    def pong(self, sequence: int | None) -> None:
        """A WebSocket pong echoing heartbeat C{sequence} (None: not one of ours) arrived."""
        self.heartbeat.pong(sequence, self.io.seconds())

    # -- client results -----------------------------------------------------------
    def call_client(
        self, token: TokenT, method: str, args: list[Any], kwargs: dict[str, Any] | None, timeout: float | None,
    ) -> int:
        """
        Ask the client for C{method}'s result; C{token} settles through the
        L{ServerIO}.  Return the call id (for L{ClientResults.forget}).
        Raise L{ConnectionClosedError} once the connection is closing.
        """
        if self.core.state is not ConnectionState.OPEN or self.lifecycle.closing_locally:
            lifecycle = self.lifecycle
            raise ConnectionClosedError(lifecycle.ended or lifecycle.decided or DisconnectReason(DisconnectKind.CONNECTION_LOST))
        call_id = self.results.start(token, method, args, kwargs, timeout)
        if not self.out.holding:
            self.flush()
        return call_id

    # -- closing (SessionClosing) ----------------------------------------------------
    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (a shutdown's stragglers)."""
        self.transport.abort()

    def slow_consumer(self) -> None:
        """
        The output budget refused a write (L{OutputBudget.take}): this
        client reads too slowly; the adapter drops it right after.
        """
        self.closing.slow_consumer()

    def transport_closed(self, observed: DisconnectReason) -> DisconnectReason:
        """
        The transport is gone; C{observed} is what its closing handshake
        showed (used when neither side decided at the hub level).  Return
        why the connection ended (L{SessionClosing.finish}).
        """
        return self.closing.finish(observed)
