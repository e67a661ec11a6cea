"""
The client's side of session resumption across its connections:
L{ClientResumption} (docs/resumption.md, docs/protocol.md section 10).

A reconnecting client (Twisted or asyncio) with C{HubClientOptions(resume=...)}
owns one and hands it to each connection's L{ClientSession}.  It outlives
the connections: the session token (never shown), the ledger (what we sent
and the server has not acknowledged, what we received), the calls still
waiting for their answers and the call-id counter (ids strictly increase
over a session), and the streams (L{ClientStreams}: results we consume,
arguments we produce).  A connection that drops for a link failure leaves
them here; the next one resumes with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .client_streams import ClientStreams
from .errors import ConnectionClosedError, DisconnectKind, DisconnectReason
from .resume import ClientResumeState, ResumePolicy, ResumeRefusedError, Verdict
from .resume_link import ResumeLink
from .wire import CAP_RESUME, Ack, ClientInvoke, ErrorCode, ProtocolError, Resumed, ResumeReason, ResumeRefused, SessionGrant

if TYPE_CHECKING:
    from .client_session import ClientSession

__all__ = ["ClientResumption", "ends_session"]

TokenT = TypeVar("TokenT")

#: why a connection may end with its session still alive
_LINK_FAILURES = frozenset(
    {DisconnectKind.TIMED_OUT, DisconnectKind.PEER_TIMED_OUT, DisconnectKind.CONNECTION_LOST, DisconnectKind.HANDSHAKE_FAILED}
)


def ends_session(reason: DisconnectReason) -> bool:
    """
    Does a connection that ended for C{reason} end the session too?  Yes
    when either side ended it on purpose: our own close, the server's
    1000, 4000 (kicked), 4005 (token expired), 4006 (the session moved to a
    newer connection), a protocol error, a message too big, a slow consumer.
    No when the link failed (a heartbeat timeout, a lost connection, the
    server going away, a failed reconnect): then it resumes.
    """
    kind = reason.kind
    if kind in _LINK_FAILURES:
        return False
    if kind is DisconnectKind.GOING_AWAY:
        return reason.locally  # the server going away (a restart): resume; our own 1001: over
    return True


class ClientResumption(Generic[TokenT]):
    """
    One reconnecting client's resumable session, across its connections.

    @ivar resumes: sessions resumed so far.
    @ivar refusals: resumes refused, by reason (L{ResumeReason}); a server
        without C{resume} counts as C{session-unknown}.
    @ivar resumed_last: the latest connection resumed the session (rather than starting one).
    """

    def __init__(self, policy: ResumePolicy | None = None) -> None:
        self.policy = policy or ResumePolicy()
        self.state = ClientResumeState(self.policy)
        #: calls sent and not answered yet, by call id (the connection's own dict while it lives)
        self.pending: dict[int, TokenT] = {}
        self.next_call_id = 1
        self.resumes = 0
        self.refusals: dict[str, int] = dict.fromkeys(ResumeReason.ALL, 0)
        self.resumed_last = False
        #: HELLO + RESUME went out on the current connection; its answer is awaited
        self.resuming = False
        self._cancel_ack: Callable[[], object] | None = None
        #: the streams of the session while it is detached (they carry over to the next connection)
        self.streams: ClientStreams | None = None

    @property
    def resumable(self) -> bool:
        """There is a session to resume (the server granted one and it did not end)."""
        return self.state.resumable

    # -- the handshake --------------------------------------------------------------
    def welcomed(self, session: ClientSession[TokenT]) -> bool:
        """
        The WELCOME arrived.  With a session to resume and a server that
        offers C{resume}: send HELLO + RESUME and return True (the handshake
        completes with the answer).  Otherwise start numbering afresh (when
        the server offers C{resume}) and return False.
        """
        server_resumes = CAP_RESUME in session.core.peer_capabilities
        max_size = session.options.max_message_size
        if self.resumable:
            if server_resumes:
                self.attach(session, session.io.seconds)
                session.core.hello(max_size, self.state.request())
                self.resuming = True
                return True
            session.core.hello(max_size)
            self.session_lost(session, ResumeReason.SESSION_UNKNOWN, "the server does not offer resume")
        elif server_resumes:
            self.fresh(session, session.io.seconds)
        return False

    def answer(self, session: ClientSession[TokenT], event: SessionGrant | Resumed | ResumeRefused, now: float) -> None:
        """SESSION, RESUMED or RESUME_REFUSED arrived."""
        if isinstance(event, SessionGrant):
            welcome = session.core.welcome
            assert welcome is not None
            self.granted(event, welcome.connection_id)
            return
        if not self.resuming:
            raise ProtocolError(f"{type(event).__name__} without a RESUME")
        self.resuming = False
        if isinstance(event, ResumeRefused):
            self.session_lost(session, event.reason, event.message)
            self.fresh(session, session.io.seconds)
            session.handshake_finished(now)
            return
        try:
            replay = self.resumed(session, event, now)
        except ResumeRefusedError as e:
            # our own bound dropped what the server lacks: the session cannot go on
            session.log.info("cannot resume: {error}; closing", error=e)
            self.session_lost(session, e.reason, e.message)
            session.disconnect(f"resume impossible: {e.reason}")
            return
        session.core.queue_replay(replay)
        held = session.streams.resumed()  # what the streams sent while detached, after the replay
        session.log.info("session resumed ({count} message(s) sent again)", count=len(replay) + held)
        session.handshake_finished(now)

    def admit(self, session: ClientSession[TokenT], invocation: ClientInvoke, now: float) -> bool:
        """
        May the server's client-result call run?  Its ids strictly increase over
        the session (docs/protocol.md section 10.6): one seen before never runs
        twice; a settled one gets its kept answer again, a forgotten one
        C{duplicate-call}, a running one its one answer when done.
        """
        seen = self.state.ledger.calls.begin(invocation.call_id, now)
        if seen.verdict == Verdict.NEW:
            return True
        if seen.verdict == Verdict.SETTLED:
            assert seen.answer is not None
            session.core.queue_payload(seen.answer)
        elif seen.verdict == Verdict.FORGOTTEN:
            forgotten = "this call ran once; its answer is no longer kept"
            session.core.reply_error(invocation.call_id, ErrorCode.DUPLICATE_CALL, forgotten)
        return False

    def session_lost(self, session: ClientSession[TokenT], reason: str, message: str) -> None:
        """The session could not be resumed: count why, fail the calls it held."""
        known = reason if reason in ResumeReason.ALL else ResumeReason.SESSION_UNKNOWN
        session.log.info("session not resumed: {reason} ({message})", reason=known, message=message)
        error = self.closed_error(known)
        self.drop_streams(session, error)
        for token in self.refused(known):
            session.io.call_failed(token, error)

    # -- acknowledging ------------------------------------------------------------------
    def frame_handled(self, session: ClientSession[TokenT], now: float) -> None:
        """
        A frame was handled: send ACK when C{ack_every} messages wait for
        one, else make sure a timer sends it within C{ack_delay} (the
        heartbeats carry acknowledgements too, when they run).
        """
        window = self.state.ledger.received
        if window.ack_due(now):
            self._stop_ack_timer()
            session.core.send_urgent(Ack(window.acknowledge()))
        elif self._cancel_ack is None:
            deadline = window.ack_deadline()
            if deadline is not None:
                self._cancel_ack = session.io.call_later(max(deadline - now, 0.0), lambda: self._ack_timer(session))

    def _ack_timer(self, session: ClientSession[TokenT]) -> None:
        self._cancel_ack = None
        if session.core.resume is not None and session.is_connected:
            self.frame_handled(session, session.io.seconds())
            session.flush()

    def _stop_ack_timer(self) -> None:
        cancel, self._cancel_ack = self._cancel_ack, None
        if cancel is not None:
            cancel()

    # -- the state --------------------------------------------------------------------
    def attach(self, session: ClientSession[TokenT], now: Any) -> None:
        """
        A connection whose server announced C{resume}: it numbers, keeps and
        counts through our ledger and keeps its calls in our dict; the
        session's streams, kept from the connection that dropped, are its
        (they hold what they send until RESUMED: L{answer}).
        """
        streams, self.streams = self.streams, None
        if streams is not None:
            streams.session = session
            session.streams = streams
        core = session.core
        self.pending.update(core._pending)  # (calls made before the WELCOME: none in practice)
        core._pending = self.pending
        core._next_call_id = max(core._next_call_id, self.next_call_id)
        core.resume = ResumeLink(self.state.ledger, now)

    def fresh(self, session: ClientSession[TokenT], now: Any) -> None:
        """A new session starts on this connection (no token, or a refusal): a fresh ledger."""
        self.drop_streams(session, self.closed_error(ResumeReason.SESSION_UNKNOWN))
        self.state.refused(ResumeRefused(ResumeReason.SESSION_UNKNOWN))
        self.state.last_refusal = None
        self.attach(session, now)

    def granted(self, grant: SessionGrant, connection_id: str) -> None:
        """SESSION: our token (the ledger started at the WELCOME, and stays)."""
        ledger = self.state.ledger
        self.state.granted(grant, connection_id)
        self.state.ledger = ledger

    def resumed(self, session: ClientSession[TokenT], answer: Resumed, now: float) -> list[bytes]:
        """RESUMED: what we send again, in order, before anything new (see L{ClientResumeState.resumed})."""
        replay = self.state.resumed(answer, now)
        self.resumes += 1
        self.resumed_last = True
        welcome = session.core.welcome
        if welcome is not None:
            session.core.welcome = replace(welcome, connection_id=answer.connection_id)
        return replay

    def refused(self, reason: str) -> list[TokenT]:
        """The session is lost (refused, or the server cannot resume): count it; return the calls that fail."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        self.resumed_last = False
        return self.take_pending()

    def detached(self, session: ClientSession[TokenT]) -> None:
        """
        The connection dropped with the session alive: keep its calls,
        counter and streams for the next one (what the streams send
        meanwhile is held: L{ClientStreams.detach}).
        """
        core = session.core
        session.streams.detach()
        self.streams = session.streams
        self.resuming = False
        self._stop_ack_timer()
        self.pending = core._pending
        self.next_call_id = core._next_call_id
        core._pending = {}
        core.resume = None

    def end(self, error: Exception | None = None) -> list[TokenT]:
        """
        The session is over (a close on purpose; the client stopped while
        detached): forget it; return the calls that fail.  Streams kept for
        a resume fail with C{error}.
        """
        streams, self.streams = self.streams, None
        if streams is not None:
            streams.close(error or self.closed_error(ResumeReason.SESSION_UNKNOWN))
        self.resuming = False
        self._stop_ack_timer()
        self.state.refused(ResumeRefused(ResumeReason.SESSION_UNKNOWN))
        self.state.last_refusal = None
        return self.take_pending()

    def drop_streams(self, session: ClientSession[TokenT], error: Exception) -> None:
        """The session is lost: its kept streams fail with C{error} (the new connection's start afresh)."""
        streams, self.streams = self.streams, None
        if streams is None and session.streams.held is not None:
            streams = session.streams  # (taken over by this connection, not resumed)
        if streams is not None:
            streams.close(error)
            if session.streams is streams:
                session.streams = ClientStreams(session)

    def take_pending(self) -> list[TokenT]:
        tokens = list(self.pending.values())
        self.pending.clear()
        return tokens

    def closed_error(self, reason: str) -> ConnectionClosedError:
        """The error of a call the lost session takes with it."""
        text = f"the session could not be resumed ({reason})"
        return ConnectionClosedError(DisconnectReason(DisconnectKind.CONNECTION_LOST, None, text), may_have_run=True)
