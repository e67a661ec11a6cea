"""
The numbers behind the status page and the metrics, in plain Python (no
Prometheus, no Twisted): call outcomes and per-method counts
(L{MethodMetrics}, L{FastHistogram}: an increment and a C{bisect}, no lock),
each hub's traffic totals (L{TrafficTotals}), the last disconnects
(L{RecentDisconnects}) and the heartbeat window of the status page
(L{HeartbeatWindow}).  L{twisted_hub._metrics.prometheus} exports them at scrape
time; C{/status.json} reads them directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from typing import Any

from .errors import DisconnectKind
from .observer import CALL_OUTCOMES

#: The method label of calls to undeclared methods (label values stay bounded).
OTHER_METHOD = "other"

_CALL_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: the counts each connection keeps, summed per hub (L{TrafficTotals}; exported as C{twisted_hub_<key>})
LIVE_COUNTS = (
    "messages_received", "messages_sent", "bytes_received", "bytes_sent", "client_heartbeats_answered",
    "heartbeat_timeouts_avoided",
)


class FastHistogram:
    """
    Bucket counts and a sum in plain numbers (exported by C{_prometheus}, at scrape time):
    C{counts[i]} counts the values in C{(bounds[i-1], bounds[i]]}, the last
    one those above every bound.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class MethodMetrics:
    """One hub method's calls by outcome (C{counts[OK]}...) and their durations."""

    __slots__ = ("counts", "duration")

    def __init__(self) -> None:
        self.counts = [0] * len(CALL_OUTCOMES)
        self.duration = FastHistogram(_CALL_BUCKETS)

    def record(self, outcome: int, seconds: float) -> None:
        """A call ended with C{outcome} after C{seconds}."""
        self.counts[outcome] += 1
        duration = self.duration
        duration.counts[bisect_left(duration.bounds, seconds)] += 1
        duration.sum += seconds


class TrafficTotals:
    """One hub's per-connection counts of its closed connections, plus a sum with the open ones."""

    def __init__(self) -> None:
        self.closed = dict.fromkeys((*LIVE_COUNTS, "calls", "call_errors"), 0)

    @staticmethod
    def of(connection: Any) -> dict[str, int]:
        """The counts of one connection (a L{twisted_hub._core.server_session.ServerSession})."""
        core = connection.core
        dispatcher = connection.dispatcher
        return {
            "calls": dispatcher.calls if dispatcher is not None else 0,
            "call_errors": dispatcher.errors if dispatcher is not None else 0,
            "messages_received": core.messages_received,
            "messages_sent": core.messages_sent,
            "bytes_received": core.bytes_received,
            "bytes_sent": connection.bytes_sent,
            "client_heartbeats_answered": core.client_heartbeats_answered,
            "heartbeat_timeouts_avoided": core.heartbeat.timeouts_avoided,
        }

    def retire(self, connection: Any) -> None:
        """A connection closed: keep its counts."""
        for key, value in self.of(connection).items():
            self.closed[key] += value

    def totals(self, open_connections: Iterable[Any]) -> dict[str, int]:
        result = dict(self.closed)
        for connection in open_connections:
            for key, value in self.of(connection).items():
                result[key] += value
        return result


#: Disconnect kinds that are somebody's decision, not a failure: a close by
#: either side, a page or server going away, a kick by the hub.
EXPECTED_DISCONNECTS = frozenset({DisconnectKind.NORMAL.value, DisconnectKind.GOING_AWAY.value, DisconnectKind.KICKED.value})


class RecentDisconnects:
    """
    The last disconnects (for C{/status.json}): time, hub, connection id,
    reason kind and text.  The abnormal ones (a kind not in
    L{EXPECTED_DISCONNECTS}: timeouts, protocol errors, slow consumers,
    lost connections ...) are also kept apart, so normal closes (one per
    CLI call) do not push them out.
    """

    def __init__(self, size: int = 20) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        self.abnormal: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, at: float, hub: str, connection_id: str, kind: str, code: int | None, reason: str) -> None:
        entry = {"time": at, "hub": hub, "id": connection_id, "kind": kind, "code": code, "reason": reason[:200]}
        self.entries.append(entry)
        if kind not in EXPECTED_DISCONNECTS:
            self.abnormal.append(entry)


class HeartbeatWindow:
    """
    Server heartbeats of the last C{span} seconds, per scheduler tick: sent,
    answered, and the answers' latencies (for the status page's success rate
    and p50/p99).  One list append per answer; the rest happens per tick,
    where a tick's latencies are reduced to at most C{points} evenly spaced
    order statistics (so memory stays bounded with many connections).

    C{sent} and C{answered} count beats when they are sent and answers when
    they arrive, as C{/metrics} does (so the two agree while the window
    holds everything).  The success rate compares, per tick, the beats of
    the scheduler's previous tick with the answers since: a beat counts
    there once it is due an answer.
    """

    def __init__(self, span: float = 60.0, points: int = 64) -> None:
        self.span = span
        self.points = points
        #: (time, beats due an answer, answers to them, latency points, weight
        #: of each point, beats sent now, answers received since the last tick)
        self.ticks: deque[tuple[float, int, int, list[float], float, int, int]] = deque()
        #: latencies of the answers since the last tick (of any scheduler)
        self.latencies: list[float] = []

    def tick(self, now: float, due: int, answered: int, *, sent_now: int) -> None:
        """
        A scheduler tick at C{now}: C{due} beats at its previous tick,
        C{answered} answers since then (the success rate compares them);
        C{sent_now} beats sent at this tick.
        """
        ordered = sorted(self.latencies)
        self.latencies = []
        count = len(ordered)
        if count > self.points:
            step = (count - 1) / (self.points - 1)
            ordered = [ordered[round(i * step)] for i in range(self.points)]
        self.ticks.append((now, due, answered, ordered, count / len(ordered) if ordered else 0.0, sent_now, count))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self.ticks and self.ticks[0][0] < now - self.span:
            self.ticks.popleft()

    def summary(self, now: float) -> dict[str, Any]:
        """
        C{sent}, C{answered}, C{success_rate} (None before any beat is due
        an answer), C{latency_p50}/C{latency_p99} (seconds).
        """
        self._prune(now)
        due = sum(tick[1] for tick in self.ticks)
        answered_due = sum(tick[2] for tick in self.ticks)
        weighted = sorted(
            [(latency, tick[4]) for tick in self.ticks for latency in tick[3]]
            + [(latency, 1.0) for latency in self.latencies]
        )
        return {
            "sent": sum(tick[5] for tick in self.ticks),
            "answered": sum(tick[6] for tick in self.ticks) + len(self.latencies),
            "success_rate": min(1.0, answered_due / due) if due else None,
            "latency_p50": _percentile(weighted, 0.50),
            "latency_p99": _percentile(weighted, 0.99),
        }


def _percentile(weighted: list[tuple[float, float]], fraction: float) -> float | None:
    """The weighted nearest-rank percentile of sorted (value, weight) pairs (None when there are none)."""
    if not weighted:
        return None
    rank = fraction * sum(weight for _, weight in weighted)
    total = 0.0
    for value, weight in weighted:
        total += weight
        if total >= rank - 1e-9:
            return value
    return weighted[-1][0]
