"""
What every client shares, whatever carries its bytes: the settings
(L{HubClientOptions}), the heartbeat events its callbacks get, the hub as an
object (L{HubProxy}), a hub's URL, the reconnect delays
(L{full_jitter_policy}), and the two interfaces between a L{ClientSession}
and the rest: L{ClientIO} (what an adapter does for its session) and
L{SessionParts} (what the session's units read of it).

Neutral ground between the sans-IO client core (L{twisted_hub._core.client_session})
and its adapters (the Twisted client in L{twisted_hub._twisted.client}, the asyncio
client in L{twisted_hub.aio}): it imports neither Twisted nor autobahn nor
websockets.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from .base_error import HubArgumentError, HubAttributeError
from .compression_policy import CompressionPolicy
from .deprecate import warn_deprecated
from .errors import DisconnectReason, HandshakeError
from .heartbeat import ClockOffset, HeartbeatConfigurationError, HeartbeatPolicy, Traffic, _check_positive
from .observer import ClientObserver
from .receivers import receiver_methods
from .resume import ResumePolicy
from .sentinel import UNSET, Unset

if TYPE_CHECKING:
    from .connection import ClientConnection
    from .log import CoreLog
    from .session import Lifecycle

__all__ = [
    "ClientHeartbeatEvent",
    "ClientIO",
    "HubClientOptions",
    "HubProxy",
    "ServerHeartbeatEvent",
    "SessionParts",
    "full_jitter_policy",
    "hub_url",
    "make_proxy",
]

InterfaceT = TypeVar("InterfaceT")
TokenT_contra = TypeVar("TokenT_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class ServerHeartbeatEvent:
    """A heartbeat from the server (MagicOnion's C{ServerHeartbeatEvent})."""

    sequence: int
    #: when the server sent it, an aware UTC datetime
    server_time: datetime
    #: bytes from the server's metadata provider, or None
    metadata: bytes | None


@dataclass(frozen=True, slots=True)
class ClientHeartbeatEvent:
    """The server answered our heartbeat (MagicOnion's C{ClientHeartbeatEvent})."""

    sequence: int
    #: full round trip, seconds
    round_trip: float
    #: the clock-offset sample this exchange gave
    clock: ClockOffset


class ClientIO(Protocol[TokenT_contra]):
    """What a client adapter does for its L{ClientSession}: moving bytes, timers, waiting."""

    def send_frames(self, frames: list[bytes], urgent: bool = False) -> None:
        """
        Send these binary frames, in order (nothing once the WebSocket is
        not open).  C{urgent} (heartbeats and answers to them): ahead of
        any frames the adapter holds back.
        """

    def send_close(self, code: int, reason: str, wait_for_peer: bool) -> None:
        """
        Send our close frame after what is queued.  C{wait_for_peer}: let the
        closing handshake finish; else close TCP once it is written (bounded),
        the peer being presumed gone.  Before the WebSocket is open: abort.
        """

    def call_succeeded(self, token: TokenT_contra, value: Any) -> None:
        """Our call (C{token}) got its result."""

    def call_failed(self, token: TokenT_contra, error: Exception) -> None:
        """Our call (C{token}) failed with C{error}."""

    def await_result(
        self, result: Awaitable[Any], on_result: Callable[[Any], object], on_error: Callable[[BaseException], object],
    ) -> None:
        """
        Wait for an awaitable result (a receiver method's, the token
        provider's), then call back with its value or the exception it raised.
        """

    def handshake_done(self) -> None:
        """The hub handshake is done: whoever waits for the connection may go on."""

    def handshake_failed(self, error: HandshakeError) -> None:
        """The connection ended before the hub handshake was done."""

    def start_heartbeat(self, interval: float) -> None:
        """Call C{session.heartbeat.beat} every C{interval} seconds and C{session.heartbeat.check} at its deadlines."""

    def stop_heartbeat(self) -> None:
        """Stop those timers."""

    def disconnected(self, reason: DisconnectReason) -> None:
        """The connection ended (pending calls have failed): wake whoever waits for it."""

    def traffic(self) -> Traffic:
        """
        Bytes written toward the server and still queued on our side, bytes
        received and whether a message is half received: read while our
        heartbeat is unanswered ("progress counts as life").
        """

    def seconds(self) -> float:
        """The adapter's clock, seconds."""

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        """Call C{function} in C{delay} seconds; return what cancels that."""


class SessionParts(Protocol):
    """
    What a L{ClientSession}'s units (its heartbeat, its token refresh, its
    receiver) read and call of the session they belong to.
    """

    @property
    def io(self) -> ClientIO[Any]:
        """The adapter."""

    @property
    def log(self) -> CoreLog:
        """Where the session logs."""

    @property
    def core(self) -> ClientConnection[Any]:
        """The connection's sans-IO state machine."""

    @property
    def lifecycle(self) -> Lifecycle:
        """Where the connection stands, and why it ended."""

    @property
    def options(self) -> HubClientOptions:
        """The client's settings."""

    @property
    def is_connected(self) -> bool:
        """The hub handshake is done and the connection has not ended or begun closing."""

    def flush(self) -> None:
        """Hand what the core has queued to the adapter."""

    def safely(self, function: Callable[..., object], *args: Any) -> None:
        """Call a user's callback; log what it raises."""


class HubProxy:
    """
    Calls hub methods as attributes: C{proxy.join("lobby")} is
    C{client.call("join", "lobby")}.  Built by L{HubClientProtocol.proxy}.
    """

    __slots__ = ("_call", "_allowed")

    def __init__(self, call: Callable[..., Any], allowed: frozenset[str] | None) -> None:
        self._call = call
        self._allowed = allowed

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or (self._allowed is not None and name not in self._allowed):
            raise HubAttributeError(f"the hub interface has no method {name!r}")
        call = self._call

        def remote(*args: Any, **kwargs: Any) -> Any:
            return call(name, *args, **kwargs)

        remote.__name__ = name
        return remote


def make_proxy(call: Callable[..., Any], interface: type[InterfaceT] | None) -> InterfaceT:
    """A L{HubProxy} typed as C{interface} (whose public method names it allows)."""
    return cast(InterfaceT, HubProxy(call, receiver_methods(interface)))


#: HubClientOptions' deprecated heartbeat shorthands, and their values when not given
_FLAT_HEARTBEAT_DEFAULTS: dict[str, object] = {
    "heartbeat_interval": None, "heartbeat_timeout": None, "any_traffic_counts": False, "stall_grace": True,
}


def _flat_heartbeat_fields(options: HubClientOptions) -> list[str]:
    """The deprecated heartbeat shorthands C{options} was given (those not at their default)."""
    return [name for name, default in _FLAT_HEARTBEAT_DEFAULTS.items() if getattr(options, name) != default]


def _mirrors(options: HubClientOptions, policy: HeartbeatPolicy) -> bool:
    """True when C{options}' shorthands are exactly what C{policy} would set them to."""
    enabled = policy.enabled
    return (
        options.heartbeat_interval, options.heartbeat_timeout, options.any_traffic_counts, options.stall_grace,
    ) == (
        policy.interval if enabled else None, policy.timeout if enabled else None,
        policy.any_traffic_counts, policy.stall_grace,
    )


@dataclass(frozen=True)
class HubClientOptions:
    """
    Client settings.

    @ivar heartbeat: our own heartbeat, the same L{HeartbeatPolicy} type the
        server takes (its C{metadata_provider} and C{ping_fallback} are
        server-only and ignored here).  None: off, the default; the
        server's heartbeats are answered either way.
    @ivar heartbeat_interval: deprecated shorthand for C{heartbeat} (give
        C{heartbeat=HeartbeatPolicy(enabled=True, interval=...)}): seconds
        between our own heartbeats (None: off).  Read, it mirrors the
        policy in force.
    @ivar heartbeat_timeout: deprecated shorthand (C{HeartbeatPolicy(timeout=...)}):
        seconds without an answer before we declare the server gone (None:
        never; RTT and clock offset are still measured).
    @ivar on_server_heartbeat: called with a L{ServerHeartbeatEvent}.
    @ivar on_heartbeat_response: called with a L{ClientHeartbeatEvent}.
    @ivar on_heartbeat_timeout: called (no arguments) when our heartbeat
        times out, just before the connection is dropped.
    @ivar any_traffic_counts: deprecated shorthand
        (C{HeartbeatPolicy(any_traffic_counts=True)}): any data from the
        server since the oldest unanswered heartbeat counts as an answer.
    @ivar stall_grace: deprecated shorthand (C{HeartbeatPolicy(stall_grace=False)}):
        when our own reactor was stalled right before the timeout fired,
        give the server one more exchange.
    @ivar call_timeout: default seconds a call may wait for its result
        (None: until the connection closes).
    @ivar max_message_size: largest message we accept, bytes.
    @ivar metrics: a L{ClientMetrics} to keep this client's Prometheus
        metrics in (round trip, clock offset and error, heartbeat timeouts,
        disconnects, reconnects), or any L{ClientObserver}; None: none kept.
    @ivar on_disconnected: called with the L{DisconnectReason} when the
        connection ends, whoever ended it (e.g. C{PEER_TIMED_OUT} when the
        server's heartbeat timed us out), so no one has to poll
        L{HubClientProtocol.wait_for_disconnect}.
    @ivar max_messages_per_frame: most messages one frame from the server may
        hold; over it none of them is handled and we close with 1008.
    @ivar access_token: the access token sent with each connection's
        upgrade (C{Authorization: Bearer ...}): a string, or a provider, a
        function of no arguments returning the token (or None: none), a
        Deferred of it or a coroutine (asyncio client: a coroutine).  A
        provider is asked at every connect and reconnect, and again before
        the token expires: the fresh token goes to the server over the
        open connection (C{docs/auth.md}).
    @ivar compression: offer permessage-deflate with these settings (a
        L{CompressionPolicy}; None, the default: no offer).  The server
        decides: without its agreement the connection is uncompressed.
        Frames shorter than its C{min_size} go uncompressed either way.
        The Twisted client needs autobahn >= 26.10 for it.
    @ivar resume: resume the session after a dropped connection (a
        L{ResumePolicy}, or True for the default; None, the default: never),
        when the server offers it: calls in flight get their answers, the
        server keeps the connection id, groups and items, and nothing sent
        either way is lost or doubled (C{docs/resumption.md}).  Only the
        reconnecting clients resume (L{ReconnectingHubClient},
        L{twisted_hub.aio.ReconnectingAsyncHubClient}).
    """

    heartbeat_interval: float | None = None
    heartbeat_timeout: float | None = None
    on_server_heartbeat: Callable[[ServerHeartbeatEvent], object] | None = None
    on_heartbeat_response: Callable[[ClientHeartbeatEvent], object] | None = None
    on_heartbeat_timeout: Callable[[], object] | None = None
    any_traffic_counts: bool = False
    stall_grace: bool = True
    call_timeout: float | None = None
    max_message_size: int = 1024 * 1024
    max_messages_per_frame: int = 1024
    extra_headers: dict[str, str] = field(default_factory=dict)
    heartbeat: HeartbeatPolicy | None = None
    on_disconnected: Callable[[DisconnectReason], object] | None = None
    metrics: ClientObserver | None = None
    access_token: str | Callable[[], Any] | None = field(default=None, repr=False)
    compression: CompressionPolicy | None = None
    resume: ResumePolicy | bool | None = None

    def __post_init__(self) -> None:
        if self.resume is not None and not isinstance(self.resume, (ResumePolicy, bool)):
            raise HubArgumentError(f"resume must be a ResumePolicy, True or None, got {self.resume!r}")
        if self.compression is not None and not isinstance(self.compression, CompressionPolicy):
            raise HubArgumentError(f"compression must be a CompressionPolicy or None, got {self.compression!r}")
        if self.access_token is not None:
            if not (isinstance(self.access_token, str) or callable(self.access_token)):
                raise HubArgumentError("access_token must be a string or a function that returns one")
            if any(name.lower() == "authorization" for name in self.extra_headers):
                raise HubArgumentError("give access_token or an Authorization header in extra_headers, not both")
        _check_positive("interval", self.heartbeat_interval)
        _check_positive("timeout", self.heartbeat_timeout)
        if self.max_messages_per_frame <= 0:
            raise HubArgumentError("max_messages_per_frame must be positive")
        policy = self.heartbeat
        flat = _flat_heartbeat_fields(self)
        if flat and (policy is None or not _mirrors(self, policy)):
            # (a copy of options, dataclasses.replace(), passes the mirrored values: no warning)
            warn_deprecated(
                "HubClientOptions(" + ", ".join(f"{name}=" for name in flat) + ")",
                "HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=..., timeout=..., ...))",
                stacklevel=4,
            )
        if policy is None:
            if self.heartbeat_interval is None:
                return
            policy = HeartbeatPolicy(
                enabled=True, interval=self.heartbeat_interval, timeout=self.heartbeat_timeout,
                any_traffic_counts=self.any_traffic_counts, stall_grace=self.stall_grace,
            )
            object.__setattr__(self, "heartbeat", policy)
        elif self.heartbeat_interval is not None and (
            (self.heartbeat_interval, self.heartbeat_timeout) != (policy.interval, policy.timeout)
            or (self.any_traffic_counts, self.stall_grace) != (policy.any_traffic_counts, policy.stall_grace)
        ):
            raise HeartbeatConfigurationError("give heartbeat= or the heartbeat_interval/heartbeat_timeout shorthands, not both")
        # The shorthand fields always mirror the policy in force.
        enabled = policy.enabled
        object.__setattr__(self, "heartbeat_interval", policy.interval if enabled else None)
        object.__setattr__(self, "heartbeat_timeout", policy.timeout if enabled else None)
        object.__setattr__(self, "any_traffic_counts", policy.any_traffic_counts)
        object.__setattr__(self, "stall_grace", policy.stall_grace)

    @classmethod
    def heartbeat_every(cls, interval: float, timeout: float | None | Unset = UNSET, **kwargs: Any) -> HubClientOptions:
        """The one-call form: beat every C{interval}s, timeout 3x interval unless given."""
        policy = HeartbeatPolicy.every(interval, timeout)
        return cls(heartbeat=policy, **kwargs)


def hub_url(url: str, hub: str | None) -> str:
    """The URL of one hub: C{url} with the hub name as its last path segment."""
    if not hub:
        return url
    return url.rstrip("/") + "/" + hub


def full_jitter_policy(
    initial_delay: float = 0.5,
    max_delay: float = 30.0,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> Callable[[int], float]:
    """
    A C{ClientService} retry policy: exponential backoff with full jitter.

    Attempt C{n} (1-based) waits a uniformly random time in
    C{[0, min(max_delay, initial_delay * factor ** (n - 1))]}, so a fleet of
    clients that lost the same server spreads its reconnects instead of
    stampeding (azure-signalr#1072).  Pass a seeded C{random.Random} for
    reproducible delays.
    """
    if initial_delay <= 0 or max_delay <= 0 or factor < 1:
        raise HubArgumentError("initial_delay and max_delay must be > 0 and factor >= 1")
    source = rng or random.Random()

    def policy(attempt: int) -> float:
        ceiling = min(max_delay, initial_delay * factor ** max(attempt - 1, 0))
        return source.uniform(0.0, ceiling)

    return policy
