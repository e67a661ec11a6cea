"""
A client that reconnects by itself after a heartbeat timeout or a lost
connection, built on Twisted's L{ClientService}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._core.base_error import HubArgumentError
from .._core.client_common import full_jitter_policy as full_jitter_policy  # its old home, re-exported
from .._core.client_resume import ClientResumption
from .._core.errors import ConnectionClosedError, ConnectTimeoutError, DisconnectKind, DisconnectReason
from .._core.resume import ResumePolicy
from .._core.wire import CloseCode
from .._support.handover import UntilHandedOver
from .._support.logging import HUB_LOG_OBSERVER
from .._support.reactor_keyword import clock_or_global_reactor, reactor_keyword_deprecated
from .client import (
    HubClientFactory,
    HubClientOptions,
    HubClientProtocol,
    InterfaceT,
    endpoint_for,
    hub_url,
    make_proxy,
    resolve_access_token,
)

_log = Logger(observer=HUB_LOG_OBSERVER)

#: How many disconnect reasons a L{ReconnectingHubClient} keeps.
MAX_REMEMBERED_DISCONNECTS = 100


class _RecordingHubClientFactory(HubClientFactory):
    """A L{HubClientFactory} that remembers the protocol it built last."""

    last_built: HubClientProtocol | None = None

    def buildProtocol(self, addr: IAddress | None) -> Any:
        built = super().buildProtocol(addr)
        self.last_built = cast(HubClientProtocol, built)
        return built


class _GuardingFactory(Factory):
    """Builds C{ClientService}'s protocol and puts an L{UntilHandedOver} in front of it."""

    def __init__(self, service_factory: Any, hub_factory: _RecordingHubClientFactory) -> None:
        self.service_factory = service_factory
        self.hub_factory = hub_factory

    def buildProtocol(self, addr: IAddress | None) -> UntilHandedOver | None:
        proxy = self.service_factory.buildProtocol(addr)
        client = self.hub_factory.last_built
        if proxy is None or client is None:
            return None
        return UntilHandedOver(proxy, client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service_factory, name)


@implementer(IStreamClientEndpoint)
class _HandshakeEndpoint:
    """
    Connects, completes the hub handshake and runs C{prepare} (the
    client's C{on_connected}) before it reports a connection: for
    C{ClientService}, a connection is one that got its WELCOME and was
    prepared, and a refused or silent handshake or a failed C{prepare} is a
    failed attempt (counted by the retry policy; the connection is closed).
    The handshake gets C{timeout} seconds.

    Why not C{ClientService}'s own C{prepareConnection}: the handshake
    Deferred hands the connection over from inside one of its callbacks,
    and a hook returning that same Deferred (or one chained to it) while it
    runs made C{ClientService} count every connection as failed and open
    another (issue 26).  Here each connection has a Deferred of its own,
    fired once, after everything it waits for.
    """

    def __init__(
        self, endpoint: IStreamClientEndpoint, hub_factory: _RecordingHubClientFactory,
        clock: IReactorTime, timeout: float, prepare: Callable[[HubClientProtocol], Deferred[Any]],
    ) -> None:
        self._endpoint = endpoint
        self._hub_factory = hub_factory
        self._clock = clock
        self._timeout = timeout
        self._prepare = prepare

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        # Each attempt asks the access token provider afresh (a failure is a failed attempt).
        asking = resolve_access_token(self._hub_factory.options)
        if not asking.called:
            asking.addTimeout(self._timeout, self._clock)
        return asking.addCallback(self._connect, protocolFactory)

    def _connect(self, token: str | None, protocolFactory: Any) -> Deferred[Any]:
        self._hub_factory.set_access_token(token)
        connecting: Deferred[Any] = self._endpoint.connect(_GuardingFactory(protocolFactory, self._hub_factory))
        return connecting.addCallback(self._handshake)

    def _handshake(self, guard: UntilHandedOver) -> Deferred[Any]:
        client: HubClientProtocol = guard.inner

        def timed_out(result: Any, seconds: float) -> Any:
            if not isinstance(result, Failure):
                return result
            _log.info("hub handshake timed out after {seconds}s (no {stage})", seconds=seconds, stage=client.handshake_stage)
            return Failure(ConnectTimeoutError(client.handshake_stage, seconds))

        def cancel(_: Deferred[Any]) -> None:
            # ClientService is stopping while this attempt is not handed over.
            if not client.ready.called:
                client.ready.cancel()  # closes the socket
            elif client.transport is not None:
                client.transport.abortConnection()

        handed_over: Deferred[Any] = Deferred(cancel)

        def handshaken(outcome: Any) -> Any:
            if isinstance(outcome, Failure):
                handed_over.errback(outcome)
                return None  # reported to ClientService through handed_over
            # Not from inside ready's own callbacks: ready (the user's too)
            # is done with by the time the connection is handed over.
            self._clock.callLater(0, prepare)
            return outcome

        def prepare() -> None:
            if handed_over.called:  # cancelled meanwhile
                return
            if not client.is_connected:
                handed_over.errback(client.session.closed_error())
                return
            client.wait_for_disconnect().addCallback(lost_while_preparing)
            self._prepare(client).addCallbacks(prepared, not_prepared)

        def lost_while_preparing(reason: DisconnectReason) -> None:
            # The connection ended while on_connected ran: this attempt is over now.  Not
            # when on_connected is done: with resume, the calls it waits for outlive the
            # connection (they go on with the session over the next one), and waiting for
            # them here would keep the next connection from ever being made.
            if not handed_over.called:
                handed_over.errback(ConnectionClosedError(reason))

        def prepared(_: object) -> None:
            if handed_over.called:
                return
            if not client.is_connected:  # ended while on_connected ran
                handed_over.errback(client.session.closed_error())
                return
            guard.handed_over = True
            handed_over.callback(guard.proxy)

        def not_prepared(failure: Failure) -> None:
            if handed_over.called:
                # (its connection ended while it ran, and the next attempt is under way: a call
                # it waited for failed with the session, say; on_connected runs again if needed)
                _log.info(
                    "on_connected of a connection that ended meanwhile failed: {error}", error=failure.getErrorMessage()
                )
                return
            _log.failure("on_connected failed; closing this connection and retrying", failure)
            if client.is_connected:
                client.disconnect()
            if not handed_over.called:
                handed_over.errback(failure)

        # Cancelling ready (the timeout, or ClientService stopping) closes the socket.
        client.ready.addTimeout(self._timeout, self._clock, onTimeoutCancel=timed_out)
        client.ready.addBoth(handshaken)
        return handed_over


class ReconnectingHubClient(Service):
    """
    A hub client that stays connected; an C{IService}, so it can be given a
    parent (C{client.setServiceParent(application)}) or started on its own.

    It holds at most one connection at a time.  After a lost connection or a
    heartbeat timeout it reconnects with L{full_jitter_policy} (or your
    C{retry_policy}); C{on_connected(client)} runs once per connection, after
    its handshake (return a Deferred to hold calls until, say, the client has
    rejoined its groups; if it fails, the failure is logged, that connection
    is closed and counts as a failed attempt; if the connection ends while it
    runs, the attempt fails at once, without waiting for it: with resume its
    calls go on over the next connection); with C{HubClientOptions(resume=...)},
    a connection that resumed the session runs C{on_resumed(client)} instead
    (the server kept its groups: nothing to restore; docs/resumption.md);
    C{on_disconnected(reason)} runs
    after every disconnect of a connection that was handed over.  A
    connection whose WebSocket upgrade or WELCOME does not come within
    C{handshake_timeout} seconds is closed and counts as a failed attempt (the
    TCP connect has the endpoint's own timeout, 30 s for the default one).
    C{receiver_interface} limits the receiver methods the server may call,
    and C{clock} is the reactor (time, retries and the default endpoint), as
    for L{connect}; C{reactor=} is a deprecated name for it.

    B{Calls during an outage.}  A L{call} made while there is no connection
    waits for the next one, at most C{wait_for_connection} seconds (default
    10; 0: fail at once; None: no limit), then fails with
    L{ConnectionClosedError} whose C{may_have_run} is False: it was never
    sent.  A call already sent when its connection ends fails with
    C{may_have_run} True: the server may have run it and its answer was lost
    (see docs/api.md).  Calls are never resent by themselves.

        service = ReconnectingHubClient("ws://127.0.0.1:8080/hub", "chat",
                                        receiver=me, on_connected=rejoin)
        service.start()
        await service.call("say", "lobby", "hi")   # waits for a connection

    @ivar disconnects: the reasons of the last L{MAX_REMEMBERED_DISCONNECTS}
        disconnects, oldest first.
    @ivar connections: connections made so far (each ran C{on_connected} once).
    @ivar current: the connection calls go to (handshake done and
        C{on_connected} finished), or None.
    """

    @reactor_keyword_deprecated
    def __init__(
        self,
        url: str,
        hub: str | None = None,
        receiver: object | None = None,
        options: HubClientOptions | None = None,
        *,
        on_connected: Callable[[HubClientProtocol], Any] | None = None,
        on_disconnected: Callable[[DisconnectReason], Any] | None = None,
        on_resumed: Callable[[HubClientProtocol], Any] | None = None,
        retry_policy: Callable[[int], float] | None = None,
        endpoint: IStreamClientEndpoint | None = None,
        clock: IReactorTime | None = None,
        reactor: IReactorTime | None = None,
        handshake_timeout: float = 30.0,
        receiver_interface: type | None = None,
        wait_for_connection: float | None = 10.0,
    ) -> None:
        clock = clock_or_global_reactor(clock, reactor)
        if wait_for_connection is not None and wait_for_connection < 0:
            raise HubArgumentError(f"wait_for_connection must be >= 0 or None, got {wait_for_connection!r}")
        full_url = hub_url(url, hub)
        self.clock = clock
        self.factory = _RecordingHubClientFactory(full_url, receiver, options, clock, receiver_interface=receiver_interface)
        self.factory.on_connection_ended = self._ended
        resume = self.factory.options.resume
        if resume:
            self.factory.resumption = ClientResumption(resume if isinstance(resume, ResumePolicy) else None)
        self._on_connected = on_connected
        self._on_resumed = on_resumed
        self._on_disconnected = on_disconnected
        self._wait_for_connection = wait_for_connection
        self._waiting: list[Deferred[HubClientProtocol]] = []
        self.connections = 0
        self.current: HubClientProtocol | None = None
        self.disconnects: deque[DisconnectReason] = deque(maxlen=MAX_REMEMBERED_DISCONNECTS)
        self.service = ClientService(
            _HandshakeEndpoint(
                endpoint if endpoint is not None else endpoint_for(full_url, clock),
                self.factory, clock, handshake_timeout, self._prepare,
            ),
            self.factory,
            retryPolicy=retry_policy or full_jitter_policy(),
            clock=clock,
        )

    def _prepare(self, client: HubClientProtocol) -> Deferred[Any]:
        """A connection finished its handshake: count it, run on_connected, then let calls use it."""
        self.connections += 1
        metrics = self.factory.options.metrics
        if self.connections > 1 and metrics is not None:
            metrics.reconnected()

        def ready(result: object) -> object:
            if client.is_connected and self.running:
                self.current = client
                waiting, self._waiting = self._waiting, []
                for waiter in waiting:
                    waiter.callback(client)
            return result

        resumption = self.factory.resumption
        hook = self._on_resumed if resumption is not None and resumption.resumed_last else self._on_connected
        if resumption is not None:
            resumption.resumed_last = False
        if hook is None:
            return succeed(None).addCallback(ready)
        return maybeDeferred(hook, client).addCallback(ready)

    @property
    def resumes(self) -> int:
        """Sessions resumed so far (C{HubClientOptions(resume=...)}; docs/resumption.md)."""
        resumption = self.factory.resumption
        return 0 if resumption is None else resumption.resumes

    @property
    def resume_refusals(self) -> dict[str, int]:
        """Resumes that failed, by reason (C{window-expired}, C{session-unknown}, ...)."""
        resumption = self.factory.resumption
        return {} if resumption is None else dict(resumption.refusals)

    def _ended(self, protocol: HubClientProtocol, reason: DisconnectReason) -> None:
        if self.current is protocol:
            self.current = None
        if reason.kind is DisconnectKind.HANDSHAKE_FAILED:
            _log.info("hub handshake failed: {reason}; retrying", reason=reason)
            return
        self.disconnects.append(reason)
        if reason.code == CloseCode.SESSION_MOVED and not reason.locally:
            # Our session was resumed on another connection (docs/protocol.md section 6): it lives
            # on there; reconnecting would only fight over it.
            _log.warn("hub connection ended ({reason}): the session lives on elsewhere; not reconnecting", reason=reason)
            self._stop_after_move()
        else:
            _log.info("hub connection ended ({reason}); reconnecting", reason=reason)
        if self._on_disconnected is not None:
            try:
                self._on_disconnected(reason)
            except Exception:
                _log.failure("on_disconnected callback raised")

    def _stop_after_move(self) -> None:
        if not self.running:
            return
        stopping = self.stopService()
        stopping.addErrback(lambda failure: _log.failure("stopping after 4006 failed", failure))

    def startService(self) -> None:
        """Start connecting (and reconnecting)."""
        Service.startService(self)
        self.service.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop reconnecting and close the current connection with a normal
        WebSocket close (the server sees NORMAL, not a dropped link).  Calls
        waiting for a connection fail with L{ConnectionClosedError}.
        """
        Service.stopService(self)
        current = self.current
        error = ConnectionClosedError(DisconnectReason(DisconnectKind.NORMAL, None, "the client was stopped", locally=True))
        resumption = self.factory.resumption
        if current is not None and current.is_connected:
            closing = current.disconnect()
            closing.addBoth(lambda _: None)
        elif resumption is not None and resumption.resumable:
            # stopped while the session waits for a resume: it ends here (its calls and streams fail)
            for token in resumption.end(error):
                token.errback(error)
        self.current = None
        stopped: Deferred[None] = self.service.stopService()
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.errback(error)
        return stopped

    def start(self) -> None:
        """Start connecting (and reconnecting); the same as C{startService()}."""
        self.startService()

    def stop(self) -> Deferred[None]:
        """Stop, closing the current connection normally; the same as C{stopService()}."""
        return self.stopService()

    def when_connected(self, fail_after_failures: int | None = None) -> Deferred[HubClientProtocol]:
        """
        The connected client, now or after the next successful connection
        (C{ClientService.whenConnected}: no time limit; fails with
        C{CancelledError} when stopped, or after C{fail_after_failures}
        failed attempts in a row).
        """
        connected: Deferred[Any] = self.service.whenConnected(failAfterFailures=fail_after_failures)
        return connected.addCallback(lambda _: self.current or self._next_connection())

    def _next_connection(self) -> Deferred[HubClientProtocol]:
        """The current connection, or the next one within C{wait_for_connection} seconds."""
        current = self.current
        if current is not None and current.is_connected:
            return succeed(current)
        if not self.running or self._wait_for_connection == 0:
            return fail(self._not_connected())
        waiter: Deferred[HubClientProtocol] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(waiter)
        if self._wait_for_connection is not None:
            waiter.addTimeout(
                self._wait_for_connection, self.clock,
                onTimeoutCancel=lambda _, seconds: Failure(self._not_connected(seconds)),
            )
        return waiter

    def _not_connected(self, waited: float | None = None) -> ConnectionClosedError:
        last = self.disconnects[-1] if self.disconnects else None
        if not self.running:
            text = "the client is not running (start() it)"
        elif waited is not None:
            text = f"no connection within {waited}s"
        else:
            text = "not connected"
        if last is not None:
            text += f"; the last connection ended: {last}"
        return ConnectionClosedError(DisconnectReason(DisconnectKind.CONNECTION_LOST, None, text, locally=True))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call a hub method on the current connection, or on the next one if
        there is none (waiting at most C{wait_for_connection} seconds).
        """
        return self._next_connection().addCallback(lambda client: client.call(method, *args, **kwargs))

    def proxy(self, interface: type[InterfaceT] | None = None) -> InterfaceT:
        """The hub as an object whose methods call it once connected (see L{HubClientProtocol.proxy})."""
        return make_proxy(self.call, interface)

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """
        Fire-and-forget on the current connection, like
        L{HubClientProtocol.notify}: nothing is held back for a later one.

        @raise ConnectionClosedError: not connected right now.
        """
        current = self.current
        if current is None:
            raise self._not_connected()
        current.notify(method, *args, **kwargs)
