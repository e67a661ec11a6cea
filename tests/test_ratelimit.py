"""The pure helpers that bound logging about peer mistakes (the rate limiter, text truncation) and the token bucket."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._core.ratelimit import PEER_TEXT_LIMIT, LogRateLimiter, TokenBucket, bounded_text, peer_text


class LogRateLimiterTests(SynchronousTestCase):
    def test_one_per_interval(self) -> None:
        """The first event passes; others within the interval are counted, the next one after it reports them."""
        limiter = LogRateLimiter(interval=1.0)
        self.assertEqual(limiter.allow(10.0), 0)
        self.assertEqual([limiter.allow(t) for t in (10.0, 10.5, 10.999)], [None, None, None])
        self.assertEqual(limiter.suppressed, 3)
        self.assertEqual(limiter.allow(11.0), 3)
        self.assertEqual((limiter.suppressed, limiter.total_suppressed), (0, 3))
        self.assertIsNone(limiter.allow(11.2))
        self.assertEqual(limiter.total_suppressed, 4)

    def test_quiet_period_resets(self) -> None:
        """After a quiet interval the next event passes with nothing suppressed."""
        limiter = LogRateLimiter(interval=2.0)
        self.assertEqual(limiter.allow(0.0), 0)
        self.assertEqual(limiter.allow(5.0), 0)


class PeerTextTests(SynchronousTestCase):
    def test_short_text_is_repr(self) -> None:
        """A short string comes back as its repr, control characters escaped."""
        self.assertEqual(peer_text("a\nb"), "'a\\nb'")

    def test_long_text_cut(self) -> None:
        """A long string is cut to the limit and its full length noted."""
        text = peer_text("y" * 1000)
        self.assertEqual(text, repr("y" * PEER_TEXT_LIMIT) + "... (1000 chars)")

    def test_non_string(self) -> None:
        """A non-string value is shown through str()."""
        self.assertEqual(peer_text(12), "'12'")


class BoundedTextTests(SynchronousTestCase):
    def test_printable_unchanged(self) -> None:
        """A short printable message passes verbatim."""
        self.assertEqual(bounded_text("hub 'x' has no method 'y'"), "hub 'x' has no method 'y'")

    def test_cut_and_escaped(self) -> None:
        """A long message is cut; one with a newline is repr'd so it stays one line."""
        self.assertEqual(bounded_text("z" * 300, 10), "zzzzzzzzzz... (300 chars)")
        self.assertEqual(bounded_text("a\nb"), "'a\\nb'")


class TokenBucketTests(SynchronousTestCase):
    def test_starts_full_then_refills_at_the_rate(self) -> None:
        """A new bucket holds `capacity` tokens; an empty one says how long until the next; time refills it."""
        bucket = TokenBucket(rate=4.0, capacity=2.0, now=100.0)
        self.assertEqual([bucket.take(100.0), bucket.take(100.0)], [0.0, 0.0])
        self.assertEqual(bucket.take(100.0), 0.25)
        self.assertAlmostEqual(bucket.take(100.1), 0.15)
        self.assertEqual(bucket.take(100.25), 0.0)
        self.assertEqual(bucket.take(100.25), 0.25)

    def test_never_holds_more_than_capacity(self) -> None:
        """After a long quiet spell the bucket holds `capacity` tokens, not more."""
        bucket = TokenBucket(rate=1.0, capacity=3.0, now=0.0)
        for _ in range(3):
            bucket.take(0.0)
        self.assertEqual([bucket.take(1000.0) for _ in range(4)], [0.0, 0.0, 0.0, 1.0])

    def test_refusal_spends_nothing(self) -> None:
        """A refused take leaves the tokens as they were (a flood does not push the next call further out)."""
        bucket = TokenBucket(rate=1.0, capacity=1.0, now=0.0)
        bucket.take(0.0)
        for _ in range(100):
            self.assertGreater(bucket.take(0.5), 0)
        self.assertEqual(bucket.take(1.0), 0.0)

    def test_clock_going_backwards_adds_nothing(self) -> None:
        """A clock that steps back neither adds tokens nor breaks the next refill."""
        bucket = TokenBucket(rate=1.0, capacity=1.0, now=10.0)
        bucket.take(10.0)
        self.assertEqual(bucket.take(5.0), 1.0)
        self.assertEqual(bucket.take(11.0), 0.0)

    def test_cost(self) -> None:
        """An event may cost more than one token."""
        bucket = TokenBucket(rate=2.0, capacity=5.0, now=0.0)
        self.assertEqual(bucket.take(0.0, cost=4.0), 0.0)
        self.assertEqual(bucket.take(0.0, cost=3.0), 1.0)
