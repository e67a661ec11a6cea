"""
The client adapter: L{HubClientProtocol}, L{HubClientFactory} and L{connect}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast
from urllib.parse import SplitResult, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectionResponse
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from .._core.backpressure import HeldFrames
from .._core.base_error import HubArgumentError
from .._core.client_common import ClientHeartbeatEvent, HubClientOptions, HubProxy, ServerHeartbeatEvent, hub_url, make_proxy
from .._core.client_resume import ClientResumption
from .._core.client_session import ClientConnectionViews, ClientSession
from .._core.errors import (
    CallTimeoutError,
    ConnectTimeoutError,
    DisconnectReason,
    HandshakeError,
    HubError,
)
from .._core.heartbeat import Traffic
from .._core.receivers import receiver_methods
from .._core.sentinel import UNSET, Unset
from .._core.streams import DEFAULT_STREAM_WINDOW, InboundStream, OutboundStream, refused_stream
from .._core.wire import SUBPROTOCOL, close_reason_bytes
from .._sendqueue import twisted_queued
from .._support.logging import TwistedCoreLog
from .._support.reactor_keyword import clock_or_global_reactor, reactor_keyword_deprecated
from .compression import (
    check_autobahn_bounds_inflation,
    client_accept,
    client_offers,
    install_deflate,
)
from .fastpath import BoundedDropMixin, FastPathMixin, final_close_reason
from .streams import HubStream, StreamPump, is_stream_source

__all__ = [
    "ClientConnectionViews",
    "ClientHeartbeatEvent",
    "HubClientFactory",
    "HubClientOptions",
    "HubClientProtocol",
    "HubProxy",
    "ServerHeartbeatEvent",
    "connect",
    "endpoint_for",
    "hub_url",
    "make_proxy",
]

InterfaceT = TypeVar("InterfaceT")
#: the client's log (its namespace since the first release)
CLIENT_LOG = TwistedCoreLog("twisted_hub._twisted.client")
#: the close code of a close frame that carries none (RFC 6455 section 7.1.5; never sent)
CLOSE_FRAME_WITHOUT_CODE = 1005


@implementer(IPushProducer)
class HubClientProtocol(ClientConnectionViews, FastPathMixin, BoundedDropMixin, WebSocketClientProtocol):  # type: ignore[misc]
    """
    One connection to one hub, as the client sees it; get one from
    L{connect}.  C{call} returns a Deferred of the result; the server's
    receiver calls reach the factory's receiver object.

    An adapter: its L{ClientSession} decides; this class carries the bytes
    (autobahn), runs the heartbeat timers on the factory's clock and turns
    results into Deferreds.
    """

    factory: HubClientFactory
    #: with permessage-deflate negotiated: frames shorter than this go uncompressed
    compress_min_size = 0

    def __init__(self) -> None:
        super().__init__()
        self.session: ClientSession[Deferred[Any]] = ClientSession(self, CLIENT_LOG)
        #: fires with this protocol once the hub handshake is done; cancelling
        #: it (a connect timeout) abandons the handshake and closes the socket
        self.ready: Deferred[HubClientProtocol] = Deferred(self._abandon_handshake)
        self._waiters: list[Deferred[DisconnectReason]] = []
        self._heartbeat_loop: LoopingCall | None = None
        self._heartbeat_check: IDelayedCall | None = None
        self._abandoned_stage: str | None = None
        #: what we wrote while the transport's buffer was full (heartbeats skip it)
        self.held = HeldFrames()
        self._paused = False
        self._urgent = False

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
        session = self.session
        call_id = 0

        def cancel(d: Deferred[Any]) -> None:
            session.core.forget_call(call_id)

        deferred: Deferred[Any] = Deferred(cancel)
        try:
            if args and any(map(is_stream_source, args)) or kwargs and any(map(is_stream_source, kwargs.values())):
                call_id = self._invoke_streaming(deferred, method, args or [], kwargs, None)[0]
            else:
                call_id = session.invoke(deferred, method, args or [], kwargs)
        except HubError as e:  # not connected, or arguments that cannot be sent
            return fail(e)
        limit = session.options.call_timeout if timeout is UNSET else timeout
        if limit is not None:
            deferred.addTimeout(
                limit, self.factory.clock,
                onTimeoutCancel=lambda v, s: Failure(CallTimeoutError(f"{method!r} got no result within {s}s")),
            )
        return deferred

    def stream(self, method: str, *args: Any, **kwargs: Any) -> HubStream:
        """
        Call a hub method that answers with a stream; iterate the result
        (C{async for item in client.stream("ticks", 10)}) as items arrive,
        with the default window (docs/streams.md).  Arguments that are async
        iterables are streamed to the server, as with L{call}.
        """
        return self.open_stream(method, list(args), kwargs or None)

    def open_stream(
        self, method: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
        window: int = DEFAULT_STREAM_WINDOW,
    ) -> HubStream:
        """L{stream} with explicit argument containers and the credit window, in items."""
        session = self.session
        done: Deferred[Any] = Deferred()
        try:
            _, inbound, _ = self._invoke_streaming(done, method, args or [], kwargs, window)
        except HubError as e:
            return HubStream(*refused_stream(e, window), lambda: None)
        assert inbound is not None
        # (the streams, not this connection's session: with resume they carry over to the next connection)
        streams = session.streams

        def failed(failure: Failure) -> None:
            streams.failed(inbound, cast(Exception, failure.value))

        done.addErrback(failed)
        return HubStream(streams.table, inbound, streams.flush, on_cancel=lambda: streams.cancel(inbound))

    def _invoke_streaming(
        self, token: Deferred[Any], method: str, args: list[Any], kwargs: dict[str, Any] | None, window: int | None,
    ) -> tuple[int, InboundStream | None, list[tuple[OutboundStream, Any]]]:
        session = self.session
        call_id, inbound, outbound = session.streams.invoke(token, method, args, kwargs, window, is_stream_source)
        limit = session.core.send_limit(session.options.max_message_size)
        streams = session.streams
        for stream, source in outbound:
            StreamPump(streams.table, stream, source, streams.flush, limit, crashed=self._upload_crashed).start()
        return call_id, inbound, outbound

    def _upload_crashed(self, failure: Failure) -> None:
        self.session.log.failure("a stream argument raised", failure.value)

    def proxy(self, interface: type[InterfaceT] | None = None) -> InterfaceT:
        """
        The hub as an object: C{chat = client.proxy(ChatApi)}, then
        C{await chat.join("lobby", "ann")}.  C{interface} (typically a
        C{typing.Protocol} with C{Deferred[...]} return types) lets type
        checkers check the calls; a method it does not declare raises
        AttributeError before anything is sent.  Without one, any name goes.
        """
        return make_proxy(self.call, interface)

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call a hub method without waiting for (or getting) a result."""
        self.session.notify(method, list(args), kwargs or None)

    def disconnect(self, reason: str = "") -> Deferred[DisconnectReason]:
        """Close normally; fires with the L{DisconnectReason} once closed."""
        waiter = self.wait_for_disconnect()
        self.session.disconnect(reason)
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
        self.session.abandon_handshake(self._abandoned_stage)
        self.dropConnection(abort=True)

    # -- autobahn callbacks ----------------------------------------------------
    def connectionMade(self) -> None:
        factory = self.factory
        self.session.configure(factory.options, factory.receiver, factory.receiver_allowed, factory.resumption)
        super().connectionMade()

    def onConnect(self, response: ConnectionResponse) -> None:
        if response.protocol != SUBPROTOCOL:
            self.session.refused(None, f"server chose subprotocol {response.protocol!r}, not {SUBPROTOCOL}")
            self.dropConnection(abort=True)

    def failHandshake(self, reason: str) -> None:
        status, reason = _refusal(getattr(self, "http_status_line", "") or "", reason)
        self.session.refused(status, reason)
        super().failHandshake(reason)

    def onOpen(self) -> None:
        self.count_any_traffic = self.session.options.any_traffic_counts
        # As the transport's producer we learn when its buffer is full; what
        # we write then waits in self.held, where heartbeats overtake it.
        self.transport.registerProducer(self, True)
        policy = self.session.options.compression
        if policy is not None and install_deflate(self, policy):
            self.compress_min_size = policy.min_size
        self.session.opened()

    @property
    def compressed(self) -> bool:
        """Whether permessage-deflate was negotiated on this connection."""
        return self._perMessageCompress is not None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.session.receive_frame(payload, self.factory.clock.seconds(), isBinary)

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False) -> None:
        failing = self.failedByMe and not isReply and self.state == self.STATE_OPEN
        super().sendCloseFrame(code, reasonUtf8, isReply)
        if failing and code is not None:
            # autobahn failed the connection on its own (a message over
            # max_message_size, bad framing): the session hears of it now, not
            # when TCP is gone, and the server's answer is not waited for.
            reason = (reasonUtf8 or b"").decode("utf-8", "replace")
            if self.session.websocket_failed(code, reason):
                self.drop_after_close(self.factory.clock)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        answering = self.state == self.STATE_OPEN
        result = super().onCloseFrame(code, reasonRaw)
        if self.remoteCloseCode is None:
            # A close frame without a code: RFC 6455 7.1.5 calls that close
            # code 1005 (a normal close), not a lost connection.
            self.remoteCloseCode = CLOSE_FRAME_WITHOUT_CODE
        if answering and self.state == self.STATE_CLOSING:
            # autobahn answered the server's close frame and waits for the
            # server to close TCP, with no deadline: a server that holds the
            # connection open would hold this client forever.
            self.abort_later(self.factory.clock)
        return result

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.disconnect_reason is not None:
            return
        self.cancel_drop()
        ended = self.session.connection_lost(final_close_reason(self, None, reason), reason)
        self.factory.connection_ended(self, ended)

    # -- what the session asks of us (ClientIO) --------------------------------
    def send_frames(self, frames: list[bytes], urgent: bool = False) -> None:
        if self.state == self.STATE_OPEN:
            self._urgent = urgent
            small = self.compress_min_size
            try:
                for frame in frames:
                    self.sendMessage(frame, isBinary=True, doNotCompress=len(frame) < small)
            finally:
                self._urgent = False

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if self._paused and not self._urgent:
            self.held.hold(data)
            return
        super().sendData(data, sync, chopsize)

    # IPushProducer: the transport tells us when its buffer is full.
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self.held:
            self.held.release(self._write_held, lambda: self._paused)

    def stopProducing(self) -> None:
        self.held.clear()

    def _write_held(self, data: bytes) -> None:
        super().sendData(data)

    def send_close(self, code: int, reason: str, wait_for_peer: bool) -> None:
        if self.state != self.STATE_OPEN:
            self.dropConnection(abort=True)
            return
        self.sendCloseFrame(code, close_reason_bytes(reason) or None)
        if not wait_for_peer:
            self.drop_after_close(self.factory.clock)

    def call_succeeded(self, token: Deferred[Any], value: Any) -> None:
        token.callback(value)

    def call_failed(self, token: Deferred[Any], error: Exception) -> None:
        token.errback(error)

    def await_result(
        self, result: Awaitable[Any], on_result: Callable[[Any], object], on_error: Callable[[BaseException], object],
    ) -> None:
        maybeDeferred(lambda: result).addCallbacks(on_result, lambda failure: on_error(failure.value))

    def handshake_done(self) -> None:
        if not self.ready.called:
            self.ready.callback(self)

    def handshake_failed(self, error: HandshakeError) -> None:
        if not self.ready.called:
            self.ready.errback(Failure(error))

    def disconnected(self, reason: DisconnectReason) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(reason)

    def traffic(self) -> Traffic:
        received, receiving = self.receiving()
        return Traffic(self.bytes_out, twisted_queued(self.transport), received, receiving)

    def seconds(self) -> float:
        return self.factory.clock.seconds()

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        delayed = self.factory.clock.callLater(delay, function)
        return lambda: delayed.cancel() if delayed.active() else None

    def refresh_token(self) -> None:
        """
        Ask the C{access_token} provider for a fresh token now and hand it
        to the server over this connection (the client does this by itself
        before the token expires; C{docs/auth.md}).
        """
        self.session.tokens.refresh()

    # -- heartbeat timers ------------------------------------------------------
    def start_heartbeat(self, interval: float) -> None:
        self._heartbeat_loop = LoopingCall(self._beat)
        self._heartbeat_loop.clock = self.factory.clock
        self._heartbeat_loop.start(interval, now=False)

    def stop_heartbeat(self) -> None:
        loop, self._heartbeat_loop = self._heartbeat_loop, None
        if loop is not None and loop.running:
            loop.stop()
        check, self._heartbeat_check = self._heartbeat_check, None
        if check is not None and check.active():
            check.cancel()

    def _beat(self) -> None:
        self.session.heartbeat.beat(self.factory.clock.seconds())
        self._arm_heartbeat_check()

    def _arm_heartbeat_check(self) -> None:
        # One timer at most, re-armed lazily when it fires: answers only
        # update the tracker, they never cancel or move a timer.
        if self._heartbeat_check is not None:
            return
        deadline = self.session.heartbeat.deadline()
        if deadline is None:
            return
        clock = self.factory.clock
        self._heartbeat_check = clock.callLater(max(deadline - clock.seconds(), 0.0), self._check_heartbeat, deadline)

    def _check_heartbeat(self, due: float) -> None:
        self._heartbeat_check = None
        if self.session.heartbeat.check(self.factory.clock.seconds(), due):
            self._arm_heartbeat_check()


def _refusal(status_line: str, reason: str) -> tuple[int | None, str]:
    """
    The HTTP status and text of a refused upgrade, from its status line
    (else no status, C{reason}).  A 101 is no refusal: the server accepted
    the upgrade and autobahn failed it (a subprotocol we did not offer):
    no status, autobahn's C{reason}.
    """
    parts = status_line.split(" ", 2)
    if len(parts) >= 2 and parts[1].isdigit() and parts[1] != "101":
        return int(parts[1]), parts[2] if len(parts) > 2 else reason
    return None, reason


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
    #: take the autobahn fast path (twisted_hub/_twisted/fastpath.py) when the installed
    #: autobahn is a tested version; set False (on the class or an instance) for
    #: stock autobahn on every frame
    fast_path: bool = True
    #: the session its connections resume (a L{ReconnectingHubClient} with C{resume} sets it)
    resumption: ClientResumption[Deferred[Any]] | None = None

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
        if isinstance(options.access_token, str):
            self.set_access_token(options.access_token)
        self.setProtocolOptions(
            maxMessagePayloadSize=options.max_message_size,
            maxFramePayloadSize=options.max_message_size,
            failByDrop=False,
        )
        if options.compression is not None:
            check_autobahn_bounds_inflation()
            self.setProtocolOptions(
                perMessageCompressionOffers=client_offers(options.compression),
                perMessageCompressionAccept=client_accept(options.compression, options.max_message_size),
            )

    def set_access_token(self, token: str | None) -> None:
        """The token the next connection's upgrade carries (C{Authorization: Bearer}); None: none."""
        if token is None and self.options.access_token is None:
            return  # no token in play: an Authorization header in extra_headers stays
        headers = dict(self.headers or {})
        headers.pop("Authorization", None)
        if token is not None:
            if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
                raise HubArgumentError("an access token must be a non-empty string on one line")
            headers["Authorization"] = f"Bearer {token}"
        self.headers = headers

    def connection_ended(self, protocol: HubClientProtocol, reason: DisconnectReason) -> None:
        if self.on_connection_ended is not None:
            self.on_connection_ended(protocol, reason)


def resolve_access_token(options: HubClientOptions | None) -> Deferred[str | None]:
    """The token a connection starts with: C{options.access_token}, the provider asked now."""
    provider = None if options is None else options.access_token
    if provider is None or isinstance(provider, str):
        return succeed(provider)
    asked: Deferred[Any] = maybeDeferred(provider)
    return asked.addCallback(_checked_token)


def _checked_token(token: object) -> str | None:
    if token is not None and (not isinstance(token, str) or not token):
        raise HubArgumentError(f"the access token provider must return a non-empty string or None, not {type(token).__name__}")
    return token


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
    C{reactor}: a host name is resolved and its addresses tried as
    C{HostnameEndpoint} does; an IP address is connected to directly (a
    C{HostnameEndpoint} would still hand it to a resolver thread, which
    made opening a connection to 127.0.0.1 cost a thread hand-off each way).

    @raise HubArgumentError: C{url} is not a ws:// or wss:// URL.
    """
    from twisted.internet.abstract import isIPAddress, isIPv6Address
    from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS

    parts = websocket_url_parts(url)
    host = parts.hostname or "localhost"
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    endpoint: IStreamClientEndpoint
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, port)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, port)
    else:
        endpoint = HostnameEndpoint(reactor, host, port)
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
    clock = clock_or_global_reactor(clock, reactor)
    full_url = hub_url(url, hub)
    factory = HubClientFactory(full_url, receiver, options, clock, receiver_interface=receiver_interface)
    if endpoint is None:
        endpoint = endpoint_for(full_url, clock)
    client: list[HubClientProtocol] = []

    def with_token(token: str | None) -> Deferred[Any]:
        factory.set_access_token(token)
        assert endpoint is not None
        return endpoint.connect(factory)

    def connected(protocol: Any) -> Deferred[HubClientProtocol]:
        client.append(protocol)
        return cast(HubClientProtocol, protocol).ready

    def timed_out(result: Any, seconds: float) -> Any:
        stage = client[0].handshake_stage if client else "connection"
        return Failure(ConnectTimeoutError(stage, seconds)) if isinstance(result, Failure) else result

    # The token provider is asked first (it may wait: a Deferred or a coroutine), within the same timeout.
    ready: Deferred[HubClientProtocol] = resolve_access_token(options).addCallback(with_token).addCallback(connected)
    # One budget for every stage; on expiry, cancelling the endpoint's
    # Deferred abandons the TCP attempt, cancelling ready closes the socket.
    ready.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    return ready
