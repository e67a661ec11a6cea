"""
A TCP proxy on 127.0.0.1 that cuts connections: L{CuttingProxy.cut} resets
both halves of a proxied connection at once (SO_LINGER 0, so each side gets
an RST, as from a NAT or load balancer that lost its state), and it keeps
count of how many client connections are open at any moment, the number a
client that reconnects properly keeps at one or less.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol


def reset(transport: Any) -> None:
    """Close C{transport} with an RST, not a FIN: SO_LINGER on, timeout 0."""
    handle = transport.getHandle()
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abortConnection()


class _Upstream(Protocol):
    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream
        #: after L{_Downstream.cut_client_side}: what the server still sent, and whether it closed
        self.after_cut = bytearray()
        self.lost = False
        self._lost_waiters: list[Deferred[None]] = []

    def when_lost(self) -> Deferred[None]:
        """Fires once the server's half is closed (now, if it is)."""
        waiter: Deferred[None] = Deferred()
        if self.lost:
            waiter.callback(None)
        else:
            self._lost_waiters.append(waiter)
        return waiter

    def connectionMade(self) -> None:
        self.downstream.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if self.downstream.half_cut:
            self.after_cut += data
            return
        self.downstream.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self.downstream.upstream_lost()


class _Downstream(Protocol):
    """The client's side of one proxied connection."""

    def __init__(self, proxy: CuttingProxy) -> None:
        self.proxy = proxy
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        self.open = False
        #: the client's half was reset and the server's left open (L{cut_client_side})
        self.half_cut = False

    def connectionMade(self) -> None:
        self.open = True
        self.proxy.accepted(self)
        endpoint = TCP4ClientEndpoint(self.proxy.reactor, "127.0.0.1", self.proxy.target_port)
        connecting = endpoint.connect(Factory.forProtocol(lambda: _Upstream(self)))
        connecting.addErrback(lambda _: self.transport.abortConnection())

    def upstream_ready(self, upstream: _Upstream) -> None:
        if not self.open:
            upstream.transport.abortConnection()
            return
        self.upstream = upstream
        for data in self.pending:
            upstream.transport.write(data)
        self.pending = []

    def upstream_lost(self) -> None:
        if self.open:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.proxy.closed(self)
        if self.upstream is not None and not self.half_cut:
            self.upstream.transport.loseConnection()

    def cut_client_side(self) -> None:
        """
        Reset the client's half only: the server's stays open and sees
        nothing (a path that died silently); what it sends is kept in
        C{upstream.after_cut}.
        """
        self.half_cut = True
        self.open = False
        self.proxy.closed(self)
        reset(self.transport)

    def cut(self) -> None:
        """Reset both halves now (no longer open, from this moment)."""
        self.open = False
        self.proxy.closed(self)
        if self.upstream is not None:
            reset(self.upstream.transport)
        reset(self.transport)


class CuttingProxy(Factory):
    """
    Listen with C{reactor.listenTCP(0, proxy, interface="127.0.0.1")};
    connections are forwarded to C{127.0.0.1:target_port}.

    @ivar accepts: client connections accepted so far.
    @ivar cuts: connections reset by L{cut_all} so far.
    @ivar most_open: the most client connections that were open at once.
    """

    def __init__(self, reactor: Any, target_port: int) -> None:
        self.reactor = reactor
        self.target_port = target_port
        self.live: list[_Downstream] = []
        self.accepts = 0
        self.cuts = 0
        self.most_open = 0

    def buildProtocol(self, addr: Any) -> _Downstream:
        return _Downstream(self)

    def accepted(self, connection: _Downstream) -> None:
        self.accepts += 1
        self.live.append(connection)
        self.most_open = max(self.most_open, len(self.live))

    def closed(self, connection: _Downstream) -> None:
        if connection in self.live:
            self.live.remove(connection)

    def cut_all(self) -> int:
        """Reset every open connection whose upstream is connected; return how many."""
        cut = 0
        for connection in list(self.live):
            if connection.upstream is not None:
                connection.cut()
                cut += 1
        self.cuts += cut
        return cut
