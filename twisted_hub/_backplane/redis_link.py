"""
The connections of a L{twisted_hub.redis.RedisBackplane} to Redis: where
Redis is (L{RedisSettings}, from a URL: plain, TLS, or found through
Sentinel) and L{TxRedisConnector}, which keeps two txredisapi connections
up (commands, subscriber), each with a C{ClientService}.

A connection is handed to C{ClientService} only once it is ready: TCP (and
TLS) up, C{AUTH} and C{SELECT} answered, C{PING} answered, the server a
master (through Sentinel), the channels subscribed.  Anything else is a
failed attempt, retried with backoff and reported once per attempt with
Redis's own words (a wrong password, protected mode, a replica), never a
traceback.  Once handed over, each connection is watched: a C{PING} every
C{ping_interval} seconds, and a connection that brings nothing for
C{ping_timeout} seconds is cut (a black-holed path never says it is
gone), so a dead link is noticed within C{ping_interval + ping_timeout}.

txredisapi imports the global reactor: it is imported when first needed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from .._core.base_error import HubArgumentError, TwistedHubError
from .._support.handover import UntilHandedOver
from .._support.logging import HUB_LOG_OBSERVER
from .redis_commands import RedisCommands

__all__ = ["LinkOwner", "RedisLinkError", "RedisSettings", "TxRedisConnector", "parse_redis_url"]

_log = Logger(observer=HUB_LOG_OBSERVER)

_SCHEMES = {
    "redis": (False, False), "rediss": (True, False),
    "redis+sentinel": (False, True), "rediss+sentinel": (True, True),
}
_TLS_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
DEFAULT_SENTINEL_PORT = 26379


class RedisLinkError(TwistedHubError):
    """
    A connection attempt that failed (a L{TwistedHubError}, as every
    exception twisted-hub raises).  C{refused}: Redis (or TLS, or
    Sentinel) answered and said no, which a retry will not change by itself
    (logged at every attempt); else it was not reached (logged once).
    """

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """
    Where Redis is, from a URL (L{parse_redis_url}):
    C{redis://[user:password@]host[:port][/db]}, C{rediss://...} for TLS,
    C{redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db]}
    (and C{rediss+sentinel://}) to ask Sentinel where the master is.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    #: TLS to Redis (and to the Sentinels)
    tls: bool = False
    #: the CA certificates (PEM) that sign Redis's certificate (default: the system's)
    ca_file: str | None = None
    #: a client certificate (PEM) and its key, for Redis's C{tls-auth-clients}
    cert_file: str | None = None
    key_file: str | None = None
    #: the Sentinels to ask, and the name of the master they watch
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None

    def display(self) -> str:
        """The URL without the password (for logs and the status page)."""
        user = f"{self.username}:***@" if self.username else ("***@" if self.password else "")
        scheme = "rediss" if self.tls else "redis"
        if self.sentinels:
            hosts = ",".join(f"{_host_text(host)}:{port}" for host, port in self.sentinels)
            return f"{scheme}+sentinel://{user}{hosts}/{self.service}/{self.db}"
        return f"{scheme}://{user}{_host_text(self.host)}:{self.port}/{self.db}"

    def tls_options(self) -> Any:
        """The TLS client options for a server named C{host} (reads the certificate files)."""
        from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, platformTrust

        def read(path: str, what: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as e:
                raise HubArgumentError(f"cannot read the Redis TLS {what} {path!r}: {e.strerror}") from None

        trust: Any = platformTrust()  # type: ignore[no-untyped-call]
        if self.ca_file is not None:
            pem = read(self.ca_file, "CA file (ssl_ca_certs)")
            try:
                trust = Certificate.loadPEM(pem)
            except Exception as e:
                raise HubArgumentError(f"the Redis TLS CA file {self.ca_file!r} is not usable: {e}") from None
        client = None
        if self.cert_file is not None:
            key = read(self.key_file or self.cert_file, "key file (ssl_keyfile)")
            pem = read(self.cert_file, "certificate (ssl_certfile)") + b"\n" + key
            try:
                client = PrivateCertificate.loadPEM(pem)  # type: ignore[no-untyped-call]
            except Exception as e:
                raise HubArgumentError(f"the Redis TLS client certificate or key is not usable: {e}") from None
        return lambda host: optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _host_port(text: str, default_port: int, url: str) -> tuple[str, int]:
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port_text = rest[1:]
        elif rest:
            raise HubArgumentError(f"cannot read the host {text!r} in {url!r}")
        else:
            port_text = ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        port_text = ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise HubArgumentError(f"the port in {url!r} is not a port number")
        port = int(port_text)
    return host or "127.0.0.1", port


def parse_redis_url(url: str) -> RedisSettings:
    """
    Parse C{redis://[user:password@]host[:port][/db]}, C{rediss://} (TLS;
    query C{ssl_ca_certs=PATH}, C{ssl_certfile=PATH}, C{ssl_keyfile=PATH})
    or C{redis+sentinel://[user:password@]host[:port][,...]/service[/db]};
    ValueError says what is wrong.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise HubArgumentError(
            f"a Redis URL starts with redis://, rediss:// (TLS) or redis+sentinel://, got {url!r}"
        )
    tls, sentinel = _SCHEMES[scheme]
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_TLS_PARAMETERS))
    if unknown:
        raise HubArgumentError(f"unknown Redis URL parameter(s) {', '.join(unknown)} in {url!r}")
    if query and not tls:
        raise HubArgumentError(f"ssl_* parameters need a rediss:// URL, got {url!r}")
    tls_files = {name: values[-1] for name, values in query.items()}
    if "ssl_keyfile" in tls_files and "ssl_certfile" not in tls_files:
        raise HubArgumentError("ssl_keyfile needs ssl_certfile (the client certificate)")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if ":" in userinfo else (userinfo, "", None)
    if password is None and userinfo:
        # redis://secret@host: the password alone, as redis-cli reads it
        username, password = "", userinfo
    path = [p for p in parts.path.split("/") if p]
    service = None
    if sentinel:
        if not path:
            raise HubArgumentError(f"a Sentinel URL names the master: redis+sentinel://host:port/NAME, got {url!r}")
        service, path = unquote(path[0]), path[1:]
    if len(path) > 1 or (path and not path[0].isdigit()):
        raise HubArgumentError(f"the Redis database in {url!r} must be a number, got {'/'.join(path)!r}")
    addresses = [
        _host_port(unquote(text), DEFAULT_SENTINEL_PORT if sentinel else 6379, url)
        for text in (hosts.split(",") if hosts else [""])
    ]
    if len(addresses) > 1 and not sentinel:
        raise HubArgumentError(f"several hosts need a redis+sentinel:// URL, got {url!r}")
    host, port = addresses[0]
    return RedisSettings(
        host=host,
        port=port,
        db=int(path[0]) if path else 0,
        username=unquote(username) if username else None,
        password=unquote(password) if password is not None else None,
        tls=tls,
        ca_file=tls_files.get("ssl_ca_certs"),
        cert_file=tls_files.get("ssl_certfile"),
        key_file=tls_files.get("ssl_keyfile"),
        sentinels=tuple(addresses) if sentinel else (),
        service=service,
    )


# -- the protocols -----------------------------------------------------------------


def _protocols() -> tuple[type[Any], type[Any]]:
    import txredisapi

    class Watched:
        """What both connections add to txredisapi's protocols: reporting, liveness."""

        on_lost: Callable[[str], None] | None = None
        #: set before this side cuts the connection: why (instead of "connection was aborted")
        cut_because: str | None = None
        last_received = 0.0
        watch: LoopingCall | None = None
        transport: Any

        def cut(self, why: str) -> None:
            self.cut_because = why
            if self.transport is not None:
                self.transport.abortConnection()

        def stop_watching(self) -> None:
            if self.watch is not None and self.watch.running:
                self.watch.stop()
            self.watch = None

        def report_lost(self, why: Failure) -> None:
            self.stop_watching()
            if self.on_lost is not None:
                self.on_lost(self.cut_because or why.getErrorMessage())

    class CommandProtocol(Watched, txredisapi.RedisProtocol):  # type: ignore[misc]
        def dataReceived(self, data: bytes, *more: Any) -> None:
            self.last_received = self.clock_seconds()
            super().dataReceived(data, *more)

        def connectionLost(self, why: Failure) -> None:
            # Report first: the commands still waiting then fail as lost with it.
            self.report_lost(why)
            super().connectionLost(why)

    class SubscriberProtocol(Watched, txredisapi.SubscriberProtocol):  # type: ignore[misc]
        on_message: Callable[[bytes, bytes], None] | None = None

        def dataReceived(self, data: bytes, *more: Any) -> None:
            self.last_received = self.clock_seconds()
            super().dataReceived(data, *more)

        def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
            if self.on_message is not None:
                self.on_message(channel, message)

        def connectionLost(self, why: Failure) -> None:
            self.report_lost(why)
            super().connectionLost(why)

    return CommandProtocol, SubscriberProtocol


@implementer(IProtocolFactory)
class _RedisClientFactory:
    """Builds txredisapi protocols (bytes in and out; AUTH and SELECT are ours) for ClientService."""

    isLazy = True

    def __init__(self, protocol_class: type[Any], setup: Callable[[Any], None]) -> None:
        self.protocol_class = protocol_class
        self.setup = setup
        #: the protocol built last (the one being connected)
        self.last_built: Any = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.protocol_class(charset=None, convertNumbers=False)
        protocol.factory = self
        self.setup(protocol)
        self.last_built = protocol
        return protocol

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def stopTrying(self) -> None:
        pass

    def connectionError(self, message: str) -> None:
        pass  # txredisapi's own AUTH and SELECT are not used


class _GuardingFactory(Factory):
    noisy = False

    def __init__(self, service_factory: Any, redis_factory: _RedisClientFactory) -> None:
        self.service_factory = service_factory
        self.redis_factory = redis_factory

    def buildProtocol(self, addr: Any) -> UntilHandedOver | None:
        proxy = self.service_factory.buildProtocol(addr)
        if proxy is None:
            return None
        return UntilHandedOver(proxy, self.redis_factory.last_built)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service_factory, name)


def _reply_error(failure: Failure) -> str | None:
    """Redis's own words when C{failure} is an error reply, else None."""
    import txredisapi

    if failure.check(txredisapi.ResponseError) and not failure.check(txredisapi.ConnectionError):
        return str(failure.value)
    return None


async def _link_handshake(protocol: Any, settings: RedisSettings, channels: list[bytes] | None) -> None:
    """What makes a connection to Redis ready: AUTH, SELECT, PING, ROLE (Sentinel), SUBSCRIBE."""
    s = settings
    if s.password is not None:
        await protocol.execute_command(*(("AUTH", s.username) if s.username else ("AUTH",)), s.password)
    if s.db:
        await protocol.execute_command("SELECT", s.db)
    await protocol.execute_command("PING")
    if s.sentinels:
        role = await protocol.execute_command("ROLE")
        name = role[0] if isinstance(role, list) and role else role
        if name not in (b"master", "master"):
            raise RedisLinkError(
                f"{_host_text(protocol.transport.getPeer().host)}:{protocol.transport.getPeer().port} is not the "
                f"master of {s.service!r} (role {name!r}): a failover in progress?", refused=True,
            )
    for channel in channels or ():
        # One SUBSCRIBE per channel: one confirmation each, none left over
        # to answer the liveness PINGs.
        await protocol.subscribe([channel])


@implementer(IStreamClientEndpoint)
class _ReadyEndpoint:
    """
    Connects through C{endpoint}, then makes the connection ready
    (C{handshake}) within C{timeout} seconds before it reports it: for
    C{ClientService} a connection is a ready one, anything else a failed
    attempt (the connection is cut).
    """

    def __init__(
        self, endpoint: Any, redis_factory: _RedisClientFactory, clock: Any, timeout: float,
        handshake: Callable[[Any], Any],
    ) -> None:
        self._endpoint = endpoint
        self._redis_factory = redis_factory
        self._clock = clock
        self._timeout = timeout
        self._handshake = handshake

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        connecting: Deferred[Any] = self._endpoint.connect(_GuardingFactory(protocolFactory, self._redis_factory))
        return connecting.addCallback(self._ready)

    def _ready(self, guard: UntilHandedOver) -> Deferred[Any]:
        protocol = guard.inner
        timer = self._clock.callLater(
            self._timeout, protocol.cut, f"no answer from Redis within {self._timeout:g} s of connecting"
        )

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if not isinstance(result, Failure):
                guard.handed_over = True
                return guard.proxy
            if protocol.connected and protocol.transport is not None:
                protocol.transport.abortConnection()
            if result.check(RedisLinkError):
                return result
            said = _reply_error(result)
            if said is not None:
                return Failure(RedisLinkError(said.rstrip("."), refused=True))
            if protocol.cut_because is not None:
                return Failure(RedisLinkError(protocol.cut_because, refused=False))
            lost = guard.lost_reason
            if lost is not None and ("certificate" in lost.lower() or "ssl" in lost.lower() or "tls" in lost.lower()):
                return Failure(RedisLinkError(f"TLS with Redis failed: {lost}", refused=True))
            return Failure(RedisLinkError(lost or result.getErrorMessage(), refused=False))

        return ensureDeferred(self._handshake(protocol)).addBoth(done)


@implementer(IStreamClientEndpoint)
class _FirstOf:
    """Connects to the first of C{endpoints} that answers (the Sentinels, for the watch)."""

    def __init__(self, endpoints: list[tuple[str, Any]]) -> None:
        self._endpoints = endpoints

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        return ensureDeferred(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: Any) -> Any:
        said = []
        for name, endpoint in self._endpoints:
            try:
                return await endpoint.connect(protocolFactory)
            except Exception as e:
                said.append(f"{name}: {e or type(e).__name__}")
        raise RedisLinkError(f"no Sentinel answered ({'; '.join(said)})", refused=False)


@implementer(IStreamClientEndpoint)
class _SentinelEndpoint:
    """Asks the Sentinels, in turn, where the master is; then connects to it."""

    def __init__(self, reactor: Any, settings: RedisSettings, direct: Callable[[str, int], Any], timeout: float) -> None:
        self._reactor = reactor
        self._settings = settings
        self._direct = direct
        self._timeout = timeout

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        return ensureDeferred(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: Any) -> Any:
        import txredisapi
        from twisted.internet.endpoints import connectProtocol

        s = self._settings
        said: list[str] = []
        for host, port in s.sentinels:
            protocol = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
            try:
                asking = connectProtocol(self._direct(host, port), protocol)
                asking.addTimeout(self._timeout, self._reactor)
                await asking
                answer = protocol.execute_command("SENTINEL", "get-master-addr-by-name", s.service)
                answer.addTimeout(self._timeout, self._reactor)
                address = await answer
            except Exception as e:
                said.append(f"{host}:{port}: {e or type(e).__name__}")
                continue
            finally:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()
            if not address:
                said.append(f"{host}:{port} knows no master {s.service!r}")
                continue
            master_host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
            return await self._direct(master_host, int(address[1])).connect(protocolFactory)
        raise RedisLinkError(f"no Sentinel gave the address of {s.service!r} ({'; '.join(said)})", refused=False)


@implementer(ILogObserver)
class _RetryLog:
    """ClientService's line per retry, at debug level: the backplane logs what matters."""

    def __call__(self, event: LogEvent) -> None:
        HUB_LOG_OBSERVER({**event, "log_level": LogLevel.debug})


class _RedisClientService(ClientService):
    _log = Logger(observer=_RetryLog())


#: seconds between PINGs on each connection
DEFAULT_PING_INTERVAL = 1.0
#: seconds a connection may bring nothing before it is cut
DEFAULT_PING_TIMEOUT = 2.0


class LinkOwner(Protocol):
    """
    What a L{TxRedisConnector} reads from and reports to: the backplane that
    owns the connections (L{twisted_hub.redis.RedisBackplane}, a layer above
    this one, so it is named here by what it must offer, not imported).
    """

    @property
    def settings(self) -> RedisSettings:
        """Where Redis is, and how to reach it."""

    @property
    def channel_all(self) -> bytes:
        """The channel every node subscribes to."""

    @property
    def channel_node(self) -> bytes:
        """This node's own channel."""

    @property
    def connected_commands(self) -> bool:
        """True while the command connection is up."""

    def link_message(self, channel: bytes, data: bytes) -> None:
        """A message arrived on a subscribed channel."""

    def link_ready(self, which: str, link: RedisCommands | None = None) -> None:
        """A connection (C{"commands"}, with its protocol, or C{"subscriber"}) is ready for use."""

    def link_lost(self, which: str, reason: str) -> None:
        """A connection in use was lost."""

    def link_failed(self, reason: str, refused: bool = False, retry_in: float | None = None) -> None:
        """An attempt to connect failed; the next one is in C{retry_in} seconds."""


class TxRedisConnector:
    """
    Two txredisapi connections (commands, subscriber), each kept up by a
    C{ClientService} that reconnects with C{backoffPolicy}, each made ready
    before use and watched once in use (the module's docstring).

    @param retry_policy: attempt number -> seconds before the next attempt
        (default: 0.25 s doubling to 1 s, plus up to 0.25 s of jitter: a
        node is back within about a second of Redis).
    @param connect_timeout: seconds one connection attempt may take to
        connect, and then to be made ready.
    @param close_timeout: seconds L{stop} waits for the connections to
        close before cutting them.
    @param ping_interval: seconds between PINGs on each connection.
    @param ping_timeout: a connection that brings nothing (no answer, no
        message) for this long is cut: a dead path is noticed within
        C{ping_interval + ping_timeout} seconds.
    """

    def __init__(
        self,
        retry_policy: Callable[[int], float] | None = None,
        connect_timeout: float = 2.0,
        reactor: Any = None,
        close_timeout: float = 1.0,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
    ) -> None:
        if not 0 < ping_interval < ping_timeout:
            raise HubArgumentError("ping_interval must be > 0 and shorter than ping_timeout")
        self.retry_policy = retry_policy or backoffPolicy(
            initialDelay=0.25, maxDelay=1.0, factor=2.0, jitter=lambda: random.uniform(0.0, 0.25)
        )
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._reactor = reactor
        self._services: list[ClientService] = []
        #: the newest protocol of each connection
        self._protocols: dict[str, Any] = {}
        #: why the last attempt of each connection failed (reported with the next delay)
        self._failures: dict[str, RedisLinkError] = {}

    def _reactor_or_global(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor as global_reactor

            self._reactor = global_reactor
        return self._reactor

    def _endpoint(self, settings: RedisSettings) -> Callable[[str, int], Any]:
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        reactor = self._reactor_or_global()
        tls = settings.tls_options() if settings.tls else None

        def direct(host: str, port: int) -> Any:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=self.connect_timeout)
            return wrapClientTLS(tls(host), endpoint) if tls is not None else endpoint

        return direct

    def start(self, backplane: LinkOwner) -> None:
        reactor = self._reactor_or_global()
        command_class, subscriber_class = _protocols()
        settings = backplane.settings
        direct = self._endpoint(settings)
        target = (
            _SentinelEndpoint(reactor, settings, direct, self.connect_timeout)
            if settings.sentinels else direct(settings.host, settings.port)
        )

        def setup(which: str) -> Callable[[Any], None]:
            def prepare(protocol: Any) -> None:
                protocol.clock_seconds = reactor.seconds
                protocol.last_received = reactor.seconds()
                if which == "subscriber":
                    protocol.on_message = backplane.link_message

            return prepare

        def policy(which: str) -> Callable[[int], float]:
            def delay(attempt: int) -> float:
                seconds = self.retry_policy(attempt)
                failure = self._failures.pop(which, None)
                if failure is not None and (which == "commands" or backplane.connected_commands):
                    backplane.link_failed(str(failure), refused=failure.refused, retry_in=seconds)
                return seconds

            return delay

        def failed(which: str) -> Callable[[Failure], Failure]:
            def record(failure: Failure) -> Failure:
                error = failure.value
                if not isinstance(error, RedisLinkError):
                    error = RedisLinkError(failure.getErrorMessage() or type(error).__name__, refused=False)
                self._failures[which] = error
                return failure

            return record

        def ready(which: str) -> Callable[[Any], None]:
            def handed_over(proxy: Any) -> None:
                protocol = getattr(proxy, "_protocol", proxy)  # ClientService's proxy wraps it
                self._protocols[which] = protocol
                # From now on its end is the backplane's business (before, a failed attempt).
                protocol.on_lost = lambda reason: backplane.link_lost(which, reason)
                self._watch(protocol)
                if which == "commands":
                    backplane.link_ready("commands", protocol)
                else:
                    backplane.link_ready("subscriber")

            return handed_over

        def handshake(channels: list[bytes] | None) -> Callable[[Any], Any]:
            return lambda protocol: _link_handshake(protocol, settings, channels)

        for which, protocol_class, channels in (
            ("commands", command_class, None),
            ("subscriber", subscriber_class, [backplane.channel_all, backplane.channel_node]),
        ):
            factory = _RedisClientFactory(protocol_class, setup(which))
            endpoint = _ReadyEndpoint(target, factory, reactor, self.connect_timeout, handshake(channels))
            service = _RedisClientService(
                _Recording(endpoint, failed(which)), factory, retryPolicy=policy(which), clock=reactor,
                prepareConnection=ready(which),
            )
            service.startService()
            self._services.append(service)
        if settings.sentinels:
            self._watch_sentinels(settings, direct, reactor, subscriber_class)

    def _watch_sentinels(
        self, settings: RedisSettings, direct: Callable[[str, int], Any], reactor: Any, subscriber_class: type[Any],
    ) -> None:
        """
        A connection to a Sentinel, subscribed to C{+switch-master}: when
        the master of our service changes, both links are cut, and made
        again to the new master.  (A master that is demoted while alive
        stays a master until Sentinel reconfigures it, which may take 10 s:
        nodes must not keep writing to it meanwhile.)
        """
        service_name = settings.service or ""

        def where() -> tuple[str, int] | None:
            protocol = self._protocols.get("commands")
            if protocol is None or protocol.transport is None:
                return None
            peer = protocol.transport.getPeer()
            return (str(peer.host), int(peer.port))

        def switch(host: str, port: int) -> None:
            current = where()
            if current is None or current == (host, port):
                return
            for protocol in list(self._protocols.values()):
                protocol.cut(f"Sentinel moved the master of {service_name!r} to {_host_text(host)}:{port}")

        def heard(channel: bytes, message: bytes) -> None:
            words = message.decode("utf-8", "replace").split()
            if len(words) == 5 and words[0] == service_name and words[4].isdigit():
                switch(words[3], int(words[4]))

        def setup(protocol: Any) -> None:
            protocol.clock_seconds = reactor.seconds
            protocol.on_message = heard

        async def handshake(protocol: Any) -> None:
            address = await protocol.execute_command("SENTINEL", "get-master-addr-by-name", service_name)
            if address:
                host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
                switch(host, int(address[1]))  # a switch missed while not watching
            await protocol.subscribe(["+switch-master"])

        factory = _RedisClientFactory(subscriber_class, setup)
        endpoints = [(f"{_host_text(host)}:{port}", direct(host, port)) for host, port in settings.sentinels]
        endpoint = _ReadyEndpoint(_FirstOf(endpoints), factory, reactor, self.connect_timeout, handshake)
        service = _RedisClientService(endpoint, factory, retryPolicy=self.retry_policy, clock=reactor)
        service.startService()
        self._services.append(service)

    def _watch(self, protocol: Any) -> None:
        """PING every C{ping_interval}; cut the connection if nothing came for C{ping_timeout}."""
        reactor = self._reactor_or_global()
        interval, timeout = self.ping_interval, self.ping_timeout
        last_tick = [reactor.seconds()]
        protocol.last_received = reactor.seconds()

        def tick() -> None:
            now = reactor.seconds()
            if now - last_tick[0] > interval + timeout:
                # This reactor stalled (not Redis): what came meanwhile may
                # still be unread.  Judge from now on.
                protocol.last_received = now
            last_tick[0] = now
            silent = now - protocol.last_received
            if silent > timeout:
                protocol.cut(f"no answer from Redis for {silent:.1f} s (PING every {interval:g} s)")
                return
            if protocol.connected:
                protocol.execute_command("PING").addErrback(lambda _: None)

        protocol.watch = LoopingCall(tick)
        protocol.watch.clock = reactor
        protocol.watch.start(interval, now=False)

    def drained(self, then: Callable[[], None]) -> None:
        """
        Call C{then} once every message Redis sent the subscriber connection
        before now has been handled: Redis answers a PING there after the
        messages it sent before it, in order.  At once when that connection
        is not up; if it is lost before the answer, C{then} runs then (its
        loss is reported as any loss is, by L{LinkOwner.link_lost}).
        """
        protocol = self._protocols.get("subscriber")
        if protocol is None or not protocol.connected:
            then()
            return

        def lost(failure: Failure) -> None:
            # (the connection's end is reported by its own path; here it only ends the wait)
            then()

        protocol.execute_command("PING").addCallbacks(lambda _: then(), lost)

    def stop(self) -> Deferred[None]:
        """Close both connections (cut after C{close_timeout} seconds: a dead path never confirms a close)."""
        services, self._services = self._services, []
        protocols, self._protocols = list(self._protocols.values()), {}
        for protocol in protocols:
            protocol.stop_watching()
        stopped = [d for d in (service.stopService() for service in services) if isinstance(d, Deferred)]
        reactor = self._reactor_or_global()

        def cut() -> None:
            for protocol in protocols:
                transport = getattr(protocol, "transport", None)
                if transport is not None and getattr(protocol, "connected", False):
                    transport.abortConnection()

        timer = reactor.callLater(self.close_timeout, cut)
        done: Deferred[Any] = gatherResults(stopped)

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()

        return done.addCallback(finished)


@implementer(IStreamClientEndpoint)
class _Recording:
    """Passes every failed attempt to C{failed} (to report it with the delay before the next one)."""

    def __init__(self, endpoint: Any, failed: Callable[[Failure], Failure]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        connecting: Deferred[Any] = self._endpoint.connect(protocolFactory)
        return connecting.addErrback(self._failed)
