"""
What this node knows of the other backplane nodes, without I/O: the
membership mirror.  Time is passed in; nothing here reads Redis, a clock
or a reactor.

Every node keeps a mirror of the group members the other nodes hold, so
that C{groups.count()} and C{groups.members()} stay synchronous.  The
mirror is fed the messages the other nodes publish (L{NodeMirror.apply}:
joins and leaves, "alive", "sync", goodbye) and the snapshots the driver
loads from Redis (L{NodeMirror.loaded}); what is heard about a node while
its snapshot is loading is buffered and applied on top of it.  A node not
heard from for C{lease} seconds leaves the mirror (L{NodeMirror.expire}).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ._backplane_wire import Alive, Bye, Join, Leave, NodeMessage, Sync
from ._corelog import CoreLog

__all__ = ["NodeMirror", "RemoteNode"]


@dataclass
class RemoteNode:
    """What this node knows of another one."""

    node_id: str
    last_seen: float
    #: (hub, group) -> connection ids, in the order heard
    members: dict[tuple[str, str], dict[str, None]] = field(default_factory=dict)

    def apply(self, hub: str, group: str, connection_id: str, joined: bool) -> None:
        key = (hub, group)
        if joined:
            self.members.setdefault(key, {})[connection_id] = None
            return
        ids = self.members.get(key)
        if ids is not None:
            ids.pop(connection_id, None)
            if not ids:
                del self.members[key]

    def size(self) -> int:
        return sum(len(ids) for ids in self.members.values())


class NodeMirror:
    """
    The other nodes and the group members they hold, by node token.

    @param lease: seconds a node stays without being heard from.
    @param log: where the lines about nodes leaving go.
    """

    def __init__(self, lease: float, log: CoreLog) -> None:
        self.lease = lease
        self._log = log
        self._nodes: dict[str, RemoteNode] = {}
        #: node token -> the joins and leaves heard while its snapshot is loading
        self._loading: dict[str, list[NodeMessage]] = {}
        #: nodes dropped because their lease ran out
        self.nodes_expired = 0

    # -- reading -------------------------------------------------------------
    @property
    def nodes(self) -> dict[str, str]:
        """The other nodes: token -> node id."""
        return {token: node.node_id for token, node in self._nodes.items()}

    def node(self, token: str) -> RemoteNode | None:
        return self._nodes.get(token)

    def __len__(self) -> int:
        return len(self._nodes)

    def remote_members(self, hub: str, group: str) -> list[str]:
        """The members of a group that the other nodes hold."""
        key = (hub, group)
        return [i for node in self._nodes.values() for i in node.members.get(key, ())]

    def remote_count(self, hub: str, group: str) -> int:
        """How many members of a group the other nodes hold."""
        key = (hub, group)
        return sum(len(node.members.get(key, ())) for node in self._nodes.values())

    # -- what the other nodes say ----------------------------------------------
    def apply(self, message: NodeMessage, now: float) -> bool:
        """
        Take in one message of another node (checked and in sequence).
        True: this node must load that node's snapshot (one it does not
        know, or one that said it wrote its snapshot anew).
        """
        origin, body = message.origin, message.body
        node = self._nodes.get(origin)
        if isinstance(body, (Alive, Sync)):
            if isinstance(body, Sync) or node is None:
                return True
            node.last_seen = now
        elif isinstance(body, Bye):
            gone = self._nodes.pop(origin, None)
            if gone is not None:
                self._log.info("node {node} left", node=gone.node_id)
        else:
            if node is not None:
                node.last_seen = now
            if isinstance(body, (Join, Leave)):
                if origin in self._loading:
                    self._loading[origin].append(message)
                else:
                    self._membership(message)
        return False

    def _membership(self, message: NodeMessage) -> None:
        node = self._nodes.get(message.origin)
        body = message.body
        if node is None or not isinstance(body, (Join, Leave)):
            return  # a node we do not know yet: its snapshot will say it
        node.apply(body.hub, body.group, body.connection_id, isinstance(body, Join))

    def expire(self, now: float) -> list[RemoteNode]:
        """Drop the nodes not heard from for C{lease} seconds (their members leave the counts)."""
        expired = []
        for token, node in list(self._nodes.items()):
            if now - node.last_seen > self.lease:
                del self._nodes[token]
                expired.append(node)
                self.nodes_expired += 1
                self._log.warn(
                    "node {node} was not heard from for {lease:g} s: its {count} group member(s) left the counts",
                    node=node.node_id, lease=self.lease, count=node.size(),
                )
        return expired

    # -- loading a node's snapshot ---------------------------------------------
    def start_loading(self, token: str) -> bool:
        """A snapshot of node C{token} is to be loaded; False if one is loading already."""
        if token in self._loading:
            return False
        self._loading[token] = []
        return True

    def loading(self, token: str) -> bool:
        return token in self._loading

    def abandon_loading(self, token: str) -> None:
        """The snapshot could not be read: the next "sync" or "alive" loads it again."""
        self._loading.pop(token, None)

    def lease_gone(self, token: str) -> None:
        """Node C{token}'s lease ran out in Redis: it is gone (it says "sync" if it comes back)."""
        self._loading.pop(token, None)
        self._nodes.pop(token, None)

    def loaded(self, token: str, node_id: str, members: Iterable[tuple[str, str, str]], now: float) -> None:
        """
        Node C{token}'s snapshot (its C{(hub, group, connection id)}
        memberships) replaces what was known of it; the joins and leaves
        heard while it was loading are applied on top.
        """
        buffered = self._loading.pop(token, [])
        node = RemoteNode(node_id, now)
        for hub, group, connection_id in members:
            node.apply(hub, group, connection_id, True)
        self._nodes[token] = node
        for message in buffered:
            self._membership(message)
