"""
L{HubService}: hubs as an C{IService}, for C{twistd hub} and for adding to
an existing C{MultiService} / application.

    application = service.Application("myapp")
    HubService([ChatHub], listen=["tcp:8080:interface=127.0.0.1"]).setServiceParent(application)

Stopping the service is the graceful shutdown: listeners close first (no new
connections), connections whose hub calls are still running get a moment to
answer them, then every connection receives close code 1001 ("going away");
C{stopService} returns a Deferred that fires when all connections are closed
or C{shutdown_timeout} seconds have passed (stragglers are then dropped).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from ._errors import DisconnectKind
from ._heartbeat import HeartbeatPolicy
from ._limits import ConnectionGuard
from ._ops import HealthPage, MetricsPage, StatusJsonPage
from ._origin import OriginPolicy
from ._resource import HubStatusPage, build_site_root, mount
from ._server import HubServerFactory, HubSpec
from ._server_session import ServerSession
from ._static import mount_client
from ._wire import CloseCode

#: Seconds C{stopService} waits for connections to close before dropping them.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

_log = Logger()


class GracefulShutdown:
    """
    The shutdown of one factory's connections, driven by events (a call
    finishing, a connection closing) and two timers on the factory's clock.

    1. Idle connections get close code 1001 ("going away") at once; a
       connection with hub calls in progress gets it as soon as its calls
       have answered, or C{drain} seconds after the start at the latest
       (calls that have not answered then fail on the client with
       C{ConnectionClosedError}).
    2. When every connection is gone, or C{timeout} seconds after the start
       (the stragglers are dropped), L{done} fires with the number of
       connections that had to be dropped.
    """

    def __init__(self, factory: HubServerFactory, timeout: float, clock: IReactorTime | None = None) -> None:
        self.factory = factory
        self.clock = clock or factory.clock
        self.timeout = timeout
        self.drain = timeout / 2.0
        self.done: Deferred[int] = Deferred()
        self._open: dict[str, ServerSession] = {}
        self._timers: list[IDelayedCall] = []

    def _connections(self) -> list[ServerSession]:
        return [session for runtime in self.factory.runtimes.values() for session in runtime.connections.values()]

    def start(self) -> Deferred[int]:
        self.factory.draining = True  # /health answers 503 from now on
        connections = self._connections()
        if not connections:
            self._finish(0)
            return self.done
        _log.info(
            "shutting down: closing {count} hub connection(s), at most {timeout:g} s",
            count=len(connections), timeout=self.timeout,
        )
        for session in connections:
            self._open[session.connection_id] = session
            session.when_closed().addCallback(self._closed, session.connection_id)
        self._timers = [
            self.clock.callLater(self.drain, self._drain_over),
            self.clock.callLater(self.timeout, self._timed_out),
        ]
        for session in connections:
            session.dispatcher.when_idle().addCallback(self._idle, session)
        return self.done

    def _idle(self, _: None, session: ServerSession) -> None:
        self._close(session)

    @staticmethod
    def _close(session: ServerSession) -> None:
        session.close_with(CloseCode.GOING_AWAY, "server shutting down", DisconnectKind.GOING_AWAY)

    def _closed(self, _: object, connection_id: str) -> None:
        self._open.pop(connection_id, None)
        if not self._open:
            self._finish(0)

    def _drain_over(self) -> None:
        for session in list(self._open.values()):
            self._close(session)

    def _timed_out(self) -> None:
        stragglers = list(self._open.values())
        for session in stragglers:
            session.abort()
        if stragglers:
            _log.warn(
                "shutdown timeout ({timeout:g} s): dropped {count} connection(s) that did not close",
                timeout=self.timeout, count=len(stragglers),
            )
        self._finish(len(stragglers))

    def _finish(self, dropped: int) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        if not self.done.called:
            self.done.callback(dropped)


def shutdown_connections(
    factory: HubServerFactory, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT, clock: IReactorTime | None = None
) -> Deferred[int]:
    """
    Close every connection of C{factory} gracefully (see L{GracefulShutdown});
    fires with the number of connections dropped at the timeout.
    """
    return GracefulShutdown(factory, timeout, clock).start()


@implementer(IService)
class HubService(MultiService):
    """
    Serve hubs as a Twisted service.

    Either give hub classes (a L{HubServerFactory} is built with
    C{factory_options}) or an existing C{factory}.  With C{listen}
    descriptions (strports, e.g. C{"tcp:8080:interface=127.0.0.1"},
    C{"ssl:8443:privateKey=key.pem:certKey=cert.pem"}, C{"unix:/run/hub.sock"})
    the service listens itself, with the hub endpoint at C{path} and a
    status page at C{status_path}; without, it only owns the factory's
    lifecycle (e.g. when a L{HubResource} is mounted on your own C{Site}),
    so stopping it still shuts the connections down gracefully.  Its own
    listeners apply the factory's connection limits from the moment of
    accept (a L{ConnectionGuard} around the site).

    @param allowed_origins: browser origins allowed to connect: exact
        origins, C{"same-host"} or C{"*"}; default: same host only (see
        L{OriginPolicy}).  Used only when the factory is built here.
    @param status_page: serve the status page (False: 404 there).
    @param status_path: where the status page is (default C{/}); its data
        is beside it, C{/status.json} (C{/x.json} for a page at C{/x}).  Listening, the
        service also serves C{GET /health} (200, or 503 while shutting down)
        and, when the factory keeps metrics (C{metrics=True}), C{GET /metrics}.
    @param shutdown_timeout: seconds C{stopService} may take.
    @param drain_delay: seconds C{stopService} keeps listening (with
        C{/health} answering 503) before it closes the listeners, so a load
        balancer polling C{/health} stops sending new clients first.
    @param clock: time source for the shutdown (default: the factory's).
    @param redis: a C{redis://host:port/db} URL: serve as one with the other
        processes on that Redis (a L{twisted_hub.redis.RedisBackplane};
        give C{backplane=} instead for its other settings).  Used only when
        the factory is built here.  See C{docs/scaling.md}.
    """

    def __init__(
        self,
        hubs: Sequence[HubSpec] | None = None,
        listen: Iterable[str] = (),
        *,
        factory: HubServerFactory | None = None,
        path: str = "/hub",
        status_page: bool = True,
        status_path: str = "/",
        heartbeat: HeartbeatPolicy | None = None,
        allowed_origins: Iterable[str] = (),
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        drain_delay: float = 0.0,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        redis: str | None = None,
        **factory_options: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if (hubs is None) == (factory is None):
            raise TypeError("give either hub classes or a factory")
        if redis is not None:
            if "backplane" in factory_options:
                raise TypeError("give either redis= or backplane=")
            from .redis import RedisBackplane

            factory_options["backplane"] = RedisBackplane(redis)
        if not shutdown_timeout > 0:
            raise ValueError(f"shutdown_timeout must be > 0, got {shutdown_timeout!r}")
        if not drain_delay >= 0:
            raise ValueError(f"drain_delay must be >= 0, got {drain_delay!r}")
        #: seconds /health answers 503 before the listeners close (for load balancers)
        self.drain_delay = drain_delay
        if factory is None:
            assert hubs is not None
            self.origin_policy: OriginPolicy | None = OriginPolicy(allowed_origins)
            factory = HubServerFactory(
                hubs, heartbeat=heartbeat, allowed_origins=self.origin_policy,
                clock=clock, reactor=reactor, **factory_options,
            )
        else:
            if heartbeat is not None or factory_options or allowed_origins:
                raise TypeError("factory options are for building a factory from hub classes")
            policy = factory.allowed_origins
            self.origin_policy = policy if isinstance(policy, OriginPolicy) else None
        self.factory = factory
        self.path = path
        self.listen = list(listen)
        self.shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._reactor = reactor
        self.site: Site | None = None
        self.root: Resource | None = None
        self._listeners: list[Any] = []
        if self.listen:
            status = None
            if status_page:
                extra = [("allowed origins", self._origin_text())]
                status = HubStatusPage(factory, path, self.listen, extra)
            self.root = build_site_root(factory, path, status, status_path)
            if status is not None:
                # /status.json beside a page at /, /x.json beside one at /x
                json_path = (status_path.rstrip("/") or "/status") + ".json"
                status.json_url = json_path
                mount(self.root, path, json_path, StatusJsonPage(factory))
            mount(self.root, path, "/health", HealthPage(factory))
            if factory.metrics is not None:
                mount(self.root, path, "/metrics", MetricsPage(factory))
            links = mount_client(self.root, factory, path)
            if status is not None:
                status.links = links
            self.site = Site(self.root)  # type: ignore[no-untyped-call]
            #: what the listeners serve: the site, behind the connection limits
            self.listening_factory = ConnectionGuard(self.site, factory.limits)
            for description in self.listen:
                listener = strports.service(description, self.listening_factory, reactor=reactor)
                listener.setServiceParent(self)  # type: ignore[no-untyped-call]
                self._listeners.append(listener)

    def _origin_text(self) -> str:
        policy = self.factory.allowed_origins
        if policy is None:
            return "any origin"
        if isinstance(policy, OriginPolicy):
            return policy.describe()
        if callable(policy):
            return "custom check"
        return ", ".join(sorted(policy))

    def listening_ports(self) -> Deferred[list[IListeningPort]]:
        """Fires with the listening ports once they are bound (after start)."""
        waiting = [listener._waitingForPort for listener in self._listeners]
        if any(d is None for d in waiting):
            raise RuntimeError("the service has not started yet")

        def ports(results: list[tuple[bool, Any]]) -> list[IListeningPort]:
            for ok, value in results:
                if not ok:
                    value.raiseException()
            return [value for _, value in results]

        # Chain copies so the service's own Deferreds keep their results.
        copies: list[Deferred[Any]] = []
        for d in waiting:
            copy: Deferred[Any] = Deferred()
            d.addBoth(_pass_to(copy))
            copies.append(copy)
        return DeferredList(copies, consumeErrors=True).addCallback(ports)

    def privilegedStartService(self) -> None:
        # Bind ports (possibly privileged) before twistd drops privileges.
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        self.factory.doStart()  # type: ignore[no-untyped-call]
        super().startService()  # type: ignore[no-untyped-call]
        if self.listen:
            self._log_banner()

    def _log_banner(self) -> None:
        """One line saying what this server is and serves (the startup banner)."""
        from . import __version__
        from ._resource import _policy_text

        base = "/" + self.path.strip("/")
        hubs = {name: f"{base}/{name}" for name in sorted(self.factory.runtimes)}
        policies = {name: _policy_text(runtime.heartbeat_policy) for name, runtime in sorted(self.factory.runtimes.items())}
        _log.info(
            "twisted-hub {version} listening on {urls}; hubs: {hub_paths}; heartbeat: {heartbeat}; "
            "metrics: {metrics}",
            version=__version__,
            urls=", ".join(listen_url(description, base) for description in self.listen),
            hub_paths=", ".join(f"{name} at {path}" for name, path in hubs.items()),
            heartbeat=", ".join(f"{name} {text}" for name, text in policies.items()),
            metrics="on (/metrics)" if self.factory.metrics is not None else "off",
            hubs=hubs, heartbeat_policies=policies, listen=self.listen,
        )

    def stopService(self) -> Deferred[None]:
        """
        Drain: C{/health} answers 503 at once; after C{drain_delay} seconds
        stop listening; then close every connection gracefully (bounded).
        """
        self.factory.draining = True
        clock = self._clock or self.factory.clock

        def stop_listening(_: object = None) -> Deferred[Any]:
            stopping = super(HubService, self).stopService()  # type: ignore[no-untyped-call]
            return stopping if isinstance(stopping, Deferred) else succeed(None)

        if self.drain_delay > 0:
            _log.info("draining: /health answers 503; listeners close in {delay:g} s", delay=self.drain_delay)
            listeners_stopped: Deferred[Any] = deferLater(clock, self.drain_delay, lambda: None)
            listeners_stopped.addCallback(stop_listening)
        else:
            listeners_stopped = stop_listening()

        def close_connections(_: object) -> Deferred[int]:
            return shutdown_connections(self.factory, self.shutdown_timeout, clock)

        def stopped(dropped: int) -> None:
            self.factory.doStop()  # type: ignore[no-untyped-call]
            _log.info("hub service stopped ({dropped} connection(s) dropped at the timeout)", dropped=dropped)

        return listeners_stopped.addCallback(close_connections).addCallback(stopped)


def listen_url(description: str, path: str = "/") -> str:
    """
    The URL a listen description serves (for the startup banner), e.g.
    C{ws://127.0.0.1:8080/hub} or C{wss://0.0.0.0:8443/hub}; C{unix:PATH}
    for a local socket.
    """
    kind, _, rest = description.strip().partition(":")
    if kind.isdigit():
        kind, rest = "tcp", description.strip()
    fields = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", rest)]
    options = dict(field.split("=", 1) for field in fields[1:] if "=" in field)
    scheme = {"tcp": "ws", "tcp6": "ws", "ssl": "wss"}.get(kind.lower())
    if scheme is None or not fields[0].isdigit():
        return f"{kind}:{fields[0]}" if kind.lower() == "unix" else description.split(":", 1)[0] + ":..."
    host = options.get("interface", "0.0.0.0")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{fields[0]}{path}"


def _pass_to(target: Deferred[Any]) -> Callable[[Any], Any]:
    def passing(result: Any) -> Any:
        if isinstance(result, Failure):
            target.errback(result)
        else:
            target.callback(result)
        return result

    return passing


#: C{--log-level} names and their levels.
LOG_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}
_LEVEL_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]
_TXAIO_LEVELS = {
    LogLevel.debug: "debug", LogLevel.info: "info", LogLevel.warn: "warn",
    LogLevel.error: "error", LogLevel.critical: "critical",
}


class LogLevelService(MultiService):
    """
    Apply a minimum log level to the observers of a log publisher (the
    global one by default) while running.

    twistd sets up its log observers after building the service and before
    starting it, so the filter is installed in C{startService} and removed in
    C{stopService}.  Also sets txaio's (autobahn's) level.
    """

    def __init__(self, level: LogLevel, publisher: LogPublisher | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.level = level
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self._wrapped: list[tuple[ILogObserver, ILogObserver]] = []

    def startService(self) -> None:
        observers = list(getattr(self.publisher, "_observers", []))
        predicate = LogLevelFilterPredicate(defaultLogLevel=self.level)
        # Debug is twisted-hub's story (connections, heartbeat timers, calls
        # refused ...); autobahn's own debug output (every HTTP header, every
        # frame) stays at info, or a handful of connections floods the log.
        autobahn_level = max(self.level, LogLevel.info, key=_LEVEL_ORDER.index)
        predicate.setLogLevelForNamespace("autobahn", autobahn_level)
        for observer in observers:
            filtering = FilteringLogObserver(observer, [predicate])
            self.publisher.removeObserver(observer)
            self.publisher.addObserver(filtering)
            self._wrapped.append((observer, filtering))
        import txaio  # autobahn's logging layer (a dependency of autobahn)

        txaio.set_global_log_level(_TXAIO_LEVELS[autobahn_level])  # type: ignore[attr-defined]
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Any:
        result = super().stopService()  # type: ignore[no-untyped-call]

        def unwrap(value: object) -> object:
            for observer, filtering in self._wrapped:
                self.publisher.removeObserver(filtering)
                self.publisher.addObserver(observer)
            self._wrapped = []
            return value

        if isinstance(result, Deferred):
            return result.addBoth(unwrap)
        unwrap(None)
        return result
