"""
L{LossPacer}: a server's lost connections are torn down at most
C{per_turn} per reactor turn.

When a proxy or a network path in front of a server fails, epoll reports
every connection through it lost at once and Twisted runs each one's
C{connectionLost} in the same turn, before it reads anything else.  The
session's teardown (leaving groups and the heartbeat wheel, metrics, the
log line, C{on_disconnected}) costs more than closing the socket, so a
storm of 19,000 resets held a server's loop for seconds (docs/performance.md,
"A reconnect storm against one process"): the connections that stayed saw
their heartbeat answers late.  Here the first C{per_turn} losses of a turn
are torn down at once, as always; the rest wait in order and are torn down
C{per_turn} at a time at the start of the following turns, between which
the reactor reads and writes the live connections.

A connection waiting here is already closed: its socket is gone, what is
written to it is dropped, and it no longer counts against the connection
caps (its C{ConnectionGuard} released it); only its session's teardown
waits, a few milliseconds per turn of C{per_turn} losses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from .._core.base_error import HubArgumentError

__all__ = ["DEFAULT_LOSSES_PER_TURN", "LossPacer"]

#: how many lost connections one reactor turn tears down (about 30 ms of
#: teardown at the ~120 µs each profiled in docs/performance.md)
DEFAULT_LOSSES_PER_TURN = 256


class LossPacer:
    """Run teardowns now, or at most C{per_turn} in each of the next turns."""

    __slots__ = ("_clock", "per_turn", "_this_turn", "_waiting", "_next_turn")

    def __init__(self, clock: IReactorTime, per_turn: int = DEFAULT_LOSSES_PER_TURN) -> None:
        if per_turn < 1:
            raise HubArgumentError(f"per_turn must be at least 1, got {per_turn!r}")
        self._clock = clock
        self.per_turn = per_turn
        #: teardowns run in the current turn
        self._this_turn = 0
        self._waiting: deque[Callable[[], None]] = deque()
        self._next_turn: object | None = None

    def __len__(self) -> int:
        """How many teardowns wait for a later turn."""
        return len(self._waiting)

    def lost(self, teardown: Callable[[], None]) -> None:
        """A connection was lost: run C{teardown} now if this turn has room, else in a later turn."""
        if self._next_turn is None:
            self._next_turn = self._clock.callLater(0, self._turn)
        if self._waiting or self._this_turn >= self.per_turn:
            self._waiting.append(teardown)
            return
        self._this_turn += 1
        teardown()

    def _turn(self) -> None:
        """A new reactor turn: run up to C{per_turn} waiting teardowns, and come back if more wait."""
        self._next_turn = None
        self._this_turn = 0
        waiting = self._waiting
        if not waiting:
            return
        self._next_turn = self._clock.callLater(0, self._turn)
        while waiting and self._this_turn < self.per_turn:
            self._this_turn += 1
            waiting.popleft()()
