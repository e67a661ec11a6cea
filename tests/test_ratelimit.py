"""The pure helpers that bound logging about peer mistakes: the rate limiter and text truncation."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._ratelimit import PEER_TEXT_LIMIT, LogRateLimiter, bounded_text, peer_text


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
