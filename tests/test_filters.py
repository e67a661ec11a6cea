"""Filters around hub calls, connect and disconnect (docs/filters.md), in memory on a Clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import DisconnectKind, ErrorCode, Hub, HubArgumentError, HubError, HubServerFactory, hub, method
from twisted_hub._dispatch import CallDispatcher, FilteredCallDispatcher
from twisted_hub._filters import FilterChains
from twisted_hub.filters import CallLog, CallTimeout, ConnectionEvent, HubCall, HubFilter, RateLimit
from twisted_hub.testing import HubTestServer, TestConnection

Proceed = Callable[[HubCall], "Deferred[Any]"]


class Trace(HubFilter):
    """Records entering and leaving, in a list shared by several filters."""

    def __init__(self, name: str, trace: list[str]) -> None:
        self.name = name
        self.trace = trace

    def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
        self.trace.append(f"{self.name}>")

        def leave(result: Any) -> Any:
            self.trace.append(f"<{self.name}")
            return result

        return proceed(call).addBoth(leave)

    def on_connected(self, event: ConnectionEvent, proceed: Any) -> Any:
        self.trace.append(f"{self.name} connected {event.connection.id}")
        return proceed(event)

    def on_disconnected(self, event: ConnectionEvent, proceed: Any) -> Any:
        assert event.reason is not None
        self.trace.append(f"{self.name} disconnected {event.reason.kind.value}")
        return proceed(event)


class Outcomes(HubFilter):
    """Records each call's outcome: (method, result or error code, elapsed seconds)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, float]] = []

    def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
        def record(result: Any) -> Any:
            value = result
            if isinstance(result, Failure):
                error = result.value
                value = error.code if isinstance(error, HubError) else type(error).__name__
            self.seen.append((call.method, value, call.elapsed))
            return result

        return proceed(call).addBoth(record)


class NotesHub(Hub):
    hub_name = "notes"

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.waiting: list[Deferred[Any]] = []
        self.cleaned_up = 0
        self.hooks: list[str] = []

    def on_connected(self) -> None:
        self.hooks.append("on_connected")

    def on_disconnected(self, reason: Any) -> None:
        self.hooks.append(f"on_disconnected {reason.kind.value}")

    @method
    def add(self, a: int, b: int = 0) -> int:
        self.runs.append("add")
        return a + b

    @method
    def later(self, value: Any) -> Deferred[Any]:
        self.runs.append("later")
        d: Deferred[Any] = Deferred()
        self.waiting.append(d)
        return d.addCallback(lambda _: value)

    @method
    async def wait(self) -> str:
        self.runs.append("wait")
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        try:
            await d
        finally:
            self.cleaned_up += 1
        return "waited"

    @method
    def refuse(self) -> None:
        raise HubError("nope", "not allowed", {"why": 1})

    @method
    def crash(self) -> None:
        raise RuntimeError("bug in the method")

    @method
    def record(self, value: Any) -> None:
        self.runs.append(f"record {value}")


class FilterTestBase(SynchronousTestCase):
    def serve(self, hubs: list[Any] | None = None, **options: Any) -> HubTestServer:
        self.server = HubTestServer(hubs or [NotesHub], **options)
        return self.server

    def connect(self, name: str = "notes") -> TestConnection:
        conn = self.server.connect(name)
        self.successResultOf(conn.ready)
        return conn

    def call(self, conn: TestConnection, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d = conn.client.call(method, *args, **kwargs)
        self.server.flush()
        return d

    def error(self, d: Deferred[Any]) -> HubError:
        error = self.failureResultOf(d, HubError).value
        assert isinstance(error, HubError)
        return error


class ChainTests(FilterTestBase):
    def test_order_server_hub_method(self) -> None:
        """Server filters run outermost, then the hub's, then the method's; each leaves in reverse order."""
        trace: list[str] = []

        class OrderedHub(Hub):
            hub_name = "ordered"
            hub_filters = (Trace("hub1", trace), Trace("hub2", trace))

            @method(filters=[Trace("method", trace)])
            def run(self) -> str:
                trace.append("run")
                return "done"

            @method
            def plain(self) -> str:
                trace.append("plain")
                return "plain"

        self.serve([OrderedHub], filters=[Trace("server1", trace), Trace("server2", trace)])
        conn = self.connect("ordered")
        trace.clear()
        self.assertEqual(self.successResultOf(self.call(conn, "run")), "done")
        self.assertEqual(trace, [
            "server1>", "server2>", "hub1>", "hub2>", "method>", "run", "<method", "<hub2", "<hub1", "<server2", "<server1",
        ])
        trace.clear()
        self.assertEqual(self.successResultOf(self.call(conn, "plain")), "plain")
        self.assertEqual(trace, ["server1>", "server2>", "hub1>", "hub2>", "plain", "<hub2", "<hub1", "<server2", "<server1"])

    def test_filter_kinds_sync_deferred_async(self) -> None:
        """A plain, a Deferred-returning and an async def filter each change the arguments and the result."""
        clock = Clock()

        class Plain(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Any:
                call.args = [call.args[0] * 10, *call.args[1:]]
                return proceed(call).addCallback(lambda r: r + 1)

        class Later(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                # waits 2 s on the server's clock before running the rest
                return deferLater(call.clock, 2.0, proceed, call).addCallback(lambda r: r + 2)

        class Async(HubFilter):
            async def on_call(self, call: HubCall, proceed: Proceed) -> Any:
                call.kwargs = {**(call.kwargs or {}), "b": 5}
                result = await proceed(call)
                return result + 3

        self.serve(filters=[Plain(), Later(), Async()], clock=clock)
        conn = self.connect()
        d = self.call(conn, "add", 1)
        self.assertNoResult(d)
        self.server.advance(2.0)
        # (1 * 10 + 5) + 3 + 2 + 1
        self.assertEqual(self.successResultOf(d), 21)

    def test_filter_sees_hub_connection_method_arguments(self) -> None:
        """A filter sees the hub instance, the connection, the method and its arguments."""
        seen: list[Any] = []

        class Look(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                seen.append((call.hub, call.connection, call.hub_name, call.method, call.args, call.kwargs,
                             call.call_id, call.notification, call.target is not None and call.target.name))
                return proceed(call)

        self.serve(filters=[Look()])
        conn = self.connect()
        self.successResultOf(self.call(conn, "add", 2, b=3))
        conn.client.notify("record", "x")
        self.server.flush()
        hub_instance = conn.hub
        self.assertEqual(seen, [
            (hub_instance, hub_instance.connection, "notes", "add", [2], {"b": 3}, seen[0][6], False, "add"),
            (hub_instance, hub_instance.connection, "notes", "record", ["x"], None, None, True, "record"),
        ])
        self.assertIsInstance(seen[0][6], int)
        self.assertEqual(hub_instance.runs, ["add", "record x"])  # type: ignore[attr-defined]

    def test_short_circuit_with_a_result_or_an_error(self) -> None:
        """A filter that answers itself (a value, a HubError) keeps the method from running."""

        class Cache(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Any:
                if call.method == "add" and call.args == [40, 2]:
                    return 42
                if call.method == "add" and call.args == [0, 0]:
                    raise HubError("zero", "no zeros", {"detail": True})
                return proceed(call)

        self.serve(filters=[Cache()])
        conn = self.connect()
        self.assertEqual(self.successResultOf(self.call(conn, "add", 40, 2)), 42)
        error = self.error(self.call(conn, "add", 0, 0))
        self.assertEqual((error.code, error.message, error.detail), ("zero", "no zeros", {"detail": True}))
        self.assertEqual(self.successResultOf(self.call(conn, "add", 1, 2)), 3)
        self.assertEqual(conn.hub.runs, ["add"])  # type: ignore[attr-defined]

    def test_filters_see_the_outcome(self) -> None:
        """Result, HubError code, crash and elapsed time (on the server's clock) reach the filter."""
        outcomes = Outcomes()
        self.serve(filters=[outcomes])
        conn = self.connect()
        self.successResultOf(self.call(conn, "add", 1, 2))
        slow = self.call(conn, "later", "v")
        self.server.advance(2.5)
        conn.hub.waiting.pop().callback(None)  # type: ignore[attr-defined]
        self.server.flush()
        self.assertEqual(self.successResultOf(slow), "v")
        self.error(self.call(conn, "refuse"))
        self.error(self.call(conn, "crash"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(outcomes.seen, [
            ("add", 3, 0.0), ("later", "v", 2.5), ("refuse", "nope", 0.0), ("crash", "RuntimeError", 0.0),
        ])

    def test_rename_in_a_server_filter_and_unknown_methods(self) -> None:
        """Server and hub filters see calls to unknown methods and may rename them; otherwise unknown-method."""
        outcomes = Outcomes()

        class Renames(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                if call.method == "sum":
                    self_target = call.target
                    call.method = "add"
                    assert self_target is None and call.target is not None
                return proceed(call)

        self.serve(filters=[outcomes, Renames()])
        conn = self.connect()
        self.assertEqual(self.successResultOf(self.call(conn, "sum", 1, 2)), 3)
        error = self.error(self.call(conn, "nothing"))
        self.assertEqual(error.code, ErrorCode.UNKNOWN_METHOD)
        self.assertEqual(error.message, "hub 'notes' has no method 'nothing'")
        self.assertEqual([(m, v) for m, v, _ in outcomes.seen], [("add", 3), ("nothing", "unknown-method")])

    def test_method_filters_cannot_rename(self) -> None:
        """Once the method is chosen (in a method's own filter) renaming fails: internal error, logged."""

        class Renames(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                call.method = "add"
                return proceed(call)

        class RenamingHub(Hub):
            hub_name = "renaming"

            @method(filters=[Renames()])
            def other(self) -> str:
                return "other"

            @method
            def add(self) -> str:
                return "add"

        self.serve([RenamingHub])
        conn = self.connect("renaming")
        error = self.error(self.call(conn, "other"))
        self.assertEqual((error.code, error.message), (ErrorCode.INTERNAL, "internal error"))
        [logged] = self.flushLoggedErrors()
        self.assertIn("the method is chosen already", str(logged.value))

    def test_arguments_checked_after_the_filters(self) -> None:
        """Arguments a filter changed are checked against the method's signature and types."""

        class Spoils(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                if call.args == [1]:
                    call.args = ["one"]
                elif call.args == [2]:
                    call.args = [1, 2, 3]
                elif call.args == [3]:
                    call.args = "not a list"  # type: ignore[assignment]
                return proceed(call)

        self.serve(filters=[Spoils()])
        conn = self.connect()
        first = self.error(self.call(conn, "add", 1))
        self.assertEqual((first.code, first.message), (ErrorCode.INVALID_ARGUMENTS, "add: argument 'a' must be int, got str"))
        second = self.error(self.call(conn, "add", 2))
        self.assertEqual((second.code, second.message), (ErrorCode.INVALID_ARGUMENTS, "add: too many positional arguments"))
        third = self.error(self.call(conn, "add", 3))
        self.assertEqual(third.code, ErrorCode.INVALID_ARGUMENTS)
        self.assertEqual(conn.hub.runs, [])  # type: ignore[attr-defined]

    def test_a_filter_that_raises_is_an_internal_error(self) -> None:
        """An exception other than HubError from a filter answers internal and is logged, like a method's."""

        class Broken(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Any:
                raise KeyError("filter bug")

        class BrokenAsync(HubFilter):
            async def on_call(self, call: HubCall, proceed: Proceed) -> Any:
                raise ValueError("async filter bug")

        for broken, exception in ((Broken(), KeyError), (BrokenAsync(), ValueError)):
            self.serve(filters=[broken])
            conn = self.connect()
            error = self.error(self.call(conn, "add", 1))
            self.assertEqual((error.code, error.message), (ErrorCode.INTERNAL, "internal error"))
            self.assertEqual(len(self.flushLoggedErrors(exception)), 1)
            self.assertEqual(conn.hub.runs, [])  # type: ignore[attr-defined]

    def test_notifications_run_through_filters(self) -> None:
        """A notification goes through the filters; a filter's refusal is logged, never answered."""

        class NoRecords(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Any:
                if call.args == ["blocked"]:
                    raise HubError("blocked", "not this one")
                return proceed(call)

        from twisted_hub import set_log_level
        from twisted_hub._logging import get_log_level

        previous = get_log_level()
        set_log_level("debug")  # a HubError a filter raised is logged at debug (docs/operations.md)
        self.addCleanup(set_log_level, previous)
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.serve(filters=[NoRecords()])
        conn = self.connect()
        conn.client.notify("record", "blocked")
        conn.client.notify("record", "fine")
        self.server.flush()
        self.assertEqual(conn.hub.runs, ["record fine"])  # type: ignore[attr-defined]
        lines = [line for line in map(formatEvent, logs) if line.startswith("notification of")]
        self.assertEqual(
            lines, [f"notification of 'record' on notes connection {conn.hub.connection.id} failed: [blocked] not this one"]
        )

    def test_order_kept_on_a_sequential_hub(self) -> None:
        """With an async filter a non-concurrent hub still runs one call at a time, in order."""

        class Slow(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                return deferLater(call.clock, 1.0, lambda: None).addCallback(lambda _: proceed(call))

        self.serve(filters=[Slow()])
        conn = self.connect()
        first = conn.client.call("later", "first")
        second = conn.client.call("add", 1)
        self.server.advance(5)
        self.assertNoResult(second)
        self.assertEqual(conn.hub.runs, ["later"])  # type: ignore[attr-defined]
        session = conn.server_protocol.session
        assert session is not None
        self.assertEqual(session.calls_in_progress, 2)
        conn.hub.waiting.pop().callback(None)  # type: ignore[attr-defined]
        self.server.advance(1)
        self.assertEqual(self.successResultOf(first), "first")
        self.assertEqual(self.successResultOf(second), 1)
        self.assertEqual(session.calls_in_progress, 0)

    def test_many_queued_calls_behind_a_slow_one(self) -> None:
        """255 calls queued behind a slow one all answer when it does (no recursion per queued call)."""
        self.serve(filters=[Outcomes()])
        conn = self.connect()
        slow = conn.client.call("later", "slow")
        queued = [conn.client.call("add", i) for i in range(255)]
        self.server.flush()
        self.assertNoResult(queued[0])
        conn.hub.waiting.pop().callback(None)  # type: ignore[attr-defined]
        self.server.flush()
        self.assertEqual(self.successResultOf(slow), "slow")
        self.assertEqual([self.successResultOf(d) for d in queued], list(range(255)))

    def test_connection_closed_while_a_filter_holds_the_call(self) -> None:
        """A call still inside a filter when its connection ends is not answered; the filter still sees its end."""
        outcomes = Outcomes()
        self.serve(filters=[outcomes])
        conn = self.connect()
        d = conn.client.call("later", "x")
        self.server.flush()
        conn.drop()
        self.failureResultOf(d)
        conn.hub.waiting.pop().callback(None)  # type: ignore[attr-defined]
        self.assertEqual([(m, v) for m, v, _ in outcomes.seen], [("later", "x")])


class NoFilterPathTests(FilterTestBase):
    def test_hub_without_filters_keeps_the_plain_dispatcher(self) -> None:
        """A hub no call filter applies to gets the unfiltered CallDispatcher; one with filters the filtered one."""

        class Lifecycle(HubFilter):
            def on_connected(self, event: ConnectionEvent, proceed: Any) -> Any:
                return proceed(event)

        class OtherHub(Hub):
            hub_name = "other"
            hub_filters = [Outcomes()]

            @method
            def ping(self) -> str:
                return "pong"

        self.serve([NotesHub, OtherHub], filters=[Lifecycle()])
        notes, other = self.connect("notes"), self.connect("other")
        assert notes.server_protocol.session and other.server_protocol.session
        self.assertIs(type(notes.server_protocol.session.dispatcher), CallDispatcher)
        self.assertIs(type(other.server_protocol.session.dispatcher), FilteredCallDispatcher)
        self.assertIsNone(FilterChains.build(NotesHub))
        chains = FilterChains.build(NotesHub, [Lifecycle()])
        assert chains is not None
        self.assertIsNone(chains.call)
        self.assertIsNotNone(chains.on_connected)
        self.assertIsNone(chains.on_disconnected)

    def test_pass_through_filter_changes_nothing(self) -> None:
        """A HubFilter that overrides nothing leaves calls on the plain path and answers as before."""
        self.serve(filters=[HubFilter()])
        conn = self.connect()
        assert conn.server_protocol.session is not None
        self.assertIs(type(conn.server_protocol.session.dispatcher), CallDispatcher)
        self.assertEqual(self.successResultOf(self.call(conn, "add", 1, 2)), 3)


class LifecycleTests(FilterTestBase):
    def test_connect_and_disconnect_filters_wrap_the_hooks(self) -> None:
        """on_connected/on_disconnected filters run in order around the hub's hooks and see the reason."""
        trace: list[str] = []

        class TracedHub(NotesHub):
            hub_name = "traced"
            hub_filters = (Trace("hub", trace),)

            def on_connected(self) -> None:
                trace.append("on_connected")

            def on_disconnected(self, reason: Any) -> None:
                trace.append("on_disconnected")

        self.serve([TracedHub], filters=[Trace("server", trace)])
        conn = self.connect("traced")
        connection_id = conn.hub.connection.id
        conn.client.sendClose(1000)
        self.server.flush()
        self.assertEqual(trace, [
            f"server connected {connection_id}", f"hub connected {connection_id}", "on_connected",
            "server disconnected normal", "hub disconnected normal", "on_disconnected",
        ])

    def test_lifecycle_filter_may_skip_the_hook_or_see_its_failure(self) -> None:
        """A filter may not proceed (the hook does not run), and sees a failing hook's error (it is still logged)."""
        seen: list[str] = []

        class SkipConnected(HubFilter):
            def on_connected(self, event: ConnectionEvent, proceed: Any) -> Any:
                seen.append("skipped on_connected")
                return None

            async def on_disconnected(self, event: ConnectionEvent, proceed: Any) -> Any:
                try:
                    await proceed(event)
                except RuntimeError as e:
                    seen.append(f"saw {e}")
                    raise

        class FailingHub(NotesHub):
            hub_name = "failing"

            def on_disconnected(self, reason: Any) -> None:
                raise RuntimeError("hook failed")

        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.serve([FailingHub], filters=[SkipConnected()])
        conn = self.connect("failing")
        self.assertEqual(conn.hub.hooks, [])  # type: ignore[attr-defined]
        conn.drop()
        self.server.flush()
        self.assertEqual(seen, ["skipped on_connected", "saw hook failed"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any(e.get("hook") == "on_disconnected" for e in logs))

    def test_connection_filter_kicks(self) -> None:
        """A connect filter can close the connection (kick): the client sees kicked, on_disconnected runs."""

        class Kick(HubFilter):
            def on_connected(self, event: ConnectionEvent, proceed: Any) -> Any:
                event.connection.kick("not today")
                return None

        self.serve(filters=[Kick()])
        conn = self.server.connect("notes")
        self.server.flush()
        reason = self.successResultOf(conn.client.wait_for_disconnect())
        self.assertEqual((reason.kind, reason.message), (DisconnectKind.KICKED, "not today"))
        self.assertEqual(conn.hub.hooks, ["on_disconnected kicked"])  # type: ignore[attr-defined]


class DeclarationTests(SynchronousTestCase):
    def test_hub_decorator_and_attribute(self) -> None:
        """@hub(filters=, call_timeout=) and the class attributes say the same."""
        limit = RateLimit(5)

        @hub("decorated", filters=[limit], call_timeout=7)
        class Decorated(Hub):
            pass

        class Attributed(Hub):
            hub_filters = (limit,)
            hub_call_timeout = 7

        for cls in (Decorated, Attributed):
            self.assertEqual((tuple(cls.hub_filters), cls.hub_call_timeout), ((limit,), 7))

    def test_method_declarations(self) -> None:
        """@method(filters=, call_timeout=) are kept on the method; a subclass inherits them."""
        limit = RateLimit(1)

        class Declared(Hub):
            @method("named", filters=[limit], call_timeout=None)
            def run(self) -> None: ...

            @method
            def plain(self) -> None: ...

        class Sub(Declared):
            pass

        for cls in (Declared, Sub):
            spec = cls.hub_methods["named"]
            self.assertEqual((spec.filters, spec.call_timeout), ((limit,), None))
            self.assertEqual(cls.hub_methods["plain"].filters, ())

    def test_filters_must_be_a_list(self) -> None:
        """filters= of @method and @hub takes a list; a lone filter is refused at once."""
        with self.assertRaises(HubArgumentError):
            method(filters=RateLimit(1))  # type: ignore[arg-type]
        with self.assertRaises(HubArgumentError):
            hub(filters=CallLog())  # type: ignore[arg-type]

    def test_bad_call_timeouts(self) -> None:
        """A call timeout must be a finite number of seconds > 0, or None."""
        for bad in (0, -1, float("inf"), True, "5"):
            with self.assertRaises(HubArgumentError):
                method(call_timeout=bad)  # type: ignore[arg-type]
            with self.assertRaises(HubArgumentError):
                hub(call_timeout=bad)  # type: ignore[arg-type]
            with self.assertRaises(HubArgumentError):
                CallTimeout(bad)  # type: ignore[arg-type]

    def test_not_a_filter(self) -> None:
        """Objects without a hook, and classes instead of instances, are refused naming where they were given."""

        class Bare(Hub):
            hub_name = "bare"

            @method
            def ping(self) -> None: ...

        class HubWithBadFilter(Bare):
            hub_filters = (object(),)

        class MethodWithBadFilter(Hub):
            @method(filters=[RateLimit])  # type: ignore[list-item]
            def ping(self) -> None: ...

        cases = [
            (lambda: HubServerFactory([Bare], filters=[object()]), "filters[0]: <object object"),
            (lambda: HubServerFactory([Bare], filters=[Outcomes(), "log"]), "filters[1]: 'log' is not a filter"),
            (lambda: HubServerFactory([Bare], filters=RateLimit(1)), "filters must be a list of filters"),
            (lambda: HubServerFactory([HubWithBadFilter]), "HubWithBadFilter.hub_filters[0]"),
            (lambda: HubServerFactory([MethodWithBadFilter]), "MethodWithBadFilter.ping filters[0]: RateLimit is a class"),
        ]
        for make, message in cases:
            with self.assertRaises(HubArgumentError) as raised:
                make()
            self.assertIn(message, str(raised.exception))

    def test_duck_typed_filter(self) -> None:
        """Any object with one of the hooks is a filter; the hooks it lacks are skipped."""
        seen: list[str] = []

        class OnlyCalls:
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                seen.append(call.method)
                return proceed(call)

        server = HubTestServer([NotesHub], filters=[OnlyCalls()])
        conn = server.connect("notes")
        d = conn.client.call("add", 1)
        server.flush()
        self.assertEqual((self.successResultOf(d), seen), (1, ["add"]))


class RateLimitTests(FilterTestBase):
    def test_burst_then_refused_then_refilled(self) -> None:
        """A full bucket lets `burst` calls through at once; the next is rate-limited with retry_after; time refills it."""
        self.serve(filters=[RateLimit(2, burst=3)], metrics=True)
        conn = self.connect()
        results = [self.call(conn, "add", i) for i in range(4)]
        self.assertEqual([self.successResultOf(d) for d in results[:3]], [0, 1, 2])
        error = self.error(results[3])
        self.assertEqual(error.code, ErrorCode.RATE_LIMITED)
        self.assertEqual(error.detail, {"retry_after": 0.5})
        self.assertEqual(error.message, "over the call rate of 2/s (burst 3) on this connection; retry in 0.5 s")
        self.server.advance(0.5)
        self.assertEqual(self.successResultOf(self.call(conn, "add", 5)), 5)
        self.error(self.call(conn, "add", 6))
        self.server.advance(10)  # fills up to burst, no further
        answered = [self.call(conn, "add", i) for i in range(4)]
        self.assertEqual([self.successResultOf(d) for d in answered[:3]], [0, 1, 2])
        self.assertEqual(self.error(answered[3]).code, ErrorCode.RATE_LIMITED)
        self.assertEqual(conn.hub.runs, ["add"] * 7)  # type: ignore[attr-defined]
        assert self.server.factory.metrics is not None
        registry = self.server.factory.metrics.registry
        labels = {"hub": "notes", "method": "add"}
        self.assertEqual(registry.get_sample_value("twisted_hub_calls_total", {**labels, "outcome": "rate-limited"}), 3)
        self.assertEqual(registry.get_sample_value("twisted_hub_calls_total", {**labels, "outcome": "ok"}), 7)

    def test_budget_per_connection_and_notifications_count(self) -> None:
        """Each connection has its own bucket; notifications spend it and are dropped over it."""
        self.serve(filters=[RateLimit(1, burst=2)])
        first, second = self.connect(), self.connect()
        first.client.notify("record", "a")
        first.client.notify("record", "b")
        first.client.notify("record", "c")
        self.server.flush()
        self.assertEqual(first.hub.runs, ["record a", "record b"])  # type: ignore[attr-defined]
        self.assertEqual(self.error(self.call(first, "add", 1)).code, ErrorCode.RATE_LIMITED)
        self.assertEqual(self.successResultOf(self.call(second, "add", 1)), 1)
        self.assertEqual(self.successResultOf(self.call(second, "add", 2)), 2)

    def test_method_rate_limit_is_its_own_budget(self) -> None:
        """A RateLimit on one method limits that method only."""

        class LimitedHub(NotesHub):
            hub_name = "limited"

            @method(filters=[RateLimit(1, burst=1)])
            def expensive(self) -> str:
                return "done"

        self.serve([LimitedHub])
        conn = self.connect("limited")
        self.assertEqual(self.successResultOf(self.call(conn, "expensive")), "done")
        self.assertEqual(self.error(self.call(conn, "expensive")).code, ErrorCode.RATE_LIMITED)
        self.assertEqual([self.successResultOf(self.call(conn, "add", i)) for i in range(5)], list(range(5)))

    def test_refusals_logged_once_per_second(self) -> None:
        """A flood over the rate makes one log line per connection per second, with the count of the others."""
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.serve(filters=[RateLimit(1, burst=1)])
        conn = self.connect()
        for _ in range(50):
            conn.client.notify("record", "x")
        self.server.flush()
        self.server.advance(1.5)
        for _ in range(3):
            conn.client.notify("record", "y")
        self.server.flush()
        lines = [e for e in logs if "over its call rate" in e.get("log_format", "")]
        self.assertEqual([e["suppressed"] for e in lines], [0, 48])
        self.assertEqual(lines[0]["id"], conn.hub.connection.id)
        self.assertEqual(conn.hub.runs, ["record x", "record y"])  # type: ignore[attr-defined]

    def test_bad_settings(self) -> None:
        """rate > 0 and finite; burst >= 1 and finite; the default burst is one second's worth, at least 1."""
        for rate, burst in ((0, None), (-1, None), (float("inf"), None), (True, None), (1, 0.5), (1, float("nan"))):
            with self.assertRaises(HubArgumentError):
                RateLimit(rate, burst)
        self.assertEqual((RateLimit(20).burst, RateLimit(0.1).burst, RateLimit(5, 7).burst), (20, 1, 7))


class CallTimeoutTests(FilterTestBase):
    def test_timeout_cancels_an_async_method(self) -> None:
        """Over the limit the call is answered with timeout and the coroutine is cancelled (its finally runs)."""
        self.serve(filters=[CallTimeout(5)], metrics=True)
        conn = self.connect()
        d = self.call(conn, "wait")
        self.server.advance(4.9)
        self.assertNoResult(d)
        self.server.advance(0.1)
        error = self.error(d)
        self.assertEqual((error.code, error.message), (ErrorCode.TIMEOUT, "notes.wait did not finish within 5 s"))
        self.assertEqual(conn.hub.cleaned_up, 1)  # type: ignore[attr-defined]
        self.assertEqual(self.server.clock.getDelayedCalls(), [])
        assert self.server.factory.metrics is not None
        self.assertEqual(self.server.factory.metrics.registry.get_sample_value(
            "twisted_hub_calls_total", {"hub": "notes", "method": "wait", "outcome": "timeout"}), 1)

    def test_no_timer_for_calls_that_finish_at_once(self) -> None:
        """A call answered before the filter returns leaves no timer behind."""
        self.serve(filters=[CallTimeout(5)])
        conn = self.connect()
        self.assertEqual(self.successResultOf(self.call(conn, "add", 1)), 1)
        self.assertEqual([c for c in self.server.clock.getDelayedCalls() if c.getTime() == 5.0], [])

    def test_declared_timeouts_take_precedence(self) -> None:
        """Method declaration > hub declaration > the filter's default; None means no limit."""

        @hub("declared", call_timeout=3, concurrent=True)
        class DeclaredHub(NotesHub):
            @method(call_timeout=10)
            def patient(self) -> Deferred[None]:
                return Deferred()

            @method(call_timeout=None)
            def forever(self) -> Deferred[None]:
                return Deferred()

            @method
            def hubwide(self) -> Deferred[None]:
                return Deferred()

        class DefaultHub(NotesHub):
            hub_name = "default"

            @method
            def hubwide(self) -> Deferred[None]:
                return Deferred()

        self.serve([DeclaredHub, DefaultHub], filters=[CallTimeout(1)])
        declared, default = self.connect("declared"), self.connect("default")
        calls = {
            "patient": self.call(declared, "patient"),
            "forever": self.call(declared, "forever"),
            "hubwide": self.call(declared, "hubwide"),
            "default": self.call(default, "hubwide"),
        }
        ended: dict[str, float] = {}

        def timed_out(failure: Failure, name: str) -> None:
            failure.trap(HubError)
            ended[name] = self.server.clock.seconds()

        for name, d in calls.items():
            d.addErrback(timed_out, name)
        self.server.advance(60)
        self.assertEqual(ended, {"default": 1.0, "hubwide": 3.0, "patient": 10.0})
        self.assertNoResult(calls["forever"])

    def test_declared_timeout_works_without_a_filter(self) -> None:
        """A hub's or a method's declared call_timeout applies with no CallTimeout filter installed."""

        @hub("own", call_timeout=2)
        class OwnHub(NotesHub):
            @method(call_timeout=4)
            def longer(self) -> Deferred[None]:
                return Deferred()

        self.serve([OwnHub])
        conn = self.connect("own")
        first, second = self.call(conn, "wait"), None
        self.server.advance(2)
        self.assertEqual(self.error(first).code, ErrorCode.TIMEOUT)
        second = self.call(conn, "longer")
        self.server.advance(3.9)
        self.assertNoResult(second)
        self.server.advance(0.1)
        self.assertEqual(self.error(second).message, "own.longer did not finish within 4 s")

    def test_a_call_waiting_inside_a_called_deferred_still_times_out(self) -> None:
        """A filter inside CallTimeout whose Deferred fired with a still-waiting Deferred does not escape the limit."""

        class Chained(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                return succeed(None).addCallback(lambda _: proceed(call))

        self.serve(filters=[CallTimeout(2), Chained()])
        conn = self.connect()
        d = self.call(conn, "wait")
        self.server.advance(2)
        self.assertEqual(self.error(d).code, ErrorCode.TIMEOUT)
        self.assertEqual(conn.hub.cleaned_up, 1)  # type: ignore[attr-defined]

    def test_time_counts_from_the_start_of_the_call(self) -> None:
        """Time spent in filters before CallTimeout counts; over the limit already, the method never runs."""

        class Slow(HubFilter):
            def on_call(self, call: HubCall, proceed: Proceed) -> Deferred[Any]:
                return deferLater(call.clock, 3.0, lambda: None).addCallback(lambda _: proceed(call))

        self.serve(filters=[Slow(), CallTimeout(2)])
        conn = self.connect()
        d = self.call(conn, "add", 1)
        self.server.advance(3)
        self.assertEqual(self.error(d).message, "notes.add did not finish within 2 s")
        self.assertEqual(conn.hub.runs, [])  # type: ignore[attr-defined]

    def test_next_call_runs_after_a_timeout_and_late_results_are_ignored(self) -> None:
        """After a timeout the queued call runs; the method firing its Deferred later raises nothing."""
        self.serve(filters=[CallTimeout(1)])
        conn = self.connect()
        slow = conn.client.call("later", "late")
        after = conn.client.call("add", 7)
        self.server.flush()
        self.server.advance(1)
        self.assertEqual(self.error(slow).code, ErrorCode.TIMEOUT)
        self.assertEqual(self.successResultOf(after), 7)
        conn.hub.waiting.pop().callback(None)  # type: ignore[attr-defined]
        self.server.flush()

    def test_method_answering_its_cancellation(self) -> None:
        """A method that catches the cancellation and answers something else is answered with that."""

        class Stubborn(NotesHub):
            hub_name = "stubborn"

            @method
            async def cautious(self) -> str:
                try:
                    await Deferred()
                except CancelledError:
                    raise HubError("partial", "stopped half way") from None
                return "never"

        self.serve([Stubborn], filters=[CallTimeout(1)])
        conn = self.connect("stubborn")
        d = self.call(conn, "cautious")
        self.server.advance(1)
        self.assertEqual(self.error(d).code, "partial")


class CallLogTests(FilterTestBase):
    def setUp(self) -> None:
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self) -> list[tuple[LogLevel, str]]:
        return [(e["log_level"], formatEvent(e)) for e in self.logs if e.get("log_namespace") == "twisted_hub.calls"]

    def test_one_line_per_call(self) -> None:
        """ok, HubError codes, crashes (at warn), cancellations and notifications: one line each, with the duration."""
        self.serve(filters=[CallLog()])
        conn = self.connect()
        cid = conn.hub.connection.id
        self.call(conn, "add", 1, 2)
        slow = self.call(conn, "later", "v")
        self.server.advance(0.25)
        conn.hub.waiting.pop().callback(None)  # type: ignore[attr-defined]
        self.server.flush()
        self.successResultOf(slow)
        self.error(self.call(conn, "refuse"))
        self.error(self.call(conn, "crash"))
        self.flushLoggedErrors(RuntimeError)
        self.error(self.call(conn, "no\nsuch"))
        conn.client.notify("record", 1)
        self.server.flush()
        self.assertEqual(self.lines(), [
            (LogLevel.info, f"notes.add call 1 on {cid}: ok in 0.0 ms"),
            (LogLevel.info, f"notes.later call 2 on {cid}: ok in 250.0 ms"),
            (LogLevel.info, f"notes.refuse call 3 on {cid}: nope in 0.0 ms (not allowed)"),
            (LogLevel.warn, f"notes.crash call 4 on {cid}: internal in 0.0 ms (RuntimeError: bug in the method)"),
            (LogLevel.info,
             f"notes.'no\\nsuch' call 5 on {cid}: unknown-method in 0.0 ms (hub 'notes' has no method 'no\\nsuch')"),
            (LogLevel.info, f"notes.record notification on {cid}: ok in 0.0 ms"),
        ])
        event = [e for e in self.logs if e.get("log_namespace") == "twisted_hub.calls"][1]
        self.assertEqual(
            (event["hub"], event["method"], event["id"], event["call_id"], event["outcome"], event["duration"], event["error"]),
            ("notes", "later", cid, 2, "ok", 0.25, ""),
        )

    def test_timeouts_cancellations_and_arguments(self) -> None:
        """Outside CallTimeout the log says timeout; inside it, cancelled; arguments=True adds them, cut."""
        inner = CallLog(arguments=True, level=LogLevel.debug)
        self.serve(filters=[CallLog(), CallTimeout(1), inner])
        conn = self.connect()
        d = self.call(conn, "later", "x" * 500)
        self.server.advance(1)
        self.error(d)
        lines = self.lines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[0][0], LogLevel.debug)
        cid = conn.hub.connection.id
        self.assertTrue(lines[0][1].startswith(f"notes.later call 1 on {cid}: cancelled in 1000.0 ms args (['xxx"))
        self.assertIn("... (", lines[0][1])
        self.assertLess(len(lines[0][1]), 320)
        self.assertEqual(
            lines[1],
            (LogLevel.info, f"notes.later call 1 on {conn.hub.connection.id}: timeout in 1000.0 ms "
                            "(notes.later did not finish within 1 s)"),
        )
