"""
"Progress counts as life" on a Clock: a peer taking the data we queued for
it is alive even when our heartbeat, queued behind that data, is answered
late; a peer that stops taking it is still dropped within interval +
timeout of its last progress.  The real-process scenarios (a rate-limited
proxy, SIGSTOP) are in test_slow_link_processes.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._heartbeat import HeartbeatPolicy, HeartbeatTracker, HeartbeatVerdict

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

    def test_draining_backlog_is_progress_at_the_previous_sample(self) -> None:
        """A backlog that shrank between samples is progress, dated at the earlier sample (known alive then)."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 900_000, 800_000)
        self.assertTrue(tracker.sample_output(2.0, 900_000, 600_000))
        self.assertEqual(tracker.progress_at, 1.0)
        # More written and still taken: written 1.8 MB, 1.0 MB queued -> taken 800 kB > 300 kB.
        self.assertTrue(tracker.sample_output(3.0, 1_800_000, 1_000_000))
        self.assertEqual(tracker.progress_at, 2.0)

    def test_no_backlog_no_progress(self) -> None:
        """With nothing queued at the previous sample, bytes taken since (a heartbeat a frozen peer's kernel took) prove nothing."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 1_000, 0)
        self.assertFalse(tracker.sample_output(2.0, 1_030, 0))
        self.assertFalse(tracker.sample_output(3.0, 1_060, 0))
        self.assertIsNone(tracker.progress_at)

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
        tracker.sample_output(1.0, 1_000, 500)  # taken 500
        self.assertFalse(tracker.sample_output(2.0, 1_000, 600))  # 400: queued overestimated
        self.assertFalse(tracker.sample_output(3.0, 1_000, 500))  # back to 500
        self.assertTrue(tracker.sample_output(4.0, 1_000, 499))
        self.assertEqual(tracker.progress_at, 3.0)

    def test_unknown_queue_is_ignored(self) -> None:
        """A transport that cannot tell what is queued gives no sample at all."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 1_000, 500)
        self.assertFalse(tracker.sample_output(2.0, 1_000, None))
        self.assertTrue(tracker.sample_output(3.0, 1_000, 100))
        self.assertEqual(tracker.progress_at, 1.0)

    def test_stop_forgets_the_samples(self) -> None:
        """After stop() (unregistered, closing) the next sample is a baseline again."""
        tracker = HeartbeatTracker()
        tracker.sample_output(1.0, 1_000, 500)
        tracker.sample_output(2.0, 1_000, 100)
        tracker.stop()
        self.assertIsNone(tracker.progress_at)
        self.assertFalse(tracker.sample_output(3.0, 1_000, 50))


class ProgressVerdictTests(SynchronousTestCase):
    """HeartbeatTracker.check with progress: PROGRESSING past the timeout, TIMED_OUT a timeout after progress stops."""

    def test_progress_holds_the_deadline_back(self) -> None:
        """An unanswered beat past its timeout is PROGRESSING while the peer takes data, TIMED_OUT a timeout after that."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        tracker.sample_output(1.0, 2_000_000, 2_000_000)
        tracker.sample_output(2.0, 2_000_000, 1_800_000)
        tracker.sample_output(3.0, 2_000_000, 1_600_000)
        self.assertEqual(tracker.deadline(3.0), 5.0)  # progress known at 2.0
        self.assertIs(tracker.check(3.9, POLICY, 0.0, None), HeartbeatVerdict.WAITING)
        self.assertIs(tracker.check(4.0, POLICY, 0.0, None), HeartbeatVerdict.PROGRESSING)
        # The peer stops taking anything (frozen once the buffers between us filled).
        tracker.sample_output(4.0, 2_000_000, 1_600_000)
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
        tracker.sample_output(2.0, 1_000_000, 700_000)  # progress dated 1.0... deadline 4.0
        tracker.sample_output(3.0, 1_000_000, 500_000)  # ... dated 2.0: deadline 5.0
        self.assertIs(tracker.check(5.0, POLICY, 0.0, 4.5), HeartbeatVerdict.GRACE)
        self.assertIs(tracker.check(8.0, POLICY, 0.0, 4.5), HeartbeatVerdict.TIMED_OUT)


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
