"""
The hub layer: the L{Hub} base class, attribute-style registration
(L{hub}, L{method}, L{heartbeat}), receivers and groups.

A hub class describes one service; the server makes one instance per
connection.  Inside a method, C{self.connection} is the calling connection,
C{self.clients} reaches client receivers and C{self.groups} manages this
connection's group memberships.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    TypeVar,
    get_type_hints,
    overload,
)

from twisted.logger import Logger

from ._backplane import TARGET_ALL, TARGET_CALLER, TARGET_GROUP, TARGET_ONLY, Target
from ._base_error import TwistedHubError
from ._errors import HubError
from ._heartbeat import HeartbeatPolicy, MetadataProvider, _check_positive
from ._sentinel import UNSET, Unset
from ._wire import ErrorCode

_log = Logger()

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

    from ._errors import DisconnectReason
    from ._server import ConnectionContext, HubRuntime

HubT = TypeVar("HubT", bound="type[Hub]")
F = TypeVar("F", bound=Callable[..., Any])

_METHOD_MARK = "__hub_method_name__"

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

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_ARGUMENTS, message)


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

    def check(self, args: list[Any], kwargs: dict[str, Any] | None) -> None:
        """Raise L{InvalidArguments} when an annotated argument has the wrong type."""
        count = len(args)
        for position, name, types in self.checks:
            if position < count:
                value = args[position]
                if not isinstance(value, types) or (type(value) is bool and bool not in types):
                    raise InvalidArguments(
                        f"{self.name}: argument {name!r} must be {types[0].__name__}, "
                        f"got {type(value).__name__}"
                    )
        if kwargs:
            for name, value in kwargs.items():
                keyword_types = self.keyword_checks.get(name)
                if keyword_types is not None and (
                    not isinstance(value, keyword_types) or (type(value) is bool and bool not in keyword_types)
                ):
                    raise InvalidArguments(
                        f"{self.name}: argument {name!r} must be {keyword_types[0].__name__}, "
                        f"got {type(value).__name__}"
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


@overload
def method(name: F) -> F: ...


@overload
def method(name: str | None = None) -> Callable[[F], F]: ...


def method(name: str | F | None = None) -> F | Callable[[F], F]:
    """
    Expose a hub method to clients, under its own name or C{name}.

        @method
        def add(self, a: int, b: int) -> int: ...

        @method("sum")
        def add_all(self, *numbers: int) -> int: ...

    The method may return a value, a Deferred, or be C{async def}.
    Parameters annotated with C{int}, C{float}, C{str}, C{bytes}, C{bool},
    C{list} or C{dict} are type-checked; a mismatch answers the caller with
    C{invalid-arguments}.
    """

    def mark(function: F, wire_name: str | None = None) -> F:
        setattr(function, _METHOD_MARK, wire_name or function.__name__)
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
    return HubMethod(wire_name, function, signature, tuple(checks), keyword_checks)


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
) -> Callable[[HubT], HubT]:
    """
    Class decorator: register a hub's wire name, its receiver interface and
    whether calls on one connection may run concurrently.

        @hub("chat", receiver=ChatReceiver)
        class ChatHub(Hub): ...

    The same can be said with class attributes C{hub_name}, C{receiver} and
    C{concurrent}.
    """

    def decorate(cls: HubT) -> HubT:
        if name is not None:
            cls.hub_name = name
        if receiver is not None:
            cls.receiver = receiver
        if concurrent is not None:
            cls.concurrent = concurrent
        return cls

    return decorate


def receiver_methods(interface: type | None) -> frozenset[str] | None:
    """The method names a receiver interface declares (None: anything goes)."""
    if interface is None:
        return None
    return frozenset(
        name
        for name, value in inspect.getmembers(interface)
        if not name.startswith("_") and callable(value)
    )


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
    """

    hub_name: ClassVar[str] = ""
    receiver: ClassVar[type | None] = None
    concurrent: ClassVar[bool] = False
    heartbeat_override: ClassVar[HeartbeatOverride | None] = None
    hub_methods: ClassVar[dict[str, HubMethod]] = {}

    #: set by the server before C{on_connecting}
    connection: ConnectionContext
    _runtime: HubRuntime

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
        """The connection is gone (it has already left all its groups)."""

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


class ReceiverProxy:
    """
    Calls receiver methods on a set of client connections.

    Attribute access returns a function; calling it sends the call to every
    target, on this node and (through the factory's backplane) on the
    others.  The message is encoded once whatever the number of targets.
    """

    __slots__ = ("_runtime", "_target", "_allowed")

    def __init__(self, runtime: HubRuntime, target: Target, allowed: frozenset[str] | None) -> None:
        self._runtime = runtime
        self._target = target
        self._allowed = allowed

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_") or (self._allowed is not None and name not in self._allowed):
            raise AttributeError(f"receiver has no method {name!r}")

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

    def _proxy(self, target: Target) -> Any:
        runtime = self._hub._runtime
        return ReceiverProxy(runtime, target, runtime.receiver_methods)

    @property
    def caller(self) -> Any:
        """The connection whose call is running."""
        return self._proxy(Target(TARGET_CALLER, ids=(self._hub.connection.id,)))

    @property
    def all(self) -> Any:
        """Every connection to this hub."""
        return self._proxy(Target(TARGET_ALL))

    @property
    def others(self) -> Any:
        """Every connection to this hub except the caller."""
        return self.all_except([self._hub.connection.id])

    def all_except(self, connection_ids: Iterable[str]) -> Any:
        return self._proxy(Target(TARGET_ALL, ids=tuple(dict.fromkeys(connection_ids))))

    def only(self, connection_ids: Iterable[str]) -> Any:
        """Just these connections (unknown ids are skipped)."""
        return self._proxy(Target(TARGET_ONLY, ids=tuple(connection_ids)))

    def client(self, connection_id: str) -> Any:
        """One connection by id."""
        return self.only([connection_id])

    def group(self, name: str) -> Any:
        """Every member of a group."""
        return self._proxy(Target(TARGET_GROUP, name))

    def group_except(self, name: str, connection_ids: Iterable[str]) -> Any:
        """Every member of a group except these connections."""
        return self._proxy(Target(TARGET_GROUP, name, tuple(dict.fromkeys(connection_ids))))


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
        protocol = self._hub.connection._protocol
        if runtime.connections.get(protocol.connection_id) is not protocol:
            _log.debug(
                "{id} is not open: not joining group {group!r}", id=protocol.connection_id, group=name
            )
            return
        runtime.groups.add(name, protocol)

    def remove(self, name: str) -> None:
        """Leave a group (no-op if not a member)."""
        self._hub._runtime.groups.remove(name, self._hub.connection._protocol)

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
        self._groups: dict[str, dict[str, Any]] = {}
        self._memberships: dict[str, set[str]] = {}
        #: told C{(group, connection id, joined)} on every real change (the backplane)
        self._on_change = on_change

    def add(self, name: str, protocol: Any) -> None:
        members = self._groups.setdefault(name, {})
        if protocol.connection_id in members:
            return
        members[protocol.connection_id] = protocol
        self._memberships.setdefault(protocol.connection_id, set()).add(name)
        if self._on_change is not None:
            self._on_change(name, protocol.connection_id, True)

    def remove(self, name: str, protocol: Any) -> None:
        members = self._groups.get(name)
        if members is not None:
            removed = members.pop(protocol.connection_id, None) is not None
            if not members:
                del self._groups[name]
            if removed and self._on_change is not None:
                self._on_change(name, protocol.connection_id, False)
        joined = self._memberships.get(protocol.connection_id)
        if joined is not None:
            joined.discard(name)
            if not joined:
                del self._memberships[protocol.connection_id]

    def remove_everywhere(self, protocol: Any) -> None:
        for name in list(self._memberships.get(protocol.connection_id, ())):
            self.remove(name, protocol)

    def members_of(self, name: str) -> list[Any]:
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
