"""
A guard between a transport and C{ClientService}'s protocol proxy, for the
clients that reconnect through C{ClientService} (the hub client and the
Redis links): a connection is handed over to C{ClientService} only once it
is ready (its handshake done), and until then its end goes to the inner
protocol alone.  A connection that fails before it is ready is reported to
C{ClientService} as a failed attempt (through the endpoint's Deferred), and
its state machine has no transition for a connection lost before it was
handed over (C{NoTransition} tracebacks, and no retry at all).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure


class UntilHandedOver(Protocol):
    """
    @ivar inner: the protocol that speaks on the connection.
    @ivar handed_over: set once C{ClientService} has the connection.
    @ivar lost_reason: why the connection ended before it was handed over
        (TLS errors are said here only).
    """

    def __init__(self, proxy: Any, inner: Any) -> None:
        self.proxy = proxy
        self.inner = inner
        self.handed_over = False
        self.lost_reason: str | None = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.proxy.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            reason = Failure(ConnectionError("connection lost"))
        if self.handed_over:
            self.proxy.connectionLost(reason)
        else:
            self.lost_reason = reason.getErrorMessage()
            self.inner.connectionLost(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
