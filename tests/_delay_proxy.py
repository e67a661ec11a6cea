"""
A TCP proxy on 127.0.0.1 for real-socket liveness tests: it delays every
chunk by a fixed time in each direction (keeping order), like a congested
path, and can blackhole the link (drop everything, close nothing), like a
dead route.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol


class _Pipe:
    """One direction: chunks leave C{delay} seconds after they came in, in order."""

    def __init__(self, proxy: DelayingProxy) -> None:
        self.proxy = proxy
        self.queue: deque[tuple[float, bytes]] = deque()
        self.target: Any = None
        self.timer: IDelayedCall | None = None
        self.closing = False

    def push(self, data: bytes) -> None:
        if self.proxy.blackhole:
            return
        self.queue.append((self.proxy.reactor.seconds() + self.proxy.delay, data))
        self._schedule()

    def close_after_queue(self) -> None:
        self.closing = True
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is not None and self.timer.active():
            return
        if self.queue:
            wait = max(self.queue[0][0] - self.proxy.reactor.seconds(), 0.0)
        elif self.closing:
            wait = 0.0
        else:
            return
        self.timer = self.proxy.reactor.callLater(wait, self._deliver)

    def _deliver(self) -> None:
        self.timer = None
        if self.target is None:
            self._schedule_retry()
            return
        now = self.proxy.reactor.seconds()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if not self.proxy.blackhole:
                self.target.transport.write(data)
        if not self.queue and self.closing:
            self.target.transport.loseConnection()
            return
        self._schedule()

    def _schedule_retry(self) -> None:
        self.timer = self.proxy.reactor.callLater(0.01, self._deliver)

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.queue.clear()


class _Side(Protocol):
    def __init__(self, incoming: _Pipe, outgoing: _Pipe) -> None:
        self.incoming = incoming  # what this side receives goes into this pipe
        self.outgoing = outgoing  # this pipe writes to this side

    def connectionMade(self) -> None:
        self.outgoing.target = self

    def dataReceived(self, data: bytes) -> None:
        self.incoming.push(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.outgoing.cancel()
        if not self.proxy_blackholed():
            self.incoming.close_after_queue()

    def proxy_blackholed(self) -> bool:
        return self.incoming.proxy.blackhole


class DelayingProxy(Factory):
    """Accepts on 127.0.0.1 and relays to C{127.0.0.1:target_port} with C{delay} seconds each way."""

    def __init__(self, reactor: Any, target_port: int, delay: float) -> None:
        self.reactor = reactor
        self.target_port = target_port
        self.delay = delay
        #: while True, nothing crosses in either direction (and nothing is closed)
        self.blackhole = False
        self.port: Any = None
        self._pipes: list[_Pipe] = []

    def listen(self) -> int:
        self.port = self.reactor.listenTCP(0, self, interface="127.0.0.1")
        return int(self.port.getHost().port)

    def buildProtocol(self, addr: Any) -> _Side:
        to_backend, to_client = _Pipe(self), _Pipe(self)
        self._pipes += [to_backend, to_client]
        client_side = _Side(incoming=to_backend, outgoing=to_client)
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.target_port)

        def connected(protocol: _Side) -> None:
            protocol.outgoing.target = protocol

        def failed(failure: Any) -> None:
            client_side.transport.loseConnection()  # type: ignore[union-attr]

        endpoint.connect(_OneShot(_Side(incoming=to_client, outgoing=to_backend))).addCallbacks(connected, failed)
        return client_side

    def stop(self) -> Any:
        for pipe in self._pipes:
            pipe.cancel()
            if pipe.target is not None and pipe.target.transport is not None:
                pipe.target.transport.abortConnection()
        return self.port.stopListening()


class _OneShot(Factory):
    def __init__(self, protocol: _Side) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> _Side:
        return self._protocol
