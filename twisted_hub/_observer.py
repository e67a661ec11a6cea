"""
What the sans-IO server core reports, for metrics and the status page:
L{SessionObserver} (one connection's life: connects, disconnects by kind,
frames, heartbeats, slow consumers) and L{CallObserver} (one hub method's
call outcomes).  The core calls them and imports no metrics code; the
operations layer implements them (L{twisted_hub._prometheus}, the status
page's L{twisted_hub._stats}).  L{NO_CALLS} observes nothing (metrics off).
"""

from __future__ import annotations

from typing import Protocol

from ._errors import DisconnectReason

__all__ = ["NO_CALLS", "CallObserver", "SessionObserver"]


class SessionObserver(Protocol):
    """What a L{twisted_hub._server_session.ServerSession} reports."""

    def connected(self) -> None:
        """A connection opened (its WebSocket is open, the client welcomed)."""

    def disconnected(self, now: float, connection_id: str, reason: DisconnectReason, text: str) -> None:
        """An opened connection ended for C{reason} (C{text}: its message, bounded for display)."""

    def slow_consumer_closed(self) -> None:
        """A connection was dropped because its client reads too slowly."""

    def frame_received(self, messages: int) -> None:
        """A frame of C{messages} hub messages arrived."""

    def heartbeat_answered(self, latency: float) -> None:
        """A heartbeat was answered after C{latency} seconds."""

    def heartbeat_timed_out(self) -> None:
        """A connection's heartbeat timed out (it is being closed)."""


class CallObserver(Protocol):
    """What a L{twisted_hub._dispatch.CallDispatcher} reports about its hub's calls."""

    def refused(self, method: str) -> None:
        """A call of C{method} was refused (too many pending): counted, not timed."""

    def ended(self, method: str, outcome: int, seconds: float) -> None:
        """A call of C{method} ended with C{outcome} (L{twisted_hub._stats.OK} ...) after C{seconds}."""


class _NoCalls:
    """A L{CallObserver} that observes nothing."""

    def refused(self, method: str) -> None:
        pass

    def ended(self, method: str, outcome: int, seconds: float) -> None:
        pass


NO_CALLS: CallObserver = _NoCalls()
