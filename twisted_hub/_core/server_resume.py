"""
The server's side of session resumption, without I/O: L{SessionResume}
(docs/resumption.md, docs/protocol.md section 10).

A L{twisted_hub._core.server_session.ServerSession} whose client negotiated
C{resume} owns one.  It grants the session (SESSION), acknowledges what
arrives (a timer for C{ack_delay}, ACK after C{ack_every}), keeps the session
for the window when its connection drops (detached: what the hub sends is
numbered and kept, calls go on running), ends it when the window passes,
and moves it onto the connection that resumes it (the newcomer's transport,
output budget and lifecycle; the old connection, if the server had not
noticed it was gone, is closed with 4006).

A session that resumes is the same object the hub layer knows: its
connection id, groups, C{connection.items}, hub instance, running calls,
streams (both ways, on the session's own core) and awaited client results
carry over; the hub's C{on_resumed} runs instead of
C{on_connected}, and C{on_disconnected} only once the session ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .errors import DisconnectKind, DisconnectReason
from .heartbeat_member import HeartbeatMembership
from .resume import MoveError, ResumableSession, ResumeRefusedError, SessionRegistry, SessionToken, Verdict
from .resume_link import ResumeLink
from .session import Lifecycle
from .session_move import ForwardLink, MovedSession
from .session_snapshot import SnapshotLink, check_snapshot, forget_snapshot, restore_problem
from .wire import (
    Ack,
    CloseCode,
    Error,
    ErrorCode,
    Invoke,
    MessageKind,
    ProtocolError,
    Result,
    Resume,
    ResumeReason,
    ResumeRefused,
    decode_frame,
)

if TYPE_CHECKING:
    from .server_session import ServerSession
    from .session_output import PreparedFrame

__all__ = [
    "Detached", "SessionResume", "admit_call", "claim_answered", "detaches", "forwarded", "hand_over",
    "node_lost", "resume_session", "start_session",
]


def detaches(reason: DisconnectReason) -> bool:
    """
    Does a connection that ended for C{reason} keep its session for a
    resume?  Yes when the link failed: a heartbeat timeout (either side's),
    a lost connection, the client going away (1001: a browser freezing or
    leaving a page).  No when a side ended it on purpose: a normal close,
    a kick, an expired token, a protocol error, a slow consumer, and the
    server's own shutdown (one node: it takes its sessions with it).
    """
    kind = reason.kind
    if kind in (DisconnectKind.TIMED_OUT, DisconnectKind.PEER_TIMED_OUT, DisconnectKind.CONNECTION_LOST):
        return True
    return kind is DisconnectKind.GOING_AWAY and not reason.locally


class Detached:
    """
    The transport of a detached session: it takes every write and sends
    nothing (the ledger keeps the sequenced messages for the resume).
    C{peer}: the address of the connection that dropped (for log lines).
    """

    can_send = True

    def __init__(self, peer: str | None) -> None:
        self.peer = peer

    def send_frame(self, payload: bytes, urgent: bool = False) -> None:
        pass

    def send_prepared(self, prepared: PreparedFrame, urgent: bool = False) -> bool:
        return False

    def send_raw(self, data: bytes, urgent: bool = False) -> None:
        pass

    def send_close(self, code: int, reason: str, drop_after: bool) -> None:
        pass

    def abort(self) -> None:
        pass

    def moved_away(self, code: int = CloseCode.SESSION_MOVED, reason: str = "") -> None:
        pass

    def queued_bytes(self) -> int | None:
        return None

    def receiving(self) -> tuple[int, bool]:
        return 0, False


class SessionResume:
    """
    One resumable server session's state besides its ledger: its registry
    record, its timers, and why its last connection dropped.
    """

    __slots__ = ("_session", "registry", "record", "_cancel_ack", "_cancel_window", "dropped", "running_on", "saved",
                 "saved_at")

    def __init__(self, session: ServerSession[Any], registry: SessionRegistry, record: ResumableSession) -> None:
        self._session = session
        self.registry = registry
        self.record = record
        self._cancel_ack: Callable[[], object] | None = None
        self._cancel_window: Callable[[], object] | None = None
        #: why the connection dropped, while detached (None: attached)
        self.dropped: DisconnectReason | None = None
        #: (the node this session moved from, the ids of its calls that were running there)
        self.running_on: tuple[str, frozenset[int]] | None = None
        #: the snapshot this node last wrote of the session (None: none is kept; session_snapshot.py),
        #: and the counts (sent, received) it was written at
        self.saved: bytes | None = None
        self.saved_at = (0, 0)

    @property
    def detached(self) -> bool:
        return self.dropped is not None

    # -- acknowledging ------------------------------------------------------------
    def frame_handled(self, now: float) -> None:
        """
        A frame was handled: send ACK when C{ack_every} messages wait for
        one, else make sure a timer sends it within C{ack_delay}.  The first
        one after a resume shows the client got RESUMED: its earlier tokens
        stop working (L{SessionToken.confirm}).
        """
        record = self.record
        if not record.token.confirmed:
            record.token.confirm()
        window = record.ledger.received
        if window.ack_due(now):
            self._send_ack()
        elif self._cancel_ack is None:
            deadline = window.ack_deadline()
            if deadline is not None:
                self._cancel_ack = self._session.io.call_later(max(deadline - now, 0.0), self._ack_timer)

    def _ack_timer(self) -> None:
        self._cancel_ack = None
        session = self._session
        if self.detached or not session.is_open:
            return
        if self.record.ledger.received.ack_due(session.io.seconds()):
            self._send_ack()
            session.flush()
        else:
            self.frame_handled(session.io.seconds())

    def _send_ack(self) -> None:
        session = self._session
        link = session.core.resume  # (its acknowledge may look for a quiet session: SnapshotLink)
        assert link is not None  # (a resumable session's connection always has its link)
        session.core.send_urgent(Ack(link.acknowledge()))
        if self._cancel_ack is not None:
            self._cancel_ack()
            self._cancel_ack = None

    # -- dropping and ending ---------------------------------------------------------------
    def detach(self, reason: DisconnectReason) -> None:
        """
        The connection dropped (L{detaches}): keep the session for the
        window.  What the hub sends meanwhile is numbered and kept.
        """
        session = self._session
        now = session.io.seconds()
        self.dropped = reason
        self.registry.detach(self.record, now)
        if self._cancel_ack is not None:
            self._cancel_ack()
            self._cancel_ack = None
        session.heartbeat.leave()
        session.tokens.stop()
        # (its streams go on: their messages are sequenced, numbered and kept like the rest;
        # a producer still sends only what the client's credit allows, so at most the window)
        session.transport = detached = Detached(session.transport.peer)
        lifecycle = session.lifecycle = Lifecycle()
        lifecycle.opened()
        session.out.rebind(detached, lifecycle)
        core = session.core
        core.drop_outgoing()
        core.state = core.state.OPEN
        session.host.connection_count -= 1
        window = self.registry.policy.window
        self._cancel_window = session.io.call_later(window, self._window_passed)
        session.log.info(
            "{id} dropped ({kind}); its session is kept {window:.0f}s for a resume",
            id=session.connection_id, kind=reason.kind.value, window=window,
        )

    def hand_off(self) -> None:
        """
        This node stops and its sessions wait for the other nodes to claim
        them (docs/resumption.md, "Rolling restarts"): the session detaches
        now (from here on what the hub sends it is numbered and kept, none
        lost in the closing handshake), and its connection is closed with
        1001, which its client answers by resuming, on another node.
        """
        session = self._session
        previous = session.transport
        reason = DisconnectReason(DisconnectKind.GOING_AWAY, CloseCode.GOING_AWAY, "server shutting down", True)
        self.detach(reason)
        previous.moved_away(CloseCode.GOING_AWAY, "server shutting down")
        session.io.closed()  # (its connection is gone: whoever waits for that is told)

    def _window_passed(self) -> None:
        self._cancel_window = None
        dropped = self.dropped
        if dropped is None:
            return
        message = f"{dropped.message}; not resumed within {self.registry.policy.window:.0f}s".lstrip("; ")
        self.end(DisconnectReason(dropped.kind, dropped.code, message, dropped.locally), ResumeReason.WINDOW_EXPIRED)

    def end(self, reason: DisconnectReason, why: str) -> None:
        """
        End a detached session now (its window passed, it was kicked, a
        resume was refused, the server shuts down): it leaves its groups,
        its calls are dropped, C{on_disconnected(reason)} runs.
        """
        session = self._session
        if self._cancel_window is not None:
            self._cancel_window()
            self._cancel_window = None
        forget_snapshot(self._session)
        self.registry.end(self.record, session.io.seconds(), why)
        self.dropped = None
        session.host.connection_count += 1  # (finish uncounts it, as for any connection)
        session.resumable = None
        session.core.resume = None
        session.closing.finish(reason)

    def stop(self) -> None:
        """The session ended with its connection: forget it in the registry, stop the timers."""
        if self._cancel_ack is not None:
            self._cancel_ack()
            self._cancel_ack = None
        if self._cancel_window is not None:
            self._cancel_window()
            self._cancel_window = None
        forget_snapshot(self._session)
        self.registry.end(self.record, self._session.io.seconds(), ResumeReason.SESSION_UNKNOWN)

    def moved_away(self, forward: Callable[[bytes], None]) -> None:
        """
        The session moved to another node (L{hand_over}): it ends here
        without ending (no C{on_disconnected}: the hub hears of it where it
        ends).  A connection still attached is closed with 4006; the session
        leaves this node's hub layer (its connections, groups: the other
        nodes hear it leave), this node's registry and timers; client
        results it awaited fail (the answers would reach the other node);
        calls still running or queued here finish here, and what they send
        the client goes to C{forward} (L{ForwardLink}).
        """
        session = self._session
        if self._cancel_ack is not None:
            self._cancel_ack()
            self._cancel_ack = None
        if self._cancel_window is not None:
            self._cancel_window()
            self._cancel_window = None
        self.registry.hand_over(self.record)
        self.saved = None  # (the node it moves to deletes the snapshot once the token rotated there)
        reason = DisconnectReason(DisconnectKind.NORMAL, CloseCode.SESSION_MOVED, "the session moved to another node", True)
        if not self.detached:
            session.heartbeat.leave()
            session.tokens.stop()
            previous = session.transport
            session.transport = detached = Detached(previous.peer)
            lifecycle = session.lifecycle = Lifecycle()
            lifecycle.opened()
            session.out.rebind(detached, lifecycle)
            previous.moved_away()
            session.host.connection_count -= 1
        self.dropped = None
        session.resumable = None
        core = session.core
        core.drop_outgoing()
        core.resume = ForwardLink(forward)
        session.closing.joined = False
        session.io.left()
        if session.streams is not None:
            session.streams.closed(reason)
        session.results.connection_closed(core.take_all_pending(), reason)
        session.io.closed()
        session.log.info("{id} moved to another node", id=session.connection_id)

    # -- resuming ----------------------------------------------------------------------
    def take_over(self, newcomer: ServerSession[Any], request: Resume) -> None:
        """
        C{newcomer}, a connection that just said HELLO + RESUME for this
        session, hands over its transport: the session goes on there.

        @raise ResumeRefusedError: the registry refused (counted there).
        @raise ProtocolError: the client's C{received} is impossible.
        """
        session = self._session
        io = session.io
        now = io.seconds()
        was_attached = not self.detached
        previous = session.transport
        resumption = self.registry.resume(request, newcomer.transport, now)
        forget_snapshot(session)  # (its token rotated: the snapshot's digests are stale)
        if self._cancel_window is not None:
            self._cancel_window()
            self._cancel_window = None
        if was_attached:
            # The server had not noticed the old connection was gone: it ends
            # with 4006 (the session lives on), without touching the session.
            session.heartbeat.leave()
            session.tokens.stop()
            previous.moved_away()
        else:
            self.dropped = None
            session.host.connection_count += 1
        # The newcomer's connection, as this session's.
        newcomer.stop_hello_deadline()
        newcomer.tokens.stop()
        session.transport = newcomer.transport
        session.output = newcomer.output
        lifecycle = session.lifecycle = newcomer.lifecycle
        newcomer.lifecycle = Lifecycle()
        session.out.rebind(session.transport, lifecycle)
        core, fresh = session.core, newcomer.core
        core.adopt_handshake(fresh)
        callback = session.heartbeat.ack_callback
        session.heartbeat.leave()
        session.heartbeat = HeartbeatMembership(session)
        session.heartbeat.ack_callback = callback
        session.heartbeat.join(session.heartbeat_policy, session.host.scheduler_for)
        session.adopted(newcomer)
        session.tokens.arm_expiry(now)
        core.send(resumption.resumed)
        core.queue_replay(resumption.replay)
        session.flush()
        session.log.info(
            "{id} resumed its session ({count} message(s) replayed)", id=session.connection_id, count=len(resumption.replay),
        )
        io.run_hook("on_resumed", None)


def start_session(session: ServerSession[Any], resumable: bool) -> None:
    """
    (Resume on.)  The client said HELLO without RESUME: a new session,
    resumable when the client announced C{resume} (SESSION goes first).
    """
    if resumable:
        registry = session.host.resume_registry(session.hub_name)
        record, grant = registry.open(session.transport, session.connection_id)
        record.owner = session
        session.resumable = SessionResume(session, registry, record)
        session.core.send(grant)
        session.core.resume = _link(session, session.resumable)
    session.closing.opened()
    session.io.run_hook("on_connected", None)


def resume_session(session: ServerSession[Any], request: Resume) -> None:
    """
    HELLO + RESUME: carry the session the token names, or refuse and start
    afresh.  A session this node neither holds nor remembers may be on
    another node: with a backplane that moves sessions, it is claimed from
    there (L{SessionHost.claim_session}) and the connection waits for
    L{claim_answered} (the client sends nothing until RESUMED).
    """
    registry = session.host.resume_registry(session.hub_name)
    if session.host.moves_sessions and not registry.knows(request.token):
        try:
            key, digest = SessionToken.claim_of(request.token)
        except ResumeRefusedError:
            pass  # (refused below, token-invalid)
        else:
            session.claiming = request
            user = session.tokens.user
            session.host.claim_session(session, key, digest, user.id if user is not None else None)
            return
    record = registry.find(request.token)
    # (a registry's records are owned by the sessions that opened them)
    owner = cast("ServerSession[Any] | None", record.owner if record is not None else None)
    try:
        if owner is None or owner.resumable is None:
            registry.resume(request, session.transport, session.io.seconds())  # raises the typed refusal
            raise ResumeRefusedError(ResumeReason.SESSION_UNKNOWN, "no such session")  # pragma: no cover
        if not _same_user(session, owner):
            registry.count_refusal(ResumeReason.TOKEN_INVALID)
            raise ResumeRefusedError(ResumeReason.TOKEN_INVALID, "the session belongs to another user")
        owner.resumable.take_over(session, request)
    except ResumeRefusedError as refused:
        session.log.info("{id}: resume refused ({reason})", id=session.connection_id, reason=refused.reason)
        refuse(session, refused)
        if owner is not None and owner.resumable is not None and refused.reason != ResumeReason.TOKEN_INVALID:
            session_lost(owner, refused.reason)
        start_session(session, True)
        session.heartbeat.join(session.heartbeat_policy, session.host.scheduler_for)


def _same_user(session: ServerSession[Any], other: ServerSession[Any]) -> bool:
    mine, theirs = session.tokens.user, other.tokens.user
    return (mine.id if mine is not None else None) == (theirs.id if theirs is not None else None)


def session_lost(session: ServerSession[Any], why: str) -> None:
    """A resume found this session cannot go on (its bound dropped what the client lacks): end it."""
    resumable = session.resumable
    assert resumable is not None
    if resumable.detached:
        dropped = resumable.dropped
        assert dropped is not None
        resumable.end(DisconnectReason(dropped.kind, dropped.code, f"resume refused: {why}", dropped.locally), why)
    else:
        resumable.stop()
        session.resumable = None
        session.core.resume = None
        session.close_with(CloseCode.SESSION_MOVED, f"resume refused: {why}", DisconnectKind.NORMAL)


def admit_call(session: ServerSession[Any], invocation: Invoke) -> bool:
    """
    May this INVOKE of a resumable session run?  Call ids strictly increase
    over a session (docs/protocol.md section 10.6): an id seen before is a
    repeat and never runs twice.  A settled one gets its kept answer again,
    a running one its one answer when done, a forgotten one C{duplicate-call}.
    """
    link = session.core.resume
    assert link is not None
    seen = link.ledger.calls.begin(invocation.call_id, session.io.seconds())
    if seen.verdict == Verdict.NEW:
        return True
    if seen.verdict == Verdict.SETTLED:
        assert seen.answer is not None
        session.core.queue_payload(seen.answer)
    elif seen.verdict == Verdict.FORGOTTEN:
        session.core.send_error(invocation.call_id, ErrorCode.DUPLICATE_CALL, "this call ran once; its answer is no longer kept")
    return False


def refuse(newcomer: ServerSession[Any], refused: ResumeRefusedError) -> None:
    """Tell the newcomer its RESUME was refused (a fresh session follows)."""
    newcomer.core.send(ResumeRefused(refused.reason, refused.message))


def hand_over(
    registry: SessionRegistry, key: bytes, digest: bytes, user: str | None, now: float,
    forward_for: Callable[[str], Callable[[bytes], None]],
) -> bytes | None:
    """
    Another node claims the session C{key} names for a client that holds
    the token whose secret hashes to C{digest} (and is C{user}): check, give
    the session up here (L{SessionResume.moved_away}: C{forward_for(its
    connection id)} carries what calls still running here send) and return its state
    (L{MovedSession.encode}).  None: no such session here.

    @raise ResumeRefusedError: the typed reason the claimant tells its
        client (the token does not match, another user, the window passed,
        the session ended here and why: nothing moved), or
        C{session-unknown} when a stream of the session is open (streams
        do not move: the session ends here).
    @raise MoveError: C{connection.items} cannot be carried (the session ends here).
    """
    record = registry.find_key(key)
    if record is None:
        ended = registry.ended_reason(key)
        if ended is None:
            return None
        raise ResumeRefusedError(ended, "the session is over")
    session = cast("ServerSession[Any] | None", record.owner)
    if session is None or session.resumable is None:  # pragma: no cover - a registry record always has its session
        return None
    if not record.token.matches_claim(key, digest):
        registry.count_refusal(ResumeReason.TOKEN_INVALID)
        raise ResumeRefusedError(ResumeReason.TOKEN_INVALID, "the token does not match the session")
    mine = session.tokens.user
    if (mine.id if mine is not None else None) != user:
        registry.count_refusal(ResumeReason.TOKEN_INVALID)
        raise ResumeRefusedError(ResumeReason.TOKEN_INVALID, "the session belongs to another user")
    if record.detached_at is not None and now - record.detached_at >= registry.policy.window:
        raise ResumeRefusedError(ResumeReason.WINDOW_EXPIRED, "the session outlived its window")
    if session.streams is not None and session.streams.any_open():
        # (streams do not move yet: the session ends here, its client starts afresh and its streams fail there)
        why = ResumeReason.SESSION_UNKNOWN
        registry.count_refusal(why)
        session_lost(session, why)
        raise ResumeRefusedError(why, "a session with a stream open cannot move to another node")
    items, groups = session.carried()
    ledger = record.ledger
    try:
        state = MovedSession(
            session.hub_name, session.connection_id, record.token.export(), ledger.sent.export(now),
            ledger.received.export(), ledger.calls.export(now), session.core.next_call_id,
            user, items, groups,
        ).encode()
    except MoveError:
        # (its items cannot travel: the session ends here, as one with a stream open)
        registry.count_refusal(ResumeReason.SESSION_UNKNOWN)
        session_lost(session, ResumeReason.SESSION_UNKNOWN)
        raise
    session.resumable.moved_away(forward_for(session.connection_id))
    return state


def give_up(registry: SessionRegistry, key: bytes, forward_for: Callable[[str], Callable[[bytes], None]]) -> bool:
    """
    Another node restored the session C{key} names from this node's
    snapshot while this node was cut off from Redis (docs/resumption.md,
    "When a node dies"): the copy here is stale.  It leaves as a move does
    (L{SessionResume.moved_away}: no C{on_disconnected} here; a connection
    still attached, half-open by now, is closed with 4006).  False: no such
    session here.
    """
    record = registry.find_key(key)
    session = cast("ServerSession[Any] | None", record.owner if record is not None else None)
    if session is None or session.resumable is None:
        return False
    session.resumable.moved_away(forward_for(session.connection_id))
    return True


def claim_answered(
    session: ServerSession[Any], moved: MovedSession | None, reason: str = ResumeReason.SESSION_UNKNOWN,
    message: str = "no node holds this session", node: str = "", restored: bool = False,
) -> bool:
    """
    The claim L{resume_session} made is answered: C{moved}, the session
    another node gave up, goes on over this connection (RESUMED and the
    replay, as for a local resume; if the connection went away meanwhile,
    the session waits here, detached, for the next resume); or none did
    (C{reason}): refuse and start afresh.  C{node}: the node that gave the
    session up (its calls still running there: L{node_lost}).  C{restored}:
    C{moved} is the session's snapshot, read from the shared store because
    no node answered (its node died): it goes on only if the client's
    RESUME matches it (L{restore_problem}), else the resume is refused.
    Return whether the session is installed here.  The caller then sends what the session missed
    meanwhile, and handles the frames that arrived (L{ServerSession.release_held}).
    """
    request = session.claiming
    assert request is not None
    session.claiming = None
    if moved is None:
        session.host.resume_registry(session.hub_name).count_refusal(reason)
        _refused_fresh(session, ResumeRefusedError(reason, message))
        return False
    if restored:
        registry = session.host.resume_registry(session.hub_name)
        if session.lifecycle.closed:
            return False  # (the snapshot stays: the client comes back and it is read again)
        user = session.tokens.user
        try:
            problem = restore_problem(request, moved, user.id if user is not None else None)
        except MoveError as e:
            problem = ResumeReason.SESSION_UNKNOWN, str(e)
        if problem is not None:
            registry.count_refusal(problem[0])
            _refused_fresh(session, ResumeRefusedError(*problem))
            return False
    return _install(session, request, moved, node)


def node_lost(session: ServerSession[Any], node: str) -> None:
    """
    Node C{node}, which this session moved from while calls of its ran
    there, left or died: those not answered yet never will be.  Each is
    answered C{duplicate-call} (it may have run, and is never run again:
    docs/resumption.md), so no call is left hanging.
    """
    resumable = session.resumable
    if resumable is None or resumable.running_on is None or resumable.running_on[0] != node:
        return
    _, ids = resumable.running_on
    resumable.running_on = None
    calls = resumable.record.ledger.calls
    for call_id in sorted(ids):
        if calls.is_running(call_id):
            session.core.send_error(
                call_id, ErrorCode.DUPLICATE_CALL, "the node this call ran on was lost; it may have run",
            )
    if not session.out.holding:
        session.flush()


def forwarded(session: ServerSession[Any], payload: bytes) -> None:
    """
    A message for this session from the node it moved from (what a call
    still running there sent): send it as the session's next one; an
    answer settles its call here (a repeat of the call gets it again).
    """
    core = session.core
    if not core.queue_payload(payload):
        session.log.warn("a forwarded message for {id} is over its size limit: dropped", id=session.connection_id)
        return
    link = core.resume
    if link is not None and payload[1] in (MessageKind.RESULT, MessageKind.ERROR):
        answer = decode_frame(payload)[0]
        assert isinstance(answer, (Result, Error))  # (by its kind byte)
        link.sent_answer(answer.call_id, payload)
    if not session.out.holding:
        session.flush()


def _link(session: ServerSession[Any], resumable: SessionResume) -> ResumeLink:
    """The session's link to its ledger: one that checks for a snapshot when its node keeps them."""
    if session.host.snapshots:
        return SnapshotLink(resumable.record.ledger, session.io.seconds, lambda: check_snapshot(session))
    return ResumeLink(resumable.record.ledger, session.io.seconds)


def _refused_fresh(session: ServerSession[Any], refused: ResumeRefusedError) -> None:
    if session.lifecycle.closed:
        return
    session.log.info("{id}: resume refused ({reason})", id=session.connection_id, reason=refused.reason)
    refuse(session, refused)
    start_session(session, True)
    session.heartbeat.join(session.heartbeat_policy, session.host.scheduler_for)
    session.flush()


def _install(session: ServerSession[Any], request: Resume, moved: MovedSession, node: str) -> bool:
    registry = session.host.resume_registry(session.hub_name)
    io = session.io
    now = io.seconds()
    try:
        record = registry.adopt(
            SessionToken.restore(moved.token), moved.sent, moved.received, moved.calls, moved.connection_id, now,
        )
    except MoveError as e:
        session.log.error(
            "{id}: the session {moved} another node handed over cannot be used here ({error}); it is lost",
            id=session.connection_id, moved=moved.connection_id, error=e,
        )
        _refused_fresh(session, ResumeRefusedError(ResumeReason.SESSION_UNKNOWN, "the session's state was unusable"))
        return False
    gone = session.lifecycle.closed
    resumption = None
    if not gone:
        try:
            resumption = registry.resume(request, session.transport, now)
            if session.host.snapshots:
                # (its token rotated: a snapshot of it, this node's or the old node's, is stale)
                session.host.forget_snapshot(record.token.key)
        except ResumeRefusedError as refused:  # (counted; the registry ended the session)
            _refused_fresh(session, refused)
            return False
        except ProtocolError as e:
            registry.end(record, now, ResumeReason.SESSION_UNKNOWN)
            session.log.info("protocol error from {id}: {error}; closing", id=session.connection_id, error=e)
            session.close_with(CloseCode.PROTOCOL_ERROR, str(e), DisconnectKind.PROTOCOL_ERROR)
            return False
    session.rename(moved.connection_id)
    record.owner = session
    resumable = session.resumable = SessionResume(session, registry, record)
    running = record.ledger.calls.running
    if running and node:
        resumable.running_on = (node, running)
    session.core.resume = _link(session, resumable)
    session.core.next_call_id = moved.next_call_id
    session.closing.opened()
    session.carry(moved.items, moved.groups)
    if resumption is None:
        # the connection went away while the other node answered: the session waits here
        ended = session.lifecycle.ended or DisconnectReason(DisconnectKind.CONNECTION_LOST)
        resumable.detach(ended)
        if not detaches(ended):  # (the client closed on purpose: the session ends here)
            resumable.end(ended, ResumeReason.SESSION_UNKNOWN)
        return True
    session.tokens.arm_expiry(now)
    session.core.send(resumption.resumed)
    session.core.queue_replay(resumption.replay)
    session.heartbeat.join(session.heartbeat_policy, session.host.scheduler_for)
    session.flush()
    session.log.info(
        "{id} resumed its session from another node ({count} message(s) replayed)",
        id=session.connection_id, count=len(resumption.replay),
    )
    io.run_hook("on_resumed", None)
    return True
