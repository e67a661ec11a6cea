"""
The connections to Redis as operators run it, with real processes on
127.0.0.1: a wrong or missing password, a server that refuses and closes
(protected mode), TLS (C{rediss://}, a CA file, a client certificate).
Each refusal is one clear line per attempt, never a traceback, and the
node keeps retrying.  Every wait has a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
import pytest_twisted
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from ._certs import write_self_signed, write_test_ca
from ._redis import RedisServer, free_port
from ._twistd import Child
from .test_backplane_faults import reactor, sleep
from .test_scaling_processes import CONNECTED, client, eventually, start_node

TRACEBACKS = ("Traceback", "Unhandled Error", "NoTransition")


def refusals(child: Child) -> list[str]:
    return [line for line in child.lines + child.err_lines if "refused node" in line]


def assert_no_traceback(child: Child) -> None:
    output = child.output()
    assert not any(word in output for word in TRACEBACKS), output


async def status_page(port: int) -> str:
    from twisted.web.client import Agent, readBody

    response = await Agent(reactor()).request(b"GET", f"http://127.0.0.1:{port}/".encode())
    return (await readBody(response)).decode()


@pytest_twisted.ensureDeferred
async def test_wrong_password_one_line_per_attempt() -> None:
    """A wrong password: one error line per attempt with Redis's words and the next delay, no traceback; it keeps trying."""
    redis = RedisServer(reactor(), extra=("--requirepass", "right-password"))
    child: Child | None = None
    try:
        await redis.start()
        child, port = await start_node(reactor(), f"redis://:wrong-password@127.0.0.1:{redis.port}/0")
        await child.wait_for("refused node", reactor(), 10)
        started = time.monotonic()
        await sleep(3.0)
        window = time.monotonic() - started
        lines = refusals(child)
        assert "WRONGPASS" in lines[0] and "next attempt in" in lines[0], lines[0]
        # The retry delay is 0.5 s to 1.25 s: a line per attempt, no more.
        assert 2 <= len(lines) <= 2 + window / 0.5, lines
        assert_no_traceback(child)
        assert "WRONGPASS" in await status_page(port)
        # The operator fixes the password: the node connects at its next attempt.
        await RedisCommand(redis.port, "right-password").run("CONFIG", "SET", "requirepass", "wrong-password")
        await child.wait_for(CONNECTED, reactor(), 5)
        assert_no_traceback(child)
    finally:
        if child is not None:
            await child.stop(reactor())
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_no_password_given() -> None:
    """Redis wants a password the URL lacks: NOAUTH is said, once per attempt."""
    redis = RedisServer(reactor(), extra=("--requirepass", "right-password"))
    child: Child | None = None
    try:
        await redis.start()
        child, _ = await start_node(reactor(), redis.url)
        await child.wait_for("refused node", reactor(), 10)
        assert "NOAUTH" in refusals(child)[0], refusals(child)
        assert_no_traceback(child)
    finally:
        if child is not None:
            await child.stop(reactor())
        await redis.stop()


class _Denying(Protocol):
    """Says what Redis in protected mode says to a client from another host, and closes."""

    TEXT = (
        b"-DENIED Redis is running in protected mode because protected mode is enabled and no password is set "
        b"for the default user.\r\n"
    )

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.TEXT)
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_protected_mode() -> None:
    """A server that refuses and closes at once (protected mode): its words, one line per attempt, no traceback."""
    listening = reactor().listenTCP(0, Factory.forProtocol(_Denying), interface="127.0.0.1")
    child: Child | None = None
    try:
        child, _ = await start_node(reactor(), f"redis://127.0.0.1:{listening.getHost().port}/0")
        await child.wait_for("refused node", reactor(), 10)
        await sleep(1.5)
        lines = refusals(child)
        assert "DENIED Redis is running in protected mode" in lines[0], lines
        assert len(lines) >= 2, lines
        assert_no_traceback(child)
    finally:
        if child is not None:
            await child.stop(reactor())
        await listening.stopListening()


class RedisCommand:
    """One command on a connection of its own."""

    def __init__(self, port: int, password: str | None = None) -> None:
        self.port = port
        self.password = password

    async def run(self, *args: Any) -> Any:
        import txredisapi
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        protocol = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
        await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", self.port), protocol)
        try:
            if self.password is not None:
                await protocol.execute_command("AUTH", self.password)
            return await protocol.execute_command(*args)
        finally:
            protocol.transport.loseConnection()


def tls_redis(directory: Path, client_certificates: bool) -> tuple[RedisServer, Any]:
    ca = write_test_ca(directory)
    port = free_port()
    redis = RedisServer(reactor(), port=port, extra=(
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(ca.cert), "--tls-key-file", str(ca.key), "--tls-ca-cert-file", str(ca.ca_cert),
        "--tls-auth-clients", "yes" if client_certificates else "no",
    ))
    return redis, ca


async def serve_as_one(url: str, *node_args: str) -> None:
    """Two nodes on C{url}: a call from one reaches the other's client."""
    nodes: list[Child] = []
    clients = []
    try:
        for _ in range(2):
            child, port = await start_node(reactor(), url, *node_args)
            nodes.append(child)
            await child.wait_for(CONNECTED, reactor(), 10)
            clients.append(await client(reactor(), port))
        await clients[0][0].call("to_all", "over TLS")
        await clients[1][1].wait_for("over TLS", reactor())
        for child in nodes:
            assert_no_traceback(child)
    finally:
        for c, _ in clients:
            if c.is_connected:
                await c.disconnect()
        for child in nodes:
            await child.stop(reactor())


@pytest_twisted.ensureDeferred
async def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    """rediss:// with ssl_ca_certs: two nodes serve as one over TLS; the status page shows rediss://."""
    redis, ca = tls_redis(tmp_path, client_certificates=False)
    try:
        await redis.start()
        await serve_as_one(f"rediss://127.0.0.1:{redis.port}/0?ssl_ca_certs={ca.ca_cert}")
    finally:
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    """A Redis that wants client certificates: with ssl_certfile/ssl_keyfile the nodes connect; without, refused."""
    redis, ca = tls_redis(tmp_path, client_certificates=True)
    try:
        await redis.start()
        base = f"rediss://127.0.0.1:{redis.port}/0?ssl_ca_certs={ca.ca_cert}"
        await serve_as_one(f"{base}&ssl_certfile={ca.client_cert}&ssl_keyfile={ca.client_key}")
        child, _ = await start_node(reactor(), base)
        try:
            await child.wait_for("refused node", reactor(), 10)
            assert_no_traceback(child)
        finally:
            await child.stop(reactor())
    finally:
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_tls_with_an_unknown_certificate(tmp_path: Path) -> None:
    """A Redis certificate that the CA file does not vouch for: refused, with the TLS reason, every attempt."""
    redis, _ = tls_redis(tmp_path, client_certificates=False)
    other = tmp_path / "other"
    other.mkdir()
    _, other_ca = write_self_signed(other)
    child: Child | None = None
    try:
        await redis.start()
        child, _ = await start_node(reactor(), f"rediss://127.0.0.1:{redis.port}/0?ssl_ca_certs={other_ca}")
        await child.wait_for("refused node", reactor(), 10)
        line = refusals(child)[0]
        assert "TLS with Redis failed" in line and "certificate verify failed" in line, line
        assert_no_traceback(child)
        assert not any(CONNECTED in line for line in child.lines)
    finally:
        if child is not None:
            await child.stop(reactor())
        await redis.stop()



@pytest_twisted.ensureDeferred
async def test_sentinel_failover(tmp_path: Path) -> None:
    """redis+sentinel://: nodes find the master through Sentinel and follow a failover to the new master."""
    from ._redis import SentinelServer

    # A replica writes the copy it gets to dump.rdb in its --dir: the test's own directory.
    master = RedisServer(reactor(), extra=("--dir", str(tmp_path)))
    replica = RedisServer(reactor(), extra=("--replicaof", "127.0.0.1", str(master.port), "--dir", str(tmp_path)))
    sentinel = SentinelServer(reactor(), tmp_path, master.port)
    nodes: list[Child] = []
    clients = []
    try:
        for server in (master, replica, sentinel):
            await server.start()
        async def replica_known() -> bool:
            return bool(await RedisCommand(sentinel.port).run("SENTINEL", "replicas", "mymaster"))

        await eventually(replica_known, reactor(), 15, "Sentinel knows the replica")
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
        for _ in range(2):
            child, port = await start_node(reactor(), url)
            nodes.append(child)
            await child.wait_for(CONNECTED, reactor(), 10)
            clients.append(await client(reactor(), port))
            await clients[-1][0].call("join", "room")
        await clients[0][0].call("to_all", "before")
        await clients[1][1].wait_for("before", reactor())

        started = time.monotonic()
        await RedisCommand(sentinel.port).run("SENTINEL", "FAILOVER", "mymaster")

        async def moved() -> bool:
            try:
                subscribed = await RedisCommand(replica.port).run("PUBSUB", "NUMSUB", "twisted-hub:v1:all")
            except Exception:  # Sentinel cuts every client of an instance it reconfigures, this one too
                return False
            return int(subscribed[1]) == 2 and all(sum(CONNECTED in line for line in c.lines) >= 2 for c in nodes)

        await eventually(moved, reactor(), 15, "both nodes moved to the new master")
        ids = sorted(c.connection_id for c, _ in clients)

        async def counted() -> bool:
            for c, _ in clients:
                if sorted(await c.call("members", "room")) != ids:
                    return False
            return True

        await eventually(counted, reactor(), 5, "counts exact on the new master")
        await clients[0][0].call("to_all", "after")
        await clients[1][1].wait_for("after", reactor())
        print(f"\nmeasured: Sentinel failover, nodes on the new master with exact counts: {time.monotonic() - started:.2f} s")
        assert any("Sentinel moved the master" in line for line in nodes[0].lines), nodes[0].output()
        for child in nodes:
            assert_no_traceback(child)
    finally:
        for c, _ in clients:
            if c.is_connected:
                await c.disconnect()
        for child in nodes:
            await child.stop(reactor())
        await sentinel.stop()
        await replica.stop()
        await master.stop()


@pytest_twisted.ensureDeferred
async def test_drained_runs_after_every_message_redis_sent_before_it() -> None:
    """
    TxRedisConnector.drained: a claim that timed out first handles what Redis
    had already sent (docs/resumption.md, "Across nodes"); its PING's answer
    comes after those messages on the subscriber connection, so every message
    published before the call has been handed over when C{then} runs.
    """
    from twisted.internet.defer import Deferred

    from twisted_hub._backplane.redis_link import TxRedisConnector, parse_redis_url

    redis = RedisServer(reactor())
    await redis.start()
    connector = TxRedisConnector(reactor=reactor())
    ready: dict[str, Deferred[Any]] = {"commands": Deferred(), "subscriber": Deferred()}

    class Owner:
        settings = parse_redis_url(redis.url)
        channel_all = b"drain-test:all"
        channel_node = b"drain-test:node"
        connected_commands = False
        heard: list[bytes] = []
        link: Any = None

        def link_message(self, channel: bytes, data: bytes) -> None:
            self.heard.append(data)

        def link_ready(self, which: str, link: Any = None) -> None:
            if which == "commands":
                self.link = link
            ready[which].callback(None)

        def link_lost(self, which: str, reason: str) -> None:
            pass

        def link_failed(self, reason: str, refused: bool = False, retry_in: float | None = None) -> None:
            raise AssertionError(f"connecting to the test's redis-server failed: {reason}")

    owner = Owner()
    try:
        connector.start(owner)  # type: ignore[arg-type]
        await ready["commands"]
        await ready["subscriber"]
        sent = [b"m%d" % i for i in range(200)]
        for message in sent:
            owner.link.execute_command("PUBLISH", owner.channel_all, message)
        # (the PUBLISHes are written; the subscriber has heard few or none of them yet)
        when_drained: list[list[bytes]] = []
        done: Deferred[None] = Deferred()
        await owner.link.execute_command("PING")  # every PUBLISH has reached Redis
        connector.drained(lambda: (when_drained.append(list(owner.heard)), done.callback(None)))
        await done
        assert when_drained == [sent]
    finally:
        await connector.stop()
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_the_session_scripts_on_a_real_redis() -> None:
    """
    The Lua the snapshots use (twisted_hub/_backplane/session_store.py), on
    redis-server: a renewal renews what its node wrote; node B, which
    restored the session, marks the key taken with the expiry it had; A's
    next renewal then gives its copy up and leaves B's mark in place.
    """
    from twisted.internet.defer import Deferred

    from twisted_hub.redis import RedisBackplane

    from .test_session_store import KEY, _NoHubs

    redis = RedisServer(reactor())
    await redis.start()
    nodes = []
    try:
        for _ in range(2):
            node = RedisBackplane(redis.url, prefix="scripts", clock=reactor())
            hubs = _NoHubs(reactor())  # type: ignore[arg-type]
            node.attach(hubs)  # type: ignore[arg-type]
            node.start()
            nodes.append((node, hubs))
        (a, hubs_a), (b, _) = nodes

        async def connected() -> bool:
            return a.connected and b.connected

        await eventually(connected, reactor(), 10, "both nodes connected to redis-server")
        name = b"scripts:v1:session:" + KEY.hex().encode()
        ask = b._link.commands
        assert a.save_session("chat", KEY, b"state", 20.0)

        async def written() -> bool:
            return await ask.execute_command("GET", name) is not None

        await eventually(written, reactor(), 10, "A's snapshot in Redis")
        await ask.execute_command("PEXPIRE", name, 5_000)  # (so that a renewal shows)
        await deferLater(reactor(), 0.01, lambda: None)  # (a renewal is due a tick later, at the soonest)
        a._sessions.refresh(everything=True)

        async def renewed() -> bool:
            return 15_000 < await ask.execute_command("PTTL", name) <= 20_000

        await eventually(renewed, reactor(), 10, "A's renewal renewed its own key")
        assert a._sessions.given_up == 0
        found: Deferred[Any] = Deferred()
        b._read_session("chat", KEY, found.callback)
        assert (await found)[0] == b"state"
        b.forget_session(KEY)  # (the client resumed on B: its token rotated there)

        async def marked() -> bool:
            value = await ask.execute_command("GET", name)
            return value is not None and msgpack.unpackb(value) == [0, b.token]

        await eventually(marked, reactor(), 10, "B marked the key taken")
        assert 0 < await ask.execute_command("PTTL", name) <= 20_000  # (with the expiry it had)
        await deferLater(reactor(), 0.01, lambda: None)
        a._sessions.refresh(everything=True)

        async def given_up() -> bool:
            return hubs_a.given_up == [("chat", KEY)]

        await eventually(given_up, reactor(), 10, "A gave its copy up")
        assert msgpack.unpackb(await ask.execute_command("GET", name)) == [0, b.token]
        assert (a.given_up, a.snapshots_kept, a._sessions.rewritten) == (1, 0, 0)
    finally:
        for node, _ in nodes:
            await node.stop()
        await redis.stop()
