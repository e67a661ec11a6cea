"""CallDispatcher: one connection's calls, decided without autobahn, sockets or a reactor."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import Hub, HubError, method
from twisted_hub._dispatch import CallDispatcher, FilteredCallDispatcher
from twisted_hub._filters import FilterChains
from twisted_hub._wire import Invoke, Notify
from twisted_hub.filters import HubCall, HubFilter


class Recorder:
    """A CallAnswers that records what the dispatcher decided."""

    def __init__(self) -> None:
        self.answers: list[tuple[Any, ...]] = []
        self.mistakes: list[str] = []
        self.failures: list[str] = []
        self.crashes: list[str] = []
        self.held = 0

    def answer_result(self, call_id: int, method: str, value: Any) -> bool:
        if isinstance(value, set):  # as the server session does: msgpack cannot encode a set
            self.answers.append(("error", call_id, "internal", "the result cannot be encoded", None))
            return False
        self.answers.append(("result", call_id, value, self.held))
        return True

    def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        self.answers.append(("error", call_id, code, message, detail))

    def peer_mistake(self, format: str, **fields: Any) -> None:
        self.mistakes.append(format.format(id="c1", **fields))

    def call_failed(self, format: str, **fields: Any) -> None:
        self.failures.append(format.format(id="c1", **fields))

    def method_crashed(self, method: str, failure: Failure) -> None:
        self.crashes.append(method)

    def hold_answers(self) -> None:
        self.held += 1

    def release_answers(self) -> None:
        self.held -= 1


class WorkHub(Hub):
    hub_name = "work"

    def __init__(self) -> None:
        self.waiting: list[Deferred[Any]] = []

    @method
    def add(self, a: int, b: int) -> int:
        return a + b

    @method
    def later(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append(d)
        return d

    @method
    def refuse(self) -> None:
        raise HubError("nope", "not allowed", {"why": 1})

    @method
    def crash(self) -> None:
        raise RuntimeError("bug")

    @method
    def a_set(self) -> set[int]:
        return {1, 2}

    @method
    def a_set_later(self) -> Deferred[set[int]]:
        d: Deferred[set[int]] = Deferred()
        self.waiting.append(d)
        return d


def dispatcher(**options: Any) -> tuple[CallDispatcher, WorkHub, Recorder]:
    hub, answers = WorkHub(), Recorder()
    return CallDispatcher(hub, WorkHub.hub_methods, answers, **options), hub, answers


class PassThrough(HubFilter):
    """A filter that only proceeds (counting the calls it saw)."""

    def __init__(self) -> None:
        self.seen = 0

    def on_call(self, call: HubCall, proceed: Any) -> Any:
        self.seen += 1
        return proceed(call)


def filtered_dispatcher(**options: Any) -> tuple[CallDispatcher, WorkHub, Recorder]:
    """A FilteredCallDispatcher whose only filter passes everything through."""
    hub, answers = WorkHub(), Recorder()
    chains = FilterChains(WorkHub, [PassThrough()])
    assert chains.call is not None
    filtered = FilteredCallDispatcher(hub, WorkHub.hub_methods, answers, call_chain=chains.call, clock=Clock(), **options)
    return filtered, hub, answers


class CallDispatcherTests(SynchronousTestCase):
    make = staticmethod(dispatcher)

    def test_sync_result_and_errors(self) -> None:
        """Results, hub errors, unknown methods, bad arguments and crashes are answered as documented."""
        calls, hub, answers = self.make()
        calls.receive(Invoke(1, "add", [2, 3], None), 10)
        calls.receive(Invoke(2, "refuse", [], None), 10)
        calls.receive(Invoke(3, "nope", [], None), 10)
        calls.receive(Invoke(4, "add", ["x", 3], None), 10)
        calls.receive(Invoke(5, "crash", [], None), 10)
        self.assertEqual(answers.answers[0], ("result", 1, 5, 0))
        self.assertEqual(answers.answers[1], ("error", 2, "nope", "not allowed", {"why": 1}))
        self.assertEqual(answers.answers[2][:3], ("error", 3, "unknown-method"))
        self.assertEqual(answers.answers[3][:3], ("error", 4, "invalid-arguments"))
        self.assertEqual(answers.answers[4], ("error", 5, "internal", "internal error", None))
        self.assertEqual(answers.crashes, ["crash"])

    def test_debug_sends_the_exception(self) -> None:
        """With debug on, an internal error carries the exception text and traceback."""
        calls, hub, answers = self.make(debug=True)
        calls.receive(Invoke(1, "crash", [], None), 10)
        _, _, code, message, detail = answers.answers[0]
        self.assertEqual((code, message), ("internal", "RuntimeError: bug"))
        self.assertIn("RuntimeError", detail)

    def test_serial_calls_wait_for_each_other_in_order(self) -> None:
        """A non-concurrent hub runs the next call only after the running one answered, in arrival order."""
        calls, hub, answers = self.make()
        calls.receive(Invoke(1, "later", [], None), 10)
        calls.receive(Invoke(2, "add", [1, 1], None), 10)
        calls.receive(Invoke(3, "add", [2, 2], None), 10)
        self.assertEqual((answers.answers, calls.in_progress, calls.pending_bytes), ([], 3, 30))
        hub.waiting[0].callback("done")
        self.assertEqual([a[:3] for a in answers.answers], [("result", 1, "done"), ("result", 2, 2), ("result", 3, 4)])
        # The queued answers were written while held (they leave as one frame).
        self.assertEqual([a[3] for a in answers.answers[1:]], [1, 1])
        self.assertEqual((calls.in_progress, calls.pending_bytes), (0, 0))

    def test_concurrent_calls_do_not_wait(self) -> None:
        """A concurrent hub answers a quick call while a slow one runs."""
        calls, hub, answers = self.make(concurrent=True)
        calls.receive(Invoke(1, "later", [], None), 10)
        calls.receive(Invoke(2, "add", [1, 1], None), 10)
        self.assertEqual([a[:3] for a in answers.answers], [("result", 2, 2)])
        hub.waiting[0].errback(HubError("late", "failed later"))
        self.assertEqual(answers.answers[1], ("error", 1, "late", "failed later", None))

    def test_pending_call_limit(self) -> None:
        """Over max_pending_calls an INVOKE gets too-many-pending and a NOTIFY is dropped with a log line."""
        calls, hub, answers = self.make(max_pending_calls=2)
        calls.receive(Invoke(1, "later", [], None), 10)
        calls.receive(Invoke(2, "add", [1, 1], None), 10)
        calls.receive(Invoke(3, "add", [1, 1], None), 10)
        calls.receive(Notify("add", [1, 1], None), 10)
        self.assertEqual(answers.answers[0][:3], ("error", 3, "too-many-pending"))
        self.assertEqual(len(answers.mistakes), 1)
        self.assertIn("dropped", answers.mistakes[0])

    def test_pending_bytes_limit(self) -> None:
        """Over max_pending_bytes a call is refused; a lone call of any size is accepted."""
        calls, hub, answers = self.make(max_pending_bytes=100)
        calls.receive(Invoke(1, "later", [], None), 500)  # nothing pending: accepted whatever its size
        calls.receive(Invoke(2, "add", [1, 1], None), 10)
        self.assertEqual(answers.answers[0][:3], ("error", 2, "too-many-pending"))
        self.assertEqual(calls.pending_bytes, 500)

    def test_close_drops_queued_calls_and_late_answers(self) -> None:
        """After close, queued calls never run and a late result is not answered (the connection is gone)."""
        calls, hub, answers = self.make()
        calls.receive(Invoke(1, "later", [], None), 10)
        calls.receive(Invoke(2, "add", [1, 1], None), 10)
        calls.close()
        hub.waiting[0].callback("too late")
        self.assertEqual(answers.answers, [])
        self.assertEqual((calls.in_progress, calls.pending_bytes), (0, 0))

    def test_failed_notification_is_logged_not_answered(self) -> None:
        """A NOTIFY that fails has nobody to answer: a (rate-limited) log line instead."""
        calls, hub, answers = self.make()
        calls.receive(Notify("refuse", [], None), 10)
        calls.receive(Notify("nope", [], None), 10)
        self.assertEqual(answers.answers, [])
        self.assertEqual(answers.failures, ["notification of 'refuse' on work connection c1 failed: [nope] not allowed"])
        self.assertEqual(
            answers.mistakes,
            ["notification of 'nope' on work connection c1 failed: [unknown-method] hub 'work' has no method 'nope'"],
        )

    def test_failed_calls_are_logged_by_whose_doing(self) -> None:
        """The client's mistakes (unknown method, bad arguments) go to peer_mistake; a HubError or a refusal to call_failed."""
        calls, hub, answers = dispatcher(max_pending_calls=1)
        calls.receive(Invoke(1, "nope", [], None), 10)
        calls.receive(Invoke(2, "add", ["x", 3], None), 10)
        calls.receive(Invoke(3, "add", [1], None), 10)
        calls.receive(Invoke(4, "refuse", [], None), 10)
        calls.receive(Invoke(5, "later", [], None), 10)
        calls.receive(Invoke(6, "add", [1, 2], None), 10)
        self.assertEqual(answers.mistakes, [
            "call of 'nope' on work connection c1 failed: [unknown-method] hub 'work' has no method 'nope'",
            "call of 'add' on work connection c1 failed: [invalid-arguments] add: argument 'a' must be int, got str",
            "call of 'add' on work connection c1 failed: [invalid-arguments] add: missing a required argument: 'b'",
        ])
        self.assertEqual(answers.failures, [
            "call of 'refuse' on work connection c1 failed: [nope] not allowed",
            "call of 'add' on work connection c1 refused: more than 1 calls pending on this connection",
        ])
        self.assertEqual(len(answers.answers), 5)  # every call answered, but the one still running

    def test_a_result_that_cannot_be_sent_is_an_internal_error(self) -> None:
        """A result the answers refuse (a set) counts as an error, not a success, sync or async."""
        calls, hub, answers = dispatcher(concurrent=True)
        calls.receive(Invoke(1, "a_set", [], None), 10)
        calls.receive(Invoke(2, "a_set_later", [], None), 10)
        calls.receive(Invoke(3, "add", [1, 2], None), 10)
        hub.waiting[0].callback({3})
        self.assertEqual((calls.calls, calls.errors), (3, 2))
        self.assertEqual([a[:3] for a in answers.answers], [("error", 1, "internal"), ("result", 3, 3),
                                                            ("error", 2, "internal")])


class FilteredCallDispatcherTests(CallDispatcherTests):
    """The same admission, ordering and answers with a filter in the way (FilteredCallDispatcher)."""

    make = staticmethod(filtered_dispatcher)

    def test_every_call_passes_the_filter(self) -> None:
        """Calls and notifications reach the filter; refused ones (pending limits) do not."""
        hub, answers = WorkHub(), Recorder()
        through = PassThrough()
        chains = FilterChains(WorkHub, [through])
        assert chains.call is not None
        calls = FilteredCallDispatcher(
            hub, WorkHub.hub_methods, answers, call_chain=chains.call, clock=Clock(), max_pending_calls=1
        )
        calls.receive(Invoke(1, "later", [], None), 10)
        calls.receive(Invoke(2, "add", [1, 1], None), 10)
        self.assertEqual(through.seen, 1)
        hub.waiting[0].callback("done")
        calls.receive(Notify("add", [1, 1], None), 10)
        self.assertEqual(through.seen, 2)
        self.assertEqual([a[:3] for a in answers.answers], [("error", 2, "too-many-pending"), ("result", 1, "done")])
