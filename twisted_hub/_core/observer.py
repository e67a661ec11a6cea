"""
What the sans-IO server core reports, for metrics and the status page:
L{SessionObserver} (one connection's life: connects, disconnects by kind,
frames, heartbeats, slow consumers) and L{CallObserver} (one hub method's
call outcomes).  The core calls them and imports no metrics code; the
operations layer implements them (L{twisted_hub._metrics.prometheus}, the status
page's L{twisted_hub._core.stats}).  L{NO_CALLS} observes nothing (metrics off).
"""

from __future__ import annotations

from typing import Protocol

from .errors import DisconnectReason

__all__ = [
    "CALL_OUTCOMES", "ERROR", "FORBIDDEN", "INTERNAL", "NO_CALLS", "OK", "RATE_LIMITED", "REFUSED", "TIMED_OUT",
    "CallObserver", "SessionObserver", "error_outcome",
]

#: Call outcomes, by index in L{twisted_hub._core.stats.MethodMetrics.counts}: answered with a
#: result; with a L{HubError} (or argument error, unknown method); crashed
#: (internal error); refused by the pending limits; refused with the
#: C{rate-limited} code (the C{RateLimit} filter); ended with the C{timeout}
#: code (the C{CallTimeout} filter, or a client result that came too late);
#: refused with the C{forbidden} code (an authorization policy, docs/auth.md).
CALL_OUTCOMES = ("ok", "error", "internal", "refused", "rate-limited", "timeout", "forbidden")
OK, ERROR, INTERNAL, REFUSED, RATE_LIMITED, TIMED_OUT, FORBIDDEN = range(7)
_OUTCOME_OF_CODE = {"rate-limited": RATE_LIMITED, "timeout": TIMED_OUT, "forbidden": FORBIDDEN}


def error_outcome(code: str) -> int:
    """The outcome of a call answered with the error C{code}."""
    return _OUTCOME_OF_CODE.get(code, ERROR)


class SessionObserver(Protocol):
    """What a L{twisted_hub._core.server_session.ServerSession} reports."""

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
    """What a L{twisted_hub._twisted.dispatch.CallDispatcher} reports about its hub's calls."""

    def refused(self, method: str) -> None:
        """A call of C{method} was refused (too many pending): counted, not timed."""

    def ended(self, method: str, outcome: int, seconds: float) -> None:
        """A call of C{method} ended with C{outcome} (L{OK} ... L{FORBIDDEN}) after C{seconds}."""


class ClientObserver(Protocol):
    """What a client's core reports (C{HubClientOptions(metrics=...)}: L{twisted_hub._metrics.prometheus.ClientMetrics})."""

    def answered(self, round_trip: float, offset: float, error: float) -> None:
        """Our heartbeat was answered: its round trip, the clock offset and its error bound."""

    def heartbeat_timed_out(self) -> None:
        """Our heartbeat timed out: the server is taken for gone."""

    def timeout_avoided(self) -> None:
        """A heartbeat deadline passed while the data between us kept moving (progress counts as life)."""

    def disconnected(self, kind: str) -> None:
        """The connection ended, with this L{DisconnectKind} value."""

    def reconnected(self) -> None:
        """A reconnecting client opened another connection after its first."""


class _NoCalls:
    """A L{CallObserver} that observes nothing."""

    def refused(self, method: str) -> None:
        pass

    def ended(self, method: str, outcome: int, seconds: float) -> None:
        pass


NO_CALLS: CallObserver = _NoCalls()
