"""
Prometheus metrics of a hub server (C{docs/operations.md}).

L{HubMetrics} holds the metrics of one L{HubServerFactory}; the factory owns
it and the protocol, heartbeat scheduler and call dispatcher report to it at
a few points.  Children are bound once (per hub, per declared method, per
disconnect kind), so nothing looks up labels per message.

Rare events (connects, disconnects, timeouts, slow consumers) are
C{prometheus_client} counters.  What happens per call or per heartbeat
answer is counted in plain numbers (L{MethodMetrics}, L{FastHistogram}: an
increment and a C{bisect}, no lock) and handed to C{prometheus_client} at
scrape time by a collector, as are the counts the core keeps per connection
(messages, bytes, client heartbeats answered): the hot paths stay within
the cost budget of docs/performance.md.  Scrape from the reactor thread
(C{/metrics} does); a scrape from another thread may see a histogram's
count and sum one observation apart.

C{prometheus_client} is needed only when metrics are on (the C{metrics} extra).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._base_error import HubArgumentError, HubStateError
from ._errors import DisconnectKind

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from ._hub import HubRuntime
    from ._server import HubServerFactory

#: The method label of calls to undeclared methods (label values stay bounded).
OTHER_METHOD = "other"
#: Call outcomes, by index in L{MethodMetrics.counts}: answered with a
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

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
_CALL_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FastHistogram:
    """
    Bucket counts and a sum in plain numbers (exported by L{_HotCollector}):
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

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative C{(le, count)} pairs, for C{HistogramMetricFamily}."""
        from prometheus_client.utils import floatToGoString

        result: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            result.append((floatToGoString(bound), total))
        return result


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


class HubLabelMetrics:
    """The bound children of one hub."""

    def __init__(self, metrics: HubMetrics, hub: str, methods: Iterable[str]) -> None:
        self.connects = metrics.connects.labels(hub)
        self.slow_consumer_closes = metrics.slow_consumer_closes.labels(hub)
        self.disconnects = {kind: metrics.disconnects.labels(hub, kind.value) for kind in DisconnectKind}
        self.methods = {name: MethodMetrics() for name in methods}
        self.other = MethodMetrics()

    def method(self, name: str) -> MethodMetrics:
        """The children of a method, or of C{other} when the hub does not declare it."""
        return self.methods.get(name) or self.other


class HubMetrics:
    """
    The metrics of one factory, registered in C{registry} (default: a new
    C{CollectorRegistry} of its own, which C{/metrics} serves; give
    C{prometheus_client.REGISTRY} to share the process-wide one).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        try:  # the first metric: prometheus refuses a name a registry holds already
            self.connections = Gauge("twisted_hub_connections", "Open hub connections.", ["hub"], registry=r)
        except ValueError as e:
            raise HubArgumentError(
                "this registry already holds a hub factory's metrics: give each HubServerFactory a registry of its own"
            ) from e
        self.connects = Counter("twisted_hub_connects", "Connections opened (handshake done).", ["hub"], registry=r)
        self.disconnects = Counter(
            "twisted_hub_disconnects", "Connections closed, by reason kind.", ["hub", "reason"], registry=r
        )
        self.heartbeats_sent = Counter(
            "twisted_hub_server_heartbeats_sent", "Server heartbeats (or heartbeat pings) sent.", registry=r
        )
        self.heartbeat_timeouts = Counter(
            "twisted_hub_server_heartbeat_timeouts", "Connections closed for an unanswered server heartbeat.",
            registry=r,
        )
        self.slow_consumer_closes = Counter(
            "twisted_hub_slow_consumer_closes", "Clients dropped for not reading their data.", ["hub"], registry=r
        )
        self.stall_events = Gauge(
            "twisted_hub_reactor_stalls",
            "Heartbeat timers that fired more than the stall threshold (0.25 s) late: the reactor was blocked.",
            registry=r,
        )
        self.worst_stall = Gauge(
            "twisted_hub_reactor_worst_stall_seconds",
            "How late the worst of those stalled timers fired, in seconds (0 while there was no stall).",
            registry=r,
        )
        #: server heartbeat round trips (its count: the heartbeats answered)
        self.heartbeat_latency = FastHistogram(_LATENCY_BUCKETS)
        #: messages per frame received from clients (batching at work)
        self.frame_messages = FastHistogram(_BATCH_BUCKETS)
        self._factory: HubServerFactory | None = None

    def attach(self, factory: HubServerFactory) -> None:
        """Bind the children of the factory's hubs; read live counts from it at scrape time."""
        if self._factory is not None:
            raise HubStateError("these metrics belong to another factory already: give each factory its own HubMetrics")
        self._factory = factory
        for name, runtime in factory.runtimes.items():
            runtime.metrics = HubLabelMetrics(self, name, runtime.methods)
            self.connections.labels(name).set_function(_counter_of(runtime))
        detector = factory.stall_detector
        self.stall_events.set_function(lambda: detector.stalls)
        # Only stalls count: a timer a millisecond late is no stall.  (The
        # largest lag of all is a stall's as soon as there was one.)
        self.worst_stall.set_function(lambda: detector.max_lag if detector.stalls else 0.0)
        self.registry.register(_LiveCollector(factory))
        self.registry.register(_HotCollector(self, factory))
        self.registry.register(_BackplaneCollector(factory))


class _HotCollector:
    """The per-call and per-answer numbers, as Prometheus families."""

    def __init__(self, metrics: HubMetrics, factory: HubServerFactory) -> None:
        self.metrics = metrics
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        latency = self.metrics.heartbeat_latency
        answered = CounterMetricFamily(
            "twisted_hub_server_heartbeats_answered", "Server heartbeats answered by clients."
        )
        answered.add_metric([], sum(latency.counts))
        yield answered
        heartbeat = HistogramMetricFamily(
            "twisted_hub_heartbeat_latency_seconds", "Server heartbeat round trip, measured by the server."
        )
        heartbeat.add_metric([], latency.buckets(), latency.sum)
        yield heartbeat
        calls = CounterMetricFamily(
            "twisted_hub_calls", "Hub calls and notifications, by method and outcome.",
            labels=["hub", "method", "outcome"],
        )
        durations = HistogramMetricFamily(
            "twisted_hub_call_duration_seconds", "Time from a call's start to its answer.", labels=["hub", "method"]
        )
        for hub, runtime in self.factory.runtimes.items():
            if runtime.metrics is None:
                continue
            named = [*runtime.metrics.methods.items(), (OTHER_METHOD, runtime.metrics.other)]
            for method, children in named:
                for outcome, count in zip(CALL_OUTCOMES, children.counts, strict=True):
                    calls.add_metric([hub, method, outcome], count)
                durations.add_metric([hub, method], children.duration.buckets(), children.duration.sum)
        yield calls
        yield durations
        frames = HistogramMetricFamily(
            "twisted_hub_frame_messages", "Messages per frame received from clients (a batch counts its messages)."
        )
        batches = self.metrics.frame_messages
        frames.add_metric([], batches.buckets(), batches.sum)
        yield frames


class _BackplaneCollector:
    """The backplane's health (in-process: always connected; Redis: docs/scaling.md)."""

    def __init__(self, factory: HubServerFactory) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        backplane = self.factory.backplane
        up = GaugeMetricFamily(
            "twisted_hub_backplane_connected", "1 while this node reaches its backplane (Redis), else 0."
        )
        up.add_metric([], 1.0 if backplane_connected(backplane) else 0.0)
        yield up
        for name, help in (
            ("published", "Receiver calls published to the other nodes."),
            ("dropped_disconnected", "Receiver calls for other nodes dropped while the backplane was down."),
            ("dropped_overload", "Receiver calls for other nodes dropped because the backplane queue was full."),
            ("missed", "Messages other nodes published that never reached this node (gaps in their sequence numbers)."),
            ("bad_messages", "Backplane messages ignored as malformed (not a message, or not a valid hub message)."),
            ("rejected", "Backplane messages and Redis state refused: not signed with the secret, stale or replayed."),
            ("state_rewrites", "Times this node found its state gone from Redis and wrote it again."),
        ):
            family = CounterMetricFamily(f"twisted_hub_backplane_{name}", help)
            family.add_metric([], float(getattr(backplane, name, 0)))
            yield family


def backplane_connected(backplane: object) -> bool:
    """Whether this node reaches its backplane (one without a C{connected} attribute, in-process, always does)."""
    connected = getattr(backplane, "connected", True)
    return bool(connected() if callable(connected) else connected)


def _counter_of(runtime: HubRuntime[Any]) -> Any:
    return lambda: len(runtime.connections)


class _LiveCollector:
    """Counts kept by each connection, summed at scrape time (closed connections' in the hub's totals)."""

    def __init__(self, factory: HubServerFactory) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        families = {
            key: CounterMetricFamily(f"twisted_hub_{key}", help, labels=["hub"]) for key, help in _LIVE_COUNTS.items()
        }
        for name, runtime in self.factory.runtimes.items():
            totals = runtime.traffic.totals(runtime.connections.values())
            for key, family in families.items():
                family.add_metric([name], totals[key])
        yield from families.values()


_LIVE_COUNTS = {
    "messages_received": "Hub protocol messages received.",
    "messages_sent": "Hub protocol messages sent (heartbeats and broadcasts included).",
    "bytes_received": "WebSocket payload bytes received.",
    "bytes_sent": "Bytes written to clients (WebSocket framing included).",
    "client_heartbeats_answered": "Client heartbeats the server answered.",
    "heartbeat_timeouts_avoided": (
        "Server heartbeats unanswered past their timeout whose client was kept because it was still "
        "taking the data queued for it (progress counts as life)."
    ),
}


class TrafficTotals:
    """One hub's per-connection counts of its closed connections, plus a sum with the open ones."""

    def __init__(self) -> None:
        self.closed = dict.fromkeys((*_LIVE_COUNTS, "calls", "call_errors"), 0)

    @staticmethod
    def of(connection: Any) -> dict[str, int]:
        """The counts of one connection (a L{twisted_hub._server_session.ServerSession})."""
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


class ClientMetrics:
    """
    A Python client's own metrics (either client, Twisted or asyncio):
    C{HubClientOptions(metrics=ClientMetrics(registry))}.  Several clients
    may share one; the gauges show the latest client that measured.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge

        r = registry if registry is not None else REGISTRY
        self.registry = r
        try:  # the first metric: prometheus refuses a name a registry holds already
            self.round_trip = Gauge(
                "twisted_hub_client_round_trip_seconds", "Round trip of the newest answered client heartbeat.", registry=r
            )
        except ValueError as e:
            raise HubArgumentError(
                "this registry already holds a client's metrics: share one ClientMetrics between clients, "
                "or give each a registry of its own"
            ) from e
        self.clock_offset = Gauge(
            "twisted_hub_client_clock_offset_seconds", "Estimated server clock minus ours.", registry=r
        )
        self.clock_error = Gauge(
            "twisted_hub_client_clock_error_seconds", "Error bound of the clock offset estimate.", registry=r
        )
        self.heartbeats_answered = Counter(
            "twisted_hub_client_heartbeats_answered", "Client heartbeats the server answered.", registry=r
        )
        self.heartbeat_timeouts = Counter(
            "twisted_hub_client_heartbeat_timeouts", "Connections this client dropped for an unanswered heartbeat.",
            registry=r,
        )
        self.heartbeat_timeouts_avoided = Counter(
            "twisted_hub_client_heartbeat_timeouts_avoided",
            "Client heartbeats unanswered past their timeout whose server was kept because the data between "
            "us was still moving (progress counts as life).",
            registry=r,
        )
        self.disconnects = Counter(
            "twisted_hub_client_disconnects", "Connections ended, by reason kind.", ["reason"], registry=r
        )
        self.reconnects = Counter(
            "twisted_hub_client_reconnects", "Connections a reconnecting client made after its first.", registry=r
        )

    def answered(self, round_trip: float, offset: float, error: float) -> None:
        self.heartbeats_answered.inc()
        self.round_trip.set(round_trip)
        self.clock_offset.set(offset)
        self.clock_error.set(error)
