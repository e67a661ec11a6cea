"""
Test helpers for code built on twisted-hub: a server and its clients in
memory, on one L{Clock}, with no sockets and no global reactor.

    server = HubTestServer([ChatHub])
    conn = server.connect("chat", receiver=my_receiver)
    d = conn.client.call("join", "lobby", "ann")
    server.flush()
    assert test.successResultOf(d) == 1
    server.advance(30)          # runs every timer due in 30 s, exchanging
                                # messages between each firing

A connection can be frozen (L{TestConnection.freeze_client},
L{TestConnection.freeze_server}): that side's bytes stop moving in both
directions, as if its process were stopped, until thawed.  It can also be
slow (L{TestConnection.set_latency}): every byte takes that long to cross,
each way, as on a congested mobile path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport
from zope.interface import implementer

from ._base_error import HubArgumentError, HubUsageError
from ._client import HubClientFactory, HubClientOptions, HubClientProtocol, resolve_access_token
from ._hub import Hub
from ._server import HubServerFactory, HubServerProtocol, HubSpec, HubTestServerOptions

_NO_AUTOBAHN_TIMERS = {"openHandshakeTimeout": 0, "closeHandshakeTimeout": 0}


def _options(factory: Any, **options: Any) -> None:
    """autobahn's setProtocolOptions (untyped); no autobahn timers on the global reactor."""
    factory.setProtocolOptions(**options)


class TestConnection:
    """One in-memory client/server connection."""

    __test__ = False  # not a pytest test class

    def __init__(self, server: HubTestServer, client: HubClientProtocol, protocol: HubServerProtocol) -> None:
        self._server = server
        self.client = client
        self.server_protocol = protocol
        self.client_transport = FakeTransport(client, isServer=False, peerAddress=_address(2))
        self.server_transport = FakeTransport(protocol, isServer=True, peerAddress=_address(1))
        self.client_frozen = False
        self.server_frozen = False
        self._held_for_client: list[bytes] = []
        self._held_for_server: list[bytes] = []
        #: one-way delay of the link, seconds
        self.latency = 0.0
        # chunks still crossing the link, per direction
        self._in_flight = {"to client": 0, "to server": 0}
        #: every binary message payload the client / server received, in order
        self.client_received: list[bytes] = []
        self.server_received: list[bytes] = []
        self._spy(client, self.client_received)
        self._spy(protocol, self.server_received)

    @staticmethod
    def _spy(protocol: Any, sink: list[bytes]) -> None:
        original = protocol.onMessage

        def on_message(payload: bytes, is_binary: bool) -> None:
            sink.append(payload)
            original(payload, is_binary)

        protocol.onMessage = on_message

    @property
    def ready(self) -> Deferred[HubClientProtocol]:
        """Fires with the client when the handshake completed (or fails)."""
        return self.client.ready

    @property
    def hub(self) -> Hub:
        """The server-side hub instance of this connection."""
        assert self.server_protocol.hub is not None
        return self.server_protocol.hub

    def freeze_client(self) -> None:
        """The client stops reading and its writes stop arriving (SIGSTOP)."""
        self.client_frozen = True

    def freeze_server(self) -> None:
        """The server side of this connection stops reading and writing."""
        self.server_frozen = True

    def set_latency(self, seconds: float) -> None:
        """
        From now on every byte takes C{seconds} to reach the other side, in
        both directions (round trip: twice that).  Order is kept.
        """
        if seconds < 0:
            raise HubArgumentError("latency must be >= 0")
        self.latency = seconds

    def _send(self, direction: str, data: bytes) -> None:
        if not self.latency:
            self._held(direction).append(data)
            return
        self._in_flight[direction] += 1

        def arrive() -> None:
            self._in_flight[direction] -= 1
            self._held(direction).append(data)

        self._server.clock.callLater(self.latency, arrive)

    def _held(self, direction: str) -> list[bytes]:
        return self._held_for_server if direction == "to server" else self._held_for_client

    def thaw(self) -> None:
        """Undo L{freeze_client} / L{freeze_server}; held bytes flow again."""
        self.client_frozen = self.server_frozen = False

    def drop(self) -> None:
        """The network path breaks: both sides see the connection lost."""
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        for transport in (self.client_transport, self.server_transport):
            if not transport.disconnected:
                transport.disconnected = True
                transport.protocol.connectionLost(Failure(ConnectionLost("test dropped the link")))

    @property
    def closed(self) -> bool:
        return bool(self.client_transport.disconnected and self.server_transport.disconnected)

    def pump(self) -> bool:
        """Move what can move once; return whether anything happened."""
        moved = False
        from_client = self.client_transport.getOutBuffer()
        from_server = self.server_transport.getOutBuffer()
        if from_client:
            self._send("to server", from_client)
        if from_server:
            self._send("to client", from_server)
        if self._held_for_server and not self.client_frozen and not self.server_frozen:
            data = b"".join(self._held_for_server)
            self._held_for_server = []
            if not self.server_transport.disconnected:
                self.server_transport.protocol.dataReceived(data)
            moved = True
        if self._held_for_client and not self.server_frozen and not self.client_frozen:
            data = b"".join(self._held_for_client)
            self._held_for_client = []
            if not self.client_transport.disconnected:
                self.client_transport.protocol.dataReceived(data)
            moved = True
        if moved:
            return True
        return self._settle_disconnects()

    def _settle_disconnects(self) -> bool:
        # The side that closes loses its connection at once (its kernel does the
        # rest); the other side learns of it once it has read everything before
        # the close, and only while it is not frozen.
        client, server = self.client_transport, self.server_transport
        sides = (
            (client, self.client_frozen, server, self.server_frozen, self._held_for_server, "to server"),
            (server, self.server_frozen, client, self.client_frozen, self._held_for_client, "to client"),
        )
        for closing, closing_frozen, other, other_frozen, held_for_other, direction in sides:
            if closing.disconnecting and not closing.disconnected and not closing_frozen:
                closing.disconnected = True
                closing.reportDisconnect()
                return True
            if (
                closing.disconnected and not other.disconnected and not other_frozen
                and not held_for_other and not self._in_flight[direction]
            ):
                other.disconnecting = other.disconnected = True
                other.reportDisconnect()
                return True
        return False


@implementer(IStreamClientEndpoint)
class TestEndpoint:
    """Connects client factories to a L{HubTestServer}; can refuse on demand."""

    __test__ = False

    def __init__(self, server: HubTestServer) -> None:
        self.server = server
        #: while True, connection attempts fail with ConnectionRefusedError
        self.refusing = False
        self.attempts = 0

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts += 1
        if self.refusing:
            return fail(ConnectionRefusedError("test endpoint refuses"))
        # ClientService wraps the factory in a proxy that forwards attributes.
        _options(factory, serverConnectionDropTimeout=0, **_NO_AUTOBAHN_TIMERS)
        # As over TCP: the endpoint reports the connection before the
        # WebSocket and hub handshakes ran (they run on the next flush).
        connection = self.server._link(factory, handshake=False)
        return succeed(connection.client)


def _address(port: int) -> IPv4Address:
    return IPv4Address("TCP", "127.0.0.1", port)


class HubTestServer:
    """A L{HubServerFactory} on a L{Clock}, with in-memory clients."""

    __test__ = False

    def __init__(
        self,
        hubs: Sequence[HubSpec] | Mapping[str, HubSpec],
        clock: Clock | None = None,
        **factory_options: Unpack[HubTestServerOptions],
    ) -> None:
        self.clock = clock or Clock()
        self.factory = HubServerFactory(hubs, url="ws://127.0.0.1/hub", clock=self.clock, **factory_options)
        _options(self.factory, **_NO_AUTOBAHN_TIMERS)
        self.connections: list[TestConnection] = []

    def connect(
        self,
        hub: str | None = None,
        receiver: object | None = None,
        options: HubClientOptions | None = None,
        *,
        path: str | None = None,
        protocols: Iterable[str] | None = None,
        origin: str | None = None,
        client_protocol: type[HubClientProtocol] | None = None,
        receiver_interface: type | None = None,
    ) -> TestConnection:
        """
        Open a connection and run the handshake.  Check
        L{TestConnection.ready} to see whether the server accepted it.
        """
        url = "ws://127.0.0.1" + (path if path is not None else "/hub" + (f"/{hub}" if hub else ""))
        client_factory = HubClientFactory(url, receiver, options, clock=self.clock, receiver_interface=receiver_interface)
        if options is not None and callable(options.access_token):
            # As connect() does: the provider is asked for the first token (here it must answer at once).
            asked: list[Any] = []
            resolve_access_token(options).addBoth(asked.append)
            if not asked:
                raise HubUsageError("in memory, the access token provider must answer at once (return a string)")
            if isinstance(asked[0], Failure):
                asked[0].raiseException()
            client_factory.set_access_token(asked[0])
        _options(client_factory, serverConnectionDropTimeout=0, **_NO_AUTOBAHN_TIMERS)
        if client_protocol is not None:
            client_factory.protocol = client_protocol
        if protocols is not None:
            client_factory.protocols = list(protocols)
        if origin is not None:
            client_factory.origin = origin
        return self._link(client_factory)

    def _link(self, client_factory: HubClientFactory, handshake: bool = True) -> TestConnection:
        client = cast(HubClientProtocol, client_factory.buildProtocol(_address(1)))
        protocol = cast(HubServerProtocol, self.factory.buildProtocol(_address(2)))
        connection = TestConnection(self, client, protocol)
        cast(Any, protocol).makeConnection(connection.server_transport)
        cast(Any, client).makeConnection(connection.client_transport)
        self.connections.append(connection)
        if handshake:
            self.flush()
        return connection

    def endpoint(self) -> TestEndpoint:
        """
        A client endpoint that connects in memory to this server (for
        L{ReconnectingHubClient} and other endpoint users).
        """
        return TestEndpoint(self)

    def flush(self) -> None:
        """Exchange messages (and run zero-delay timers) until all is quiet."""
        for _ in range(10_000):
            self.clock.advance(0)
            if not any([connection.pump() for connection in self.connections]):
                return
        raise AssertionError("the connections never went quiet")

    def advance(self, seconds: float) -> None:
        """
        Move time forward by C{seconds}, stopping at every timer on the way
        so messages are exchanged between firings, as on a real reactor.
        """
        target = self.clock.seconds() + seconds
        self.flush()
        for _ in range(1_000_000):
            pending = [call.getTime() for call in self.clock.getDelayedCalls()]
            next_time = min((t for t in pending if t <= target), default=None)
            if next_time is None:
                break
            self.clock.advance(max(next_time - self.clock.seconds(), 0))
            self.flush()
        else:  # pragma: no cover
            raise AssertionError("too many timers")
        self.clock.advance(max(target - self.clock.seconds(), 0))
        self.flush()

    def stall(self, seconds: float) -> None:
        """
        Our reactor is blocked for C{seconds}: time jumps, and every timer
        that came due fires late, before any pending data is read.
        """
        self.clock.advance(seconds)
        self.flush()
