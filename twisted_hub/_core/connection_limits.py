"""
How many connections a server holds, and may hold, without I/O:
L{ConnectionCounts} (the caps in total and per peer address, rate-limited
warnings about refusals) and the open-file limit check.  The adapter that
applies them to accepted connections is L{twisted_hub._twisted.limits}
(L{ConnectionLimits<twisted_hub.ConnectionLimits>}, L{ConnectionGuard<twisted_hub.ConnectionGuard>});
the handshake deadline is L{twisted_hub._core.admission.HandshakeWatch}'s.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from .base_error import HubArgumentError
from .log import CoreLog
from .ratelimit import LogRateLimiter

#: Seconds from accept to the end of the WebSocket opening handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Connections one server holds at most (open hub connections and handshakes).
DEFAULT_MAX_CONNECTIONS = 10_000
#: Connections from one IPv4 address or IPv6 /64 network at most.
DEFAULT_MAX_CONNECTIONS_PER_IP = 256
#: A refusal of one kind is logged at most once per this many seconds.
LOG_INTERVAL = 10.0
#: Files a hub process needs besides its connections: listening sockets, the
#: log, Python modules and stdio, the reactor's waker and epoll (about 50),
#: with room to spare.  docs/deploying.md, "Open files".
OPEN_FILE_HEADROOM = 100


class TimeSource(Protocol):
    """A clock the counts read (a reactor, C{task.Clock})."""

    def seconds(self) -> float: ...


def open_file_limit() -> tuple[int, int] | None:
    """This process's open-file limit, C{(soft, hard)} (-1: unlimited); None where there is none (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft), int(hard)


def open_file_limit_warning(max_connections: int | None, limit: tuple[int, int] | None) -> str | None:
    """
    What to tell the operator when the open-file limit C{(soft, hard)} is
    below the connection cap plus L{OPEN_FILE_HEADROOM} (every connection,
    in its handshake or open, is one file): the server would stop accepting
    (C{EMFILE}) before the cap.  None when it is not (or either is unlimited).
    """
    if max_connections is None or limit is None:
        return None
    soft, hard = limit
    needed = max_connections + OPEN_FILE_HEADROOM
    if soft < 0 or soft >= needed:
        return None
    text = (
        f"the open-file limit (RLIMIT_NOFILE, soft) is {soft}, below max_connections {max_connections} "
        f"+ {OPEN_FILE_HEADROOM}: about {max(soft - OPEN_FILE_HEADROOM, 0)} connections fit, then accepting fails "
        f"(EMFILE). Raise it to {needed} or more: LimitNOFILE={needed} in the systemd unit, "
        f"`ulimit -n {needed}` in the shell that starts the server, or lower max_connections (docs/deploying.md)"
    )
    if 0 <= hard < needed:
        text += f"; the hard limit ({hard}) is below it too, and only root can raise that"
    return text


def address_key(address: object) -> str | None:
    """
    The per-peer counting key of a peer address: the IPv4 address, the /64
    network of an IPv6 address (one host usually has a whole /64), or None
    for addresses without a host (UNIX sockets), which count in the total only.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimitedLog:
    """
    Warnings about peers, at most one line per kind per C{interval} seconds
    (a L{LogRateLimiter} per kind); the next line says how many were left
    out.  A flood of refused connections must not become a flood of log lines.
    """

    def __init__(self, clock: TimeSource, log: CoreLog, interval: float = LOG_INTERVAL) -> None:
        self.clock = clock
        self._log = log
        self.interval = interval
        self._limiters: dict[str, LogRateLimiter] = {}

    def warn(self, kind: str, format: str, **fields: Any) -> None:
        """Log C{format} (which may use C{{suppressed}}) unless C{kind} was logged recently."""
        limiter = self._limiters.get(kind)
        if limiter is None:
            limiter = self._limiters[kind] = LogRateLimiter(self.interval)
        suppressed = limiter.allow(self.clock.seconds())
        if suppressed is not None:
            self._log.warn(format, suppressed=suppressed, limit_kind=kind, **fields)


def _optional_cap(name: str, value: int | None) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HubArgumentError(f"{name} must be a whole number >= 0 (0 or None: no limit), got {value!r}")
    return value


class ConnectionCounts:
    """
    The connection counts of one server and its caps, without I/O (the
    public L{twisted_hub.ConnectionLimits} is this on Twisted's clock and log).

    @param clock: where the time of the rate-limited log lines comes from.
    @param log: where they go.
    @param max_connections: connections held at most (None or 0: no cap).
    @param max_connections_per_ip: connections per peer address at most
        (see L{address_key}; None or 0: no cap).
    @param handshake_timeout: seconds from accept to the end of the WebSocket
        opening handshake.
    """

    def __init__(
        self,
        clock: TimeSource,
        log: CoreLog,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_ip: int | None = DEFAULT_MAX_CONNECTIONS_PER_IP,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if not handshake_timeout > 0 or handshake_timeout == float("inf"):
            raise HubArgumentError(f"handshake_timeout must be a finite number > 0, got {handshake_timeout!r}")
        self.clock = clock
        self.max_connections = _optional_cap("max_connections", max_connections)
        self.max_connections_per_ip = _optional_cap("max_connections_per_ip", max_connections_per_ip)
        self.handshake_timeout = float(handshake_timeout)
        #: connections currently counted
        self.open_connections = 0
        #: connections currently counted, per L{address_key}
        self.per_address: dict[str, int] = {}
        self.log = RateLimitedLog(clock, log)
        self._core_log = log
        self._open_files_checked = False

    def check_open_files(self, limit: tuple[int, int] | None) -> str | None:
        """
        Once per server: warn (and return the text) when the open-file limit
        C{limit} (C{(soft, hard)}, L{open_file_limit}) cannot hold
        C{max_connections} (L{open_file_limit_warning}).  Every way of serving
        calls it as it starts (the factory on its first port, a
        L{ConnectionGuard<twisted_hub.ConnectionGuard>}, L{HubService<twisted_hub.HubService>});
        the first call decides, later ones say nothing.
        """
        if self._open_files_checked:
            return None
        self._open_files_checked = True
        warning = open_file_limit_warning(self.max_connections, limit)
        if warning is not None:
            self._core_log.warn("{open_files}", open_files=warning, max_connections=self.max_connections)
        return warning

    def admit(self, address: object) -> bool:
        """
        Count a new connection from C{address}; False (and a log line, rate
        limited) when a cap is reached, in which case nothing was counted.
        """
        key = address_key(address)
        if self.max_connections is not None and self.open_connections >= self.max_connections:
            self.log.warn(
                "total",
                "refused a connection from {peer}: the server holds its maximum of {limit} connections "
                "(max_connections; {suppressed} more refused since the last message)",
                peer=key or "a local socket", limit=self.max_connections,
            )
            return False
        if key is not None:
            count = self.per_address.get(key, 0)
            if self.max_connections_per_ip is not None and count >= self.max_connections_per_ip:
                self.log.warn(
                    "per-ip",
                    "refused a connection from {peer}: it holds its maximum of {limit} connections "
                    "(max_connections_per_ip; {suppressed} more refused since the last message)",
                    peer=key, limit=self.max_connections_per_ip,
                )
                return False
            self.per_address[key] = count + 1
        self.open_connections += 1
        return True

    def release(self, address: object) -> None:
        """Stop counting a connection L{admit} counted."""
        self.open_connections -= 1
        key = address_key(address)
        if key is not None:
            count = self.per_address[key] - 1
            if count:
                self.per_address[key] = count
            else:
                del self.per_address[key]

    def handshake_timed_out(self, address: object) -> None:
        """Log (rate limited) that a connection missed the handshake deadline."""
        self.log.warn(
            "handshake",
            "closed a connection from {peer} that did not finish the WebSocket opening handshake "
            "within {timeout:g} s of being accepted ({suppressed} more closed since the last message)",
            peer=address_key(address) or "a local socket", timeout=self.handshake_timeout,
        )
