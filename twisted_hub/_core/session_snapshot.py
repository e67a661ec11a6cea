"""
A resumable session's snapshot at rest, without I/O: what a node writes to
the shared store when a session is quiet, so that the session outlives the
node (docs/resumption.md, "When a node dies").

A session is **quiet** when nothing is in flight either way: the client
acknowledged every sequenced message the server sent, the server
acknowledged every one it received, no call of the client's runs (here or
on a node it moved from), no client result is awaited, no stream is open.
Its state then is small and complete: the token record (digests only), the
two counts, the highest call id seen, the next id of the server's own
calls, the user, C{connection.items} and the groups, in the layout of a
live move (L{MovedSession}), so a node that restores it installs it the
same way.  Kept answers are left out: a client whose counts match the
snapshot replays nothing, so no call id of its comes again, and any that
did would be answered C{duplicate-call}, never run.

A node restores a snapshot only for a client whose RESUME says it sent
exactly what the snapshot received and received exactly what the snapshot
sent (L{restore_problem}): anything else means traffic the dead node handled
after the snapshot, which cannot be rebuilt, and the resume is refused.

The checks ride on acknowledgements (L{SnapshotLink}): a quiet session is
noticed when its last acknowledgement goes or arrives, never on the path of
each message; one whose counts did not move since its snapshot is not
encoded again (a change to its items or groups made without a message to or
from its client is recorded with its next message).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .resume import MoveError
from .resume_link import ResumeLink
from .session_move import MovedSession
from .wire import ResumeReason

if TYPE_CHECKING:
    from .resume import SessionLedger
    from .server_session import ServerSession
    from .wire import Resume

__all__ = [
    "SNAPSHOT_TTL_WINDOWS", "SnapshotLink", "check_snapshot", "forget_snapshot", "quiet", "restore_problem", "snapshot_state",
]

#: a snapshot is kept this many windows after its last write or refresh (refreshed every half window
#: while its node lives), so it outlives a node that dies by at least 1.5 windows
SNAPSHOT_TTL_WINDOWS: Final = 2.0


class SnapshotLink(ResumeLink):
    """
    A server session's L{ResumeLink} when its node keeps snapshots: after
    each acknowledgement either way, C{check} looks whether the session is
    quiet (the per-message path is L{ResumeLink}'s, unchanged).
    """

    __slots__ = ("check",)

    def __init__(self, ledger: SessionLedger, now: Callable[[], float], check: Callable[[], None]) -> None:
        super().__init__(ledger, now)
        self.check = check

    def acknowledged(self, received: int) -> None:
        super().acknowledged(received)
        self.check()

    def acknowledge(self) -> int:
        received = super().acknowledge()
        self.check()
        return received


def quiet(session: ServerSession[Any]) -> bool:
    """Is nothing in flight on this attached resumable session (the module's definition)?"""
    resumable = session.resumable
    if resumable is None or resumable.detached or resumable.running_on is not None or session.claiming is not None:
        return False
    ledger = resumable.record.ledger
    sent, received = ledger.sent, ledger.received
    # (numbered, not last_sent: a look that never settles a broadcast log's open run)
    if received.acknowledged != received.received or sent.acked != sent.numbered:
        return False
    if ledger.calls.running_count or session.core.pending_count:
        return False
    return session.streams is None or not session.streams.any_open()


def snapshot_state(session: ServerSession[Any]) -> bytes:
    """
    The snapshot of a quiet session (L{quiet}): a L{MovedSession}'s bytes.

    @raise MoveError: C{connection.items} holds a value msgpack cannot carry.
    """
    resumable = session.resumable
    assert resumable is not None
    record = resumable.record
    ledger = record.ledger
    sent, received = ledger.sent.acked, ledger.received.received  # (quiet: all it sent is acknowledged)
    highest = ledger.calls.highest
    items, groups = session.carried()
    user = session.tokens.user
    return MovedSession(
        session.hub_name, session.connection_id, record.token.export(),
        [sent, sent, [], [], []], [received, received], [[], [], highest, highest],
        session.core.next_call_id, user.id if user is not None else None, items, groups,
    ).encode()


def check_snapshot(session: ServerSession[Any]) -> None:
    """
    An acknowledgement went or came (L{SnapshotLink}): if the session is
    quiet and differs from its last snapshot, write it (the host's store).
    """
    if not quiet(session):
        return
    resumable = session.resumable
    assert resumable is not None
    ledger = resumable.record.ledger
    counts = (ledger.sent.acked, ledger.received.received)
    if resumable.saved is not None and counts == resumable.saved_at:
        return  # (no message either way since it was written: unchanged, but for items or groups changed without one)
    try:
        state = snapshot_state(session)
    except MoveError as e:
        if resumable.saved is not None:
            forget_snapshot(session)
            session.log.warn(
                "{id}: no snapshot of the session is kept ({error}): it cannot outlive this node",
                id=session.connection_id, error=e,
            )
        return
    if state == resumable.saved:
        resumable.saved_at = counts
    elif session.host.save_snapshot(session.hub_name, resumable.record.token.key, state):
        resumable.saved, resumable.saved_at = state, counts


def forget_snapshot(session: ServerSession[Any]) -> None:
    """The session's snapshot no longer holds (the session ended, or its token rotated): delete it."""
    resumable = session.resumable
    if resumable is not None and resumable.saved is not None:
        resumable.saved = None
        session.host.forget_snapshot(resumable.record.token.key)


def restore_problem(request: Resume, moved: MovedSession, user: str | None) -> tuple[str, str] | None:
    """
    Why the snapshot C{moved} cannot resume the client that sent C{request}:
    C{(reason, message)}, or None (it can).  The client must have sent
    exactly what the snapshot received and received exactly what it sent;
    the user must match (the token's secret is checked when the session is
    resumed).

    @raise MoveError: the snapshot's counts are not numbers.
    """
    if moved.user != user:
        return ResumeReason.TOKEN_INVALID, "the session belongs to another user"
    if request.sent is None:
        return ResumeReason.SESSION_UNKNOWN, "its node was lost, and the client's RESUME does not say what it sent"
    try:
        snapshot_sent, snapshot_received = int(moved.sent[0]), int(moved.received[0])
    except (IndexError, TypeError, ValueError):
        raise MoveError("a snapshot's counts are not numbers") from None
    if request.sent != snapshot_received or request.received != snapshot_sent:
        return ResumeReason.SESSION_UNKNOWN, (
            f"its node was lost with messages in flight (the client sent {request.sent} and received "
            f"{request.received}; the snapshot had received {snapshot_received} and sent {snapshot_sent})"
        )
    return None
