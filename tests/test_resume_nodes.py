"""
A session moving between nodes (docs/resumption.md, "Across nodes"), the
way users meet it: two L{HubServerFactory} nodes on real 127.0.0.1 ports,
joined by L{RedisBackplane} through a real C{redis-server}; a proxy in front
that resets connections (L{CuttingProxy}) and is pointed at the other node
before the client comes back, as a round-robin balancer without stickiness
would; a L{ReconnectingHubClient} with C{resume=True}.

- the session resumes on the other node: same connection id, groups and
  C{connection.items}, C{on_resumed} there, no disconnect anywhere;
- group messages published on either node while the client was away or
  moving arrive once, in order; a call running on the old node when the
  session moved is answered once (forwarded), and C{clients.client(id)}
  from the old node reaches the client on the new one;
- a claim nobody answers (the node holding the session has left) is
  refused C{session-unknown} and the client starts afresh;
- a session that cannot travel (C{connection.items} that msgpack cannot
  carry, a stream open) ends on its node, and its client is refused
  C{session-unknown} and starts afresh;
- a call still running on a node that dies after the session left it is
  answered C{duplicate-call}, never left hanging;
- a node that stops gracefully (a rolling restart) hands its sessions over:
  its clients resume on another node instead of starting afresh.

A missing redis-server fails, never skips.  Every wait is bounded and wakes
on the event it waits for (tests/_resume_support.py, L{until}): a hub hook,
a receiver call, a client's connection or resume, a node learning of the
other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted

from twisted_hub import ConnectionClosedError, HubError, HubServerFactory, ReconnectingHubClient, ResumePolicy, method
from twisted_hub._ops.endpoints import resume_status
from twisted_hub._ops.service import SessionHandover, shutdown_connections
from twisted_hub.redis import RedisBackplane

from ._cutting_proxy import CuttingProxy
from ._redis import RedisServer
from ._resume_support import SEEN, Receiver, RecordingHub, behind_proxy, changed, reactor, resuming_client, running, until

pytestmark = pytest.mark.timeout(60)


class NodesHub(RecordingHub):
    hub_name = "nodes"

    @method
    def publish(self, topic: str, number: int) -> None:
        self.clients.group(topic).item(number)

    @method
    def tell(self, connection_id: str, number: int) -> None:
        self.clients.client(connection_id).item(number)

    @method
    def keep_object(self) -> None:
        self.connection.items["lock"] = object()  # (not a msgpack value: it cannot travel)

    @method
    async def ticks(self, count: int) -> AsyncIterator[int]:
        for n in range(count):
            yield n

    @method
    async def slow(self, value: int, seconds: float) -> int:
        await super().slow(value, seconds)
        self.clients.caller.item(1000 + value)  # (sent by the old node once the session moved: it reaches the new one)
        return value


@dataclass
class Nodes:
    redis: RedisServer
    factories: list[HubServerFactory]
    ports: list[Any]
    proxy: CuttingProxy
    proxy_port: int

    def port_of(self, node: int) -> int:
        return int(self.ports[node].getHost().port)

    def route_to(self, node: int) -> None:
        """New connections through the proxy go to C{node} (what a balancer's next turn does)."""
        self.proxy.target_port = self.port_of(node)

    def backplane(self, node: int) -> RedisBackplane:
        backplane = self.factories[node].backplane
        assert isinstance(backplane, RedisBackplane)
        return backplane


def heard(backplane: RedisBackplane) -> RedisBackplane:
    """C{backplane}, whose every message heard and every node learnt of (its snapshot loaded) wakes L{until}."""
    inbox, mirror = backplane._inbox, backplane._mirror
    receive, loaded = inbox.receive, mirror.loaded

    def received(*args: Any) -> None:
        receive(*args)
        changed()

    def learnt(*args: Any) -> None:
        loaded(*args)
        changed()

    inbox.receive = received  # type: ignore[method-assign]
    mirror.loaded = learnt  # type: ignore[method-assign]
    return backplane


def metric(nodes: Nodes, node: int, name: str, **labels: str) -> float | None:
    """The value of a sample of node C{node}'s metrics."""
    metrics = nodes.factories[node].metrics
    assert metrics is not None
    value: float | None = metrics.registry.get_sample_value(name, labels)
    return value


def claims(nodes: Nodes, node: int) -> dict[str, float | None]:
    """Node C{node}'s claims by outcome, as its metrics show them."""
    return {
        outcome: metric(nodes, node, "twisted_hub_session_claims_total", outcome=outcome)
        for outcome in ("won", "refused", "unanswered", "restored")
    }


@asynccontextmanager
async def two_nodes(claim_timeout: float = 2.0) -> AsyncIterator[Nodes]:
    SEEN.reset()
    redis = RedisServer(reactor())
    await redis.start()
    factories: list[HubServerFactory] = []
    ports: list[Any] = []
    listening = None
    try:
        for _ in range(2):
            backplane = heard(RedisBackplane(redis.url, lease=3.0, claim_timeout=claim_timeout))
            factories.append(HubServerFactory(
                [NodesHub], resume=ResumePolicy(window=10.0), allowed_origins=["*"], backplane=backplane, metrics=True,
            ))
        port_a, proxy, listening = behind_proxy(factories[0])
        ports = [port_a, reactor().listenTCP(0, factories[1], interface="127.0.0.1")]
        nodes = Nodes(redis, factories, ports, proxy, listening.getHost().port)
        await until(
            lambda: len(nodes.backplane(0).nodes) == len(nodes.backplane(1).nodes) == 1, 10.0,
            "both nodes up and hearing each other",
        )
        yield nodes
    finally:
        SEEN.stop_work()
        if listening is not None:
            await listening.stopListening()
        for port in ports:
            await port.stopListening()
        for factory in factories:
            await factory.backplane_left()
        await redis.stop()


def client(port: int, receiver: Receiver) -> ReconnectingHubClient:
    return resuming_client(port, "nodes", receiver, retry=0.2)


@pytest_twisted.ensureDeferred
async def test_a_session_moves_to_the_other_node_and_loses_nothing() -> None:
    """A cut client resumes on node B: nothing lost or doubled, the running call answered once; both nodes count it."""
    async with two_nodes() as nodes:
        receiver = Receiver()
        mover = client(nodes.proxy_port, receiver)
        # a publisher on each node (connected directly)
        on_a = client(nodes.port_of(0), Receiver())
        on_b = client(nodes.port_of(1), Receiver())
        async with running(mover, on_a, on_b):
            connection_id = await mover.call("subscribe", "news")
            assert nodes.backplane(0).token in connection_id  # (it began on node A)
            await on_a.call("publish", "news", 0)
            await until(lambda: receiver.items == [0], what="the first item")
            in_flight = mover.call("slow", 7, 0.5)
            await until(lambda: SEEN.running == [7], what="the slow call running on node A")
            # the balancer's next turn is node B; the link drops
            nodes.route_to(1)
            assert nodes.proxy.cut_all() == 1
            for number in (1, 2, 3):
                await on_b.call("publish", "news", number)
                await on_a.call("publish", "news", number + 10)
            assert await in_flight == 7  # answered once: forwarded by node A
            await until(lambda: len(receiver.items) == 8, what=lambda: f"the items published meanwhile (so far {receiver.items})")
            news = [n for n in receiver.items if n < 1000]
            assert sorted(news) == [0, 1, 2, 3, 11, 12, 13]
            # each node's own messages arrive in the order it sent them, none twice
            assert [n for n in news if 0 < n < 10] == [1, 2, 3]
            assert [n for n in news if n > 10] == [11, 12, 13]
            assert receiver.items.count(1007) == 1
            # the hub saw one connection, resumed once (on B), never disconnected; its state carried over
            assert SEEN.connected.count(connection_id) == 1
            assert SEEN.resumed == [connection_id]
            assert all(cid != connection_id for cid, _ in SEEN.disconnected)
            assert mover.resumes == 1 and sum(mover.resume_refusals.values()) == 0
            assert mover.current is not None and mover.current.connection_id == connection_id
            assert await mover.call("topic") == ["news", ["news"]]
            registry_a = nodes.factories[0].resume_registries["nodes"]
            registry_b = nodes.factories[1].resume_registries["nodes"]
            assert (registry_a.moved_out, registry_b.moved_in) == (1, 1)
            # operators see it: the metrics and the status page of each node
            for node, name in ((0, "twisted_hub_sessions_moved_out_total"), (1, "twisted_hub_sessions_moved_in_total")):
                metrics = nodes.factories[node].metrics
                assert metrics is not None and metrics.registry.get_sample_value(name, {"hub": "nodes"}) == 1
            status_a, status_b = resume_status(nodes.factories[0]), resume_status(nodes.factories[1])
            assert status_a is not None and (status_a["moved_out"], status_a["moved_in"]) == (1, 0)
            assert status_b is not None and (status_b["moved_in"], status_b["resumed"]) == (1, 1)
            # node B won its claim; node A forwarded the slow call's answer (its receiver call for the
            # caller went to node B as any call for a connection another node holds)
            assert claims(nodes, 1) == {"won": 1, "refused": 0, "unanswered": 0, "restored": 0}
            assert claims(nodes, 0) == {"won": 0, "refused": 0, "unanswered": 0, "restored": 0}
            assert [metric(nodes, node, "twisted_hub_forwarded_messages_total") for node in (0, 1)] == [1, 0]
            assert (status_b["claims"]["won"], status_a["forwarded"], status_a["late_handovers"]) == (1, 1, 0)
            # and the status page's rows of each node's backplane
            moved = "sessions moved between nodes"
            assert (moved, "0 taken over, 1 handed over; claims refused 0, unanswered 0") in nodes.backplane(0).status()
            assert (moved, "1 taken over, 0 handed over; claims refused 0, unanswered 0") in nodes.backplane(1).status()
            assert connection_id not in nodes.factories[0].runtimes["nodes"].connections
            assert connection_id in nodes.factories[1].runtimes["nodes"].connections
            # clients.client(id) from node A reaches it on node B (Moved, or A forwarding)
            await on_a.call("tell", connection_id, 500)
            await until(lambda: receiver.items[-1:] == [500], what="a receiver call routed from node A")
            # and a group message from either node still arrives once
            await on_a.call("publish", "news", 20)
            await on_b.call("publish", "news", 21)
            await until(lambda: receiver.items[-2:] in ([20, 21], [21, 20]), what="group messages after the move")
            assert receiver.items.count(20) == receiver.items.count(21) == 1
        await until(lambda: (connection_id, "normal") in SEEN.disconnected, what="the session ending on node B")
        assert [cid for cid, _ in SEEN.disconnected].count(connection_id) == 1


@pytest_twisted.ensureDeferred
async def test_a_claim_nobody_answers_is_refused_session_unknown() -> None:
    """
    Node A has left the backplane: node B's claim goes unanswered; with a
    call in flight the session was never quiet, so Redis holds no snapshot
    of it: the client is refused session-unknown and counted.
    """
    async with two_nodes(claim_timeout=0.5) as nodes:
        receiver = Receiver()
        mover = client(nodes.proxy_port, receiver)
        async with running(mover):
            first = await mover.call("subscribe", "news")
            in_flight = mover.call("slow", 3, 30.0)
            await until(lambda: SEEN.running == [3], what="the slow call running on node A")
            assert nodes.backplane(0).saved == 0  # (never quiet: no snapshot)
            # node A leaves the backplane (it can no longer hear a claim); its session stays there
            await nodes.factories[0].backplane.stop()
            nodes.route_to(1)
            assert nodes.proxy.cut_all() == 1
            await until(lambda: mover.resume_refusals.get("session-unknown") == 1, what="the refusal")
            with pytest.raises(ConnectionClosedError):
                await in_flight  # (it may have run on node A: failed, never run again)
            second = await mover.call("subscribe", "news")
            assert second != first and nodes.backplane(1).token in second
            registry_b = nodes.factories[1].resume_registries["nodes"]
            assert registry_b.refused["session-unknown"] == 1 and registry_b.moved_in == 0
            assert claims(nodes, 1) == {"won": 0, "refused": 0, "unanswered": 1, "restored": 0}
            status = resume_status(nodes.factories[1])
            assert status is not None and status["claims"] == {"won": 0, "refused": 0, "unanswered": 1, "restored": 0}


@pytest_twisted.ensureDeferred
async def test_a_handover_after_the_claim_timed_out_is_counted_lost() -> None:
    """
    The claim times out before any node can answer (C{claim_timeout} 1 µs):
    the client is refused C{session-unknown} and starts afresh; node A's
    handover, arriving after, is counted as a session lost (a metric and
    C{late_handovers} on the status page).
    """
    async with two_nodes(claim_timeout=1e-6) as nodes:
        mover = client(nodes.proxy_port, Receiver())
        async with running(mover):
            first = await mover.call("subscribe", "news")
            nodes.route_to(1)
            assert nodes.proxy.cut_all() == 1
            await until(lambda: mover.resume_refusals.get("session-unknown") == 1, what="the refusal")
            assert claims(nodes, 1) == {"won": 0, "refused": 0, "unanswered": 1, "restored": 0}
            late = "twisted_hub_late_handovers_total"
            await until(lambda: metric(nodes, 1, late) == 1, what=lambda: f"{late} is {metric(nodes, 1, late)}")
            status = resume_status(nodes.factories[1])
            assert status is not None and (status["late_handovers"], status["moved_in"]) == (1, 0)
            rows = dict(nodes.backplane(1).status())
            assert rows["sessions lost in a move"].startswith("1 (handed over after this node's claim timed out")
            assert rows["sessions moved between nodes"] == "0 taken over, 0 handed over; claims refused 0, unanswered 1"
            assert nodes.factories[0].resume_registries["nodes"].moved_out == 1  # (node A gave it up: it is lost)
            assert claims(nodes, 1)["won"] == 0
            second = await mover.call("subscribe", "news")
            assert second != first and nodes.backplane(1).token in second
            assert SEEN.resumed == []


@pytest_twisted.ensureDeferred
async def test_a_call_running_on_a_node_that_dies_after_the_move_is_answered_duplicate_call() -> None:
    """A call still running on node A when A leaves after the move is answered duplicate-call, never left hanging."""
    async with two_nodes() as nodes:
        mover = client(nodes.proxy_port, Receiver())
        async with running(mover):
            await mover.call("subscribe", "news")
            in_flight = mover.call("slow", 9, 5.0)
            await until(lambda: SEEN.running == [9], what="the slow call running on node A")
            nodes.route_to(1)
            assert nodes.proxy.cut_all() == 1
            await until(lambda: mover.resumes == 1, what="the resume on node B")
            # node A leaves (its goodbye: node B hears it gone at once) while the call still runs there
            await nodes.factories[0].backplane.stop()
            with pytest.raises(HubError) as caught:
                await in_flight
            assert caught.value.code == "duplicate-call"


@pytest_twisted.ensureDeferred
async def test_items_that_cannot_travel_end_the_session_where_it_was() -> None:
    """connection.items msgpack cannot carry: node A ends the session and refuses the claim; the client starts afresh."""
    async with two_nodes() as nodes:
        mover = client(nodes.proxy_port, Receiver())
        async with running(mover):
            first = await mover.call("subscribe", "news")
            await mover.call("keep_object")
            nodes.route_to(1)
            assert nodes.proxy.cut_all() == 1
            await until(lambda: mover.resume_refusals.get("session-unknown") == 1, what="the refusal")
            second = await mover.call("subscribe", "news")
            assert second != first
            await until(lambda: (first, "connection-lost") in SEEN.disconnected, what="the session ending on node A")
            assert nodes.factories[0].resume_registries["nodes"].refused["session-unknown"] == 1
            assert nodes.factories[0].resume_registries["nodes"].moved_out == 0
            assert claims(nodes, 1) == {"won": 0, "refused": 1, "unanswered": 0, "restored": 0}  # (node A answered: no session)


@pytest_twisted.ensureDeferred
async def test_a_session_with_a_stream_open_does_not_move_and_its_stream_fails() -> None:
    """A session with a stream open does not move: its stream fails, node A refuses the claim, the client starts afresh."""
    async with two_nodes() as nodes:
        mover = client(nodes.proxy_port, Receiver())
        async with running(mover):
            first = await mover.call("subscribe", "news")
            assert mover.current is not None
            stream = mover.current.open_stream("ticks", [1000], window=2)
            got: list[int] = []
            with pytest.raises(ConnectionClosedError):
                async for item in stream:
                    got.append(item)
                    if len(got) == 3:
                        nodes.route_to(1)
                        assert nodes.proxy.cut_all() == 1
            assert got[:3] == [0, 1, 2] and len(got) < 1000
            await until(lambda: mover.resume_refusals.get("session-unknown") == 1, what="the refusal")
            assert await mover.call("subscribe", "news") != first
            await until(lambda: any(cid == first for cid, _ in SEEN.disconnected), what="the session ending on node A")
            assert claims(nodes, 1) == {"won": 0, "refused": 1, "unanswered": 0, "restored": 0}


@pytest_twisted.ensureDeferred
async def test_a_stopping_node_hands_its_sessions_over() -> None:
    """
    A rolling restart: node A stops gracefully (what C{HubService.stopService}
    does: close every connection with 1001, then wait for the sessions to be
    claimed); its client resumes on node B with nothing lost, and node A's
    wait ends as soon as no session is left there.
    """
    async with two_nodes() as nodes:
        receiver = Receiver()
        mover = client(nodes.proxy_port, receiver)
        on_b = client(nodes.port_of(1), Receiver())
        async with running(mover, on_b):
            connection_id = await mover.call("subscribe", "news")
            await on_b.call("publish", "news", 1)
            await until(lambda: receiver.items == [1], what="the first item")
            factory_a = nodes.factories[0]
            nodes.route_to(1)  # (node A stopped listening: the balancer sends everyone to B)
            factory_a.handing_over = True
            dropped = await shutdown_connections(factory_a, 5.0, reactor())
            assert dropped == 0
            await on_b.call("publish", "news", 2)  # (while the client comes back)
            left = await SessionHandover(factory_a, 5.0, reactor()).start()
            assert left == 0 and factory_a.resume_registries["nodes"].moved_out == 1
            await until(lambda: receiver.items == [1, 2], what=lambda: f"the item sent meanwhile ({receiver.items})")
            assert mover.resumes == 1 and sum(mover.resume_refusals.values()) == 0
            assert SEEN.resumed == [connection_id]
            assert all(cid != connection_id for cid, _ in SEEN.disconnected)  # (no on_disconnected on A)
            assert await mover.call("topic") == ["news", ["news"]]
            assert mover.current is not None and mover.current.connection_id == connection_id


@pytest_twisted.ensureDeferred
async def test_a_node_cut_off_from_redis_gives_up_a_session_restored_elsewhere() -> None:
    """
    Node A, alive, is cut off from Redis while its client's quiet session
    has a snapshot there; the client comes back on node B, whose claim
    nobody answers: B restores the session from the snapshot.  When A
    reaches Redis again its renewal finds the key taken, and A gives its
    copy up as a move does: no C{on_disconnected} on A, and the client
    stays on B with its groups (docs/resumption.md, "When a node dies").
    """
    async with two_nodes(claim_timeout=0.5) as nodes:
        a = nodes.backplane(0)
        store = a._sessions
        save, taken = store.save, store._taken
        assert taken is not None

        def saved(*args: Any) -> bool:
            written = save(*args)
            changed()
            return written

        def given_up(*args: Any) -> None:
            taken(*args)
            changed()

        store.save = saved  # type: ignore[method-assign]
        store._taken = given_up
        receiver = Receiver()
        mover = client(nodes.proxy_port, receiver)
        async with running(mover):
            connection_id = await mover.call("subscribe", "news")
            await until(lambda: a.snapshots_kept == 1, what="node A's snapshot of the quiet session")
            await a._connector.stop()  # cut off from Redis (the node and its copy of the session live on)
            await until(lambda: not a.connected, what="node A without Redis")
            nodes.route_to(1)
            assert nodes.proxy.cut_all() == 1
            await until(lambda: mover.resumes == 1, what="the client resumed on node B")
            assert claims(nodes, 1) == {"won": 0, "refused": 0, "unanswered": 0, "restored": 1}
            assert connection_id in nodes.factories[0].runtimes["nodes"].connections  # (A's stale copy)
            a._connector.start(a)  # A reaches Redis again
            await until(lambda: a.given_up == 1, what="node A finding the key taken")
            assert connection_id not in nodes.factories[0].runtimes["nodes"].connections
            registry_a = nodes.factories[0].resume_registries["nodes"]
            assert (len(registry_a), registry_a.moved_out) == (0, 1)  # (it left as a move does)
            assert all(cid != connection_id for cid, _ in SEEN.disconnected)  # nowhere an on_disconnected
            assert SEEN.resumed == [connection_id]
            assert mover.current is not None and mover.current.connection_id == connection_id
            assert await mover.call("topic") == ["news", ["news"]]
            row = dict(a.status())["sessions kept in redis"]
            assert row.endswith("; 1 restored elsewhere while this node was cut off"), row
        await until(lambda: (connection_id, "normal") in SEEN.disconnected, what="the session ending on node B")
        assert [cid for cid, _ in SEEN.disconnected].count(connection_id) == 1


@pytest_twisted.ensureDeferred
async def test_a_quiet_session_that_moves_leaves_no_snapshot_behind() -> None:
    """
    A quiet session with a snapshot in Redis moves to node B (node A
    answers B's claim): node A stops keeping that snapshot at once (it would
    renew, and after B deleted it write back, a stale snapshot for as long
    as it lives), and once the client resumed on B Redis holds none of it.
    """
    async with two_nodes() as nodes:
        a = nodes.backplane(0)
        store = a._sessions
        save = store.save

        def saved(*args: Any) -> bool:
            written = save(*args)
            changed()
            return written

        store.save = saved  # type: ignore[method-assign]
        mover = client(nodes.proxy_port, Receiver())
        async with running(mover):
            await mover.call("subscribe", "news")
            await until(lambda: a.snapshots_kept == 1, what="node A's snapshot of the quiet session")
            nodes.route_to(1)
            assert nodes.proxy.cut_all() == 1
            await until(lambda: mover.resumes == 1, what="the client resumed on node B")
            assert claims(nodes, 1)["won"] == 1
            assert a.snapshots_kept == 0  # (A no longer renews it)
            redis = nodes.backplane(1)._link.commands
            name = b"twisted-hub:v1:session:*"
            assert await redis.execute_command("KEYS", name) == []  # (B deleted it once its token rotated)
            store.refresh(everything=True)  # A's next renewals: nothing of it
            await a._link.commands.execute_command("PING")  # (answered after whatever A just sent)
            assert await redis.execute_command("KEYS", name) == []
