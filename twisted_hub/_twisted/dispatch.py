"""
Running one connection's hub calls on Twisted: L{CallDispatcher} and
L{FilteredCallDispatcher}.

What a call is answered with, and when it may run, is decided without I/O
by L{twisted_hub._core.calls.CallRules}; this module fills in what needs
Twisted: waiting for a method's Deferred or coroutine, keeping errors as
C{Failure}s (their tracebacks for the logs and debug answers), telling
whoever waits that no call is left (L{CallDispatcher.when_idle}), and, for
a hub with filters, running each call through them (C{_filters.py}); a hub
without keeps L{CallDispatcher}'s direct path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .._core.calls import CallAnswers, CallRules, MethodSpec
from .._core.wire import Invoke, Notify
from .._hubs.filters import CallNext, HubCall
from .._hubs.hub import HubMethod

__all__ = ["CallAnswers", "CallDispatcher", "FilteredCallDispatcher"]


class CallDispatcher(CallRules):
    """
    One connection's calls (L{CallRules}), their awaitable results waited
    for with Deferreds.  Feed it every INVOKE/NOTIFY with its encoded size
    (L{receive}); it runs them on C{hub} and answers through C{answers}.
    """

    def __init__(self, hub: Any, methods: Mapping[str, MethodSpec], answers: CallAnswers, **options: Any) -> None:
        super().__init__(hub, methods, answers, **options)
        self._idle_waiters: list[Deferred[None]] = []

    def when_idle(self) -> Deferred[None]:
        """Fires once no call is running or queued (now, if none is)."""
        waiter: Deferred[None] = Deferred()
        if self.in_progress == 0:
            waiter.callback(None)
        else:
            self._idle_waiters.append(waiter)
        return waiter

    def _idle(self) -> None:
        if self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _await(self, result: Any, call_id: int | None, method: str, size: int, started: float) -> None:
        deferred = result if isinstance(result, Deferred) else ensureDeferred(result)
        deferred.addCallbacks(
            self._async_done, self._async_failed,
            callbackArgs=(call_id, method, size, started), errbackArgs=(call_id, method, size, started),
        )

    def _capture(self, error: BaseException) -> Failure:
        return Failure(error)

    def _error_of(self, failure: Any) -> BaseException:
        error: BaseException = failure.value
        return error

    def _traceback_of(self, failure: Any) -> str:
        text: str = failure.getTraceback()
        return text


class FilteredCallDispatcher(CallDispatcher):
    """
    The calls of a connection whose hub has filters: each runs through
    C{call_chain} (the server's, the hub's and the method's filters, then
    the method; L{twisted_hub._hubs.filters.FilterChains}) instead of
    L{CallRules}'s direct path.  Admission, ordering and answers are the
    same; a chain that finishes at once is answered at once.

    @param call_chain: the composed filters (it never raises; it returns a
        Deferred of the call's outcome).
    @param clock: the server's clock: each call's start time, and the
        timers of filters such as L{CallTimeout<twisted_hub.filters.CallTimeout>}.
    """

    def __init__(
        self,
        hub: Any,
        methods: Mapping[str, MethodSpec],
        answers: CallAnswers,
        *,
        call_chain: CallNext,
        clock: IReactorTime,
        **options: Any,
    ) -> None:
        super().__init__(hub, methods, answers, now=clock.seconds, **options)
        #: the hub's methods as the filters see them (HubCall.spec)
        self._hub_methods: Mapping[str, HubMethod] = methods  # type: ignore[assignment]
        self._chain = call_chain
        self._clock = clock

    def _run(self, invocation: Invoke | Notify, size: int) -> None:
        call = HubCall(
            self.hub, invocation.method, invocation.args, invocation.kwargs,
            invocation.call_id if isinstance(invocation, Invoke) else None, self._clock, self._hub_methods,
        )
        outcome: list[Any] = []
        running = self._chain(call)
        running.addBoth(outcome.append)  # (takes the result: a failure is handled here, not left unhandled)
        if outcome:
            self._settle(call, outcome[0])
            return
        self.running += 1
        self.pending_bytes += size
        running.addCallback(self._settled_later, call, outcome, size)

    def _settled_later(self, _: None, call: HubCall, outcome: list[Any], size: int) -> None:
        self.running -= 1
        self.pending_bytes -= size
        self._settle(call, outcome[0])
        self._next()

    def _settle(self, call: HubCall, result: Any) -> None:
        """Answer (and count) a call whose chain ended with C{result}."""
        self._settle_chain(call.call_id, call.method, call.started, isinstance(result, Failure), result)
