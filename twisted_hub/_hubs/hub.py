"""
The hub layer: the L{Hub} base class, attribute-style registration
(L{hub}, L{method}, L{heartbeat}), receivers and groups.

A hub class describes one service; the server makes one instance per
connection.  Inside a method, C{self.connection} is the calling connection,
C{self.clients} reaches client receivers and C{self.groups} manages this
connection's group memberships.

The hub layer reaches a connection only through L{HubConnection} (and
L{ConnectionControl} for C{self.connection}), small interfaces that the
server's L{twisted_hub._core.server_session.ServerSession} implements: it knows
nothing of autobahn or of any transport.  L{HubRuntime} holds one hub's
connections and groups and does the fan-out of receiver calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Protocol,
    TypeVar,
    get_type_hints,
    overload,
)

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .._backplane.interface import TARGET_ALL, TARGET_CALLER, TARGET_GROUP, TARGET_ONLY, Backplane, Target
from .._core.base_error import HubArgumentError, HubAttributeError, HubStateError, TwistedHubError
from .._core.connection import receiver_call_payload
from .._core.errors import DisconnectKind, HubError
from .._core.heartbeat import HeartbeatPolicy, MetadataProvider, _check_positive
from .._core.receivers import receiver_methods
from .._core.replay_log import Broadcast, BroadcastLog
from .._core.sentinel import UNSET, Unset
from .._core.stats import TrafficTotals
from .._core.wire import CloseCode, ErrorCode
from .._support.logging import HUB_LOG_OBSERVER

_log = Logger(observer=HUB_LOG_OBSERVER)

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

    from .._core.errors import DisconnectReason
    from .._core.observer import CallObserver
    from .auth import Policy, User
    from .filters import FilterChains, HubFilter

HubT = TypeVar("HubT", bound="type[Hub]")
F = TypeVar("F", bound=Callable[..., Any])

_METHOD_MARK = "__hub_method_name__"
_FILTERS_MARK = "__hub_method_filters__"
_TIMEOUT_MARK = "__hub_method_call_timeout__"
_AUTHORIZE_MARK = "__hub_method_authorize__"

# Annotations we check at call time; anything else is passed through as is.
_CHECKABLE: dict[Any, tuple[type, ...]] = {
    int: (int,),
    float: (float, int),
    str: (str,),
    bytes: (bytes,),
    bool: (bool,),
    list: (list,),
    dict: (dict,),
}


class InvalidArguments(HubError):
    """The caller's arguments do not fit the method's signature or types."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(ErrorCode.INVALID_ARGUMENTS, message, detail)


class _Shown:
    """An annotation shown as written (C{str}, not C{'str'}) in a signature text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class HubMethod:
    """One exposed method: its wire name, the function, its argument checks."""

    name: str
    function: Callable[..., Any]
    signature: inspect.Signature
    #: (position, parameter name, accepted types) for annotated positionals
    checks: tuple[tuple[int, str, tuple[type, ...]], ...]
    #: parameter name -> accepted types, for keyword arguments
    keyword_checks: dict[str, tuple[type, ...]]
    #: this method's own filters (C{@method(filters=...)}), innermost
    filters: tuple[HubFilter, ...] = ()
    #: this method's call timeout (C{@method(call_timeout=...)}); UNSET: the hub's
    call_timeout: float | None | Unset = UNSET
    #: this method's authorization policy (C{@method(authorize=...)}); None: the hub's
    authorize: Policy | None = None

    def check(self, args: list[Any], kwargs: dict[str, Any] | None) -> None:
        """Raise L{InvalidArguments} when an annotated argument has the wrong type."""
        count = len(args)
        for position, name, types in self.checks:
            if position < count:
                value = args[position]
                if not isinstance(value, types) or (type(value) is bool and bool not in types):
                    raise InvalidArguments(
                        f"{self.name}: argument {name!r} must be {types[0].__name__}, "
                        f"got {type(value).__name__}",
                        self.usage(),
                    )
        if kwargs:
            for name, value in kwargs.items():
                keyword_types = self.keyword_checks.get(name)
                if keyword_types is not None and (
                    not isinstance(value, keyword_types) or (type(value) is bool and bool not in keyword_types)
                ):
                    raise InvalidArguments(
                        f"{self.name}: argument {name!r} must be {keyword_types[0].__name__}, "
                        f"got {type(value).__name__}",
                        self.usage(),
                    )

    def explain_type_error(self, args: list[Any], kwargs: dict[str, Any] | None) -> str | None:
        """
        After the method raised TypeError: return why, if the arguments did
        not bind to its signature (a caller error); None if they did (a bug
        inside the method).
        """
        try:
            self.signature.bind(None, *args, **(kwargs or {}))
        except TypeError as e:
            return f"{self.name}: {e}"
        return None

    def usage(self) -> dict[str, Any]:
        """
        The detail of an C{invalid-arguments} answer about this method: its
        C{signature} as text (C{"say(room: str, text: str)"}; defaults shown
        as C{…}, never their values) and C{max_positional}, the most
        positional arguments it takes (None with C{*args}).
        """
        parameters = []
        max_positional: int | None = 0
        for parameter in list(self.signature.parameters.values())[1:]:  # skip self
            annotation = parameter.annotation
            if annotation is not parameter.empty:
                annotation = _Shown(annotation.__name__ if isinstance(annotation, type) else str(annotation))
            default = parameter.default if parameter.default is parameter.empty else _Shown("…")
            parameters.append(parameter.replace(annotation=annotation, default=default))
            if parameter.kind is parameter.VAR_POSITIONAL:
                max_positional = None
            elif max_positional is not None and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                max_positional += 1
        shown = inspect.Signature(parameters)
        return {"signature": f"{self.name}{shown}", "max_positional": max_positional}


@overload
def method(name: F) -> F: ...


@overload
def method(
    name: str | None = None,
    *,
    filters: Iterable[HubFilter] = (),
    call_timeout: float | None | Unset = UNSET,
    authorize: Policy | None = None,
) -> Callable[[F], F]: ...


def method(
    name: str | F | None = None,
    *,
    filters: Iterable[HubFilter] = (),
    call_timeout: float | None | Unset = UNSET,
    authorize: Policy | None = None,
) -> F | Callable[[F], F]:
    """
    Expose a hub method to clients, under its own name or C{name}.

        @method
        def add(self, a: int, b: int) -> int: ...

        @method("sum")
        def add_all(self, *numbers: int) -> int: ...

        @method(filters=[RateLimit(1)], call_timeout=120)
        async def export(self) -> bytes: ...

    The method may return a value, a Deferred, or be C{async def}.
    Parameters annotated with C{int}, C{float}, C{str}, C{bytes}, C{bool},
    C{list} or C{dict} are type-checked; a mismatch answers the caller with
    C{invalid-arguments}.  C{filters} run around this method only, inside
    the server's and the hub's (C{docs/filters.md}); C{call_timeout}
    (seconds, or None: no limit) overrides the hub's and the server's
    L{CallTimeout<twisted_hub.filters.CallTimeout>} for this method.  C{authorize}
    is its authorization policy, C{(user, call) -> bool} (sync, Deferred or
    C{async def}), checked before it runs (a false answer is the error
    C{forbidden}); it replaces the hub's (C{docs/auth.md}).
    """
    method_filters = _filter_list(filters)
    if call_timeout is not UNSET:
        check_call_timeout(call_timeout)
    _check_policy(authorize, "@method")

    def mark(function: F, wire_name: str | None = None) -> F:
        setattr(function, _METHOD_MARK, wire_name or function.__name__)
        if method_filters:
            setattr(function, _FILTERS_MARK, method_filters)
        if call_timeout is not UNSET:
            setattr(function, _TIMEOUT_MARK, call_timeout)
        if authorize is not None:
            setattr(function, _AUTHORIZE_MARK, authorize)
        return function

    if callable(name):
        return mark(name)
    wire_name = name

    def decorate(function: F) -> F:
        return mark(function, wire_name)

    return decorate


def _describe(wire_name: str, function: Callable[..., Any]) -> HubMethod:
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function)
    except Exception:
        # An annotation that names something not importable from the method's
        # module (e.g. a class defined inside a function): check what resolves.
        hints = {}
        for name, annotation in inspect.get_annotations(function).items():
            if isinstance(annotation, str):
                annotation = {"int": int, "float": float, "str": str, "bytes": bytes, "bool": bool,
                              "list": list, "dict": dict}.get(annotation, annotation)
            hints[name] = annotation
    checks: list[tuple[int, str, tuple[type, ...]]] = []
    keyword_checks: dict[str, tuple[type, ...]] = {}
    parameters = list(signature.parameters.values())[1:]  # skip self
    for position, parameter in enumerate(parameters):
        types = _CHECKABLE.get(hints.get(parameter.name))
        if types is None:
            continue
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            checks.append((position, parameter.name, types))
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            keyword_checks[parameter.name] = types
    return HubMethod(
        wire_name, function, signature, tuple(checks), keyword_checks,
        getattr(function, _FILTERS_MARK, ()), getattr(function, _TIMEOUT_MARK, UNSET),
        getattr(function, _AUTHORIZE_MARK, None),
    )


def _check_policy(policy: object, where: str) -> None:
    """An authorization policy is a callable over (user, call), or None."""
    if policy is not None and (not callable(policy) or isinstance(policy, type)):
        raise HubArgumentError(f"{where}: authorize= takes a policy (a callable over user and call), got {policy!r}")


def _filter_list(filters: Iterable[HubFilter]) -> tuple[HubFilter, ...]:
    """C{filters=} as a tuple (each is checked when a server is built for the hub)."""
    if isinstance(filters, (str, bytes)) or not isinstance(filters, Iterable):
        raise HubArgumentError(f"filters= takes a list of filters, got {filters!r}")
    return tuple(filters)


def check_call_timeout(seconds: float | None) -> None:
    """A call timeout is a finite number of seconds > 0, or None (no limit)."""
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
        raise HubArgumentError(f"call_timeout must be a finite number of seconds > 0 or None, got {seconds!r}")


@dataclass(frozen=True, slots=True)
class HeartbeatOverride:
    """What a L{heartbeat} decorator says; unset fields keep the global value."""

    enabled: bool | None = None
    interval: float | None = None
    timeout: float | None | Unset = UNSET
    metadata_provider: MetadataProvider | None | Unset = UNSET

    def apply(self, policy: HeartbeatPolicy) -> HeartbeatPolicy:
        """
        The effective policy for this hub: the decorator's fields override
        the global C{policy}; a decorator with any field but C{enabled=False}
        turns heartbeats on.
        """
        enabled = True if self.enabled is None else self.enabled
        return policy.overridden(
            enabled=enabled,
            interval=self.interval,
            timeout=self.timeout,
            metadata_provider=self.metadata_provider,
        )


def heartbeat(
    enabled: bool = True,
    interval: float | None = None,
    timeout: float | None | Unset = UNSET,
    metadata_provider: MetadataProvider | None | Unset = UNSET,
) -> Callable[[HubT], HubT]:
    """
    Class decorator: this hub's server heartbeat (MagicOnion's
    C{[Heartbeat(Interval=..., Timeout=...)]}).

        @heartbeat()                          # on, with the global settings
        @heartbeat(interval=10, timeout=1)    # on, overriding them
        @heartbeat(enabled=False)             # off, whatever is global

    Settings not given come from the server's global policy
    (L{HubServerFactory}'s C{heartbeat=}).  C{timeout=None} means never
    disconnect.  See C{docs/heartbeat.md} for the full precedence table.
    """
    _check_positive("interval", interval)
    if timeout is not UNSET:
        _check_positive("timeout", timeout)

    def decorate(cls: HubT) -> HubT:
        cls.heartbeat_override = HeartbeatOverride(enabled, interval, timeout, metadata_provider)
        return cls

    return decorate


def hub(
    name: str | None = None,
    *,
    receiver: type | None = None,
    concurrent: bool | None = None,
    filters: Iterable[HubFilter] | None = None,
    call_timeout: float | None | Unset = UNSET,
    authorize: Policy | None = None,
) -> Callable[[HubT], HubT]:
    """
    Class decorator: register a hub's wire name, its receiver interface,
    whether calls on one connection may run concurrently, its filters, its
    call timeout and its authorization policy.

        @hub("chat", receiver=ChatReceiver, filters=[RateLimit(20)], authorize=authenticated)
        class ChatHub(Hub): ...

    The same can be said with class attributes C{hub_name}, C{receiver},
    C{concurrent}, C{hub_filters}, C{hub_call_timeout} and C{hub_authorize}.
    """
    hub_filters = None if filters is None else _filter_list(filters)
    if call_timeout is not UNSET:
        check_call_timeout(call_timeout)
    _check_policy(authorize, "@hub")

    def decorate(cls: HubT) -> HubT:
        if name is not None:
            cls.hub_name = name
        if receiver is not None:
            cls.receiver = receiver
        if concurrent is not None:
            cls.concurrent = concurrent
        if hub_filters is not None:
            cls.hub_filters = hub_filters
        if call_timeout is not UNSET:
            cls.hub_call_timeout = call_timeout
        if authorize is not None:
            cls.hub_authorize = staticmethod(authorize)
        return cls

    return decorate


class Hub:
    """
    Base class of every hub.  Subclass it, expose methods with L{method}.

    Class attributes (or the L{hub} decorator):
      - C{hub_name}: the name clients connect to (default: the class name,
        lower-cased, without a trailing "hub").
      - C{receiver}: a class whose public methods are the client receiver
        methods this hub may call (optional; when set, calling an undeclared
        receiver method raises AttributeError at the call site).
      - C{concurrent}: False (default) runs one connection's calls one after
        another, in order; True starts each call as it arrives.
      - C{hub_filters}: filters around this hub's calls, connect and
        disconnect, inside the server's (C{docs/filters.md}).
      - C{hub_call_timeout}: seconds each call may take (None: no limit),
        enforced by L{CallTimeout<twisted_hub.filters.CallTimeout>}; a method's own
        C{call_timeout} overrides it.
      - C{hub_authorize}: the authorization policy of this hub's methods
        (a method's own C{authorize} replaces it; C{docs/auth.md}).
    """

    hub_name: ClassVar[str] = ""
    receiver: ClassVar[type | None] = None
    concurrent: ClassVar[bool] = False
    hub_filters: ClassVar[Sequence[HubFilter]] = ()
    hub_call_timeout: ClassVar[float | None | Unset] = UNSET
    hub_authorize: ClassVar[Policy | None] = None
    heartbeat_override: ClassVar[HeartbeatOverride | None] = None
    hub_methods: ClassVar[dict[str, HubMethod]] = {}

    #: set by the server before C{on_connecting}
    connection: ConnectionContext
    _runtime: HubRuntime[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "hub_name" not in cls.__dict__:
            base = cls.__name__.lower()
            cls.hub_name = base[:-3] if base.endswith("hub") and len(base) > 3 else base
        methods: dict[str, HubMethod] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                wire_name = getattr(value, _METHOD_MARK, None)
                if wire_name is not None:
                    methods[wire_name] = _describe(wire_name, value)
                elif attribute in methods and not callable(value):
                    del methods[attribute]
        cls.hub_methods = methods

    # -- lifecycle hooks: override what you need -----------------------------
    def on_connecting(self, request: ConnectionRequest) -> Awaitable[None] | None:
        """
        The WebSocket handshake is in progress.  Raise L{RefuseConnection}
        to refuse with an HTTP status; it may be an C{async def} or return a
        Deferred, and the handshake waits for it (an awaited refusal refuses
        too).  C{self.connection} is set; receivers cannot be called yet.
        """
        return None

    def on_connected(self) -> Any:
        """The connection is open; receivers and groups may be used."""

    def on_disconnected(self, reason: DisconnectReason) -> Any:
        """
        The connection is gone (it has already left all its groups).  With
        resume (docs/resumption.md): the session is over, not just one of
        its connections.
        """

    def on_resumed(self) -> Any:
        """
        The client resumed this connection's session on a new connection
        (docs/resumption.md): its groups and C{connection.items} carried
        over, and what was sent to it meanwhile is being replayed.
        """

    # -- helpers ----------------------------------------------------------
    @property
    def clients(self) -> Clients:
        """Reach client receivers: C{self.clients.group("room").said(...)}."""
        return Clients(self)

    @property
    def groups(self) -> GroupMembership:
        """This connection's group memberships."""
        return GroupMembership(self)


class RefuseConnection(TwistedHubError):
    """Raise in L{Hub.on_connecting} to refuse with an HTTP status and reason."""

    def __init__(self, status: int = 403, reason: str = "refused") -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class PreparedFrame(Protocol):
    """A frame built once for many connections (autobahn's C{PreparedMessage}); C{payload} is the message."""

    @property
    def payload(self) -> bytes: ...


class HubConnection(Protocol):
    """
    What the hub layer needs from one server connection: its id, and a way
    to send it an encoded message, one prepared frame, or a close.  Groups
    and L{HubRuntime.connections} hold these (the server's
    L{twisted_hub._core.server_session.ServerSession}).
    """

    @property
    def connection_id(self) -> str: ...

    def write_message(self, payload: bytes) -> None:
        """Queue one encoded message (it may leave batched with others)."""

    def send_prepared(self, prepared: Broadcast) -> None:
        """Send a frame prepared once for many connections (L{Broadcast}), after what is queued."""

    def close_with(self, code: int, reason: str, kind: DisconnectKind) -> None:
        """Close the connection with a close code the client understands."""


class ConnectionControl(HubConnection, Protocol):
    """What L{ConnectionContext} and L{HeartbeatFeature} need besides L{HubConnection}."""

    #: the heartbeat policy in force (C{on_connecting} may replace it)
    heartbeat_policy: HeartbeatPolicy
    #: called with the round trip of every answered heartbeat
    ack_callback: Callable[[float], object] | None

    @property
    def is_open(self) -> bool:
        """The hub handshake is done and the connection is not closing."""

    @property
    def connecting(self) -> bool:
        """The opening handshake is still in progress (C{on_connecting} runs)."""

    @property
    def heartbeat_latency(self) -> float: ...

    @property
    def heartbeat_active(self) -> bool: ...

    def stop_heartbeat(self) -> None: ...

    def invoke_client(
        self, method: str, args: list[Any], kwargs: dict[str, Any] | None, timeout: float | None
    ) -> Deferred[Any]: ...


class HeartbeatFeature:
    """
    One connection's view of the server heartbeat (MagicOnion's
    C{IMagicOnionHeartbeatFeature}), reachable as
    C{self.connection.heartbeat} inside a hub.
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: ConnectionControl) -> None:
        self._connection = connection

    @property
    def latency(self) -> float:
        """Round trip of the newest answered heartbeat, seconds (0.0 before any)."""
        return self._connection.heartbeat_latency

    @property
    def policy(self) -> HeartbeatPolicy:
        """The policy in force for this connection."""
        return self._connection.heartbeat_policy

    @property
    def active(self) -> bool:
        """True while the server sends heartbeats on this connection."""
        return self._connection.heartbeat_active

    def unregister(self) -> None:
        """Stop heartbeats (and their timeout) for this connection."""
        self._connection.stop_heartbeat()

    def set_ack_callback(self, callback: Callable[[float], object] | None) -> None:
        """Call C{callback(latency)} on every answer to the newest heartbeat."""
        self._connection.ack_callback = callback

    def override(
        self, interval: float | None = None, timeout: float | None | Unset = UNSET, enabled: bool | None = None
    ) -> None:
        """
        Change this connection's interval/timeout; call from
        C{on_connecting} (e.g. sparser beats for mobile clients).
        """
        if not self._connection.connecting:
            raise HubStateError("heartbeat override must happen in on_connecting")
        kwargs: dict[str, Any] = {"enabled": enabled, "interval": interval}
        if timeout is not UNSET:
            kwargs["timeout"] = timeout
        self._connection.heartbeat_policy = self._connection.heartbeat_policy.overridden(**kwargs)


class ConnectionContext:
    """
    What a hub instance knows about its connection: C{self.connection}.

    @ivar id: unique connection id (also sent to the client in the welcome).
    @ivar request: autobahn's C{ConnectionRequest} (path, headers, peer...).
    @ivar items: free storage for the hub's per-connection state.
    @ivar user: who the connection belongs to, as the server's
        authenticator said (a L{User<twisted_hub.auth.User>}, replaced when the
        client hands over a fresh token); None without an authenticator.
    """

    _filter_state: dict[object, Any] | None = None
    user: User | None = None

    def __init__(self, connection: ConnectionControl, request: ConnectionRequest) -> None:
        self._connection = connection
        self.id = connection.connection_id
        self.request = request
        self.items: dict[str, Any] = {}
        self.heartbeat = HeartbeatFeature(connection)

    @property
    def filter_state(self) -> dict[object, Any]:
        """
        Per-connection storage for filters, keyed by the filter object (a
        L{RateLimit<twisted_hub.filters.RateLimit>} keeps its token bucket here);
        it goes away with the connection.
        """
        state = self._filter_state
        if state is None:
            state = self._filter_state = {}
        return state

    @property
    def peer(self) -> str:
        """The client's address as the transport reports it (e.g. C{tcp:127.0.0.1:50123})."""
        return str(self.request.peer)

    @property
    def open(self) -> bool:
        """True once the hub handshake is done, until the connection closes."""
        return self._connection.is_open

    def kick(self, reason: str = "kicked") -> None:
        """Close this connection; the client sees C{KICKED} with C{reason}."""
        self._connection.close_with(CloseCode.KICKED, reason, DisconnectKind.KICKED)

    def invoke(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Deferred[Any]:
        """
        Call a client receiver method and get its return value (a client
        result).  Fails with L{CallTimeoutError} after C{timeout} seconds
        (default: the factory's C{client_result_timeout}), with the client's
        L{HubError} if it raised, or L{ConnectionClosedError}.
        """
        return self._connection.invoke_client(method, list(args), kwargs or None, timeout)


ConnectionT = TypeVar("ConnectionT", bound=HubConnection)


class HubRuntime(Generic[ConnectionT]):
    """
    Shared state of one hub class on one server: its open connections, its
    groups, and the fan-out of receiver calls to them (encoded once, framed
    once for many; see L{deliver}).  C{ConnectionT} is what the server keeps
    per connection (L{twisted_hub._core.server_session.ServerSession}).

    @param make: makes the hub instance of each new connection.
    @param prepare: frames an encoded message once for many connections.
    @param heartbeat: the server's heartbeat policy (the hub's
        L{heartbeat} decorator overrides it).
    @param max_message_size: the server's own message limit (a receiver
        call over it is refused before it is sent).
    @param filters: the filters around this hub's calls, connect and
        disconnect, composed (None: no filter applies to this hub).
    @param broadcast_log: makes the log in which a group's (or every
        connection's) broadcasts are kept once for their resumable members
        (None: resume is off, no log; L{twisted_hub._core.replay_log}).
    """

    def __init__(
        self,
        hub_class: type[Hub],
        make: Callable[[], Hub],
        *,
        backplane: Backplane,
        heartbeat: HeartbeatPolicy,
        max_message_size: int,
        prepare: Callable[[bytes], PreparedFrame],
        filters: FilterChains | None = None,
        broadcast_log: Callable[[], BroadcastLog] | None = None,
    ) -> None:
        self.hub_class = hub_class
        self.filters = filters
        self.make_hub = make
        self.methods = hub_class.hub_methods
        self.receiver_methods = receiver_methods(hub_class.receiver)
        self.connections: dict[str, ConnectionT] = {}
        self.backplane = backplane
        self.max_message_size = max_message_size
        self._prepare = prepare
        self._make_log = broadcast_log
        # (group name, or None: every connection) -> its log, for as long as the group has members
        self._logs: dict[str | None, BroadcastLog] = {}
        self.groups = GroupRegistry(self._membership_changed)
        override = hub_class.heartbeat_override
        self.heartbeat_policy = override.apply(heartbeat) if override else heartbeat
        #: what this hub's calls are reported to (the metrics layer's; None: metrics off)
        self.metrics: CallObserver | None = None
        #: traffic and call counts of its closed connections
        self.traffic = TrafficTotals()

    def _membership_changed(self, group: str, connection_id: str, joined: bool) -> None:
        self.backplane.membership_changed(self.hub_class.hub_name, group, connection_id, joined)
        if not joined and not self.groups.count(group):
            self._logs.pop(group, None)  # (the group is gone; its members' buffers keep what they hold of it)

    def send_receiver_call(
        self, targets: Iterable[HubConnection], method: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> None:
        """Encode one receiver call once and deliver it to every target (of this node)."""
        self.deliver(targets, receiver_call_payload(method, args, kwargs, self.max_message_size))

    def send_to(self, target: Target, method: str, args: list[Any], kwargs: dict[str, Any] | None) -> None:
        """
        Encode one receiver call once, deliver it to C{target}'s connections
        on this node, and hand it to the backplane for the other nodes.
        """
        payload = receiver_call_payload(method, args, kwargs, self.max_message_size)
        self.deliver(self.local_targets(target), payload, target)
        if target.kind != TARGET_CALLER:
            self.backplane.publish(self.hub_class.hub_name, target, payload)
        elif target.ids[0] not in self.connections:
            # a call still running here for a session that moved to another node (docs/resumption.md)
            self.backplane.publish(self.hub_class.hub_name, Target(TARGET_ONLY, None, target.ids), payload)

    def local_targets(self, target: Target) -> list[HubConnection]:
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

    def kick(self, connection_id: str, reason: str) -> None:
        """
        Close C{connection_id} with C{KICKED}: at once when this node holds
        it, else through the backplane on the node that does (a connection
        no node holds any more is ignored there).
        """
        connection = self.connections.get(connection_id)
        if connection is not None:
            connection.close_with(CloseCode.KICKED, reason, DisconnectKind.KICKED)
            return
        self.backplane.kick(self.hub_class.hub_name, connection_id, reason)

    def deliver(self, targets: Iterable[HubConnection], payload: bytes, addressed: Target | None = None) -> None:
        """
        Send an encoded receiver call to connections of this node (framed
        once for many).  A call C{addressed} to a group or to every
        connection is kept once for their resumable members, in that
        group's log (L{twisted_hub._core.replay_log}).
        """
        targets = targets if isinstance(targets, (list, tuple)) else list(targets)
        if len(targets) == 1:
            targets[0].write_message(payload)
            return
        if not targets:
            return
        frame = self._prepare(payload)
        log = None
        if self._make_log is not None and addressed is not None and addressed.kind in (TARGET_GROUP, TARGET_ALL):
            key = addressed.group if addressed.kind == TARGET_GROUP else None
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = self._make_log()
        broadcast = Broadcast(frame, payload) if log is None else log.add(frame, payload)
        for target in targets:
            target.send_prepared(broadcast)


class ReceiverProxy:
    """
    Calls receiver methods on a set of client connections.

    Attribute access returns a function; calling it sends the call to every
    target, on this node and (through the factory's backplane) on the
    others.  The message is encoded once whatever the number of targets.
    """

    __slots__ = ("_runtime", "_target", "_allowed")

    def __init__(self, runtime: HubRuntime[Any], target: Target, allowed: frozenset[str] | None) -> None:
        self._runtime = runtime
        self._target = target
        self._allowed = allowed

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_") or (self._allowed is not None and name not in self._allowed):
            raise HubAttributeError(f"receiver has no method {name!r}")

        def send(*args: Any, **kwargs: Any) -> None:
            self._runtime.send_to(self._target, name, list(args), kwargs or None)

        return send


class Clients:
    """
    The ways a hub method can address client receivers.  With a backplane
    (C{docs/scaling.md}) every way but C{caller} reaches the connections of
    every node.
    """

    __slots__ = ("_hub",)

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def _proxy(self, target: Target) -> ReceiverProxy:
        runtime = self._hub._runtime
        return ReceiverProxy(runtime, target, runtime.receiver_methods)

    @property
    def caller(self) -> ReceiverProxy:
        """The connection whose call is running."""
        return self._proxy(Target(TARGET_CALLER, ids=(self._hub.connection.id,)))

    @property
    def all(self) -> ReceiverProxy:
        """Every connection to this hub."""
        return self._proxy(Target(TARGET_ALL))

    @property
    def others(self) -> ReceiverProxy:
        """Every connection to this hub except the caller."""
        return self.all_except([self._hub.connection.id])

    def all_except(self, connection_ids: Iterable[str]) -> ReceiverProxy:
        """Every connection to this hub except these."""
        return self._proxy(Target(TARGET_ALL, ids=tuple(dict.fromkeys(connection_ids))))

    def only(self, connection_ids: Iterable[str]) -> ReceiverProxy:
        """Just these connections (unknown ids are skipped)."""
        return self._proxy(Target(TARGET_ONLY, ids=tuple(connection_ids)))

    def client(self, connection_id: str) -> ReceiverProxy:
        """One connection by id."""
        return self.only([connection_id])

    def group(self, name: str) -> ReceiverProxy:
        """Every member of a group."""
        return self._proxy(Target(TARGET_GROUP, name))

    def group_except(self, name: str, connection_ids: Iterable[str]) -> ReceiverProxy:
        """Every member of a group except these connections."""
        return self._proxy(Target(TARGET_GROUP, name, tuple(dict.fromkeys(connection_ids))))

    def kick(self, connection_id: str, reason: str = "kicked") -> None:
        """
        Close a connection of this hub by id, as C{self.connection.kick()}
        closes the caller's: its client sees C{KICKED} with C{reason}, its
        hub's C{on_disconnected} runs.  A connection this node holds closes
        at once; with a backplane, one held by another node is closed by
        that node when the message reaches it (fire and forget, like every
        receiver call to another node).  An id that no node holds (the
        connection already left, or it belongs to another hub) is ignored.
        """
        if not isinstance(connection_id, str) or not connection_id:
            raise HubArgumentError(f"kick: a connection id is a non-empty str, got {connection_id!r}")
        if not isinstance(reason, str):
            raise HubArgumentError(f"kick: the reason is a str, got {type(reason).__name__}")
        self._hub._runtime.kick(connection_id, reason)


class GroupMembership:
    """Group operations for one hub connection."""

    __slots__ = ("_hub",)

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def add(self, name: str) -> None:
        """
        Join a group (no-op if already a member).  Ignored unless the
        connection is open: an async method that resumes after its client
        left must not put the closed connection (and this hub instance)
        into the group for good.
        """
        runtime = self._hub._runtime
        connection = self._hub.connection._connection
        if runtime.connections.get(connection.connection_id) is not connection:
            _log.debug(
                "{id} is not open: not joining group {group!r}", id=connection.connection_id, group=name
            )
            return
        runtime.groups.add(name, connection)

    def remove(self, name: str) -> None:
        """Leave a group (no-op if not a member)."""
        self._hub._runtime.groups.remove(name, self._hub.connection._connection)

    def count(self, name: str) -> int:
        """How many connections are in a group (on every node, with a backplane)."""
        runtime = self._hub._runtime
        return runtime.groups.count(name) + runtime.backplane.remote_count(runtime.hub_class.hub_name, name)

    def members(self, name: str) -> list[str]:
        """
        The connection ids in a group: this node's in joining order, then
        (with a backplane) the other nodes'.
        """
        runtime = self._hub._runtime
        local = [p.connection_id for p in runtime.groups.members_of(name)]
        return local + runtime.backplane.remote_members(runtime.hub_class.hub_name, name)

    def joined(self) -> frozenset[str]:
        """The groups this connection is in."""
        return self._hub._runtime.groups.groups_of(self._hub.connection.id)


class GroupRegistry:
    """
    Named groups of connections for one hub.  Insertion-ordered; a
    connection's memberships are indexed so leaving everything is O(groups).
    """

    def __init__(self, on_change: Callable[[str, str, bool], object] | None = None) -> None:
        self._groups: dict[str, dict[str, HubConnection]] = {}
        self._memberships: dict[str, set[str]] = {}
        #: told C{(group, connection id, joined)} on every real change (the backplane)
        self._on_change = on_change

    def add(self, name: str, connection: HubConnection) -> None:
        members = self._groups.setdefault(name, {})
        if connection.connection_id in members:
            return
        members[connection.connection_id] = connection
        self._memberships.setdefault(connection.connection_id, set()).add(name)
        if self._on_change is not None:
            self._on_change(name, connection.connection_id, True)

    def remove(self, name: str, connection: HubConnection) -> None:
        members = self._groups.get(name)
        if members is not None:
            removed = members.pop(connection.connection_id, None) is not None
            if not members:
                del self._groups[name]
            if removed and self._on_change is not None:
                self._on_change(name, connection.connection_id, False)
        joined = self._memberships.get(connection.connection_id)
        if joined is not None:
            joined.discard(name)
            if not joined:
                del self._memberships[connection.connection_id]

    def remove_everywhere(self, connection: HubConnection) -> None:
        for name in list(self._memberships.get(connection.connection_id, ())):
            self.remove(name, connection)

    def members_of(self, name: str) -> list[HubConnection]:
        return list(self._groups.get(name, {}).values())

    def count(self, name: str) -> int:
        return len(self._groups.get(name, ()))

    def groups_of(self, connection_id: str) -> frozenset[str]:
        return frozenset(self._memberships.get(connection_id, ()))

    def names(self) -> list[str]:
        return list(self._groups)

    def memberships(self) -> list[tuple[str, str]]:
        """Every C{(group, connection id)} pair, for a backplane's snapshot of this node."""
        return [(name, connection_id) for name, members in self._groups.items() for connection_id in members]
