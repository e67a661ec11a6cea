"""
The server awaiting client methods (client results), without I/O:
L{ClientResults}.

A hub method asks a client for a value (L{ConnectionContext.invoke}); the
request leaves as a CLIENT_INVOKE, and one of three things settles it: the
client's answer, the timeout, or the connection's end (then the client may
have run it).  The adapter hands in an opaque token for each request (the
Twisted adapter: a Deferred) and is told through L{ResultIO} how each one
settled; the timeouts run on its timers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .connection import ServerConnection
from .errors import CallTimeoutError, ConnectionClosedError, DisconnectReason, HubError
from .wire import Error

__all__ = ["ClientResults", "PendingResult", "ResultIO"]

TokenT = TypeVar("TokenT")
TokenT_contra = TypeVar("TokenT_contra", contravariant=True)


class ResultIO(Protocol[TokenT_contra]):
    """What L{ClientResults} asks of its adapter: a timer, and settling a token."""

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        """Call C{function} in C{delay} seconds; return what cancels that (harmless once it ran)."""

    def client_result(self, token: TokenT_contra, value: Any) -> None:
        """The request C{token} stands for got the client's value."""

    def client_failed(self, token: TokenT_contra, error: Exception) -> None:
        """The request C{token} stands for failed with C{error}."""


class PendingResult(Generic[TokenT]):
    """One request awaited: the adapter's token and what stops its timeout."""

    __slots__ = ("cancel_timeout", "token")

    def __init__(self, token: TokenT) -> None:
        self.token = token
        self.cancel_timeout: Callable[[], object] | None = None

    def stop(self) -> None:
        cancel, self.cancel_timeout = self.cancel_timeout, None
        if cancel is not None:
            cancel()


class ClientResults(Generic[TokenT]):
    """
    One connection's client-result requests.  L{start} sends one and arms
    its timeout; L{succeeded}/L{failed} settle it with the client's answer
    (the core's C{CallSucceeded}/C{CallFailed} events); L{forget} drops it
    (the adapter's waiter was cancelled); L{connection_closed} fails the rest.
    """

    __slots__ = ("_core", "_io", "default_timeout")

    def __init__(
        self, core: ServerConnection[PendingResult[TokenT]], io: ResultIO[TokenT], default_timeout: float,
    ) -> None:
        self._core = core
        self._io = io
        self.default_timeout = default_timeout

    def start(self, token: TokenT, method: str, args: list[Any], kwargs: dict[str, Any] | None, timeout: float | None) -> int:
        """Queue the request for C{method}; return its call id.  C{timeout} None: the server's default."""
        pending = PendingResult(token)
        call_id = self._core.invoke_client(pending, method, args, kwargs)
        limit = self.default_timeout if timeout is None else timeout
        pending.cancel_timeout = self._io.call_later(limit, lambda: self._timed_out(call_id, method, limit))
        return call_id

    def _timed_out(self, call_id: int, method: str, limit: float) -> None:
        pending = self._core.forget_call(call_id)
        if pending is None:
            return
        pending.cancel_timeout = None
        self._io.client_failed(pending.token, CallTimeoutError(f"client did not answer {method!r} within {limit}s"))

    def forget(self, call_id: int) -> None:
        """Stop waiting for C{call_id} (a late answer is then ignored)."""
        pending = self._core.forget_call(call_id)
        if pending is not None:
            pending.stop()

    def succeeded(self, pending: PendingResult[TokenT], value: Any) -> None:
        pending.stop()
        self._io.client_result(pending.token, value)

    def failed(self, pending: PendingResult[TokenT], error: Error) -> None:
        pending.stop()
        self._io.client_failed(pending.token, HubError(error.code, error.message, error.detail))

    def connection_closed(self, pending: list[PendingResult[TokenT]], reason: DisconnectReason) -> None:
        """The connection ended with these requests unanswered: they were sent, the client may have run them."""
        for each in pending:
            each.stop()
            self._io.client_failed(each.token, ConnectionClosedError(reason, may_have_run=True))
