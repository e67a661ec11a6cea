"""
The server adapter: L{HubServerProtocol} and L{HubServerFactory}.

The protocol carries bytes between autobahn and the connection's
L{ServerSession} (C{_server_session.py}), which makes every decision about
the connection; admission before the WebSocket opens is C{_admission.py}'s,
the slow-consumer rule C{_backpressure.py}'s.  The factory holds what
connections share: the hub registry (L{HubRuntime}s), heartbeat schedulers,
limits, settings and the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, TypedDict, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolNegotiationFactory, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from .._backplane.interface import Backplane, ClaimAnswer, LocalBackplane, Target, receiver_call_problem
from .._core.admission import OVER_CAPACITY, HandshakeWatch, Refusal, UpgradeRequest, check_request
from .._core.backpressure import HeldFrames, OutputBudget
from .._core.base_error import HubArgumentError
from .._core.connection import ServerConnection
from .._core.deprecate import warn_deprecated
from .._core.errors import DisconnectKind, DisconnectReason
from .._core.heartbeat import HeartbeatPolicy, StallDetector
from .._core.origin import ANY_ORIGIN, AllowedHosts, OriginPolicy
from .._core.replay_log import BroadcastLog
from .._core.resume import ResumePolicy, ResumeRefusedError, SessionRegistry, SessionToken
from .._core.server_resume import claim_answered, forwarded, give_up, hand_over, node_lost
from .._core.server_session import ServerSession
from .._core.session_move import MovedSession, MoveError
from .._core.session_snapshot import SNAPSHOT_TTL_WINDOWS
from .._core.stats import HeartbeatWindow, RecentDisconnects
from .._core.wire import SUBPROTOCOL, Close, CloseCode, ResumeReason, close_reason_bytes, encode
from .._hubs.auth import DEFAULT_AUTHENTICATION_TIMEOUT, Authenticator
from .._hubs.filters import FilterChains, HubFilter, check_filters
from .._hubs.hub import ConnectionContext, HeartbeatFeature, Hub, HubRuntime, PreparedFrame
from .._metrics.prometheus import HubMetrics
from .._sendqueue import twisted_queued
from .._support.reactor_keyword import reactor_keyword_deprecated
from .admit import admit
from .compression import (
    CompressionPolicy,
    check_autobahn_bounds_inflation,
    install_deflate,
    server_accept,
    shared_deflated_frame,
)
from .fastpath import BoundedDropMixin, FastPathMixin, final_close_reason
from .limits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    HUB_ALPN_PROTOCOLS,
    ConnectionLimits,
    GuardedConnection,
)
from .liveness import ServerHeartbeatScheduler, ping_sequence
from .loss_pacing import LossPacer
from .server_io import SESSION_LOG, TwistedServerSession, call_later

__all__ = [
    "ConnectionContext",
    "HeartbeatFeature",
    "HubRuntime",
    "HubServerFactory",
    "HubServerProtocol",
    "HubSpec",
]

_CONNECTION_DONE = Failure(ConnectionDone())

#: Default limits; documented in docs/protocol.md and README.md.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_MAX_OUTGOING_BUFFER = 4 * 1024 * 1024
DEFAULT_MAX_PENDING_CALLS = 256
DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024
DEFAULT_CLIENT_RESULT_TIMEOUT = 5.0
DEFAULT_HELLO_TIMEOUT = 10.0
DEFAULT_MAX_MESSAGES_PER_FRAME = 1024


#: What L{HubServerFactory} serves: a hub class (one instance per connection,
#: made with no arguments), or C{functools.partial(HubClass, ...)} to give each
#: instance its dependencies (C{partial(ChatHub, db)}).
HubSpec = type[Hub] | partial[Hub]


def _hub_class_and_maker(spec: HubSpec) -> tuple[type[Hub], Callable[[], Hub]]:
    """The hub class a spec serves, and how to make one instance of it."""
    if isinstance(spec, type) and issubclass(spec, Hub):
        return spec, spec
    if isinstance(spec, partial) and isinstance(spec.func, type) and issubclass(spec.func, Hub):
        return spec.func, spec
    raise HubArgumentError(f"serve Hub subclasses or functools.partial(HubSubclass, ...), not {spec!r}")


@implementer(IPushProducer)
class HubServerProtocol(FastPathMixin, BoundedDropMixin, WebSocketServerProtocol):  # type: ignore[misc]
    """
    One client connection to one hub, on autobahn: the adapter that carries
    bytes between autobahn and the connection's L{ServerSession}, which
    decides everything (L{ServerTransport} is what it asks of us).
    Admission before the WebSocket opens is L{twisted_hub._core.admission}'s, the
    slow-consumer rule L{OutputBudget}'s.
    """

    factory: HubServerFactory
    #: the connection's session, once its request reached a hub
    session: TwistedServerSession | None = None
    #: the path the hub endpoint is mounted at, when a L{HubResource} serves
    #: it (C{/hub}); None on a port of its own
    mount_path: str | None = None

    #: set while a heartbeat (or an answer to one) is written: it skips the held frames
    _urgent = False

    #: with permessage-deflate negotiated: messages shorter than this go uncompressed
    compress_min_size = 0

    # -- accepting: limits and handshake deadline (_admission.HandshakeWatch) --
    def connectionMade(self) -> None:
        self.output = OutputBudget(self.factory.max_outgoing_buffer)
        self.held = HeldFrames()
        limits = self.factory.limits
        self.watch = HandshakeWatch(
            limits, self._still_connecting, self._handshake_timed_out, partial(call_later, limits.clock),
        )
        guarded = isinstance(self.transport, GuardedConnection)
        if guarded:
            # The guard stays in the receiving path (it sees the connection
            # lost); we write to the transport under it, as autobahn wants the
            # TLS protocol itself there (for TLS details), not a wrapper.
            self.transport = self.transport.transport
        super().connectionMade()
        # Behind a ConnectionGuard the connection was counted when accepted.
        if not self.watch.accepted(self.transport.getPeer(), counted_by_guard=guarded):
            self.transport.abortConnection()

    def _still_connecting(self) -> bool:
        return bool(self.state == self.STATE_CONNECTING)

    def _handshake_timed_out(self) -> None:
        self.wasClean = False
        self.wasNotCleanReason = "the opening handshake did not finish in time"
        self.wasOpenHandshakeTimeout = True
        self.transport.abortConnection()

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # autobahn refuses an Origin header that is not an origin (empty, no
        # host) with 400 before onConnect runs; it is an origin refusal (403).
        if code == 400 and reason.startswith("HTTP Origin header invalid"):
            origin = (getattr(self, "http_headers", None) or {}).get("origin", "")
            code, reason = 403, f"origin {origin!r} is not allowed (not a valid origin)"
        super().failHandshake(reason, code, responseHeaders)

    # -- handshake ------------------------------------------------------------
    def onConnect(self, request: ConnectionRequest) -> Any:
        routed = OVER_CAPACITY if self.watch.refused else check_request(self.factory, request, self.mount_path)
        if isinstance(routed, Refusal):
            raise ConnectionDeny(routed.status, routed.reason)
        session = self.session = TwistedServerSession(self, self.factory, routed, request, self.output)
        decided = admit(
            session.hub, request, session.authenticate(), session.authenticated, self.factory.clock.seconds()
        )
        if decided is None:
            return SUBPROTOCOL  # accepted at once: answer autobahn at once too
        if isinstance(decided, Refusal):
            raise ConnectionDeny(decided.status, decided.reason)
        return decided.addCallback(_subprotocol_or_deny)

    def onOpen(self) -> None:
        self.watch.opened()
        # autobahn keeps the upgrade request's and response's raw text for the
        # connection's life and never reads them again (the parsed request stays,
        # in self.http_headers and the ConnectionRequest): 480 bytes per connection.
        self.http_request_data = b""
        self.http_response_data = ""
        policy = self.factory.compression
        if policy is not None and install_deflate(self, policy):
            self.compress_min_size = policy.min_size
        session = self.session
        assert session is not None
        self.count_any_traffic = session.heartbeat_policy.any_traffic_counts
        self._become_producer()  # before anything is written: on_connected may write a lot
        session.opened()

    def _become_producer(self) -> None:
        """
        Register as the transport's streaming producer: the transport pauses
        us when its buffer is full, and what we write from then on counts
        against max_outgoing_buffer (see L{sendData}).
        """
        transport = self.transport
        previous = getattr(transport, "producer", None)
        if previous is not None and previous is not self:
            # Behind twisted.web (HubResource, or autobahn's WebSocketResource)
            # the HTTP channel that parsed the upgrade registered itself as the
            # producer of this transport, and stays registered after the
            # transport was handed to us; it will never write again.
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    # -- bytes in ----------------------------------------------------------------
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is not None:
            session.receive(payload, isBinary)

    def onPong(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.pong(ping_sequence(payload))

    # -- bytes out (ServerTransport) ----------------------------------------------
    @property
    def can_send(self) -> bool:
        return bool(self.state == self.STATE_OPEN)

    def send_frame(self, payload: bytes, urgent: bool = False) -> None:
        small = len(payload) < self.compress_min_size
        if urgent:
            self._urgent = True
            try:
                self.sendMessage(payload, True, doNotCompress=small)
            finally:
                self._urgent = False
        else:
            self.sendMessage(payload, True, doNotCompress=small)

    @property
    def compressed(self) -> bool:
        """Whether permessage-deflate was negotiated on this connection."""
        return self._perMessageCompress is not None

    def send_prepared(self, prepared: PreparedFrame, urgent: bool = False) -> bool:
        if self.state != self.STATE_OPEN:
            return False
        assert isinstance(prepared, PreparedMessage)  # made by our factory's prepareMessage
        self._urgent = urgent
        try:
            deflate = self._perMessageCompress
            if deflate is not None and not prepared.doNotCompress:
                frame = shared_deflated_frame(prepared, deflate)
                if frame is not None:  # compressed once for every member (no context takeover)
                    stats = self.trafficStats
                    stats.outgoingWebSocketMessages += 1
                    stats.outgoingWebSocketFrames += 1
                    stats.outgoingOctetsAppLevel += len(prepared.payload)
                    stats.outgoingOctetsWebSocketLevel += len(frame) - (2 if frame[1] < 126 else 4 if frame[1] == 126 else 10)
                    self.sendData(frame)
                    return True
            self.sendPreparedMessage(prepared)
        finally:
            self._urgent = False
        return True

    def send_raw(self, data: bytes, urgent: bool = False) -> None:
        self._urgent = urgent
        try:
            self.sendData(data)  # counted as unread output there, like every write
        finally:
            self._urgent = False

    def send_close(self, code: int, reason: str, drop_after: bool) -> None:
        self.sendCloseFrame(code, close_reason_bytes(reason), isReply=False)
        if drop_after:
            self.drop_after_close(self.factory.clock)

    def abort(self) -> None:
        self.dropConnection(abort=True)

    def moved_away(self, code: int = CloseCode.SESSION_MOVED, reason: str = "session resumed elsewhere") -> None:
        self.session = None
        if self.state == self.STATE_OPEN:
            self.sendMessage(encode(Close(code, reason)), True)
            self.sendCloseFrame(code, close_reason_bytes(reason), isReply=False)
            self.drop_after_close(self.factory.clock)

    def queued_bytes(self) -> int | None:
        queued = twisted_queued(self.transport)
        return None if queued is None else queued + self.held.size

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every byte for this client passes here: hub messages, prepared
        # broadcasts, heartbeats, and what autobahn writes on its own (pongs
        # to the client's pings, close frames): the output budget counts it.
        # While the transport is full, what we write waits in our own queue
        # (self.held) and counts as unread all the same; heartbeats and their
        # answers (self._urgent) go to the transport at once, ahead of it.
        output = self.output
        if output.stopped:
            return
        size = len(data)
        if output.paused:
            if not output.take(size):
                if self.session is not None:
                    self.session.slow_consumer()
                self.held.clear()
                self.transport.abortConnection()
                return
            output.bytes_sent += size
            if self._urgent:
                super().sendData(data, sync, chopsize)
            else:
                self.held.hold(data)
            return
        output.bytes_sent += size
        super().sendData(data, sync, chopsize)
        if output.paused:  # this write filled the buffer: pauseProducing ran inside it
            output.filled(size)

    def _write_held(self, data: bytes) -> None:
        super().sendData(data)
        if self.output.paused:
            self.output.filled(len(data))

    # IPushProducer: the transport tells us when its buffer is full.
    def pauseProducing(self) -> None:
        self.output.pause()

    def resumeProducing(self) -> None:
        output = self.output
        output.resume()
        held = self.held
        if held and not output.stopped:
            held.release(self._write_held, lambda: output.paused or output.stopped)
            if held and output.paused:
                output.still_held(held.size, len(held))

    def stopProducing(self) -> None:
        pass

    # -- the end ------------------------------------------------------------------
    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        # The socket is gone; the session's teardown may wait a turn or more
        # when many connections were lost at once (LossPacer).
        self.factory.loss_pacer.lost(partial(self._lost, reason))

    def _lost(self, reason: Failure) -> None:
        self.watch.lost()
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.output.stopped = True
        self.held.clear()
        self.cancel_drop()
        if self.session is not None:
            self.session.transport_closed(final_close_reason(self, None, reason))

    # -- what tests and the CLI read -------------------------------------------------
    @property
    def core(self) -> ServerConnection[Any]:
        """The session's sans-IO core (the fast path reads it for "any traffic counts")."""
        assert self.session is not None
        return self.session.core

    @property
    def hub(self) -> Hub | None:
        """This connection's hub instance (None before its request reached a hub)."""
        return self.session.hub if self.session is not None else None

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why this connection ended, once it has (None while open)."""
        return self.session.disconnect_reason if self.session is not None else None


#: autobahn's options as a default HubServerFactory sets them: class attributes of
#: HubServerProtocol, which a connection reads instead of its own copy while its
#: factory has the same value (fastpath.copy_options: a smaller instance dict)
HubServerProtocol.OPTION_DEFAULTS = {
    "logOctets": False, "logFrames": False, "trackTimings": False, "utf8validateIncoming": True,
    "applyMask": True, "maxFramePayloadSize": DEFAULT_MAX_MESSAGE_SIZE,
    "maxMessagePayloadSize": DEFAULT_MAX_MESSAGE_SIZE, "autoFragmentSize": 0, "failByDrop": False,
    "echoCloseCodeReason": False, "openHandshakeTimeout": 0, "closeHandshakeTimeout": 1, "tcpNoDelay": True,
    "autoPingInterval": 0, "autoPingTimeout": 0, "autoPingSize": 12, "autoPingRestartOnAnyTraffic": True,
    "versions": WebSocketServerProtocol.SUPPORTED_PROTOCOL_VERSIONS, "webStatus": True,
    "requireMaskedClientFrames": True, "maskServerFrames": False, "serveFlashSocketPolicy": False,
    "allowNullOrigin": True, "maxConnections": 0, "trustXForwardedFor": 0,
}
for _name, _value in HubServerProtocol.OPTION_DEFAULTS.items():
    setattr(HubServerProtocol, _name, _value)
del _name, _value


def _subprotocol_or_deny(refusal: Refusal | None) -> str:
    if refusal is not None:
        raise ConnectionDeny(refusal.status, refusal.reason)
    return SUBPROTOCOL


class _FactoryKeywords(TypedDict, total=False):
    """The keywords of L{HubServerFactory} that its wrappers pass on as they are."""

    max_message_size: int
    max_outgoing_buffer: int
    max_pending_calls: int
    max_pending_bytes: int
    client_result_timeout: float
    hello_timeout: float
    max_messages_per_frame: int
    allowed_hosts: Iterable[str] | None
    handshake_timeout: float
    max_connections: int | None
    max_connections_per_ip: int | None
    debug: bool
    backplane: Backplane | None
    metrics: bool | HubMetrics
    registry: Any
    filters: Iterable[HubFilter]
    authenticator: Authenticator | None
    authentication_timeout: float
    deny_by_default: bool
    compression: CompressionPolicy | None
    resume: ResumePolicy | bool | None


class FactoryOptions(_FactoryKeywords, total=False):
    """
    What C{HubService(**factory_options)} passes on to the L{HubServerFactory}
    it builds (L{HubServerFactory} documents each); C{hubs}, C{heartbeat},
    C{allowed_origins} and C{clock} are the service's own parameters.
    C{tests/test_service.py} checks these lists against the factory's.
    """

    url: str | None


class ResourceFactoryOptions(FactoryOptions, total=False):
    """What C{HubResource(hubs, **factory_options)} passes on: every keyword of L{HubServerFactory}."""

    clock: IReactorTime | None
    heartbeat: HeartbeatPolicy | None
    allowed_origins: Iterable[str] | Callable[[ConnectionRequest], bool] | None


class HubTestServerOptions(_FactoryKeywords, total=False):
    """What C{HubTestServer(hubs, clock, **factory_options)} passes on (it sets C{url} and C{clock} itself)."""

    heartbeat: HeartbeatPolicy | None
    allowed_origins: Iterable[str] | Callable[[ConnectionRequest], bool] | None


@implementer(IProtocolNegotiationFactory)
class HubServerFactory(WebSocketServerFactory):
    """
    Serves one or more hubs over WebSocket.

    @param hubs: hub classes (one instance per connection), or
        C{functools.partial(HubClass, dependency, ...)} to give each instance
        its dependencies; each is reached at C{ws://host/<path>/<hub_name>}.
        With one hub, the endpoint's own path reaches it too: any path on a
        port of its own; below a L{HubResource} at C{/hub}, C{/hub} itself
        (C{/hub/nosuch} is refused with 404).
    @param clock: time source and timer host (default: the global reactor,
        resolved when first needed); autobahn is given it as its reactor.
        C{reactor=} is a deprecated name for it.
    @param heartbeat: the global server heartbeat policy (off by default);
        a hub's L{heartbeat} decorator overrides it.
    @param max_message_size: largest incoming message, bytes (over it: close 1009).
    @param max_outgoing_buffer: bytes a client may leave unread before it is
        disconnected (close 4004).
    @param max_pending_calls: calls one connection may have running or queued;
        more are answered with C{too-many-pending} (a notification over it is
        dropped, with a log line).
    @param max_pending_bytes: encoded bytes of the calls one connection may
        have running or queued; a call that would go over it is answered with
        C{too-many-pending} (a call is always accepted when none is pending).
    @param max_messages_per_frame: the most messages one incoming frame may
        hold; a frame with more is not handled at all and the connection is
        closed with 1008 (policy violation).
    @param client_result_timeout: default seconds to wait for a client result.
    @param hello_timeout: seconds a new connection may take to send its hello
        before it is closed with 4003.
    @param allowed_origins: browser origins allowed to connect: exact
        origins (C{https://app.example.com}), C{"same-host"} (pages served
        from the host the request names) or C{"*"} (any); default: same host
        only, as L{HubService} and C{twistd hub} (see L{OriginPolicy}).  Or a
        callable C{(request) -> bool}.  Requests without an Origin header
        (non-browsers) always pass.  None, which meant any origin, is
        deprecated: give C{["*"]}.
    @param allowed_hosts: host names the C{Host} header may carry (exact
        names, C{.example.com} for the domain and its subdomains, C{*});
        None: any.  Refuses DNS-rebinding pages (see L{AllowedHosts}).
    @param handshake_timeout: seconds from accepting a connection to the end
        of its WebSocket opening handshake; later, it is aborted.
    @param max_connections: connections held at most, open or in their
        handshake (None or 0: no cap); more are closed at once.
    @param max_connections_per_ip: the same per IPv4 address / IPv6 /64
        network (None or 0: no cap; set it off behind a proxy, whose address
        every connection has).
    @param debug: send exception text and tracebacks in internal errors.
    @param backplane: what joins this process to the others serving the same
        hubs (default: L{LocalBackplane}, this process alone); e.g.
        C{twisted_hub.redis.RedisBackplane("redis://127.0.0.1:6379/0")}.
        See C{docs/scaling.md}.
    @param metrics: keep Prometheus metrics (True, or a L{HubMetrics}); needs
        C{prometheus_client} (the C{metrics} extra).  See C{docs/operations.md}.
    @param registry: the C{prometheus_client} registry to put them in
        (implies C{metrics=True}; default: one of this factory's own, at
        C{factory.metrics.registry}).
    @param filters: filters around every hub's calls, connect and
        disconnect, outermost first, around each hub's own (C{hub_filters})
        and its methods'; e.g. C{[RateLimit(20), CallLog(), CallTimeout(30)]}.
        See C{docs/filters.md}.
    @param authenticator: decides who each connection belongs to from its
        access token (C{Authorization: Bearer}, a C{twisted-hub.bearer.*}
        subprotocol, or C{?access_token=}), before C{on_connecting}:
        C{(Credentials) -> User}, sync, Deferred or C{async def}; e.g. a
        L{JWTAuthenticator<twisted_hub.auth.JWTAuthenticator>}.  A refusal
        refuses the upgrade (401, 403).  With one, clients may hand over
        fresh tokens, and a connection whose token expired is closed with
        4005.  See C{docs/auth.md}.
    @param authentication_timeout: seconds the authenticator may take (at
        connect: then 503; on a refresh: the error C{timeout}).
    @param deny_by_default: refuse (error C{forbidden}) every call to a
        method for which neither the method nor its hub declares an
        authorization policy (C{authorize=}); default: such methods are
        open to every connection.
    @param compression: permessage-deflate for the clients that offer it
        (a L{CompressionPolicy}; None, the default: never); messages shorter
        than its C{min_size} and heartbeats go uncompressed.  Needs
        autobahn >= 26.10 (L{HubArgumentError} otherwise).  See
        C{docs/performance.md}, "Compression".
    @param resume: make sessions resumable (a L{ResumePolicy}, or True for
        the default one; None, the default: off): a client that announces
        C{resume} too keeps its session (groups, items, calls, what was
        sent to it) for the policy's window after its connection drops,
        and resumes it on a new connection.  See C{docs/resumption.md}.

    Listening over TLS itself (C{serverFromString(reactor, "ssl:...").listen(factory)}),
    it offers C{http/1.1} in ALPN, as a L{ConnectionGuard} does for a site.
    """

    protocol = HubServerProtocol  # type: ignore[assignment]
    #: take the autobahn fast path (twisted_hub/_twisted/fastpath.py) when the installed
    #: autobahn is a tested version; set False (on the class or an instance) for
    #: stock autobahn on every frame
    fast_path: bool = True

    @reactor_keyword_deprecated
    def __init__(
        self,
        hubs: Sequence[HubSpec] | Mapping[str, HubSpec],
        *,
        url: str | None = None,
        clock: IReactorTime | None = None,
        heartbeat: HeartbeatPolicy | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_outgoing_buffer: int = DEFAULT_MAX_OUTGOING_BUFFER,
        max_pending_calls: int = DEFAULT_MAX_PENDING_CALLS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        client_result_timeout: float = DEFAULT_CLIENT_RESULT_TIMEOUT,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        max_messages_per_frame: int = DEFAULT_MAX_MESSAGES_PER_FRAME,
        allowed_origins: Iterable[str] | Callable[[ConnectionRequest], bool] | None = (),
        allowed_hosts: Iterable[str] | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_ip: int | None = DEFAULT_MAX_CONNECTIONS_PER_IP,
        debug: bool = False,
        reactor: IReactorTime | None = None,
        backplane: Backplane | None = None,
        metrics: bool | HubMetrics = False,
        registry: Any = None,
        filters: Iterable[HubFilter] = (),
        authenticator: Authenticator | None = None,
        authentication_timeout: float = DEFAULT_AUTHENTICATION_TIMEOUT,
        deny_by_default: bool = False,
        compression: CompressionPolicy | None = None,
        resume: ResumePolicy | bool | None = None,
    ) -> None:
        if resume is True:
            resume = ResumePolicy()
        elif resume is False:
            resume = None
        if resume is not None and not isinstance(resume, ResumePolicy):
            raise HubArgumentError(f"resume must be a ResumePolicy, True or None, got {resume!r}")
        #: resumable sessions (None: off; docs/resumption.md)
        self.resume_policy: ResumePolicy | None = resume
        self._resume_registries: dict[str, SessionRegistry] = {}
        if compression is not None:
            if not isinstance(compression, CompressionPolicy):
                raise HubArgumentError(f"compression must be a CompressionPolicy or None, got {compression!r}")
            check_autobahn_bounds_inflation()
        if clock is None:
            clock = reactor  # the deprecated name (it warned)
        super().__init__(url, protocols=[SUBPROTOCOL], reactor=clock)
        # autobahn resolved the reactor (the global one unless given): our timers use it too.
        self.clock: IReactorTime = clock if clock is not None else self.reactor
        self.heartbeat = heartbeat or HeartbeatPolicy()
        if min(max_message_size, max_outgoing_buffer, max_pending_calls, max_pending_bytes, max_messages_per_frame) <= 0:
            raise HubArgumentError("limits must be positive")
        self.max_message_size = max_message_size
        self.max_outgoing_buffer = max_outgoing_buffer
        self.max_pending_calls = max_pending_calls
        self.max_messages_per_frame = max_messages_per_frame
        self.max_pending_bytes = max_pending_bytes
        #: permessage-deflate settings (None: off)
        self.compression = compression
        self.client_result_timeout = client_result_timeout
        self.hello_timeout = hello_timeout
        if allowed_origins is None:
            warn_deprecated("HubServerFactory(allowed_origins=None)", 'allowed_origins=["*"] (any origin)', stacklevel=4)
            allowed_origins = [ANY_ORIGIN]
        #: who may connect from a browser: an L{OriginPolicy}, or the callable given
        self.allowed_origins: Callable[[ConnectionRequest], bool] = (
            allowed_origins if callable(allowed_origins) else OriginPolicy(allowed_origins)
        )
        self.allowed_hosts = None if allowed_hosts is None else AllowedHosts(allowed_hosts)
        self.limits = ConnectionLimits(self.clock, max_connections, max_connections_per_ip, handshake_timeout)
        #: tears lost connections down at most so many per reactor turn
        self.loss_pacer = LossPacer(self.clock)
        self.debug = debug
        self.connection_count = 0
        self.stall_detector = StallDetector()
        self._schedulers: dict[HeartbeatPolicy, ServerHeartbeatScheduler] = {}
        self.backplane: Backplane = backplane if backplane is not None else LocalBackplane()
        #: the server's filters, outermost first (C{docs/filters.md})
        self.filters: tuple[HubFilter, ...] = check_filters(filters, "filters")
        if authenticator is not None and not callable(authenticator):
            raise HubArgumentError(f"authenticator must be a callable (Credentials) -> User, got {authenticator!r}")
        if isinstance(authentication_timeout, bool) or not 0 < authentication_timeout < float("inf"):
            raise HubArgumentError(f"authentication_timeout must be a number of seconds > 0, got {authentication_timeout!r}")
        #: who each connection belongs to (None: no authentication; C{docs/auth.md})
        self.authenticator: Authenticator | None = authenticator
        self.authentication_timeout = float(authentication_timeout)
        #: methods without an authorization policy are refused
        self.deny_by_default = deny_by_default
        self.runtimes: dict[str, HubRuntime[TwistedServerSession]] = {}
        specs = hubs.items() if isinstance(hubs, Mapping) else ((None, spec) for spec in hubs)
        for given_name, spec in specs:
            hub_class, make = _hub_class_and_maker(spec)
            name = given_name if given_name is not None else hub_class.hub_name
            if name in self.runtimes:
                raise HubArgumentError(f"two hubs are named {name!r}")
            self.runtimes[name] = HubRuntime(
                hub_class, make, backplane=self.backplane, heartbeat=self.heartbeat,
                max_message_size=max_message_size, prepare=self._prepare_binary,
                filters=FilterChains.build(hub_class, self.filters, deny_by_default),
                broadcast_log=self._broadcast_log if resume is not None else None,
            )
        if not self.runtimes:
            raise HubArgumentError("serve at least one hub")
        #: when this factory started (the status page's uptime); None before
        self.started_at: float | None = None
        #: True once a graceful shutdown started (GET /health answers 503)
        self.draining = False
        #: True while a stopping node waits for the other nodes to claim its sessions (docs/resumption.md)
        self.handing_over = False
        self.heartbeat_window = HeartbeatWindow()
        self.recent_disconnects = RecentDisconnects()
        self.metrics: HubMetrics | None = None
        if isinstance(metrics, HubMetrics):
            if registry is not None:
                raise HubArgumentError("give either a HubMetrics or a registry")
            self.metrics = metrics
        elif metrics or registry is not None:
            self.metrics = HubMetrics(registry)
        if self.metrics is not None:
            self.metrics.attach(self)
        self.backplane.attach(_FactoryHubs(self))
        self._backplane_left: Deferred[None] = succeed(None)
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            autoFragmentSize=0,
            failByDrop=False,
            # Our own handshake deadline (on self.clock) replaces autobahn's.
            openHandshakeTimeout=0,
            # "Origin: null" reaches onConnect, where the origin policy decides.
            allowNullOrigin=True,
        )
        if compression is not None:
            self.setProtocolOptions(perMessageCompressionAccept=server_accept(compression, max_message_size))

    def resume_registry(self, hub_name: str) -> SessionRegistry:
        """The resumable sessions of hub C{hub_name} on this server (one epoch per process)."""
        registry = self._resume_registries.get(hub_name)
        if registry is None:
            registry = self._resume_registries[hub_name] = SessionRegistry(self.resume_policy, self._resume_epoch)
        return registry

    @property
    def resume_registries(self) -> dict[str, SessionRegistry]:
        """Each hub's resumable sessions (read by the metrics and the status page)."""
        return self._resume_registries

    @cached_property
    def _resume_epoch(self) -> bytes:
        return SessionToken.new_epoch()

    # -- sessions that move between nodes (docs/resumption.md, "Across nodes") ---------------
    @property
    def moves_sessions(self) -> bool:
        """A session this node does not hold is claimed from the other nodes (a backplane that moves them)."""
        return self.backplane.moves_sessions

    def claim_session(self, session: ServerSession[Any], key: bytes, digest: bytes, user: str | None) -> None:
        """Claim the session C{key} names from the other nodes for C{session}'s connection (L{resume_session})."""

        def answered(answer: ClaimAnswer) -> None:
            moved = None
            reason, message = answer.reason or ResumeReason.SESSION_UNKNOWN, answer.message
            if answer.state:
                try:
                    moved = MovedSession.decode(answer.state)
                except MoveError as e:
                    SESSION_LOG.logger.error(
                        "a session handed over by another node cannot be used ({error}); it is lost", error=e,
                    )
                    reason, message = ResumeReason.SESSION_UNKNOWN, "the session's state was unusable"
            if claim_answered(session, moved, reason, message, answer.node, answer.restored) and moved is not None:
                missed = self.backplane.session_arrived(
                    session.hub_name, session.connection_id, moved.groups, answer.cutoffs, answer.since,
                )
                for payload in missed:
                    session.write_message(payload)
                session.flush()
            session.release_held()

        self.backplane.claim_session(session.hub_name, key, digest, user, answered)

    @property
    def snapshots(self) -> bool:
        """Quiet resumable sessions are kept in the backplane's store (docs/resumption.md, "When a node dies")."""
        return self.backplane.keeps_sessions

    def save_snapshot(self, hub_name: str, key: bytes, state: bytes) -> bool:
        policy = self.resume_policy
        assert policy is not None  # (only resumable sessions have snapshots)
        return self.backplane.save_session(hub_name, key, state, policy.window * SNAPSHOT_TTL_WINDOWS)

    def forget_snapshot(self, key: bytes) -> None:
        self.backplane.forget_session(key)

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN when listening over TLS directly: HTTP/1.1, which a WebSocket upgrades (never h2)."""
        return list(HUB_ALPN_PROTOCOLS)

    def _broadcast_log(self) -> BroadcastLog:
        """A log for one group's broadcasts, kept once for its resumable members (bounded as one session's buffer)."""
        return BroadcastLog(self.clock.seconds, (self.resume_policy or ResumePolicy()).buffer_bytes)

    def _prepare_binary(self, payload: bytes) -> PreparedMessage:
        """
        Frame one binary message once for many connections.  On a connection
        with permessage-deflate, autobahn compresses it for that connection
        unless it is shorter than the policy's C{min_size}.
        """
        prepared: PreparedMessage = self.prepareMessage(payload, isBinary=True)
        if self.compression is None or len(payload) < self.compression.min_size:
            # set after: autobahn's doNotCompress=True would not keep .payload, which the session reads
            prepared.doNotCompress = True
        return prepared

    def _prepare_heartbeat(self, payload: bytes) -> PreparedMessage:
        """Frame a heartbeat once for many connections: never compressed."""
        prepared: PreparedMessage = self.prepareMessage(payload, isBinary=True)
        prepared.doNotCompress = True
        return prepared

    def route(self, path: str, mount: str | None = None) -> HubRuntime[TwistedServerSession] | None:
        """
        The hub a request path reaches: its last segment names it.  With one
        hub, the endpoint's own path reaches it too: any path on a port of its
        own (C{mount} None), else C{mount} itself, but not a name below it
        that is not the hub's (C{/hub/nosuch}).
        """
        name = path.rstrip("/").rsplit("/", 1)[-1]
        runtime = self.runtimes.get(name)
        if runtime is None and len(self.runtimes) == 1:
            if mount is None or path.rstrip("/") == mount.rstrip("/"):
                return next(iter(self.runtimes.values()))
        return runtime

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's C{Host} header names a host this server serves."""
        return self.allowed_hosts is None or self.allowed_hosts.allows(host_header)

    def origin_allowed(self, request: UpgradeRequest) -> bool:
        if not request.origin:
            return True
        # (the request check hands over autobahn's request: the policy's argument)
        return bool(self.allowed_origins(cast("ConnectionRequest", request)))

    def scheduler_for(self, policy: HeartbeatPolicy) -> ServerHeartbeatScheduler:
        """The shared heartbeat scheduler of one configuration."""
        scheduler = self._schedulers.get(policy)
        if scheduler is None:
            scheduler = ServerHeartbeatScheduler(
                policy, self.clock, self._prepare_heartbeat, self.stall_detector,
                on_tick=self._heartbeat_tick,
            )
            self._schedulers[policy] = scheduler
        return scheduler

    def _heartbeat_tick(self, now: float, sent: int, sent_before: int, answered: int) -> None:
        # The answers since the previous tick answer that tick's beats.
        self.heartbeat_window.tick(now, sent_before, answered, sent_now=sent)
        if self.metrics is not None:
            self.metrics.heartbeats_sent.inc(sent)

    def hub_runtime(self, hub: type[Hub] | str) -> HubRuntime[TwistedServerSession]:
        """The shared state of one hub (connections, groups) by class or name."""
        name = hub if isinstance(hub, str) else hub.hub_name
        return self.runtimes[name]

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> int:
        """Close every connection (e.g. at shutdown); return how many."""
        count = 0
        for runtime in self.runtimes.values():
            for connection in list(runtime.connections.values()):
                connection.close_with(code, reason, DisconnectKind.GOING_AWAY)
                count += 1
        return count

    def startFactory(self) -> None:
        # listenTCP(port, factory) alone warns too when the open-file limit is below the cap
        # (once per limits: HubService or a ConnectionGuard may have checked already).
        self.limits.check_open_files()
        if self.started_at is None and IReactorTime.providedBy(self.clock):
            self.started_at = self.clock.seconds()
        super().startFactory()
        self.backplane.start()

    def stopFactory(self) -> None:
        for runtime in self.runtimes.values():
            for session in list(runtime.connections.values()):
                resumable = session.resumable
                if resumable is not None and resumable.detached:
                    # no connection to wait for: the session ends with its server
                    session.close_with(CloseCode.GOING_AWAY, "server shutting down", DisconnectKind.GOING_AWAY)
        for scheduler in self._schedulers.values():
            scheduler.stop()
        leaving = self.backplane.stop()
        self._backplane_left = leaving if leaving is not None else succeed(None)
        super().stopFactory()

    def backplane_left(self) -> Deferred[None]:
        """
        Fires once the backplane has left after the factory stopped (its
        goodbye answered or given up, bounded in time); at once if the
        factory has not stopped.  C{HubService.stopService} waits for it.
        """
        left: Deferred[None] = Deferred()

        def passed(result: object) -> object:
            left.callback(None)
            return result

        self._backplane_left.addBoth(passed)
        return left


@dataclass(frozen=True)
class _FactoryHubs:
    """A factory's hubs as its backplane reaches them (C{twisted_hub._backplane.interface.LocalHubs})."""

    factory: HubServerFactory

    @property
    def clock(self) -> IReactorTime:
        return self.factory.clock

    def knows(self, hub: str) -> bool:
        return hub in self.factory.runtimes

    def deliver(self, hub: str, target: Target, payload: bytes) -> str | None:
        runtime = self.factory.runtimes[hub]
        problem = receiver_call_problem(payload, runtime.receiver_methods, runtime.max_message_size)
        if problem is None:
            runtime.deliver(runtime.local_targets(target), payload, target)
        return problem

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        runtime = self.factory.runtimes[hub]
        if connection_id in runtime.connections:  # else it left meanwhile: nothing to do
            runtime.kick(connection_id, reason)

    def memberships(self) -> Iterator[tuple[str, str, str]]:
        for hub, runtime in self.factory.runtimes.items():
            for group, connection_id in runtime.groups.memberships():
                yield hub, group, connection_id

    def hand_over(
        self, hub: str, key: bytes, digest: bytes, user: str | None,
        forward: Callable[[str], Callable[[bytes], None]],
    ) -> tuple[str, str, bytes] | None:
        registry = self.factory.resume_registries.get(hub)
        if registry is None:
            return None
        try:
            state = hand_over(registry, key, digest, user, self.factory.clock.seconds(), forward)
        except ResumeRefusedError as refused:
            return refused.reason, refused.message, b""
        except MoveError as e:
            SESSION_LOG.logger.error("a session of hub {hub} cannot move to another node: {error}", hub=hub, error=e)
            return ResumeReason.SESSION_UNKNOWN, str(e), b""
        return None if state is None else ("", "", state)

    def give_up(self, hub: str, key: bytes, forward: Callable[[str], Callable[[bytes], None]]) -> bool:
        registry = self.factory.resume_registries.get(hub)
        return registry is not None and give_up(registry, key, forward)

    def forwarded(self, hub: str, connection_id: str, payload: bytes) -> bool:
        session = self.factory.runtimes[hub].connections.get(connection_id)
        if session is None:
            return False
        forwarded(session, payload)
        return True

    def node_gone(self, token: str) -> None:
        for runtime in self.factory.runtimes.values():
            for session in list(runtime.connections.values()):
                resumable = session.resumable
                if resumable is not None and resumable.running_on is not None:
                    node_lost(session, token)
