"""
The Twisted side of a server connection's session: L{TwistedServerSession}
and its L{TwistedSessionIO}.

The decisions are the sans-IO L{ServerSession}'s; this module keeps the
glue it must not hold: timers on the server's injected clock, Deferreds for
client results and for "closed", running the authenticator and the hub's
hooks (which may return Deferreds or coroutines, through the filter
chains), the hub instance and its L{ConnectionContext}, the call
dispatcher, and the hub layer's bookkeeping (its connections, groups and
traffic).  L{HubServerProtocol} is the transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .._backplane.interface import Backplane
from .._core.backpressure import OutputBudget
from .._core.errors import ConnectionClosedError, DisconnectReason
from .._core.heartbeat import HeartbeatPolicy
from .._core.resume import ResumePolicy, SessionRegistry
from .._core.server_session import ServerSession, ServerTransport
from .._core.stats import HeartbeatWindow, RecentDisconnects
from .._hubs.auth import Authenticator, Credentials, User, refusal_of, run_authenticator, token_from_request
from .._hubs.filters import ConnectionEvent
from .._hubs.hub import ConnectionContext, Hub, HubRuntime
from .._metrics.prometheus import HubMetrics, SessionMetrics
from .._support.logging import TwistedCoreLog
from .dispatch import CallDispatcher, FilteredCallDispatcher
from .liveness import ServerHeartbeatScheduler
from .server_streams import PLAIN_RESULTS, ServerStreams

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

    from .server import HubServerProtocol

__all__ = ["TwistedSessionHost", "TwistedServerSession", "TwistedSessionIO", "call_later"]

#: the session's log lines, in the namespace they always had
SESSION_LOG = TwistedCoreLog("twisted_hub._core.server_session")
#: one info line per connection opened and closed (docs/operations.md), in a
#: namespace of its own so it can be filtered or shipped separately
CONNECTION_LOG = TwistedCoreLog("twisted_hub.connections")


class TwistedSessionHost(Protocol):
    """
    What a L{TwistedServerSession} reads from its server (L{HubServerFactory}):
    the core's L{twisted_hub._core.server_session.SessionHost} settings, the clock,
    shared state.
    """

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

    @property
    def resume_policy(self) -> ResumePolicy | None: ...

    def resume_registry(self, hub_name: str) -> SessionRegistry: ...

    @property
    def moves_sessions(self) -> bool: ...

    def claim_session(self, session: ServerSession[Any], key: bytes, digest: bytes, user: str | None) -> None: ...

    @property
    def snapshots(self) -> bool: ...

    def save_snapshot(self, hub_name: str, key: bytes, state: bytes) -> bool: ...

    def forget_snapshot(self, key: bytes) -> None: ...


def call_later(clock: IReactorTime, delay: float, function: Callable[[], object]) -> Callable[[], object]:
    """The core's timer on a Twisted clock: call C{function} in C{delay} seconds; return what cancels that."""
    delayed = clock.callLater(delay, function)

    def cancel() -> None:
        if delayed.active():
            delayed.cancel()

    return cancel


class TwistedSessionIO:
    """The L{twisted_hub._core.server_session.ServerIO} of one L{TwistedServerSession}."""

    __slots__ = ("clock", "seconds", "session", "closed_waiters")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.seconds = clock.seconds
        self.session: TwistedServerSession
        self.closed_waiters: list[Deferred[None]] = []

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        return call_later(self.clock, delay, function)

    # -- client results ----------------------------------------------------------
    def client_result(self, token: Deferred[Any], value: Any) -> None:
        token.callback(value)

    def client_failed(self, token: Deferred[Any], error: Exception) -> None:
        token.errback(Failure(error))

    # -- fresh tokens ---------------------------------------------------------------
    def check_fresh_token(self, token: str, sequence: int, previous: User | None) -> None:
        session = self.session
        host = session.host
        authenticator = host.authenticator
        assert authenticator is not None  # (the core takes Token only when we announced token-refresh)
        credentials = Credentials(token, "refresh", session.hub_name, session.request, self.seconds(), previous)
        what = f"a fresh token of {session.connection_id}"
        running = run_authenticator(authenticator, credentials, self.clock, host.authentication_timeout)
        running.addCallbacks(self._token_accepted, self._token_refused, callbackArgs=(sequence,), errbackArgs=(sequence, what))

    def _token_accepted(self, user: User, sequence: int) -> None:
        self.session.tokens.accepted(sequence, user, self.seconds())

    def _token_refused(self, failure: Failure, sequence: int, what: str) -> None:
        if self.session.lifecycle.closing_locally:
            return
        refusal = refusal_of(failure, what)
        self.session.tokens.refused(sequence, refusal.status, refusal.reason, self.seconds())

    # -- the hub layer ------------------------------------------------------------------
    def joined(self) -> None:
        session = self.session
        session.runtime.connections[session.connection_id] = session

    def left(self) -> None:
        session = self.session
        runtime = session.runtime
        runtime.groups.remove_everywhere(session)
        del runtime.connections[session.connection_id]
        runtime.traffic.retire(session)

    def run_hook(self, name: str, reason: DisconnectReason | None) -> None:
        session = self.session
        filters = session.runtime.filters
        chain = None if filters is None else filters.on_connected if name == "on_connected" else filters.on_disconnected
        hook = getattr(session.hub, name)
        if name == "on_resumed":
            chain = None  # (the filters' connection hooks are about connecting and disconnecting)
        if chain is None:
            result = maybeDeferred(hook) if reason is None else maybeDeferred(hook, reason)
        else:
            result = chain(ConnectionEvent(session.hub, reason, self.clock))
        result.addErrback(
            lambda f: SESSION_LOG.logger.failure("{hook} of {id} failed", f, hook=name, id=session.connection_id)
        )

    def closed(self) -> None:
        waiters, self.closed_waiters = self.closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)


class TwistedServerSession(ServerSession[Deferred[Any]]):
    """
    A L{ServerSession} on Twisted: what the hub layer, the service and the
    autobahn protocol hold.  It makes the connection's hub instance and
    call dispatcher, and adds the Deferred-returning calls
    (L{invoke_client}, L{when_closed}, L{authenticate}).

    @ivar hub: this connection's hub instance.
    """

    def __init__(
        self,
        transport: ServerTransport,
        host: TwistedSessionHost,
        runtime: HubRuntime[TwistedServerSession],
        request: ConnectionRequest,
        output: OutputBudget,
    ) -> None:
        io = TwistedSessionIO(host.clock)
        super().__init__(
            transport, io, host, host.backplane.new_connection_id(), runtime.hub_class.hub_name,
            runtime.heartbeat_policy, output, SessionMetrics(host, runtime), SESSION_LOG, CONNECTION_LOG,
        )
        io.session = self
        self.host: TwistedSessionHost = host
        self.runtime = runtime
        self.request = request
        hub = runtime.make_hub()
        hub._runtime = runtime
        hub.connection = ConnectionContext(self, request)
        self.tokens.slot = hub.connection
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

    #: the connection's streams, once it has any (L{open_streams})
    streams: ServerStreams | None = None
    #: the authenticator running for this connection's upgrade (cancelled if it goes away meanwhile)
    _authenticating: Deferred[User] | None = None

    # The dispatcher's CallAnswers, through the session's output.  Methods, not bound attributes:
    # an instance dict over 30 keys loses CPython's key sharing (+1.3 KB per connection).
    def peer_mistake(self, format: str, **fields: Any) -> None:
        self.out.peer_mistake(format, **fields)

    def call_failed(self, format: str, **fields: Any) -> None:
        self.out.call_failed(format, **fields)

    def hold_answers(self) -> None:
        self.out.hold_answers()

    def release_answers(self) -> None:
        self.out.release_answers()

    def open_streams(self) -> ServerStreams:
        streams = self.streams
        if streams is None:
            host = self.host
            streams = self.streams = ServerStreams(
                self.core, self.flush, self.method_crashed, host.max_message_size, debug=host.debug,
            )
        return streams

    def answer_result(self, call_id: int, method: str, value: Any) -> bool:
        """The dispatcher's answer (L{CallAnswers}): a stream, or a value sent by L{SessionOutput}."""
        streams = self.streams
        if type(value) not in PLAIN_RESULTS or (streams is not None and streams.calls):
            streams = self.open_streams()
            if streams.involved(call_id, value):
                if self.lifecycle.closing_locally:
                    return True
                return streams.answer(call_id, method, value)
        return self.out.answer_result(call_id, method, value)

    def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        streams = self.streams
        if streams is not None and streams.calls:
            streams.forget(call_id)
        self.out.answer_error(call_id, code, message, detail)

    def method_crashed(self, method: str, failure: Failure) -> None:
        SESSION_LOG.logger.failure(
            "hub method {hub}.{method} raised (on {id})", failure, hub=self.hub_name, method=method, id=self.connection_id,
        )

    def when_closed(self) -> Deferred[None]:
        """Fires once this connection has closed (now, if it has)."""
        waiter: Deferred[None] = Deferred()
        if self.lifecycle.closed:
            waiter.callback(None)
        else:
            cast(TwistedSessionIO, self.io).closed_waiters.append(waiter)
        return waiter

    def authenticate(self) -> Deferred[User] | None:
        """Run the server's authenticator on the upgrade request (None: the server has none)."""
        authenticator = self.host.authenticator
        if authenticator is None:
            return None
        token, source = token_from_request(self.request)
        clock = self.host.clock
        credentials = Credentials(token, source, self.hub_name, self.request, clock.seconds())
        running = run_authenticator(authenticator, credentials, clock, self.host.authentication_timeout)
        if not running.called:
            self._authenticating = running
        return running

    def authenticated(self, user: User) -> None:
        self._authenticating = None
        super().authenticated(user)

    def invoke_client(
        self, method: str, args: list[Any], kwargs: dict[str, Any] | None, timeout: float | None
    ) -> Deferred[Any]:
        """Call a client receiver and wait for its result (see L{ConnectionContext.invoke})."""
        call_id = 0

        def cancel(d: Deferred[Any]) -> None:
            self.results.forget(call_id)

        deferred: Deferred[Any] = Deferred(cancel)
        try:
            call_id = self.call_client(deferred, method, args, kwargs, timeout)
        except ConnectionClosedError as e:
            return fail(e)
        return deferred

    def rename(self, connection_id: str) -> None:
        super().rename(connection_id)
        self.hub.connection.id = connection_id

    def carried(self) -> tuple[dict[str, Any], list[str]]:
        """C{connection.items} (a copy) and the groups, for the node this session moves to."""
        return dict(self.hub.connection.items), sorted(self.runtime.groups.groups_of(self.connection_id))

    def carry(self, items: dict[str, Any], groups: list[str]) -> None:
        """What L{carried} gave on the node the session moved from: the items, and back into the groups."""
        self.hub.connection.items.update(items)
        for group in groups:
            self.runtime.groups.add(group, self)

    def adopted(self, newcomer: ServerSession[Any]) -> None:
        """This session goes on over C{newcomer}'s connection (a resume): its protocol, request and user."""
        super().adopted(newcomer)
        assert isinstance(newcomer, TwistedServerSession)
        protocol = cast("HubServerProtocol", self.transport)
        protocol.session = self
        self.request = newcomer.request
        self.hub.connection.request = newcomer.request

    def transport_closed(self, observed: DisconnectReason) -> DisconnectReason:
        authenticating, self._authenticating = self._authenticating, None
        if authenticating is not None and not authenticating.called:
            authenticating.cancel()
        return super().transport_closed(observed)
