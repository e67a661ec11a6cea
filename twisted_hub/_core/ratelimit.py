"""
Bounded logging of what peers get wrong, and a token bucket, without I/O
(time is passed in).

A hostile or broken peer can make a mistake per message, thousands of times
per frame; one log line each would let it fill the disk and stall the
reactor.  L{LogRateLimiter} lets one line through per interval and counts the
rest; L{peer_text} bounds the peer-chosen strings that do reach a line.
L{TokenBucket} is the per-connection call budget of the C{RateLimit} filter.
"""

from __future__ import annotations

#: longest piece of a peer-chosen string put into a log line or error message
PEER_TEXT_LIMIT = 64
#: at most one log line about a connection's peer mistakes per this many seconds
PEER_LOG_INTERVAL = 1.0


def peer_text(value: object, limit: int = PEER_TEXT_LIMIT) -> str:
    """
    A peer-chosen string made safe for a log line: C{repr} of at most
    C{limit} characters (so control characters and newlines are escaped),
    with the full length noted when it was cut.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"


def peer_field(peer: str | None) -> str:
    """
    The peer's address (autobahn's C{tcp4:10.0.0.5:51522}) as a log field:
    bounded like L{peer_text}, but unquoted (a JSON log gets the address
    itself), and C{repr}'d only if it holds control characters.
    """
    return bounded_text("" if peer is None else peer, PEER_TEXT_LIMIT)


def bounded_text(value: str, limit: int = 200) -> str:
    """
    A message of ours that may quote the peer, made safe for a log line: cut
    to C{limit} characters (noting the full length), and C{repr}'d only if
    it holds control characters such as newlines.
    """
    text = value if len(value) <= limit else f"{value[:limit]}... ({len(value)} chars)"
    return text if text.isprintable() else repr(text)


class LogRateLimiter:
    """
    Lets one event through per C{interval} seconds and counts the others.

        suppressed = limiter.allow(now)
        if suppressed is not None:
            log.info("... ({suppressed} similar suppressed)", suppressed=suppressed)
    """

    __slots__ = ("interval", "_next_allowed", "suppressed", "total_suppressed")

    def __init__(self, interval: float = PEER_LOG_INTERVAL) -> None:
        self.interval = interval
        self._next_allowed = float("-inf")
        #: events suppressed since the last one let through
        self.suppressed = 0
        #: events suppressed over the limiter's life
        self.total_suppressed = 0

    def allow(self, now: float) -> int | None:
        """
        None if this event must not be logged (it is counted); otherwise the
        number of events suppressed since the last one let through.
        """
        if now < self._next_allowed:
            self.suppressed += 1
            self.total_suppressed += 1
            return None
        self._next_allowed = now + self.interval
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class TokenBucket:
    """
    A token bucket (time is passed in): it holds up to C{capacity} tokens,
    gains C{rate} per second, and starts full.  L{take} spends one token
    per event, so events pass at C{rate} per second on average, with
    bursts of up to C{capacity} after a quiet spell.
    """

    __slots__ = ("rate", "capacity", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """
        Spend C{cost} tokens and return 0.0; or, when there are not enough,
        spend nothing and return the seconds until there will be.  A clock
        that goes backwards adds no tokens.
        """
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate
