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
from typing import TYPE_CHECKING, Any, Unpack, cast

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import (
    Logger,
)
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from .._core.base_error import HubArgumentError, HubStateError
from .._core.deprecate import warn_deprecated
from .._core.errors import DisconnectKind
from .._core.heartbeat import HeartbeatPolicy
from .._core.origin import OriginPolicy
from .._core.wire import CloseCode
from .._hubs.auth import redacting_log_formatter
from .._support.logging import HUB_LOG_OBSERVER
from .._support.reactor_keyword import reactor_keyword_deprecated
from .._twisted.compression import describe as describe_compression
from .._twisted.limits import ConnectionGuard
from .._twisted.resource import HubStatusPage, build_site_root, mount, status_json_path
from .._twisted.server import FactoryOptions, HubServerFactory, HubSpec
from .._twisted.server_io import TwistedServerSession
from .endpoints import HealthPage, MetricsPage, StatusJsonPage
from .static import mount_client, serves_demo_hubs

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

    from .files import StaticSpec


#: Seconds C{stopService} waits for connections to close before dropping them.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

_log = Logger(observer=HUB_LOG_OBSERVER)

#: Twisted's serverFromString (unannotated): a reactor and a description in, an endpoint out
_server_from_string = cast(Callable[[IReactorTime, str], IStreamServerEndpoint], serverFromString)


class GracefulShutdown:
    """
    The shutdown of one factory's connections, driven by events (a call
    finishing, a connection closing) and two timers on the factory's clock.

    1. Idle connections get close code 1001 ("going away") at once; a
       connection with hub calls in progress gets it as soon as its calls
       have answered, or C{drain} seconds after the start at the latest
       (calls that have not answered then fail on the client with
       C{ConnectionClosedError}).  While the factory is handing over
       (a backplane that moves sessions), a resumable session is kept for
       another node's claim and its connection gets 1001 at once
       (L{twisted_hub._core.server_resume.SessionResume.hand_off}).
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
        self._open: dict[str, TwistedServerSession] = {}
        self._timers: list[IDelayedCall] = []

    def _connections(self) -> list[TwistedServerSession]:
        handing_over = self.factory.handing_over
        return [
            session for runtime in self.factory.runtimes.values() for session in runtime.connections.values()
            # (a detached session has no connection to close; handing over, it waits for a claim)
            if not (handing_over and session.resumable is not None and session.resumable.detached)
        ]

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
            resumable = session.resumable
            if self.factory.handing_over and resumable is not None:
                # its calls go on here; what they send is kept for the client, which resumes elsewhere
                resumable.hand_off()
            else:
                session.dispatcher.when_idle().addCallback(self._idle, session)
        return self.done

    def _idle(self, _: None, session: TwistedServerSession) -> None:
        self._close(session)

    @staticmethod
    def _close(session: TwistedServerSession) -> None:
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


class SessionHandover:
    """
    A stopping node's wait for the other nodes to claim its sessions
    (docs/resumption.md, "Rolling restarts"): fires with the number of
    sessions still here when none is left or C{timeout} seconds passed
    (the factory's stop then ends them).  Checked every L{CHECK_EVERY} seconds.
    """

    CHECK_EVERY = 0.1

    def __init__(self, factory: HubServerFactory, timeout: float, clock: IReactorTime) -> None:
        self.factory = factory
        self.timeout = timeout
        self.clock = clock
        self.done: Deferred[int] = Deferred()
        self._started = 0.0
        self._check: LoopingCall | None = None

    def _left(self) -> int:
        return sum(len(registry) for registry in self.factory.resume_registries.values())

    def start(self) -> Deferred[int]:
        waiting = self._left()
        if waiting:
            _log.info(
                "handing over: {count} session(s) wait at most {timeout:g} s for their clients to resume on another node",
                count=waiting, timeout=self.timeout,
            )
            self._started = self.clock.seconds()
            self._check = LoopingCall(self._tick)
            self._check.clock = self.clock
            self._check.start(self.CHECK_EVERY, now=False)
        else:
            self.done.callback(0)
        return self.done

    def _tick(self) -> None:
        left = self._left()
        if left and self.clock.seconds() - self._started < self.timeout:
            return
        assert self._check is not None
        self._check.stop()
        moved = sum(registry.moved_out for registry in self.factory.resume_registries.values())
        if left:
            _log.warn(
                "handing over: {left} session(s) were not claimed within {timeout:g} s and end here "
                "({moved} moved so far)", left=left, timeout=self.timeout, moved=moved,
            )
        else:
            _log.info("handing over: every session moved to another node ({moved} so far)", moved=moved)
        self.done.callback(left)


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
    C{factory_options}, e.g. C{compression=CompressionPolicy()}) or an
    existing C{factory}.  With C{listen}
    descriptions (strports, e.g. C{"tcp:8080:interface=127.0.0.1"},
    C{"ssl:8443:privateKey=key.pem:certKey=cert.pem"}, C{"unix:/run/hub.sock"})
    the service listens itself, with the hub endpoint at C{path} and a
    status page at C{status_path}; without, it only owns the factory's
    lifecycle (e.g. when a L{HubResource} is mounted on your own C{Site}),
    so stopping it still shuts the connections down gracefully.  Its own
    listeners apply the factory's connection limits from the moment of
    accept (a L{ConnectionGuard} around the site).

    @param allowed_origins: browser origins allowed to connect, as
        L{HubServerFactory} takes them: exact origins, C{"same-host"} or
        C{"*"}, or a callable; default: same host only (see L{OriginPolicy}).
        Used only when the factory is built here.
    @param status_page: serve the status page (False: 404 there).
    @param status_path: where the status page is (default C{/}, or
        C{/status} when static files are served at C{/}); its data
        is beside it, C{/status.json} (C{/x.json} for a page at C{/x}).  Listening, the
        service also serves C{GET /health} (200, or 503 while shutting down)
        and, when the factory keeps metrics (C{metrics=True}), C{GET /metrics}.
    @param static: the user's own files, served beside the hub on the
        service's listeners: a folder (served at C{/}: its C{index.html} is
        the site's front page), or URL prefixes to folders
        (C{{"/": "site", "/docs": "build/html"}}).  The hub's own paths win
        (the hub endpoint, C{/client/}, C{/health}, the status page and its
        JSON, C{/metrics}, C{/demo/}); among folders the longest prefix
        wins.  Nothing outside a folder is served, nor dot-files (but
        C{.well-known}); see L{twisted_hub._ops.files.StaticFolder}.
    @param static_listing: list the files of a directory that has no
        C{index.html} (default: 404).
    @param shutdown_timeout: seconds C{stopService} may take.
    @param drain_delay: seconds C{stopService} keeps listening (with
        C{/health} answering 503) before it closes the listeners, so a load
        balancer polling C{/health} stops sending new clients first.
    @param clock: the reactor: time source for the shutdown (default: the
        factory's clock) and for a factory built here, and what the C{listen}
        descriptions bind on (default: the global reactor).  C{reactor=} is
        a deprecated name: given with C{clock}, the listeners bind on it and
        the timers use C{clock}, as before.
    @param redis: deprecated: give
        C{backplane=twisted_hub.redis.RedisBackplane(URL)}, the spelling
        L{HubServerFactory} takes too (this one builds exactly that).
    @param factory_options: the other keywords of L{HubServerFactory}
        (L{FactoryOptions<twisted_hub._twisted.server.FactoryOptions>}), e.g. C{compression=CompressionPolicy()} or
        C{backplane=RedisBackplane(url)} (serve as one with the other
        processes on that Redis, C{docs/scaling.md}).  Used only when the
        factory is built here.
    """

    @reactor_keyword_deprecated
    def __init__(
        self,
        hubs: Sequence[HubSpec] | None = None,
        listen: Iterable[str] = (),
        *,
        factory: HubServerFactory | None = None,
        path: str = "/hub",
        status_page: bool = True,
        status_path: str | None = None,
        heartbeat: HeartbeatPolicy | None = None,
        allowed_origins: Iterable[str] | Callable[[ConnectionRequest], bool] = (),
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        drain_delay: float = 0.0,
        clock: IReactorTime | None = None,
        reactor: IReactorTime | None = None,
        redis: str | None = None,
        static: StaticSpec | None = None,
        static_listing: bool = False,
        **factory_options: Unpack[FactoryOptions],
    ) -> None:
        MultiService.__init__(self)
        if (hubs is None) == (factory is None):
            raise HubArgumentError("give either hub classes or a factory")
        #: the static folders, C{(prefix, absolute folder)}, longest prefix first
        self.static: list[tuple[str, str]] = []
        if static is not None:
            from .files import static_mounts

            self.static = static_mounts(static)
        if self.static and not listen:
            raise HubArgumentError(
                "static= serves files on the service's own listeners: give listen= too "
                "(on your own Site, mount twisted.web.static.File beside the HubResource)"
            )
        if status_path is None:
            status_path = "/status" if any(prefix == "/" for prefix, _ in self.static) else "/"
        if redis is not None:
            warn_deprecated("HubService(redis=URL)", "backplane=twisted_hub.redis.RedisBackplane(URL)", stacklevel=4)
            if "backplane" in factory_options:
                raise HubArgumentError("give either redis= or backplane=")
            from ..redis import RedisBackplane

            factory_options["backplane"] = RedisBackplane(redis)
        if not shutdown_timeout > 0:
            raise HubArgumentError(f"shutdown_timeout must be > 0, got {shutdown_timeout!r}")
        if not drain_delay >= 0:
            raise HubArgumentError(f"drain_delay must be >= 0, got {drain_delay!r}")
        # reactor= is deprecated (it warned): it names the listening reactor
        listen_reactor = reactor if reactor is not None else clock
        if clock is None:
            clock = reactor
        #: seconds /health answers 503 before the listeners close (for load balancers)
        self.drain_delay = drain_delay
        if factory is None:
            assert hubs is not None
            factory = HubServerFactory(
                hubs, heartbeat=heartbeat, allowed_origins=allowed_origins, clock=clock, **factory_options,
            )
        elif heartbeat is not None or factory_options or allowed_origins:
            raise HubArgumentError("factory options are for building a factory from hub classes")
        policy = factory.allowed_origins
        #: the factory's origin check, when it is an L{OriginPolicy} (the status page describes it)
        self.origin_policy: OriginPolicy | None = policy if isinstance(policy, OriginPolicy) else None
        self.factory = factory
        self.path = path
        self.listen = list(listen)
        self.shutdown_timeout = shutdown_timeout
        self._clock = clock
        self.site: Site | None = None
        self.root: Resource | None = None
        #: one endpoint per C{listen} description, in order
        self.endpoints: list[IStreamServerEndpoint] = []
        # one listen() per endpoint, from the (privileged) start until stopService
        self._listening: list[Deferred[IListeningPort]] | None = None
        if self.listen:
            status = None
            if status_page:
                extra = [("allowed origins", self._origin_text())]
                status = HubStatusPage(factory, path, self.listen, extra)
            self.root = build_site_root(factory, path, status, status_path)
            if status is not None:
                # /status.json beside a page at /, /x.json beside one at /x
                json_path = status_json_path(status_path)
                status.json_url = json_path
                mount(self.root, path, json_path, StatusJsonPage(factory))
            mount(self.root, path, "/health", HealthPage(factory))
            if factory.metrics is not None:
                mount(self.root, path, "/metrics", MetricsPage(factory))
            links = mount_client(self.root, factory, path, ("/" + status_path.strip("/")) if status_page else None)
            site_root: Resource = self.root
            if self.static:
                from .files import StaticSite, check_static_mounts, reserved_paths, shadowed_files

                reserved = reserved_paths(
                    path, status_path if status_page else None,
                    metrics=factory.metrics is not None, demo=serves_demo_hubs(factory),
                )
                check_static_mounts(self.static, reserved)
                for file_path, hub_path in shadowed_files(self.static, reserved):
                    _log.warn(
                        "static file {file} is not served: the hub serves {hub_path} itself",
                        file=file_path, hub_path=hub_path,
                    )
                site_root = StaticSite(
                    self.root, self.static, reserved, listing=static_listing, host_allowed=factory.host_allowed
                )
                links += [(f"static files at {prefix}", prefix.rstrip("/") + "/") for prefix, _ in reversed(self.static)]
            if status is not None:
                status.links = links
            #: the site's root: L{root}, or a L{StaticSite} around it with the static folders
            self.site = Site(site_root, logFormatter=redacting_log_formatter)
            #: what the listeners serve: the site, behind the connection limits
            self.listening_factory = ConnectionGuard(self.site, factory.limits)
            if listen_reactor is None:
                from twisted.internet import reactor as global_reactor

                listen_reactor = cast(IReactorTime, global_reactor)
            self.endpoints = [_server_from_string(listen_reactor, description) for description in self.listen]

    def _origin_text(self) -> str:
        policy = self.factory.allowed_origins
        return policy.describe() if isinstance(policy, OriginPolicy) else "custom check"

    def listening_ports(self) -> Deferred[list[IListeningPort]]:
        """
        Fires with the listening ports once they are bound (after start).

        @raise HubStateError: the service has not started (or has stopped).
        """
        if self._listening is None:
            raise HubStateError("the service has not started yet")
        ports: Deferred[list[IListeningPort]] = gatherResults(
            [_copy(listening) for listening in self._listening], consumeErrors=True
        )
        return ports.addErrback(_first_failure)

    def _start_listening(self) -> None:
        """
        Listen on every endpoint, once.  A port that cannot be bound now (a
        TCP, SSL or UNIX endpoint binds at once) raises here, as C{twistd}
        expects of C{privilegedStartService}.
        """
        if self._listening is not None or not self.endpoints:
            return
        self._listening = []
        for endpoint in self.endpoints:
            listening = endpoint.listen(self.listening_factory)
            self._listening.append(listening)
            outcome: list[IListeningPort | Failure] = []
            listening.addBoth(_pass_to_list(outcome))
            if outcome and isinstance(outcome[0], Failure):
                # raised here instead (the ports bound before it stay held, for stopService)
                self._listening.remove(listening)
                listening.addErrback(lambda _: None)
                outcome[0].raiseException()

    def _stop_listening(self) -> Deferred[None]:
        """Close the listening ports (or abandon a bind still in progress)."""
        listening, self._listening = self._listening or [], None

        def close(port: IListeningPort) -> Deferred[None]:
            stopped = port.stopListening()
            return stopped if isinstance(stopped, Deferred) else succeed(None)

        closing: list[Deferred[None]] = []
        for attempt in listening:
            attempt.cancel()  # nothing if it is bound already
            closing.append(attempt.addCallbacks(close, lambda _: None))
        return gatherResults(closing).addCallback(lambda _: None)

    def privilegedStartService(self) -> None:
        # Bind the ports (possibly privileged) before twistd drops privileges.
        MultiService.privilegedStartService(self)
        self._start_listening()

    def startService(self) -> None:
        self.factory.limits.check_open_files()  # before anything listens (the factory would check at its start)
        self.factory.doStart()  # type: ignore[no-untyped-call]
        MultiService.startService(self)
        self._start_listening()  # if privilegedStartService did not
        if self.listen:
            self._log_banner()

    def _log_banner(self) -> None:
        """One line saying what this server is and serves (the startup banner)."""
        from .. import __version__
        from .._twisted.resource import _policy_text

        base = "/" + self.path.strip("/")
        hubs = {name: f"{base}/{name}" for name in sorted(self.factory.runtimes)}
        policies = {name: _policy_text(runtime.heartbeat_policy) for name, runtime in sorted(self.factory.runtimes.items())}
        _log.info(
            "twisted-hub {version} listening on {urls}; hubs: {hub_paths}; heartbeat: {heartbeat}; "
            "metrics: {metrics}; compression: {compression}",
            version=__version__,
            urls=", ".join(listen_url(description, base) for description in self.listen),
            hub_paths=", ".join(f"{name} at {path}" for name, path in hubs.items()),
            heartbeat=", ".join(f"{name} {text}" for name, text in policies.items()),
            metrics="on (/metrics)" if self.factory.metrics is not None else "off",
            compression=describe_compression(self.factory.compression),
            hubs=hubs, heartbeat_policies=policies, listen=self.listen,
        )
        for prefix, directory in reversed(self.static):
            _log.info("serving the files of {directory} at {prefix}", directory=directory, prefix=prefix)
        if self.factory.filters:
            names = [
                type(f).__qualname__ if type(f).__repr__ is object.__repr__ else repr(f) for f in self.factory.filters
            ]
            _log.info("filters around every hub call, outermost first: {filters}", filters=", ".join(names))
        authenticator = self.factory.authenticator
        if authenticator is not None:
            _log.info(
                "authentication: {authenticator} (within {timeout:g} s); methods without a policy: {default}",
                authenticator=_name_of(authenticator),
                timeout=self.factory.authentication_timeout,
                default="denied" if self.factory.deny_by_default else "open to every connection",
            )
        elif self.factory.deny_by_default:
            _log.info("methods without an authorization policy: denied")

    def stopService(self) -> Deferred[None]:
        """
        Drain: C{/health} answers 503 at once; after C{drain_delay} seconds
        stop listening; then close every connection gracefully (bounded).
        """
        self.factory.draining = True
        clock = self._clock or self.factory.clock

        def stop_listening(_: object = None) -> Deferred[Any]:
            ports = self._stop_listening()
            stopping = MultiService.stopService(self)
            return gatherResults([ports, stopping if isinstance(stopping, Deferred) else succeed(None)])

        if self.drain_delay > 0:
            _log.info("draining: /health answers 503; listeners close in {delay:g} s", delay=self.drain_delay)
            listeners_stopped: Deferred[Any] = deferLater(clock, self.drain_delay, lambda: None)
            listeners_stopped.addCallback(stop_listening)
        else:
            listeners_stopped = stop_listening()

        factory = self.factory
        # With a backplane that moves sessions, a stopping node's sessions wait for the
        # other nodes to claim them instead of ending (rolling restarts, docs/resumption.md)
        factory.handing_over = factory.moves_sessions and factory.resume_policy is not None

        def close_connections(_: object) -> Deferred[int]:
            closing = shutdown_connections(factory, self.shutdown_timeout, clock)
            if not factory.handing_over:
                return closing

            def hand_over(dropped: int) -> Deferred[int]:
                handover = SessionHandover(factory, self.shutdown_timeout, clock).start()
                return handover.addCallback(lambda _: dropped)

            return closing.addCallback(hand_over)

        def stopped(dropped: int) -> Deferred[None]:
            self.factory.doStop()  # type: ignore[no-untyped-call]
            _log.info("hub service stopped ({dropped} connection(s) dropped at the timeout)", dropped=dropped)
            # The backplane's goodbye must reach Redis before the reactor
            # stops (twistd on SIGTERM): wait for it (it is bounded).
            return self.factory.backplane_left()

        return listeners_stopped.addCallback(close_connections).addCallback(stopped)


def _name_of(thing: object) -> str:
    """A function's name, an object's repr, or its class's name when its repr says nothing more."""
    name = getattr(thing, "__qualname__", None)
    if isinstance(name, str):
        return name
    cls: Any = type(thing)
    return str(cls.__qualname__) if cls.__repr__ is object.__repr__ else repr(thing)


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


def _pass_to_list(outcome: list[Any]) -> Callable[[Any], Any]:
    def passing(result: Any) -> Any:
        outcome.append(result)
        return result

    return passing


def _copy(original: Deferred[IListeningPort]) -> Deferred[IListeningPort]:
    """A Deferred with C{original}'s result, which keeps its result too."""
    copy: Deferred[IListeningPort] = Deferred()

    def passing(result: IListeningPort | Failure) -> IListeningPort | Failure:
        if isinstance(result, Failure):
            copy.errback(result)
        else:
            copy.callback(result)
        return result

    original.addBoth(passing)
    return copy


def _first_failure(failure: Failure) -> Failure:
    """The failure inside gatherResults' C{FirstError}: the port's own error."""
    error = failure.value
    assert isinstance(error, FirstError)
    return error.subFailure
