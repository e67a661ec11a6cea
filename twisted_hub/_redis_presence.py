"""
A node's state in Redis, and reading the other nodes' (for a
L{twisted_hub.redis.RedisBackplane}).

Each node keeps in Redis a lease (a key with an expiry holding its signed
node id), a membership hash (one signed field per group membership) and its
token in the set of nodes.  L{NodePresence} writes them whole (the
snapshot, after a (re)connection or a loss), renews them every C{lease / 3}
seconds while checking that Redis still holds them, writes each join and
leave, and loads the other nodes' snapshots into the mirror (through
L{twisted_hub._backplane_inbox.NodeInbox.snapshot}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._backplane import LocalHubs
from ._backplane_inbox import NodeInbox
from ._backplane_wire import Alive, Join, Leave, NodeCodec, Sync, member_field
from ._logging import HUB_LOG_OBSERVER
from ._redis_commands import FAILED, CommandLink, RedisKeys

__all__ = ["NodePresence"]

# The backplane's lines keep the namespace they always had.
_log = Logger(namespace="twisted_hub.redis", observer=HUB_LOG_OBSERVER)


class NodePresence:
    """
    This node's lease, membership hash and registration in Redis, and the
    loading of the other nodes' snapshots.
    """

    def __init__(
        self,
        *,
        token: str,
        node_id: str,
        lease: float,
        keys: RedisKeys,
        codec: NodeCodec,
        link: CommandLink,
        inbox: NodeInbox,
        now: Callable[[], float],
    ) -> None:
        self.token = token
        self.node_id = node_id
        self.lease = lease
        self.keys = keys
        self.codec = codec
        self.link = link
        self.inbox = inbox
        self._now = now
        #: this node's hubs (set when the backplane is attached)
        self.hubs: LocalHubs | None = None
        #: this node's state must be written whole (at the next renewal)
        self.resync = False
        #: memberships this node holds (what its hash in Redis must hold)
        self._member_count = 0
        #: bumped by every snapshot written: checks of older renewals are void
        self._snapshot_epoch = 0
        #: times this node found its state gone from Redis and wrote it again
        self.state_rewrites = 0

    # -- this node's state ---------------------------------------------------------
    def write_snapshot(self) -> None:
        """
        Write this node's lease and every membership it holds, and tell the
        others to reload it (after a (re)connection or a loss).  It is sent
        whole: if it does not fit in the limits it waits for the next
        renewal, but a snapshot larger than the limits goes when nothing
        else waits (the one case where C{pending_bytes} passes them).
        """
        members_key = self.keys.members(self.token)
        commands: list[tuple[Any, ...]] = [("DEL", members_key)]
        fields: list[bytes] = []
        assert self.hubs is not None
        count = 0
        for hub, group, connection_id in self.hubs.memberships():
            field = member_field(hub, group, connection_id)
            fields += [field, self.codec.member_value(field)]
            count += 1
            if len(fields) >= 1000:
                commands.append(("HSET", members_key, *fields))
                fields = []
        if fields:
            commands.append(("HSET", members_key, *fields))
        commands += self._lease_commands()
        channel = self.keys.channel_all
        commands.append(("PUBLISH", channel, self.codec.encode(channel, Sync(self.node_id), self._now())))
        fits = self.link.fits(commands)
        if not fits and self.link.pending_commands > 0:
            self.codec.unsend(channel)
            self.resync = True
            return
        self.resync = False
        self._snapshot_epoch += 1
        self._member_count = count
        for command in commands:
            if self.link.send(*command, unlimited=not fits) is None:
                # The link went while writing: the reconnection writes it again,
                # and the "sync" (the last command) was not sent.
                self.codec.unsend(channel)
                self.resync = True
                return

    def _lease_commands(self, only_if_held: bool = False) -> list[tuple[Any, ...]]:
        lease_ms = int(self.lease * 1000)
        renew: tuple[Any, ...] = ("SET", self.keys.lease(self.token), self.codec.lease_value(self.node_id), "PX", lease_ms)
        return [
            (*renew, "XX") if only_if_held else renew,
            ("PEXPIRE", self.keys.members(self.token), lease_ms),
            ("SADD", self.keys.nodes, self.token),
        ]

    def refresh(self) -> None:
        """Every C{lease / 3} while connected: renew, or write the state whole if it is due."""
        if self.resync:
            self.write_snapshot()
        else:
            self._renew()

    def _renew(self) -> None:
        """
        Renew this node's lease and the expiry of its membership hash, and
        make sure Redis still holds them: the lease is renewed only if it
        exists (C{SET ... XX}) and the hash must hold as many fields as this
        node holds memberships (C{HLEN}).  Either gone (Redis or this node
        stalled past the lease with the connections intact, someone deleted
        them, a write failed) makes this node write its whole state again
        and tell the others to reload it.
        """
        epoch, expected = self._snapshot_epoch, self._member_count
        lease, expire, register = self._lease_commands(only_if_held=True)
        commands = [lease, expire, ("HLEN", self.keys.members(self.token)), register]
        channel = self.keys.channel_all
        commands.append(("PUBLISH", channel, self.codec.encode(channel, Alive(self.node_id), self._now())))
        if not self.link.fits(commands):
            self.codec.unsend(channel)
            return  # the next renewal tries again (the lease outlives two missed ones)
        sent = [self.link.send(*command) for command in commands]
        renewed, counted = sent[0], sent[2]
        if sent[-1] is None:
            self.codec.unsend(channel)
        if renewed is None or counted is None:
            return

        def compare(held: list[Any]) -> None:
            if FAILED in held or epoch != self._snapshot_epoch or not self.link.connected or self.resync:
                return  # unknown, or written again since
            fields = int(held[1])
            if held[0] is None:
                self._state_lost(f"its lease had expired (holding {expected} membership(s))")
            elif fields != expected:
                self._state_lost(f"its membership hash held {fields} field(s), not {expected}")

        gatherResults([renewed, counted]).addCallback(compare)

    def _state_lost(self, why: str) -> None:
        """Redis lost this node's state: write it again, and have the others reload it."""
        self.state_rewrites += 1
        _log.warn(
            "Redis lost the state of node {node} ({why}; Redis or this node stalled longer than the "
            "{lease:g} s lease?): writing it again",
            node=self.node_id, why=why, lease=self.lease,
        )
        self.write_snapshot()

    def membership_changed(self, hub: str, group: str, connection_id: str, joined: bool) -> None:
        """Write a join or leave of this node, and publish it."""
        self._member_count += 1 if joined else -1
        if not self.link.connected or self.resync:
            return  # the snapshot written on reconnection (or at the next renewal) says it
        members_key = self.keys.members(self.token)
        member = member_field(hub, group, connection_id)
        if joined:
            commands: list[tuple[Any, ...]] = [
                ("HSET", members_key, member, self.codec.member_value(member)),
                ("PEXPIRE", members_key, int(self.lease * 1000)),
            ]
        else:
            commands = [("HDEL", members_key, member)]
        channel = self.keys.channel_all
        change = Join(hub, group, connection_id) if joined else Leave(hub, group, connection_id)
        commands.append(("PUBLISH", channel, self.codec.encode(channel, change, self._now())))
        if not self.link.fits(commands):
            self.codec.unsend(channel)
            self.resync = True  # said by the next snapshot instead
            return
        sent = [self.link.send(*command) for command in commands]
        if sent[-1] is None:  # the link went meanwhile: the snapshot on reconnection says it
            self.codec.unsend(channel)

    def forget_commands(self) -> list[tuple[Any, ...]]:
        """What deletes this node's state from Redis (when it leaves)."""
        return [("DEL", self.keys.lease(self.token), self.keys.members(self.token)), ("SREM", self.keys.nodes, self.token)]

    # -- the other nodes' state -------------------------------------------------------
    def load_nodes(self) -> None:
        """Load the snapshot of every node listed in Redis."""
        listed = self.link.send("SMEMBERS", self.keys.nodes)
        if listed is not None:
            listed.addCallback(self._listed)

    def _listed(self, tokens: Any) -> None:
        if tokens is FAILED:
            return
        for raw in tokens or ():
            token = raw.decode() if isinstance(raw, bytes) else str(raw)
            if token != self.token:
                self.load(token)

    def load(self, token: str) -> None:
        """Load node C{token}'s snapshot (unless it is loading already)."""
        mirror = self.inbox.mirror
        if not mirror.start_loading(token):
            return
        lease = self.link.send("GET", self.keys.lease(token))
        members = self.link.send("HGETALL", self.keys.members(token))
        if lease is None or members is None:
            mirror.abandon_loading(token)
            return

        def loaded(lease_value: Any) -> Deferred[Any]:
            return members.addCallback(lambda snapshot: self._loaded(token, lease_value, snapshot))

        def failed(failure: Failure) -> None:
            mirror.abandon_loading(token)
            _log.failure("loading the members of node {token} failed", failure, token=token)

        lease.addCallback(loaded).addErrback(failed)

    def _loaded(self, token: str, lease_value: Any, snapshot: Any) -> None:
        if lease_value is FAILED or snapshot is FAILED:
            # Not known either way: the next SYNC or ALIVE loads it again.
            self.inbox.mirror.abandon_loading(token)
            return
        if not self.inbox.snapshot(token, lease_value, list(snapshot or ()), self._now()):
            self.link.send("SREM", self.keys.nodes, token)  # its lease ran out: the node is gone
