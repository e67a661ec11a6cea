"""
Integration over real loopback sockets (pytest-twisted, 127.0.0.1 only):
the demo hubs end to end, broadcast to several clients, and a real client
process that stops reading (the slow consumer).  Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol, Protocol

from twisted_hub import (
    ConnectTimeoutError,
    DisconnectKind,
    HandshakeError,
    Hub,
    HubError,
    HubServerFactory,
    RefuseConnection,
    connect,
    hub,
    method,
)
from twisted_hub.demo import DEMO_HUBS
from twisted_hub.types import DisconnectReason, HubClientFactory, HubClientProtocol, HubServerProtocol

STALLED_CLIENT = Path(__file__).parent / "helpers" / "stalled_client.py"
WAIT = 10.0  # seconds: the bound on every single wait


def bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


class Server:
    """A HubServerFactory listening on an ephemeral 127.0.0.1 port."""

    def __init__(self, hubs: Any, **options: Any) -> None:
        from twisted.internet import reactor

        self.factory = HubServerFactory(hubs, **options)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.port.getHost().port}/hub"
        self.clients: list[HubClientProtocol] = []

    async def connect(self, hub_name: str, receiver: object | None = None) -> HubClientProtocol:
        from twisted.internet import reactor

        client = await bounded(connect(self.url, hub_name, receiver=receiver, clock=reactor, timeout=WAIT))
        self.clients.append(client)
        return client

    async def connect_url(self, url: str) -> HubClientProtocol:
        from twisted.internet import reactor

        client = await bounded(connect(url, clock=reactor, timeout=WAIT))
        self.clients.append(client)
        return client

    async def close(self) -> None:
        closing = [bounded(c.disconnect()) for c in self.clients if c.disconnect_reason is None]
        await gatherResults(closing)
        self.factory.close_all()
        await bounded(self.port.stopListening())


class Counter:
    """A receiver that fires a Deferred once it has heard C{expected} calls."""

    def __init__(self, expected: int) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.expected = expected
        self.done: Deferred[list[tuple[Any, ...]]] = Deferred()

    def said(self, *args: Any) -> None:
        self.calls.append(args)
        if len(self.calls) == self.expected and not self.done.called:
            self.done.callback(self.calls)

    def joined(self, *args: Any) -> None:
        pass

    def double(self, value: int) -> int:
        return value * 2


@pytest_twisted.ensureDeferred
async def test_round_trip_demo_echo() -> None:
    """The echo demo hub answers calls, errors and client results over a real socket."""
    server = Server(DEMO_HUBS)
    try:
        client = await server.connect("echo", receiver=Counter(0))
        assert await bounded(client.call("echo", {"a": [1, b"\x00"]})) == {"a": [1, b"\x00"]}
        assert await bounded(client.call("add", 2, 3.5)) == 5.5
        assert await bounded(client.call("whoami")) == client.connection_id
        assert await bounded(client.call("ask", "double", 21)) == 42
        with pytest.raises(HubError) as error:
            await bounded(client.call("fail", "teapot", "short and stout"))
        assert (error.value.code, error.value.message) == ("teapot", "short and stout")
        reason: DisconnectReason = await bounded(client.disconnect())
        assert reason.kind is DisconnectKind.NORMAL
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_unknown_hub_refused() -> None:
    """A real client asking for an unknown hub gets HandshakeError(404)."""
    from twisted.internet import reactor

    server = Server(DEMO_HUBS)
    try:
        with pytest.raises(HandshakeError) as error:
            await bounded(connect(server.url, "nope", clock=reactor, timeout=WAIT))
        assert error.value.status == 404
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_chat_broadcast_to_several_clients() -> None:
    """A chat message reaches every member of the room over real sockets, and nobody else."""
    server = Server(DEMO_HUBS)
    try:
        members = [Counter(1) for _ in range(4)]
        clients = [await server.connect("chat", receiver=r) for r in members]
        outsider = Counter(1)
        await server.connect("chat", receiver=outsider)
        for number, (client, name) in enumerate(zip(clients, "abcd"), start=1):
            assert await bounded(client.call("join", "room", name)) == number
        assert await bounded(clients[0].call("say", "room", "hello all")) == 4
        heard = await bounded(gatherResults([m.done for m in members]))
        assert heard == [[("room", "a", "hello all")]] * 4
        assert outsider.calls == []
    finally:
        await server.close()


# -- the slow consumer ---------------------------------------------------------


@hub("flood")
@dataclass
class Departures:
    """What one test's FloodHubs saw: every disconnect reason, and the first one."""

    gone: list[DisconnectReason] = field(default_factory=list)
    gone_signal: Deferred[DisconnectReason] = field(default_factory=Deferred)


class FloodHub(Hub):
    """Pushes receiver calls to every connection on request."""

    def __init__(self, departures: Departures) -> None:
        self.departures = departures

    @method
    def blast(self, size: int, count: int) -> int:
        for _ in range(count):
            self.clients.all.said(b"x" * size)
        return count

    def on_disconnected(self, reason: DisconnectReason) -> None:
        self.departures.gone.append(reason)
        if not self.departures.gone_signal.called:
            self.departures.gone_signal.callback(reason)


class StalledClient(ProcessProtocol):
    """The helper process: fires C{ready} on its 'ready' line, C{ended} when it exits."""

    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"ready\n" in self.output and not self.ready.called:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"stalled client exited: {self.output!r}"))
        self.ended.callback(None)


def buffered(protocol: Any) -> int:
    """Bytes the server's transport holds for this connection, unsent."""
    transport = protocol.transport
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


@pytest_twisted.ensureDeferred
async def test_slow_consumer_is_disconnected() -> None:
    """A real client process that stops reading is dropped once max_outgoing_buffer is hit; memory stays bounded."""
    from twisted.internet import reactor

    limit = 256 * 1024
    message = 16 * 1024
    departures = Departures()
    server = Server([partial(FloodHub, departures)], max_outgoing_buffer=limit)
    stalled = StalledClient()
    process = reactor.spawnProcess(
        stalled, sys.executable, [sys.executable, str(STALLED_CLIENT), str(server.port.getHost().port), "flood"],
        env=dict(os.environ),
    )
    try:
        await bounded(stalled.ready)
        healthy = Counter(-1)
        client = await server.connect("flood", receiver=healthy)
        runtime = server.factory.hub_runtime("flood")
        slow_ids = [i for i in runtime.connections if i != client.connection_id]
        assert len(slow_ids) == 1
        slow = runtime.connections[slow_ids[0]].transport  # the HubServerProtocol carrying the session

        pushed = 0
        largest = 0
        while not departures.gone_signal.called and pushed < 64 * 1024 * 1024:
            assert await bounded(client.call("blast", message, 4)) == 4
            pushed += 4 * message
            if not departures.gone_signal.called:
                largest = max(largest, buffered(slow))
        reason: DisconnectReason = await bounded(departures.gone_signal)

        assert reason.kind is DisconnectKind.SLOW_CONSUMER, reason
        assert slow_ids[0] not in runtime.connections
        # what the server held for it never went far past the limit
        bound = limit + slow.transport.bufferSize + 2 * (message + 16)
        assert largest <= bound, (largest, bound)
        assert slow.output.written_while_paused <= limit + message + 16
        # the healthy client kept up and is still served
        assert client.is_connected
        assert await bounded(client.call("blast", 10, 1)) == 1
        assert len(healthy.calls) == pushed // message + 1
        assert [r.kind for r in departures.gone] == [DisconnectKind.SLOW_CONSUMER]
        assert not stalled.ended.called  # the server dropped it; the process did not quit
    finally:
        if process.pid is not None:
            os.kill(process.pid, signal.SIGKILL)
        await bounded(stalled.ended)
        await server.close()


@hub("vault")
class VaultHub(Hub):
    """An async on_connecting that checks a token after a real reactor turn; records who opened the vault."""

    def __init__(self, opened: list[str]) -> None:
        self.opened = opened

    async def on_connecting(self, request: Any) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.01, lambda: None)  # e.g. an auth lookup
        if request.params.get("token", [""])[0] != "secret":
            raise RefuseConnection(401, "bad token")

    @method
    def open_vault(self) -> str:
        self.opened.append(self.connection.id)
        return "open"


def _masked_binary_frame(payload: bytes) -> bytes:
    """One client-to-server WebSocket binary frame (RFC 6455 §5.2), masked."""
    assert len(payload) < 126
    mask = b"\x37\xfa\x21\x3d"
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _RawPeer(Protocol):
    """Sends fixed bytes on connect and collects everything until the server closes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_async_on_connecting_refusal_over_sockets() -> None:
    """An async on_connecting refusal reaches a real client as its HTTP status; a pipelined call never runs."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from twisted_hub._wire import Hello, Invoke, encode

    opened: list[str] = []
    server = Server([partial(VaultHub, opened)])
    try:
        with pytest.raises(HandshakeError) as error:
            await bounded(connect(server.url + "/vault?token=wrong", clock=reactor, timeout=WAIT))
        assert (error.value.status, "bad token" in error.value.reason) == (401, True)

        # A peer that ignores the answer: upgrade request, hello and a call in one write.
        port = server.port.getHost().port
        request = (
            f"GET /hub/vault?token=wrong HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: twisted-hub.v1\r\n\r\n"
        ).encode()
        frames = _masked_binary_frame(encode(Hello(["batch"]))) + _masked_binary_frame(
            encode(Invoke(1, "open_vault", []))
        )
        peer = _RawPeer(request + frames)
        await bounded(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer))
        answer = await bounded(peer.closed)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
        assert opened == []
        assert server.factory.connection_count == 0

        # The right token opens it.
        client = await server.connect_url(server.url + "/vault?token=secret")
        assert await bounded(client.call("open_vault")) == "open"
        assert opened == [client.connection_id]
    finally:
        await server.close()


class _SilentPeer(Protocol):
    """Accepts a TCP connection and never writes a byte; records when the client closes it."""

    def __init__(self, lost: list[Deferred[None]]) -> None:
        self.lost: Deferred[None] = Deferred()
        lost.append(self.lost)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class _MuteHubProtocol(HubServerProtocol):
    """Completes the WebSocket upgrade, then never sends WELCOME; fires C{closed} when its socket closes."""

    def __init__(self, closed: Deferred[None]) -> None:
        super().__init__()
        self.closed = closed

    def onOpen(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self.closed.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_connect_timeout_covers_the_whole_handshake() -> None:
    """connect(timeout=1) fails with ConnectTimeoutError and closes the socket, silent TCP or no WELCOME."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    lost: list[Deferred[None]] = []
    silent = reactor.listenTCP(0, Factory.forProtocol(lambda: _SilentPeer(lost)), interface="127.0.0.1")
    mute = Server(DEMO_HUBS)
    closed: Deferred[None] = Deferred()
    mute.factory.protocol = partial(_MuteHubProtocol, closed)
    try:
        started = reactor.seconds()
        url = f"ws://127.0.0.1:{silent.getHost().port}/hub"
        with pytest.raises(ConnectTimeoutError) as error:
            await bounded(connect(url, "echo", clock=reactor, timeout=1.0))
        assert error.value.stage == "upgrade"
        assert 0.9 <= reactor.seconds() - started < WAIT
        await bounded(lost[0])  # the client closed its socket

        with pytest.raises(ConnectTimeoutError) as error:
            await bounded(connect(mute.url, "echo", clock=reactor, timeout=1.0))
        assert error.value.stage == "welcome"
        assert "WELCOME" in str(error.value)
        await bounded(closed)  # the client closed its socket
    finally:
        await bounded(silent.stopListening())
        await mute.close()


def _nodelay(protocol: Any) -> int:
    import socket

    handle = protocol.transport.getHandle()
    return int(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.mark.parametrize("fast_path", [True, False])
@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_on_both_ends(fast_path: bool) -> None:
    """Both ends' sockets have TCP_NODELAY, fast path on or off (stock autobahn reads the option too early and never sets it)."""
    server = Server(DEMO_HUBS)
    server.factory.fast_path = fast_path
    HubClientFactory.fast_path = fast_path  # the class default: connect() builds the factory
    try:
        client = await server.connect("echo")
        assert client.factory.fast_path is fast_path and client._fast_path is fast_path
        [session] = server.factory.hub_runtime("echo").connections.values()
        server_protocol = session.transport
        assert _nodelay(server_protocol) == 1
        assert _nodelay(client) == 1
    finally:
        HubClientFactory.fast_path = True
        await server.close()


@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_option_off_is_honoured() -> None:
    """setProtocolOptions(tcpNoDelay=False) leaves Nagle's algorithm on for that server's connections."""
    server = Server(DEMO_HUBS)
    server.factory.setProtocolOptions(tcpNoDelay=False)
    try:
        client = await server.connect("echo")
        [session] = server.factory.hub_runtime("echo").connections.values()
        assert _nodelay(session.transport) == 0
        assert _nodelay(client) == 1
    finally:
        await server.close()


# -- one call that sends more than the budget (docs/deploying.md, "Limits and abuse") -----

PIECE = 900_000  # under the 1 MiB message limit


@hub("burst")
class BurstHub(Hub):
    """Sends a group several large pieces in one go, or one piece per call (the pull pattern)."""

    def __init__(self, closed: list[DisconnectReason]) -> None:
        self.closed = closed

    def on_disconnected(self, reason: DisconnectReason) -> None:
        self.closed.append(reason)

    @method
    def join(self, room: str) -> None:
        self.groups.add(room)

    @method
    def send_all(self, room: str, pieces: int) -> int:
        for n in range(pieces):
            self.clients.group(room).said(n, b"x" * PIECE)
        return pieces

    @method
    def piece(self, n: int) -> bytes:
        return bytes([n]) * PIECE


def over_the_budget_pieces() -> int:
    """
    Pieces that pass the 4 MiB budget whatever the kernel takes first: the
    first write of a turn goes straight to the socket, whose buffer grows up
    to tcp_wmem's maximum; the transport's own 64 KiB come on top.
    """
    socket_buffer = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return (4 * 1024 * 1024 + socket_buffer + 64 * 1024) // PIECE + 2


@pytest_twisted.ensureDeferred
async def test_one_call_over_the_budget_drops_every_member() -> None:
    """
    docs/deploying.md's rule: a method that sends a group more than
    max_outgoing_buffer (4 MiB) in one go, beyond what the socket takes at
    once, drops every member, clients reading at full speed included (slow
    consumer, 4004), and its caller gets its result, no error; under the
    budget all arrives; a client pulling the same bytes a piece per call is kept.
    """
    closed: list[DisconnectReason] = []
    server = Server([partial(BurstHub, closed)])
    try:
        readers = [Counter(4) for _ in range(2)]
        members = [await server.connect("burst", receiver=r) for r in readers]
        for member in members:
            await bounded(member.call("join", "room"))
        caller = await server.connect("burst")

        # 4 x 900 kB = 3.6 MB, under 4 MiB: every member hears all of it.
        assert await bounded(caller.call("send_all", "room", 4)) == 4
        for reader in readers:
            await bounded(reader.done)
        assert closed == []

        # More than the budget past what the socket takes at once: every member is dropped, fast
        # readers too; the caller gets its result.
        over = over_the_budget_pieces()
        lost = [m.wait_for_disconnect() for m in members]
        assert await bounded(caller.call("send_all", "room", over)) == over
        for reason in await bounded(gatherResults(lost)):
            assert reason.kind is DisconnectKind.CONNECTION_LOST  # the server aborts TCP: no close frame
        assert sorted((r.kind, r.code) for r in closed) == [(DisconnectKind.SLOW_CONSUMER, 4004)] * 2
        assert caller.is_connected

        # The same bytes, a piece per call: nothing is dropped.
        for n in range(over):
            assert await bounded(caller.call("piece", n)) == bytes([n]) * PIECE
        assert caller.is_connected and len(closed) == 2
    finally:
        await server.close()
