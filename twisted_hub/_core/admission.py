"""
Whether a new connection becomes a hub connection: the decisions made
before the WebSocket opens, whatever carries it.

- L{HandshakeWatch}: the connection's place in its server's
  L{ConnectionLimits} (counted unless a L{ConnectionGuard} counted it at
  accept) and its handshake deadline;
- L{check_request}: the upgrade request's C{Host}, subprotocol, C{Origin}
  and path (which hub);
Each answers with a L{Refusal} (an HTTP status and reason) or lets the
connection through; the adapter turns a refusal into its framework's answer
(autobahn's C{ConnectionDeny}).  No I/O: the handshake deadline is a timer
the adapter hands in.  Running the server's authenticator and the hub's
C{on_connecting} hook, which may answer later (a Deferred or an C{async
def}), is L{twisted_hub._twisted.admit}'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .connection_limits import ConnectionCounts
from .wire import SUBPROTOCOL

__all__ = ["OVER_CAPACITY", "HandshakeWatch", "Refusal", "RequestRules", "UpgradeRequest", "check_request"]


class UpgradeRequest(Protocol):
    """What the checks read of a WebSocket upgrade request (autobahn's C{ConnectionRequest} has it)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def protocols(self) -> Sequence[str]: ...

    @property
    def origin(self) -> str | None: ...

    @property
    def path(self) -> str: ...

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

    def origin_allowed(self, request: UpgradeRequest) -> bool: ...

    def route(self, path: str, mount: str | None = None) -> RouteT | None: ...


def check_request(rules: RequestRules[RouteT], request: UpgradeRequest, mount: str | None = None) -> RouteT | Refusal:
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


class HandshakeWatch:
    """
    One connection from accept to the end of its opening handshake: counted
    in the server's L{ConnectionLimits} (unless a L{ConnectionGuard}
    counted it already), and aborted when it is not open within the
    handshake timeout of being accepted.

    @param still_connecting: asked when the deadline passes: is the
        handshake still not done?
    @param abort: end the connection (the deadline passed).
    @param call_later: the adapter's timer: call a function in so many
        seconds, return what cancels that.
    """

    __slots__ = ("limits", "_still_connecting", "_abort", "_call_later", "_counted", "_cancel_deadline", "_address",
                 "refused")

    def __init__(
        self,
        limits: ConnectionCounts,
        still_connecting: Callable[[], bool],
        abort: Callable[[], None],
        call_later: Callable[[float, Callable[[], None]], Callable[[], object]],
    ) -> None:
        self.limits = limits
        self._still_connecting: Callable[[], bool] | None = still_connecting
        self._abort: Callable[[], None] | None = abort
        self._call_later: Callable[[float, Callable[[], None]], Callable[[], object]] | None = call_later
        self._counted: object | None = None
        self._cancel_deadline: Callable[[], object] | None = None
        self._address: object | None = None
        #: the connection was over a cap: it must be closed, and refused if its request is read
        self.refused = False

    def accepted(self, address: object, counted_by_guard: bool) -> bool:
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
        assert self._call_later is not None, "accepted after the handshake ended"
        self._cancel_deadline = self._call_later(self.limits.handshake_timeout, self._deadline_passed)
        return True

    def _deadline_passed(self) -> None:
        self._cancel_deadline = None
        still_connecting, abort = self._still_connecting, self._abort
        if still_connecting is None or abort is None or not still_connecting():
            return
        assert self._address is not None
        self.limits.handshake_timed_out(self._address)
        abort()

    def opened(self) -> None:
        """
        The handshake is done: no deadline any more.  The callables are let go
        too (an open connection keeps this watch only to be uncounted when it
        ends: its two bound methods and timer partial were 320 bytes).
        """
        cancel, self._cancel_deadline = self._cancel_deadline, None
        if cancel is not None:
            cancel()
        self._still_connecting = self._abort = self._call_later = None

    def lost(self) -> None:
        """The connection is gone: stop its deadline and stop counting it."""
        self.opened()
        if self._counted is not None:
            self.limits.release(self._counted)
            self._counted = None
