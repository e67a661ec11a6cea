"""
What this node does with what the other backplane nodes say, without I/O:
check a message (L{twisted_hub._backplane.wire.NodeCodec}), keep the
membership mirror (L{twisted_hub._backplane.membership.NodeMirror}), hand receiver
calls and kicks to this node's hubs (L{twisted_hub._backplane.interface.LocalHubs}),
and what is about sessions moving between nodes to L{SessionMoves}.
Time is passed in; what needs Redis (loading a node's snapshot) is asked
of the driver through the C{load} callable it gives.

What cannot be used is counted and logged, at most one line per kind of
problem every 5 seconds (L{BackplaneProblems}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._core.log import CoreLog
from .._core.ratelimit import LogRateLimiter
from .interface import TARGET_ONLY, LocalHubs, Target
from .membership import NodeMirror
from .moves import SessionMoves
from .wire import (
    Bye,
    Claim,
    Forward,
    Handover,
    Kick,
    MalformedMessage,
    Moved,
    NodeCodec,
    NodeMessage,
    RejectedMessage,
    Send,
    decode_member_field,
)

__all__ = ["BackplaneProblems", "NodeInbox"]


class BackplaneProblems:
    """What could not be used of what the other nodes sent or keep in Redis: counted, and logged."""

    def __init__(self, log: CoreLog) -> None:
        self._log = log
        #: messages from Redis that could not be understood
        self.bad_messages = 0
        #: messages other nodes published that never reached this node (gaps in their sequence numbers)
        self.missed = 0
        #: messages and Redis state refused: not signed with the secret, stale or replayed
        self.rejected = 0
        self._bad_log = LogRateLimiter(5.0)
        self._missed_log = LogRateLimiter(5.0)
        self._reject_log = LogRateLimiter(5.0)

    def bad(self, what: str, now: float) -> None:
        self.bad_messages += 1
        suppressed = self._bad_log.allow(now)
        if suppressed is not None:
            self._log.warn(
                "ignored a backplane message: {what} ({suppressed} more suppressed)", what=what, suppressed=suppressed
            )

    def reject(self, what: str, now: float) -> None:
        self.rejected += 1
        suppressed = self._reject_log.allow(now)
        if suppressed is not None:
            self._log.error(
                "rejected {what} ({suppressed} more suppressed; {total} rejected in all)",
                what=what, suppressed=suppressed, total=self.rejected,
            )

    def lost(self, count: int, node: str, channel: bytes, now: float) -> None:
        """C{count} messages of C{node} on C{channel} never reached this node."""
        self.missed += count
        suppressed = self._missed_log.allow(now)
        if suppressed is not None:
            self._log.warn(
                "missed {count} message(s) of node {node} on {channel} (Redis dropped them: a lost or too slow "
                "subscriber connection?); {total} missed in all ({suppressed} lines suppressed)",
                count=count, node=node, channel=channel.decode(errors="replace"), total=self.missed,
                suppressed=suppressed,
            )


class NodeInbox:
    """
    The receiving side of one node.

    @param codec: this node's codec (checks and numbers what is heard).
    @param mirror: the other nodes' members.
    @param problems: where what cannot be used is counted.
    @param channel_all: the hub-wide channel (a gap there may hide a join or a leave).
    @param load: asks the driver to load a node's snapshot from Redis (by
        token); the driver answers through L{snapshot}.
    """

    def __init__(
        self,
        codec: NodeCodec,
        mirror: NodeMirror,
        problems: BackplaneProblems,
        channel_all: bytes,
        load: Callable[[str], None],
    ) -> None:
        self.codec = codec
        self.load = load
        self.mirror = mirror
        self.problems = problems
        self.channel_all = channel_all
        #: this node's hubs (set when the backplane is attached)
        self.hubs: LocalHubs | None = None
        #: where claims, handovers and moved connections go (None: sessions do not move)
        self.moves: SessionMoves | None = None

    def receive(self, channel: bytes, data: bytes, now: float) -> None:
        """One message heard on C{channel}."""
        problems = self.problems
        try:
            message = self.codec.decode(channel, data, now)
        except MalformedMessage as e:
            problems.bad(f"on {channel!r}: {e}", now)
            return
        except RejectedMessage as e:
            problems.reject(f"a message on {channel!r}: {e}", now)
            return
        origin = message.origin
        if origin == self.codec.token:
            return  # our own, served locally already
        try:
            gap = self.codec.in_sequence(message, channel, now)
        except RejectedMessage as e:
            problems.reject(f"a message of node {origin}: {e}", now)
            return
        if gap:
            node = self.mirror.node(origin)
            problems.lost(gap, node.node_id if node is not None else origin, channel, now)
            if channel == self.channel_all and node is not None:
                self.load(origin)  # a join or leave may be among them (heard from now on: buffered)
        if self.mirror.apply(message, now):
            self.load(origin)
        if isinstance(message.body, Bye) and self.moves is not None:
            self.moves.node_gone(origin)
        body = message.body
        moves = self.moves
        if isinstance(body, Send):
            if moves is not None:
                if channel == self.channel_all:
                    moves.history.add(origin, message.seq, body)
                elif body.target.kind == TARGET_ONLY:
                    body = self._moved_on(moves, body)
                    if not body.target.ids:
                        return
            self._deliver(message, body, now)
        elif isinstance(body, Kick):
            if moves is not None and moves.node_of(body.connection_id) != self.codec.token:
                moves.kick_on(body)
                return
            self._kick(body, now)
        elif moves is not None:
            if isinstance(body, Claim):
                moves.heard_claim(message, body)
            elif isinstance(body, Handover):
                moves.heard_handover(message, body)
            elif isinstance(body, Moved):
                moves.heard_moved(body)
            elif isinstance(body, Forward):
                moves.heard_forward(message, body)

    def _moved_on(self, moves: SessionMoves, send: Send) -> Send:
        """A receiver call for connections of this node: those that moved away get it where they are now."""
        token = self.codec.token
        moved = [i for i in send.target.ids if moves.node_of(i) != token]
        if not moved:
            return send
        for connection_id in moved:
            moves.forward(send.hub, connection_id, send.payload)
        kept = tuple(i for i in send.target.ids if i not in moved)
        return Send(send.hub, Target(TARGET_ONLY, None, kept), send.payload)

    def _deliver(self, message: NodeMessage, call: Send, now: float) -> None:
        hubs = self.hubs
        assert hubs is not None
        if not hubs.knows(call.hub):
            self.problems.bad(f"a receiver call for unknown hub {call.hub[:64]!r}", now)
            return
        problem = hubs.deliver(call.hub, call.target, call.payload)
        if problem is not None:
            self.problems.bad(
                f"{problem}, from node {message.origin[:64]!r} for hub {call.hub!r}: not forwarded to any client", now
            )

    def _kick(self, kick: Kick, now: float) -> None:
        hubs = self.hubs
        assert hubs is not None
        if not hubs.knows(kick.hub):
            self.problems.bad(f"a kick for unknown hub {kick.hub[:64]!r}", now)
            return
        hubs.kick(kick.hub, kick.connection_id, kick.reason)

    def snapshot(self, token: str, lease_value: object, items: Sequence[object], now: float) -> bool:
        """
        Node C{token}'s state read from Redis: its lease key's value and its
        membership hash (C{HGETALL}: field, value, field, value ...).  What
        is not signed with the secret, or not a membership, is left out and
        counted.  False: its lease is gone (so is the node).
        """
        if lease_value is None:
            self.mirror.lease_gone(token)
            return False
        node_id = self.codec.lease_node_id(token, lease_value)
        if node_id is None:
            self.mirror.abandon_loading(token)
            self.problems.reject(f"the lease of node {token} in Redis is not signed with the secret", now)
            return True
        members = []
        for i in range(0, len(items) - 1, 2):
            field, value = items[i], items[i + 1]
            if isinstance(field, bytes) and not self.codec.member_ok(token, field, value):
                self.problems.reject(f"a membership of node {node_id} in Redis is not signed with the secret", now)
                continue
            try:
                members.append(decode_member_field(field))
            except MalformedMessage as e:
                self.problems.bad(f"membership field of node {node_id}: {e}", now)
        self.mirror.loaded(token, node_id, members, now)
        return True
