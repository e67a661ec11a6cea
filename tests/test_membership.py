"""
The backplane's pure parts, without Redis, FakeRedis, a reactor or a Clock:
the typed node messages and their strict decoder (L{twisted_hub._backplane.wire}),
the membership mirror (L{twisted_hub._backplane.membership.NodeMirror}) and what a node
does with what it hears (L{twisted_hub._backplane.inbox.NodeInbox}).  Time is
a number passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._backplane.inbox import BackplaneProblems, NodeInbox
from twisted_hub._backplane.interface import TARGET_ALL, TARGET_GROUP, TARGET_ONLY, Target
from twisted_hub._backplane.membership import NodeMirror
from twisted_hub._backplane.wire import (
    Alive,
    BackplaneMessage,
    Bye,
    Join,
    Kick,
    Leave,
    MalformedMessage,
    NodeCodec,
    NodeMessage,
    Send,
    Signer,
    Sync,
    decode_member_field,
    member_field,
)

LEASE = 3.0
CHANNEL = b"twisted-hub:v1:all"
SECRET = [b"0123456789abcdef0123"]


class ListLog:
    """A CoreLog that keeps its lines: (level, format, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def debug(self, format: str, **fields: Any) -> None:
        self.lines.append(("debug", format, fields))

    def info(self, format: str, **fields: Any) -> None:
        self.lines.append(("info", format, fields))

    def warn(self, format: str, **fields: Any) -> None:
        self.lines.append(("warn", format, fields))

    def error(self, format: str, **fields: Any) -> None:
        self.lines.append(("error", format, fields))

    def failure(self, format: str, error: BaseException | None = None, **fields: Any) -> None:
        self.lines.append(("failure", format, fields))


def message(origin: str, body: BackplaneMessage, seq: int = 1, sent: float = 0.0) -> NodeMessage:
    return NodeMessage(origin, seq, sent, body)


class MessageTests(SynchronousTestCase):
    """Every node message is a typed class; one strict decoder refuses what is not one."""

    def test_every_kind_round_trips(self) -> None:
        """Each kind decodes to the same typed message it was encoded from, with its envelope."""
        sender, receiver = NodeCodec("a"), NodeCodec("b")
        bodies: list[BackplaneMessage] = [
            Send("work", Target(TARGET_ALL, None, ("a-1",)), b"\x91\x06"),
            Send("work", Target(TARGET_GROUP, "room", ()), b""),
            Send("work", Target(TARGET_ONLY, None, ("b-1", "b-2")), b"x"),
            Join("work", "room", "a-1"), Leave("work", "room", "a-1"),
            Alive("node a"), Sync("node a"), Bye(), Kick("work", "b-1", "banned"),
        ]
        for seq, body in enumerate(bodies, 1):
            decoded = receiver.decode(CHANNEL, sender.encode(CHANNEL, body, 12.5), 12.5)
            self.assertEqual(decoded, NodeMessage("a", seq, 12.5, body))
            self.assertEqual(decoded.kind, body.KIND)

    def test_the_bytes_are_the_positional_array(self) -> None:
        """The typed classes write the array nodes have always exchanged: [kind, origin, seq, ms, *fields]."""
        codec = NodeCodec("tok")
        target = Target(TARGET_ONLY, None, ("x-1",))
        self.assertEqual(
            msgpack.unpackb(codec.encode(CHANNEL, Send("work", target, b"p"), 2.0)),
            [0, "tok", 1, 2000, "work", "only", None, ["x-1"], b"p"],
        )
        kick = codec.encode(CHANNEL, Kick("work", "x-1", "r"), 2.0)
        self.assertEqual(msgpack.unpackb(kick), [6, "tok", 2, 2000, "work", "x-1", "r"])
        self.assertEqual(msgpack.unpackb(codec.encode(CHANNEL, Bye(), 2.0)), [5, "tok", 3, 2000])

    def test_bad_fields_are_refused(self) -> None:
        """A wrong type or number of fields, an unknown kind or target is MalformedMessage, with the reason."""
        codec = NodeCodec("me")
        cases = {
            "unknown message kind 99": [99, "o", 1, 0],
            "has 6 items, not 7": [1, "o", 1, 0, "work", "room"],
            "the group must be a string, got int": [1, "o", 1, 0, "work", 5, "o-1"],
            "the reason must be a string": [6, "o", 1, 0, "work", "o-1", None],
            "unknown target kind 'everyone'": [0, "o", 1, 0, "work", "everyone", None, [], b""],
            "the group must be a string, got NoneType": [0, "o", 1, 0, "work", "group", None, [], b""],
            "the group must be a string or nil": [0, "o", 1, 0, "work", "all", 7, [], b""],
            "connection ids must be a list of strings": [0, "o", 1, 0, "work", "all", None, [1], b""],
            "the payload must be bytes": [0, "o", 1, 0, "work", "all", None, [], "text"],
            "the node id must be a string": [3, "o", 1, 0, b"bytes"],
            "the origin must be a string": [5, 7, 1, 0],
            "must be integers": [5, "o", 0, 0],
        }
        for reason, raw in cases.items():
            with self.assertRaises(MalformedMessage) as caught:
                codec.decode(CHANNEL, msgpack.packb(raw, use_bin_type=True), 0.0)
            self.assertIn(reason, str(caught.exception))

    def test_member_fields(self) -> None:
        """A membership field is [hub, group, connection id]; anything else is refused."""
        self.assertEqual(decode_member_field(member_field("work", "room", "a-1")), ("work", "room", "a-1"))
        for bad, reason in [
            (b"\xc1", "not msgpack"),
            (msgpack.packb(["work", "room"]), "not a [hub, group, connection id] array"),
            (msgpack.packb(["work", 3, "a-1"]), "the group must be a string"),
            ("text", "must be bytes"),
        ]:
            with self.assertRaises(MalformedMessage) as caught:
                decode_member_field(bad)
            self.assertIn(reason, str(caught.exception))


class MirrorTests(SynchronousTestCase):
    """NodeMirror: the other nodes' members, kept from their messages and snapshots, with time passed in."""

    def setUp(self) -> None:
        self.log = ListLog()
        self.mirror = NodeMirror(LEASE, self.log)

    def load(self, token: str, members: list[tuple[str, str, str]], now: float = 0.0) -> None:
        self.assertTrue(self.mirror.start_loading(token))
        self.mirror.loaded(token, f"node-{token}", members, now)

    def test_snapshot_then_joins_and_leaves(self) -> None:
        """A loaded snapshot counts; joins and leaves change it; members come back in the order heard."""
        self.load("b", [("work", "room", "b-1"), ("work", "room", "b-2")])
        self.load("c", [("work", "room", "c-1"), ("work", "other", "c-2")])
        self.mirror.apply(message("c", Join("work", "room", "c-3")), 1.0)
        self.mirror.apply(message("b", Leave("work", "room", "b-1")), 1.0)
        self.assertEqual(self.mirror.remote_members("work", "room"), ["b-2", "c-1", "c-3"])
        self.assertEqual(self.mirror.remote_count("work", "room"), 3)
        self.assertEqual(self.mirror.remote_count("chat", "room"), 0)
        self.assertEqual(self.mirror.nodes, {"b": "node-b", "c": "node-c"})

    def test_unknown_nodes_are_loaded_not_guessed(self) -> None:
        """Joins of an unknown node change nothing; its "alive" or any "sync" asks for its snapshot."""
        self.assertFalse(self.mirror.apply(message("b", Join("work", "room", "b-1")), 0.0))
        self.assertEqual(self.mirror.remote_count("work", "room"), 0)
        self.assertTrue(self.mirror.apply(message("b", Alive("node-b")), 0.0))
        self.load("b", [])
        self.assertFalse(self.mirror.apply(message("b", Alive("node-b")), 0.0))
        self.assertTrue(self.mirror.apply(message("b", Sync("node-b")), 0.0))

    def test_changes_heard_while_loading_go_on_top_of_the_snapshot(self) -> None:
        """A join and a leave heard while a snapshot loads are applied after it, in order."""
        self.load("b", [("work", "room", "b-1")])
        self.assertTrue(self.mirror.start_loading("b"))
        self.assertFalse(self.mirror.start_loading("b"))  # one load at a time
        self.mirror.apply(message("b", Join("work", "room", "b-9")), 1.0)
        self.mirror.apply(message("b", Leave("work", "room", "b-2")), 1.0)
        self.assertEqual(self.mirror.remote_members("work", "room"), ["b-1"])  # the old state until it loads
        self.mirror.loaded("b", "node-b", [("work", "room", "b-2"), ("work", "room", "b-3")], 2.0)
        self.assertEqual(self.mirror.remote_members("work", "room"), ["b-3", "b-9"])
        self.assertFalse(self.mirror.loading("b"))

    def test_abandoned_load_applies_changes_directly_again(self) -> None:
        """A load that could not be read drops its buffer; later changes reach the node as before."""
        self.load("b", [])
        self.mirror.start_loading("b")
        self.mirror.apply(message("b", Join("work", "room", "lost-while-loading")), 1.0)
        self.mirror.abandon_loading("b")
        self.mirror.apply(message("b", Join("work", "room", "b-1")), 1.0)
        self.assertEqual(self.mirror.remote_members("work", "room"), ["b-1"])

    def test_a_silent_node_expires_after_its_lease(self) -> None:
        """A node not heard from for more than the lease leaves the counts, with one warning; any message keeps it."""
        self.load("b", [("work", "room", "b-1")], now=0.0)
        self.load("c", [("work", "room", "c-1"), ("work", "room", "c-2")], now=0.0)
        self.mirror.apply(message("b", Alive("node-b")), 2.0)
        self.mirror.apply(message("c", Send("work", Target(TARGET_ALL), b"")), 2.5)
        self.assertEqual(self.mirror.expire(2.0 + LEASE), [])
        expired = self.mirror.expire(2.0 + LEASE + 0.01)
        self.assertEqual([node.node_id for node in expired], ["node-b"])
        self.assertEqual(self.mirror.remote_members("work", "room"), ["c-1", "c-2"])
        self.assertEqual(self.mirror.nodes_expired, 1)
        self.assertEqual(
            self.log.lines,
            [("warn", "node {node} was not heard from for {lease:g} s: its {count} group member(s) left the counts",
              {"node": "node-b", "lease": LEASE, "count": 1})],
        )

    def test_goodbye_and_lease_gone(self) -> None:
        """A goodbye drops a node at once (one info line); a lease gone from Redis drops it and its pending load."""
        self.load("b", [("work", "room", "b-1")])
        self.load("c", [("work", "room", "c-1")])
        self.mirror.apply(message("b", Bye()), 1.0)
        self.mirror.apply(message("b", Bye()), 1.0)  # heard twice: one line
        self.assertEqual(self.log.lines, [("info", "node {node} left", {"node": "node-b"})])
        self.mirror.start_loading("c")
        self.mirror.lease_gone("c")
        self.assertEqual((self.mirror.nodes, self.mirror.loading("c")), ({}, False))


class FakeHubs:
    """LocalHubs of one hub named "work" whose receiver declares "said"."""

    clock: Any = None

    def __init__(self) -> None:
        self.delivered: list[tuple[str, Target, bytes]] = []
        self.kicked: list[tuple[str, str, str]] = []

    def knows(self, hub: str) -> bool:
        return hub == "work"

    def deliver(self, hub: str, target: Target, payload: bytes) -> str | None:
        if payload == b"bad":
            return "not a hub message"
        self.delivered.append((hub, target, payload))
        return None

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        self.kicked.append((hub, connection_id, reason))

    def memberships(self) -> Iterator[tuple[str, str, str]]:
        return iter(())


class InboxTests(SynchronousTestCase):
    """NodeInbox: what a node does with each message it hears, and with a snapshot read from Redis."""

    def setUp(self) -> None:
        self.log = ListLog()
        self.loads: list[str] = []
        self.mirror = NodeMirror(LEASE, self.log)
        self.problems = BackplaneProblems(self.log)
        self.codec = NodeCodec("me")
        self.inbox = NodeInbox(self.codec, self.mirror, self.problems, CHANNEL, self.loads.append)
        self.hubs = FakeHubs()
        self.inbox.hubs = self.hubs
        self.peer = NodeCodec("b")

    def hear(self, body: BackplaneMessage, now: float = 0.0, channel: bytes = CHANNEL) -> None:
        self.inbox.receive(channel, self.peer.encode(channel, body, now), now)

    def test_receiver_calls_and_kicks_reach_the_hubs(self) -> None:
        """A Send is delivered to its target, a Kick kicks; this node's own messages are skipped."""
        payload = b"an encoded receiver call"
        self.hear(Send("work", Target(TARGET_GROUP, "room", ("x-1",)), payload))
        self.hear(Kick("work", "me-1", "banned"))
        own = NodeCodec("me").encode(CHANNEL, Send("work", Target(TARGET_ALL), b"mine"), 0.0)
        self.inbox.receive(CHANNEL, own, 0.0)
        self.assertEqual(self.hubs.delivered, [("work", Target(TARGET_GROUP, "room", ("x-1",)), payload)])
        self.assertEqual(self.hubs.kicked, [("work", "me-1", "banned")])
        self.assertEqual(self.problems.bad_messages, 0)

    def test_what_the_hubs_refuse_is_counted(self) -> None:
        """An unknown hub, or a payload the hub refuses, reaches nobody and is counted as bad, with the reason."""
        self.hear(Send("chat", Target(TARGET_ALL), b"x"))
        self.hear(Send("work", Target(TARGET_ALL), b"bad"))
        self.hear(Kick("chat", "me-1", "r"))
        self.assertEqual((self.hubs.delivered, self.hubs.kicked, self.problems.bad_messages), ([], [], 3))
        self.assertEqual(self.log.lines[0][2]["what"], "a receiver call for unknown hub 'chat'")
        self.assertEqual(self.log.lines[0][2]["suppressed"], 0)
        self.assertEqual(len(self.log.lines), 1)  # one line per 5 s

    def test_garbage_forgeries_and_replays(self) -> None:
        """Garbage is bad; with a secret, an unsigned or replayed message is rejected; nothing else happens."""
        self.inbox.receive(CHANNEL, b"\x93garbage", 0.0)
        self.assertEqual(self.problems.bad_messages, 1)
        signed = NodeInbox(NodeCodec("me", Signer(SECRET)), self.mirror, self.problems, CHANNEL, self.loads.append)
        signed.hubs = self.hubs
        signed.receive(CHANNEL, self.peer.encode(CHANNEL, Alive("b"), 0.0), 0.0)
        data = NodeCodec("b", Signer(SECRET)).encode(CHANNEL, Alive("b"), 0.0)
        signed.receive(CHANNEL, data, 0.0)
        signed.receive(CHANNEL, data, 0.0)
        self.assertEqual(self.problems.rejected, 2)
        self.assertEqual(self.loads, ["b"])  # the one good "alive" of an unknown node

    def test_a_gap_reloads_the_node_before_the_message_is_applied(self) -> None:
        """A gap on the hub-wide channel reloads a known node first, so the join that came with it is buffered."""
        self.mirror.start_loading("b")
        self.mirror.loaded("b", "node-b", [], 0.0)
        self.hear(Join("work", "room", "b-1"))
        self.peer.encode(CHANNEL, Join("work", "room", "b-2"), 0.0)  # lost on the way
        loads_seen: list[bool] = []
        self.inbox.load = lambda token: loads_seen.append(self.mirror.start_loading(token))
        self.hear(Join("work", "room", "b-3"))
        self.assertEqual((self.problems.missed, loads_seen), (1, [True]))
        self.assertEqual(self.mirror.remote_members("work", "room"), ["b-1"])  # b-3 waits for the snapshot
        self.mirror.loaded("b", "node-b", [("work", "room", "b-1"), ("work", "room", "b-2")], 1.0)
        self.assertEqual(self.mirror.remote_members("work", "room"), ["b-1", "b-2", "b-3"])
        self.assertEqual(self.log.lines[0][2]["node"], "node-b")

    def test_snapshot_from_redis(self) -> None:
        """A snapshot loads its good fields; an unsigned one is rejected, a malformed one is bad; no lease: gone."""
        codec = NodeCodec("me", Signer(SECRET))
        inbox = NodeInbox(codec, self.mirror, self.problems, CHANNEL, self.loads.append)
        writer = NodeCodec("b", Signer(SECRET))
        good, odd = member_field("work", "room", "b-1"), msgpack.packb(["work", 1, "b-2"])
        unsigned = member_field("work", "room", "x")
        items: list[object] = [good, writer.member_value(good), odd, writer.member_value(odd), unsigned, b"1"]
        self.mirror.start_loading("b")
        self.assertTrue(inbox.snapshot("b", writer.lease_value("node-b"), items, 0.0))
        self.assertEqual((self.mirror.nodes, self.mirror.remote_members("work", "room")), ({"b": "node-b"}, ["b-1"]))
        self.assertEqual((self.problems.bad_messages, self.problems.rejected), (1, 1))
        self.mirror.start_loading("c")
        self.assertTrue(inbox.snapshot("c", b"not signed", [], 0.0))
        self.assertEqual((self.problems.rejected, self.mirror.loading("c"), "c" in self.mirror.nodes), (2, False, False))
        self.assertFalse(inbox.snapshot("b", None, [], 0.0))
        self.assertEqual(self.mirror.nodes, {})


# That the codec, the mirror and the inbox import no framework is the import contract
# "backplane-protocol-is-sans-io" (pyproject.toml), run by tests/test_architecture.py.
