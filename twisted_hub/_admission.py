"""
Whether a new connection becomes a hub connection: the decisions made
before the WebSocket opens, whatever carries it.

- L{HandshakeWatch}: the connection's place in its server's
  L{ConnectionLimits} (counted unless a L{ConnectionGuard} counted it at
  accept) and its handshake deadline;
- L{check_request}: the upgrade request's C{Host}, subprotocol, C{Origin}
  and path (which hub);
- L{admit}: the server's authenticator (C{_auth.py}), then the hub's
  C{on_connecting} hook (L{run_on_connecting}); either may refuse, at once
  or later (a Deferred or an C{async def}).

Each answers with a L{Refusal} (an HTTP status and reason) or lets the
connection through; the adapter turns a refusal into its framework's answer
(autobahn's C{ConnectionDeny}).  No I/O; time only through the limits' clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._auth import User, refusal_of
from ._hub import Hub, RefuseConnection
from ._limits import ConnectionLimits
from ._logging import HUB_LOG_OBSERVER
from ._ratelimit import LogRateLimiter
from ._wire import SUBPROTOCOL

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

__all__ = ["HandshakeWatch", "Refusal", "RequestRules", "admit", "check_request", "run_on_connecting"]

_log = Logger(observer=HUB_LOG_OBSERVER)
#: at most one line a second about refused authentications (with a count of the others)
_refusal_log = LogRateLimiter()

RouteT = TypeVar("RouteT", covariant=True)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The opening handshake is refused with this HTTP status and reason."""

    status: int
    reason: str


#: the refusal of a connection over a connection cap that still reached the handshake
OVER_CAPACITY = Refusal(503, "too many connections")


class RequestRules(Protocol[RouteT]):
    """What L{check_request} asks of the server (L{HubServerFactory} answers)."""

    def host_allowed(self, host_header: str | None) -> bool: ...

    def origin_allowed(self, request: ConnectionRequest) -> bool: ...

    def route(self, path: str, mount: str | None = None) -> RouteT | None: ...


def check_request(rules: RequestRules[RouteT], request: ConnectionRequest, mount: str | None = None) -> RouteT | Refusal:
    """
    The checks of an upgrade request, in order: its C{Host} (400), our
    subprotocol offered (400), its C{Origin} (403), a hub at its path (404;
    C{mount} is where the endpoint is mounted, None on a port of its own).
    Return what the path routes to, or the refusal.
    """
    host = request.headers.get("host")
    if not rules.host_allowed(host):
        return Refusal(400, f"host {(host or '')[:100]!r} is not allowed")
    if SUBPROTOCOL not in request.protocols:
        return Refusal(400, f"no supported subprotocol offered; this server speaks {SUBPROTOCOL}")
    if not rules.origin_allowed(request):
        return Refusal(403, f"origin {request.origin!r} is not allowed")
    routed = rules.route(request.path, mount)
    if routed is None:
        name = request.path.rstrip("/").rsplit("/", 1)[-1]
        return Refusal(404, f"no hub named {name[:100]!r} at path {request.path[:200]!r}")
    return routed


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
    authenticator running, L{twisted_hub._auth.run_authenticator}; None:
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


class HandshakeWatch:
    """
    One connection from accept to the end of its opening handshake: counted
    in the server's L{ConnectionLimits} (unless a L{ConnectionGuard}
    counted it already), and aborted when it is not open within the
    handshake timeout of being accepted.

    @param still_connecting: asked when the deadline passes: is the
        handshake still not done?
    @param abort: end the connection (the deadline passed).
    """

    def __init__(self, limits: ConnectionLimits, still_connecting: Callable[[], bool], abort: Callable[[], None]) -> None:
        self.limits = limits
        self._still_connecting = still_connecting
        self._abort = abort
        self._counted: IAddress | None = None
        self._deadline: IDelayedCall | None = None
        self._address: IAddress | None = None
        #: the connection was over a cap: it must be closed, and refused if its request is read
        self.refused = False

    def accepted(self, address: IAddress, counted_by_guard: bool) -> bool:
        """
        The connection was accepted from C{address}.  False when it is over
        a cap (nothing counted, no deadline): close it at once.
        """
        self._address = address
        if not counted_by_guard:
            if not self.limits.admit(address):
                self.refused = True
                return False
            self._counted = address
        self._deadline = self.limits.clock.callLater(self.limits.handshake_timeout, self._deadline_passed)
        return True

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self._still_connecting():
            return
        assert self._address is not None
        self.limits.handshake_timed_out(self._address)
        self._abort()

    def opened(self) -> None:
        """The handshake is done: no deadline any more."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def lost(self) -> None:
        """The connection is gone: stop its deadline and stop counting it."""
        self.opened()
        if self._counted is not None:
            self.limits.release(self._counted)
            self._counted = None
