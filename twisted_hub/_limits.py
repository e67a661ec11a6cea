"""
Limits on connections before they are hub connections.

A peer that opens connections and never finishes the WebSocket opening
handshake (or trickles it one byte at a time: "slowloris") costs the server a
file descriptor each.  Two limits bound that:

- a B{handshake deadline}, counted from the moment the connection is accepted
  (not from the last byte, so trickling does not extend it): a connection
  that is not an open WebSocket by then is aborted;
- B{caps} on the connections a server holds, in total and per peer address
  (IPv4 address, IPv6 /64 network): one over a cap is closed at once, before
  a byte is read.

L{ConnectionLimits} holds the counts and settings (one per
L{HubServerFactory}); the factory's protocol applies them to connections it
accepts itself (C{listenTCP(port, factory)}).  Behind C{twisted.web} the HTTP
request is read by the C{Site}'s protocol before any hub code runs, so a
site that serves hubs is wrapped in a L{ConnectionGuard}, which applies the
same limits from the moment of accept (L{HubService} does this itself).

Over TLS the guard also answers for the site in ALPN (the TLS extension that
names the protocol spoken inside): it offers exactly L{HUB_ALPN_PROTOCOLS},
C{http/1.1}.  Without that answer C{TLSMemoryBIOFactory} finds no
C{IProtocolNegotiationFactory} on the factory it wraps and fails every
handshake whose client offers ALPN (every browser, curl) with an
C{internal_error} alert.  C{h2} is never offered, even when the wrapped
C{Site} would offer it (it does when the C{h2} package is installed): a
WebSocket is an HTTP/1.1 upgrade, and C{twisted.web} cannot carry one over
HTTP/2 (RFC 8441), so a client that picked C{h2} could not open a hub
connection.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ._base_error import HubArgumentError
from ._logging import HUB_LOG_OBSERVER
from ._ratelimit import LogRateLimiter

#: Seconds from accept to the end of the WebSocket opening handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Connections one server holds at most (open hub connections and handshakes).
DEFAULT_MAX_CONNECTIONS = 10_000
#: Connections from one IPv4 address or IPv6 /64 network at most.
DEFAULT_MAX_CONNECTIONS_PER_IP = 256
#: A refusal of one kind is logged at most once per this many seconds.
LOG_INTERVAL = 10.0
#: Files a hub process needs besides its connections: listening sockets, the
#: log, Python modules and stdio, the reactor's waker and epoll (about 50),
#: with room to spare.  docs/deploying.md, "Open files".
OPEN_FILE_HEADROOM = 100
#: What a hub listener offers in TLS ALPN: HTTP/1.1 only, the protocol a
#: WebSocket opening handshake is an upgrade of (RFC 6455).
HUB_ALPN_PROTOCOLS: tuple[bytes, ...] = (b"http/1.1",)

_log = Logger(observer=HUB_LOG_OBSERVER)
_CONNECTION_DONE = Failure(ConnectionDone())


def open_file_limit() -> tuple[int, int] | None:
    """This process's open-file limit, C{(soft, hard)} (-1: unlimited); None where there is none (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft), int(hard)


def open_file_limit_warning(max_connections: int | None, limit: tuple[int, int] | None) -> str | None:
    """
    What to tell the operator when the open-file limit C{(soft, hard)} is
    below the connection cap plus L{OPEN_FILE_HEADROOM} (every connection,
    in its handshake or open, is one file): the server would stop accepting
    (C{EMFILE}) before the cap.  None when it is not (or either is unlimited).
    """
    if max_connections is None or limit is None:
        return None
    soft, hard = limit
    needed = max_connections + OPEN_FILE_HEADROOM
    if soft < 0 or soft >= needed:
        return None
    text = (
        f"the open-file limit (RLIMIT_NOFILE, soft) is {soft}, below max_connections {max_connections} "
        f"+ {OPEN_FILE_HEADROOM}: about {max(soft - OPEN_FILE_HEADROOM, 0)} connections fit, then accepting fails "
        f"(EMFILE). Raise it to {needed} or more: LimitNOFILE={needed} in the systemd unit, "
        f"`ulimit -n {needed}` in the shell that starts the server, or lower max_connections (docs/deploying.md)"
    )
    if 0 <= hard < needed:
        text += f"; the hard limit ({hard}) is below it too, and only root can raise that"
    return text


def address_key(address: IAddress) -> str | None:
    """
    The per-peer counting key of a peer address: the IPv4 address, the /64
    network of an IPv6 address (one host usually has a whole /64), or None
    for addresses without a host (UNIX sockets), which count in the total only.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimitedLog:
    """
    Warnings about peers, at most one line per kind per C{interval} seconds
    (a L{LogRateLimiter} per kind); the next line says how many were left
    out.  A flood of refused connections must not become a flood of log lines.
    """

    def __init__(self, clock: IReactorTime, interval: float = LOG_INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self._limiters: dict[str, LogRateLimiter] = {}

    def warn(self, kind: str, format: str, **fields: Any) -> None:
        """Log C{format} (which may use C{{suppressed}}) unless C{kind} was logged recently."""
        limiter = self._limiters.get(kind)
        if limiter is None:
            limiter = self._limiters[kind] = LogRateLimiter(self.interval)
        suppressed = limiter.allow(self.clock.seconds())
        if suppressed is not None:
            _log.warn(format, suppressed=suppressed, limit_kind=kind, **fields)


def _optional_cap(name: str, value: int | None) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HubArgumentError(f"{name} must be a whole number >= 0 (0 or None: no limit), got {value!r}")
    return value


class ConnectionLimits:
    """
    The connection counts of one server and its caps.

    @param max_connections: connections held at most (None or 0: no cap).
    @param max_connections_per_ip: connections per peer address at most
        (see L{address_key}; None or 0: no cap).
    @param handshake_timeout: seconds from accept to the end of the WebSocket
        opening handshake.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_ip: int | None = DEFAULT_MAX_CONNECTIONS_PER_IP,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if not handshake_timeout > 0 or handshake_timeout == float("inf"):
            raise HubArgumentError(f"handshake_timeout must be a finite number > 0, got {handshake_timeout!r}")
        self.clock = clock
        self.max_connections = _optional_cap("max_connections", max_connections)
        self.max_connections_per_ip = _optional_cap("max_connections_per_ip", max_connections_per_ip)
        self.handshake_timeout = float(handshake_timeout)
        #: connections currently counted
        self.open_connections = 0
        #: connections currently counted, per L{address_key}
        self.per_address: dict[str, int] = {}
        self.log = RateLimitedLog(clock)

    def admit(self, address: IAddress) -> bool:
        """
        Count a new connection from C{address}; False (and a log line, rate
        limited) when a cap is reached, in which case nothing was counted.
        """
        key = address_key(address)
        if self.max_connections is not None and self.open_connections >= self.max_connections:
            self.log.warn(
                "total",
                "refused a connection from {peer}: the server holds its maximum of {limit} connections "
                "(max_connections; {suppressed} more refused since the last message)",
                peer=key or "a local socket", limit=self.max_connections,
            )
            return False
        if key is not None:
            count = self.per_address.get(key, 0)
            if self.max_connections_per_ip is not None and count >= self.max_connections_per_ip:
                self.log.warn(
                    "per-ip",
                    "refused a connection from {peer}: it holds its maximum of {limit} connections "
                    "(max_connections_per_ip; {suppressed} more refused since the last message)",
                    peer=key, limit=self.max_connections_per_ip,
                )
                return False
            self.per_address[key] = count + 1
        self.open_connections += 1
        return True

    def release(self, address: IAddress) -> None:
        """Stop counting a connection L{admit} counted."""
        self.open_connections -= 1
        key = address_key(address)
        if key is not None:
            count = self.per_address[key] - 1
            if count:
                self.per_address[key] = count
            else:
                del self.per_address[key]

    def handshake_timed_out(self, address: IAddress) -> None:
        """Log (rate limited) that a connection missed the handshake deadline."""
        self.log.warn(
            "handshake",
            "closed a connection from {peer} that did not finish the WebSocket opening handshake "
            "within {timeout:g} s of being accepted ({suppressed} more closed since the last message)",
            peer=address_key(address) or "a local socket", timeout=self.handshake_timeout,
        )


def is_open_websocket(protocol: IProtocol | None) -> bool:
    """True when C{protocol} is a WebSocket past its opening handshake."""
    return isinstance(protocol, WebSocketProtocol) and protocol.state != WebSocketProtocol.STATE_CONNECTING


def _log_prefix(wrapped: object) -> str:
    if ILoggingContext.providedBy(wrapped):
        return str(wrapped.logPrefix())
    return wrapped.__class__.__name__


#: The first byte of a TLS ClientHello (a handshake record); no HTTP request starts with it.
TLS_HANDSHAKE_RECORD = b"\x16"
_NOT_TLS_TEXT = b"This port speaks plain HTTP and ws://, not TLS: use http:// or ws:// URLs.\n"
_NOT_TLS_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_NOT_TLS_TEXT), _NOT_TLS_TEXT)
)


class GuardedConnection(ProtocolWrapper):
    """One connection accepted through a L{ConnectionGuard}."""

    factory: ConnectionGuard

    def __init__(self, factory: ConnectionGuard, wrappedProtocol: IProtocol, peer: IAddress) -> None:
        super().__init__(factory, wrappedProtocol)
        self.peer_address = peer
        self._deadline: IDelayedCall | None = None
        self._first_data = True

    def makeConnection(self, transport: Any) -> None:
        limits = self.factory.limits
        self._deadline = limits.clock.callLater(limits.handshake_timeout, self._deadline_passed)
        ProtocolWrapper.makeConnection(self, transport)

    def logPrefix(self) -> str:
        return _log_prefix(self.wrappedProtocol)

    def dataReceived(self, data: bytes) -> None:
        if self._first_data:
            self._first_data = False
            if data[:1] == TLS_HANDSHAKE_RECORD:
                # A TLS client (https://, wss://) on a plain port: answer in
                # plain HTTP at once, which its TLS library reports as "wrong
                # version number" now rather than after a timeout.
                self.transport.write(_NOT_TLS_ANSWER)  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
        ProtocolWrapper.dataReceived(self, data)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if is_open_websocket(self.wrappedProtocol):
            return
        self.factory.limits.handshake_timed_out(self.peer_address)
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        ProtocolWrapper.connectionLost(self, reason)


@implementer(IProtocolNegotiationFactory)
class ConnectionGuard(WrappingFactory[GuardedConnection]):
    """
    Wrap the C{Site} that serves a L{HubResource} to apply a factory's
    L{ConnectionLimits} from the moment a connection is accepted:

        site = Site(root)          # root holds HubResource(hubs)
        endpoint.listen(ConnectionGuard(site, hubs.limits))

    Every connection through it counts against the caps (one over a cap is
    closed at once) and must be an open WebSocket within the handshake
    timeout of being accepted, or it is aborted.  That includes plain HTTP
    requests to other resources of the site: wrap a site that serves hubs
    (and small pages), not one that serves long downloads.

    Behind TLS it offers C{http/1.1} in ALPN for the site (see the module
    docstring): browsers and curl, which offer ALPN, then connect.
    """

    protocol = GuardedConnection
    #: no "Starting factory" lines of its own: the wrapped site logs them
    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, limits: ConnectionLimits) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.limits = limits

    def logPrefix(self) -> str:
        # "Site starting on 8080", as without the guard.
        return _log_prefix(self.wrappedFactory)

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN: HTTP/1.1 only, whatever the wrapped factory would offer (never h2)."""
        return list(HUB_ALPN_PROTOCOLS)

    def buildProtocol(self, addr: IAddress | None) -> GuardedConnection | None:  # type: ignore[override]
        # None refuses the connection: the port closes the socket at once.
        assert addr is not None
        if not self.limits.admit(addr):
            return None
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            self.limits.release(addr)
            return None
        return GuardedConnection(self, wrapped, addr)

    def unregisterProtocol(self, p: GuardedConnection) -> None:
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
        self.limits.release(p.peer_address)
