"""
A session outlives its node's C{kill -9} (docs/resumption.md, "When a node
dies"), the way users meet it: two C{twistd hub --redis} processes (the
built-in chat hub) on one real C{redis-server}, a reconnecting client with
resume on behind a proxy (L{CuttingProxy}) pointed at the other node before
the client comes back, as a round-robin balancer without stickiness would.

The client joins a room, the session goes quiet (its node writes the
snapshot: the test waits for the key in Redis), the node is killed with
SIGKILL (its kernel closes the client's link): the client resumes on the other node, which
finds no live holder, reads the snapshot and resumes it: same connection
id, its room (the group) and its name (C{connection.items}) carried, what
the room heard while it was away delivered once, and it goes on talking.

A second client whose RESUME does not match the snapshot (traffic in
flight when the node died) is the bound: unit-tested in
tests/test_session_snapshot.py, and held by the chaos test's C{kill -9}.

A missing redis-server fails, never skips.  Only processes started here are
signalled, by PID; every wait has a deadline.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
import pytest_twisted

from twisted_hub import HubClientOptions, ReconnectingHubClient

from ._cutting_proxy import CuttingProxy
from ._redis import RedisServer
from ._twistd import Child, started_port, twistd_hub
from .test_scaling_processes import eventually

pytestmark = [pytest.mark.timeout(90), pytest.mark.long_process]

CONNECTED = "connected to Redis at"


class Room:
    """A chat client's receiver: what it heard, in order."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, str]] = []

    def said(self, room: str, user: str, text: str) -> None:
        self.heard.append((room, user, text))

    def joined(self, room: str, user: str) -> None:
        pass

    def left(self, room: str, user: str) -> None:
        pass


async def start_node(reactor: Any, redis_url: str) -> tuple[Child, int]:
    child = twistd_hub(
        reactor, "--listen", "tcp:0:interface=127.0.0.1", "--redis", redis_url, "--resume-window", "30",
        # heartbeats carry both sides' acknowledgements: a quiet session is noticed within a beat or two
        "--heartbeat-interval", "0.5", "--max-connections-per-ip", "0", "--metrics",
    )
    try:
        port = await started_port(child, reactor)
        await child.wait_for(CONNECTED, reactor, 15)
    except BaseException:
        await child.stop(reactor)
        raise
    return child, port


async def session_keys(reactor: Any, redis: RedisServer) -> list[bytes]:
    """The session snapshot keys in Redis now."""
    import txredisapi
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    protocol = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", redis.port), protocol)
    try:
        keys: list[bytes] = await protocol.keys("twisted-hub:v1:session:*")
    finally:
        protocol.transport.loseConnection()
    return list(keys)


@pytest_twisted.ensureDeferred
async def test_a_quiet_session_is_restored_on_another_node_after_kill_9() -> None:
    from twisted.internet import reactor

    redis = RedisServer(reactor)
    await redis.start()
    nodes: list[Child] = []
    listening = None
    clients: list[ReconnectingHubClient] = []
    try:
        node_a, port_a = await start_node(reactor, redis.url)
        nodes.append(node_a)
        node_b, port_b = await start_node(reactor, redis.url)
        nodes.append(node_b)
        proxy = CuttingProxy(reactor, port_a)
        listening = reactor.listenTCP(0, proxy, interface="127.0.0.1")
        ann_room, bob_room = Room(), Room()
        ann = ReconnectingHubClient(
            f"ws://127.0.0.1:{listening.getHost().port}/hub/chat", "chat", ann_room,
            HubClientOptions(resume=True), retry_policy=lambda attempt: 0.2,
        )
        bob = ReconnectingHubClient(
            f"ws://127.0.0.1:{port_b}/hub/chat", "chat", bob_room, HubClientOptions(resume=True),
            retry_policy=lambda attempt: 0.2,
        )
        clients += [ann, bob]
        for c in clients:
            c.start()
        assert await ann.call("join", "lobby", "ann") >= 1
        await bob.call("join", "lobby", "bob")
        await ann.call("say", "lobby", "before")
        await eventually(lambda: _true(("lobby", "ann", "before") in bob_room.heard), reactor, 10, "bob hearing ann")
        current = ann.current
        assert current is not None
        connection_id = current.connection_id
        # the session goes quiet: node A writes its snapshot
        await eventually(
            lambda: _nonempty(session_keys(reactor, redis)), reactor, 15, "node A writing the quiet session's snapshot",
        )

        # the balancer's next turn is node B; node A dies (its kernel closes the client's link)
        proxy.target_port = port_b
        assert node_a.pid is not None
        node_a.signal(signal.SIGKILL)
        await node_a.ended
        await bob.call("say", "lobby", "while away")  # (heard by nobody on node A: it is gone)

        await eventually(lambda: _true(ann.resumes == 1 or sum(ann.resume_refusals.values()) > 0), reactor, 30,
                         "the client resuming on node B")
        assert sum(ann.resume_refusals.values()) == 0, ann.resume_refusals
        assert ann.resumes == 1
        current = ann.current
        assert current is not None and current.connection_id == connection_id  # the same session
        # its room and its name came along: it may speak there, and is heard as "ann"
        assert await ann.call("rooms") == ["lobby"]
        await ann.call("say", "lobby", "after")
        await eventually(lambda: _true(("lobby", "ann", "after") in bob_room.heard), reactor, 10, "bob hearing ann again")
        # what the room heard while it was away arrived once, in order, before what came after
        await eventually(lambda: _true(("lobby", "ann", "after") in ann_room.heard), reactor, 10, "ann hearing herself")
        texts = [text for room, user, text in ann_room.heard]
        assert texts == ["before", "while away", "after"], texts
        # node B counts a restored claim, and no session lost
        metrics = await _metrics(reactor, port_b)
        assert 'twisted_hub_session_claims_total{outcome="restored"} 1.0' in metrics, metrics
        assert "twisted_hub_late_handovers_total 0.0" in metrics
    finally:
        for c in clients:
            await c.stop()
        if listening is not None:
            await listening.stopListening()
        for child in nodes:
            await child.stop(reactor)
        await redis.stop()


async def _true(value: bool) -> bool:
    return value


async def _nonempty(keys: Any) -> bool:
    return bool(await keys)


async def _metrics(reactor: Any, port: int) -> str:
    from twisted.web.client import Agent, readBody

    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    return (await readBody(response)).decode()
