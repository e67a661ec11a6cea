"""
A connection's user and its token's lifetime, without I/O: L{TokenLifetime}
(docs/auth.md).

The user an authenticator accepted may carry an expiry; when it passes,
the connection is closed with 4005 unless the client handed over a fresh
token meanwhile.  A fresh token is checked by the same authenticator (run
by the adapter, L{TokenIO.check_fresh_token}); the same user's answer
replaces the old and moves the expiry, another user's is refused, and an
answer to an older token than the newest applied changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import DisconnectKind
from .wire import TOKEN_EXPIRED_REASON, CloseCode, ErrorCode, Token

if TYPE_CHECKING:
    from .server_session import ServerSession
    from .user import User

__all__ = ["TOKEN_ERRORS", "TokenIO", "TokenLifetime", "UserSlot"]

#: the error code a refused fresh token is answered with, by the refusal's HTTP status
TOKEN_ERRORS = {
    401: ErrorCode.UNAUTHENTICATED, 403: ErrorCode.FORBIDDEN, 503: ErrorCode.TIMEOUT, 500: ErrorCode.INTERNAL,
}


class UserSlot(Protocol):
    """Where a connection's user is kept for its hub (C{hub.connection}, a L{ConnectionContext})."""

    user: User | None


class TokenIO(Protocol):
    """What L{TokenLifetime} asks of its adapter."""

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]: ...

    def check_fresh_token(self, token: str, sequence: int, previous: User | None) -> None:
        """
        Run the server's authenticator on a fresh token; answer with
        L{TokenLifetime.accepted} or L{TokenLifetime.refused} (now or later).
        """


class TokenLifetime:
    """The token side of one L{ServerSession}: its expiry timer and fresh tokens."""

    __slots__ = ("_session", "_io", "slot", "_cancel_expiry", "_sequence")

    def __init__(self, session: ServerSession[Any], io: TokenIO) -> None:
        self._session = session
        self._io = io
        #: where the user is kept (set by the adapter once the hub exists)
        self.slot: UserSlot | None = None
        #: stops the expiry timer
        self._cancel_expiry: Callable[[], object] | None = None
        #: the newest fresh token applied (answers to older ones apply nothing)
        self._sequence = 0

    @property
    def user(self) -> User | None:
        return self.slot.user if self.slot is not None else None

    def arm_expiry(self, now: float) -> None:
        """Close the connection when its user's token expires (a fresh token moves this)."""
        self.stop()
        user = self.user
        if user is None or user.expires_at is None:
            return
        self._cancel_expiry = self._io.call_later(max(user.expires_at - now, 0.0), self._expired)

    def stop(self) -> None:
        cancel, self._cancel_expiry = self._cancel_expiry, None
        if cancel is not None:
            cancel()

    def _expired(self) -> None:
        self._cancel_expiry = None
        session = self._session
        session.log.info("{id}: its access token expired and no fresh one came; closing", id=session.connection_id)
        session.close_with(CloseCode.TOKEN_EXPIRED, TOKEN_EXPIRED_REASON, DisconnectKind.TOKEN_EXPIRED)

    def fresh_token(self, message: Token) -> None:
        """The client handed over a fresh token: have it authenticated."""
        self._io.check_fresh_token(message.token, message.sequence, self.user)

    def accepted(self, sequence: int, user: User, now: float) -> None:
        """The authenticator accepted fresh token C{sequence} as C{user}."""
        if self._session.lifecycle.closing_locally:
            return
        previous = self.user
        if previous is not None and user.id != previous.id:
            self._answer(sequence, ErrorCode.FORBIDDEN, "the fresh token is for another user", now)
            return
        if sequence > self._sequence and self.slot is not None:
            self._sequence = sequence
            self.slot.user = user
            self.arm_expiry(now)
        self._answer(sequence, None, "", now)

    def refused(self, sequence: int, status: int, reason: str, now: float) -> None:
        """The authenticator refused fresh token C{sequence} (C{status}: its HTTP status)."""
        if self._session.lifecycle.closing_locally:
            return
        code = TOKEN_ERRORS.get(status, ErrorCode.UNAUTHENTICATED)
        self._session.log.info(
            "{id}: fresh token refused ({code}: {reason})", id=self._session.connection_id, code=code, reason=reason,
        )
        self._answer(sequence, code, reason, now)

    def _answer(self, sequence: int, error: str | None, message: str, now: float) -> None:
        user = self.user
        session = self._session
        session.core.token_result(sequence, user.expires_in(now) if user is not None else None, error, message)
        if not session.out.holding:
            session.out.flush()
