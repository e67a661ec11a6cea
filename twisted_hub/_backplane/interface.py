"""
The backplane: what connects the hub processes ("nodes") serving one
application, so that C{clients.all}, C{clients.group(...)},
C{clients.client(id)}, C{clients.kick(id)} and C{groups.count(...)} see
every node.

The hub layer talks to it through L{Backplane}: it publishes receiver
calls to a L{Target} (after delivering to this node's own connections),
reports group membership changes, and asks for the members other nodes
hold.  The backplane reaches this node's hubs through L{LocalHubs} (what
other nodes ask of them, and the snapshot of their group members), never
through the server's internals.  L{LocalBackplane} is the default: one process is the whole world,
so there is nothing to publish.  L{twisted_hub.redis.RedisBackplane}
joins nodes through Redis (see C{docs/scaling.md}).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .._core.wire import ProtocolError, ReceiverCall, decode_frame

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

#: The kinds of L{Target}.
TARGET_CALLER = "caller"
TARGET_ALL = "all"
TARGET_ONLY = "only"
TARGET_GROUP = "group"


@dataclass(frozen=True, slots=True)
class Target:
    """
    Who a receiver call is for, said so that any node can resolve it
    against the connections it holds.

    @ivar kind: C{"caller"}, C{"all"}, C{"only"} or C{"group"}.
    @ivar group: the group name (kind C{"group"}).
    @ivar ids: kind C{"only"}: the wanted connection ids; kinds C{"all"} and
        C{"group"}: the excluded ones.
    """

    kind: str
    group: str | None = None
    ids: tuple[str, ...] = ()


def node_of(connection_id: str) -> str:
    """The node token a connection id starts with (C{"<token>-<n>"})."""
    return connection_id.rpartition("-")[0]


def receiver_call_problem(payload: bytes, allowed: frozenset[str] | None, max_size: int) -> str | None:
    """
    What makes a payload heard from another node unfit for this node's
    clients (None: it is one receiver call a hub of this node could have
    sent itself).  A node forwards nothing else: a malformed message would
    make every client close its connection with a protocol error.
    """
    if len(payload) > max_size:
        return f"a receiver call of {len(payload)} bytes, over max_message_size ({max_size})"
    try:
        messages = decode_frame(payload, max_messages=1)
    except ProtocolError as e:
        return f"not a hub message ({e})"
    message = messages[0]
    if not isinstance(message, ReceiverCall):
        return f"a hub message of kind {type(message).__name__}, not a receiver call"
    if allowed is not None and message.method not in allowed:
        return f"a call of receiver method {message.method[:64]!r}, which the hub's receiver does not declare"
    return None


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """
    The answer to a claim for a session another node may hold
    (docs/resumption.md, "Across nodes"): its C{state} (the bytes of a
    C{MovedSession}) and the old node's C{cutoffs}, or a typed C{reason}
    (C{session-unknown} when no node answered) and no state.
    """

    reason: str
    message: str
    state: bytes = b""
    cutoffs: dict[str, int] = field(default_factory=dict)
    #: the node that answered (its token: calls still running there are answered if it dies)
    node: str = ""
    #: how many hub-wide calls this node had recorded when it sent the claim (for L{Backplane.session_arrived})
    since: int = 0
    #: C{state} is the session's snapshot, read from the shared store because no node answered
    #: (docs/resumption.md, "When a node dies"): it resumes only a client whose counts match it
    restored: bool = False


class LocalHubs(Protocol):
    """
    This node's hubs, as its backplane reaches them: what other nodes ask
    of them, and the snapshot of their group members.  The server factory
    implements it (C{twisted_hub._twisted.server}); a backplane needs nothing else
    of the server.
    """

    @property
    def clock(self) -> IReactorTime:
        """The node's clock (a backplane given none uses it)."""

    def knows(self, hub: str) -> bool:
        """Whether this node serves a hub named C{hub}."""

    def deliver(self, hub: str, target: Target, payload: bytes) -> str | None:
        """
        Hand an encoded receiver call heard from another node to this
        node's connections of C{hub} that C{target} names.  None: done;
        else what makes it unfit (L{receiver_call_problem}): nobody got it.
        """

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        """Close this node's connection C{connection_id} of C{hub} (nothing if it left meanwhile)."""

    def memberships(self) -> Iterator[tuple[str, str, str]]:
        """Every C{(hub, group, connection id)} this node holds, for its snapshot."""

    def hand_over(
        self, hub: str, key: bytes, digest: bytes, user: str | None,
        forward: Callable[[str], Callable[[bytes], None]],
    ) -> tuple[str, str, bytes] | None:
        """
        Another node claims the session C{key} names (docs/resumption.md,
        "Across nodes"): None when this node does not hold it; else
        C{(reason, message, state)}: the session given up (its state; the
        reason "") or a typed refusal (no state).  C{forward(connection_id)},
        called when the session is given up, gives what sends on to the new node.
        """

    def give_up(self, hub: str, key: bytes, forward: Callable[[str], Callable[[bytes], None]]) -> bool:
        """
        Another node restored the session C{key} names from this node's
        snapshot (this node was cut off from Redis meanwhile): give the copy
        here up as in L{hand_over}, without ending it.  False: not held here.
        """

    def forwarded(self, hub: str, connection_id: str, payload: bytes) -> bool:
        """A message for C{connection_id}, which moved here: send it (False: not held here)."""

    def node_gone(self, token: str) -> None:
        """Node C{token} left or died: calls of sessions that moved from it and ran there will not be answered."""


class Backplane(Protocol):
    """What a C{HubServerFactory} needs from a backplane."""

    #: this node's name, shown on the status page
    node_id: str

    def attach(self, hubs: LocalHubs) -> None:
        """Serve this node's C{hubs} (called once, by the server factory's constructor)."""

    def start(self) -> None:
        """The factory started: connect, subscribe, announce this node."""

    def stop(self) -> Deferred[None] | None:
        """
        The factory stopped: leave (other nodes drop this node's members).
        A Deferred that fires once the others were told (bounded in time),
        or None when there is nothing to wait for.
        """

    def new_connection_id(self) -> str:
        """A connection id unique across every node."""

    def publish(self, hub: str, target: Target, payload: bytes) -> None:
        """
        Deliver an encoded receiver call to C{target}'s connections on the
        other nodes (this node's own were served already).
        """

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        """
        Close C{connection_id} of C{hub} (C{KICKED}, C{reason}) on the node
        that holds it: called when this node does not hold it.
        """

    def membership_changed(self, hub: str, group: str, connection_id: str, joined: bool) -> None:
        """A connection of this node joined or left a group."""

    def remote_members(self, hub: str, group: str) -> list[str]:
        """The members of a group that other nodes hold."""

    def remote_count(self, hub: str, group: str) -> int:
        """How many members of a group other nodes hold."""

    def status(self) -> list[tuple[str, str]]:
        """Rows for the status page: C{(label, value)}."""

    #: sessions may move here from other nodes (L{claim_session} asks them)
    moves_sessions: bool

    def claim_session(
        self, hub: str, key: bytes, digest: bytes, user: str | None, answer: Callable[[ClaimAnswer], None],
    ) -> None:
        """Ask the other nodes for a session this node does not hold; C{answer} is called once, within a bound."""

    def session_arrived(
        self, hub: str, connection_id: str, groups: Iterable[str], cutoffs: dict[str, int], since: int,
    ) -> list[bytes]:
        """
        A claimed session is installed here: say so to the others; return
        the hub-wide calls it missed (C{cutoffs}, C{since}: its L{ClaimAnswer}'s).
        """

    #: quiet resumable sessions are kept in a store every node reads (L{save_session}), so that a
    #: session outlives its node; a claim nobody answers reads it there
    keeps_sessions: bool

    def save_session(self, hub: str, key: bytes, state: bytes, ttl: float) -> bool:
        """
        Keep the snapshot C{state} of the session C{key} names (with this
        node's cut-offs), for at least C{ttl} seconds after this node last
        refreshed it.  False: it could not be sent now (it is tried again
        at the session's next quiet moment).
        """

    def forget_session(self, key: bytes) -> None:
        """Delete the snapshot of the session C{key} names (it ended, or its token rotated)."""


_local_prefix = os.urandom(4).hex()
_local_counter = itertools.count(1)


class LocalBackplane:
    """
    The default backplane: this process is the only node.  Publishing does
    nothing (this node's connections were served already) and no other
    node holds group members.
    """

    def __init__(self) -> None:
        self.node_id = f"{os.uname().nodename}-{os.getpid()}-{_local_prefix}"

    def attach(self, hubs: LocalHubs) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        return None

    def new_connection_id(self) -> str:
        return f"{_local_prefix}-{next(_local_counter)}"

    def publish(self, hub: str, target: Target, payload: bytes) -> None:
        pass

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        pass  # no other node: the connection is gone already

    def membership_changed(self, hub: str, group: str, connection_id: str, joined: bool) -> None:
        pass

    def remote_members(self, hub: str, group: str) -> list[str]:
        return []

    def remote_count(self, hub: str, group: str) -> int:
        return 0

    def status(self) -> list[tuple[str, str]]:
        return [("node", self.node_id)]

    moves_sessions = False

    def claim_session(
        self, hub: str, key: bytes, digest: bytes, user: str | None, answer: Callable[[ClaimAnswer], None],
    ) -> None:
        answer(ClaimAnswer("session-unknown", "no other node"))

    def session_arrived(
        self, hub: str, connection_id: str, groups: Iterable[str], cutoffs: dict[str, int], since: int,
    ) -> list[bytes]:
        return []

    keeps_sessions = False

    def save_session(self, hub: str, key: bytes, state: bytes, ttl: float) -> bool:
        return False  # (never called: keeps_sessions is False)

    def forget_session(self, key: bytes) -> None:
        pass
