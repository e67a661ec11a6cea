"""
Liveness on real sockets (127.0.0.1, bounded in time): a slow link is not a
dead one, a timed-out side tells the other why, and no connection goes
unchecked.  The rules themselves are tested on a Clock in test_heartbeat.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgpack
import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)
from twisted.internet import task
from twisted.internet.defer import Deferred

from twisted_hub import DisconnectKind, HeartbeatPolicy, Hub, HubClientOptions, HubServerFactory, connect, method
from twisted_hub.types import SUBPROTOCOL, DisconnectReason

from ._delay_proxy import DelayingProxy
from ._processes import spawn_script

INTERVAL = 1.0
TIMEOUT = 3.0
#: the issue's bound for detecting a dead peer
DETECTION_BOUND = INTERVAL + TIMEOUT + 0.1


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


def sleep(seconds: float) -> Deferred[None]:
    """A bounded observation window (nothing to wait on: we watch for what must *not* happen)."""
    return task.deferLater(reactor(), seconds, lambda: None)


@dataclass
class Watch:
    """What one test's WatchedHubs saw: every disconnect (with its monotonic time), and the first one."""

    disconnects: list[tuple[float, DisconnectReason]] = field(default_factory=list)
    disconnected: Deferred[None] = field(default_factory=Deferred)


class WatchedHub(Hub):
    hub_name = "watched"

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    @method
    def latency(self) -> float:
        return self.connection.heartbeat.latency

    def on_disconnected(self, reason: DisconnectReason) -> None:
        self.watch.disconnects.append((time.monotonic(), reason))
        if not self.watch.disconnected.called:
            self.watch.disconnected.callback(None)


@pytest.mark.long_process  # (a 20 s soak: the floors runs leave it out, .ci/floors)
@pytest_twisted.ensureDeferred
async def test_slow_link_is_not_a_dead_one() -> None:
    """600 ms each way, 1 s / 3 s both directions: 0 drops in 20 s; then blackholed: both sides detect it in bound."""
    watch = Watch()
    policy = HeartbeatPolicy(enabled=True, interval=INTERVAL, timeout=TIMEOUT)
    listening = reactor().listenTCP(0, HubServerFactory([partial(WatchedHub, watch)], heartbeat=policy), interface="127.0.0.1")
    proxy = DelayingProxy(reactor(), listening.getHost().port, delay=0.6)
    proxy_port = proxy.listen()
    try:
        client = await connect(
            f"ws://127.0.0.1:{proxy_port}/hub/watched", options=HubClientOptions(heartbeat=policy)
        ).addTimeout(10, reactor())
        await sleep(20.0)
        assert client.is_connected, client.disconnect_reason
        assert watch.disconnects == []
        assert client.round_trip >= 1.2
        assert await client.call("latency").addTimeout(5, reactor()) >= 1.2

        proxy.blackhole = True
        blackholed_at = time.monotonic()
        reason = await client.wait_for_disconnect().addTimeout(DETECTION_BOUND + 5, reactor())
        client_delay = time.monotonic() - blackholed_at
        await watch.disconnected.addTimeout(DETECTION_BOUND + 5, reactor())
        server_delay = watch.disconnects[0][0] - blackholed_at
        assert reason.kind is DisconnectKind.TIMED_OUT, reason
        assert watch.disconnects[0][1].kind is DisconnectKind.TIMED_OUT
        assert client_delay <= DETECTION_BOUND, client_delay
        assert server_delay <= DETECTION_BOUND, server_delay
    finally:
        await proxy.stop()
        await listening.stopListening()


@dataclass
class RawSeen:
    """What one test's RawDocServer received, and the close code and reason it saw."""

    received: list[Any] = field(default_factory=list)
    closed: Deferred[tuple[int | None, str | None]] = field(default_factory=Deferred)


class RawDocServer(WebSocketServerProtocol):  # type: ignore[misc]
    """A server written from docs/protocol.md: welcomes with the heartbeat capability, then answers nothing."""

    def __init__(self, seen: RawSeen) -> None:
        super().__init__()
        self.seen = seen

    def onConnect(self, request: Any) -> str:
        return SUBPROTOCOL

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(payload)
        for message in unpacker:
            self.seen.received.append(message)
            if message[0] == 0:  # HELLO
                self.sendMessage(msgpack.packb([1, {"caps": ["heartbeat", "batch"], "id": "raw-1"}]), isBinary=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.seen.closed.called:
            self.seen.closed.callback((code, reason))


@pytest_twisted.ensureDeferred
async def test_client_timeout_sends_close_4001_on_the_wire() -> None:
    """A raw server that never answers heartbeats gets CLOSE [8, 4001, ...] and a close frame 4001 from our client."""
    seen = RawSeen()
    factory = WebSocketServerFactory(protocols=[SUBPROTOCOL])
    factory.protocol = partial(RawDocServer, seen)
    listening = reactor().listenTCP(0, factory, interface="127.0.0.1")
    try:
        options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=0.3, timeout=0.6))
        client = await connect(f"ws://127.0.0.1:{listening.getHost().port}/hub/x", options=options).addTimeout(
            10, reactor()
        )
        reason = await client.wait_for_disconnect().addTimeout(5, reactor())
        code, text = await seen.closed.addTimeout(5, reactor())
        assert (reason.kind, reason.code) == (DisconnectKind.TIMED_OUT, 4001)
        assert [8, 4001, "heartbeat timeout"] in seen.received
        assert (code, text) == (4001, "heartbeat timeout")
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_frozen_server_learns_it_was_timed_out() -> None:
    """The client times out a SIGSTOPped server; after SIGCONT the server's reason is peer-timed-out, not connection-lost."""
    server = spawn_script(reactor(), "heartbeat_server.py")
    port = await server.started.addTimeout(20, reactor())
    try:
        options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=0.5, timeout=1.0))
        client = await connect(f"ws://127.0.0.1:{port}/hub/probe", options=options).addTimeout(10, reactor())
        assert await client.call("echo", 1) == 1
        server.freeze()
        reason = await client.wait_for_disconnect().addTimeout(10, reactor())
        assert reason.kind is DisconnectKind.TIMED_OUT
        server.thaw()
        line = await server.wait_for_line("DISCONNECTED").addTimeout(10, reactor())
        assert line == f"DISCONNECTED {client.connection_id} peer-timed-out"
    finally:
        await server.stop(reactor())


class PlainWebSocketClient(WebSocketClientProtocol):  # type: ignore[misc]
    """A client written from the protocol doc that does not announce heartbeats (as an old or minimal client)."""

    answers_pings = True

    def __init__(self) -> None:
        super().__init__()
        self.pings = 0
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()

    def onOpen(self) -> None:
        self.sendMessage(msgpack.packb([0, {"caps": ["batch"]}]), isBinary=True)
        self.factory.opened.callback(self)

    def onPing(self, payload: bytes) -> None:
        self.pings += 1
        if self.answers_pings:
            super().onPing(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.closed.called:
            self.closed.callback((code, reason))


class DeafWebSocketClient(PlainWebSocketClient):
    answers_pings = False


async def open_plain(port: int, protocol: type[PlainWebSocketClient]) -> PlainWebSocketClient:
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/hub/watched", protocols=[SUBPROTOCOL])
    factory.protocol = protocol
    factory.opened = Deferred()
    connectWS(factory)
    client: PlainWebSocketClient = await factory.opened.addTimeout(10, reactor())
    return client


@pytest_twisted.ensureDeferred
async def test_plain_websocket_clients_are_checked_with_pings() -> None:
    """Without hub heartbeats: a client answering pings stays; one that does not is closed 4001 in bound."""
    watch = Watch()
    policy = HeartbeatPolicy(enabled=True, interval=0.5, timeout=1.0)
    listening = reactor().listenTCP(0, HubServerFactory([partial(WatchedHub, watch)], heartbeat=policy), interface="127.0.0.1")
    port = listening.getHost().port
    try:
        answering = await open_plain(port, PlainWebSocketClient)
        deaf = await open_plain(port, DeafWebSocketClient)
        opened_at = time.monotonic()
        code, reason = await deaf.closed.addTimeout(5, reactor())
        assert (code, reason) == (4001, "websocket ping timeout")
        assert time.monotonic() - opened_at <= 0.5 + 1.0 + 0.5
        assert [r.message for _, r in watch.disconnects] == ["websocket ping timeout"]
        await sleep(2.0)
        assert not answering.closed.called
        assert answering.pings >= 5
        assert len(watch.disconnects) == 1
        answering.sendClose(1000)
        await answering.closed.addTimeout(5, reactor())
    finally:
        await listening.stopListening()
