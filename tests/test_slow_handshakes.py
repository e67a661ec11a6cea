"""
Slow opening handshakes over real loopback sockets (pytest-twisted,
127.0.0.1), on each way of serving: a bare HubServerFactory on listenTCP, a
HubResource on a Site behind a ConnectionGuard, HubService, and a twistd hub
process.  Many partial upgrade requests do not stop a new client, and a
request trickled byte by byte is cut off at the deadline counted from accept.
Every wait is bounded; nothing sleeps.  The 1,000-connection version is
bench/slow_handshakes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_hub import ConnectionGuard, HubResource, HubServerFactory, HubService, connect
from twisted_hub.demo import EchoHub
from twisted_hub.types import ConnectionLimits

from ._twistd import Child, started_port, twistd_hub

WAIT = 15.0  # seconds: the bound on every single wait
SLOW = 200
PARTIAL = b"GET /hub/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
FULL = (
    PARTIAL + b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: twisted-hub.v1\r\n\r\n"
)
PATHS = ["listenTCP", "site", "service", "twistd"]


def bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


class WatchedLimits(ConnectionLimits):
    """The server's limits, with a way to wait until it counts a given number of connections."""

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__(limits.clock, limits.max_connections, limits.max_connections_per_ip, limits.handshake_timeout)
        self._waiters: list[tuple[int, Deferred[None]]] = []

    def counted(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiters.append((count, d))
        self._check()
        return bounded(d)

    def _check(self) -> None:
        for count, d in list(self._waiters):
            if self.open_connections == count:
                self._waiters.remove((count, d))
                d.callback(None)

    def admit(self, address: IAddress) -> bool:
        admitted = super().admit(address)
        self._check()
        return admitted

    def release(self, address: IAddress) -> None:
        super().release(address)
        self._check()


class Served:
    """Where a test server listens; its limits (in this process) or its twistd child process."""

    def __init__(self, port: int, limits: WatchedLimits | None = None, child: Child | None = None) -> None:
        self.port, self.limits, self.child = port, limits, child

    async def counted(self, count: int) -> None:
        """Wait until the server counts C{count} connections (in-process servers only)."""
        if self.limits is not None:
            await self.limits.counted(count)


@asynccontextmanager
async def serving(path: str, handshake_timeout: float) -> AsyncIterator[Served]:
    """Serve the echo hub on 127.0.0.1 one way."""
    from twisted.internet import reactor

    if path == "twistd":
        child = twistd_hub(reactor, "--listen", "tcp:0:interface=127.0.0.1", "--handshake-timeout", str(handshake_timeout))
        try:
            yield Served(await started_port(child, reactor), child=child)
        finally:
            await bounded(child.stop(reactor))
        return
    if path == "service":
        service = HubService([EchoHub], ["tcp:0:interface=127.0.0.1"], clock=reactor,
                             handshake_timeout=handshake_timeout)
        watched = WatchedLimits(service.factory.limits)
        service.factory.limits = service.listening_factory.limits = watched
        service.privilegedStartService()
        service.startService()
        try:
            (port,) = await bounded(service.listening_ports())
            yield Served(port.getHost().port, watched)
        finally:
            await bounded(service.stopService())
        return
    factory = HubServerFactory([EchoHub], clock=reactor, handshake_timeout=handshake_timeout)
    watched = factory.limits = WatchedLimits(factory.limits)
    if path == "site":
        root = Resource()
        root.putChild(b"hub", HubResource(factory))
        listening = reactor.listenTCP(0, ConnectionGuard(Site(root), watched), interface="127.0.0.1")
    else:
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield Served(listening.getHost().port, watched)
    finally:
        factory.close_all()
        await bounded(listening.stopListening())


class SlowPeer(Protocol):
    """Sends part of an upgrade request, then nothing (or one more byte every C{trickle} seconds)."""

    def __init__(self, first: bytes, rest: bytes = b"", trickle: float | None = None) -> None:
        self.first, self.rest, self.trickle = first, rest, trickle
        self.sent = 0
        self.opened: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self._loop: LoopingCall | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.first)  # type: ignore[union-attr]
        self.sent = len(self.first)
        if self.trickle is not None:
            self._loop = LoopingCall(self._one_more_byte)
            self._loop.start(self.trickle, now=False)
        self.opened.callback(None)

    def _one_more_byte(self) -> None:
        index = self.sent - len(self.first)
        if index < len(self.rest):
            self.transport.write(self.rest[index : index + 1])  # type: ignore[union-attr]
            self.sent += 1

    @property
    def trickling(self) -> bool:
        return self._loop is not None and self._loop.running

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.still_trickling_when_lost = self.trickling
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.lost.callback(None)


async def open_slow(port: int, peer: SlowPeer) -> SlowPeer:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    await bounded(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer))
    await bounded(peer.opened)
    return peer


@pytest.mark.parametrize("path", PATHS)
@pytest_twisted.ensureDeferred
async def test_new_client_served_beside_many_slow_handshakes(path: str) -> None:
    """With 200 partial upgrade requests held open, a new client still connects and calls."""
    from twisted.internet import reactor

    async with serving(path, handshake_timeout=60) as served:
        port = served.port
        slow: list[SlowPeer] = []
        for _ in range(0, SLOW, 50):  # in batches: the listen backlog is 50
            batch = [SlowPeer(PARTIAL) for _ in range(50)]
            slow += await gatherResults([Deferred.fromCoroutine(open_slow(port, p)) for p in batch])
        await served.counted(SLOW)
        client = await bounded(connect(f"ws://127.0.0.1:{port}/hub", "echo", clock=reactor, timeout=WAIT))
        assert await bounded(client.call("echo", "still served")) == "still served"
        assert served.limits is None or served.limits.open_connections == SLOW + 1
        assert not any(p.lost.called for p in slow)
        await bounded(client.disconnect())
        for p in slow:
            p.transport.abortConnection()  # type: ignore[union-attr]
        await gatherResults([bounded(p.lost) for p in slow])
        await served.counted(0)


@pytest.mark.parametrize("path", PATHS)
@pytest_twisted.ensureDeferred
async def test_trickled_request_cut_off_at_the_deadline(path: str) -> None:
    """A request trickled one byte every 0.1 s is closed at the 1 s deadline while still trickling."""
    from twisted.internet import reactor

    async with serving(path, handshake_timeout=1) as served:
        peer = await open_slow(served.port, SlowPeer(b"G", FULL[1:], trickle=0.1))
        await bounded(peer.lost)
        assert peer.still_trickling_when_lost
        assert peer.sent < len(FULL)
        await served.counted(0)
        if served.child is not None:
            line = await served.child.wait_for("did not finish the WebSocket opening handshake within 1 s", reactor)
            assert "127.0.0.1" in line.string


@pytest.mark.parametrize("path", PATHS)
@pytest_twisted.ensureDeferred
async def test_prompt_upgrade_outlives_the_deadline(path: str) -> None:
    """A client that upgraded in time keeps calling after the handshake deadline has passed."""
    from twisted.internet import reactor

    async with serving(path, handshake_timeout=0.5) as served:
        client = await bounded(connect(f"ws://127.0.0.1:{served.port}/hub", "echo", clock=reactor, timeout=WAIT))
        late: Deferred[None] = Deferred()
        reactor.callLater(1.0, late.callback, None)
        await bounded(late)  # a timer of this test, not a wait for an event
        assert await bounded(client.call("echo", 1)) == 1
        assert served.limits is None or served.limits.open_connections == 1
        await bounded(client.disconnect())
