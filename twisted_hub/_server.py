"""
The server adapter: L{HubServerProtocol} and L{HubServerFactory}.

The protocol feeds WebSocket frames into a sans-IO L{ServerConnection},
dispatches the events to the connection's hub instance and writes what the
core queued.  The factory holds what connections share: the hub registry,
groups, heartbeat schedulers, limits and the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._autobahn import BoundedDropMixin, FastPathMixin, final_close_reason
from ._backplane import TARGET_ALL, TARGET_CALLER, TARGET_GROUP, Backplane, LocalBackplane, Target
from ._base_error import HubArgumentError
from ._connection import (
    CallFailed,
    CallSucceeded,
    ConnectionState,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerConnection,
    receiver_call_payload,
)
from ._deprecate import reactor_keyword_deprecated
from ._dispatch import CallDispatcher
from ._errors import (
    CallTimeoutError,
    ConnectionClosedError,
    DisconnectKind,
    DisconnectReason,
    HubError,
    kind_for_close,
)
from ._heartbeat import HeartbeatPolicy, HeartbeatTracker, StallDetector
from ._hub import GroupRegistry, Hub, RefuseConnection, receiver_methods
from ._limits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    ConnectionLimits,
    GuardedConnection,
)
from ._liveness import ServerHeartbeatScheduler, ping_sequence
from ._metrics import HeartbeatWindow, HubLabelMetrics, HubMetrics, RecentDisconnects, TrafficTotals
from ._origin import AllowedHosts
from ._ratelimit import LogRateLimiter, bounded_text, peer_text
from ._sentinel import UNSET, Unset
from ._wire import (
    HEARTBEAT_TIMEOUT_REASON,
    PING_TIMEOUT_REASON,
    SUBPROTOCOL,
    ClientHeartbeat,
    Close,
    CloseCode,
    Invoke,
    MessageKind,
    Notify,
    ProtocolError,
    TooManyMessagesError,
    close_reason_bytes,
)

_CONNECTION_DONE = Failure(ConnectionDone())

#: Default limits; documented in docs/protocol.md and README.md.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_MAX_OUTGOING_BUFFER = 4 * 1024 * 1024
DEFAULT_MAX_PENDING_CALLS = 256
DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024
DEFAULT_CLIENT_RESULT_TIMEOUT = 5.0
DEFAULT_HELLO_TIMEOUT = 10.0
DEFAULT_MAX_MESSAGES_PER_FRAME = 1024

#: What the transport's buffer holds per write besides the bytes themselves
#: (a bytes object's header, a list slot): counted with each write, so a
#: flood of small frames (pongs) is held to max_outgoing_buffer in memory too.
_BUFFERED_WRITE_OVERHEAD = 48

_INVOKE = MessageKind.INVOKE
_NOTIFY = MessageKind.NOTIFY
_RESULT = MessageKind.RESULT

_log = Logger()
#: one info line per connection opened and closed (docs/operations.md), in a
#: namespace of its own so it can be filtered or shipped separately
_connection_log = Logger(namespace="twisted_hub.connections")


class HeartbeatFeature:
    """
    One connection's view of the server heartbeat (MagicOnion's
    C{IMagicOnionHeartbeatFeature}), reachable as
    C{self.connection.heartbeat} inside a hub.
    """

    def __init__(self, protocol: HubServerProtocol) -> None:
        self._protocol = protocol

    @property
    def latency(self) -> float:
        """Round trip of the newest answered heartbeat, seconds (0.0 before any)."""
        return self._protocol.core.heartbeat.latency

    @property
    def policy(self) -> HeartbeatPolicy:
        """The policy in force for this connection."""
        return self._protocol.heartbeat_policy

    @property
    def active(self) -> bool:
        """True while the server sends heartbeats on this connection."""
        return self._protocol.heartbeat_scheduler is not None

    def unregister(self) -> None:
        """Stop heartbeats (and their timeout) for this connection."""
        self._protocol.stop_heartbeat()

    def set_ack_callback(self, callback: Callable[[float], object] | None) -> None:
        """Call C{callback(latency)} on every answer to the newest heartbeat."""
        self._protocol.ack_callback = callback

    def override(
        self, interval: float | None = None, timeout: float | None | Unset = UNSET, enabled: bool | None = None
    ) -> None:
        """
        Change this connection's interval/timeout; call from
        C{on_connecting} (e.g. sparser beats for mobile clients).
        """
        if self._protocol.state != self._protocol.STATE_CONNECTING:
            raise RuntimeError("heartbeat override must happen in on_connecting")
        kwargs: dict[str, Any] = {"enabled": enabled, "interval": interval}
        if timeout is not UNSET:
            kwargs["timeout"] = timeout
        self._protocol.heartbeat_policy = self._protocol.heartbeat_policy.overridden(**kwargs)


class ConnectionContext:
    """
    What a hub instance knows about its connection: C{self.connection}.

    @ivar id: unique connection id (also sent to the client in the welcome).
    @ivar request: autobahn's C{ConnectionRequest} (path, headers, peer...).
    @ivar items: free storage for the hub's per-connection state.
    """

    def __init__(self, protocol: HubServerProtocol, request: ConnectionRequest) -> None:
        self._protocol = protocol
        self.id = protocol.connection_id
        self.request = request
        self.items: dict[str, Any] = {}
        self.heartbeat = HeartbeatFeature(protocol)

    @property
    def peer(self) -> str:
        return str(self.request.peer)

    @property
    def open(self) -> bool:
        return self._protocol.core.state is ConnectionState.OPEN

    def kick(self, reason: str = "kicked") -> None:
        """Close this connection; the client sees C{KICKED} with C{reason}."""
        self._protocol.close_with(CloseCode.KICKED, reason, DisconnectKind.KICKED)

    def invoke(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Deferred[Any]:
        """
        Call a client receiver method and get its return value (a client
        result).  Fails with L{CallTimeoutError} after C{timeout} seconds
        (default: the factory's C{client_result_timeout}), with the client's
        L{HubError} if it raised, or L{ConnectionClosedError}.
        """
        return self._protocol.invoke_client(method, list(args), kwargs or None, timeout)


#: What L{HubServerFactory} serves: a hub class (one instance per connection,
#: made with no arguments), or C{functools.partial(HubClass, ...)} to give each
#: instance its dependencies (C{partial(ChatHub, db)}).
HubSpec = type[Hub] | partial[Hub]


def _hub_class_and_maker(spec: HubSpec) -> tuple[type[Hub], Callable[[], Hub]]:
    """The hub class a spec serves, and how to make one instance of it."""
    if isinstance(spec, type) and issubclass(spec, Hub):
        return spec, spec
    if isinstance(spec, partial) and isinstance(spec.func, type) and issubclass(spec.func, Hub):
        return spec.func, spec
    raise TypeError(f"serve Hub subclasses or functools.partial(HubSubclass, ...), not {spec!r}")


class HubRuntime:
    """Shared state of one hub class on one factory: connections and groups."""

    def __init__(self, hub_class: type[Hub], factory: HubServerFactory, make: Callable[[], Hub] | None = None) -> None:
        self.hub_class = hub_class
        #: makes the hub instance of each new connection
        self.make_hub: Callable[[], Hub] = make if make is not None else hub_class
        self.factory = factory
        self.methods = hub_class.hub_methods
        self.receiver_methods = receiver_methods(hub_class.receiver)
        self.connections: dict[str, HubServerProtocol] = {}
        self.backplane: Backplane = factory.backplane
        hub_name = hub_class.hub_name
        self.groups = GroupRegistry(
            lambda group, connection_id, joined: self.backplane.membership_changed(hub_name, group, connection_id, joined)
        )
        override = hub_class.heartbeat_override
        self.heartbeat_policy = override.apply(factory.heartbeat) if override else factory.heartbeat
        #: this hub's Prometheus children (None: metrics off)
        self.metrics: HubLabelMetrics | None = None
        #: traffic and call counts of its closed connections
        self.traffic = TrafficTotals()

    def send_receiver_call(
        self, targets: Iterable[HubServerProtocol], method: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> None:
        """Encode one receiver call once and deliver it to every target (of this node)."""
        self.deliver(targets, self._encode_receiver_call(method, args, kwargs))

    def _encode_receiver_call(self, method: str, args: list[Any], kwargs: dict[str, Any] | None) -> bytes:
        return receiver_call_payload(method, args, kwargs, self.factory.max_message_size)

    def send_to(self, target: Target, method: str, args: list[Any], kwargs: dict[str, Any] | None) -> None:
        """
        Encode one receiver call once, deliver it to C{target}'s connections
        on this node, and hand it to the backplane for the other nodes.
        """
        payload = self._encode_receiver_call(method, args, kwargs)
        self.deliver(self.local_targets(target), payload)
        if target.kind != TARGET_CALLER:
            self.backplane.publish(self.hub_class.hub_name, target, payload)

    def local_targets(self, target: Target) -> list[HubServerProtocol]:
        """The connections of this node that C{target} names."""
        kind = target.kind
        if kind == TARGET_GROUP:
            assert target.group is not None
            members = self.groups.members_of(target.group)
            if not target.ids:
                return members
            excluded = frozenset(target.ids)
            return [p for p in members if p.connection_id not in excluded]
        connections = self.connections
        if kind == TARGET_ALL:
            if not target.ids:
                return list(connections.values())
            excluded = frozenset(target.ids)
            return [p for i, p in connections.items() if i not in excluded]
        # caller, only: these ids, where this node holds them
        return [connections[i] for i in target.ids if i in connections]

    def deliver(self, targets: Iterable[HubServerProtocol], payload: bytes) -> None:
        """Send an encoded receiver call to connections of this node (framed once for many)."""
        targets = targets if isinstance(targets, (list, tuple)) else list(targets)
        if len(targets) == 1:
            targets[0].write_message(payload)
            return
        if not targets:
            return
        prepared = self.factory.prepareMessage(payload, isBinary=True)
        for target in targets:
            target.send_prepared(prepared)


@implementer(IPushProducer)
class HubServerProtocol(FastPathMixin, BoundedDropMixin, WebSocketServerProtocol):  # type: ignore[misc]
    """One client connection to one hub."""

    factory: HubServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.connection_id = ""
        self.core: ServerConnection[Deferred[Any]] = cast(Any, None)
        self.hub: Hub | None = None
        self.runtime: HubRuntime | None = None
        self.heartbeat_policy = HeartbeatPolicy()
        self.heartbeat_scheduler: ServerHeartbeatScheduler | None = None
        #: checked with WebSocket pings: the client did not announce heartbeats
        self.heartbeat_by_ping = False
        self.ack_callback: Callable[[float], object] | None = None
        self._handling = 0
        #: runs this connection's hub calls (set once the hub instance exists)
        self.dispatcher: CallDispatcher | None = None
        self._closed_waiters: list[Deferred[None]] = []
        self._close_reason: DisconnectReason | None = None
        self._paused = False
        self._written_while_paused = 0
        self._disconnected = False
        self._hello_deadline: IDelayedCall | None = None
        self._handshake_deadline: IDelayedCall | None = None
        self._admitted_peer: IAddress | None = None  # counted in factory.limits by this protocol
        self._refused = False
        #: created at the first log line about a peer mistake
        self._peer_log: LogRateLimiter | None = None
        #: bytes written to this client (read by the metrics)
        self.bytes_sent = 0
        self._opened_at = 0.0

    # -- heartbeat member interface ------------------------------------------
    @property
    def heartbeat_tracker(self) -> HeartbeatTracker:
        return self.core.heartbeat

    @property
    def last_received(self) -> float:
        return self.core.last_received

    def heartbeat_timed_out(self) -> None:
        metrics = self.factory.metrics
        if metrics is not None:
            metrics.heartbeat_timeouts.inc()
        if self.heartbeat_by_ping:
            _log.info("{id} answered no WebSocket ping in time; closing", id=self.connection_id)
            self.close_with(CloseCode.HEARTBEAT_TIMEOUT, PING_TIMEOUT_REASON, DisconnectKind.TIMED_OUT)
        else:
            _log.info("{id} answered no heartbeat in time; closing", id=self.connection_id)
            self.close_with(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON, DisconnectKind.TIMED_OUT)

    def send_ping(self, frame: bytes) -> None:
        """Send a WebSocket ping frame built once for many connections."""
        if self._disconnected or self.state != self.STATE_OPEN:
            return
        if self.core.has_outgoing:
            self._flush()
        self.sendData(frame)  # counted as unread output there, like every write

    def onPong(self, payload: bytes) -> None:
        if not self.heartbeat_by_ping or self.heartbeat_scheduler is None:
            return
        sequence = ping_sequence(payload)
        if sequence is None:
            return
        latency = self.core.heartbeat.acknowledged(sequence, self.factory.clock.seconds())
        if latency is not None:
            self._heartbeat_answered(HeartbeatAnswered(sequence, latency))

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why this connection ended, once it has (None while open)."""
        return self._close_reason if self._disconnected else None

    def when_closed(self) -> Deferred[None]:
        """Fires once this connection has closed (now, if it has)."""
        waiter: Deferred[None] = Deferred()
        if self._disconnected:
            waiter.callback(None)
        else:
            self._closed_waiters.append(waiter)
        return waiter

    @property
    def calls_in_progress(self) -> int:
        """Hub calls this connection is running or has queued."""
        return self.dispatcher.in_progress if self.dispatcher is not None else 0

    @property
    def bytes_in_progress(self) -> int:
        """Encoded size of the calls this connection is running (asynchronously) or has queued."""
        return self.dispatcher.pending_bytes if self.dispatcher is not None else 0

    def stop_heartbeat(self) -> None:
        scheduler = self.heartbeat_scheduler
        if scheduler is not None:
            self.heartbeat_scheduler = None
            scheduler.remove(self)

    # -- connection limits (see _limits.py) -----------------------------------
    def connectionMade(self) -> None:
        limits = self.factory.limits
        guarded = isinstance(self.transport, GuardedConnection)
        if guarded:
            # The guard stays in the receiving path (it sees the connection
            # lost); we write to the transport under it, as autobahn wants the
            # TLS protocol itself there (for TLS details), not a wrapper.
            self.transport = self.transport.transport
        super().connectionMade()
        # Behind a ConnectionGuard the connection was counted, and its deadline
        # started, when it was accepted; otherwise count it and start one here.
        if not guarded:
            address = self.transport.getPeer()
            if not limits.admit(address):
                self._refused = True
                self.transport.abortConnection()
                return
            self._admitted_peer = address
        self._handshake_deadline = self.factory.clock.callLater(limits.handshake_timeout, self._handshake_timed_out)

    def _handshake_timed_out(self) -> None:
        self._handshake_deadline = None
        if self.state != self.STATE_CONNECTING:
            return
        self.factory.limits.handshake_timed_out(self.transport.getPeer())
        self.wasClean = False
        self.wasNotCleanReason = "the opening handshake did not finish in time"
        self.wasOpenHandshakeTimeout = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        if self._handshake_deadline is not None:
            self._handshake_deadline.cancel()
            self._handshake_deadline = None
        if self._admitted_peer is not None:
            self.factory.limits.release(self._admitted_peer)
            self._admitted_peer = None
        super().connectionLost(reason)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # autobahn refuses an Origin header that is not an origin (empty, no
        # host) with 400 before onConnect runs; it is an origin refusal (403).
        if code == 400 and reason.startswith("HTTP Origin header invalid"):
            origin = (getattr(self, "http_headers", None) or {}).get("origin", "")
            code, reason = 403, f"origin {origin!r} is not allowed (not a valid origin)"
        super().failHandshake(reason, code, responseHeaders)

    # -- handshake -----------------------------------------------------------
    def onConnect(self, request: ConnectionRequest) -> Any:
        factory = self.factory
        if self._refused:
            raise ConnectionDeny(503, "too many connections")
        if not factory.host_allowed(request.headers.get("host")):
            raise ConnectionDeny(400, f"host {request.headers.get('host', '')[:100]!r} is not allowed")
        if SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(
                400, f"no supported subprotocol offered; this server speaks {SUBPROTOCOL}"
            )
        if not factory.origin_allowed(request):
            raise ConnectionDeny(403, f"origin {request.origin!r} is not allowed")
        runtime = factory.route(request.path)
        if runtime is None:
            raise ConnectionDeny(404, f"unknown hub at path {request.path!r}")
        self.runtime = runtime
        self.connection_id = factory.backplane.new_connection_id()
        self.heartbeat_policy = runtime.heartbeat_policy
        self.core = ServerConnection(self.connection_id)
        self.core.max_messages_per_frame = factory.max_messages_per_frame
        hub = runtime.make_hub()
        hub._runtime = runtime
        hub.connection = ConnectionContext(self, request)
        self.hub = hub
        self.dispatcher = CallDispatcher(
            hub, runtime.methods, self, concurrent=runtime.hub_class.concurrent,
            max_pending_calls=factory.max_pending_calls, max_pending_bytes=factory.max_pending_bytes,
            debug=factory.debug, metrics=runtime.metrics, now=factory.clock.seconds,
        )
        hub_name = runtime.hub_class.hub_name

        def refused(failure: Failure) -> Failure:
            if failure.check(RefuseConnection):
                refusal = failure.value
                return Failure(ConnectionDeny(refusal.status, refusal.reason))  # type: ignore[union-attr]
            _log.failure("on_connecting of {hub} failed", failure, hub=hub_name)
            return Failure(ConnectionDeny(500, "internal server error"))

        # maybeDeferred runs the hook and turns a coroutine (async def) into a
        # Deferred, so an async refusal is awaited like a Deferred one.
        decided = maybeDeferred(hub.on_connecting, request).addCallbacks(lambda _: SUBPROTOCOL, refused)
        if not decided.called:
            return decided
        # The hook answered at once (sync, or an async def that never waited):
        # answer autobahn synchronously too.
        outcome: list[Any] = []
        decided.addBoth(outcome.append)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return SUBPROTOCOL

    def onOpen(self) -> None:
        if self._handshake_deadline is not None:
            self._handshake_deadline.cancel()
            self._handshake_deadline = None
        runtime = self.runtime
        assert runtime is not None
        policy = self.heartbeat_policy
        self.count_any_traffic = policy.any_traffic_counts
        if policy.enabled:
            self.core.welcome(policy.interval, policy.timeout, self.factory.max_message_size)
        else:
            self.core.welcome(None, None, self.factory.max_message_size)
        self._flush()
        runtime.connections[self.connection_id] = self
        self.factory.connection_count += 1
        self._opened_at = self.factory.clock.seconds()
        if runtime.metrics is not None:
            runtime.metrics.connects.inc()
        _connection_log.info(
            "{hub} connection {id} opened from {peer}",
            hub=runtime.hub_class.hub_name, id=self.connection_id, peer=peer_text(self.peer),
        )
        self._become_producer()
        self._hello_deadline = self.factory.clock.callLater(self.factory.hello_timeout, self._no_hello)
        self._call_hook("on_connected")

    def _become_producer(self) -> None:
        """
        Register as the transport's streaming producer: the transport pauses
        us when its buffer is full, and what we write from then on counts
        against max_outgoing_buffer (see L{sendData}).
        """
        transport = self.transport
        previous = getattr(transport, "producer", None)
        if previous is not None and previous is not self:
            # Behind twisted.web (HubResource, or autobahn's WebSocketResource)
            # the HTTP channel that parsed the upgrade registered itself as the
            # producer of this transport, and stays registered after the
            # transport was handed to us; it will never write again.
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    def _no_hello(self) -> None:
        self._hello_deadline = None
        _log.info("{id} sent no hello within {timeout}s; closing", id=self.connection_id, timeout=self.factory.hello_timeout)
        self.close_with(CloseCode.HANDSHAKE_FAILED, "no hello", DisconnectKind.HANDSHAKE_FAILED)

    # -- receiving -----------------------------------------------------------
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        core = self.core
        if core is None or self._disconnected:
            return
        if not isBinary:
            _log.info("text frame from {peer} ({id}); closing", peer=self.peer, id=self.connection_id)
            self.close_with(
                CloseCode.UNSUPPORTED_DATA, "text frames are not supported", DisconnectKind.PROTOCOL_ERROR
            )
            return
        self._handling += 1
        try:
            now = self.factory.clock.seconds()
            events = core.receive_frame(payload, now)
            metrics = self.factory.metrics
            if metrics is not None:
                metrics.frame_messages.observe(core.last_frame_messages)
            # A call's size (for max_pending_bytes) is its frame's share.
            call_size = len(payload) // len(events) if len(events) > 1 else len(payload)
            for event in events:
                kind = type(event)
                if kind is Invoke or kind is Notify:
                    self.dispatcher.receive(event, call_size)  # type: ignore[union-attr, arg-type]
                elif kind is ClientHeartbeat:
                    core.answer_heartbeat(event, now)  # type: ignore[arg-type]
                elif kind is CallSucceeded:
                    event.token.callback(event.value)  # type: ignore[union-attr]
                elif kind is CallFailed:
                    error = event.error  # type: ignore[union-attr]
                    event.token.errback(HubError(error.code, error.message, error.detail))  # type: ignore[union-attr]
                elif kind is HeartbeatAnswered:
                    self._heartbeat_answered(event)  # type: ignore[arg-type]
                elif kind is HandshakeCompleted:
                    self._handshake_completed()
                elif kind is Close:
                    self._close_reason = DisconnectReason(
                        kind_for_close(event.code, False), event.code, event.reason  # type: ignore[union-attr]
                    )
        except TooManyMessagesError as e:
            _log.info(
                "{peer} ({id}) sent {error}; closing with {code}",
                peer=self.peer, id=self.connection_id, error=e, code=CloseCode.POLICY_VIOLATION,
            )
            self.close_with(CloseCode.POLICY_VIOLATION, str(e), DisconnectKind.PROTOCOL_ERROR)
        except ProtocolError as e:
            _log.info(
                "protocol error from {peer} ({id}): {error}; closing", peer=self.peer, id=self.connection_id, error=e
            )
            self.close_with(CloseCode.PROTOCOL_ERROR, str(e)[:100], DisconnectKind.PROTOCOL_ERROR)
        except Exception:
            _log.failure("unexpected error handling a frame from {id}", id=self.connection_id)
            self.close_with(CloseCode.INTERNAL_ERROR, "internal error", DisconnectKind.PROTOCOL_ERROR)
        finally:
            self._handling -= 1
            if not self._handling:
                self._flush()

    def _handshake_completed(self) -> None:
        if self._hello_deadline is not None:
            self._hello_deadline.cancel()
            self._hello_deadline = None
        policy = self.heartbeat_policy
        if not policy.enabled:
            return
        if self.core.peer_takes_heartbeats:
            self.heartbeat_by_ping = False
        elif policy.ping_fallback:
            # No connection goes unchecked: a client that does not speak our
            # heartbeat still answers WebSocket pings (RFC 6455 requires it).
            self.heartbeat_by_ping = True
        else:
            return
        self.heartbeat_scheduler = self.factory.scheduler_for(policy)
        self.heartbeat_scheduler.add(self)

    def _heartbeat_answered(self, event: HeartbeatAnswered) -> None:
        # No log event per ack (that costs ~5% of the server's heartbeat CPU,
        # docs/performance.md): the scheduler logs the count once per tick.
        scheduler = self.heartbeat_scheduler
        if scheduler is not None:
            scheduler.acknowledged += 1
        self.factory.heartbeat_window.latencies.append(event.latency)
        metrics = self.factory.metrics
        if metrics is not None:
            metrics.heartbeat_latency.observe(event.latency)
        callback = self.ack_callback
        if callback is not None:
            try:
                callback(event.latency)
            except Exception:
                _log.failure("heartbeat ack callback raised")

    # -- answering calls (the dispatcher decides, see _dispatch.py) -----------
    def peer_mistake(self, format: str, **fields: Any) -> None:
        """
        Log one line about something the peer got wrong, at most one line per
        connection per second (the line says how many were suppressed).
        """
        limiter = self._peer_log
        if limiter is None:
            limiter = self._peer_log = LogRateLimiter()
        suppressed = limiter.allow(self.factory.clock.seconds())
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        _log.info(format, id=self.connection_id, suppressed=suppressed, **fields)

    # -- client results ------------------------------------------------------
    def invoke_client(
        self, method: str, args: list[Any], kwargs: dict[str, Any] | None, timeout: float | None
    ) -> Deferred[Any]:
        core = self.core
        if self._disconnected or core.state is not ConnectionState.OPEN:
            reason = self._close_reason or DisconnectReason(DisconnectKind.CONNECTION_LOST)
            return fail(ConnectionClosedError(reason))
        call_id = 0

        def cancel(d: Deferred[Any]) -> None:
            core.forget_call(call_id)

        deferred: Deferred[Any] = Deferred(cancel)
        call_id = core.invoke_client(deferred, method, args, kwargs)
        limit = self.factory.client_result_timeout if timeout is None else timeout
        deferred.addTimeout(
            limit,
            self.factory.clock,
            onTimeoutCancel=lambda value, seconds: Failure(
                CallTimeoutError(f"client did not answer {method!r} within {seconds}s")
            ),
        )
        if not self._handling:
            self._flush()
        return deferred

    # -- sending -------------------------------------------------------------
    def write_message(self, payload: bytes) -> None:
        """Queue one encoded message; it leaves at the end of the current frame's handling."""
        if self._disconnected:
            return
        if not self.core.queue_payload(payload):
            self._not_sent(len(payload), self.core.peer_max_message_size or 0)
            return
        if not self._handling:
            self._flush()

    # CallAnswers, for the dispatcher
    def answer_result(self, call_id: int, value: Any) -> None:
        if self._disconnected:
            return
        problem = self.core.send_result(call_id, value, self.factory.max_message_size)
        if problem is not None:
            _log.error(
                "result of call {call_id} on {id} not sent: {problem}", call_id=call_id, id=self.connection_id, problem=problem
            )
        if not self._handling:
            self._flush()

    def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        if self._disconnected:
            return
        self.core.send_error(call_id, code, message, detail)
        if not self._handling:
            self._flush()

    def method_crashed(self, method: str, failure: Failure) -> None:
        _log.failure("hub method {method} raised", failure, method=method)

    def hold_answers(self) -> None:
        self._handling += 1

    def release_answers(self) -> None:
        self._handling -= 1
        if not self._handling:
            self._flush()

    def _not_sent(self, size: int, limit: int) -> None:
        _log.warn(
            "a {size}-byte message was not sent to {id}: over the {limit}-byte limit it announced",
            size=size, id=self.connection_id, limit=limit,
        )

    def _flush(self) -> None:
        core = self.core
        if core is None or not core.has_outgoing or self._disconnected:
            return
        if self.state != self.STATE_OPEN:
            return  # closing (e.g. kicked inside a call): autobahn refuses to send
        for frame in core.frames_to_send(core.send_limit(self.factory.max_message_size)):
            self.sendMessage(frame, isBinary=True)

    def send_prepared(self, prepared: Any) -> None:
        """Send a frame prepared once for many connections (keeps order with queued messages)."""
        if self._disconnected or self.state != self.STATE_OPEN:
            return
        limit = self.core.peer_max_message_size
        if limit is not None and len(prepared.payload) > limit:
            self._not_sent(len(prepared.payload), limit)
            return
        if self.core.has_outgoing:
            self._flush()
        self.core.messages_sent += 1
        self.sendPreparedMessage(prepared)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every byte for this client passes here: hub messages, prepared
        # broadcasts, heartbeats, and what autobahn writes on its own (pongs
        # to the client's pings, close frames).  Unread output is what was
        # handed to the transport since it last said its buffer was full
        # (pauseProducing), the write that filled it included.
        if self._disconnected:
            return
        self.bytes_sent += len(data)
        size = len(data) + _BUFFERED_WRITE_OVERHEAD
        if self._paused:
            if self._written_while_paused + size > self.factory.max_outgoing_buffer:
                self._drop_slow_consumer(self._written_while_paused + size)
                return
            self._written_while_paused += size
            super().sendData(data, sync, chopsize)
            return
        super().sendData(data, sync, chopsize)
        if self._paused:  # this write filled the buffer: pauseProducing ran inside it
            self._written_while_paused = size

    def _drop_slow_consumer(self, waiting: int) -> None:
        _log.warn(
            "{id} does not read its data ({size} bytes waiting, limit {limit}): disconnecting",
            id=self.connection_id, size=waiting, limit=self.factory.max_outgoing_buffer,
        )
        self._close_reason = DisconnectReason(
            DisconnectKind.SLOW_CONSUMER, CloseCode.SLOW_CONSUMER, "outgoing buffer limit", True
        )
        if self.runtime is not None and self.runtime.metrics is not None:
            self.runtime.metrics.slow_consumer_closes.inc()
        self._disconnected = True
        self.transport.abortConnection()

    # IPushProducer: the transport tells us when its buffer is full.
    def pauseProducing(self) -> None:
        # Twisted calls this again on every write while the buffer is full:
        # only the first call starts the count, or a stalled client is never dropped.
        if not self._paused:
            self._paused = True
            self._written_while_paused = 0

    def resumeProducing(self) -> None:
        self._paused = False
        self._written_while_paused = 0

    def stopProducing(self) -> None:
        pass

    # -- closing -------------------------------------------------------------
    def close_with(self, code: int, reason: str, kind: DisconnectKind) -> None:
        """Close this connection with a close code the client understands."""
        if self._disconnected or self._close_reason is not None and self._close_reason.locally:
            return
        self._close_reason = DisconnectReason(kind, code, reason, True)
        if self.state == self.STATE_OPEN:
            if self.core is not None and self.core.state is not ConnectionState.CLOSED:
                self.core.send(Close(code, reason))
                self._flush()
                self.core.closing()
            self.sendCloseFrame(code, close_reason_bytes(reason), isReply=False)
            if code == CloseCode.HEARTBEAT_TIMEOUT:
                # The peer is presumably gone: don't wait for its close reply.
                self.drop_after_close(self.factory.clock)
        else:
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._disconnected = True
        self.cancel_drop()
        if self._hello_deadline is not None:
            self._hello_deadline.cancel()
            self._hello_deadline = None
        if self.runtime is None or self.hub is None or self.connection_id not in self.runtime.connections:
            return  # never opened (refused handshake)
        runtime = self.runtime
        close_reason = self._close_reason = final_close_reason(self, self._close_reason, reason)
        self.stop_heartbeat()
        runtime.groups.remove_everywhere(self)
        del runtime.connections[self.connection_id]
        self.factory.connection_count -= 1
        runtime.traffic.retire(self)
        self._log_closed(runtime, close_reason)
        if self.dispatcher is not None:
            self.dispatcher.close()
        for deferred in self.core.closed():
            deferred.errback(ConnectionClosedError(close_reason))
        self._call_hook("on_disconnected", close_reason)
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if self._peer_log is not None and self._peer_log.suppressed:
            _log.info(
                "{id}: {suppressed} more lines about its mistakes were suppressed",
                id=self.connection_id, suppressed=self._peer_log.suppressed,
            )

    def _log_closed(self, runtime: HubRuntime, reason: DisconnectReason) -> None:
        """Count a disconnect, remember it for the status page and log one line about it."""
        factory = self.factory
        now = factory.clock.seconds()
        hub_name = runtime.hub_class.hub_name
        if runtime.metrics is not None:
            runtime.metrics.disconnects[reason.kind].inc()
        text = bounded_text(reason.message or "")
        factory.recent_disconnects.add(now, hub_name, self.connection_id, reason.kind.value, reason.code, text)
        _connection_log.info(
            "{hub} connection {id} closed: {kind} ({code}) {reason}; from {peer} after {duration:.1f}s",
            hub=hub_name, id=self.connection_id, peer=peer_text(self.peer), duration=now - self._opened_at,
            kind=reason.kind.value, code=reason.code, reason=text, locally=reason.locally,
        )

    def _call_hook(self, name: str, *args: Any) -> None:
        hub = self.hub
        if hub is None:
            return
        result = maybeDeferred(getattr(hub, name), *args)
        result.addErrback(lambda f: _log.failure("{hook} of {id} failed", f, hook=name, id=self.connection_id))


class HubServerFactory(WebSocketServerFactory):
    """
    Serves one or more hubs over WebSocket.

    @param hubs: hub classes (one instance per connection), or
        C{functools.partial(HubClass, dependency, ...)} to give each instance
        its dependencies; each is reached at C{ws://host/<path>/<hub_name>}.
        With one hub, any path reaches it.
    @param clock: time source and timer host (default: the global reactor,
        resolved when first needed); autobahn is given it as its reactor.
        C{reactor=} is a deprecated name for it.
    @param heartbeat: the global server heartbeat policy (off by default);
        a hub's L{heartbeat} decorator overrides it.
    @param max_message_size: largest incoming message, bytes (over it: close 1009).
    @param max_outgoing_buffer: bytes a client may leave unread before it is
        disconnected (close 4004).
    @param max_pending_calls: calls one connection may have running or queued;
        more are answered with C{too-many-pending} (a notification over it is
        dropped, with a log line).
    @param max_pending_bytes: encoded bytes of the calls one connection may
        have running or queued; a call that would go over it is answered with
        C{too-many-pending} (a call is always accepted when none is pending).
    @param max_messages_per_frame: the most messages one incoming frame may
        hold; a frame with more is not handled at all and the connection is
        closed with 1008 (policy violation).
    @param client_result_timeout: default seconds to wait for a client result.
    @param hello_timeout: seconds a new connection may take to send its hello
        before it is closed with 4003.
    @param allowed_origins: browser origins allowed to connect (None: any;
        requests without an Origin header, i.e. non-browsers, always pass),
        or a callable C{(request) -> bool} such as L{OriginPolicy}.
    @param allowed_hosts: host names the C{Host} header may carry (exact
        names, C{.example.com} for the domain and its subdomains, C{*});
        None: any.  Refuses DNS-rebinding pages (see L{AllowedHosts}).
    @param handshake_timeout: seconds from accepting a connection to the end
        of its WebSocket opening handshake; later, it is aborted.
    @param max_connections: connections held at most, open or in their
        handshake (None or 0: no cap); more are closed at once.
    @param max_connections_per_ip: the same per IPv4 address / IPv6 /64
        network (None or 0: no cap; set it off behind a proxy, whose address
        every connection has).
    @param debug: send exception text and tracebacks in internal errors.
    @param backplane: what joins this process to the others serving the same
        hubs (default: L{LocalBackplane}, this process alone); e.g.
        C{twisted_hub.redis.RedisBackplane("redis://127.0.0.1:6379/0")}.
        See C{docs/scaling.md}.
    @param metrics: keep Prometheus metrics (True, or a L{HubMetrics}); needs
        C{prometheus_client} (the C{metrics} extra).  See C{docs/operations.md}.
    @param registry: the C{prometheus_client} registry to put them in
        (implies C{metrics=True}; default: one of this factory's own, at
        C{factory.metrics.registry}).
    """

    protocol = HubServerProtocol  # type: ignore[assignment]
    #: take the autobahn fast path (twisted_hub/_autobahn.py) when the installed
    #: autobahn is a tested version; set False (on the class or an instance) for
    #: stock autobahn on every frame
    fast_path: bool = True

    @reactor_keyword_deprecated
    def __init__(
        self,
        hubs: Sequence[HubSpec] | Mapping[str, HubSpec],
        *,
        url: str | None = None,
        clock: IReactorTime | None = None,
        heartbeat: HeartbeatPolicy | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_outgoing_buffer: int = DEFAULT_MAX_OUTGOING_BUFFER,
        max_pending_calls: int = DEFAULT_MAX_PENDING_CALLS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        client_result_timeout: float = DEFAULT_CLIENT_RESULT_TIMEOUT,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        max_messages_per_frame: int = DEFAULT_MAX_MESSAGES_PER_FRAME,
        allowed_origins: Iterable[str] | Callable[[ConnectionRequest], bool] | None = None,
        allowed_hosts: Iterable[str] | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_ip: int | None = DEFAULT_MAX_CONNECTIONS_PER_IP,
        debug: bool = False,
        reactor: IReactorTime | None = None,
        backplane: Backplane | None = None,
        metrics: bool | HubMetrics = False,
        registry: Any = None,
    ) -> None:
        if clock is None:
            clock = reactor  # the deprecated name (it warned)
        super().__init__(url, protocols=[SUBPROTOCOL], reactor=clock)
        # autobahn resolved the reactor (the global one unless given): our timers use it too.
        self.clock: IReactorTime = clock if clock is not None else self.reactor
        self.heartbeat = heartbeat or HeartbeatPolicy()
        if min(max_message_size, max_outgoing_buffer, max_pending_calls, max_pending_bytes, max_messages_per_frame) <= 0:
            raise HubArgumentError("limits must be positive")
        self.max_message_size = max_message_size
        self.max_outgoing_buffer = max_outgoing_buffer
        self.max_pending_calls = max_pending_calls
        self.max_messages_per_frame = max_messages_per_frame
        self.max_pending_bytes = max_pending_bytes
        self.client_result_timeout = client_result_timeout
        self.hello_timeout = hello_timeout
        self.allowed_origins: frozenset[str] | Callable[[ConnectionRequest], bool] | None = (
            allowed_origins if allowed_origins is None or callable(allowed_origins) else frozenset(allowed_origins)
        )
        self.allowed_hosts = None if allowed_hosts is None else AllowedHosts(allowed_hosts)
        self.limits = ConnectionLimits(self.clock, max_connections, max_connections_per_ip, handshake_timeout)
        self.debug = debug
        self.connection_count = 0
        self.stall_detector = StallDetector()
        self._schedulers: dict[HeartbeatPolicy, ServerHeartbeatScheduler] = {}
        self.backplane: Backplane = backplane if backplane is not None else LocalBackplane()
        self.runtimes: dict[str, HubRuntime] = {}
        specs = hubs.items() if isinstance(hubs, Mapping) else ((None, spec) for spec in hubs)
        for given_name, spec in specs:
            hub_class, make = _hub_class_and_maker(spec)
            name = given_name if given_name is not None else hub_class.hub_name
            if name in self.runtimes:
                raise HubArgumentError(f"two hubs are named {name!r}")
            self.runtimes[name] = HubRuntime(hub_class, self, make)
        if not self.runtimes:
            raise HubArgumentError("serve at least one hub")
        #: when this factory started (the status page's uptime); None before
        self.started_at: float | None = None
        #: True once a graceful shutdown started (GET /health answers 503)
        self.draining = False
        self.heartbeat_window = HeartbeatWindow()
        self.recent_disconnects = RecentDisconnects()
        self.metrics: HubMetrics | None = None
        if isinstance(metrics, HubMetrics):
            if registry is not None:
                raise HubArgumentError("give either a HubMetrics or a registry")
            self.metrics = metrics
        elif metrics or registry is not None:
            self.metrics = HubMetrics(registry)
        if self.metrics is not None:
            self.metrics.attach(self)
        self.backplane.attach(self)
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            autoFragmentSize=0,
            failByDrop=False,
            # Our own handshake deadline (on self.clock) replaces autobahn's.
            openHandshakeTimeout=0,
            # "Origin: null" reaches onConnect, where the origin policy decides.
            allowNullOrigin=True,
        )

    def route(self, path: str) -> HubRuntime | None:
        """The hub a request path reaches: its last segment names it."""
        name = path.rstrip("/").rsplit("/", 1)[-1]
        runtime = self.runtimes.get(name)
        if runtime is None and len(self.runtimes) == 1:
            return next(iter(self.runtimes.values()))
        return runtime

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's C{Host} header names a host this server serves."""
        return self.allowed_hosts is None or self.allowed_hosts.allows(host_header)

    def origin_allowed(self, request: ConnectionRequest) -> bool:
        if self.allowed_origins is None or not request.origin:
            return True
        if callable(self.allowed_origins):
            return bool(self.allowed_origins(request))
        return request.origin in self.allowed_origins

    def scheduler_for(self, policy: HeartbeatPolicy) -> ServerHeartbeatScheduler:
        """The shared heartbeat scheduler of one configuration."""
        scheduler = self._schedulers.get(policy)
        if scheduler is None:
            scheduler = ServerHeartbeatScheduler(
                policy, self.clock, lambda payload: self.prepareMessage(payload, isBinary=True), self.stall_detector,
                on_tick=self._heartbeat_tick,
            )
            self._schedulers[policy] = scheduler
        return scheduler

    def _heartbeat_tick(self, now: float, sent: int, sent_before: int, answered: int) -> None:
        # The answers since the previous tick answer that tick's beats.
        self.heartbeat_window.tick(now, sent_before, answered)
        if self.metrics is not None:
            self.metrics.heartbeats_sent.inc(sent)

    def hub_runtime(self, hub: type[Hub] | str) -> HubRuntime:
        """The shared state of one hub (connections, groups) by class or name."""
        name = hub if isinstance(hub, str) else hub.hub_name
        return self.runtimes[name]

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> int:
        """Close every connection (e.g. at shutdown); return how many."""
        count = 0
        for runtime in self.runtimes.values():
            for protocol in list(runtime.connections.values()):
                protocol.close_with(code, reason, DisconnectKind.GOING_AWAY)
                count += 1
        return count

    def startFactory(self) -> None:
        if self.started_at is None and IReactorTime.providedBy(self.clock):
            self.started_at = self.clock.seconds()
        super().startFactory()
        self.backplane.start()

    def stopFactory(self) -> None:
        for scheduler in self._schedulers.values():
            scheduler.stop()
        self.backplane.stop()
        super().stopFactory()
