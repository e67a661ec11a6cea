"""
One connection's hub calls, decided without I/O (the role of AMP's
C{BoxDispatcher}): L{CallRules}.

Admission against the pending limits, ordering (one call at a time, in
order, unless the hub is concurrent), method lookup, argument checks, and
what each call is answered with (a result, the caller's mistake, the
server's refusal, an internal error) and how it is counted and logged.
What it decides goes to a L{CallAnswers}; outcomes are reported to a
L{twisted_hub._core.observer.CallObserver}.

Running a call is not decided here: a method may return a Deferred or a
coroutine, and a hub with filters runs each call through a chain of them;
waiting for those is the adapter's (L{twisted_hub._twisted.dispatch.CallDispatcher},
L{twisted_hub._twisted.dispatch.FilteredCallDispatcher}), which fills in the few
hooks below.  An error the adapter reports is its own opaque record of it
(a Twisted C{Failure}): the rules read its exception (L{CallRules._error_of})
and, in debug mode, its traceback (L{CallRules._traceback_of}).
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import HubError
from .observer import ERROR, INTERNAL, OK, CallObserver, error_outcome
from .ratelimit import bounded_text, peer_text
from .wire import ErrorCode, Invoke, Notify

__all__ = ["CallAnswers", "CallRules", "MethodSpec"]


class CallAnswers(Protocol):
    """Where a dispatcher's decisions go (the server session)."""

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

    def method_crashed(self, method: str, failure: Any) -> None:
        """A hub method raised something that is not a L{HubError}: log it (C{failure}: the adapter's record)."""

    def hold_answers(self) -> None:
        """Answers written from now until L{release_answers} leave together."""

    def release_answers(self) -> None:
        """End of L{hold_answers}: write what was held."""


class MethodSpec(Protocol):
    """One exposed hub method, as the rules read it (L{twisted_hub._hubs.hub.HubMethod})."""

    @property
    def function(self) -> Callable[..., Any]: ...

    @property
    def checks(self) -> tuple[tuple[int, str, tuple[type, ...]], ...]: ...

    def check(self, args: list[Any], kwargs: dict[str, Any] | None) -> None: ...

    def explain_type_error(self, args: list[Any], kwargs: dict[str, Any] | None) -> str | None: ...

    def usage(self) -> dict[str, Any]: ...


#: the error codes a method's own HubError is logged with as the client's mistake
_MISTAKES = frozenset({ErrorCode.INVALID_ARGUMENTS})
#: the same for a filter chain's outcome (it answers unknown methods too)
_CHAIN_MISTAKES = frozenset({ErrorCode.INVALID_ARGUMENTS, ErrorCode.UNKNOWN_METHOD})


class CallRules:
    """
    One connection's calls.  Feed it every INVOKE/NOTIFY with its encoded
    size (L{receive}); it runs them on C{hub} and answers through C{answers}.

    @ivar running: calls whose result (a Deferred or coroutine) is awaited.
    @ivar pending_bytes: encoded bytes of the calls running or queued.
    @ivar calls: calls and notifications received; C{errors}: those not
        answered with a result (for the status page).
    @param metrics: what hears of each call's outcome and duration (the
        hub's L{twisted_hub._metrics.prometheus.HubLabelMetrics}, a
        L{CallObserver}; None: metrics off, calls are not timed), with
        C{now} the clock that times the calls.
    """

    def __init__(
        self,
        hub: Any,
        methods: Mapping[str, MethodSpec],
        answers: CallAnswers,
        *,
        concurrent: bool = False,
        max_pending_calls: int = 256,
        max_pending_bytes: int = 8 * 1024 * 1024,
        debug: bool = False,
        metrics: CallObserver | None = None,
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
        self._queue: deque[tuple[Invoke | Notify, int]] | None = None  # made at the first call queued (760 B)
        self._closed = False

    # -- the adapter's hooks ---------------------------------------------------------
    def _await(self, result: Any, call_id: int | None, method: str, size: int, started: float) -> None:
        """Wait for an awaitable C{result}; then L{_async_done} or L{_async_failed}."""
        raise NotImplementedError

    def _capture(self, error: BaseException) -> Any:
        """The adapter's record of an exception a method raised just now (for its logs and tracebacks)."""
        return error

    def _error_of(self, failure: Any) -> BaseException:
        """The exception of one of the adapter's error records."""
        assert isinstance(failure, BaseException)
        return failure

    def _traceback_of(self, failure: Any) -> str:
        """The traceback of one of the adapter's error records (debug mode's error detail)."""
        return "".join(traceback.format_exception(self._error_of(failure)))

    def _idle(self) -> None:
        """No call is running or queued any more (after the queue ran)."""

    # -- deciding ----------------------------------------------------------------------
    @property
    def in_progress(self) -> int:
        """Calls running or queued."""
        return self.running + len(self._queue or ())

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
                self.metrics.refused(invocation.method)
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
            self._queue = queue = self._queue or deque()
            queue.append((invocation, size))
            self.pending_bytes += size
            return
        self._run(invocation, size)

    def close(self) -> None:
        """The connection is gone: queued calls are dropped; running ones are not answered."""
        self._closed = True
        self.pending_bytes -= sum(size for _, size in self._queue or ())
        self._queue = None

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
            self._answer_error(call_id, invocation.method, started, self._capture(e))
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
                self._internal_error(call_id, invocation.method, self._capture(e))
            return
        except Exception as e:
            self._count(invocation.method, INTERNAL, started)
            self._internal_error(call_id, invocation.method, self._capture(e))
            return
        if hasattr(result, "__await__"):  # a coroutine, or a Deferred
            self.running += 1
            self.pending_bytes += size
            self._await(result, call_id, invocation.method, size, started)
            return
        self._answer_result(call_id, invocation.method, started, result)

    def _count(self, method: str, outcome: int, started: float) -> None:
        """A call ended other than with a result: count it (and time it, with metrics on)."""
        self.errors += 1
        metrics = self.metrics
        if metrics is not None:
            metrics.ended(method, outcome, self._now() - started)

    def _async_done(self, value: Any, call_id: int | None, method: str, size: int, started: float) -> None:
        self.running -= 1
        self.pending_bytes -= size
        self._answer_result(call_id, method, started, value)
        self._next()

    def _async_failed(self, failure: Any, call_id: int | None, method: str, size: int, started: float) -> None:
        self.running -= 1
        self.pending_bytes -= size
        self._answer_error(call_id, method, started, failure)
        self._next()

    def _settle_chain(self, call_id: int | None, method: str, started: float, failed: bool, result: Any) -> None:
        """
        Answer (and count) a call whose filter chain ended with C{result}: the adapter's
        error record when C{failed}, else the call's value.  The chain ends unknown
        methods with a HubError too: both are the client's mistakes.
        """
        if failed:
            self._answer_error(call_id, method, started, result, _CHAIN_MISTAKES)
        else:
            self._answer_result(call_id, method, started, result)

    def _answer_result(self, call_id: int | None, method: str, started: float, value: Any) -> None:
        """Answer (and count) a call that returned C{value}; a notification gets no answer."""
        if call_id is not None and not self._closed and not self.answers.answer_result(call_id, method, value):
            self._count(method, INTERNAL, started)  # answered with an internal error
        elif self.metrics is not None:
            self.metrics.ended(method, OK, self._now() - started)

    def _answer_error(
        self, call_id: int | None, method: str, started: float, failure: Any, mistakes: frozenset[str] = _MISTAKES,
    ) -> None:
        """
        Answer (and count) a call that ended with C{failure} (an exception,
        or the adapter's record of one): a L{HubError} is answered with its
        code, logged as the client's mistake when its code is in C{mistakes};
        anything else is an internal error.
        """
        error = self._error_of(failure)
        if isinstance(error, HubError):
            self._count(method, error_outcome(error.code), started)
            log = self.answers.peer_mistake if error.code in mistakes else self.answers.call_failed
            self._fail(call_id, method, log, error.code, error.message, error.detail)
        else:
            self._count(method, INTERNAL, started)
            self._internal_error(call_id, method, failure)

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
        if self.in_progress == 0:
            self._idle()

    @property
    def _hub_name(self) -> str:
        return str(type(self.hub).hub_name)

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

    def _internal_error(self, call_id: int | None, method: str, failure: Any) -> None:
        self.answers.method_crashed(method, failure)
        error = self._error_of(failure)
        detail = self._traceback_of(failure) if self.debug else None
        message = f"{type(error).__name__}: {error}" if self.debug else "internal error"
        self._fail(call_id, method, None, ErrorCode.INTERNAL, message, detail)
