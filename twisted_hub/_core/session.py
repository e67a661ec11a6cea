"""
What every adapter (server or client, Twisted or asyncio) decides the same
way about a connection's life, apart from how its bytes move: its state, the
one reason it ended, and what a frame that cannot be handled costs it.

No I/O and no clock: an adapter reports what happened (the handshake is
done, it decided to close, the peer's CLOSE arrived, the socket is gone) and
reads the answer.  The wire-level state (HELLO/WELCOME, pending calls) is the
core's (L{twisted_hub._core.connection.Connection}); this is the adapter's.
"""

from __future__ import annotations

import enum

from .errors import DisconnectKind, DisconnectReason, kind_for_close
from .wire import CloseCode, ProtocolError, TooManyMessagesError

__all__ = ["TEXT_FRAME_CLOSE", "Lifecycle", "SessionState", "close_for_frame_error", "ended_reason"]

#: the close code RFC 6455 reserves for "closed without a close frame" (never sent)
_ABNORMAL = 1006


class SessionState(enum.Enum):
    """Where an adapter's connection stands."""

    #: the transport is up; the WebSocket or hub handshake is not done
    CONNECTING = "connecting"
    #: the hub handshake is done (WELCOME sent or received)
    OPEN = "open"
    #: this side decided to close, or the peer's CLOSE arrived
    CLOSING = "closing"
    #: the transport is gone; L{Lifecycle.ended} says why
    CLOSED = "closed"


class Lifecycle:
    """
    The state of one connection as its adapter sees it, and the reason it
    ends, decided once.

    The rule, for both roles: the first decision this side makes stands (a
    timeout, a kick, a protocol error, a normal close); a CLOSE message from
    the peer is the reason unless this side then decides otherwise; what
    the closing handshake shows (L{ended_reason}) fills in when neither
    decided.
    """

    def __init__(self) -> None:
        self.state = SessionState.CONNECTING
        #: why this connection is closing, once someone decided
        self.decided: DisconnectReason | None = None
        #: why it ended, once it has (None while it lives)
        self.ended: DisconnectReason | None = None
        #: this side decided to close (or the connection is gone): send
        #: nothing more of our own (a plain attribute: read on every send)
        self.closing_locally = False

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def opened(self) -> None:
        """The handshake is done."""
        if self.state is SessionState.CONNECTING:
            self.state = SessionState.OPEN

    def close_locally(self, kind: DisconnectKind, code: int | None, message: str) -> bool:
        """
        This side decides to close.  False (and nothing changes) when it
        already decided or the connection is gone: the caller then sends
        nothing, so the first decision is the one the peer hears.
        """
        if self.closing_locally:
            return False
        self.decided = DisconnectReason(kind, code, message, True)
        self.state = SessionState.CLOSING
        self.closing_locally = True
        return True

    def peer_closing(self, code: int, message: str) -> None:
        """The peer's CLOSE message: its reason stands unless this side decides otherwise."""
        if self.state is SessionState.CLOSED or self.decided is not None:
            return
        self.decided = DisconnectReason(kind_for_close(code, False), code, message)
        self.state = SessionState.CLOSING

    def finish(self, observed: DisconnectReason) -> DisconnectReason:
        """
        The transport is gone.  The reason is the decided one, else
        C{observed} (what the closing handshake showed, see L{ended_reason}).
        Idempotent: a second call returns the first answer.
        """
        if self.ended is None:
            self.state = SessionState.CLOSED
            self.closing_locally = True
            self.ended = self.decided if self.decided is not None else observed
        return self.ended

    def finish_handshake(self, text: str) -> DisconnectReason:
        """
        The transport is gone before the hub handshake was done: the reason
        is always a handshake failure (what reconnecting clients retry), with
        the code, words and side of a decision taken meanwhile (an abandoned
        handshake, a protocol error), else C{text}.  Idempotent, as L{finish}.
        """
        if self.ended is not None:
            return self.ended
        decided = self.decided
        if decided is None:
            self.decided = DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, None, text)
        else:
            self.decided = DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, decided.code, decided.message, decided.locally)
        return self.finish(self.decided)


def ended_reason(
    sent_code: int | None, sent_reason: str, received_code: int | None, received_reason: str, lost: str,
) -> DisconnectReason:
    """
    Why a connection ended when neither side decided at the hub level: the
    close code this side's WebSocket layer sent on its own (1009, bad
    framing), else the peer's close frame, else a lost connection.
    """
    if sent_code is not None:
        return DisconnectReason(kind_for_close(sent_code, True), sent_code, sent_reason, True)
    if received_code is not None and received_code != _ABNORMAL:
        return DisconnectReason(kind_for_close(received_code, False), received_code, received_reason)
    return DisconnectReason(DisconnectKind.CONNECTION_LOST, None, lost)


#: the close code and reason for a text frame (the hub protocol is binary only)
TEXT_FRAME_CLOSE = (CloseCode.UNSUPPORTED_DATA, "text frames are not supported")


def close_for_frame_error(error: Exception) -> tuple[int, str]:
    """
    The close code and reason for a frame the core refused (docs/protocol.md
    §6): too many messages in one frame is a policy violation (1008), any
    other protocol error 4002, and a bug of ours an internal error (1011).
    """
    if isinstance(error, TooManyMessagesError):
        return CloseCode.POLICY_VIOLATION, str(error)[:100]
    if isinstance(error, ProtocolError):
        return CloseCode.PROTOCOL_ERROR, str(error)[:100]
    return CloseCode.INTERNAL_ERROR, "internal error"
