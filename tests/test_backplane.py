"""
The protocol between nodes (L{RedisBackplane}) on an in-memory Redis and
one L{Clock}: three in-memory hub servers act as one.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import DisconnectKind, HubServerFactory, HubService
from twisted_hub._backplane import LocalBackplane, node_of
from twisted_hub._backplane_wire import MAX_AGE, NodeCodec, Signer, Sync
from twisted_hub._base_error import HubStateError
from twisted_hub._redis_commands import resp_size
from twisted_hub.redis import GOODBYE_TIMEOUT, RedisBackplane, parse_redis_url
from twisted_hub.testing import HubTestServer, TestConnection

from ._fakeredis import FakeRedis
from .helpers.hubs import Recorder, WorkLog, work_hub

LEASE = 3.0


class Cluster:
    """Nodes on one fake Redis and one clock."""

    def __init__(self, count: int = 3, running: bool = True, **options: Any) -> None:
        self.clock = Clock()
        self.redis = FakeRedis(self.clock)
        self.redis.running = running
        self.servers: list[HubTestServer] = []
        self.backplanes: list[RedisBackplane] = []
        #: one log for the WorkHubs of every node
        self.log = WorkLog()
        for _ in range(count):
            backplane = RedisBackplane(
                "redis://127.0.0.1:6379/0", lease=LEASE, clock=self.clock, connector=self.redis.connector(), **options
            )
            server = HubTestServer([work_hub(self.log)], clock=self.clock, backplane=backplane)
            server.factory.doStart()
            self.servers.append(server)
            self.backplanes.append(backplane)

    def connect(self, node: int) -> tuple[TestConnection, Recorder]:
        recorder = Recorder()
        connection = self.servers[node].connect("work", receiver=recorder)
        self.flush()
        return connection, recorder

    def call(self, connection: TestConnection, method: str, *args: Any) -> Any:
        d = connection.client.call(method, *args)
        self.flush()
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        assert outcome, f"{method} did not answer"
        return outcome[0]

    def flush(self) -> None:
        for _ in range(3):
            for server in self.servers:
                server.flush()

    def advance(self, seconds: float) -> None:
        """Move time in small steps, exchanging messages between them."""
        steps = math.ceil(seconds / 0.25 - 1e-9)
        for _ in range(steps):
            self.clock.advance(0.25)
            self.flush()


def said(recorder: Recorder) -> list[Any]:
    return [args[0] for name, args in recorder.calls if name == "said"]


class AddressingTests(SynchronousTestCase):
    """Every way of addressing clients reaches every node."""

    def setUp(self) -> None:
        self.cluster = Cluster()
        self.conns = [self.cluster.connect(n) for n in (0, 1, 2)]

    def test_connection_ids_name_their_node(self) -> None:
        """A connection id starts with its node's token, so ids are unique across nodes and routable."""
        ids = [c.client.connection_id for c, _ in self.conns]
        self.assertEqual(len(set(ids)), 3)
        for (connection, _), backplane in zip(self.conns, self.cluster.backplanes):
            self.assertEqual(node_of(connection.client.connection_id), backplane.token)

    def test_all_reaches_every_node_with_one_publish(self) -> None:
        """clients.all from one node reaches the clients of all three through one PUBLISH."""
        before = self.cluster.redis.count("PUBLISH")
        self.cluster.call(self.conns[0][0], "to_all", "hello")
        self.assertEqual(self.cluster.redis.count("PUBLISH") - before, 1)
        for _, recorder in self.conns:
            self.assertEqual(said(recorder), ["hello"])

    def test_others_and_all_except_exclude_across_nodes(self) -> None:
        """others skips the caller; all_except skips a connection held by another node."""
        self.cluster.call(self.conns[0][0], "to_others", "o")
        self.assertEqual([said(r) for _, r in self.conns], [[], ["o"], ["o"]])
        excluded = self.conns[2][0].client.connection_id
        self.cluster.call(self.conns[0][0], "to_all_except", [excluded], "x")
        self.assertEqual([said(r) for _, r in self.conns], [["x"], ["o", "x"], ["o"]])

    def test_client_on_another_node(self) -> None:
        """client(id) reaches a connection on another node with one PUBLISH on that node's channel only."""
        target = self.conns[2][0].client.connection_id
        before = len(self.cluster.redis.log)
        self.cluster.call(self.conns[0][0], "to_client", target, "psst")
        publishes = [args for name, args in self.cluster.redis.log[before:] if name == "PUBLISH"]
        self.assertEqual([channel for channel, _ in publishes], [self.cluster.backplanes[2].channel_node])
        self.assertEqual([said(r) for _, r in self.conns], [[], [], ["psst"]])

    def test_only_spanning_nodes(self) -> None:
        """only() with ids on this node and two others reaches exactly those connections."""
        ids = [c.client.connection_id for c, _ in self.conns] + ["nosuchnode-1"]
        self.cluster.call(self.conns[1][0], "to_only", ids, "all three")
        self.assertEqual([said(r) for _, r in self.conns], [["all three"]] * 3)

    def test_kick_on_another_node(self) -> None:
        """clients.kick(id) closes a connection another node holds, with one PUBLISH on that node's channel only."""
        target, _ = self.conns[2]
        waiting = target.client.wait_for_disconnect()
        before = len(self.cluster.redis.log)
        self.cluster.call(self.conns[0][0], "kick", target.client.connection_id, "banned")
        publishes = [args for name, args in self.cluster.redis.log[before:] if name == "PUBLISH"]
        self.assertEqual([channel for channel, _ in publishes], [self.cluster.backplanes[2].channel_node])
        reason = self.successResultOf(waiting)
        self.assertEqual((reason.kind, reason.code, reason.message), (DisconnectKind.KICKED, 4000, "banned"))
        self.assertTrue(self.conns[0][0].client.is_connected and self.conns[1][0].client.is_connected)
        kicked = [e[1] for e in self.cluster.log.events if e[0] == "disconnected"]
        self.assertEqual([(r.kind, r.locally) for r in kicked], [(DisconnectKind.KICKED, True)])

    def test_kick_of_a_gone_connection_on_another_node(self) -> None:
        """A kick for a connection that left its node meanwhile (or an id of no node) closes nobody."""
        target, _ = self.conns[2]
        gone_id = target.client.connection_id
        target.client.disconnect()
        self.cluster.flush()
        self.cluster.call(self.conns[0][0], "kick", gone_id, "late")
        self.cluster.call(self.conns[0][0], "kick", "nosuchnode-1", "nobody")
        self.assertTrue(self.conns[0][0].client.is_connected and self.conns[1][0].client.is_connected)
        self.assertEqual([b.bad_messages for b in self.cluster.backplanes], [0, 0, 0])

    def test_group_send_count_and_members_are_global(self) -> None:
        """Members joined on three nodes are counted and listed on each; a group send reaches them all."""
        for connection, _ in self.conns:
            self.cluster.call(connection, "join", "room")
        extra, extra_recorder = self.cluster.connect(1)
        ids = {c.client.connection_id for c, _ in self.conns}
        for connection, _ in self.conns:
            self.assertEqual(set(self.cluster.call(connection, "members", "room")), ids)
        self.assertEqual(self.cluster.call(extra, "leave", "room"), 3)
        self.cluster.call(extra, "to_group", "room", "hi room")
        self.assertEqual([said(r) for _, r in self.conns], [["hi room"]] * 3)
        self.assertEqual(said(extra_recorder), [])
        self.cluster.call(extra, "to_group_except", "room", [self.conns[0][0].client.connection_id], "again")
        self.assertEqual([said(r) for _, r in self.conns], [["hi room"], ["hi room", "again"], ["hi room", "again"]])

    def test_leaving_and_disconnecting_leave_the_global_count(self) -> None:
        """A leave and a disconnection on one node lower the count seen by the others."""
        for connection, _ in self.conns:
            self.cluster.call(connection, "join", "room")
        self.cluster.call(self.conns[1][0], "leave", "room")
        self.assertEqual(self.cluster.call(self.conns[0][0], "join", "room"), 2)
        self.conns[2][0].client.sendClose()
        self.cluster.flush()
        self.assertEqual(self.cluster.call(self.conns[0][0], "join", "room"), 1)

    def test_a_node_started_later_loads_the_members(self) -> None:
        """A node that joins the cluster late sees the members the others already hold."""
        self.cluster.call(self.conns[0][0], "join", "room")
        self.cluster.call(self.conns[1][0], "join", "room")
        backplane = RedisBackplane(lease=LEASE, clock=self.cluster.clock, connector=self.cluster.redis.connector())
        server = HubTestServer([work_hub(self.cluster.log)], clock=self.cluster.clock, backplane=backplane)
        server.factory.doStart()
        self.cluster.servers.append(server)
        late = server.connect("work", receiver=Recorder())
        self.cluster.flush()
        self.assertEqual(self.cluster.call(late, "join", "room"), 3)


class NodeLeaseTests(SynchronousTestCase):
    """A node that stops being heard from leaves the counts within its lease."""

    def test_killed_node_leaves_the_counts_within_the_lease(self) -> None:
        """A killed node's members still count before its lease ends and are gone by lease + lease/3."""
        cluster = Cluster(2)
        a, _ = cluster.connect(0)
        b, _ = cluster.connect(1)
        cluster.call(a, "join", "room")
        cluster.call(b, "join", "room")
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cluster.redis.connectors[1].kill()
        cluster.advance(LEASE * 0.9)
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 1)
        cluster.advance(LEASE * 0.1 + LEASE / 3 + 0.25)  # lease + lease/3 since the kill, and a step
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 0)
        self.assertEqual(cluster.backplanes[0].nodes_expired, 1)
        gone = [e for e in logs if "was not heard from" in e["log_format"] and e["node"] == cluster.backplanes[1].node_id]
        self.assertEqual(len(gone), 1)
        self.assertEqual(gone[0]["count"], 1)

    def test_heartbeats_keep_a_live_node(self) -> None:
        """Nodes that beat stay in each other's counts however long they run."""
        cluster = Cluster(2)
        a, _ = cluster.connect(0)
        b, _ = cluster.connect(1)
        cluster.call(b, "join", "room")
        cluster.advance(LEASE * 5)
        self.assertEqual(cluster.call(a, "join", "room"), 2)
        self.assertEqual(cluster.backplanes[0].nodes_expired, 0)

    def test_stop_waits_for_redis_to_take_the_goodbye(self) -> None:
        """stop() fires once Redis answered the goodbye, not before."""
        cluster = Cluster(2)
        b, _ = cluster.connect(1)
        cluster.call(b, "join", "room")
        cluster.redis.pause()
        stopped = cluster.backplanes[1].stop()
        self.assertNoResult(stopped)
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 1)
        cluster.redis.resume()
        self.successResultOf(stopped)
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 0)
        token = cluster.backplanes[1].token
        self.assertFalse(cluster.redis._alive(cluster.backplanes[1].keys.members(token)))

    def test_stop_gives_up_on_a_silent_redis(self) -> None:
        """A Redis that never answers the goodbye holds stop() for GOODBYE_TIMEOUT seconds, with a warning."""
        cluster = Cluster(2)
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cluster.redis.pause()
        stopped = cluster.backplanes[1].stop()
        cluster.clock.advance(GOODBYE_TIMEOUT - 0.01)
        self.assertNoResult(stopped)
        cluster.clock.advance(0.01)
        self.successResultOf(stopped)
        self.assertEqual(len([e for e in logs if "before Redis confirmed its goodbye" in e["log_format"]]), 1)

    def test_hub_service_waits_for_the_goodbye(self) -> None:
        """HubService.stopService fires only once the backplane's goodbye was answered."""
        cluster = Cluster(1)
        backplane = RedisBackplane(lease=LEASE, clock=cluster.clock, connector=cluster.redis.connector())
        server = HubTestServer([work_hub(cluster.log)], clock=cluster.clock, backplane=backplane)
        service = HubService(factory=server.factory, clock=cluster.clock)
        service.startService()
        self.assertTrue(backplane.connected)
        self.assertEqual(cluster.backplanes[0].nodes, {backplane.token: backplane.node_id})
        cluster.redis.pause()
        stopped = service.stopService()
        self.assertNoResult(stopped)
        cluster.redis.resume()
        self.successResultOf(stopped)
        self.assertEqual(cluster.backplanes[0].nodes, {})

    def test_graceful_stop_leaves_at_once(self) -> None:
        """A node that stops says so: the others drop its members without waiting for the lease."""
        cluster = Cluster(2)
        a, _ = cluster.connect(0)
        b, _ = cluster.connect(1)
        cluster.call(b, "join", "room")
        cluster.servers[1].factory.doStop()
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 0)
        self.assertEqual(cluster.backplanes[0].nodes, {})


class StateLossTests(SynchronousTestCase):
    """Redis loses a node's state while the connections stay up: the node notices and writes it again."""

    def setUp(self) -> None:
        self.cluster = Cluster(2)
        self.a, _ = self.cluster.connect(0)
        self.b, _ = self.cluster.connect(1)
        self.cluster.call(self.a, "join", "room")
        self.cluster.call(self.b, "join", "room")
        self.cluster.call(self.b, "join", "lobby")
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def assertExact(self) -> None:
        for node in (0, 1):
            self.assertEqual(self.cluster.backplanes[node].remote_count("work", "room"), 1)
        self.assertEqual(self.cluster.backplanes[0].remote_count("work", "lobby"), 1)

    def test_redis_stalled_longer_than_the_lease(self) -> None:
        """Redis stalls past the lease (keys expire, links stay): within a lease of its return counts are exact."""
        self.cluster.redis.pause()
        self.cluster.advance(LEASE * 2)
        self.cluster.redis.resume()  # runs what waited, after the keys expired
        self.cluster.flush()
        self.cluster.advance(LEASE)
        self.assertExact()
        self.assertEqual([b.state_rewrites for b in self.cluster.backplanes], [1, 1])
        lost = [e for e in self.logs if "Redis lost the state" in e["log_format"]]
        self.assertEqual(len(lost), 2)
        self.cluster.advance(LEASE * 3)  # and they stay exact
        self.assertExact()
        self.assertEqual([b.state_rewrites for b in self.cluster.backplanes], [1, 1])

    def test_node_stalled_longer_than_the_lease(self) -> None:
        """A node whose reactor stalls past the lease is dropped, then counted again within a lease of its return."""
        beat = self.cluster.backplanes[1]._heartbeat
        assert beat is not None
        beat.stop()
        self.cluster.advance(LEASE * 2)
        self.assertEqual(self.cluster.backplanes[0].remote_count("work", "room"), 0)
        beat.start(LEASE / 3, now=True)
        self.cluster.flush()
        self.cluster.advance(LEASE)
        self.assertExact()
        self.assertEqual(self.cluster.backplanes[1].state_rewrites, 1)

    def test_membership_hash_deleted(self) -> None:
        """The membership hash deleted behind the node's back (lease intact) is written again at the next renewal."""
        backplane = self.cluster.backplanes[1]
        self.cluster.redis.execute("DEL", backplane.keys.members(backplane.token))
        self.cluster.advance(LEASE / 3)
        self.assertEqual(backplane.state_rewrites, 1)
        self.assertEqual(len(self.cluster.redis.data[backplane.keys.members(backplane.token)]), 2)
        self.assertExact()

    def test_no_rewrite_while_nothing_is_lost(self) -> None:
        """Renewals of state that Redis still holds write nothing again, with or without memberships."""
        self.cluster.advance(LEASE * 3)
        self.cluster.call(self.a, "leave", "room")
        self.cluster.advance(LEASE * 3)
        self.assertEqual([b.state_rewrites for b in self.cluster.backplanes], [0, 0])


class RedisOutageTests(SynchronousTestCase):
    """Redis away: nodes serve locally, count what they drop, and rebuild when it is back."""

    def test_unreachable_at_start(self) -> None:
        """With Redis down at start a node serves locally, logs one error line, says so, and joins once Redis is up."""
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cluster = Cluster(2, running=False)
        a, ra = cluster.connect(0)
        b, rb = cluster.connect(1)
        errors = [e for e in logs if e["log_level"] == LogLevel.error and "unreachable" in e["log_format"]]
        self.assertEqual(len(errors), 2)  # one per node
        for backplane in cluster.backplanes:
            backplane.link_failed("Connection refused")  # a later failed attempt: no new line
        self.assertEqual(
            len([e for e in logs if e["log_level"] == LogLevel.error and "unreachable" in e["log_format"]]), 2
        )
        status = dict(cluster.backplanes[0].status())
        self.assertIn("NOT connected", status["redis"])
        cluster.call(a, "to_all", "local only")
        self.assertEqual((said(ra), said(rb)), (["local only"], []))
        self.assertEqual(cluster.backplanes[0].dropped_disconnected, 1)
        cluster.redis.start()
        cluster.flush()
        self.assertIn("connected to", dict(cluster.backplanes[0].status())["redis"])
        cluster.call(a, "to_all", "everyone")
        self.assertEqual((said(ra), said(rb)), (["local only", "everyone"], ["everyone"]))

    def test_restart_rebuilds_presence(self) -> None:
        """After a Redis restart (data lost) every node writes its snapshot again: counts are global again."""
        cluster = Cluster(2)
        a, ra = cluster.connect(0)
        b, rb = cluster.connect(1)
        cluster.call(a, "join", "room")
        cluster.call(b, "join", "room")
        cluster.redis.stop()
        c, _ = cluster.connect(1)
        cluster.call(c, "join", "room")  # joined during the outage
        cluster.call(a, "to_group", "room", "lost")
        self.assertEqual(cluster.backplanes[0].dropped_disconnected, 1)
        self.assertEqual((said(ra), said(rb)), (["lost"], []))
        cluster.redis.start()
        cluster.flush()
        self.assertEqual(cluster.call(a, "join", "room"), 3)
        cluster.call(a, "to_group", "room", "back")
        self.assertEqual((said(ra), said(rb)), (["lost", "back"], ["back"]))

    def test_outage_longer_than_the_lease(self) -> None:
        """An outage longer than the lease drops the other nodes; reconnection brings them back."""
        cluster = Cluster(2)
        a, _ = cluster.connect(0)
        b, _ = cluster.connect(1)
        cluster.call(b, "join", "room")
        cluster.redis.stop()
        cluster.advance(LEASE * 2)
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 0)
        cluster.redis.start()
        cluster.flush()
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 1)

    def test_slow_redis_bounds_the_queue(self) -> None:
        """A Redis that stops answering: pending commands stay under the limit, the rest is dropped, counted and logged."""
        cluster = Cluster(2, max_pending_commands=20)
        a, _ = cluster.connect(0)
        cluster.connect(1)
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cluster.redis.pause()
        for i in range(50):
            cluster.call(a, "to_all", f"m{i}")
        backplane = cluster.backplanes[0]
        self.assertLessEqual(backplane.pending_commands, 20)
        self.assertEqual(backplane.published + backplane.dropped_overload, 50)
        self.assertGreater(backplane.dropped_overload, 0)
        self.assertTrue([e for e in logs if e["log_level"] == LogLevel.error and "dropped" in e["log_format"]])
        self.assertIn("redis messages dropped", dict(backplane.status()))
        cluster.redis.resume()
        self.assertEqual(backplane.pending_commands, 0)

    def test_group_changes_over_the_limit_are_resynced(self) -> None:
        """Group changes not sent while Redis is slow reach the other nodes with the next lease refresh."""
        cluster = Cluster(2, max_pending_commands=3)
        a, _ = cluster.connect(0)
        b, _ = cluster.connect(1)
        cluster.redis.pause()
        for group in ("g1", "g2", "g3", "g4"):
            cluster.call(a, "join", group)
        cluster.redis.resume()
        counts = [cluster.backplanes[1].remote_count("work", g) for g in ("g1", "g2", "g3", "g4")]
        self.assertIn(0, counts)  # some changes could not be sent
        cluster.advance(LEASE / 3)
        self.assertEqual([cluster.backplanes[1].remote_count("work", g) for g in ("g1", "g2", "g3", "g4")], [1] * 4)

    def test_commands_lost_with_the_connection(self) -> None:
        """Commands waiting when Redis goes are counted as lost, not as errors; the pending count starts again at 0."""
        cluster = Cluster(2)
        a, _ = cluster.connect(0)
        cluster.connect(1)
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cluster.redis.pause()
        for i in range(5):
            cluster.call(a, "to_all", f"m{i}")
        backplane = cluster.backplanes[0]
        self.assertEqual(backplane.pending_commands, 5)
        cluster.redis.stop()
        self.assertEqual((backplane.pending_commands, backplane.pending_bytes), (0, 0))
        self.assertEqual(backplane.lost_in_flight, 5)
        self.assertEqual([e for e in logs if "failed" in e["log_format"]], [])
        self.assertEqual(len([e for e in logs if "lost Redis" in e["log_format"]]), 2)  # one per node
        cluster.redis.start()
        self.assertEqual(backplane.pending_commands, 0)

    def test_connection_lost_while_loading_a_node(self) -> None:
        """A node whose snapshot was loading when Redis went is not taken for gone: it is loaded on reconnection."""
        cluster = Cluster(2)
        a, _ = cluster.connect(0)
        b, _ = cluster.connect(1)
        cluster.call(b, "join", "room")
        cluster.redis.pause()
        channel = cluster.backplanes[0].channel_all
        sync = cluster.backplanes[1]._codec.encode(channel, Sync("n1"), cluster.clock.seconds())
        cluster.backplanes[0].link_message(channel, sync)
        cluster.redis.stop()
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 1)
        cluster.redis.start()
        cluster.flush()
        self.assertEqual(cluster.backplanes[0].remote_count("work", "room"), 1)

    def test_garbage_on_the_channel_is_ignored_and_counted(self) -> None:
        """Undecodable or malformed messages on the channel are counted and logged, nothing breaks."""
        cluster = Cluster(2)
        a, ra = cluster.connect(0)
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        channel = cluster.backplanes[0].channel_all
        for junk in [
            b"\xc1 not msgpack",
            b"\x92\x01",  # truncated
            msgpack.packb([0, "other", "work"]),
            msgpack.packb([0, "other", 1, 0, "work", "everyone", None, [], b"x"]),  # unknown target kind
            msgpack.packb([9, "other", 1, 0]),  # unknown kind
            msgpack.packb([3, "other", 0, 0, "n"]),  # sequence numbers start at 1
            msgpack.packb([1, "other", 2, 0, "work", 7, "id"]),  # a group that is not a string
            msgpack.packb([6, "other", 3, 0, "work", 5, "why"]),  # a kick whose connection id is not a string
            msgpack.packb([6, "other", 3, 0, "work", "x-1"]),  # a kick without its reason
        ]:
            cluster.redis.execute("PUBLISH", channel, junk)
        self.assertEqual(cluster.backplanes[0].bad_messages, 9)
        self.assertTrue([e for e in logs if "ignored a backplane message" in e["log_format"]])
        cluster.call(a, "to_all", "still fine")
        self.assertEqual(said(ra), ["still fine"])


def forged_send(payload: bytes, hub: str = "work", origin: str = "f0rged", seq: int = 1) -> bytes:
    """A receiver call to everyone, as a node that does not exist would publish it (unsigned)."""
    return msgpack.packb([0, origin, seq, 0, hub, "all", None, [], payload])


class TrustTests(SynchronousTestCase):
    """What a party that can publish on Redis can do, with and without the shared secret."""

    def secret_file(self, secret: str) -> str:
        import tempfile
        from pathlib import Path

        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "secret"
        path.write_text(secret + "\n")
        return str(path)

    def test_a_payload_that_is_no_receiver_call_reaches_no_client(self) -> None:
        """Without a secret too: a payload that is not one valid receiver call is counted, and every client stays."""
        from twisted_hub._wire import Result, encode

        cluster = Cluster(2)
        conns = [cluster.connect(n) for n in (0, 1)]
        channel = cluster.backplanes[0].channel_all
        for seq, payload in enumerate([
            b"\xc1garbage",  # what disconnected every client (issue 20)
            encode(Result(1, "x")),  # a hub message, but not a receiver call
            msgpack.packb([6, "said", ["a"]]) * 2,  # two messages in one
            msgpack.packb([6, "said", "not a list"]),
            msgpack.packb([6, "said", ["x" * 2_000_000]]),  # over max_message_size
        ], start=1):
            cluster.redis.execute("PUBLISH", channel, forged_send(payload, seq=seq))
        cluster.flush()
        self.assertEqual([b.bad_messages for b in cluster.backplanes], [5, 5])
        for connection, recorder in conns:
            self.assertEqual(recorder.calls, [])
            self.assertIsNone(connection.client.disconnect_reason)
        cluster.call(conns[1][0], "to_all", "still here")
        self.assertEqual([said(r) for _, r in conns], [["still here"]] * 2)

    def test_without_a_secret_anyone_on_redis_reaches_clients(self) -> None:
        """The unsigned trust model (docs/scaling.md): a well-formed call published by anyone is delivered."""
        cluster = Cluster(2)
        conns = [cluster.connect(n) for n in (0, 1)]
        cluster.redis.execute("PUBLISH", cluster.backplanes[0].channel_all, forged_send(msgpack.packb([6, "said", ["x"]])))
        cluster.flush()
        self.assertEqual([said(r) for _, r in conns], [["x"], ["x"]])

    def test_receiver_methods_the_hub_does_not_declare(self) -> None:
        """A call of a receiver method the hub's receiver interface lacks is not forwarded."""
        from twisted_hub._backplane import receiver_call_problem

        allowed = frozenset({"said"})
        self.assertIsNone(receiver_call_problem(msgpack.packb([6, "said", ["hi"]]), allowed, 1000))
        problem = receiver_call_problem(msgpack.packb([6, "format_disk", []]), allowed, 1000)
        assert problem is not None
        self.assertIn("does not declare", problem)
        self.assertIsNone(receiver_call_problem(msgpack.packb([6, "anything", []]), None, 1000))

    def signed_cluster(self, count: int = 2) -> Cluster:
        return Cluster(count, secret_file=self.secret_file("the-shared-secret-of-this-cluster"))

    def test_signed_nodes_serve_as_one(self) -> None:
        """With a secret every addressing mode, count and leave works as without one."""
        cluster = self.signed_cluster(3)
        conns = [cluster.connect(n) for n in (0, 1, 2)]
        for connection, _ in conns:
            cluster.call(connection, "join", "room")
        self.assertEqual(cluster.call(conns[0][0], "members", "room"), [c.client.connection_id for c, _ in conns])
        cluster.call(conns[1][0], "to_group", "room", "hi")
        cluster.call(conns[2][0], "to_client", conns[0][0].client.connection_id, "psst")
        self.assertEqual([said(r) for _, r in conns], [["hi", "psst"], ["hi"], ["hi"]])
        cluster.advance(LEASE * 3)  # renewals (signed lease) keep everything
        cluster.redis.stop()
        cluster.redis.start()  # snapshots (signed members) written and loaded again
        cluster.flush()
        self.assertEqual(cluster.call(conns[0][0], "join", "room"), 3)
        self.assertEqual([b.rejected + b.bad_messages + b.state_rewrites for b in cluster.backplanes], [0, 0, 0])
        cluster.servers[2].factory.doStop()
        self.assertEqual(cluster.call(conns[0][0], "join", "room"), 2)

    def test_forgeries_without_the_secret_change_nothing(self) -> None:
        """Unsigned sends, joins, goodbyes and Redis state from a party without the secret are refused and counted."""
        cluster = self.signed_cluster()
        conns = [cluster.connect(n) for n in (0, 1)]
        cluster.call(conns[1][0], "join", "room")
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        victim = cluster.backplanes[1]
        channel = cluster.backplanes[0].channel_all
        now = int(cluster.clock.seconds() * 1000)
        forgeries = [
            forged_send(msgpack.packb([6, "said", ["forged"]])),  # a receiver call from a made-up node
            forged_send(msgpack.packb([6, "said", ["forged"]]), origin=victim.token, seq=10**6),  # ... from a real one
            msgpack.packb([1, victim.token, 10**6, now, "work", "room", "phantom-1"]),  # a phantom member
            msgpack.packb([5, victim.token, 10**6, now]),  # a goodbye for a live node
        ]
        for forgery in forgeries:
            cluster.redis.execute("PUBLISH", channel, forgery)
        # Signed with another secret: refused the same way.
        other = NodeCodec(victim.token, Signer([b"a-secret-of-someone-else"]))
        cluster.redis.execute("PUBLISH", channel, other.encode(channel, Sync("evil"), cluster.clock.seconds()))
        cluster.flush()
        self.assertEqual(cluster.backplanes[0].rejected, 5)
        self.assertEqual([said(r) for _, r in conns], [[], []])
        self.assertEqual(cluster.call(conns[0][0], "members", "room"), [conns[1][0].client.connection_id])
        self.assertTrue([e for e in logs if e["log_level"] == LogLevel.error and "rejected" in e["log_format"]])
        # State written into Redis without the secret is not loaded either.
        members_key = victim.keys.members(victim.token)
        cluster.redis.execute("HSET", members_key, msgpack.packb(["work", "room", "phantom-2"]), b"1")
        cluster.redis.execute("SET", victim.keys.lease("f0rged"), b"forged-node")
        cluster.redis.execute("SADD", victim.keys.nodes, b"f0rged")
        late = RedisBackplane(
            lease=LEASE, clock=cluster.clock, connector=cluster.redis.connector(),
            secret_file=self.secret_file("the-shared-secret-of-this-cluster"),
        )
        server = HubTestServer([work_hub(cluster.log)], clock=cluster.clock, backplane=late)
        server.factory.doStart()
        cluster.flush()
        self.assertEqual(late.remote_members("work", "room"), [conns[1][0].client.connection_id])
        self.assertEqual(sorted(late.nodes), sorted(b.token for b in cluster.backplanes))
        self.assertEqual(late.rejected, 2)  # the phantom member and the forged lease

    def test_replayed_and_stale_messages(self) -> None:
        """A signed message published again is refused: at once as a duplicate, later as stale."""
        cluster = self.signed_cluster()
        conns = [cluster.connect(n) for n in (0, 1)]
        messages: list[bytes] = []
        channel = cluster.backplanes[0].channel_all
        cluster.redis.channels[channel].append(_Tap(messages))  # type: ignore[arg-type]
        cluster.call(conns[0][0], "to_all", "once")
        recorded = messages[-1]
        cluster.redis.execute("PUBLISH", channel, recorded)
        cluster.flush()
        self.assertEqual(cluster.backplanes[1].rejected, 1)
        cluster.clock.advance(MAX_AGE + 1)
        fresh = RedisBackplane(  # a node that never heard the original
            lease=LEASE, clock=cluster.clock, connector=cluster.redis.connector(),
            secret_file=self.secret_file("the-shared-secret-of-this-cluster"),
        )
        server = HubTestServer([work_hub(cluster.log)], clock=cluster.clock, backplane=fresh)
        server.factory.doStart()
        late_recorder = Recorder()
        server.connect("work", receiver=late_recorder)
        cluster.flush()
        cluster.redis.execute("PUBLISH", channel, recorded)
        cluster.flush()
        self.assertEqual(fresh.rejected, 1)
        self.assertEqual(said(late_recorder), [])
        self.assertEqual([said(r) for _, r in conns], [["once"], ["once"]])

    def test_nodes_with_different_secrets_do_not_mix(self) -> None:
        """A node with another secret is refused by the others and refuses them: counted, never delivered."""
        cluster = self.signed_cluster()
        a, ra = cluster.connect(0)
        stranger = RedisBackplane(
            lease=LEASE, clock=cluster.clock, connector=cluster.redis.connector(),
            secret_file=self.secret_file("another-secret-not-this-clusters"),
        )
        server = HubTestServer([work_hub(cluster.log)], clock=cluster.clock, backplane=stranger)
        server.factory.doStart()
        cluster.servers.append(server)
        s, rs = cluster.connect(2)
        cluster.call(s, "to_all", "from the stranger")
        cluster.call(a, "to_all", "from a")
        self.assertEqual((said(ra), said(rs)), (["from a"], ["from the stranger"]))
        self.assertGreater(cluster.backplanes[0].rejected, 0)
        self.assertGreater(stranger.rejected, 0)
        self.assertNotIn(stranger.token, cluster.backplanes[0].nodes)




class LossTests(SynchronousTestCase):
    """Messages a node never hears are counted, logged, and repaired where they carried state."""

    def setUp(self) -> None:
        self.cluster = Cluster(2)
        self.a, self.ra = self.cluster.connect(0)
        self.b, self.rb = self.cluster.connect(1)
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def deaf(self, node: int) -> list[tuple[bytes, RedisBackplane]]:
        """Node C{node} stops hearing its channels, its link up (as when Redis drops a subscriber's output)."""
        backplane = self.cluster.backplanes[node]
        removed = []
        for channel, receivers in self.cluster.redis.channels.items():
            if backplane in receivers:
                receivers.remove(backplane)
                removed.append((channel, backplane))
        return removed

    def hear_again(self, removed: list[tuple[bytes, RedisBackplane]]) -> None:
        for channel, backplane in removed:
            self.cluster.redis.channels[channel].append(backplane)

    def test_gaps_are_counted_and_logged(self) -> None:
        """Receiver calls a node never heard are counted (missed) once the next message of that node arrives."""
        target = self.b.client.connection_id
        self.cluster.call(self.a, "to_all", "one")
        self.cluster.call(self.a, "to_client", target, "first")  # on node 1's own channel
        removed = self.deaf(1)
        for text in ("two", "three", "four"):
            self.cluster.call(self.a, "to_all", text)
        self.cluster.call(self.a, "to_client", target, "lost too")
        self.hear_again(removed)
        self.assertEqual(self.cluster.backplanes[1].missed, 0)  # nothing says so yet
        self.cluster.call(self.a, "to_all", "five")
        self.cluster.call(self.a, "to_client", target, "direct")
        backplane = self.cluster.backplanes[1]
        self.assertEqual(said(self.rb), ["one", "first", "five", "direct"])
        self.assertEqual(backplane.missed, 4)
        self.assertEqual(self.cluster.backplanes[0].missed, 0)
        lines = [e for e in self.logs if "missed {count} message(s)" in e["log_format"]]
        self.assertEqual([e["count"] for e in lines], [3])  # the second gap's line is rate-limited
        self.assertEqual(lines[0]["node"], self.cluster.backplanes[0].node_id)
        self.assertIn(("redis messages missed", "4 (published by other nodes, never heard here)"), backplane.status())
        from twisted_hub._metrics import _BackplaneCollector

        collector = _BackplaneCollector(self.cluster.servers[1].factory)
        samples = {sample.name: sample.value for family in collector.collect() for sample in family.samples}
        self.assertEqual(samples["twisted_hub_backplane_missed_total"], 4)
        self.cluster.advance(5.0)
        self.cluster.call(self.a, "to_all", "six")
        self.assertEqual(backplane.missed, 4)

    def test_a_missed_join_is_repaired(self) -> None:
        """A join a node never heard shows as a gap; the node reloads that node's members, and counts are exact."""
        self.cluster.advance(LEASE / 3)  # node 1 hears node 0's "alive": it knows where node 0's count is
        removed = self.deaf(1)
        self.cluster.call(self.a, "join", "room")
        self.hear_again(removed)
        self.assertEqual(self.cluster.backplanes[1].remote_count("work", "room"), 0)
        self.cluster.advance(LEASE / 3)  # the next "alive" reveals the gap
        self.assertEqual(self.cluster.backplanes[1].missed, 1)
        self.assertEqual(self.cluster.backplanes[1].remote_count("work", "room"), 1)

    def test_a_replayed_message_is_rejected(self) -> None:
        """The same message heard twice is delivered once; the copy is rejected, counted and logged."""
        messages: list[bytes] = []
        channel = self.cluster.backplanes[0].channel_all
        self.cluster.redis.channels[channel].append(_Tap(messages))  # type: ignore[arg-type]
        self.cluster.call(self.a, "to_all", "once")
        self.cluster.redis.execute("PUBLISH", channel, messages[-1])
        self.cluster.flush()
        self.assertEqual(said(self.rb), ["once"])
        self.assertEqual(self.cluster.backplanes[1].rejected, 1)
        self.assertTrue([e for e in self.logs if "heard already" in e.get("what", "")])

    def test_messages_not_sent_leave_no_gap(self) -> None:
        """Receiver calls dropped by their sender (Redis away or slow) are counted there, not as missed elsewhere."""
        cluster = Cluster(2, max_pending_commands=3)
        a, _ = cluster.connect(0)
        cluster.connect(1)
        cluster.redis.pause()
        for i in range(10):
            cluster.call(a, "to_all", f"m{i}")
        cluster.redis.resume()
        cluster.call(a, "to_all", "after")
        self.assertGreater(cluster.backplanes[0].dropped_overload, 0)
        self.assertEqual(cluster.backplanes[1].missed, 0)


class OversizedSnapshotTests(SynchronousTestCase):
    def test_a_snapshot_larger_than_the_limit_goes_whole(self) -> None:
        """A snapshot larger than max_pending_bytes is sent whole when nothing else waits; other sends wait for it."""
        cluster = Cluster(2, max_pending_bytes=600)
        a, _ = cluster.connect(0)
        cluster.connect(1)
        groups = [f"group-number-{i}" for i in range(12)]
        for group in groups:
            cluster.call(a, "join", group)
        backplane = cluster.backplanes[0]
        cluster.redis.stop()
        cluster.redis.pause()
        cluster.redis.start()  # reconnected: the snapshot goes out, Redis does not answer yet
        self.assertGreater(backplane.pending_bytes, 600)
        cluster.call(a, "to_all", "must wait")
        self.assertEqual(backplane.dropped_overload, 1)
        cluster.redis.resume()
        cluster.flush()
        self.assertEqual((backplane.pending_commands, backplane.pending_bytes), (0, 0))
        remote = cluster.backplanes[1]
        self.assertEqual([remote.remote_count("work", g) for g in groups], [1] * 12)


class _Tap:
    """Stands in a channel's receivers: keeps what is published."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages

    def link_message(self, channel: bytes, data: bytes) -> None:
        self.messages.append(data)


class PendingBoundTests(SynchronousTestCase):
    """pending_commands and pending_bytes never pass their limits, and count what is on the wire."""

    def test_bytes_are_those_on_the_wire(self) -> None:
        """The size counted for a command is the length of txredisapi's encoding of it."""
        import txredisapi

        protocol = txredisapi.RedisProtocol(charset=None)
        for command in [
            ("PUBLISH", b"twisted-hub:v1:all", bytes(range(256)) * 3),
            ("SET", b"key", "n\u00e9ud", "PX", 15000, "XX"),
            ("HSET", b"h", b"", b"1"),
            ("PEXPIRE", b"k", 2.5),
        ]:
            self.assertEqual(resp_size(command), len(protocol._build_command(*command)), command)

    def test_limits_hold_for_every_command(self) -> None:
        """While Redis stalls, calls, joins, leaves and renewals never take pending_bytes past its limit."""
        limit = 4000
        cluster = Cluster(2, max_pending_bytes=limit, max_pending_commands=40)
        a, _ = cluster.connect(0)
        cluster.connect(1)
        backplane = cluster.backplanes[0]
        cluster.redis.pause()
        peak = 0
        for i in range(200):
            cluster.call(a, "to_all", "x" * (i * 7 % 500))
            cluster.call(a, "join" if i % 2 == 0 else "leave", f"group-{i % 5}")
            if i % 20 == 0:
                cluster.clock.advance(LEASE / 3)
            peak = max(peak, backplane.pending_bytes)
            self.assertLessEqual(backplane.pending_bytes, limit)
            self.assertLessEqual(backplane.pending_commands, 40)
        self.assertGreater(peak, limit - 600)  # it did fill up
        cluster.redis.resume()
        self.assertEqual((backplane.pending_commands, backplane.pending_bytes), (0, 0))
        cluster.advance(LEASE / 3)  # the changes that could not go are written with the next renewal
        cluster.flush()
        expected = cluster.call(a, "joined")
        mirrored = cluster.backplanes[1]._mirror.node(backplane.token)
        assert mirrored is not None
        self.assertEqual(sorted(g for (hub, g), ids in mirrored.members.items() if ids), sorted(expected))


class ConfigurationTests(SynchronousTestCase):
    """URLs, defaults and the local backplane."""

    def test_one_factory_per_backplane(self) -> None:
        """A RedisBackplane reaches the hubs of the one factory it serves; a second factory is refused."""
        cluster = Cluster(1)
        backplane = cluster.backplanes[0]
        with self.assertRaises(HubStateError):
            HubServerFactory([work_hub(cluster.log)], clock=cluster.clock, backplane=backplane)
        connection, _ = cluster.connect(0)
        cluster.call(connection, "join", "room")
        self.assertEqual(backplane.remote_count("work", "room"), 0)  # its own members are not remote
        members = cluster.redis.data[backplane.keys.members(backplane.token)]
        self.assertEqual(len(members), 1)

    def test_parse_url(self) -> None:
        """A Redis URL gives host, port, database and credentials; a bad one is refused with the reason."""
        s = parse_redis_url("redis://u:p%40ss@example.org:6380/2")
        self.assertEqual((s.host, s.port, s.db, s.username, s.password), ("example.org", 6380, 2, "u", "p@ss"))
        self.assertEqual(s.display(), "redis://u:***@example.org:6380/2")
        self.assertEqual(parse_redis_url("redis://localhost").port, 6379)
        for bad in ("http://x", "redis://x/db", "redis://x:99999/0"):
            self.assertRaises(ValueError, parse_redis_url, bad)

    def test_parse_tls_and_sentinel_urls(self) -> None:
        """rediss:// takes the TLS files as parameters; redis+sentinel:// lists Sentinels and names the master."""
        s = parse_redis_url("rediss://:pw@redis.example:6380/1?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
        self.assertEqual(
            (s.tls, s.host, s.port, s.db, s.password, s.ca_file, s.cert_file, s.key_file),
            (True, "redis.example", 6380, 1, "pw", "/ca.pem", "/c.pem", "/k.pem"),
        )
        self.assertEqual(s.display(), "rediss://***@redis.example:6380/1")
        s = parse_redis_url("redis+sentinel://u:pw@10.0.0.1,10.0.0.2:26380,[::1]:26381/my%20master/2")
        self.assertEqual(s.sentinels, (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)))
        self.assertEqual((s.service, s.db, s.username, s.password, s.tls), ("my master", 2, "u", "pw", False))
        self.assertEqual(s.display(), "redis+sentinel://u:***@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/my master/2")
        self.assertTrue(parse_redis_url("rediss+sentinel://h/m").tls)
        for bad, expected in [
            ("redis://x/0?ssl_ca_certs=/ca.pem", "need a rediss:// URL"),
            ("rediss://x/0?sslcacerts=/ca.pem", "unknown Redis URL parameter"),
            ("rediss://x/0?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"),
            ("redis+sentinel://h1,h2", "names the master"),
            ("redis://h1,h2/0", "several hosts need a redis+sentinel"),
            ("redis+sentinel://h/m/x", "must be a number"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse_redis_url(bad)
            self.assertIn(expected, str(caught.exception))

    def test_unreadable_tls_files_fail_at_once(self) -> None:
        """A CA file that cannot be read fails when the backplane is made, not at the first connection."""
        with self.assertRaises(ValueError) as caught:
            RedisBackplane("rediss://127.0.0.1/0?ssl_ca_certs=/nonexistent/ca.pem")
        self.assertIn("cannot read the Redis TLS CA file", str(caught.exception))

    def test_default_backplane_is_local(self) -> None:
        """Without backplane= a factory serves alone, with a node id on its status rows."""
        factory = HubServerFactory([work_hub(WorkLog())], clock=Clock())
        self.assertIsInstance(factory.backplane, LocalBackplane)
        self.assertEqual(factory.backplane.status()[0][0], "node")

    def test_node_id_names_host_and_pid(self) -> None:
        """The default node id is host-pid-token."""
        import os
        import socket

        backplane = RedisBackplane()
        self.assertEqual(backplane.node_id, f"{socket.gethostname()}-{os.getpid()}-{backplane.token}")


class _WatchedLink:
    """What the liveness watch sees of a connection: PINGs sent, data heard, a cut."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.connected = True
        self.transport = object()
        self.pings = 0
        self.cut_reason: str | None = None
        self.last_received = 0.0
        self.watch: Any = None

    def execute_command(self, *args: Any) -> Any:
        from twisted.internet.defer import Deferred

        assert args == ("PING",)
        self.pings += 1
        return Deferred()

    def heard(self) -> None:
        self.last_received = self.clock.seconds()

    def cut(self, why: str) -> None:
        self.cut_reason = why
        self.connected = False
        self.watch.stop()


class LinkWatchTests(SynchronousTestCase):
    """The PING watch on each connection to Redis, on a Clock."""

    def watched(self) -> tuple[Clock, _WatchedLink]:
        from twisted_hub.redis import TxRedisConnector

        clock = Clock()
        connector = TxRedisConnector(reactor=clock, ping_interval=1.0, ping_timeout=2.0)
        link = _WatchedLink(clock)
        connector._watch(link)
        return clock, link

    def test_answers_keep_the_link(self) -> None:
        """A PING a second; a link that answers is kept however long it runs."""
        clock, link = self.watched()
        for _ in range(30):
            clock.advance(1.0)
            link.heard()
        self.assertEqual((link.pings, link.cut_reason), (30, None))

    def test_silence_is_cut_within_interval_plus_timeout(self) -> None:
        """A link silent from some moment on is cut at most ping_interval + ping_timeout later, not before ping_timeout."""
        for phase in (0.0, 0.3, 0.95):  # where in the PING cycle the last answer came
            clock, link = self.watched()
            clock.advance(5.0 + phase)
            link.heard()
            silent_since = clock.seconds()
            while link.cut_reason is None and clock.seconds() < 20:
                clock.advance(0.05)
            cut_after = clock.seconds() - silent_since
            self.assertGreater(cut_after, 2.0)
            self.assertLessEqual(cut_after, 3.0 + 1e-6)
            self.assertIn("no answer from Redis for", link.cut_reason or "")

    def test_own_stall_is_not_a_silent_redis(self) -> None:
        """A tick that comes late (this reactor stalled) does not cut: judged afresh from then on."""
        clock, link = self.watched()
        clock.advance(1.0)
        link.heard()
        clock.advance(10.0)  # one late tick, ten seconds after the last
        self.assertIsNone(link.cut_reason)
        clock.advance(1.0)
        link.heard()  # what waited in the socket is read
        clock.advance(1.0)
        self.assertIsNone(link.cut_reason)
        clock.advance(3.0)  # then really silent
        self.assertIsNotNone(link.cut_reason)
