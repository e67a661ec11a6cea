"""
Prometheus metrics after scripted sessions on a Clock: connections,
disconnect reasons, server and client heartbeats, calls by method and
outcome with their durations, traffic, slow consumers and stalls.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import (
    HeartbeatPolicy,
    HubArgumentError,
    HubClientOptions,
    HubError,
    HubServerFactory,
    HubStateError,
    TwistedHubError,
)
from twisted_hub.metrics import ClientMetrics, HubMetrics
from twisted_hub.testing import HubTestServer, TestConnection

from .helpers.hubs import WorkLog, work_hub

BEAT = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)


class MetricsTestBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = WorkLog()
        self.server = HubTestServer([work_hub(self.log)], heartbeat=BEAT, metrics=True)
        assert self.server.factory.metrics is not None
        self.registry = self.server.factory.metrics.registry

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        assert found is not None, f"no sample {name}{labels}"
        return found

    def connect(self, **kwargs: Any) -> TestConnection:
        conn = self.server.connect("work", **kwargs)
        self.successResultOf(conn.ready)
        return conn

    def call(self, conn: TestConnection, method: str, *args: Any) -> Any:
        d = conn.client.call(method, *args)
        self.server.flush()
        return d


class CallMetricsTests(MetricsTestBase):
    def test_calls_by_method_and_outcome(self) -> None:
        """Results, hub errors, crashes and unknown methods are counted under the right method and outcome."""
        conn = self.connect()
        self.successResultOf(self.call(conn, "plain", 1))
        self.successResultOf(self.call(conn, "plain", 2))
        self.failureResultOf(self.call(conn, "fail", "nope", "no"), HubError)
        self.failureResultOf(self.call(conn, "crash"), HubError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.failureResultOf(self.call(conn, "no_such_method"), HubError)
        self.failureResultOf(self.call(conn, "another_unknown_one"), HubError)
        v = self.value
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="plain", outcome="ok"), 2)
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="fail", outcome="error"), 1)
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="crash", outcome="internal"), 1)
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="other", outcome="error"), 2)
        self.assertIsNone(
            self.registry.get_sample_value(
                "twisted_hub_calls_total", {"hub": "work", "method": "no_such_method", "outcome": "error"}
            )
        )

    def test_timeout_and_rate_limited_codes_have_their_own_outcome(self) -> None:
        """A call answered with the code timeout or rate-limited counts under that outcome, filters or not."""
        conn = self.connect()
        for code in ("timeout", "rate-limited", "timeout", "other-code"):
            self.failureResultOf(self.call(conn, "fail", code, "x"), HubError)
        self.failureResultOf(self.call(conn, "fail_async", "timeout"), HubError)
        v = self.value
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="fail", outcome="timeout"), 2)
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="fail", outcome="rate-limited"), 1)
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="fail", outcome="error"), 1)
        self.assertEqual(v("twisted_hub_calls_total", hub="work", method="fail_async", outcome="timeout"), 1)

    def test_async_call_duration_on_the_clock(self) -> None:
        """A Deferred call answered 0.3 s later is observed as 0.3 s in the duration histogram."""
        conn = self.connect()
        d = self.call(conn, "deferred", "x")
        self.server.clock.advance(0.3)
        self.log.pending.pop().callback(None)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "x")
        self.assertEqual(self.value("twisted_hub_call_duration_seconds_count", hub="work", method="deferred"), 1)
        self.assertAlmostEqual(self.value("twisted_hub_call_duration_seconds_sum", hub="work", method="deferred"), 0.3)
        self.assertEqual(
            self.value("twisted_hub_call_duration_seconds_bucket", hub="work", method="deferred", le="0.25"), 0
        )
        self.assertEqual(
            self.value("twisted_hub_call_duration_seconds_bucket", hub="work", method="deferred", le="0.5"), 1
        )

    def test_a_result_that_cannot_be_encoded_is_internal(self) -> None:
        """A method returning a set answers [internal] and is counted internal, not ok (sync and async)."""
        from twisted.internet.defer import succeed

        from twisted_hub import Hub, hub, method

        @hub("sets")
        class SetHub(Hub):
            @method
            def numbers(self) -> set[int]:
                return {1, 2}

            @method
            def later(self) -> Any:
                return succeed({3})

        server = HubTestServer([SetHub], metrics=True)
        conn = server.connect("sets")
        for name in ("numbers", "later"):
            d = conn.client.call(name)
            server.flush()
            self.assertEqual(self.failureResultOf(d, HubError).value.code, "internal")  # type: ignore[attr-defined]
        assert server.factory.metrics is not None
        value = server.factory.metrics.registry.get_sample_value
        for name in ("numbers", "later"):
            labels = {"hub": "sets", "method": name}
            self.assertEqual(value("twisted_hub_calls_total", {**labels, "outcome": "internal"}), 1, name)
            self.assertEqual(value("twisted_hub_calls_total", {**labels, "outcome": "ok"}), 0, name)

    def test_refused_calls(self) -> None:
        """A call over the pending-calls limit is counted as refused."""
        server = HubTestServer([work_hub(self.log)], metrics=True, max_pending_calls=1)
        conn = server.connect("work")
        self.successResultOf(conn.ready)
        first = conn.client.call("deferred", 1)
        second = conn.client.call("deferred", 2)
        server.flush()
        self.failureResultOf(second, HubError)
        assert server.factory.metrics is not None
        registry = server.factory.metrics.registry
        labels = {"hub": "work", "method": "deferred"}
        self.assertEqual(registry.get_sample_value("twisted_hub_calls_total", {**labels, "outcome": "refused"}), 1)
        self.assertNoResult(first)


class ConnectionMetricsTests(MetricsTestBase):
    def test_connections_connects_and_disconnect_reasons(self) -> None:
        """The gauge follows open connections; disconnects are counted by reason kind."""
        a = self.connect()
        b = self.connect()
        self.connect()
        self.assertEqual(self.value("twisted_hub_connections", hub="work"), 3)
        self.assertEqual(self.value("twisted_hub_connects_total", hub="work"), 3)
        a.client.sendClose(1000)
        self.server.flush()
        b.freeze_client()
        self.server.advance(5.0)
        self.assertEqual(self.value("twisted_hub_connections", hub="work"), 1)
        self.assertEqual(self.value("twisted_hub_disconnects_total", hub="work", reason="normal"), 1)
        self.assertEqual(self.value("twisted_hub_disconnects_total", hub="work", reason="timed-out"), 1)
        self.assertEqual(self.value("twisted_hub_disconnects_total", hub="work", reason="slow-consumer"), 0)
        self.assertEqual(self.value("twisted_hub_server_heartbeat_timeouts_total"), 1)

    def test_traffic_counts_survive_the_connection(self) -> None:
        """Messages and bytes in/out are summed over open and closed connections."""
        conn = self.connect()
        self.successResultOf(self.call(conn, "plain", "x" * 100))
        received = sum(len(frame) for frame in conn.server_received)
        self.assertEqual(self.value("twisted_hub_bytes_received_total", hub="work"), received)
        # hello and the call in; welcome and the result out
        self.assertEqual(self.value("twisted_hub_messages_received_total", hub="work"), 2)
        self.assertEqual(self.value("twisted_hub_messages_sent_total", hub="work"), 2)
        sent_before = self.value("twisted_hub_bytes_sent_total", hub="work")
        self.assertGreater(sent_before, 100)
        conn.client.sendClose(1000)
        self.server.flush()
        self.assertTrue(conn.closed)
        self.assertEqual(self.value("twisted_hub_messages_received_total", hub="work"), 2)
        self.assertGreaterEqual(self.value("twisted_hub_bytes_sent_total", hub="work"), sent_before)


class HeartbeatMetricsTests(MetricsTestBase):
    def test_heartbeats_sent_answered_and_latency(self) -> None:
        """Three beats to two clients with a 50 ms round trip: 6 sent, 6 answered, latency in the 50 ms bucket."""
        for conn in (self.connect(), self.connect()):
            conn.set_latency(0.025)
        self.server.advance(3.5)
        self.assertEqual(self.value("twisted_hub_server_heartbeats_sent_total"), 6)
        self.assertEqual(self.value("twisted_hub_server_heartbeats_answered_total"), 6)
        self.assertEqual(self.value("twisted_hub_heartbeat_latency_seconds_count"), 6)
        self.assertAlmostEqual(self.value("twisted_hub_heartbeat_latency_seconds_sum"), 6 * 0.05)
        self.assertEqual(self.value("twisted_hub_heartbeat_latency_seconds_bucket", le="0.025"), 0)
        self.assertEqual(self.value("twisted_hub_heartbeat_latency_seconds_bucket", le="0.05"), 6)

    def test_client_heartbeats_answered(self) -> None:
        """Each client heartbeat the server answers is counted."""
        self.connect(options=HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=1.0)))
        self.server.advance(4.5)
        self.assertEqual(self.value("twisted_hub_client_heartbeats_answered_total", hub="work"), 4)

    def test_stalls(self) -> None:
        """A reactor stall longer than the threshold is counted and the worst lag kept."""
        self.connect()
        self.server.advance(1.0)
        self.assertEqual(self.value("twisted_hub_reactor_stalls"), 0)
        self.server.stall(2.5)
        self.assertEqual(self.value("twisted_hub_reactor_stalls"), 1)
        self.assertAlmostEqual(self.value("twisted_hub_reactor_worst_stall_seconds"), 1.5)

    def test_a_late_timer_is_no_stall(self) -> None:
        """A timer 0.1 s late (under the 0.25 s threshold) is no stall: the worst stall stays 0 with the count."""
        self.connect()
        self.server.advance(1.0)
        self.server.stall(1.1)  # the tick due at 2.0 runs at 2.1
        self.assertEqual(self.server.factory.stall_detector.stalls, 0)
        self.assertAlmostEqual(self.server.factory.stall_detector.max_lag, 0.1)
        self.assertEqual(self.value("twisted_hub_reactor_stalls"), 0)
        self.assertEqual(self.value("twisted_hub_reactor_worst_stall_seconds"), 0.0)
        self.server.stall(1.5)  # the next tick runs 0.5 s late
        self.assertEqual(self.value("twisted_hub_reactor_stalls"), 1)
        self.assertAlmostEqual(self.value("twisted_hub_reactor_worst_stall_seconds"), 0.5)


class RegistryTests(SynchronousTestCase):
    def test_registry_for_embedders(self) -> None:
        """registry= puts the metrics in the embedder's registry; two factories need two registries."""
        registry = CollectorRegistry()
        factory = HubServerFactory([work_hub(WorkLog())], registry=registry)
        self.assertIs(factory.metrics.registry, registry)  # type: ignore[union-attr]
        self.assertEqual(registry.get_sample_value("twisted_hub_connections", {"hub": "work"}), 0)
        # Our own check, a TwistedHubError (docs/api.md), not prometheus's DuplicateTimeseries.
        with self.assertRaises(HubArgumentError) as raised:
            HubServerFactory([work_hub(WorkLog())], registry=registry)
        self.assertIn("registry of its own", str(raised.exception))
        self.assertIsInstance(raised.exception, TwistedHubError)
        # prometheus' own error is the cause, not what the user catches
        self.assertNotIsInstance(raised.exception.__cause__, TwistedHubError)
        self.assertIsInstance(raised.exception.__cause__, ValueError)

    def test_client_registry_reused(self) -> None:
        """A second ClientMetrics on one registry is a HubArgumentError (a TwistedHubError) saying what to do."""
        registry = CollectorRegistry()
        metrics = ClientMetrics(registry)
        with self.assertRaises(HubArgumentError) as raised:
            ClientMetrics(registry)
        self.assertIsInstance(raised.exception, TwistedHubError)
        self.assertIn("share one ClientMetrics between clients", str(raised.exception))
        self.assertIsInstance(raised.exception.__cause__, ValueError)
        self.assertNotIsInstance(raised.exception.__cause__, TwistedHubError)
        metrics.reconnects.inc()  # the first one still works
        self.assertEqual(registry.get_sample_value("twisted_hub_client_reconnects_total"), 1.0)

    def test_off_by_default(self) -> None:
        """Without metrics= the factory keeps no metrics and the dispatcher none either."""
        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work")
        self.successResultOf(conn.ready)
        self.assertIsNone(server.factory.metrics)
        self.assertIsNone(server.factory.runtimes["work"].metrics)

    def test_metrics_object_belongs_to_one_factory(self) -> None:
        """A HubMetrics given to a second factory is refused with HubStateError: it is in use, not a bad value."""
        metrics = HubMetrics()
        HubServerFactory([work_hub(WorkLog())], metrics=metrics)
        with self.assertRaises(HubStateError) as raised:
            HubServerFactory([work_hub(WorkLog())], metrics=metrics)
        self.assertIn("belong to another factory", str(raised.exception))


class SlowConsumerMetricsTests(SynchronousTestCase):
    def test_slow_consumer_close_counted(self) -> None:
        """A client dropped for not reading counts once as a slow-consumer close and a slow-consumer disconnect."""
        server = HubTestServer([work_hub(WorkLog())], metrics=True, max_outgoing_buffer=4000)
        conn = server.connect("work")
        self.successResultOf(conn.ready)
        conn.server_protocol.pauseProducing()  # what the transport does when its buffer is full
        calls = [conn.client.call("plain", "r" * 900) for _ in range(10)]
        server.flush()
        for d in calls:
            d.addErrback(lambda f: None)
        assert server.factory.metrics is not None
        registry = server.factory.metrics.registry
        self.assertEqual(registry.get_sample_value("twisted_hub_slow_consumer_closes_total", {"hub": "work"}), 1)
        self.assertEqual(
            registry.get_sample_value("twisted_hub_disconnects_total", {"hub": "work", "reason": "slow-consumer"}), 1
        )


class HeartbeatWindowTests(SynchronousTestCase):
    def test_bounded_points_keep_the_percentiles(self) -> None:
        """10,000 answers in a tick keep 64 points, and p50/p99 stay within one point's spacing."""
        from twisted_hub._core.stats import HeartbeatWindow

        window = HeartbeatWindow(points=64)
        window.latencies = [i / 10_000 for i in range(10_000)]  # 0 .. 0.9999 s, uniform
        window.tick(1.0, 10_000, 10_000, sent_now=10_000)
        self.assertEqual(len(window.ticks[0][3]), 64)
        summary = window.summary(1.0)
        self.assertLessEqual(abs(summary["latency_p50"] - 0.5), 1 / 63)
        self.assertLessEqual(abs(summary["latency_p99"] - 0.99), 1 / 63)
        self.assertEqual(summary["success_rate"], 1.0)
        self.assertIsNone(window.summary(100.0)["latency_p50"])  # older than the window: forgotten


class BatchAndBackplaneMetricsTests(MetricsTestBase):
    def test_messages_per_frame(self) -> None:
        """A frame of 3 calls lands in the le=4 bucket of twisted_hub_frame_messages; a lone call in le=1."""
        from twisted_hub._core.wire import Invoke, encode

        conn = self.connect()
        before = self.value("twisted_hub_frame_messages_count")
        conn.client.sendMessage(b"".join(encode(Invoke(900 + i, "plain", [i], None)) for i in range(3)), isBinary=True)
        self.server.flush()
        self.successResultOf(self.call(conn, "plain", 7))
        self.assertEqual(self.value("twisted_hub_frame_messages_count") - before, 2)
        self.assertEqual(self.value("twisted_hub_frame_messages_bucket", le="1.0"), 1 + before)
        self.assertEqual(self.value("twisted_hub_frame_messages_bucket", le="4.0") - before, 2)

    def test_backplane_health(self) -> None:
        """
        The backplane metrics are what the factory's backplane says, read at
        scrape time: the in-process one is connected with nothing published;
        a backplane that lost Redis and counted drops shows exactly that.
        """
        self.assertEqual(self.value("twisted_hub_backplane_connected"), 1.0)
        self.assertEqual(self.value("twisted_hub_backplane_published_total"), 0.0)

        class LostRedis:
            published = 7
            dropped_disconnected = 3
            dropped_overload = 2

            def connected(self) -> bool:
                return False

        in_process = self.server.factory.backplane
        self.server.factory.backplane = LostRedis()  # type: ignore[assignment]
        try:
            self.assertEqual(self.value("twisted_hub_backplane_connected"), 0.0)
            self.assertEqual(self.value("twisted_hub_backplane_published_total"), 7.0)
            self.assertEqual(self.value("twisted_hub_backplane_dropped_disconnected_total"), 3.0)
            self.assertEqual(self.value("twisted_hub_backplane_dropped_overload_total"), 2.0)
        finally:
            self.server.factory.backplane = in_process


class ClientMetricsTests(SynchronousTestCase):
    def test_client_keeps_its_own_metrics(self) -> None:
        """Round trip, clock offset and error, answered heartbeats, timeouts and disconnect kinds, per client registry."""
        from twisted_hub.metrics import ClientMetrics

        registry = CollectorRegistry()
        metrics = ClientMetrics(registry)
        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work", options=HubClientOptions(heartbeat=BEAT, metrics=metrics))
        server.advance(0.5)
        conn.set_latency(0.1)
        server.advance(3.0)
        value = registry.get_sample_value
        self.assertGreaterEqual(value("twisted_hub_client_heartbeats_answered_total"), 2)
        self.assertAlmostEqual(value("twisted_hub_client_round_trip_seconds") or 0.0, 0.2, places=6)
        self.assertAlmostEqual(value("twisted_hub_client_clock_error_seconds") or 0.0, 0.1, places=6)
        offset = value("twisted_hub_client_clock_offset_seconds")
        assert offset is not None
        self.assertLessEqual(abs(offset), 0.1 + 1e-9)  # one clock, symmetric delay: the estimate is ~0
        conn.freeze_server()
        server.advance(5.0)
        self.assertEqual(value("twisted_hub_client_heartbeat_timeouts_total"), 1.0)
        self.assertEqual(value("twisted_hub_client_disconnects_total", {"reason": "timed-out"}), 1.0)

    def test_reconnects_are_counted(self) -> None:
        """A ReconnectingHubClient counts every connection after its first."""
        from twisted_hub import ReconnectingHubClient
        from twisted_hub.metrics import ClientMetrics

        registry = CollectorRegistry()
        server = HubTestServer([work_hub(WorkLog())])
        client = ReconnectingHubClient(
            "ws://127.0.0.1/hub", "work", options=HubClientOptions(metrics=ClientMetrics(registry)),
            retry_policy=lambda attempt: 1.0, endpoint=server.endpoint(), clock=server.clock,
        )
        client.start()
        for _ in range(3):
            server.flush()
            server.connections[-1].drop()
            server.advance(1.0)
        server.flush()
        self.assertEqual(registry.get_sample_value("twisted_hub_client_reconnects_total"), 3.0)
        self.assertEqual(registry.get_sample_value("twisted_hub_client_disconnects_total", {"reason": "connection-lost"}), 3.0)
        client.stop()
        server.flush()
