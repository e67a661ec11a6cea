"""
The server's calls on a client's receiver object: L{ClientReceiver}, one
unit of a L{twisted_hub._client_session.ClientSession}.  Which method a call
may reach is L{twisted_hub._receivers}' rule; what its outcome is answered
with (client results) and how its failures are logged is decided here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ._client_common import SessionParts
from ._errors import HubError
from ._ratelimit import LogRateLimiter, peer_text
from ._receivers import find_receiver_method
from ._wire import ClientInvoke, ErrorCode, ReceiverCall

__all__ = ["ClientReceiver"]


def _ignore(result: object) -> None:
    """A receiver method's result: the server wants none."""


class ClientReceiver:
    """
    The server's calls on one client connection's receiver object: receiver
    calls (no answer) and client-result requests (answered with the method's
    value or error), one unit of a L{twisted_hub._client_session.ClientSession}.
    A method may be synchronous or return an awaitable, which the adapter
    awaits (L{ClientIO.await_result}).
    """

    def __init__(self, session: SessionParts) -> None:
        self.session = session
        self.receiver: object | None = None
        #: the names the server may call (the receiver interface's); None: any public one
        self.allowed: frozenset[str] | None = None
        #: one log line per second about the server's mistakes (unknown receiver methods)
        self._peer_log = LogRateLimiter()

    def method(self, name: str) -> Callable[..., Any] | None:
        """
        The receiver method the server may call by this name: a public
        callable of the receiver object and, when a receiver interface is
        given, one that the interface declares.
        """
        return find_receiver_method(self.receiver, name, self.allowed)

    def call(self, call: ReceiverCall, now: float) -> None:
        """The server called a receiver method (no answer wanted), at C{now}."""
        log = self.session.log
        function = self.method(call.method)
        if function is None:
            suppressed = self._peer_log.allow(now)
            if suppressed is not None:
                allowed = self.allowed
                declared = allowed is None or call.method.startswith("_") or call.method in allowed
                log.warn(
                    "the server called receiver method {method}, which the receiver {lacks}"
                    + (" ({suppressed} similar lines suppressed)" if suppressed else ""),
                    method=peer_text(call.method), lacks="lacks" if declared else "interface does not declare",
                    suppressed=suppressed,
                )
            return
        try:
            result = function(*call.args, **(call.kwargs or {}))
        except Exception:
            log.failure("receiver method {method} raised", method=call.method)
            return
        if inspect.isawaitable(result):
            method = call.method
            self.session.io.await_result(
                result, _ignore, lambda error: log.failure("receiver method {method} failed", error, method=method)
            )

    def invoke(self, call: ClientInvoke) -> None:
        """The server asked for a client result: answer with the method's value or error."""
        call_id = call.call_id
        function = self.method(call.method)
        if function is None:
            self.session.core.reply_error(call_id, ErrorCode.UNKNOWN_METHOD, f"the client has no method {peer_text(call.method)}")
            return
        try:
            result = function(*call.args, **(call.kwargs or {}))
        except Exception as e:
            self._failed(call_id, call.method, e)
            return
        if inspect.isawaitable(result):
            self.session.io.await_result(
                result, lambda value: self._replied(call_id, value),
                lambda error: self._failed(call_id, call.method, error),
            )
        else:
            self._replied(call_id, result)

    def _failed(self, call_id: int, method: str, error: BaseException) -> None:
        if isinstance(error, HubError):
            self._reply_error(call_id, error.code, error.message, error.detail)
            return
        self.session.log.failure("receiver method {method} raised", error, method=method)
        self._reply_error(call_id, ErrorCode.INTERNAL, "internal error")

    def _replied(self, call_id: int, value: Any) -> None:
        session = self.session
        if session.is_connected:
            session.core.reply(call_id, value)
            session.flush()

    def _reply_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        session = self.session
        if session.is_connected:
            session.core.reply_error(call_id, code, message, detail)
            session.flush()
