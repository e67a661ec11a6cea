"""
When a client asks its token provider for a fresh token, and what the
server's answer to one means (docs/auth.md, "Token expiry and refresh"):
L{TokenRefresh}, one unit of a L{twisted_hub._client_session.ClientSession}.

Sans-IO: the timer and the clock are the adapter's (L{ClientIO.call_later},
L{ClientIO.seconds}); a provider's awaitable is awaited by the adapter
(L{ClientIO.await_result}).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ._client_common import SessionParts
from ._wire import TokenResult

__all__ = ["TokenRefresh", "refresh_delay"]


def refresh_delay(expires_in: float) -> float:
    """
    When a client asks its provider for a fresh token, seconds from now,
    for a token that expires in C{expires_in}: a fifth of its lifetime
    before it expires, but never more than a minute before.
    """
    return max(expires_in - min(60.0, expires_in * 0.2), 0.0)


class TokenRefresh:
    """
    One connection's token lifetime: when the current token expires, the
    timer of the next refresh, and how many fresh tokens the server took.
    """

    def __init__(self, session: SessionParts) -> None:
        self.session = session
        #: cancels the timer of the next token refresh
        self._cancel: Callable[[], object] | None = None
        #: when the server said the connection's token expires (our clock); None: never / unknown
        self.expires_at: float | None = None
        #: fresh tokens the server accepted on this connection
        self.refreshed = 0

    def welcomed(self, expires_in: float | None, now: float) -> None:
        """The server's WELCOME said the connection's token expires in C{expires_in} seconds (None: never)."""
        if expires_in is not None:
            self.expires_at = now + expires_in
            self._schedule(refresh_delay(expires_in))

    def _schedule(self, delay: float) -> None:
        """Ask the token provider again in C{delay} seconds (if it can refresh and the server takes tokens)."""
        self.stop()
        session = self.session
        if not callable(session.options.access_token) or not session.core.server_takes_tokens:
            return
        self._cancel = session.io.call_later(delay, self.refresh)

    def stop(self) -> None:
        """Cancel the next refresh (the connection ended)."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def refresh(self) -> None:
        """
        Get a fresh token from the provider now and hand it to the server
        (called by the refresh timer; callable to refresh early).
        """
        self._cancel = None
        session = self.session
        provider = session.options.access_token
        if not session.is_connected or not callable(provider) or not session.core.server_takes_tokens:
            return
        try:
            token = provider()
        except Exception as e:
            self._failed(e)
            return
        if inspect.isawaitable(token):
            session.io.await_result(token, self._send, self._failed)
        else:
            self._send(token)

    def _send(self, token: object) -> None:
        session = self.session
        if not session.is_connected:
            return
        if not isinstance(token, str) or not token:
            session.log.warn("the access token provider gave no token ({token!r}); the connection keeps its old one",
                             token=type(token).__name__)
            self._retry()
            return
        session.core.send_token(token)
        session.flush()

    def _failed(self, error: BaseException) -> None:
        self.session.log.failure("the access token provider failed; the connection keeps its old token", error)
        self._retry()

    def answered(self, answer: TokenResult, now: float) -> None:
        """The server's answer to a fresh token, received at C{now}."""
        log = self.session.log
        self.expires_at = None if answer.expires_in is None else now + answer.expires_in
        if answer.error is None:
            self.refreshed += 1
            log.debug("fresh token accepted; it expires in {expires_in}s", expires_in=answer.expires_in)
            if answer.expires_in is not None:
                self._schedule(refresh_delay(answer.expires_in))
            else:
                self.stop()
            return
        log.warn("the server refused the fresh token: [{code}] {message}", code=answer.error, message=answer.message)
        self._retry()

    def _retry(self) -> None:
        """Try again in half the time the current token has left (none: give up; the server closes with 4005)."""
        if self.expires_at is None:
            return
        left = self.expires_at - self.session.io.seconds()
        if left > 1.0:
            self._schedule(left / 2)
