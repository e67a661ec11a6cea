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
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from .._core.connection_limits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    LOG_INTERVAL,
    OPEN_FILE_HEADROOM,
    ConnectionCounts,
    RateLimitedLog,
    address_key,
    open_file_limit,
    open_file_limit_warning,
)
from .._core.sentinel import UNSET, Unset
from .._support.logging import TwistedCoreLog

#: What a hub listener offers in TLS ALPN: HTTP/1.1 only, the protocol a
#: WebSocket opening handshake is an upgrade of (RFC 6455).
HUB_ALPN_PROTOCOLS: tuple[bytes, ...] = (b"http/1.1",)

#: the limits' log lines, in the namespace they always had
_LIMITS_LOG = TwistedCoreLog("twisted_hub._twisted.limits")
_CONNECTION_DONE = Failure(ConnectionDone())


__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_CONNECTIONS_PER_IP", "HUB_ALPN_PROTOCOLS",
    "LOG_INTERVAL", "OPEN_FILE_HEADROOM", "ConnectionGuard", "ConnectionLimits", "GuardedConnection", "RateLimitedLog",
    "address_key", "is_open_websocket", "open_file_limit", "open_file_limit_warning",
]


class ConnectionLimits(ConnectionCounts):
    """
    The connection counts of one server and its caps (L{ConnectionCounts}),
    on a Twisted clock, logging through C{twisted.logger}.

    @param max_connections: connections held at most (None or 0: no cap).
    @param max_connections_per_ip: connections per peer address at most
        (see L{address_key}; None or 0: no cap).
    @param handshake_timeout: seconds from accept to the end of the WebSocket
        opening handshake.
    """

    clock: IReactorTime

    def __init__(
        self,
        clock: IReactorTime,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_ip: int | None = DEFAULT_MAX_CONNECTIONS_PER_IP,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(clock, _LIMITS_LOG, max_connections, max_connections_per_ip, handshake_timeout)

    def check_open_files(self, limit: tuple[int, int] | None | Unset = UNSET) -> str | None:
        """
        Once per server: log a warning when this process's open-file limit
        (or C{limit}, C{(soft, hard)}) is below C{max_connections} plus
        L{OPEN_FILE_HEADROOM} (docs/deploying.md, "Open files").
        """
        return super().check_open_files(open_file_limit() if limit is UNSET else limit)


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

    def startFactory(self) -> None:
        # A site that serves hubs behind the guard warns, at its first port, when the
        # process cannot hold as many files as the caps allow (once per limits).
        self.limits.check_open_files()
        super().startFactory()  # type: ignore[no-untyped-call]

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
