"""
Running one connection's hub calls, without I/O (the role of AMP's
C{BoxDispatcher}): admission against the pending limits, ordering (one call
at a time, in order, unless the hub is concurrent), method lookup, argument
checks, and what each call is answered with.  What it decides goes to a
L{CallAnswers}; it never touches a socket or a timer, so it is tested
without autobahn (C{tests/test_dispatch.py}).  A hub with filters gets a
L{FilteredCallDispatcher}, which runs each call through them
(C{_filters.py}); a hub without keeps L{CallDispatcher}'s path as it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ._errors import HubError
from ._filters import CallNext, HubCall
from ._hub import Hub, HubMethod
from ._metrics import ERROR, INTERNAL, OK, REFUSED, HubLabelMetrics, error_outcome
from ._ratelimit import bounded_text, peer_text
from ._wire import ErrorCode, Invoke, Notify


class CallAnswers(Protocol):
    """Where a L{CallDispatcher}'s decisions go (the server protocol)."""

    def answer_result(self, call_id: int, method: str, value: Any) -> bool:
        """
        Answer call C{call_id} (of C{method}) with C{value}.  False: the
        result could not be sent (it cannot be encoded, or is too big) and
        the call was answered with an C{internal} error instead.
        """

    def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        """Answer call C{call_id} with an error."""

    def peer_mistake(self, format: str, **fields: Any) -> None:
        """Log a (rate-limited) info line about something the peer got wrong."""

    def call_failed(self, format: str, **fields: Any) -> None:
        """
        Log a (rate-limited) debug line about a call answered with an error
        the server chose: a L{HubError} the hub raised, a refusal.
        """

    def method_crashed(self, method: str, failure: Failure) -> None:
        """A hub method raised something that is not a L{HubError}: log it."""

    def hold_answers(self) -> None:
        """Answers written from now until L{release_answers} leave together."""

    def release_answers(self) -> None:
        """End of L{hold_answers}: write what was held."""


class CallDispatcher:
    """
    One connection's calls.  Feed it every INVOKE/NOTIFY with its encoded
    size (L{receive}); it runs them on C{hub} and answers through C{answers}.

    @ivar running: calls whose result (a Deferred or coroutine) is awaited.
    @ivar pending_bytes: encoded bytes of the calls running or queued.
    @ivar calls: calls and notifications received; C{errors}: those not
        answered with a result (for the status page).
    @param metrics: the hub's Prometheus children (None: metrics off), with
        C{now} the clock that times the calls.
    """

    def __init__(
        self,
        hub: Hub,
        methods: Mapping[str, HubMethod],
        answers: CallAnswers,
        *,
        concurrent: bool = False,
        max_pending_calls: int = 256,
        max_pending_bytes: int = 8 * 1024 * 1024,
        debug: bool = False,
        metrics: HubLabelMetrics | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.hub = hub
        self.methods = methods
        self.answers = answers
        self.concurrent = concurrent
        self.max_pending_calls = max_pending_calls
        self.max_pending_bytes = max_pending_bytes
        self.debug = debug
        self.running = 0
        self.pending_bytes = 0
        self.calls = 0
        self.errors = 0
        self.metrics = metrics
        self._now = now if now is not None else (lambda: 0.0)
        self._queue: deque[tuple[Invoke | Notify, int]] = deque()
        self._closed = False
        self._idle_waiters: list[Deferred[None]] = []

    @property
    def in_progress(self) -> int:
        """Calls running or queued."""
        return self.running + len(self._queue)

    def when_idle(self) -> Deferred[None]:
        """Fires once no call is running or queued (now, if none is)."""
        waiter: Deferred[None] = Deferred()
        if self.in_progress == 0:
            waiter.callback(None)
        else:
            self._idle_waiters.append(waiter)
        return waiter

    def _maybe_idle(self) -> None:
        if self.in_progress == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def receive(self, invocation: Invoke | Notify, size: int) -> None:
        """A call arrived (C{size}: its share of the frame, in bytes)."""
        self.calls += 1
        refusal = None
        if self.in_progress >= self.max_pending_calls:
            refusal = f"more than {self.max_pending_calls} calls pending on this connection"
        elif self.pending_bytes and self.pending_bytes + size > self.max_pending_bytes:
            # (A call is never refused when nothing is pending, whatever its size.)
            refusal = f"more than {self.max_pending_bytes} bytes of calls pending on this connection"
        if refusal is not None:
            self.errors += 1
            if self.metrics is not None:
                self.metrics.method(invocation.method).counts[REFUSED] += 1
            if isinstance(invocation, Invoke):
                self.answers.call_failed(
                    "call of {method} on {hub} connection {id} refused: {error}",
                    method=peer_text(invocation.method), hub=self._hub_name, error=refusal,
                )
                self.answers.answer_error(invocation.call_id, ErrorCode.TOO_MANY_PENDING, refusal)
            else:
                self.answers.peer_mistake(
                    "notification {method} dropped on {id}: {error}", method=peer_text(invocation.method), error=refusal
                )
            return
        if self.running and not self.concurrent:
            self._queue.append((invocation, size))
            self.pending_bytes += size
            return
        self._run(invocation, size)

    def close(self) -> None:
        """The connection is gone: queued calls are dropped; running ones are not answered."""
        self._closed = True
        self.pending_bytes -= sum(size for _, size in self._queue)
        self._queue.clear()

    def _run(self, invocation: Invoke | Notify, size: int) -> None:
        call_id = invocation.call_id if isinstance(invocation, Invoke) else None
        started = self._now() if self.metrics is not None else 0.0
        spec = self.methods.get(invocation.method)
        if spec is None:
            self._count(invocation.method, ERROR, started)
            self._fail(
                call_id, invocation.method, self.answers.peer_mistake, ErrorCode.UNKNOWN_METHOD,
                f"hub {self._hub_name!r} has no method {peer_text(invocation.method)}",
            )
            return
        args, kwargs = invocation.args, invocation.kwargs
        try:
            if spec.checks or kwargs:
                spec.check(args, kwargs)
            if kwargs:
                result = spec.function(self.hub, *args, **kwargs)
            else:
                result = spec.function(self.hub, *args)
        except HubError as e:
            self._count(invocation.method, error_outcome(e.code), started)
            log = self.answers.peer_mistake if e.code == ErrorCode.INVALID_ARGUMENTS else self.answers.call_failed
            self._fail(call_id, invocation.method, log, e.code, e.message, e.detail)
            return
        except TypeError as e:
            explanation = spec.explain_type_error(args, kwargs)
            if explanation is not None:
                self._count(invocation.method, ERROR, started)
                self._fail(
                    call_id, invocation.method, self.answers.peer_mistake, ErrorCode.INVALID_ARGUMENTS, explanation,
                    spec.usage(),
                )
            else:
                self._count(invocation.method, INTERNAL, started)
                self._internal_error(call_id, invocation.method, Failure(e))
            return
        except Exception:
            self._count(invocation.method, INTERNAL, started)
            self._internal_error(call_id, invocation.method, Failure())
            return
        if isinstance(result, Deferred) or hasattr(result, "__await__"):
            deferred = result if isinstance(result, Deferred) else ensureDeferred(result)
            self.running += 1
            self.pending_bytes += size
            deferred.addCallbacks(
                self._async_done, self._async_failed,
                callbackArgs=(call_id, invocation.method, size, started),
                errbackArgs=(call_id, invocation.method, size, started),
            )
            return
        if call_id is not None and not self.answers.answer_result(call_id, invocation.method, result):
            self._count(invocation.method, INTERNAL, started)  # answered with an internal error
            return
        metrics = self.metrics
        if metrics is not None:
            metrics.method(invocation.method).record(OK, self._now() - started)

    def _count(self, method: str, outcome: int, started: float) -> None:
        """A call ended other than with a result: count it (and time it, with metrics on)."""
        self.errors += 1
        metrics = self.metrics
        if metrics is not None:
            metrics.method(method).record(outcome, self._now() - started)

    def _async_done(self, value: Any, call_id: int | None, method: str, size: int, started: float) -> None:
        self.running -= 1
        self.pending_bytes -= size
        if call_id is not None and not self._closed and not self.answers.answer_result(call_id, method, value):
            self._count(method, INTERNAL, started)  # answered with an internal error
        elif self.metrics is not None:
            self.metrics.method(method).record(OK, self._now() - started)
        self._next()

    def _async_failed(self, failure: Failure, call_id: int | None, method: str, size: int, started: float) -> None:
        self.running -= 1
        self.pending_bytes -= size
        error = failure.value
        if isinstance(error, HubError):
            self._count(method, error_outcome(error.code), started)
            log = self.answers.peer_mistake if error.code == ErrorCode.INVALID_ARGUMENTS else self.answers.call_failed
            self._fail(call_id, method, log, error.code, error.message, error.detail)
        else:
            self._count(method, INTERNAL, started)
            self._internal_error(call_id, method, failure)
        self._next()

    def _next(self) -> None:
        if self._closed:
            return
        self.answers.hold_answers()
        try:
            while self._queue and not self.running:
                invocation, size = self._queue.popleft()
                self.pending_bytes -= size
                self._run(invocation, size)
        finally:
            self.answers.release_answers()
        self._maybe_idle()

    @property
    def _hub_name(self) -> str:
        return type(self.hub).hub_name

    def _fail(
        self, call_id: int | None, method: str, log: Callable[..., None] | None, code: str, message: str,
        detail: Any = None,
    ) -> None:
        """
        Answer a call with an error (a notification gets none), and log one
        rate-limited line with C{log} (L{CallAnswers.peer_mistake} or
        L{CallAnswers.call_failed}; None: logged already).
        """
        if log is not None:
            log(
                "{kind} of {method} on {hub} connection {id} failed: [{code}] {error}",
                kind="call" if call_id is not None else "notification", method=peer_text(method),
                hub=self._hub_name, code=code, error=bounded_text(message),
            )
        if call_id is not None and not self._closed:
            self.answers.answer_error(call_id, code, message, detail)

    def _internal_error(self, call_id: int | None, method: str, failure: Failure) -> None:
        self.answers.method_crashed(method, failure)
        detail = failure.getTraceback() if self.debug else None
        message = f"{type(failure.value).__name__}: {failure.value}" if self.debug else "internal error"
        self._fail(call_id, method, None, ErrorCode.INTERNAL, message, detail)


class FilteredCallDispatcher(CallDispatcher):
    """
    The calls of a connection whose hub has filters: each runs through
    C{call_chain} (the server's, the hub's and the method's filters, then
    the method; L{twisted_hub._filters.FilterChains}) instead of
    L{CallDispatcher}'s direct path.  Admission, ordering and answers are
    the same; a chain that finishes at once is answered at once.

    @param call_chain: the composed filters (it never raises; it returns a
        Deferred of the call's outcome).
    @param clock: the server's clock: each call's start time, and the
        timers of filters such as L{CallTimeout<twisted_hub.filters.CallTimeout>}.
    """

    def __init__(
        self,
        hub: Hub,
        methods: Mapping[str, HubMethod],
        answers: CallAnswers,
        *,
        call_chain: CallNext,
        clock: IReactorTime,
        **options: Any,
    ) -> None:
        super().__init__(hub, methods, answers, now=clock.seconds, **options)
        self._chain = call_chain
        self._clock = clock

    def _run(self, invocation: Invoke | Notify, size: int) -> None:
        call = HubCall(
            self.hub, invocation.method, invocation.args, invocation.kwargs,
            invocation.call_id if isinstance(invocation, Invoke) else None, self._clock, self.methods,
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
        if isinstance(result, Failure):
            error = result.value
            if isinstance(error, HubError):
                self._count(call.method, error_outcome(error.code), call.started)
                # The chain ends unknown methods with a HubError too: both are the client's mistakes.
                mistake = error.code in (ErrorCode.INVALID_ARGUMENTS, ErrorCode.UNKNOWN_METHOD)
                log = self.answers.peer_mistake if mistake else self.answers.call_failed
                self._fail(call.call_id, call.method, log, error.code, error.message, error.detail)
            else:
                self._count(call.method, INTERNAL, call.started)
                self._internal_error(call.call_id, call.method, result)
            return
        if call.call_id is not None and not self._closed and not self.answers.answer_result(call.call_id, call.method, result):
            self._count(call.method, INTERNAL, call.started)  # answered with an internal error
            return
        metrics = self.metrics
        if metrics is not None:
            metrics.method(call.method).record(OK, self._now() - call.started)
