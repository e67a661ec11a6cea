"""
A TCP proxy on 127.0.0.1 for the slow-link tests: each connection's bytes
cross at most C{rate} bytes/s in each limited direction (a 1.6 Mbit/s mobile
link is 200 KB/s), in 10 ms slices, and the proxy holds at most
L{HIGH_WATER} bytes per direction: when a side stops reading, the proxy
stops reading from the other (backpressure, as a real bottleneck does), so
the data backs up in the sender's buffers.

Each direction records when it last read data from its source
(L{Direction.last_read_at}, C{time.monotonic()}; reads of fewer than
L{BULK_READ} bytes -- a heartbeat, its answer, a close frame -- do not
count): once the receiving side stops consuming and the buffers between
fill up, the sender's bytes stop moving at that moment.  It also records
when it last wrote bytes of such a read to its target
(L{Direction.last_forwarded_at}): the receiving side's last progress, up
to the L{HIGH_WATER} bytes the proxy held (at 200 KB/s, 80 ms) after the
last read.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

#: bytes a direction holds before it stops reading from its source
HIGH_WATER = 16 * 1024
#: ... and resumes below
LOW_WATER = 4 * 1024
#: seconds between slices
SLICE = 0.01
#: the least read that is bulk data (heartbeats, their answers and close frames are smaller)
BULK_READ = 512


@implementer(IPushProducer)
class Direction:
    """One direction of one connection: source -> target, at most C{rate} bytes/s (None: unlimited)."""

    def __init__(self, reactor: Any, rate: float | None) -> None:
        self.reactor = reactor
        self.rate = rate
        self.source: Side | None = None
        self.target: Side | None = None
        self.buffer = bytearray()
        self.allowance = 0.0
        self.last_slice = 0.0
        self.timer: IDelayedCall | None = None
        self.source_paused = False
        #: the target's transport said its buffer is full
        self.target_paused = False
        self.forwarded = 0
        self.last_read_at: float | None = None
        #: when bytes of a bulk read were last written to the target (C{time.monotonic()})
        self.last_forwarded_at: float | None = None
        # the stream position (in forwarded bytes) where the last bulk read ends
        self._bulk_end = 0
        self.closing = False

    # IPushProducer, registered on the target's transport
    def pauseProducing(self) -> None:
        self.target_paused = True

    def resumeProducing(self) -> None:
        self.target_paused = False
        self.pump()

    def stopProducing(self) -> None:
        self.target_paused = True

    def received(self, data: bytes) -> None:
        self.buffer += data
        if len(data) >= BULK_READ:
            self.last_read_at = time.monotonic()
            self._bulk_end = self.forwarded + len(self.buffer)
        if len(self.buffer) >= HIGH_WATER and not self.source_paused and self.source is not None:
            self.source_paused = True
            self.source.transport.pauseProducing()  # type: ignore[union-attr]
        self.pump()

    def pump(self) -> None:
        target = self.target
        if target is None or target.transport is None or self.target_paused:
            return
        now = self.reactor.seconds()
        if self.rate is None:
            count = len(self.buffer)
        else:
            self.allowance = min(self.allowance + (now - self.last_slice) * self.rate, self.rate * SLICE * 2)
            count = min(int(self.allowance), len(self.buffer))
            self.allowance -= count
        self.last_slice = now
        if count:
            chunk = bytes(self.buffer[:count])
            del self.buffer[:count]
            if self.forwarded < self._bulk_end:
                self.last_forwarded_at = time.monotonic()
            self.forwarded += count
            target.transport.write(chunk)
        if self.source_paused and len(self.buffer) < LOW_WATER and self.source is not None:
            self.source_paused = False
            self.source.transport.resumeProducing()  # type: ignore[union-attr]
        if self.buffer and self.timer is None:
            self.timer = self.reactor.callLater(SLICE, self._slice)
        elif not self.buffer and self.closing:
            target.transport.loseConnection()

    def _slice(self) -> None:
        self.timer = None
        self.pump()

    def source_closed(self) -> None:
        self.closing = True
        self.pump()

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class Side(Protocol):
    """One of the proxy's two sockets of a connection."""

    #: SO_RCVBUF and SO_SNDBUF of the socket (0: the system's, which Linux grows as it sees fit)
    socket_buffer = 0

    def __init__(self, incoming: Direction, outgoing: Direction) -> None:
        self.incoming = incoming  # what this side receives goes this way
        self.outgoing = outgoing  # this way writes to this side
        incoming.source = self
        outgoing.target = self

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.socket_buffer:
            handle = self.transport.getHandle()  # type: ignore[attr-defined]
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.socket_buffer)
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer)
        self.transport.registerProducer(self.outgoing, True)
        self.outgoing.pump()

    def dataReceived(self, data: bytes) -> None:
        self.incoming.received(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.outgoing.cancel()
        self.incoming.source_closed()


class Link:
    """One proxied connection: C{to_server} and C{to_client}, from the client's C{port}."""

    def __init__(self, port: int, to_server: Direction, to_client: Direction) -> None:
        self.port = port
        self.to_server = to_server
        self.to_client = to_client


class RateLimitingProxy(Factory):
    """
    Accepts on 127.0.0.1 and relays to C{127.0.0.1:target_port}; bytes toward
    the client cross at C{to_client} bytes/s, toward the server at
    C{to_server} (None: unlimited), per connection.  C{socket_buffer}: the
    SO_RCVBUF/SO_SNDBUF of its sockets (0: the system's).
    """

    def __init__(
        self, reactor: Any, target_port: int, to_client: float | None, to_server: float | None, socket_buffer: int = 0,
    ) -> None:
        self.reactor = reactor
        self.socket_buffer = socket_buffer
        self.target_port = target_port
        self.to_client = to_client
        self.to_server = to_server
        self.links: list[Link] = []
        self.port: Any = None
        self._sides: list[Side] = []

    def listen(self) -> int:
        self.port = self.reactor.listenTCP(0, self, interface="127.0.0.1")
        return int(self.port.getHost().port)

    def buildProtocol(self, addr: Any) -> Side:
        to_server, to_client = Direction(self.reactor, self.to_server), Direction(self.reactor, self.to_client)
        self.links.append(Link(addr.port, to_server, to_client))
        client_side = Side(incoming=to_server, outgoing=to_client)
        server_side = Side(incoming=to_client, outgoing=to_server)
        client_side.socket_buffer = server_side.socket_buffer = self.socket_buffer
        self._sides += [client_side, server_side]
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.target_port)

        def failed(failure: Any) -> None:
            if client_side.transport is not None:
                client_side.transport.loseConnection()

        endpoint.connect(_Once(server_side)).addErrback(failed)
        return client_side

    def link_from(self, port: int) -> Link:
        """The connection the client made from local port C{port}."""
        return next(link for link in self.links if link.port == port)

    def stop(self) -> Any:
        for side in self._sides:
            side.outgoing.cancel()
            if side.transport is not None:
                side.transport.abortConnection()
        return self.port.stopListening()


class _Once(Factory):
    def __init__(self, protocol: Side) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Side:
        return self._protocol
