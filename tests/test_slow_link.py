"""
"Progress counts as life" on a Clock: a peer taking the data we queued for
it is alive even when our heartbeat, queued behind that data, is answered
late; a peer that stops taking it is still dropped within interval +
timeout of its last progress.  The real-process scenarios (a rate-limited
proxy, SIGSTOP) are in test_slow_link_processes.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import DisconnectKind, Hub, HubClientOptions, method
from twisted_hub._core.connection import receiver_call_payload
from twisted_hub._core.heartbeat import MIN_PROGRESS_BYTES, HeartbeatPolicy, HeartbeatTracker, HeartbeatVerdict, Traffic
from twisted_hub._core.wire import MessageKind, decode_frame
from twisted_hub.metrics import ClientMetrics
from twisted_hub.testing import HubTestServer, TestConnection

POLICY = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)
#: the bound for a peer that stops consuming: interval + timeout after its last progress
BOUND = POLICY.interval + POLICY.timeout


class SampleOutputTests(SynchronousTestCase):
    """HeartbeatTracker.sample_output: when a sample shows the peer taking queued data."""

    def test_first_sample_is_a_baseline(self) -> None:
        """One sample alone shows nothing, however much was taken."""
        tracker = HeartbeatTracker()
        self.assertFalse(tracker.sample_output(1.0, 1_000_000, 10))
        self.assertIsNone(tracker.progress_at)

    def test_draining_backlog_is_progress(self) -> None:
        """A backlog that shrank between samples is progress, seen at the sample that shows it."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 900_000, 800_000)
        self.assertTrue(tracker.sample_output(2.0, 900_000, 600_000))
        self.assertEqual(tracker.progress_at, 2.0)
        # More written and still taken: written 1.8 MB, 1.0 MB queued -> taken 800 kB > 300 kB.
        self.assertTrue(tracker.sample_output(3.0, 1_800_000, 1_000_000))
        self.assertEqual(tracker.progress_at, 3.0)

    def test_no_backlog_no_progress(self) -> None:
        """Nothing queued at the previous sample: bytes taken since (a heartbeat a frozen peer's kernel took) prove nothing."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 1_000, 0)
        self.assertFalse(tracker.sample_output(2.0, 1_030, 0))
        self.assertFalse(tracker.sample_output(3.0, 1_060, 0))
        self.assertIsNone(tracker.progress_at)

    def test_bytes_in_flight_are_no_backlog(self) -> None:
        """A heartbeat caught in flight (23 bytes queued) and acknowledged by the next sample is not progress."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 402, 23)
        self.assertFalse(tracker.sample_output(2.0, 425, 0))
        tracker.sample_output(3.0, 4_000 + MIN_PROGRESS_BYTES - 1, MIN_PROGRESS_BYTES - 1)
        self.assertFalse(tracker.sample_output(4.0, 4_000 + MIN_PROGRESS_BYTES - 1, 0))
        tracker.sample_output(5.0, 4_000 + 2 * MIN_PROGRESS_BYTES, MIN_PROGRESS_BYTES)
        self.assertTrue(tracker.sample_output(6.0, 4_000 + 2 * MIN_PROGRESS_BYTES, 0))

    def test_stuck_backlog_is_no_progress(self) -> None:
        """A backlog that only grows (we keep writing, nothing is taken) is no progress."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 500_000, 300_000)
        self.assertFalse(tracker.sample_output(2.0, 500_030, 300_030))
        self.assertFalse(tracker.sample_output(3.0, 600_000, 400_000))
        self.assertIsNone(tracker.progress_at)

    def test_recovering_from_an_overestimate_is_no_progress(self) -> None:
        """Taken is compared with the most ever taken: a dip (queued overestimated) and its recovery are not progress."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 100_000, 50_000)  # taken 50,000
        self.assertFalse(tracker.sample_output(2.0, 100_000, 60_000))  # 40,000: queued overestimated
        self.assertFalse(tracker.sample_output(3.0, 100_000, 50_000))  # back to 50,000
        self.assertTrue(tracker.sample_output(4.0, 100_000, 49_999))
        self.assertEqual(tracker.progress_at, 4.0)

    def test_unknown_queue_is_ignored(self) -> None:
        """A transport that cannot tell what is queued gives no sample at all."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 100_000, 50_000)
        self.assertFalse(tracker.sample_output(2.0, 100_000, None))
        self.assertTrue(tracker.sample_output(3.0, 100_000, 10_000))
        self.assertEqual(tracker.progress_at, 3.0)

    def test_a_new_wait_starts_afresh(self) -> None:
        """Once every beat is answered the samples are forgotten: consumption long before a new wait is not progress in it."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 10.0)
        tracker.sample_output(11.0, 1_000_000, 900_000)
        tracker.sample_output(12.0, 1_000_000, 700_000)
        tracker.acknowledged(1, 12.5)
        self.assertIsNone(tracker.progress_at)
        tracker.sent(2, 99.0)
        self.assertFalse(tracker.sample_output(100.0, 1_000_100, 100))  # a baseline, not "taken since 12.0"
        self.assertIsNone(tracker.progress_at)

    def test_stop_forgets_the_samples(self) -> None:
        """After stop() (unregistered, closing) the next sample is a baseline again."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 1_000, 500)
        tracker.sample_output(2.0, 1_000, 100)
        tracker.stop()
        self.assertIsNone(tracker.progress_at)
        self.assertFalse(tracker.sample_output(3.0, 1_000, 50))


class SampleInputTests(SynchronousTestCase):
    """HeartbeatTracker.sample_input: a large message still coming in is progress; small complete ones are not."""

    def test_message_still_arriving_is_progress(self) -> None:
        """Half a message at one sample and more bytes at the next: progress."""
        tracker = HeartbeatTracker()
        self.assertFalse(tracker.sample_input(1.0, 300_000, True))
        self.assertTrue(tracker.sample_input(2.0, 500_000, True))
        self.assertEqual(tracker.progress_at, 2.0)
        # The message completed between the samples: still progress (it was coming at 2.0).
        self.assertTrue(tracker.sample_input(3.0, 900_050, False))
        self.assertEqual(tracker.progress_at, 3.0)

    def test_a_trickle_is_not_progress(self) -> None:
        """Less than MIN_PROGRESS_BYTES arriving while a message is half received (a small one split in two): no progress."""
        tracker = HeartbeatTracker()
        tracker.sample_input(1.0, 1_000, True)
        self.assertFalse(tracker.sample_input(2.0, 1_000 + MIN_PROGRESS_BYTES - 1, True))

    def test_complete_messages_are_not_progress(self) -> None:
        """Bytes received while no message was half received (a chatty peer that does not answer) show nothing."""
        tracker = HeartbeatTracker()
        tracker.sample_input(1.0, 1_000, False)
        self.assertFalse(tracker.sample_input(2.0, 2_000, False))
        self.assertFalse(tracker.sample_input(3.0, 3_000, True))
        self.assertIsNone(tracker.progress_at)

    def test_a_stuck_message_is_not_progress(self) -> None:
        """Half a message and nothing more (the sender froze): no progress."""
        tracker = HeartbeatTracker()
        tracker.sample_input(1.0, 300_000, True)
        self.assertFalse(tracker.sample_input(2.0, 300_000, True))
        self.assertIsNone(tracker.progress_at)

    def test_either_direction_holds_the_deadline(self) -> None:
        """The deadline follows the newer of the two kinds of progress."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 0.0)
        tracker.sample_output(1.0, 100_000, 50_000)
        tracker.sample_output(2.0, 100_000, 40_000)  # output progress at 2.0
        tracker.sample_input(2.0, 10_000, True)
        tracker.sample_input(4.0, 20_000, True)  # input progress at 4.0
        self.assertEqual(tracker.deadline(3.0), 7.0)
        tracker.sample_output(5.0, 100_000, 30_000)
        self.assertEqual(tracker.deadline(3.0), 8.0)


class ProgressVerdictTests(SynchronousTestCase):
    """HeartbeatTracker.check with progress: PROGRESSING past the timeout, TIMED_OUT a timeout after progress stops."""

    def test_progress_holds_the_deadline_back(self) -> None:
        """An unanswered beat past its timeout is PROGRESSING while the peer takes data, TIMED_OUT a timeout after that."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        tracker.sample_output(1.0, 2_000_000, 2_000_000)
        tracker.sample_output(2.0, 2_000_000, 1_800_000)
        self.assertEqual(tracker.deadline(3.0), 5.0)  # progress seen at 2.0
        self.assertIs(tracker.check(3.9, POLICY, 0.0, None), HeartbeatVerdict.WAITING)
        self.assertIs(tracker.check(4.0, POLICY, 0.0, None), HeartbeatVerdict.PROGRESSING)
        # The peer stops taking anything (frozen once the buffers between us filled).
        tracker.sample_output(3.0, 2_000_000, 1_800_000)
        tracker.sample_output(4.0, 2_000_000, 1_800_000)
        self.assertIs(tracker.check(4.99, POLICY, 0.0, None), HeartbeatVerdict.PROGRESSING)
        self.assertIs(tracker.check(5.0, POLICY, 0.0, None), HeartbeatVerdict.TIMED_OUT)

    def test_avoided_timeouts_are_counted_once_per_beat(self) -> None:
        """timeouts_avoided counts each unanswered beat whose timeout progress excused once, however often it is checked."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 0.0)
        for second in range(0, 8):
            tracker.sample_output(float(second), 10_000_000, 10_000_000 - 200_000 * second)
        for now in (3.0, 4.0, 5.0, 6.0):
            self.assertIs(tracker.check(now, POLICY, 0.0, None), HeartbeatVerdict.PROGRESSING)
        self.assertEqual(tracker.timeouts_avoided, 1)
        tracker.acknowledged(1, 6.5)
        tracker.sent(2, 7.0)
        tracker.sample_output(8.0, 10_000_000, 8_000_000)
        tracker.sample_output(9.0, 10_000_000, 7_800_000)
        self.assertIs(tracker.check(10.0, POLICY, 0.0, None), HeartbeatVerdict.PROGRESSING)
        self.assertEqual(tracker.timeouts_avoided, 2)

    def test_old_progress_does_not_excuse_a_new_silence(self) -> None:
        """Progress before the oldest unanswered beat was sent leaves its deadline where it was."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 1_000, 900)
        tracker.sample_output(2.0, 1_000, 0)  # progress, dated 1.0
        tracker.sent(1, 5.0)
        self.assertEqual(tracker.deadline(3.0), 8.0)
        self.assertIs(tracker.check(8.0, POLICY, 0.0, None), HeartbeatVerdict.TIMED_OUT)
        self.assertEqual(tracker.timeouts_avoided, 0)

    def test_stall_grace_still_applies_after_progress(self) -> None:
        """When progress stops and our own loop stalled in the window, the stall grace comes on top."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        tracker.sample_output(1.0, 1_000_000, 900_000)
        tracker.sample_output(2.0, 1_000_000, 700_000)  # progress at 2.0: deadline 5.0
        self.assertIs(tracker.check(5.0, POLICY, 0.0, 4.5), HeartbeatVerdict.GRACE)
        self.assertIs(tracker.check(8.0, POLICY, 0.0, 4.5), HeartbeatVerdict.TIMED_OUT)


class PeerHeartbeatTests(SynchronousTestCase):
    """HeartbeatTracker.peer_heartbeat: the peer's own beats stand in for output no sample sees (a proxy's buffers)."""

    def test_peer_beats_hold_the_deadline_while_our_output_is_ahead(self) -> None:
        """Our beat follows 3 MB a proxy acknowledged at once (queued 0): the peer's beats keep it, a timeout past the last."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 0.0, 0)
        self.assertEqual(tracker.acknowledged(1, 0.01), 0.01)
        tracker.sent(2, 1.0, 3_000_000)
        for now in (2.0, 3.0, 4.0, 5.0):
            tracker.sample(now, Traffic(3_000_000, 0, 0, False))
            self.assertTrue(tracker.peer_heartbeat(now + 0.5))
        self.assertEqual(tracker.progress_at, 5.5)
        self.assertIs(tracker.check(6.0, POLICY, 0.0, None), HeartbeatVerdict.PROGRESSING)
        self.assertEqual(tracker.timeouts_avoided, 1)
        # The peer stops (its beats stop): gone a timeout after its last beat.
        self.assertIs(tracker.check(8.49, POLICY, 0.0, None), HeartbeatVerdict.PROGRESSING)
        self.assertIs(tracker.check(8.5, POLICY, 0.0, None), HeartbeatVerdict.TIMED_OUT)

    def test_without_output_ahead_peer_beats_excuse_nothing(self) -> None:
        """Less than MIN_PROGRESS_BYTES written between the answered beat and ours: nothing can hold ours up."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 0.0, 0)
        tracker.acknowledged(1, 0.01)
        tracker.sent(2, 1.0, MIN_PROGRESS_BYTES - 1)
        self.assertFalse(tracker.peer_heartbeat(2.0))
        self.assertIsNone(tracker.progress_at)
        self.assertIs(tracker.check(4.0, POLICY, 0.0, None), HeartbeatVerdict.TIMED_OUT)

    def test_output_before_an_answered_beat_is_not_ahead(self) -> None:
        """An answer to a beat written after 3 MB shows those 3 MB arrived: only output after it counts."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 0.0, 3_000_000)
        tracker.sent(2, 1.0, 3_000_010)
        tracker.acknowledged(1, 1.5)
        self.assertFalse(tracker.peer_heartbeat(2.0))
        tracker.sent(3, 2.0, 3_000_010 + MIN_PROGRESS_BYTES)
        tracker.acknowledged(2, 2.5)
        self.assertTrue(tracker.peer_heartbeat(3.0))

    def test_unknown_output_is_never_ahead(self) -> None:
        """A beat sent without a byte count (the adapter does not say): the peer's beats do not count."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 0.0)
        self.assertFalse(tracker.peer_heartbeat(1.0))

    def test_any_other_sign_of_life_moves_the_baseline(self) -> None:
        """Beats cleared by any_traffic_counts (heard_from) count as answered: output before them is not ahead."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 0.0, 1_000_000)
        tracker.heard_from(0.5)
        tracker.sent(2, 1.0, 1_000_000 + MIN_PROGRESS_BYTES - 1)
        self.assertFalse(tracker.peer_heartbeat(1.5))


@dataclass
class SlowLink:
    """
    A link of C{rate} bytes/s from us to a peer, in 10 ms steps: what we
    write queues, the peer takes it at C{rate} until C{stops_at}, and answers
    a heartbeat as soon as it has taken it (the answer's way back is fast:
    the reverse direction is idle).
    """

    rate: float
    stops_at: float = float("inf")
    written: int = 0
    taken: int = 0
    #: (cumulative written at the end of the heartbeat, its sequence)
    beats: list[tuple[int, int]] = field(default_factory=list)
    last_taken_at: float = 0.0

    def write(self, size: int) -> None:
        self.written += size

    def beat(self, sequence: int) -> None:
        self.write(30)
        self.beats.append((self.written, sequence))

    def run(self, now: float, step: float) -> list[int]:
        """Move C{step} seconds of data; return the sequences answered."""
        if now < self.stops_at and self.taken < self.written:
            self.taken = min(self.written, self.taken + int(self.rate * step))
            self.last_taken_at = now + step
        answered = [sequence for end, sequence in self.beats if end <= self.taken]
        self.beats = [(end, sequence) for end, sequence in self.beats if end > self.taken]
        return answered

    @property
    def queued(self) -> int:
        return self.written - self.taken


def run_link(link: SlowLink, seconds: float, sample: bool = True) -> tuple[float | None, HeartbeatTracker]:
    """
    Beat every interval (sampling our output first, as the adapters do),
    write 3 x 900,000 bytes just after the first beat, check every 10 ms;
    return when the peer was timed out (None: never) and the tracker.
    """
    tracker = HeartbeatTracker()
    step = 0.01
    sequence = 0
    for tick in range(round(seconds / step)):
        now = tick * step
        if tick % 100 == 0:
            if sample:
                tracker.sample_output(now, link.written, link.queued)
            sequence += 1
            tracker.sent(sequence, now)
            link.beat(sequence)
        if tick == 10:
            for _ in range(3):
                link.write(900_000)
        for answered in link.run(now, step):
            tracker.acknowledged(answered, now + step)
        if tracker.check(now + step, POLICY, 0.0, None) is HeartbeatVerdict.TIMED_OUT:
            return now + step, tracker
    return None, tracker


class SlowLinkModelTests(SynchronousTestCase):
    """The rule on a modelled 200 KB/s link carrying 2.7 MB: the issue's scenario, beat by beat."""

    def test_a_live_peer_is_never_timed_out(self) -> None:
        """13.5 s of transfer behind which every beat waits up to 13 s: no timeout, every beat finally answered."""
        link = SlowLink(rate=200_000)
        timed_out, tracker = run_link(link, 20.0)
        self.assertIsNone(timed_out)
        self.assertEqual(link.taken, link.written)
        self.assertIsNone(tracker.timeout_started_at)
        self.assertGreater(tracker.latency, 0.0)
        self.assertGreaterEqual(tracker.timeouts_avoided, 1)

    def test_without_progress_the_same_peer_is_timed_out(self) -> None:
        """The control: with no output samples, the old rule times the live peer out at the first late beat's deadline."""
        timed_out, tracker = run_link(SlowLink(rate=200_000), 20.0, sample=False)
        assert timed_out is not None
        self.assertLess(timed_out, 5.0)
        self.assertEqual(tracker.timeouts_avoided, 0)

    def test_a_peer_that_stops_is_dropped_within_the_bound(self) -> None:
        """A peer that stops taking data at 2.0, 5.37 or 9.9 s is dropped within interval + timeout of its last progress."""
        for stops_at in (2.0, 5.37, 9.9):
            link = SlowLink(rate=200_000, stops_at=stops_at)
            timed_out, _ = run_link(link, 30.0)
            assert timed_out is not None, stops_at
            self.assertGreater(timed_out, link.last_taken_at, stops_at)
            self.assertLessEqual(timed_out - link.last_taken_at, BOUND + 0.011, stops_at)


class BulkHub(Hub):
    hub_name = "bulk"

    @method
    def echo(self, value: bytes) -> bytes:
        return value


class LinkModel:
    """
    What the server's transport reports as still queued when the client
    takes C{rate} bytes/s of everything written to it until C{stops_at}
    (then nothing more: frozen once the buffers between filled).
    """

    def __init__(self, connection: TestConnection, rate: float, stops_at: float) -> None:
        self.connection = connection
        self.clock = connection._server.clock
        self.rate = rate
        self.stops_at = stops_at
        self.started = self.clock.seconds()

    def queued_bytes(self) -> int | None:
        written = self.connection.server_protocol.output.bytes_sent
        elapsed = min(self.clock.seconds(), self.stops_at) - self.started
        return max(written - int(self.rate * elapsed), 0)


class ServerProgressTests(SynchronousTestCase):
    """The server's scheduler samples late members' output: a client taking its backlog stays, a stopped one goes in bound."""

    def bulk_to_frozen_client(self, stops_at: float, report: bool = True) -> tuple[HubTestServer, TestConnection]:
        """
        A client whose heartbeat answers are stuck behind 3 x 900,000 bytes
        (it is frozen: nothing comes back), taken at 200 KB/s until
        C{stops_at}; the server's transport reports it (L{LinkModel}).
        """
        server = HubTestServer([BulkHub], heartbeat=POLICY, metrics=True)
        conn = server.connect("bulk")
        server.advance(0.5)
        if report:
            conn.server_protocol.queued_bytes = LinkModel(conn, 200_000, stops_at).queued_bytes  # type: ignore[method-assign]
        conn.freeze_client()
        session = conn.server_protocol.session
        assert session is not None
        for _ in range(3):
            session.write_message(receiver_call_payload("blob", [b"x" * 900_000], None, 2**30))
        return server, conn

    def time_of_drop(self, server: HubTestServer, conn: TestConnection, limit: float) -> float | None:
        step = 0.05
        for _ in range(round(limit / step)):
            server.advance(step)
            if conn.server_protocol.disconnect_reason is not None:
                return server.clock.seconds()
        return None

    def test_client_taking_its_backlog_is_kept(self) -> None:
        """The 13.5 s transfer outlasts the 3 s timeout several times over: kept, and counted as a timeout avoided."""
        server, conn = self.bulk_to_frozen_client(stops_at=float("inf"))
        self.assertIsNone(self.time_of_drop(server, conn, 14.0))
        runtime = server.factory.hub_runtime("bulk")
        self.assertEqual(runtime.traffic.totals(runtime.connections.values())["heartbeat_timeouts_avoided"], 1)
        metrics = server.factory.metrics
        assert metrics is not None
        self.assertEqual(metrics.registry.get_sample_value("twisted_hub_heartbeat_timeouts_avoided_total", {"hub": "bulk"}), 1)

    def test_client_that_stops_taking_is_dropped_in_bound(self) -> None:
        """Progress stopping at 6.3 s: dropped as timed out, after the progress stopped and within interval + timeout of it."""
        server, conn = self.bulk_to_frozen_client(stops_at=6.3)
        dropped = self.time_of_drop(server, conn, 20.0)
        assert dropped is not None
        reason = conn.server_protocol.disconnect_reason
        assert reason is not None
        self.assertIs(reason.kind, DisconnectKind.TIMED_OUT)
        self.assertGreater(dropped, 6.3)
        self.assertLessEqual(dropped - 6.3, BOUND + 0.05)

    def test_without_a_queue_reading_the_old_rule_applies(self) -> None:
        """The control: a transport that cannot tell its queue (None) gives the old verdict, a drop at the first timeout."""
        server, conn = self.bulk_to_frozen_client(stops_at=float("inf"), report=False)
        dropped = self.time_of_drop(server, conn, 14.0)
        assert dropped is not None
        self.assertLessEqual(dropped, 0.5 + BOUND + 0.05)


class UploadModel:
    """What the client reads of its link when the server takes C{rate} bytes/s of its output until C{stops_at}."""

    def __init__(self, connection: TestConnection, rate: float, stops_at: float) -> None:
        self.client = connection.client
        self.clock = connection._server.clock
        self.rate = rate
        self.stops_at = stops_at
        self.started = self.clock.seconds()

    def traffic(self) -> Traffic:
        written = self.client.bytes_out
        elapsed = min(self.clock.seconds(), self.stops_at) - self.started
        return Traffic(written, max(written - int(self.rate * elapsed), 0), self.client.bytes_in, False)


class ClientProgressTests(SynchronousTestCase):
    """The client's own heartbeat (the Twisted client; the asyncio one shares the session): an upload taken is life."""

    def upload_to_frozen_server(self, stops_at: float, registry: CollectorRegistry) -> tuple[HubTestServer, TestConnection]:
        """
        A client beating 1 s / 3 s whose 3 x 900,000-byte upload the server
        takes at 200 KB/s until C{stops_at} (it is frozen: nothing comes
        back, so every heartbeat goes unanswered).
        """
        server = HubTestServer([BulkHub])
        options = HubClientOptions(heartbeat=POLICY, metrics=ClientMetrics(registry))
        conn = server.connect("bulk", options=options)
        server.advance(0.5)
        conn.client.traffic = UploadModel(conn, 200_000, stops_at).traffic  # type: ignore[method-assign]
        conn.freeze_server()
        for _ in range(3):
            conn.client.call("echo", b"x" * 900_000).addErrback(lambda failure: None)
        return server, conn

    def time_of_drop(self, server: HubTestServer, conn: TestConnection, limit: float) -> float | None:
        step = 0.05
        for _ in range(round(limit / step)):
            server.advance(step)
            if conn.client.disconnect_reason is not None:
                return server.clock.seconds()
        return None

    def test_upload_taken_keeps_the_server(self) -> None:
        """13.5 s of upload behind which our heartbeats wait: the server is kept, and the metric counts the timeout avoided."""
        registry = CollectorRegistry()
        server, conn = self.upload_to_frozen_server(float("inf"), registry)
        self.assertIsNone(self.time_of_drop(server, conn, 14.0))
        self.assertEqual(registry.get_sample_value("twisted_hub_client_heartbeat_timeouts_avoided_total"), 1)

    def test_upload_stopped_drops_the_server_in_bound(self) -> None:
        """Progress stopping at 6.3 s: the client gives up (timed out) within interval + timeout of it."""
        server, conn = self.upload_to_frozen_server(6.3, CollectorRegistry())
        dropped = self.time_of_drop(server, conn, 20.0)
        assert dropped is not None
        reason = conn.client.disconnect_reason
        assert reason is not None
        self.assertIs(reason.kind, DisconnectKind.TIMED_OUT)
        self.assertGreater(dropped, 6.3)
        self.assertLessEqual(dropped - 6.3, BOUND + 0.05)


class InboundProgressTests(SynchronousTestCase):
    """A large message still coming in is life: the Twisted adapters report half-received messages."""

    def test_half_received_message_keeps_the_sender(self) -> None:
        """The server keeps a client whose 900 kB call arrives at 200 KB/s (its heartbeat answers are stuck behind it)."""
        server = HubTestServer([BulkHub], heartbeat=POLICY)
        conn = server.connect("bulk")
        server.advance(0.5)
        conn.client.call("echo", b"x" * 900_000).addErrback(lambda failure: None)
        wire = conn.client_transport.getOutBuffer()  # taken off the link: delivered at 200 KB/s below
        conn.freeze_client()  # nothing else crosses: the heartbeat answers stay with the client
        for start in range(0, len(wire) - 2_000, 2_000):  # all but the end: the message stays half received
            conn.server_protocol.dataReceived(wire[start : start + 2_000])
            server.advance(0.01)
        self.assertGreater(server.clock.seconds(), 4.5)
        self.assertIsNone(conn.server_protocol.disconnect_reason)
        received, receiving = conn.server_protocol.receiving()
        self.assertTrue(receiving)
        self.assertGreater(received, 890_000)
        # The rest never comes (the client froze mid-message): dropped in bound.
        stopped = server.clock.seconds()
        server.advance(BOUND + 0.05)
        reason = conn.server_protocol.disconnect_reason
        assert reason is not None
        self.assertIs(reason.kind, DisconnectKind.TIMED_OUT)
        self.assertLessEqual(server.clock.seconds() - stopped, BOUND + 0.05)


def kinds(payloads: list[bytes]) -> list[int]:
    """The message kinds of every payload, in order."""
    return [message.kind for payload in payloads for message in decode_frame(payload)]


class QueueJumpTests(SynchronousTestCase):
    """Heartbeats and their answers overtake the frames we hold back while the transport is full."""

    def test_server_heartbeat_overtakes_held_results(self) -> None:
        """Results written while the server's transport is full wait; the tick's heartbeat goes ahead; they follow in order."""
        server = HubTestServer([BulkHub], heartbeat=POLICY)
        conn = server.connect("bulk")
        protocol = conn.server_protocol
        protocol.pauseProducing()  # what the transport does when its buffer is full
        calls = [conn.client.call("echo", bytes([i]) * 1000) for i in range(3)]
        server.flush()
        self.assertEqual(len(protocol.held), 3)
        self.assertEqual(protocol.queued_bytes(), None)  # an in-memory transport cannot tell its own part
        conn.client_received.clear()
        server.advance(1.0)  # the tick
        self.assertEqual(kinds(conn.client_received), [MessageKind.SERVER_HEARTBEAT])
        protocol.resumeProducing()
        server.flush()
        self.assertEqual(kinds(conn.client_received)[:4], [MessageKind.SERVER_HEARTBEAT] + [MessageKind.RESULT] * 3)
        self.assertEqual([self.successResultOf(d) for d in calls], [bytes([i]) * 1000 for i in range(3)])

    def test_server_answers_a_client_heartbeat_ahead_of_held_results(self) -> None:
        """The answer to a client heartbeat skips the server's held results."""
        server = HubTestServer([BulkHub])
        conn = server.connect("bulk", options=HubClientOptions(heartbeat=POLICY))
        conn.server_protocol.pauseProducing()
        for i in range(2):
            conn.client.call("echo", bytes([i]) * 1000).addErrback(lambda failure: None)
        server.flush()
        conn.client_received.clear()
        server.advance(1.0)  # the client's beat; its answer comes back at once
        self.assertEqual(kinds(conn.client_received), [MessageKind.CLIENT_HEARTBEAT_ACK])
        self.assertIsNone(conn.client.core.heartbeat.timeout_started_at)

    def test_client_heartbeat_overtakes_held_calls(self) -> None:
        """Calls written while the Twisted client's transport is full wait; its heartbeat goes ahead of them."""
        server = HubTestServer([BulkHub])
        conn = server.connect("bulk", options=HubClientOptions(heartbeat=POLICY))
        self.assertIs(conn.client_transport.producer, conn.client)
        conn.client.pauseProducing()
        calls = [conn.client.call("echo", bytes([i]) * 1000) for i in range(3)]
        server.flush()
        self.assertEqual(len(conn.client.held), 3)
        conn.server_received.clear()
        server.advance(1.0)
        self.assertEqual(kinds(conn.server_received), [MessageKind.CLIENT_HEARTBEAT])
        conn.client.resumeProducing()
        server.flush()
        self.assertEqual(kinds(conn.server_received)[:4], [MessageKind.CLIENT_HEARTBEAT] + [MessageKind.INVOKE] * 3)
        self.assertEqual([self.successResultOf(d) for d in calls], [bytes([i]) * 1000 for i in range(3)])

    def test_held_results_still_count_against_the_output_limit(self) -> None:
        """What the server holds back is unread output: past max_outgoing_buffer the client is dropped (4004) as before."""
        server = HubTestServer([BulkHub], max_outgoing_buffer=5000)
        conn = server.connect("bulk")
        conn.server_protocol.pauseProducing()
        for i in range(6):
            conn.client.call("echo", bytes([i]) * 1000).addErrback(lambda failure: None)
        server.flush()
        reason = conn.server_protocol.disconnect_reason
        assert reason is not None
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.SLOW_CONSUMER, 4004))

    def test_resumed_then_full_again_keeps_counting_the_rest(self) -> None:
        """Frames still held when the transport fills again stay counted as unread (OutputBudget.still_held)."""
        server = HubTestServer([BulkHub], max_outgoing_buffer=100_000)
        conn = server.connect("bulk")
        protocol = conn.server_protocol
        protocol.pauseProducing()
        for i in range(4):
            conn.client.call("echo", bytes([i]) * 10_000).addErrback(lambda failure: None)
        server.flush()
        transport = conn.server_transport
        original = transport.write

        def write(data: bytes) -> None:  # the first released frame fills the buffer again
            original(data)
            protocol.pauseProducing()

        transport.write = write  # type: ignore[method-assign]
        protocol.resumeProducing()
        self.assertEqual(len(protocol.held), 3)
        self.assertGreater(protocol.output.written_while_paused, 40_000)


class AsyncioQueueJumpTests(SynchronousTestCase):
    """The asyncio client's own queue: urgent frames go next, whatever is queued."""

    def test_urgent_frames_overtake_the_queue(self) -> None:
        """With a frame being sent and two queued, a heartbeat goes right after the one being sent."""
        from twisted_hub.aio import AsyncHubClient

        sent: list[bytes] = []

        class SlowWebSocket:
            def __init__(self) -> None:
                self.release = asyncio.Event()

            async def send(self, frame: bytes) -> None:
                sent.append(frame)
                if len(sent) == 1:
                    await self.release.wait()  # the transport is full: drain() waits

        async def run() -> None:
            websocket = SlowWebSocket()
            client = AsyncHubClient(websocket, None, HubClientOptions())  # type: ignore[arg-type]
            writer = asyncio.get_running_loop().create_task(client._write())
            client.send_frames([b"a", b"b", b"c"])
            await asyncio.sleep(0)
            client.send_frames([b"hb"], urgent=True)
            websocket.release.set()
            client.send_frames([b"d"])
            client._outgoing.put_nowait(None)
            await asyncio.wait_for(writer, 5)

        asyncio.run(run())
        self.assertEqual(sent, [b"a", b"hb", b"b", b"c", b"d"])
