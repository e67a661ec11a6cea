"""
Sessions that move between nodes, the backplane's part, without I/O:
L{SessionMoves} (claims and their answers, where moved connections are
now, what goes on to them) and L{SendHistory} (the hub-wide receiver
calls this node handled lately).  docs/resumption.md, "Across nodes",
tells the whole exchange:

1. A client resumes on node C with a session C does not know.  C publishes
   a L{Claim} (the session key and its token's digest, never the secret)
   on the hub-wide channel and its connection waits.
2. The node H that holds the session checks the digest and the user,
   gives the session up (its connection, if the server had not noticed it
   was gone, is closed with 4006) and answers on C's channel with a
   L{Handover}: the session's state, and for every node the last number H
   had handled of its hub-wide messages (its cut-offs).  Nobody answering
   within C{claim_timeout} means no live node holds it (C{session-unknown}).
3. C installs the session, sends RESUMED and the replay, then the group
   messages H had not handled when it let go and C had (from its
   L{SendHistory}: the numbers after H's cut-offs).  A node's hub-wide
   messages reach every node in one order (one Redis, one subscription),
   so what H handled C had handled before H's answer reached it: nothing
   twice, nothing lost.
4. C announces L{Moved}: every node routes C{clients.client(id)} and kicks
   for that id to C from then on; H, until it hears otherwise, forwards
   what still reaches it for the id (L{Forward}), and so does what calls
   still running on H send the client.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from .interface import TARGET_ALL, TARGET_GROUP, ClaimAnswer, LocalHubs, node_of
from .wire import Claim, Forward, Handover, Kick, Moved, NodeMessage, Send

if TYPE_CHECKING:
    from .._core.log import CoreLog

__all__ = ["CLAIM_TIMEOUT", "HISTORY_SIZE", "MAX_MOVED", "SendHistory", "SessionMoves"]

#: seconds a claim waits for the node holding the session (a live node answers in one Redis round trip or two)
CLAIM_TIMEOUT: Final = 2.0
#: hub-wide receiver calls remembered (what a moving session may have missed lies within a Redis round trip)
HISTORY_SIZE: Final = 16384
#: moved connection ids remembered (the oldest are forgotten first)
MAX_MOVED: Final = 100_000


class SendHistory:
    """The last L{HISTORY_SIZE} hub-wide receiver calls this node handled (heard, and its own), in order."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        # (origin node, its hub-wide number, the call, the entry's place among every entry this
        # history was given: 1, 2, 3 ...); a tuple, not a dataclass: one is added per receiver
        # call published or heard, and a frozen dataclass took seven times as long to make
        # (bench/move_costs.py)
        self._entries: deque[tuple[str, int, Send, int]] = deque(maxlen=size)
        #: entries given so far (the index of the newest)
        self.added = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, origin: str, seq: int, send: Send) -> None:
        self.added += 1
        self._entries.append((origin, seq, send, self.added))

    def after(
        self, hub: str, connection_id: str, groups: frozenset[str], cutoffs: dict[str, int], since: int = 0,
    ) -> list[bytes]:
        """
        The payloads of the calls for C{connection_id} (a member of
        C{groups}) of C{hub} whose numbers are past their node's cut-off, in
        order.  A node without a cut-off was never heard by the old node:
        of its calls, those added after C{since} (the history's L{added}
        when the claim went out: the old node handled none of them), not
        older ones (sent before the old node joined: a restarted node).
        """
        found = []
        for origin, seq, send, index in self._entries:
            if send.hub != hub:
                continue
            cutoff = cutoffs.get(origin)
            if (seq <= cutoff) if cutoff is not None else (index <= since):
                continue
            target = send.target
            if target.kind == TARGET_GROUP and target.group not in groups:
                continue
            if target.kind not in (TARGET_ALL, TARGET_GROUP) or connection_id in target.ids:
                continue
            found.append(send.payload)
        return found


class SessionMoves:
    """
    One node's side of moving sessions.

    @param token: this node's token.
    @param publish: publishes a message (hub-wide channel when C{node} is None, else that node's).
    @param cutoffs: the last hub-wide number handled from each node, this one's included.
    @param call_later: C{(delay, function) -> cancel}: the node's timers.
    @param drain: C{drain(then)} calls C{then} once every message Redis sent
        this node before now has been handled (None: at once).  A claim that
        times out waits for it before it is called unanswered: on a busy
        node the holder's answer can have arrived and wait unread behind
        others (a rolling restart hands every session of a node over at
        once), and a claim given up then loses a session its holder already
        gave away.  It waits at most another C{claim_timeout}.
    @param restore: C{restore(hub, key, then)} reads session C{key}'s snapshot ("When a node dies")
        and calls C{then} once, with C{(state, cut-offs)} or None; a claim nobody answered is
        answered with it (L{ClaimAnswer.restored}).  None: no snapshots are kept.
    """

    def __init__(
        self,
        token: str,
        publish: Callable[[str | None, Claim | Handover | Moved | Forward | Kick], object],
        cutoffs: Callable[[], dict[str, int]],
        call_later: Callable[[float, Callable[[], object]], Callable[[], object]],
        log: CoreLog,
        claim_timeout: float = CLAIM_TIMEOUT,
        drain: Callable[[Callable[[], None]], None] | None = None,
        restore: Callable[[str, bytes, Callable[[tuple[bytes, dict[str, int]] | None], None]], None] | None = None,
    ) -> None:
        self.token = token
        self._drain = drain
        self._restore = restore
        # claims answered from a snapshot lately (a holder's late answer to one is not a lost session)
        self._restored_claims: deque[int] = deque(maxlen=1024)
        self._publish = publish
        self._cutoffs = cutoffs
        self._call_later = call_later
        self._log = log
        self.claim_timeout = claim_timeout
        self.history = SendHistory()
        #: this node's hubs (set when the backplane is attached)
        self.hubs: LocalHubs | None = None
        self._next_claim = 0
        # claim id -> (its answer, cancels its timeout)
        self._claims: dict[int, tuple[Callable[[ClaimAnswer], None], Callable[[], object]]] = {}
        # connection id -> the node holding it now (moved ones only), oldest first
        self._moved: OrderedDict[str, str] = OrderedDict()
        #: claims answered with a session / refused / unanswered; sessions handed over; handovers too late;
        #: messages forwarded (RedisBackplane shows them; metrics and status.json read them there)
        self.claims_won = 0
        self.claims_refused = 0
        self.claims_unanswered = 0
        self.handed_over = 0
        self.late_handovers = 0
        self.forwarded = 0
        #: unanswered claims answered from the session's snapshot instead
        self.claims_restored = 0

    # -- claiming (the node the client reached) ---------------------------------------
    def claim(self, hub: str, key: bytes, digest: bytes, user: str | None, answer: Callable[[ClaimAnswer], None]) -> None:
        """Ask every node for the session C{key} names; C{answer} is called once (within C{claim_timeout})."""
        self._next_claim += 1
        claim_id = self._next_claim

        def unanswered() -> None:
            pending = self._claims.pop(claim_id, None)
            if pending is None:
                return
            nobody = ClaimAnswer("session-unknown", f"no node answered within {self.claim_timeout:g}s (its node may be gone)")
            if self._restore is None:
                self.claims_unanswered += 1
                self._safely("answering an unanswered claim", pending[0], nobody)
                return

            def read(found: tuple[bytes, dict[str, int]] | None) -> None:
                if found is None:
                    self.claims_unanswered += 1
                    self._safely("answering an unanswered claim", pending[0], nobody)
                    return
                # (a late answer from its holder, alive but slow, is then no lost session: the
                # holder gave its copy up, this one goes on)
                self.claims_restored += 1
                self._restored_claims.append(claim_id)
                restored = ClaimAnswer("", "", found[0], found[1], "", restored=True)
                self._safely("restoring a session from its snapshot", pending[0], restored)

            try:
                self._restore(hub, key, read)
            except Exception as e:  # a bug of ours: logged with its traceback; the claim is answered
                self._log.failure("reading a session's snapshot failed", e)
                read(None)

        def timed_out() -> None:
            pending = self._claims.get(claim_id)
            if pending is None:
                return
            if self._drain is None:
                unanswered()
                return
            # (the answer may be here, unread: handle what Redis sent before now first; a
            # backstop ends the wait if that takes another claim_timeout)
            backstop = self._call_later(self.claim_timeout, unanswered)
            self._claims[claim_id] = (pending[0], backstop)

            def drained() -> None:
                if claim_id in self._claims:  # (so the backstop has not fired: it would have taken it)
                    backstop()
                    unanswered()

            try:
                self._drain(drained)
            except Exception as e:
                # a bug of ours: logged with its traceback; the claim is answered as it was before
                self._log.failure("waiting for what Redis sent before a claim timed out failed", e)
                drained()

        since = self.history.added

        def answered(result: ClaimAnswer) -> None:
            answer(replace(result, since=since))

        self._claims[claim_id] = (answered, self._call_later(self.claim_timeout, timed_out))
        self._publish(None, Claim(hub, key, digest, user or "", claim_id))

    def heard_handover(self, message: NodeMessage, handover: Handover) -> None:
        pending = self._claims.pop(handover.claim_id, None)
        if pending is None:
            if handover.state and handover.claim_id not in self._restored_claims:
                # the holder gave the session up after this node stopped waiting: the client was
                # told session-unknown and started afresh; the session is lost (docs/resumption.md)
                self.late_handovers += 1
                self._log.warn(
                    "a session of hub {hub} was handed over after its claim timed out ({timeout:g}s): it is lost",
                    hub=handover.hub, timeout=self.claim_timeout,
                )
            return
        answer, cancel = pending
        cancel()
        if handover.state:
            self.claims_won += 1
        else:
            self.claims_refused += 1
        self._safely(
            "taking over a session another node handed over", answer,
            ClaimAnswer(handover.reason, handover.message, handover.state, handover.cutoffs, message.origin),
        )

    def arrived(
        self, hub: str, connection_id: str, groups: Iterable[str], cutoffs: dict[str, int], since: int = 0,
    ) -> list[bytes]:
        """
        A moved session is installed here: announce where it is now and
        return the hub-wide calls it missed (after the old node's cut-offs;
        C{since}: L{ClaimAnswer.since}).
        """
        self._remember(connection_id, self.token)
        self._publish(None, Moved(hub, connection_id, self.token))
        return self.history.after(hub, connection_id, frozenset(groups), cutoffs, since)

    def _safely(self, what: str, answer: Callable[[ClaimAnswer], None], result: ClaimAnswer) -> None:
        """
        Give a claim its answer; a failure there is a bug of ours: it is
        logged with its traceback and stays here (the link to Redis goes on).
        """
        try:
            answer(result)
        except Exception as e:
            self._log.failure("{what} failed", e, what=what)

    # -- holding (the node the session was on) --------------------------------------------
    def heard_claim(self, message: NodeMessage, claim: Claim) -> None:
        hubs = self.hubs
        assert hubs is not None
        if not hubs.knows(claim.hub):
            return
        claimant = message.origin

        def forward(connection_id: str) -> Callable[[bytes], None]:
            # (called once the session is given up: what reaches this node for it goes on to the claimant)
            self.moved_to(connection_id, claimant)
            return lambda payload: self.forward(claim.hub, connection_id, payload)

        try:
            answer = hubs.hand_over(claim.hub, claim.key, claim.digest, claim.user or None, forward)
        except Exception as e:
            # a bug of ours: logged with its traceback; the claimant hears nothing and refuses after its timeout
            self._log.failure("handing a session over to node {node} failed", e, node=claimant)
            return
        if answer is None:
            return  # not here
        reason, text, state = answer
        if state:
            self.handed_over += 1
        # (the cut-offs are read in the same turn the session was given up)
        self._publish(claimant, Handover(claim.hub, claim.key, claim.claim_id, reason, text, state, self._cutoffs()))

    def node_gone(self, token: str) -> None:
        """Node C{token} left or its lease ran out: what moved from it and was running there is answered here."""
        hubs = self.hubs
        if hubs is not None:
            hubs.node_gone(token)

    # -- routing ------------------------------------------------------------------------
    def heard_moved(self, moved: Moved) -> None:
        self._remember(moved.connection_id, moved.node)

    def _remember(self, connection_id: str, node: str) -> None:
        table = self._moved
        table[connection_id] = node
        table.move_to_end(connection_id)
        while len(table) > MAX_MOVED:
            table.popitem(last=False)

    def moved_to(self, connection_id: str, node: str) -> None:
        """This node gave C{connection_id}'s session to C{node} (before the new one announces it)."""
        self._remember(connection_id, node)

    def node_of(self, connection_id: str) -> str:
        """The node holding C{connection_id}: where it moved, else the node its id names."""
        return self._moved.get(connection_id) or node_of(connection_id)

    def forward(self, hub: str, connection_id: str, payload: bytes) -> None:
        """Send C{payload} on to the node holding C{connection_id} now (not this one)."""
        node = self.node_of(connection_id)
        if node and node != self.token:
            self.forwarded += 1
            self._publish(node, Forward(hub, connection_id, payload))

    def kick_on(self, kick: Kick) -> None:
        """A kick for a connection that moved away from this node: to the node holding it now."""
        self._publish(self.node_of(kick.connection_id), kick)

    def heard_forward(self, message: NodeMessage, forward: Forward) -> None:
        hubs = self.hubs
        assert hubs is not None
        if not hubs.knows(forward.hub):
            return
        try:
            if hubs.forwarded(forward.hub, forward.connection_id, forward.payload):
                return
        except Exception as e:
            self._log.failure("a message forwarded for {id} failed", e, id=forward.connection_id)
            return
        # not here: on to where it moved since (never back to the sender), else it ended: dropped
        node = self._moved.get(forward.connection_id)
        if node is not None and node not in (self.token, message.origin):
            self.forwarded += 1
            self._publish(node, forward)
