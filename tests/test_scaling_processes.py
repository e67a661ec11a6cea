"""
Scale-out with real processes: C{twistd hub --redis} nodes on one real
C{redis-server} (127.0.0.1, a free port, persistence off), real clients on
each node.  Every wait has a deadline; only processes started here are
signalled, by PID.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from twisted_hub import connect
from twisted_hub.types import HubClientProtocol

from ._redis import RedisServer, free_port
from ._twistd import Child, started_port, twistd_hub

HUB = "tests.helpers.hubs:ProcessWorkHub"
CONNECTED = "connected to Redis at"


class Inbox:
    """A client receiver that records C{said} calls and can wait for one."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._waiters: list[tuple[Any, Deferred[None]]] = []

    def said(self, text: Any) -> None:
        self.messages.append(text)
        for expected, waiter in list(self._waiters):
            if expected == text:
                self._waiters.remove((expected, waiter))
                waiter.callback(None)

    def wait_for(self, text: Any, reactor: Any, timeout: float = 10.0) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if text in self.messages:
            waiter.callback(None)
            return waiter
        self._waiters.append((text, waiter))
        return waiter.addTimeout(timeout, reactor)


async def eventually(check: Callable[[], Awaitable[bool]], reactor: Any, timeout: float, what: str) -> float:
    """Ask C{check} every 50 ms until it says yes; fail after C{timeout} s.  Returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await deferLater(reactor, 0.05, lambda: None)
    return time.monotonic() - started


async def start_node(reactor: Any, redis_url: str, *extra: str) -> tuple[Child, int]:
    child = twistd_hub(
        reactor, "--listen", "tcp:0:interface=127.0.0.1", "--hub", HUB, "--redis", redis_url,
        "--shutdown-timeout", "2", *extra,
    )
    try:
        return child, await started_port(child, reactor)
    except BaseException:
        await child.stop(reactor)  # never left running when it did not start
        raise


async def client(reactor: Any, port: int) -> tuple[HubClientProtocol, Inbox]:
    inbox = Inbox()
    return await connect(f"ws://127.0.0.1:{port}/hub", "work", receiver=inbox, clock=reactor, timeout=10), inbox


def lines_with(child: Child, text: str) -> int:
    return sum(1 for line in child.lines + child.err_lines if text in line)


async def count_sends(reactor: Any, redis: RedisServer) -> tuple[Any, list[Any]]:
    """Subscribe to the hub-wide channel; the list collects the receiver calls published there."""
    import txredisapi
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    sends: list[Any] = []

    class Listener(txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
            decoded = msgpack.unpackb(message)
            if decoded[0] == 0:
                sends.append(decoded)

    listener = Listener(charset=None, convertNumbers=False)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", redis.port), listener)
    await listener.subscribe([b"twisted-hub:v1:all"])
    return listener, sends


@pytest_twisted.ensureDeferred
async def test_three_nodes_serve_as_one() -> None:
    """Three twistd hubs on one Redis: broadcast (one PUBLISH), group send, client(id), kick(id) and group counts span them."""
    from twisted.internet import reactor

    redis = RedisServer(reactor)
    await redis.start()
    nodes: list[Child] = []
    clients: list[HubClientProtocol] = []
    listener = None
    try:
        ports = []
        for _ in range(3):
            child, port = await start_node(reactor, redis.url)
            nodes.append(child)
            ports.append(port)
        for child in nodes:
            await child.wait_for(CONNECTED, reactor, 10)
        pairs = [await client(reactor, port) for port in ports]
        clients = [c for c, _ in pairs]
        inboxes = [i for _, i in pairs]
        ids = [c.connection_id for c in clients]
        assert len(set(ids)) == 3, ids
        listener, sends = await count_sends(reactor, redis)

        # Broadcast from node 0: every node's client hears it, through one PUBLISH.
        await clients[0].call("to_all", "hello all")
        for inbox in inboxes:
            await inbox.wait_for("hello all", reactor)
        await clients[0].call("to_all", "marker")

        async def marker_seen() -> bool:
            return any(b"marker" in send[-1] for send in sends)

        await eventually(marker_seen, reactor, 5, "the listener hears the marker")
        assert len(sends) == 2, sends  # one PUBLISH per broadcast

        # Group: members on three nodes, counted and listed everywhere.
        for c in clients:
            await c.call("join", "room")

        async def everyone_sees_three() -> bool:
            members = [sorted(await c.call("members", "room")) for c in clients]
            return all(m == sorted(ids) for m in members)

        await eventually(everyone_sees_three, reactor, 5, "every node lists the three members")
        await clients[1].call("to_group", "room", "to the room")
        for inbox in inboxes:
            await inbox.wait_for("to the room", reactor)

        # client(id) on another node reaches that client only.
        await clients[0].call("to_client", ids[2], "psst")
        await clients[0].call("to_all", "after psst")
        for inbox in inboxes:
            await inbox.wait_for("after psst", reactor)
        assert ["psst" in inbox.messages for inbox in inboxes] == [False, False, True]

        # clients.kick(id) on another node closes that client (KICKED); leaving lowers the count everywhere.
        kicked = clients[2].wait_for_disconnect()
        await clients[0].call("kick", ids[2], "banned")
        reason = await kicked.addTimeout(10, reactor)
        assert (reason.kind.value, reason.code, reason.message) == ("kicked", 4000, "banned"), reason

        async def two_left() -> bool:
            return [len(await c.call("members", "room")) for c in clients[:2]] == [2, 2]

        await eventually(two_left, reactor, 5, "the count drops to 2 on the other nodes")
    finally:
        if listener is not None:
            listener.transport.loseConnection()
        for c in clients:
            if c.is_connected:
                await c.disconnect()
        for child in nodes:
            await child.stop(reactor)
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_redis_restart() -> None:
    """Redis restarted mid-run: nodes keep serving, count what they drop, resubscribe and rebuild presence."""
    from twisted.internet import reactor

    redis = RedisServer(reactor)
    await redis.start()
    nodes: list[Child] = []
    clients: list[HubClientProtocol] = []
    inboxes: list[Inbox] = []
    try:
        for _ in range(2):
            child, port = await start_node(reactor, redis.url)
            nodes.append(child)
            await child.wait_for(CONNECTED, reactor, 10)
            c, inbox = await client(reactor, port)
            clients.append(c)
            inboxes.append(inbox)
        for c in clients:
            await c.call("join", "room")
        await redis.stop()
        for child in nodes:
            await child.wait_for("lost Redis at", reactor, 10)
        # Local traffic still flows; what was for the other node is dropped and counted.
        await clients[0].call("to_all", "during the outage")
        await inboxes[0].wait_for("during the outage", reactor)
        await nodes[0].wait_for("receiver call for other nodes was dropped", reactor, 5)
        await redis.start()
        restarted = time.monotonic()

        async def reconnected() -> bool:
            return all(lines_with(child, CONNECTED) >= 2 for child in nodes)

        await eventually(reconnected, reactor, 15, "both nodes reconnect")

        async def rebuilt() -> bool:
            return len(await clients[0].call("members", "room")) == 2

        await eventually(rebuilt, reactor, 5, "presence is rebuilt after the restart")
        print(f"\nmeasured: Redis restarted, counts exact after: {time.monotonic() - restarted:.2f} s")
        await clients[1].call("to_all", "after the restart")
        for inbox in inboxes:
            await inbox.wait_for("after the restart", reactor)
        assert "during the outage" not in inboxes[1].messages
        assert not any(child.ended.called for child in nodes)
    finally:
        for c in clients:
            if c.is_connected:
                await c.disconnect()
        for child in nodes:
            await child.stop(reactor)
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_killed_node_leaves_the_counts() -> None:
    """A node killed with kill -9 leaves the others' group counts within its lease + lease/3."""
    from twisted.internet import reactor

    lease = 2.0
    redis = RedisServer(reactor)
    await redis.start()
    nodes: list[Child] = []
    clients: list[HubClientProtocol] = []
    try:
        for _ in range(2):
            child, port = await start_node(reactor, redis.url, "--redis-lease", str(lease))
            nodes.append(child)
            await child.wait_for(CONNECTED, reactor, 10)
            clients.append((await client(reactor, port))[0])
        for c in clients:
            await c.call("join", "room")

        async def count_is(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return len(await clients[0].call("members", "room")) == n

            return check

        await eventually(await count_is(2), reactor, 5, "both members counted")
        nodes[1].signal(signal.SIGKILL)
        await nodes[1].ended.addTimeout(5, reactor)
        took = await eventually(await count_is(1), reactor, lease + lease / 3 + 1.0, "the killed node's member left")
        print(f"\nmeasured: kill -9 of a node (lease {lease:g} s), its members left the counts after: {took:.2f} s")
        await nodes[0].wait_for("was not heard from", reactor, 2)
    finally:
        if clients[:1] and clients[0].is_connected:
            await clients[0].disconnect()
        for child in nodes:
            await child.stop(reactor)
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_redis_down_at_start() -> None:
    """With Redis down at start the node serves locally, logs one line, says so on its status page, and joins later."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    redis = RedisServer(reactor, free_port())
    child, port = await start_node(reactor, redis.url)
    c = None
    try:
        await child.wait_for("is unreachable", reactor, 10)
        c, inbox = await client(reactor, port)
        await c.call("to_all", "local")
        await inbox.wait_for("local", reactor)

        async def status() -> str:
            response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode())
            return (await readBody(response)).decode()

        assert "NOT connected to redis://127.0.0.1" in await status()
        await redis.start()
        await child.wait_for(CONNECTED, reactor, 15)
        assert "connected to redis://127.0.0.1" in await status()
        assert "NOT connected" not in await status()
        assert lines_with(child, "is unreachable") == 1
    finally:
        if c is not None and c.is_connected:
            await c.disconnect()
        await child.stop(reactor)
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_redis_user_and_password() -> None:
    """A --redis URL's user and password log in as that Redis ACL user; a wrong password is refused with one clear line."""
    from twisted.internet import reactor

    # The default user is off: every command needs AUTH hub s3cret (username and password).
    redis = RedisServer(reactor, extra=("--user", "default", "off", "--user", "hub", "on", ">s3cret", "~*", "&*", "+@all"))
    await redis.start()
    nodes: list[Child] = []
    try:
        good, _ = await start_node(reactor, f"redis://hub:s3cret@127.0.0.1:{redis.port}/0")
        nodes.append(good)
        await good.wait_for(CONNECTED, reactor, 10)
        bad, _ = await start_node(reactor, f"redis://hub:n0t-the-pa55word@127.0.0.1:{redis.port}/0")
        nodes.append(bad)
        await bad.wait_for("refused node", reactor, 10)
        assert lines_with(bad, CONNECTED) == 0
        assert lines_with(bad, "n0t-the-pa55word") == 0  # the password is never logged
    finally:
        for node in nodes:
            await node.stop(reactor)
        await redis.stop()
