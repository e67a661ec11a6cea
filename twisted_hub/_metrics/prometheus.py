"""
Prometheus metrics of a hub server (C{docs/operations.md}), and the
observers that feed them from the sans-IO core (L{twisted_hub._core.observer}).

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

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._core.base_error import HubArgumentError, HubStateError
from .._core.errors import DisconnectKind, DisconnectReason
from .._core.observer import CALL_OUTCOMES, REFUSED
from .._core.stats import LIVE_COUNTS, OTHER_METHOD, FastHistogram, MethodMetrics
from .._core.wire import ResumeReason

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .._core.heartbeat import StallDetector
    from .._core.resume import ResumePolicy, SessionRegistry
    from .._hubs.hub import HubRuntime

class MetricsSource(Protocol):
    """
    What the metrics read of a server at scrape time: its
    L{twisted_hub.HubServerFactory} (in the adapters' layer, above this one,
    so named by what it must offer rather than imported).
    """

    @property
    def runtimes(self) -> Mapping[str, HubRuntime[Any]]:
        """Each hub's runtime, by hub name."""

    @property
    def stall_detector(self) -> StallDetector:
        """The server's stalls (late timers)."""

    @property
    def backplane(self) -> object:
        """The backplane (read through L{backplane_connected} and its counters)."""

    @property
    def resume_policy(self) -> ResumePolicy | None:
        """Session resumption's policy (None: off)."""

    @property
    def resume_registries(self) -> Mapping[str, SessionRegistry]:
        """Each hub's resumable sessions, by hub name."""


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


def histogram_buckets(histogram: FastHistogram) -> list[tuple[str, float]]:
    """Cumulative C{(le, count)} pairs of C{histogram}, for C{HistogramMetricFamily}."""
    from prometheus_client.utils import floatToGoString

    result: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
        total += count
        result.append((floatToGoString(bound), total))
    return result


class HubLabelMetrics:
    """The bound children of one hub; its L{twisted_hub._core.observer.CallObserver}."""

    def __init__(self, metrics: HubMetrics, hub: str, methods: Iterable[str]) -> None:
        self.connects = metrics.connects.labels(hub)
        self.slow_consumer_closes = metrics.slow_consumer_closes.labels(hub)
        self.disconnects = {kind: metrics.disconnects.labels(hub, kind.value) for kind in DisconnectKind}
        self.methods = {name: MethodMetrics() for name in methods}
        self.other = MethodMetrics()

    def method(self, name: str) -> MethodMetrics:
        """The children of a method, or of C{other} when the hub does not declare it."""
        return self.methods.get(name) or self.other

    # the hub's CallObserver (twisted_hub._core.observer)
    def refused(self, method: str) -> None:
        self.method(method).counts[REFUSED] += 1

    def ended(self, method: str, outcome: int, seconds: float) -> None:
        self.method(method).record(outcome, seconds)


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
        self._factory: MetricsSource | None = None
        #: each hub's bound children, by hub name (its runtime holds them as its CallObserver)
        self.hubs: dict[str, HubLabelMetrics] = {}

    def attach(self, factory: MetricsSource) -> None:
        """Bind the children of the factory's hubs; read live counts from it at scrape time."""
        if self._factory is not None:
            raise HubStateError("these metrics belong to another factory already: give each factory its own HubMetrics")
        self._factory = factory
        for name, runtime in factory.runtimes.items():
            runtime.metrics = self.hubs[name] = HubLabelMetrics(self, name, runtime.methods)
            self.connections.labels(name).set_function(_counter_of(runtime))
        detector = factory.stall_detector
        self.stall_events.set_function(lambda: detector.stalls)
        # Only stalls count: a timer a millisecond late is no stall.  (The
        # largest lag of all is a stall's as soon as there was one.)
        self.worst_stall.set_function(lambda: detector.max_lag if detector.stalls else 0.0)
        self.registry.register(_LiveCollector(factory))
        self.registry.register(_HotCollector(self))
        self.registry.register(_BackplaneCollector(factory))
        if factory.resume_policy is not None:
            self.registry.register(_ResumeCollector(factory))


class _HotCollector:
    """The per-call and per-answer numbers, as Prometheus families."""

    def __init__(self, metrics: HubMetrics) -> None:
        self.metrics = metrics

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
        heartbeat.add_metric([], histogram_buckets(latency), latency.sum)
        yield heartbeat
        calls = CounterMetricFamily(
            "twisted_hub_calls", "Hub calls and notifications, by method and outcome.",
            labels=["hub", "method", "outcome"],
        )
        durations = HistogramMetricFamily(
            "twisted_hub_call_duration_seconds", "Time from a call's start to its answer.", labels=["hub", "method"]
        )
        for hub, children_of_hub in self.metrics.hubs.items():
            named = [*children_of_hub.methods.items(), (OTHER_METHOD, children_of_hub.other)]
            for method, children in named:
                for outcome, count in zip(CALL_OUTCOMES, children.counts, strict=True):
                    calls.add_metric([hub, method, outcome], count)
                durations.add_metric([hub, method], histogram_buckets(children.duration), children.duration.sum)
        yield calls
        yield durations
        frames = HistogramMetricFamily(
            "twisted_hub_frame_messages", "Messages per frame received from clients (a batch counts its messages)."
        )
        batches = self.metrics.frame_messages
        frames.add_metric([], histogram_buckets(batches), batches.sum)
        yield frames


class _BackplaneCollector:
    """The backplane's health (in-process: always connected; Redis: docs/scaling.md)."""

    def __init__(self, factory: MetricsSource) -> None:
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


class _ResumeCollector:
    """Session resumption (docs/resumption.md), from each hub's session registry."""

    def __init__(self, factory: MetricsSource) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        resumed = CounterMetricFamily("twisted_hub_sessions_resumed", "Sessions resumed on a new connection.", labels=["hub"])
        failures = CounterMetricFamily(
            "twisted_hub_resume_failures", "Resumes refused, by reason.", labels=["hub", "reason"]
        )
        replayed = CounterMetricFamily(
            "twisted_hub_replayed_messages", "Messages sent again to clients that resumed.", labels=["hub"]
        )
        detached = GaugeMetricFamily(
            "twisted_hub_sessions_detached", "Sessions kept without a connection, waiting for a resume.", labels=["hub"]
        )
        kept = GaugeMetricFamily(
            "twisted_hub_resume_buffer_bytes", "Bytes kept for clients until they acknowledge them.", labels=["hub"]
        )
        moved_in = CounterMetricFamily(
            "twisted_hub_sessions_moved_in", "Sessions taken over from another node (a resume that reached this one).",
            labels=["hub"],
        )
        moved_out = CounterMetricFamily(
            "twisted_hub_sessions_moved_out", "Sessions handed over to another node (their client resumed there).",
            labels=["hub"],
        )
        moves = session_moves(self.factory.backplane)
        claims = CounterMetricFamily(
            "twisted_hub_session_claims",
            "Claims this node made for sessions another node held (their clients resumed here), by outcome: "
            "won (handed over), refused (by the node holding it), unanswered (by any node within the claim timeout).",
            labels=["outcome"],
        )
        for outcome in CLAIM_OUTCOMES:
            claims.add_metric([outcome], moves[f"claims_{outcome}"])
        late = CounterMetricFamily(
            "twisted_hub_late_handovers",
            "Sessions another node handed over after this node's claim had timed out: lost (their clients had "
            "started afresh).",
        )
        late.add_metric([], moves["late_handovers"])
        forwarded = CounterMetricFamily(
            "twisted_hub_forwarded_messages",
            "Messages for connections that moved away from this node, sent on to the node holding them now.",
        )
        forwarded.add_metric([], moves["forwarded"])
        registries = self.factory.resume_registries
        for hub in self.factory.runtimes:
            registry = registries.get(hub)
            resumed.add_metric([hub], registry.resumed if registry else 0)
            replayed.add_metric([hub], registry.replayed if registry else 0)
            detached.add_metric([hub], registry.detached if registry else 0)
            kept.add_metric([hub], registry.buffer_bytes if registry else 0)
            moved_in.add_metric([hub], registry.moved_in if registry else 0)
            moved_out.add_metric([hub], registry.moved_out if registry else 0)
            for reason in ResumeReason.ALL:
                failures.add_metric([hub, reason], registry.refused.get(reason, 0) if registry else 0)
        yield from (resumed, failures, replayed, detached, kept, moved_in, moved_out, claims, late, forwarded)


#: how a claim for a session another node held ended (docs/resumption.md, "Across nodes"); "restored":
#: nobody answered and the session's snapshot was read instead ("When a node dies")
CLAIM_OUTCOMES = ("won", "refused", "unanswered", "restored")


def session_moves(backplane: object) -> dict[str, int]:
    """
    This node's counts of sessions moving between nodes, kept by its
    backplane: C{claims_won}, C{claims_refused}, C{claims_unanswered}, C{claims_restored},
    C{late_handovers}, C{forwarded} (all 0 for one that moves none: in-process).
    """
    names = (*(f"claims_{outcome}" for outcome in CLAIM_OUTCOMES), "late_handovers", "forwarded")
    return {name: int(getattr(backplane, name, 0)) for name in names}


def backplane_connected(backplane: object) -> bool:
    """Whether this node reaches its backplane (one without a C{connected} attribute, in-process, always does)."""
    connected = getattr(backplane, "connected", True)
    return bool(connected() if callable(connected) else connected)


def _counter_of(runtime: HubRuntime[Any]) -> Any:
    return lambda: len(runtime.connections)


class _LiveCollector:
    """Counts kept by each connection, summed at scrape time (closed connections' in the hub's totals)."""

    def __init__(self, factory: MetricsSource) -> None:
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


#: the help of each count in L{LIVE_COUNTS}, in its order
_LIVE_COUNTS = dict(zip(LIVE_COUNTS, (
    "Hub protocol messages received.",
    "Hub protocol messages sent (heartbeats and broadcasts included).",
    "WebSocket payload bytes received.",
    "Bytes written to clients (WebSocket framing included).",
    "Client heartbeats the server answered.",
    "Server heartbeats unanswered past their timeout whose client was kept because it was still "
    "taking the data queued for it (progress counts as life).",
), strict=True))



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

    # the client core's ClientObserver (twisted_hub._core.observer)
    def answered(self, round_trip: float, offset: float, error: float) -> None:
        self.heartbeats_answered.inc()
        self.round_trip.set(round_trip)
        self.clock_offset.set(offset)
        self.clock_error.set(error)

    def heartbeat_timed_out(self) -> None:
        self.heartbeat_timeouts.inc()

    def timeout_avoided(self) -> None:
        self.heartbeat_timeouts_avoided.inc()

    def disconnected(self, kind: str) -> None:
        self.disconnects.labels(kind).inc()

    def reconnected(self) -> None:
        self.reconnects.inc()


class SessionMetrics:
    """
    A server connection's L{twisted_hub._core.observer.SessionObserver}: the
    status page's data (L{HeartbeatWindow}, L{RecentDisconnects}) and the
    Prometheus metrics of its server and hub, read when reported (metrics
    may be attached after the connection opened).
    """

    __slots__ = ("_host", "_runtime", "_hub_name")

    def __init__(self, host: Any, runtime: HubRuntime[Any]) -> None:
        self._host = host
        self._runtime = runtime
        self._hub_name = runtime.hub_class.hub_name

    def _hub_children(self) -> HubLabelMetrics | None:
        """The children L{HubMetrics.attach} gave this connection's hub (as its CallObserver); None: metrics off."""
        metrics = self._runtime.metrics
        return metrics if isinstance(metrics, HubLabelMetrics) else None

    def connected(self) -> None:
        metrics = self._hub_children()
        if metrics is not None:
            metrics.connects.inc()

    def disconnected(self, now: float, connection_id: str, reason: DisconnectReason, text: str) -> None:
        metrics = self._hub_children()
        if metrics is not None:
            metrics.disconnects[reason.kind].inc()
        self._host.recent_disconnects.add(now, self._hub_name, connection_id, reason.kind.value, reason.code, text)

    def slow_consumer_closed(self) -> None:
        metrics = self._hub_children()
        if metrics is not None:
            metrics.slow_consumer_closes.inc()

    def frame_received(self, messages: int) -> None:
        metrics = self._host.metrics
        if metrics is not None:
            metrics.frame_messages.observe(messages)

    def heartbeat_answered(self, latency: float) -> None:
        self._host.heartbeat_window.latencies.append(latency)
        metrics = self._host.metrics
        if metrics is not None:
            metrics.heartbeat_latency.observe(latency)

    def heartbeat_timed_out(self) -> None:
        metrics = self._host.metrics
        if metrics is not None:
            metrics.heartbeat_timeouts.inc()
