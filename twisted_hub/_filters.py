"""
Filters: application code around every hub call, and around connect and
disconnect, in the "call the next one" shape of SignalR's hub filters and
MagicOnion's StreamingHub filters (C{docs/filters.md}).

A filter is an object with one or more of three hooks (L{HubFilter} is a
base class whose hooks pass straight through):

    def on_call(self, call: HubCall, proceed) -> result | Deferred | coroutine
    def on_connected(self, event: ConnectionEvent, proceed) -> ...
    def on_disconnected(self, event: ConnectionEvent, proceed) -> ...

C{proceed(call)} runs the rest of the chain (the next filters, then the
method) and returns a Deferred of its outcome; a hook may change the call
before, look at (or replace) the outcome after, or not proceed at all and
answer itself.  Order, outermost first: the server's filters
(C{HubServerFactory(filters=...)}), the hub's (C{hub_filters}), the
method's (C{@method(filters=...)}).

L{FilterChains} composes one hub's filters once, when the server is built;
a hub no filter applies to gets none, and its calls take the dispatcher's
unfiltered path (C{_dispatch.py}), unchanged.  Shipped filters:
L{RateLimit}, L{CallLog}, L{CallTimeout}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ._auth import authorization_hook
from ._base_error import HubArgumentError, HubStateError
from ._errors import CallTimeoutError, DisconnectReason, HubError
from ._hub import ConnectionContext, Hub, HubMethod, InvalidArguments, check_call_timeout
from ._logging import HUB_LOG_OBSERVER
from ._ratelimit import LogRateLimiter, TokenBucket, bounded_text, peer_text
from ._sentinel import UNSET
from ._wire import ErrorCode

__all__ = [
    "CallLog",
    "CallTimeout",
    "ConnectionEvent",
    "FilterChains",
    "HubCall",
    "HubFilter",
    "RateLimit",
]

_log = Logger(observer=HUB_LOG_OBSERVER)

#: the hooks a filter may have
FILTER_HOOKS = ("on_call", "on_connected", "on_disconnected")


class HubCall:
    """
    One hub call (or notification) on its way through the filters.

    A filter may change C{method} (before the method is chosen: in a
    server or hub filter), C{args} and C{kwargs}; the arguments are checked
    against the method's signature after the last filter, just before it
    runs.

    @ivar hub: the hub instance of the calling connection.
    @ivar args: the positional arguments (a list).
    @ivar kwargs: the keyword arguments (a dict, or None).
    @ivar call_id: the caller's call id; None for a notification.
    @ivar started: when the call started, on the server's clock.
    @ivar clock: the server's clock (for timers and L{elapsed}).
    """

    __slots__ = ("hub", "args", "kwargs", "call_id", "started", "clock", "_method", "_target", "_methods", "_chosen")

    def __init__(
        self,
        hub: Hub,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any] | None,
        call_id: int | None,
        clock: IReactorTime,
        methods: Mapping[str, HubMethod] | None = None,
    ) -> None:
        self.hub = hub
        self._methods = methods if methods is not None else type(hub).hub_methods
        self._method = method
        self._target = self._methods.get(method)
        self._chosen = False
        self.args = args
        self.kwargs = kwargs
        self.call_id = call_id
        self.clock = clock
        self.started = clock.seconds()

    @property
    def method(self) -> str:
        """The name of the hub method called (as on the wire)."""
        return self._method

    @method.setter
    def method(self, name: str) -> None:
        if self._chosen:
            raise HubStateError("the method is chosen already: change it in a server or hub filter, not a method's")
        self._method = name
        self._target = self._methods.get(name)

    @property
    def target(self) -> HubMethod | None:
        """The hub method C{method} names (None: the hub has none by that name)."""
        return self._target

    @property
    def connection(self) -> ConnectionContext:
        """The calling connection (C{self.connection} of the hub)."""
        return self.hub.connection

    @property
    def hub_name(self) -> str:
        return type(self.hub).hub_name

    @property
    def user(self) -> Any:
        """The calling connection's L{User<twisted_hub.auth.User>} (None without an authenticator)."""
        return self.hub.connection.user

    @property
    def notification(self) -> bool:
        """True for a notification: no answer goes back, a result is dropped."""
        return self.call_id is None

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return self.clock.seconds() - self.started

    def __repr__(self) -> str:
        return f"<HubCall {self.hub_name}.{self._method} id={self.call_id!r} args={self.args!r} kwargs={self.kwargs!r}>"


class ConnectionEvent:
    """
    A connection opened (C{on_connected}) or ended (C{on_disconnected}), on
    its way through the filters to the hub's hook of that name.

    @ivar hub: the connection's hub instance.
    @ivar reason: why the connection ended (None for C{on_connected}).
    @ivar started: when the hook chain started, on the server's clock.
    """

    __slots__ = ("hub", "reason", "clock", "started")

    def __init__(self, hub: Hub, reason: DisconnectReason | None, clock: IReactorTime) -> None:
        self.hub = hub
        self.reason = reason
        self.clock = clock
        self.started = clock.seconds()

    @property
    def connection(self) -> ConnectionContext:
        return self.hub.connection

    @property
    def hub_name(self) -> str:
        return type(self.hub).hub_name

    @property
    def elapsed(self) -> float:
        """Seconds since the hook chain started."""
        return self.clock.seconds() - self.started


CallNext = Callable[[HubCall], "Deferred[Any]"]
EventNext = Callable[[ConnectionEvent], "Deferred[Any]"]


class HubFilter:
    """
    Base class of filters: each hook passes straight through.  Override
    the ones you need; a hook may be a plain function, return a Deferred,
    or be C{async def} (then C{await proceed(call)}).

    To answer a call itself, return (or raise) without calling C{proceed}:
    a value becomes the result, a L{HubError} the error answer.  Any other
    exception is answered as C{internal} and logged, as from a method.
    """

    def on_call(self, call: HubCall, proceed: CallNext) -> Any:
        """Around a hub call: C{return proceed(call)} runs it."""
        return proceed(call)

    def on_connected(self, event: ConnectionEvent, proceed: EventNext) -> Any:
        """Around the hub's C{on_connected}: C{return proceed(event)} runs it."""
        return proceed(event)

    def on_disconnected(self, event: ConnectionEvent, proceed: EventNext) -> Any:
        """Around the hub's C{on_disconnected}: C{return proceed(event)} runs it."""
        return proceed(event)


def as_deferred(result: Any) -> Deferred[Any]:
    """A hook's or method's result as a Deferred (a coroutine is run)."""
    if isinstance(result, Deferred):
        return result
    if hasattr(result, "__await__"):
        return ensureDeferred(result)
    return succeed(result)


def _hook(candidate: object, name: str) -> Callable[..., Any] | None:
    """C{candidate}'s hook C{name}, or None when it has none (or inherits L{HubFilter}'s pass-through)."""
    hook: Callable[..., Any] | None = getattr(candidate, name, None)
    if hook is None or getattr(hook, "__func__", None) is getattr(HubFilter, name):
        return None
    if not callable(hook):
        raise HubArgumentError(f"filter {candidate!r}: {name} is not callable")
    return hook


def check_filters(filters: Iterable[object], where: str) -> tuple[Any, ...]:
    """The filters as a tuple, each checked to have at least one hook (else L{HubArgumentError} naming C{where})."""
    if isinstance(filters, (str, bytes)) or not isinstance(filters, Iterable):
        raise HubArgumentError(f"{where}: filters must be a list of filters, got {filters!r}")
    checked = tuple(filters)
    for index, candidate in enumerate(checked):
        if isinstance(candidate, type):
            raise HubArgumentError(f"{where}[{index}]: {candidate.__name__} is a class; give an instance")
        if isinstance(candidate, Hub):
            raise HubArgumentError(f"{where}[{index}]: {candidate!r} is a hub, not a filter")
        hooks = [_hook(candidate, name) for name in FILTER_HOOKS]
        if not any(hooks) and not isinstance(candidate, HubFilter):
            raise HubArgumentError(
                f"{where}[{index}]: {candidate!r} is not a filter (it has none of on_call, on_connected, on_disconnected)"
            )
    return checked


def _link(hook: Callable[[Any, Any], Any], proceed: Callable[[Any], Deferred[Any]]) -> Callable[[Any], Deferred[Any]]:
    """One filter's hook in front of C{proceed}; it never raises (an exception becomes a failed Deferred)."""

    def step(subject: Any) -> Deferred[Any]:
        try:
            return as_deferred(hook(subject, proceed))
        except Exception:
            return fail()

    return step


def compose(
    hooks: Sequence[Callable[[Any, Any], Any]], innermost: Callable[[Any], Deferred[Any]]
) -> Callable[[Any], Deferred[Any]]:
    """The chain C{hooks[0]} -> C{hooks[1]} -> ... -> C{innermost}."""
    chain = innermost
    for hook in reversed(hooks):
        chain = _link(hook, chain)
    return chain


def _invoker(spec: HubMethod) -> CallNext:
    """The end of a method's chain: check the call's arguments, run the method."""
    function, check, checks = spec.function, spec.check, spec.checks

    def invoke(call: HubCall) -> Deferred[Any]:
        args, kwargs = call.args, call.kwargs
        try:
            if checks or kwargs:
                check(args, kwargs)
            result = function(call.hub, *args, **kwargs) if kwargs else function(call.hub, *args)
        except TypeError:
            failure = Failure()
            try:
                explanation = spec.explain_type_error(list(args), kwargs)
            except Exception:
                explanation = None
            return fail(InvalidArguments(explanation)) if explanation is not None else fail(failure)
        except Exception:
            return fail()
        try:
            return as_deferred(result)
        except Exception:
            return fail()

    return invoke


def _run_on_connected(event: ConnectionEvent) -> Deferred[Any]:
    ran: Deferred[Any] = maybeDeferred(event.hub.on_connected)
    return ran


def _run_on_disconnected(event: ConnectionEvent) -> Deferred[Any]:
    hook: Callable[[DisconnectReason | None], Any] = event.hub.on_disconnected  # type: ignore[assignment]
    ran: Deferred[Any] = maybeDeferred(hook, event.reason)
    return ran


class FilterChains:
    """
    One hub's filters on one server, composed once: L{call} runs a call
    through them, with each method's authorization policy checked right
    before the method's own filters (None: nothing applies to this hub's calls),
    L{on_connected} / L{on_disconnected} run the hub's hooks through them
    (None: none wraps that hook).  Made with L{build}.
    """

    def __init__(self, hub_class: type[Hub], server_filters: Sequence[object], deny_by_default: bool = False) -> None:
        outer = [*server_filters, *check_filters(hub_class.hub_filters, f"{hub_class.__name__}.hub_filters")]
        call_hooks = [hook for hook in (_hook(f, "on_call") for f in outer) if hook is not None]
        timed_outside = any(isinstance(f, CallTimeout) for f in outer)
        self._method_chains: dict[str, CallNext] = {}
        method_filtered = False
        for name, spec in hub_class.hub_methods.items():
            own = check_filters(spec.filters, f"{hub_class.__name__}.{spec.function.__name__} filters")
            hooks = [hook for hook in (_hook(f, "on_call") for f in own) if hook is not None]
            # Authorization first, before the method's own filters: a refused call costs them nothing.
            policy = spec.authorize if spec.authorize is not None else hub_class.hub_authorize
            if policy is not None or deny_by_default:
                hooks.insert(0, authorization_hook(policy))
            declared = spec.call_timeout if spec.call_timeout is not UNSET else hub_class.hub_call_timeout
            if declared is not UNSET and declared is not None and not timed_outside:
                if not any(isinstance(f, CallTimeout) for f in own):
                    # A declared timeout works without a CallTimeout filter of its own.
                    hooks.append(_DECLARED_TIMEOUT.on_call)
            self._method_chains[name] = compose(hooks, _invoker(spec))
            method_filtered = method_filtered or bool(hooks)
        #: the call chain (None: no filter applies; the dispatcher's plain path runs)
        self.call: CallNext | None = compose(call_hooks, self._choose) if call_hooks or method_filtered else None
        connected = [hook for hook in (_hook(f, "on_connected") for f in outer) if hook is not None]
        disconnected = [hook for hook in (_hook(f, "on_disconnected") for f in outer) if hook is not None]
        #: the hook chains (None: no filter wraps that hook)
        self.on_connected: EventNext | None = compose(connected, _run_on_connected) if connected else None
        self.on_disconnected: EventNext | None = compose(disconnected, _run_on_disconnected) if disconnected else None

    @classmethod
    def build(
        cls, hub_class: type[Hub], server_filters: Sequence[object] = (), deny_by_default: bool = False,
    ) -> FilterChains | None:
        """
        The chains of C{hub_class} under C{server_filters} (with its
        authorization policies, and C{deny_by_default} for methods without
        one), or None when nothing applies to it at all.
        """
        chains = cls(hub_class, server_filters, deny_by_default)
        if chains.call is None and chains.on_connected is None and chains.on_disconnected is None:
            return None
        return chains

    def _choose(self, call: HubCall) -> Deferred[Any]:
        """After the server's and the hub's filters: the method the call names, then its own chain."""
        target = call.target
        if target is None:
            return fail(HubError(
                ErrorCode.UNKNOWN_METHOD, f"hub {call.hub_name!r} has no method {peer_text(call.method)}"
            ))
        call._chosen = True
        chain = self._method_chains.get(target.name)
        if chain is None:  # a method table other than the hub class's (only in unit tests)
            chain = _invoker(target)
        try:
            return chain(call)
        except Exception:
            return fail()


class RateLimit(HubFilter):
    """
    Each connection may start C{rate} calls per second on average, and up
    to C{burst} at once after a quiet spell (a token bucket per connection,
    full when it opens).  A call over it does not run: it is answered with
    the error C{rate-limited} (detail C{{"retry_after": seconds}}), a
    notification is dropped; both are counted under the outcome
    C{rate-limited} of C{twisted_hub_calls_total}, and one log line per
    connection per second at most says so.  Notifications count like calls.

    Put it on the server (every hub, one budget per filter and connection),
    on a hub, or on one method (a budget of its own for that method).

    @param rate: calls per second, > 0.
    @param burst: the bucket's size, >= 1 (default: one second's worth,
        at least 1).
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < float("inf"):
            raise HubArgumentError(f"RateLimit rate must be a finite number of calls per second > 0, got {rate!r}")
        if burst is None:
            burst = max(1.0, float(rate))
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) or not 1 <= burst < float("inf"):
            raise HubArgumentError(f"RateLimit burst must be a finite number >= 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g}, burst={self.burst:g})"

    def on_call(self, call: HubCall, proceed: CallNext) -> Deferred[Any]:
        state = call.hub.connection.filter_state
        budget = state.get(self)
        if budget is None:
            budget = state[self] = _ConnectionBudget(self.rate, self.burst, call.started)
        wait = budget.take(call.started)
        if wait:
            self._refused(call, budget, wait)
            return fail(HubError(
                ErrorCode.RATE_LIMITED,
                f"over the call rate of {self.rate:g}/s (burst {self.burst:g}) on this connection; "
                f"retry in {wait:.3g} s",
                {"retry_after": round(wait, 3)},
            ))
        return proceed(call)

    def _refused(self, call: HubCall, budget: _ConnectionBudget, wait: float) -> None:
        limiter = budget.log_limiter
        if limiter is None:
            limiter = budget.log_limiter = LogRateLimiter()
        suppressed = limiter.allow(call.started)
        if suppressed is None:
            return
        _log.info(
            "{id} is over its call rate of {rate:g}/s (burst {burst:g}): {method} refused"
            " ({suppressed} more refused since the last line)",
            id=call.hub.connection.id, rate=self.rate, burst=self.burst, method=peer_text(call.method),
            suppressed=suppressed, retry_after=wait,
        )


class _ConnectionBudget(TokenBucket):
    """One connection's bucket of one L{RateLimit}, with its refusal log limiter."""

    __slots__ = ("log_limiter",)

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        super().__init__(rate, capacity, now)
        self.log_limiter: LogRateLimiter | None = None


class CallTimeout(HubFilter):
    """
    A call that has not finished C{seconds} after it started is answered
    with the error C{timeout} (L{CallTimeoutError}) and its Deferred is
    cancelled (an C{async def} method gets C{CancelledError} at its
    C{await}, so its C{finally} runs).  Work that cannot be cancelled (a
    thread) goes on, unanswered; the next call of a non-concurrent hub does
    not wait for it.

    Which limit: the method's C{@method(call_timeout=...)}, else the hub's
    C{hub_call_timeout} (C{@hub(call_timeout=...)}), else C{seconds}; None
    at any level means no limit.  A method or hub that declares a timeout
    gets it without a C{CallTimeout} filter; this filter gives the default
    for the others.  Time counts from the start of the call (after the
    calls queued before it on its connection), filters included.

    @param seconds: the default limit (None: only declared limits apply).
    """

    def __init__(self, seconds: float | None = None) -> None:
        check_call_timeout(seconds)
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"CallTimeout({self.seconds!r})"

    def limit_for(self, call: HubCall) -> float | None:
        """The limit of C{call}, in seconds (None: none)."""
        target = call.target
        if target is not None and target.call_timeout is not UNSET:
            return target.call_timeout
        declared = type(call.hub).hub_call_timeout
        if declared is not UNSET:
            return declared
        return self.seconds

    def on_call(self, call: HubCall, proceed: CallNext) -> Deferred[Any]:
        limit = self.limit_for(call)
        if limit is None:
            return proceed(call)
        remaining = call.started + limit - call.clock.seconds()
        if remaining <= 0:
            return fail(self._error(call, limit))
        running = proceed(call)
        finished: list[bool] = []
        running.addBoth(_note_finished, finished)
        if finished:
            return running  # finished already: no timer
        return running.addTimeout(
            remaining, call.clock, onTimeoutCancel=lambda result, _: self._timed_out(result, call, limit)
        )

    def _timed_out(self, result: Any, call: HubCall, limit: float) -> Any:
        if isinstance(result, Failure) and result.check(CancelledError):
            return Failure(self._error(call, limit))
        return result  # the method answered its cancellation itself

    @staticmethod
    def _error(call: HubCall, limit: float) -> CallTimeoutError:
        return CallTimeoutError(f"{call.hub_name}.{call.method} did not finish within {limit:g} s")


def _note_finished(result: Any, finished: list[bool]) -> Any:
    """(A Deferred that has a result may still wait for another one it was given: this callback runs only at its end.)"""
    finished.append(True)
    return result


#: what runs a declared call timeout when no CallTimeout filter applies
_DECLARED_TIMEOUT = CallTimeout()


class CallLog(HubFilter):
    """
    One structured log line per call, when it ends: hub, method, connection
    id, call id, outcome (C{ok}, the error code, C{internal} or
    C{cancelled}), duration; with C{arguments=True}, the arguments too
    (cut to 200 characters).  In the C{twisted_hub.calls} namespace by
    default, at C{level}; a call that raised something other than a
    L{HubError} at C{error_level}.

    Event fields: C{hub}, C{method}, C{id}, C{call_id} (None for a
    notification), C{outcome}, C{duration} (seconds), C{error} (the error
    message, or ""), C{arguments} (with C{arguments=True}).
    """

    def __init__(
        self,
        *,
        level: LogLevel = LogLevel.info,
        error_level: LogLevel = LogLevel.warn,
        arguments: bool = False,
        log: Logger | None = None,
    ) -> None:
        self.level = level
        self.error_level = error_level
        self.arguments = arguments
        self.log = log if log is not None else Logger(namespace="twisted_hub.calls")

    def __repr__(self) -> str:
        return f"CallLog(level={self.level.name}, arguments={self.arguments})"

    def on_call(self, call: HubCall, proceed: CallNext) -> Deferred[Any]:
        return proceed(call).addBoth(self._ended, call)

    def _ended(self, result: Any, call: HubCall) -> Any:
        level = self.level
        error = ""
        if isinstance(result, Failure):
            value = result.value
            if isinstance(value, HubError):
                outcome, error = value.code, value.message
            elif isinstance(value, CancelledError):
                outcome = "cancelled"
            else:
                outcome, error, level = "internal", f"{type(value).__name__}: {value}", self.error_level
        else:
            outcome = "ok"
        fields: dict[str, Any] = {}
        text = "{hub}.{method} call {call_id} on {id}" if call.call_id is not None else "{hub}.{method} notification on {id}"
        text += ": {outcome} in {duration_ms:.1f} ms"
        if error:
            text += " ({error})"
        if self.arguments:
            fields["arguments"] = bounded_text(repr((call.args, call.kwargs)))
            text += " args {arguments}"
        duration = call.elapsed
        self.log.emit(
            level, text,
            hub=call.hub_name, method=call.method if call.target is not None else peer_text(call.method),
            call_id=call.call_id,
            id=call.hub.connection.id, outcome=outcome, duration=duration, duration_ms=duration * 1000.0,
            error=bounded_text(error), **fields,
        )
        return result
