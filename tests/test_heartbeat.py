"""Heartbeats on a task.Clock: every seed feature and every 'beyond' feature."""

from __future__ import annotations

import dataclasses
import random
import warnings
from datetime import UTC, datetime
from functools import partial
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import (
    DisconnectKind,
    HeartbeatConfigurationError,
    HeartbeatPolicy,
    Hub,
    HubClientOptions,
    HubStateError,
    ReconnectingHubClient,
    full_jitter_policy,
    heartbeat,
    method,
    set_log_level,
)
from twisted_hub._core.connection import ClientConnection
from twisted_hub._core.wire import CAP_BATCH, MessageKind, decode_frame
from twisted_hub.testing import HubTestServer, TestConnection
from twisted_hub.types import (
    ClientHeartbeatEvent,
    DisconnectReason,
    HeartbeatConfigurationWarning,
    HubClientProtocol,
    ServerHeartbeatEvent,
)


class PlainHub(Hub):
    hub_name = "plain"

    def __init__(self, disconnects: list[DisconnectReason]) -> None:
        self.disconnects = disconnects

    @method
    def echo(self, value: Any) -> Any:
        return value

    @method
    def stop_heartbeat(self) -> None:
        self.connection.heartbeat.unregister()

    @method
    def latency(self) -> float:
        return self.connection.heartbeat.latency

    def on_connected(self) -> None:
        self.connection.items["acks"] = []
        self.connection.heartbeat.set_ack_callback(self.connection.items["acks"].append)

    def on_disconnected(self, reason: DisconnectReason) -> None:
        self.disconnects.append(reason)


def heartbeats(payloads: list[bytes]) -> list[Any]:
    """The server heartbeat messages among raw received payloads."""
    found = []
    for payload in payloads:
        for message in decode_frame(payload):
            if message.kind == MessageKind.SERVER_HEARTBEAT:
                found.append(message)
    return found


def tight(timeout: float = 0.5) -> HeartbeatPolicy:
    """Interval 1 s with a shorter timeout (valid; its warning is tested in ValidationTests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeartbeatConfigurationWarning)
        return HeartbeatPolicy(enabled=True, interval=1.0, timeout=timeout)


def server_for(
    policy: HeartbeatPolicy | None = None, *hubs: type[Hub], disconnects: list[DisconnectReason] | None = None
) -> HubTestServer:
    """A test server for C{hubs}, by default PlainHub recording its disconnect reasons in C{disconnects}."""
    plain = partial(PlainHub, [] if disconnects is None else disconnects)
    return HubTestServer(list(hubs) or [plain], heartbeat=policy)


class ServerHeartbeatTests(SynchronousTestCase):
    def test_frame_is_byte_exact(self) -> None:
        """A heartbeat at t=1 s with metadata is exactly [9, seq, time_us, metadata] in msgpack."""
        policy = HeartbeatPolicy(enabled=True, interval=1.0, timeout=None, metadata_provider=lambda: b"\x01\x02")
        server = server_for(policy)
        conn = server.connect("plain")
        conn.client_received.clear()
        server.advance(1.0)
        self.assertEqual(conn.client_received, [bytes.fromhex("94 09 01 ce 00 0f 42 40 c4 02 01 02")])

    def test_frame_built_once_per_tick(self) -> None:
        """Every connection gets the identical frame, prepared once per tick."""
        server = server_for(HeartbeatPolicy.every(1.0))
        conns = [server.connect("plain") for _ in range(3)]
        prepared: list[bytes] = []
        original = server.factory.prepareMessage

        def counting(payload: bytes, isBinary: bool = False, doNotCompress: bool = False) -> Any:
            prepared.append(payload)
            return original(payload, isBinary, doNotCompress)

        server.factory.prepareMessage = counting  # type: ignore[method-assign]
        for conn in conns:
            conn.client_received.clear()
        server.advance(1.0)
        self.assertEqual(len(prepared), 1)
        self.assertEqual([c.client_received for c in conns], [[prepared[0]]] * 3)

    def test_sequence_shared_by_all_connections(self) -> None:
        """All connections of a hub share one sequence; a late joiner gets the next number."""
        server = server_for(HeartbeatPolicy.every(1.0))
        first, second = server.connect("plain"), server.connect("plain")
        server.advance(2.0)
        late = server.connect("plain")
        server.advance(1.0)
        self.assertEqual([m.sequence for m in heartbeats(first.client_received)], [1, 2, 3])
        self.assertEqual([m.sequence for m in heartbeats(second.client_received)], [1, 2, 3])
        self.assertEqual([m.sequence for m in heartbeats(late.client_received)], [3])

    def test_one_timer_for_many_connections(self) -> None:
        """100 connections cost one LoopingCall and at most one timeout call per tick."""
        server = server_for(HeartbeatPolicy.every(1.0))
        for _ in range(100):
            server.connect("plain")
        server.advance(1.0)
        self.assertLessEqual(len(server.clock.getDelayedCalls()), 2)
        self.assertEqual(len(server.factory._schedulers), 1)

    def test_answering_connections_cost_no_progress_reading(self) -> None:
        """
        Connections that answer every heartbeat get their progress read at no
        check, even when the reactor runs the tick before the check of the
        same instant (the tick on time, the check a little after: a late tick
        dates its check late); one that stops answering is still read and dropped.
        """
        from twisted_hub._core.heartbeat_member import HeartbeatMembership

        readings: list[str] = []
        original = HeartbeatMembership.sample_progress

        def reading(member: HeartbeatMembership, now: float) -> None:
            readings.append(member.connection_id)
            original(member, now)

        self.patch(HeartbeatMembership, "sample_progress", reading)
        disconnects: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy.every(1.0, 3.0), disconnects=disconnects)
        conns = [server.connect("plain") for _ in range(3)]
        for _ in range(10):
            server.clock.advance(1.001)  # each tick a millisecond late
            server.flush()
        self.assertEqual((readings, disconnects), ([], []))
        conns[0].freeze_client()
        for _ in range(6):
            server.clock.advance(1.001)
            server.flush()
        self.assertEqual(set(readings), {conns[0].server_protocol.session.connection_id})
        self.assertEqual([r.kind for r in disconnects], [DisconnectKind.TIMED_OUT])

    def test_answered_heartbeats_keep_the_connection(self) -> None:
        """A client that answers stays connected well past many timeouts."""
        server = server_for(tight())
        conn = server.connect("plain")
        server.advance(30.0)
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(conn.server_protocol.core.heartbeat.acks, 30)

    def test_silent_client_times_out(self) -> None:
        """A frozen client is dropped exactly at send time + timeout, with the timed-out reason."""
        disconnects: list[DisconnectReason] = []
        server = server_for(tight(), disconnects=disconnects)
        conn = server.connect("plain")
        server.advance(1.2)
        conn.freeze_client()
        server.advance(1.29)
        self.assertEqual(disconnects, [])
        server.advance(0.01)  # t = 2.5: beat at 2.0 + timeout 0.5
        self.assertEqual([r.kind for r in disconnects], [DisconnectKind.TIMED_OUT])
        self.assertEqual(disconnects[0].code, 4001)
        conn.thaw()
        server.flush()
        assert conn.client.disconnect_reason is not None
        self.assertEqual(conn.client.disconnect_reason.kind, DisconnectKind.PEER_TIMED_OUT)

    def test_timeout_longer_than_interval_lost(self) -> None:
        """With timeout 3.5 s > interval 1 s, the oldest unanswered beat (t=2) decides: dropped at 5.5 s."""
        disconnects: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.5), disconnects=disconnects)
        conn = server.connect("plain")
        server.advance(1.5)
        conn.freeze_client()
        server.advance(3.99)  # t = 5.49
        self.assertEqual(disconnects, [])
        server.advance(0.01)
        self.assertEqual([r.kind for r in disconnects], [DisconnectKind.TIMED_OUT])

    def test_timeout_longer_than_interval_kept(self) -> None:
        """Late answers within the timeout keep the connection: only the newest ack stops the timeout."""
        disconnects: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.5), disconnects=disconnects)
        conn = server.connect("plain")
        server.advance(1.5)
        conn.freeze_client()
        server.advance(3.9)  # beats at 2, 3, 4, 5 unanswered; t = 5.4
        conn.thaw()
        server.flush()
        self.assertIsNone(conn.server_protocol.core.heartbeat.timeout_started_at)
        server.advance(10.0)
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(disconnects, [])

    def test_latency_and_ack_callback(self) -> None:
        """Latency is the round trip of the newest beat; the ack callback gets each value."""
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=None))
        conn = server.connect("plain")
        self.assertEqual(conn.hub.connection.heartbeat.latency, 0.0)
        server.advance(0.5)
        conn.freeze_client()
        server.advance(0.75)  # the beat at 1.0 waits until 1.25
        conn.thaw()
        server.flush()
        self.assertAlmostEqual(conn.hub.connection.heartbeat.latency, 0.25)
        server.advance(1.0)  # t = 2.25: the beat at 2.0 was answered at once
        self.assertEqual(conn.hub.connection.items["acks"], [0.25, 0.0])

    def test_unregister_stops_heartbeats_for_one_connection(self) -> None:
        """unregister() stops beats and the timeout on that connection only."""
        server = server_for(tight())
        quiet, other = server.connect("plain"), server.connect("plain")
        quiet.client.call("stop_heartbeat")
        server.flush()
        quiet.client_received.clear()
        quiet.freeze_client()
        server.advance(5.0)
        quiet.thaw()
        server.flush()
        self.assertEqual(heartbeats(quiet.client_received), [])
        self.assertTrue(quiet.client.is_connected)
        self.assertEqual(len(heartbeats(other.client_received)), 5)

    def test_peer_without_heartbeat_capability_gets_none(self) -> None:
        """A client that does not announce the capability is never sent heartbeats (mixing is safe)."""

        class OldClient(HubClientProtocol):
            def __init__(self) -> None:
                super().__init__()
                self.session.core = ClientConnection(capabilities=(CAP_BATCH,))

        server = server_for(tight())
        old = server.connect("plain", client_protocol=OldClient)
        server.advance(5.0)
        self.assertEqual(heartbeats(old.client_received), [])
        self.assertTrue(old.client.is_connected)

    def test_server_time_and_metadata_reach_the_client(self) -> None:
        """The client callback gets an aware UTC server_time and the metadata bytes."""
        events: list[ServerHeartbeatEvent] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, metadata_provider=lambda: b"v1"))
        server.clock.advance(1_700_000_000)
        server.connect("plain", options=HubClientOptions(on_server_heartbeat=events.append))
        server.advance(1.0)
        self.assertEqual(
            events,
            [ServerHeartbeatEvent(1, datetime.fromtimestamp(1_700_000_001, tz=UTC), b"v1")],
        )
        assert events[0].server_time.tzinfo is not None

    def test_per_connection_override_in_on_connecting(self) -> None:
        """on_connecting can give one connection sparser beats; it gets its own shared timer."""

        class MobileHub(Hub):
            hub_name = "mobile"

            def on_connecting(self, request: Any) -> None:
                if request.params.get("client") == ["mobile"]:
                    self.connection.heartbeat.override(interval=5.0, timeout=15.0)

        server = HubTestServer([MobileHub], heartbeat=HeartbeatPolicy.every(1.0))
        phone = server.connect(path="/hub/mobile?client=mobile")
        desk = server.connect(path="/hub/mobile")
        server.advance(10.0)
        self.assertEqual(len(heartbeats(phone.client_received)), 2)
        self.assertEqual(len(heartbeats(desk.client_received)), 10)
        assert phone.client.core.welcome is not None
        self.assertEqual(phone.client.core.welcome.heartbeat_interval, 5.0)
        self.assertEqual(phone.client.core.welcome.heartbeat_timeout, 15.0)

    def test_debug_log_events(self) -> None:
        """Timer start/stop, sends, acks and timeouts are logged at debug level."""
        set_log_level("debug")
        self.addCleanup(set_log_level, "info")
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server = server_for(tight())
        conn = server.connect("plain")
        server.advance(1.0)
        conn.freeze_client()
        server.advance(1.5)
        formats = " | ".join(str(e.get("log_format")) for e in observer)
        for phrase in ("heartbeat timer started", "sent to", "timed out", "heartbeat timer stopped"):
            self.assertIn(phrase, formats)
        # Acks are counted, and logged once per tick rather than once per ack.
        self.assertIn(1, [e.get("acknowledged") for e in observer])


class PrecedenceTests(SynchronousTestCase):
    """Global options x hub decorator, as a full matrix."""

    GLOBAL_ON = HeartbeatPolicy(enabled=True, interval=2.0, timeout=6.0)
    GLOBAL_OFF = HeartbeatPolicy(enabled=False, interval=2.0, timeout=6.0)

    def effective(self, global_policy: HeartbeatPolicy, decorate: Any) -> tuple[HeartbeatPolicy, int]:
        class MatrixHub(Hub):
            hub_name = "matrix"

        if decorate is not None:
            decorate(MatrixHub)
        server = HubTestServer([MatrixHub], heartbeat=global_policy)
        conn = server.connect("matrix")
        server.advance(10.0)
        return server.factory.hub_runtime("matrix").heartbeat_policy, len(heartbeats(conn.client_received))

    def test_matrix(self) -> None:
        """Every combination of global on/off and decorator absent/on/off/override gives the documented policy."""
        cases = [
            # (global, decorator, enabled, interval, timeout, beats in 10 s)
            (self.GLOBAL_ON, None, True, 2.0, 6.0, 5),
            (self.GLOBAL_ON, heartbeat(), True, 2.0, 6.0, 5),
            (self.GLOBAL_ON, heartbeat(enabled=False), False, 2.0, 6.0, 0),
            (self.GLOBAL_ON, heartbeat(interval=5.0, timeout=None), True, 5.0, None, 2),
            (self.GLOBAL_OFF, None, False, 2.0, 6.0, 0),
            (self.GLOBAL_OFF, heartbeat(), True, 2.0, 6.0, 5),
            (self.GLOBAL_OFF, heartbeat(enabled=False), False, 2.0, 6.0, 0),
            (self.GLOBAL_OFF, heartbeat(interval=5.0, timeout=12.0), True, 5.0, 12.0, 2),
        ]
        for global_policy, decorate, enabled, interval, timeout, beats in cases:
            policy, seen = self.effective(global_policy, decorate)
            actual = (policy.enabled, policy.interval, policy.timeout, seen)
            self.assertEqual(actual, (enabled, interval, timeout, beats))

    def test_decorator_metadata_provider_wins(self) -> None:
        """A hub's metadata provider replaces the global one; without one, the global one is used."""
        global_policy = HeartbeatPolicy(enabled=True, interval=1.0, metadata_provider=lambda: b"global")

        @heartbeat(metadata_provider=lambda: b"hub")
        class OwnHub(Hub):
            hub_name = "own"

        class InheritingHub(Hub):
            hub_name = "inheriting"

        server = HubTestServer([OwnHub, InheritingHub], heartbeat=global_policy)
        own, inheriting = server.connect("own"), server.connect("inheriting")
        server.advance(1.0)
        self.assertEqual([m.metadata for m in heartbeats(own.client_received)], [b"hub"])
        self.assertEqual([m.metadata for m in heartbeats(inheriting.client_received)], [b"global"])

    def test_default_is_off(self) -> None:
        """With no global policy and no decorator, no heartbeats are sent."""
        server = HubTestServer([partial(PlainHub, [])])
        conn = server.connect("plain")
        server.advance(120.0)
        self.assertEqual(heartbeats(conn.client_received), [])


class ValidationTests(SynchronousTestCase):
    def test_rejects_non_positive(self) -> None:
        """Zero or negative intervals and timeouts are rejected with a clear message."""
        for bad in (0, -1, float("nan")):
            with self.assertRaises(HeartbeatConfigurationError) as raised:
                HeartbeatPolicy.every(bad)
            self.assertIn("interval", str(raised.exception))
        with self.assertRaises(HeartbeatConfigurationError):
            HeartbeatPolicy(enabled=True, interval=1.0, timeout=0)
        with self.assertRaises(HeartbeatConfigurationError):
            heartbeat(interval=-5)
        with self.assertRaises(HeartbeatConfigurationError):
            HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=0))

    def test_warns_when_timeout_shorter_than_interval(self) -> None:
        """A timeout shorter than the interval works but warns."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            HeartbeatPolicy(enabled=True, interval=10.0, timeout=1.0)
        self.assertEqual([w.category for w in caught], [HeartbeatConfigurationWarning])

    def test_one_call_form_defaults_to_three_intervals(self) -> None:
        """every(interval) sets the timeout to 3 x interval, like Tank; both sides."""
        self.assertEqual(HeartbeatPolicy.every(5.0).timeout, 15.0)
        self.assertEqual(HubClientOptions.heartbeat_every(2.0).heartbeat_timeout, 6.0)
        self.assertIsNone(HeartbeatPolicy.every(5.0, None).timeout)


class ClientHeartbeatTests(SynchronousTestCase):
    def test_round_trip_and_clock_offset(self) -> None:
        """The client measures RTT from echoed times and estimates the server clock offset."""
        events: list[ClientHeartbeatEvent] = []
        server = server_for()
        options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=1.0), on_heartbeat_response=events.append)
        conn = server.connect("plain", options=options)
        server.advance(0.5)
        conn.freeze_server()
        server.advance(0.7)  # our beat at 1.0 is answered at 1.2
        conn.thaw()
        server.flush()
        self.assertEqual(len(events), 1)
        self.assertAlmostEqual(events[0].round_trip, 0.2)
        self.assertAlmostEqual(conn.client.round_trip, 0.2)
        # One clock for both sides: the true offset is 0 and it lies within the error bound.
        offset = conn.client.clock_offset
        assert offset is not None
        self.assertLessEqual(abs(offset.offset), offset.error + 1e-9)
        self.assertAlmostEqual(offset.error, 0.1)

    def test_server_answers_client_heartbeats_with_its_own_off(self) -> None:
        """The server echoes client heartbeats even with server heartbeats disabled."""
        events: list[ClientHeartbeatEvent] = []
        server = server_for(HeartbeatPolicy(enabled=False))
        options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=1.0), on_heartbeat_response=events.append)
        conn = server.connect("plain", options=options)
        server.advance(5.0)
        self.assertEqual([e.sequence for e in events], [1, 2, 3, 4, 5])
        self.assertEqual(heartbeats(conn.client_received), [])

    def test_client_times_out_silent_server(self) -> None:
        """Against a frozen server the client reports TIMED_OUT at send time + timeout and calls its hook."""
        timeouts: list[bool] = []
        server = server_for()
        options = HubClientOptions(
            heartbeat=HeartbeatPolicy(enabled=True, interval=1.0, timeout=2.0), on_heartbeat_timeout=lambda: timeouts.append(True)
        )
        conn = server.connect("plain", options=options)
        pending = conn.client.call("echo", 1)
        conn.freeze_server()
        server.advance(2.99)
        self.assertTrue(conn.client.is_connected)
        server.advance(0.01)  # beat at 1.0 + timeout 2.0
        reason = conn.client.disconnect_reason
        assert reason is not None
        self.assertEqual((reason.kind, timeouts), (DisconnectKind.TIMED_OUT, [True]))
        self.failureResultOf(pending)

    def test_stall_of_own_reactor_gets_one_more_exchange(self) -> None:
        """A timeout right after our own loop stalled is deferred once; a live server then keeps the link."""
        server = server_for()
        options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=1.0, timeout=2.0))
        conn = server.connect("plain", options=options)
        server.advance(1.5)
        server.stall(3.0)
        self.assertTrue(conn.client.is_connected)
        server.advance(10.0)
        self.assertTrue(conn.client.is_connected)


class StallTests(SynchronousTestCase):
    def test_server_stall_causes_no_false_timeout(self) -> None:
        """The server's reactor blocked 3 s with timeout 2 s does not drop a live client."""
        disconnects: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=2.0), disconnects=disconnects)
        conn = server.connect("plain")
        server.advance(1.5)
        server.stall(3.0)
        server.advance(10.0)
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(disconnects, [])

    def test_dead_peer_is_still_dropped_after_a_stall(self) -> None:
        """After a stall a really dead client gets one more exchange, then is dropped as timed out."""
        disconnects: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=2.0), disconnects=disconnects)
        conn = server.connect("plain")
        server.advance(1.5)
        conn.freeze_client()
        server.advance(0.7)  # t = 2.2: the beat at 2.0 is unanswered, its check is due at 4.0
        server.stall(3.0)  # t = 5.2: the check fires late, after a stall -> one more exchange
        self.assertEqual(disconnects, [])
        server.advance(1.99)
        self.assertEqual(disconnects, [])
        server.advance(0.01)  # grace deadline: 5.2 + 2.0
        self.assertEqual([r.kind for r in disconnects], [DisconnectKind.TIMED_OUT])


class AnyTrafficTests(SynchronousTestCase):
    class DeafClient(HubClientProtocol):
        """A client whose heartbeat answers are stuck (e.g. behind bulk data)."""

        def __init__(self) -> None:
            super().__init__()
            core = self.core
            original = core._handle

            def handle(message: Any, now: float) -> Any:
                if message.kind == MessageKind.SERVER_HEARTBEAT:
                    return None
                return original(message, now)

            core._handle = handle  # type: ignore[method-assign]

    def run_busy_client(self, any_traffic_counts: bool) -> TestConnection:
        policy = HeartbeatPolicy(enabled=True, interval=1.0, timeout=2.0, any_traffic_counts=any_traffic_counts)
        server = server_for(policy)
        conn = server.connect("plain", client_protocol=self.DeafClient)
        for _ in range(40):
            if conn.client.is_connected:
                conn.client.call("echo", b"x" * 100).addErrback(lambda f: None)
            server.advance(0.25)
        return conn

    def test_traffic_counts_as_life_when_enabled(self) -> None:
        """With any_traffic_counts, a client that sends data but no heartbeat answers stays connected."""
        conn = self.run_busy_client(True)
        self.assertTrue(conn.client.is_connected)

    def test_partial_large_message_counts_as_life(self) -> None:
        """Bytes of one large message still arriving keep the sender alive, without any complete frame."""
        policy = HeartbeatPolicy(enabled=True, interval=1.0, timeout=2.0, any_traffic_counts=True)
        disconnects: list[DisconnectReason] = []
        server = server_for(policy, disconnects=disconnects)
        conn = server.connect("plain", client_protocol=self.DeafClient)
        conn.client.call("echo", b"x" * 200_000).addErrback(lambda f: None)
        wire = conn.client_transport.getOutBuffer()  # taken off the link: we deliver it slowly
        chunk = len(wire) // 20 + 1
        for start in range(0, len(wire) - chunk, chunk):  # all but the last chunk: never a whole frame
            conn.server_protocol.dataReceived(wire[start : start + chunk])
            server.advance(0.5)
        self.assertGreaterEqual(server.clock.seconds(), 9.0)
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(disconnects, [])

    def test_traffic_does_not_count_by_default(self) -> None:
        """Without it, the same client is timed out."""
        conn = self.run_busy_client(False)
        self.assertFalse(conn.client.is_connected)


class ReconnectTests(SynchronousTestCase):
    def test_full_jitter_delays_are_seeded_and_bounded(self) -> None:
        """Delays are uniform in [0, min(cap, base * factor^(n-1))] from the given RNG."""
        policy = full_jitter_policy(initial_delay=0.5, max_delay=4.0, factor=2.0, rng=random.Random(7))
        reference = random.Random(7)
        expected = [reference.uniform(0, min(4.0, 0.5 * 2 ** (n - 1))) for n in range(1, 9)]
        self.assertEqual([policy(n) for n in range(1, 9)], expected)

    def test_reconnects_after_timeout_with_policy_delays(self) -> None:
        """After a heartbeat timeout the client retries at the policy's delays and runs its restore hook."""
        disconnects: list[DisconnectReason] = []
        server = server_for(disconnects=disconnects)
        endpoint = server.endpoint()
        restored: list[str] = []
        delays = [1.5, 3.0]
        attempts_at: list[float] = []
        original_connect = endpoint.connect

        def recording_connect(factory: Any) -> Any:
            attempts_at.append(server.clock.seconds())
            return original_connect(factory)

        endpoint.connect = recording_connect  # type: ignore[method-assign]
        client = ReconnectingHubClient(
            "ws://127.0.0.1/hub", "plain",
            options=HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=1.0, timeout=1.0)),
            on_connected=lambda c: restored.append(c.connection_id),
            retry_policy=lambda attempt: delays[attempt - 1],
            endpoint=endpoint, clock=server.clock,
        )
        client.start()
        server.flush()
        self.assertEqual(len(restored), 1)
        server.connections[-1].freeze_server()
        server.advance(2.0)  # beat at 1.0 unanswered; timed out at 2.0
        self.assertEqual([r.kind for r in client.disconnects], [DisconnectKind.TIMED_OUT])
        endpoint.refusing = True
        server.advance(1.5 + 3.0 - 0.01)
        endpoint.refusing = False
        server.advance(0.02)
        self.assertEqual(attempts_at, [0.0, 3.5, 6.5])
        self.assertEqual(len(restored), 2)
        result = client.call("echo", "back")
        server.flush()
        self.assertEqual(self.successResultOf(result), "back")
        disconnects.clear()
        stopped = client.stop()
        server.flush()
        self.successResultOf(stopped)
        # A normal WebSocket close, not a dropped link; and no reconnection afterwards.
        self.assertEqual([r.kind for r in disconnects], [DisconnectKind.NORMAL])
        server.advance(60)
        self.assertEqual(len(restored), 2)


class ReconnectingServiceTests(SynchronousTestCase):
    """ReconnectingHubClient is an IService with a bounded memory and a synchronous notify."""

    def make(self, server: HubTestServer) -> ReconnectingHubClient:
        return ReconnectingHubClient(
            "ws://127.0.0.1/hub", "plain", retry_policy=lambda attempt: 1.0,
            endpoint=server.endpoint(), clock=server.clock,
        )

    def test_runs_under_a_parent_service(self) -> None:
        """setServiceParent + startService connects; stopping the parent closes the connection normally."""
        from twisted.application.service import IService, MultiService

        disconnects: list[DisconnectReason] = []
        server = server_for(disconnects=disconnects)
        client = self.make(server)
        self.assertTrue(IService.providedBy(client))
        parent = MultiService()
        client.setServiceParent(parent)
        parent.startService()
        server.flush()
        self.assertTrue(client.running)
        assert client.current is not None
        self.assertTrue(client.current.is_connected)
        stopped = parent.stopService()
        server.flush()
        self.successResultOf(stopped)
        self.assertEqual([r.kind for r in disconnects], [DisconnectKind.NORMAL])
        self.assertFalse(client.running)

    def test_disconnects_are_bounded(self) -> None:
        """A flapping link keeps only the last 100 disconnect reasons, not one per flap forever."""
        from twisted_hub._twisted.reconnect import MAX_REMEMBERED_DISCONNECTS

        server = server_for()
        client = self.make(server)
        client.start()
        for _ in range(MAX_REMEMBERED_DISCONNECTS + 20):
            server.flush()
            server.connections[-1].drop()
            server.advance(1.0)
        self.assertEqual(len(client.disconnects), MAX_REMEMBERED_DISCONNECTS)
        self.assertGreater(client.connections, MAX_REMEMBERED_DISCONNECTS)
        client.stop()

    def test_notify_is_synchronous_like_the_plain_client(self) -> None:
        """notify() sends on the current connection and returns None; without one it raises."""
        from twisted_hub import ConnectionClosedError

        server = server_for()
        client = self.make(server)
        with self.assertRaises(ConnectionClosedError):
            client.notify("echo", 1)
        client.start()
        server.flush()
        self.assertIsNone(client.notify("echo", 1))
        server.flush()
        self.assertIn(MessageKind.NOTIFY, [m.kind for p in server.connections[-1].server_received for m in decode_frame(p)])
        client.stop()
        server.flush()


class OverrideTimingTests(SynchronousTestCase):
    def test_override_after_connecting_is_refused(self) -> None:
        """heartbeat.override() outside on_connecting raises instead of half-applying."""

        class LateHub(Hub):
            hub_name = "late"

            @method
            def change(self) -> str:
                try:
                    self.connection.heartbeat.override(interval=9.0)
                except HubStateError as e:
                    assert isinstance(e, RuntimeError)  # what it raised before HubStateError existed
                    return str(e)
                return "changed"

        server = HubTestServer([LateHub], heartbeat=HeartbeatPolicy.every(1.0))
        conn = server.connect("late")
        result = conn.client.call("change")
        server.flush()
        self.assertEqual(self.successResultOf(result), "heartbeat override must happen in on_connecting")


def time_of_disconnect(server: HubTestServer, conn: TestConnection, limit: float, step: float = 0.01) -> float | None:
    """Advance in small steps until the server side of C{conn} is closed; return that time (None: not within C{limit})."""
    end = server.clock.seconds() + limit
    while server.clock.seconds() < end - 1e-9:
        server.advance(step)
        if conn.server_protocol.disconnect_reason is not None:
            return server.clock.seconds()
    return None


class LateAnswerTests(SynchronousTestCase):
    """Answers slower than the interval but faster than the timeout are life, on both sides (issue 8, part 1)."""

    policy = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)

    def test_server_keeps_a_slow_client(self) -> None:
        """Round trips of 1.2x and 2.5x the interval never time a live client out over 100 intervals."""
        for one_way in (0.6, 1.25):
            disconnects: list[DisconnectReason] = []
            server = server_for(self.policy, disconnects=disconnects)
            conn = server.connect("plain")
            conn.set_latency(one_way)
            server.advance(100.0)
            self.assertTrue(conn.client.is_connected, one_way)
            self.assertEqual(disconnects, [], one_way)
            self.assertAlmostEqual(conn.hub.connection.heartbeat.latency, 2 * one_way)
            self.assertGreaterEqual(conn.server_protocol.core.heartbeat.acks, 95)

    def test_client_keeps_a_slow_server(self) -> None:
        """The client's own heartbeat tolerates the same round trips (server heartbeats off)."""
        for one_way in (0.6, 1.25):
            responses: list[ClientHeartbeatEvent] = []
            server = server_for()
            options = HubClientOptions(heartbeat=self.policy, on_heartbeat_response=responses.append)
            conn = server.connect("plain", options=options)
            conn.set_latency(one_way)
            server.advance(100.0)
            self.assertTrue(conn.client.is_connected, one_way)
            self.assertAlmostEqual(conn.client.round_trip, 2 * one_way)
            self.assertGreaterEqual(len(responses), 95)

    def test_both_directions_at_once(self) -> None:
        """Server and client heartbeats together on a 1.2 s round trip: nobody is dropped."""
        disconnects: list[DisconnectReason] = []
        server = server_for(self.policy, disconnects=disconnects)
        conn = server.connect("plain", options=HubClientOptions(heartbeat=self.policy))
        conn.set_latency(0.6)
        server.advance(100.0)
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(disconnects, [])

    def test_server_still_drops_a_dead_slow_client_in_bound(self) -> None:
        """On the same slow link, a client that stops answering is dropped within interval + timeout."""
        disconnects: list[DisconnectReason] = []
        server = server_for(self.policy, disconnects=disconnects)
        conn = server.connect("plain")
        conn.set_latency(0.6)
        server.advance(10.3)
        conn.freeze_client()
        frozen_at = server.clock.seconds()
        dropped_at = time_of_disconnect(server, conn, limit=6.0)
        assert dropped_at is not None
        self.assertLessEqual(dropped_at - frozen_at, 1.0 + 3.0)
        self.assertEqual([r.kind for r in disconnects], [DisconnectKind.TIMED_OUT])

    def test_client_still_drops_a_dead_slow_server_in_bound(self) -> None:
        """On the same slow link, the client drops a server that stops answering within interval + timeout."""
        server = server_for()
        conn = server.connect("plain", options=HubClientOptions(heartbeat=self.policy))
        conn.set_latency(0.6)
        server.advance(10.3)
        conn.freeze_server()
        frozen_at = server.clock.seconds()
        while conn.client.disconnect_reason is None and server.clock.seconds() < frozen_at + 6.0:
            server.advance(0.01)
        reason = conn.client.disconnect_reason
        assert reason is not None
        self.assertEqual(reason.kind, DisconnectKind.TIMED_OUT)
        self.assertLessEqual(server.clock.seconds() - frozen_at, 1.0 + 3.0 + 0.01)


class ClientTimeoutCloseTests(SynchronousTestCase):
    """The client's timeout tells the server why: CLOSE and close frame 4001 (issue 8, part 2)."""

    def test_server_learns_peer_timed_out(self) -> None:
        """A frozen server, once thawed, reads the client's 4001 and records PEER_TIMED_OUT, not connection-lost."""
        disconnects: list[DisconnectReason] = []
        server = server_for(disconnects=disconnects)
        conn = server.connect("plain", options=HubClientOptions(heartbeat=HeartbeatPolicy.every(1.0)))
        conn.freeze_server()
        server.advance(4.0)
        reason = conn.client.disconnect_reason
        assert reason is not None
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.TIMED_OUT, 4001))
        self.assertEqual(disconnects, [])
        conn.thaw()
        server.flush()
        self.assertEqual([(r.kind, r.code) for r in disconnects], [(DisconnectKind.PEER_TIMED_OUT, 4001)])

    def test_close_message_and_frame_on_the_wire(self) -> None:
        """The bytes the client writes on timeout hold a CLOSE message 4001 and then a close frame 4001."""
        server = server_for()
        conn = server.connect("plain", options=HubClientOptions(heartbeat=HeartbeatPolicy.every(1.0)))
        conn.freeze_server()
        server.advance(4.0)
        conn.thaw()
        server.flush()
        self.assertIn([MessageKind.CLOSE, 4001, "heartbeat timeout"], [
            [m.kind, m.code, m.reason] for payload in conn.server_received for m in decode_frame(payload)
            if m.kind == MessageKind.CLOSE
        ])
        self.assertEqual(conn.server_protocol.remoteCloseCode, 4001)

    def test_on_disconnected_option_hears_peer_timed_out(self) -> None:
        """HubClientOptions(on_disconnected=...) is called with PEER_TIMED_OUT when the server times us out."""
        heard: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=2.0))
        conn = server.connect("plain", options=HubClientOptions(on_disconnected=heard.append))
        server.advance(0.5)
        conn.freeze_client()
        server.advance(4.0)
        conn.thaw()
        server.flush()
        self.assertEqual([(r.kind, r.code) for r in heard], [(DisconnectKind.PEER_TIMED_OUT, 4001)])

    def test_stopped_peer_is_aborted_after_a_bounded_wait(self) -> None:
        """If the close frame cannot be written (peer reads nothing), the socket is aborted after 1 s."""
        server = server_for()
        conn = server.connect("plain", options=HubClientOptions(heartbeat=HeartbeatPolicy.every(1.0)))
        aborted: list[bool] = []
        transport = conn.client_transport
        transport.loseConnection = lambda: None  # type: ignore[method-assign]  # a buffer that never drains
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        conn.freeze_server()
        server.advance(4.0)  # timed out at 4.0 (beat at 1.0 + 3.0)
        self.assertEqual(aborted, [])
        server.advance(1.0)
        self.assertEqual(aborted, [True])


class PingFallbackTests(SynchronousTestCase):
    """Clients without hub heartbeats are checked with WebSocket pings (issue 8, part 3)."""

    class OldClient(HubClientProtocol):
        """A client that does not announce the heartbeat capability (answers pings, as RFC 6455 says)."""

        def __init__(self) -> None:
            super().__init__()
            self.session.core = ClientConnection(capabilities=(CAP_BATCH,))
            self.pings: list[bytes] = []

        def onPing(self, payload: bytes) -> None:
            self.pings.append(payload)
            super().onPing(payload)

    class DeafOldClient(OldClient):
        """The same client, but its pongs never come (a dead browser tab, a half-open path)."""

        def onPing(self, payload: bytes) -> None:
            self.pings.append(payload)

    def test_pings_keep_an_answering_client(self) -> None:
        """One ping per tick carrying the sequence; answered pongs keep the client and measure latency."""
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0))
        conn = server.connect("plain", client_protocol=self.OldClient)
        conn.set_latency(0.1)
        server.advance(20.0)
        client = conn.client
        assert isinstance(client, self.OldClient)
        self.assertTrue(client.is_connected)
        self.assertEqual(client.pings[:3], [(1).to_bytes(8, "big"), (2).to_bytes(8, "big"), (3).to_bytes(8, "big")])
        self.assertEqual(heartbeats(conn.client_received), [])
        self.assertAlmostEqual(conn.hub.connection.heartbeat.latency, 0.2)
        self.assertEqual([round(v, 6) for v in conn.hub.connection.items["acks"][:2]], [0.2, 0.2])

    def test_silent_client_is_dropped_with_its_own_reason(self) -> None:
        """A client that answers no ping is closed with 4001 'websocket ping timeout' at first ping + timeout."""
        disconnects: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0), disconnects=disconnects)
        conn = server.connect("plain", client_protocol=self.DeafOldClient)
        server.advance(3.99)
        self.assertEqual(disconnects, [])
        server.advance(0.01)
        self.assertEqual(
            [(r.kind, r.code, r.message) for r in disconnects],
            [(DisconnectKind.TIMED_OUT, 4001, "websocket ping timeout")],
        )
        server.flush()
        reason = conn.client.disconnect_reason
        assert reason is not None
        self.assertEqual((reason.kind, reason.message), (DisconnectKind.PEER_TIMED_OUT, "websocket ping timeout"))

    def test_one_ping_frame_per_tick(self) -> None:
        """The ping frame is built once per tick and shared, like the heartbeat frame."""
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0))
        conns = [server.connect("plain", client_protocol=self.OldClient) for _ in range(3)]
        frames: list[bytes] = []
        for conn in conns:
            conn.server_protocol.sendData = frames.append  # type: ignore[method-assign]
        server.advance(1.0)
        self.assertEqual(len(frames), 3)
        self.assertEqual({id(frame) for frame in frames}, {id(frames[0])})
        self.assertEqual(frames[0], b"\x89\x08" + (1).to_bytes(8, "big"))

    def test_option_turns_it_off(self) -> None:
        """ping_fallback=False leaves such clients unchecked (the previous behaviour)."""
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0, ping_fallback=False))
        conn = server.connect("plain", client_protocol=self.DeafOldClient)
        server.advance(20.0)
        client = conn.client
        assert isinstance(client, self.OldClient)
        self.assertEqual(client.pings, [])
        self.assertTrue(client.is_connected)

    def test_foreign_pongs_are_ignored(self) -> None:
        """Unsolicited pongs (any payload) neither count as answers nor break the connection."""
        disconnects: list[DisconnectReason] = []
        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0), disconnects=disconnects)
        conn = server.connect("plain", client_protocol=self.DeafOldClient)
        for payload in (b"", b"hello", (99).to_bytes(8, "big")):
            conn.client.sendPong(payload)
            server.advance(1.0)
        self.assertEqual(conn.server_protocol.core.heartbeat.acks, 0)
        server.advance(1.0)
        self.assertEqual([r.message for r in disconnects], ["websocket ping timeout"])


class VocabularyTests(SynchronousTestCase):
    """One heartbeat vocabulary on both ends (issue 8, part 4)."""

    def test_client_takes_a_policy(self) -> None:
        """HubClientOptions(heartbeat=policy) beats as the policy says; the deprecated shorthands, read, mirror it."""
        options = HubClientOptions(heartbeat=HeartbeatPolicy.every(2.0))
        self.assertEqual((options.heartbeat_interval, options.heartbeat_timeout), (2.0, 6.0))
        server = server_for()
        conn = server.connect("plain", options=options)
        server.advance(10.0)
        self.assertEqual(conn.client.core.heartbeat.newest_sequence, 5)

    def test_shorthands_are_deprecated_but_still_work(self) -> None:
        """Each of the four flat heartbeat fields warns (naming heartbeat=) and still builds the same policy."""
        cases = [
            ({"heartbeat_interval": 2.0}, HeartbeatPolicy(enabled=True, interval=2.0)),
            ({"heartbeat_interval": 2.0, "heartbeat_timeout": 6.0}, HeartbeatPolicy.every(2.0)),
            ({"heartbeat_interval": 2.0, "any_traffic_counts": True},
             HeartbeatPolicy(enabled=True, interval=2.0, any_traffic_counts=True)),
            ({"heartbeat_interval": 2.0, "stall_grace": False}, HeartbeatPolicy(enabled=True, interval=2.0, stall_grace=False)),
        ]
        for given, policy in cases:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                options = HubClientOptions(**given)  # type: ignore[arg-type]
            self.assertEqual(options.heartbeat, policy, given)
            self.assertEqual([w.category for w in caught], [DeprecationWarning], given)
            message = str(caught[0].message)
            for name in given:
                self.assertIn(f"{name}=", message)
            self.assertIn("use HubClientOptions(heartbeat=HeartbeatPolicy(", message)
            self.assertEqual(caught[0].filename, __file__)

    def test_heartbeat_policy_and_copies_do_not_warn(self) -> None:
        """heartbeat= alone, and a dataclasses.replace() copy of options (which passes the mirrored shorthands), do not warn."""
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=2.0, stall_grace=False))
            copy = dataclasses.replace(options, call_timeout=5.0)
        self.assertEqual((copy.heartbeat, copy.call_timeout), (options.heartbeat, 5.0))

    def test_policy_and_conflicting_shorthand_refused(self) -> None:
        """Giving both heartbeat= and different shorthand values is an error, not a silent choice."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with self.assertRaises(HeartbeatConfigurationError):
                HubClientOptions(heartbeat=HeartbeatPolicy.every(2.0), heartbeat_interval=5.0)

    def test_client_heartbeats_off_by_default(self) -> None:
        """A default client sends no heartbeat of its own, yet answers the server's."""
        server = server_for(HeartbeatPolicy.every(1.0))
        conn = server.connect("plain")
        server.advance(10.0)
        self.assertIsNone(HubClientOptions().heartbeat)
        self.assertIsNone(conn.client.core.heartbeat.newest_sequence)
        self.assertNotIn(MessageKind.CLIENT_HEARTBEAT, [m.kind for p in conn.server_received for m in decode_frame(p)])
        self.assertEqual(conn.server_protocol.core.heartbeat.acks, 10)

    def test_client_warns_like_the_server_at_the_users_line(self) -> None:
        """A client timeout shorter than its interval warns, and the warning points at the caller's file."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=10.0, timeout=1.0))
            heartbeat(interval=10.0, timeout=1.0)(type("Hub2", (Hub,), {"hub_name": "h2"}))
            HubTestServer([type("Hub3", (Hub,), {"hub_name": "h3"})], heartbeat=HeartbeatPolicy(
                enabled=True, interval=10.0, timeout=1.0))
        self.assertEqual([w.category for w in caught], [HeartbeatConfigurationWarning] * 2)
        self.assertEqual({w.filename for w in caught}, {__file__})

    def test_decorator_override_warns_at_the_users_line(self) -> None:
        """A warning raised while a hub's override is applied points outside the library (not dataclasses.py)."""

        @heartbeat(interval=10.0, timeout=1.0)
        class Warned(Hub):
            hub_name = "warned"

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            HubTestServer([Warned])
        self.assertEqual([w.category for w in caught], [HeartbeatConfigurationWarning])
        self.assertNotIn("dataclasses", caught[0].filename)
        self.assertNotIn("twisted_hub", caught[0].filename)

    def test_no_float_noise_on_the_wire(self) -> None:
        """every(0.2) announces timeout 0.6 exactly, not 0.6000000000000001."""
        policy = HeartbeatPolicy.every(0.2)
        self.assertEqual((policy.interval, policy.timeout), (0.2, 0.6))
        server = server_for(policy)
        conn = server.connect("plain")
        welcome = conn.client.core.welcome
        assert welcome is not None
        self.assertEqual((repr(welcome.heartbeat_interval), repr(welcome.heartbeat_timeout)), ("0.2", "0.6"))

    def test_metadata_provider_that_raises(self) -> None:
        """A failing metadata provider: the beat still goes to every connection, logged once per tick."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def broken() -> bytes:
            raise RuntimeError("no metadata today")

        server = server_for(HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0, metadata_provider=broken))
        conns = [server.connect("plain") for _ in range(3)]
        server.advance(2.0)
        for conn in conns:
            self.assertEqual([(m.sequence, m.metadata) for m in heartbeats(conn.client_received)], [(1, None), (2, None)])
        failures = [e for e in observer if "metadata provider failed" in str(e.get("log_format"))]
        self.assertEqual(len(failures), 2)
        self.flushLoggedErrors(RuntimeError)

    def test_client_callback_that_raises(self) -> None:
        """A raising on_server_heartbeat / on_heartbeat_response is logged; the connection stays."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def broken(event: object) -> None:
            raise ValueError("callback bug")

        server = server_for(HeartbeatPolicy.every(1.0))
        options = HubClientOptions(
            heartbeat=HeartbeatPolicy.every(1.0), on_server_heartbeat=broken, on_heartbeat_response=broken
        )
        conn = server.connect("plain", options=options)
        server.advance(3.0)
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 6)
        self.assertEqual(len([e for e in observer if "client callback" in str(e.get("log_format"))]), 6)
        self.assertEqual(conn.server_protocol.core.heartbeat.acks, 3)


class PingFrameDocTests(SynchronousTestCase):
    def test_ping_frame_matches_protocol_doc(self) -> None:
        """The ping frame bytes in docs/protocol.md section 5.3 are what the server sends, and pongs parse back."""
        from pathlib import Path

        from twisted_hub._twisted.liveness import ping_frame, ping_sequence

        doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
        line = next(x for x in doc.splitlines() if x.startswith("ping frame for sequence 3"))
        self.assertEqual(ping_frame(3), bytes.fromhex(line.split(":", 1)[1]))
        self.assertEqual((ping_sequence(ping_frame(3)[2:]), ping_sequence(b"short")), (3, None))
