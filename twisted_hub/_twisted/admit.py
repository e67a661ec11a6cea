"""
Admitting a routed connection on Twisted: the server's authenticator
(C{_auth.py}), then the hub's C{on_connecting} hook; either may refuse, at
once or later (a Deferred or an C{async def}).  Both answer with a
L{Refusal<twisted_hub._core.admission.Refusal>} or let the connection through;
the checks that need no waiting are L{twisted_hub._core.admission}'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._core.admission import Refusal
from .._core.ratelimit import LogRateLimiter
from .._hubs.auth import User, refusal_of
from .._hubs.hub import Hub, RefuseConnection
from .._support.logging import HUB_LOG_OBSERVER

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

__all__ = ["admit", "run_on_connecting"]

#: the lines of admission, in the namespace they always had
_log = Logger(namespace="twisted_hub._core.admission", observer=HUB_LOG_OBSERVER)
#: at most one line a second about refused authentications (with a count of the others)
_refusal_log = LogRateLimiter()


def _refusal_of(failure: Failure, hub_name: str) -> Refusal:
    if isinstance(failure.value, RefuseConnection):
        return Refusal(failure.value.status, failure.value.reason)
    _log.failure("on_connecting of {hub} failed", failure, hub=hub_name)
    return Refusal(500, "internal server error")


def run_on_connecting(hub: Hub, request: ConnectionRequest) -> Refusal | None | Deferred[Refusal | None]:
    """
    Run C{hub.on_connecting(request)}.  None: accepted; a L{Refusal}: it
    raised L{RefuseConnection} (its status), or anything else (500, logged).
    When the hook answered at once (sync, or an C{async def} that never
    waited) the answer is returned at once; otherwise a Deferred fires with
    it (an awaited refusal refuses too).
    """
    hub_name = type(hub).hub_name
    # maybeDeferred runs the hook and turns a coroutine into a Deferred.
    decided: Deferred[Refusal | None] = maybeDeferred(hub.on_connecting, request).addCallbacks(
        lambda _: None, _refusal_of, errbackArgs=(hub_name,)
    )
    if not decided.called:
        return decided
    outcome: list[Refusal | None] = []
    decided.addCallback(outcome.append)
    return outcome[0]


def admit(
    hub: Hub,
    request: ConnectionRequest,
    authentication: Deferred[User] | None,
    authenticated: Callable[[User], object],
    now: float,
) -> Refusal | None | Deferred[Refusal | None]:
    """
    Admit a routed connection: wait for C{authentication} (the server's
    authenticator running, L{twisted_hub._hubs.auth.run_authenticator}; None:
    the server has none), hand its L{User} to C{authenticated}, then run
    the hub's C{on_connecting}.  A refusal of either refuses: the
    authenticator's own status (401, 403), 503 when it took too long, 500
    when it failed otherwise.  As L{run_on_connecting}: at once when both
    answered at once, else a Deferred.
    """
    if authentication is None:
        return run_on_connecting(hub, request)
    hub_name = type(hub).hub_name

    def accepted(user: User) -> Refusal | None | Deferred[Refusal | None]:
        authenticated(user)
        return run_on_connecting(hub, request)

    def refused(failure: Failure) -> Refusal | None:
        if failure.check(CancelledError):
            # The connection went away while the authenticator ran (its
            # session cancelled it): the refusal goes nowhere, unlogged.
            return Refusal(400, "the connection closed during authentication")
        refusal = refusal_of(failure, f"authenticating a connection to {hub_name} from {request.peer}")
        suppressed = _refusal_log.allow(now)
        if suppressed is not None:
            _log.info(
                "connection to {hub} from {peer} refused: {status} {reason}"
                + (" ({suppressed} more refused since the last line)" if suppressed else ""),
                hub=hub_name, peer=request.peer, status=refusal.status, reason=refusal.reason, suppressed=suppressed,
            )
        return Refusal(refusal.status, refusal.reason)

    decided: Deferred[Refusal | None] = authentication.addCallbacks(accepted, refused)
    outcome: list[Refusal | None] = []

    def settled(result: Refusal | None) -> Refusal | None:
        outcome.append(result)
        return result

    decided.addCallback(settled)
    if outcome:
        return outcome[0]
    return decided
