"""
Faults of the Redis backplane with real processes: C{twistd hub --redis}
nodes on a real C{redis-server} (127.0.0.1, a free port), real clients.
Redis or a node frozen longer than the lease (SIGSTOP, the TCP connections
survive), graceful stops, forged publications.  Small leases keep each test
a few seconds long; every wait has a deadline; only processes started here
are signalled, by PID.  Each test prints the recovery time it measured
(C{docs/scaling.md}'s fault table quotes them).
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from twisted_hub._backplane import node_of
from twisted_hub.types import HubClientProtocol

from ._redis import RedisServer
from ._twistd import Child
from .test_scaling_processes import CONNECTED, Inbox, client, eventually, start_node


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


async def sleep(seconds: float) -> None:
    await deferLater(reactor(), seconds, lambda: None)


@dataclass
class Node:
    """One twistd hub process with one client that joined C{room}."""

    child: Child
    port: int
    client: HubClientProtocol
    inbox: Inbox

    @property
    def token(self) -> str:
        return node_of(self.client.connection_id)

    async def members(self) -> list[str]:
        members: list[str] = await self.client.call("members", "room")
        return sorted(members)


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[Node] = field(default_factory=list)

    def ids(self) -> list[str]:
        return sorted(node.client.connection_id for node in self.nodes)

    def everyone_sees(self, ids: list[str]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            for node in self.nodes:
                if node.child.ended.called:
                    continue
                if await node.members() != sorted(ids):
                    return False
            return True

        return check

    async def redis_command(self, *args: Any) -> Any:
        """One command on a connection of its own (closed after)."""
        import txredisapi
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        protocol = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
        await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", self.redis.port), protocol)
        try:
            # No AUTH or SELECT: usable as soon as it is connected.  (Not whenConnected():
            # txredisapi before 1.6 fires only the ones asked for before connectionMade.)
            return await protocol.execute_command(*args)
        finally:
            protocol.transport.loseConnection()


@asynccontextmanager
async def cluster(count: int, *node_args: str, redis_args: tuple[str, ...] = ()) -> AsyncIterator[Cluster]:
    """A Redis and C{count} nodes, each with a client in C{room}; everything stopped after."""
    redis = RedisServer(reactor(), extra=redis_args)
    result = Cluster(redis)
    children: list[Child] = []
    try:
        await redis.start()
        for _ in range(count):
            child, port = await start_node(reactor(), redis.url, *node_args)
            children.append(child)
            await child.wait_for(CONNECTED, reactor(), 10)
            c, inbox = await client(reactor(), port)
            result.nodes.append(Node(child, port, c, inbox))
        for node in result.nodes:
            await node.client.call("join", "room")
        await eventually(result.everyone_sees(result.ids()), reactor(), 5, "every node counts every member")
        yield result
    finally:
        redis_child = redis.child
        if redis_child is not None:
            redis_child.signal(signal.SIGCONT)
        for node in result.nodes:
            if node.client.is_connected:
                await node.client.disconnect()
        for child in children:
            child.signal(signal.SIGCONT)
            await child.stop(reactor())
        await redis.stop()


def report(what: str, seconds: float) -> None:
    print(f"\nmeasured: {what}: {seconds:.2f} s")


LEASE = 1.5


@pytest_twisted.ensureDeferred
async def test_redis_frozen_longer_than_the_lease() -> None:
    """Redis stopped (SIGSTOP) for twice the lease, connections intact: every count is exact within a lease after SIGCONT."""
    async with cluster(2, "--redis-lease", str(LEASE)) as c:
        assert c.redis.child is not None
        c.redis.child.signal(signal.SIGSTOP)
        alone = [[node.client.connection_id] for node in c.nodes]

        async def dropped() -> bool:
            return [await node.members() for node in c.nodes] == alone

        # Hearing nothing, the nodes drop each other; Redis expires their state once it runs.
        await eventually(dropped, reactor(), LEASE * 2 + 1, "the nodes drop each other")
        await sleep(LEASE)
        c.redis.child.signal(signal.SIGCONT)
        took = await eventually(c.everyone_sees(c.ids()), reactor(), LEASE + 1.0, "counts exact after the freeze")
        report("Redis frozen 2 x lease, counts exact again", took)
        # and they stay exact (nothing expires them again)
        await sleep(LEASE * 1.5)
        assert await c.everyone_sees(c.ids())()


@pytest_twisted.ensureDeferred
async def test_node_frozen_longer_than_the_lease() -> None:
    """A node stopped (SIGSTOP) for twice the lease: once it runs again every node counts its members within a lease."""
    async with cluster(2, "--redis-lease", str(LEASE)) as c:
        frozen = c.nodes[1]
        frozen.child.signal(signal.SIGSTOP)
        alone = [c.nodes[0].client.connection_id]

        async def dropped() -> bool:
            return await c.nodes[0].members() == alone

        await eventually(dropped, reactor(), LEASE * 2 + 1, "the frozen node leaves the counts")
        await sleep(LEASE)
        frozen.child.signal(signal.SIGCONT)
        took = await eventually(c.everyone_sees(c.ids()), reactor(), LEASE + 1.0, "counts exact after the freeze")
        report("node frozen 2 x lease, counts exact again", took)
        await sleep(LEASE * 1.5)
        assert await c.everyone_sees(c.ids())()
        # Its own stall (longer than the PING timeout) was not taken for a silent Redis.
        assert not any("lost Redis" in line for line in frozen.child.lines), frozen.child.output()


@pytest_twisted.ensureDeferred
async def test_sigterm_says_goodbye() -> None:
    """A node stopped with SIGTERM deletes its Redis state and leaves the others' counts at once (lease 30 s)."""
    async with cluster(2, "--redis-lease", "30") as c:
        leaving = c.nodes[1]
        token = leaving.token
        stopped_at = time.monotonic()
        ended: Deferred[Any] = leaving.child.stop(reactor())
        await ended
        took = await eventually(
            c.everyone_sees([c.nodes[0].client.connection_id]), reactor(), 1.0, "the stopped node left the counts"
        )
        report("SIGTERM, the others drop the node's members", time.monotonic() - stopped_at)
        assert took < 1.0
        assert leaving.child.ended_cleanly, leaving.child.output()
        assert any("its goodbye reached Redis" in line for line in leaving.child.lines), leaving.child.output()
        keys = [f"twisted-hub:v1:{kind}:{token}" for kind in ("lease", "members")]
        assert await c.redis_command("EXISTS", *keys) in (0, b"0")
        assert token.encode() not in await c.redis_command("SMEMBERS", "twisted-hub:v1:nodes")


@pytest_twisted.ensureDeferred
async def test_drain_then_goodbye() -> None:
    """SIGTERM with --drain-delay: the node's members count while it drains, and leave at once when it stops."""
    async with cluster(2, "--redis-lease", "30", "--drain-delay", "1") as c:
        leaving = c.nodes[1]
        leaving.child.signal(signal.SIGTERM)
        await leaving.child.wait_for("draining", reactor(), 5)
        # Still serving its clients while it drains: still in every count.
        assert await c.nodes[0].members() == c.ids()
        assert leaving.client.is_connected
        await leaving.child.ended.addTimeout(10, reactor())
        stopped_at = time.monotonic()
        await eventually(
            c.everyone_sees([c.nodes[0].client.connection_id]), reactor(), 1.0, "the stopped node left the counts"
        )
        report("SIGTERM after a drain, from the exit until the others drop the node's members", time.monotonic() - stopped_at)
        assert any("its goodbye reached Redis" in line for line in leaving.child.lines), leaving.child.output()
        assert await c.redis_command("EXISTS", f"twisted-hub:v1:members:{leaving.token}") in (0, b"0")


@pytest_twisted.ensureDeferred
async def test_stop_service_says_goodbye() -> None:
    """An embedded HubService's stopService fires once Redis took the goodbye: the other node drops its members."""
    from twisted_hub import HubService, connect
    from twisted_hub.redis import RedisBackplane

    from .helpers.hubs import ProcessWorkHub

    async with cluster(1, "--redis-lease", "30") as c:
        backplane = RedisBackplane(c.redis.url, lease=30)
        service = HubService([ProcessWorkHub], ["tcp:0:interface=127.0.0.1"], backplane=backplane)
        service.startService()
        stopped = False
        try:
            await eventually(_true_when(lambda: backplane.connected), reactor(), 10, "the embedded node connects")
            port = service._listening[0].result.getHost().port  # type: ignore[index]
            embedded = await connect(f"ws://127.0.0.1:{port}/hub", "work", clock=reactor(), timeout=10)
            await embedded.call("join", "room")
            ids = sorted([c.nodes[0].client.connection_id, embedded.connection_id])
            await eventually(c.everyone_sees(ids), reactor(), 5, "the twistd node counts the embedded member")
            stopped_at = time.monotonic()
            await service.stopService()
            stopped = True
            # Redis answered the goodbye before stopService fired; the links are closed.
            assert not backplane.connected
            assert await c.redis_command("EXISTS", f"twisted-hub:v1:lease:{backplane.token}") in (0, b"0")
            await eventually(
                c.everyone_sees([c.nodes[0].client.connection_id]), reactor(), 1.0, "the embedded node left the counts"
            )
            report("stopService, the others drop the node's members", time.monotonic() - stopped_at)
        finally:
            if not stopped:
                await service.stopService()


def _true_when(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def metric(port: int, name: str) -> float:
    """One sample of a node's /metrics."""
    from twisted.web.client import Agent, readBody

    response = await Agent(reactor()).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    for line in (await readBody(response)).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest_twisted.ensureDeferred
async def test_slow_subscriber_losses_are_counted() -> None:
    """Redis cuts a frozen node's subscriber (output buffer limit): what that node never heard is counted as missed."""
    import txredisapi
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from twisted_hub._backplane_wire import NodeCodec, Send

    heard: list[tuple[int, int, bytes | None]] = []  # node 0's messages on the hub-wide channel: seq, kind, payload
    decoder = NodeCodec("listener")

    class Listener(txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
            decoded = decoder.decode(channel, message, time.time())
            if decoded.origin == origin:
                heard.append((decoded.seq, decoded.kind, decoded.body.payload if isinstance(decoded.body, Send) else None))

    limit = ("--client-output-buffer-limit", "pubsub 256kb 128kb 1")
    async with cluster(2, "--metrics", "--redis-lease", "60", redis_args=limit) as c:
        sender, frozen = c.nodes
        origin = sender.token
        listener = Listener(charset=None, convertNumbers=False)
        await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", c.redis.port), listener)
        try:
            await listener.subscribe([b"twisted-hub:v1:all"])
            await sender.client.call("to_all", "before")
            await frozen.inbox.wait_for("before", reactor())
            frozen.child.signal(signal.SIGSTOP)
            padding = "x" * 32_000
            for batch in range(10):
                calls = [sender.client.call("to_all", f"m{batch * 20 + i} {padding}") for i in range(20)]
                for call in calls:
                    await call
            frozen.child.signal(signal.SIGCONT)
            await frozen.child.wait_for("lost Redis at", reactor(), 10)

            async def reconnected() -> bool:
                return sum(CONNECTED in line for line in frozen.child.lines) >= 2

            await eventually(reconnected, reactor(), 10, "the frozen node subscribes again")
            await sender.client.call("to_all", "after")
            await frozen.inbox.wait_for("after", reactor())
            missed = await metric(frozen.port, "twisted_hub_backplane_missed_total")
        finally:
            listener.transport.loseConnection()
    got = {text.split(" ")[0] for text in frozen.inbox.messages}
    sends = [(seq, msgpack.unpackb(payload)[2][0].split(" ")[0]) for seq, kind, payload in heard if kind == 0]
    lost = [seq for seq, text in sends if text not in got]
    assert lost, "Redis did not cut the subscriber: nothing was lost"
    received_around = [seq for seq, text in sends if text in got]
    before = max(seq for seq in received_around if seq < lost[0])
    after = min(seq for seq in received_around if seq > lost[-1])
    # One gap: every call in it was lost, and what was missed lies between the calls heard on either side.
    assert lost == [seq for seq, _ in sends if lost[0] <= seq <= lost[-1]]
    assert lost[-1] - lost[0] + 1 <= missed <= after - before - 1, (missed, lost[0], lost[-1], before, after)
    print(f"\nmeasured: a cut subscriber missed {len(lost)} of 200 calls; counted missed {missed:g}")


class Capture:
    """Listens on the hub-wide channel (as anyone with access to Redis can) and keeps every message."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.protocol: Any = None

    async def start(self, redis: RedisServer) -> None:
        import txredisapi
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        messages = self.messages

        class Listener(txredisapi.SubscriberProtocol):  # type: ignore[misc]
            def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
                messages.append(message)

        self.protocol = Listener(charset=None, convertNumbers=False)
        await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", redis.port), self.protocol)
        await self.protocol.subscribe([CHANNEL])

    def stop(self) -> None:
        if self.protocol is not None:
            self.protocol.transport.loseConnection()


CHANNEL = b"twisted-hub:v1:all"


def forged_from(message: bytes, origin: str, payload: bytes) -> bytes:
    """C{message} (a receiver call published by a node, unsigned) from another origin, with another payload."""
    decoded = msgpack.unpackb(message)
    decoded[1] = origin
    decoded[-1] = payload
    forged: bytes = msgpack.packb(decoded)
    return forged


@pytest_twisted.ensureDeferred
async def test_garbage_payload_reaches_no_client() -> None:
    """A receiver call with a payload that is no hub message, published by anyone: no client sees it or is disconnected."""
    async with cluster(2, "--metrics") as c:
        capture = Capture()
        await capture.start(c.redis)
        try:
            await c.nodes[0].client.call("to_all", "genuine")
            await eventually(_true_when(lambda: bool(capture.messages)), reactor(), 5, "the call is heard")
            sends = [m for m in capture.messages if msgpack.unpackb(m)[0] == 0]
            await c.redis_command("PUBLISH", CHANNEL, forged_from(sends[0], "f0rged", b"\xc1 not a hub message"))
            await c.nodes[1].client.call("to_all", "after")
            for node in c.nodes:
                await node.inbox.wait_for("after", reactor())
                assert node.client.is_connected
                assert node.inbox.messages == ["genuine", "after"]
                assert await metric(node.port, "twisted_hub_backplane_bad_messages_total") == 1
        finally:
            capture.stop()


@pytest_twisted.ensureDeferred
async def test_forgeries_refused_with_a_secret(tmp_path: Any) -> None:
    """With --redis-secret-file, forged calls, joins and goodbyes and replays published on Redis change nothing."""
    secret = tmp_path / "secret"
    secret.write_text("0f1e2d3c4b5a69788796a5b4c3d2e1f0\n")
    async with cluster(2, "--metrics", "--redis-secret-file", str(secret)) as c:
        capture = Capture()
        await capture.start(c.redis)
        try:
            await c.nodes[0].client.call("to_all", "genuine")
            await eventually(_true_when(lambda: bool(capture.messages)), reactor(), 5, "the call is heard")
            signed = next(m for m in capture.messages if m[:1] == b"\xc1" and msgpack.unpackb(m[33:])[0] == 0)
            decoded = msgpack.unpackb(signed[33:])
            victim = c.nodes[1].token
            now = int(time.time() * 1000)
            call = msgpack.packb([6, "said", ["forged"]])
            forgeries = [
                msgpack.packb([0, "f0rged", 1, now, "work", "all", None, [], call]),  # from a made-up node
                signed[:33] + msgpack.packb([*decoded[:-1], call]),  # a genuine message, its payload changed
                signed,  # a genuine message, published again
                msgpack.packb([1, victim, 10**6, now, "work", "room", f"{victim}-999"]),  # a phantom member
                msgpack.packb([5, victim, 10**6, now]),  # a goodbye in a live node's name
            ]
            for forgery in forgeries:
                await c.redis_command("PUBLISH", CHANNEL, forgery)
            await c.nodes[1].client.call("to_all", "after")
            for node in c.nodes:
                await node.inbox.wait_for("after", reactor())
                assert node.inbox.messages == ["genuine", "after"]
            assert await c.everyone_sees(c.ids())()
            # The replay of its own message is nothing to the node that sent it.
            assert [await metric(node.port, "twisted_hub_backplane_rejected_total") for node in c.nodes] == [4, 5]
            assert any("rejected" in line for line in c.nodes[1].child.lines)
        finally:
            capture.stop()


@pytest_twisted.ensureDeferred
async def test_black_holed_redis_is_noticed() -> None:
    """A silent path to Redis (a proxy that drops everything, closes nothing) is noticed within ping interval + timeout."""
    from ._delay_proxy import DelayingProxy

    redis = RedisServer(reactor())
    proxy = DelayingProxy(reactor(), redis.port, 0.0)
    proxied = f"redis://127.0.0.1:{proxy.listen()}/0"
    nodes: list[Node] = []
    try:
        await redis.start()
        for url in (redis.url, proxied):
            child, port = await start_node(reactor(), url, "--metrics")
            await child.wait_for(CONNECTED, reactor(), 10)
            c, inbox = await client(reactor(), port)
            nodes.append(Node(child, port, c, inbox))
            await c.call("join", "room")
        direct, cut_off = nodes
        group = Cluster(redis, nodes)
        await eventually(group.everyone_sees(group.ids()), reactor(), 5, "both members counted")

        proxy.blackhole = True
        silenced = time.monotonic()
        await cut_off.child.wait_for("lost Redis at .*no answer from Redis", reactor(), 3.0 + 1.5)
        detected = time.monotonic() - silenced
        report("black-holed Redis path, noticed after", detected)
        assert await metric(cut_off.port, "twisted_hub_backplane_connected") == 0
        assert "NOT connected" in await _page(cut_off.port)
        await sleep(2.5)  # attempts meanwhile fail (connected, never answered): no false recovery
        assert await metric(cut_off.port, "twisted_hub_backplane_connected") == 0

        proxy.blackhole = False
        healed = time.monotonic()
        sent = 0

        async def heard_again() -> bool:
            nonlocal sent
            sent += 1
            await direct.client.call("to_all", f"ping {sent}")
            return any(text.startswith("ping ") for text in cut_off.inbox.messages)

        took = await eventually(heard_again, reactor(), 5, "delivery resumes after the path heals")
        report("black-holed Redis path healed, delivery back after", took)
        await eventually(group.everyone_sees(group.ids()), reactor(), 5, "counts exact after the path heals")
        report("black-holed Redis path healed, counts exact after", time.monotonic() - healed)
    finally:
        for node in nodes:
            if node.client.is_connected:
                await node.client.disconnect()
            await node.child.stop(reactor())
        await proxy.stop()
        await redis.stop()


async def _page(port: int) -> str:
    from twisted.web.client import Agent, readBody

    response = await Agent(reactor()).request(b"GET", f"http://127.0.0.1:{port}/".encode())
    return (await readBody(response)).decode()
