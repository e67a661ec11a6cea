"""
The server adapter on a Clock with in-memory transports: methods, ordering,
errors, receivers, groups, lifecycle, client results, kicks, limits and bad
input.
"""

from __future__ import annotations

import io
from typing import Any
from unittest import mock

import msgpack
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

import twisted_hub
from twisted_hub import (
    CallTimeoutError,
    ConnectionClosedError,
    DisconnectKind,
    ErrorCode,
    HandshakeError,
    HubArgumentError,
    HubClientOptions,
    HubError,
    HubServerFactory,
)
from twisted_hub._hubs import hub as hub_module
from twisted_hub.testing import HubTestServer, TestConnection
from twisted_hub.types import CloseCode, HubClientProtocol

from .helpers.hubs import (
    Answers,
    AsyncGuardedHub,
    GuardLog,
    ParallelHub,
    Recorder,
    WorkHub,
    WorkLog,
    guarded_hub,
    hub_events,
    work_hub,
)


class ServerTestBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = WorkLog()
        self.guard = GuardLog()
        self.server = HubTestServer([work_hub(self.log), work_hub(self.log, ParallelHub), guarded_hub(self.guard)])
        self.logs: list[LogEvent] = []
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.logs = observer  # type: ignore[assignment]

    def connect(self, hub: str = "work", receiver: object | None = None, **kwargs: Any) -> TestConnection:
        conn = self.server.connect(hub, receiver=receiver, **kwargs)
        self.successResultOf(conn.ready)
        return conn

    def call(self, conn: TestConnection, method: str, *args: Any, **kwargs: Any) -> Any:
        d = conn.client.call(method, *args, **kwargs)
        self.server.flush()
        return self.successResultOf(d)

    def call_error(self, conn: TestConnection, method: str, *args: Any, **kwargs: Any) -> HubError:
        d = conn.client.call(method, *args, **kwargs)
        self.server.flush()
        failure = self.failureResultOf(d, HubError)
        return failure.value  # type: ignore[return-value]

    def hub_logs(self, level: str | None = None) -> list[LogEvent]:
        return hub_events(list(self.logs), level)  # type: ignore[call-overload]


class MethodKindTests(ServerTestBase):
    def test_plain(self) -> None:
        """A plain method's return value reaches the caller."""
        conn = self.connect()
        self.assertEqual(self.call(conn, "plain", {"a": [1, 2]}), {"a": [1, 2]})

    def test_deferred(self) -> None:
        """A method returning a Deferred answers when the Deferred fires, not before."""
        conn = self.connect()
        d = conn.client.call("deferred", "x")
        self.server.flush()
        self.assertNoResult(d)
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "x")

    def test_async_def(self) -> None:
        """An async def method is run as a coroutine and answers with its return value."""
        conn = self.connect()
        d = conn.client.call("coroutine", "x")
        self.server.flush()
        self.assertNoResult(d)
        self.log.pending[0].callback("y")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), ["x", "y"])

    def test_renamed_and_keywords(self) -> None:
        """A method exposed under another name and keyword arguments both work."""
        conn = self.connect()
        self.assertEqual(self.call(conn, "renamed"), "renamed")
        self.assertEqual(self.call(conn, "add", 2, b=3, scale=10), 50)

    def test_notify_runs_without_answer(self) -> None:
        """A fire-and-forget call runs the method and sends nothing back."""
        conn = self.connect()
        before = len(conn.client_received)
        conn.client.notify("record", 7)
        self.server.flush()
        self.assertIn(("record", 7), self.log.events)
        self.assertEqual(len(conn.client_received), before)

    def test_failing_notify_is_logged_not_answered(self) -> None:
        """A fire-and-forget call that fails sends nothing and logs the failure."""
        conn = self.connect()
        before = len(conn.client_received)
        conn.client.notify("crash")
        self.server.flush()
        self.assertEqual(len(conn.client_received), before)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(conn.client.is_connected)

    def test_await_in_client(self) -> None:
        """A client call is a Deferred usable with await."""
        conn = self.connect()

        async def use() -> Any:
            return await conn.client.call("add", 1, 2)

        d = ensureDeferred(use())
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 3)


class OrderingTests(ServerTestBase):
    def test_in_order_by_default(self) -> None:
        """A slow Deferred call delays the next call on the same connection; results arrive in order."""
        conn = self.connect()
        first = conn.client.call("deferred", 1)
        second = conn.client.call("plain", 2)
        third = conn.client.call("coroutine", 3)
        order: list[Any] = []
        for d in (first, second, third):
            d.addCallback(order.append)
        self.server.flush()
        self.assertEqual(order, [])
        self.assertEqual(len(self.log.pending), 1)  # the coroutine has not started
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertEqual(order, [1, 2])
        self.assertEqual(len(self.log.pending), 2)
        self.log.pending[1].callback("z")
        self.server.flush()
        self.assertEqual(order, [1, 2, [3, "z"]])

    def test_notify_waits_its_turn(self) -> None:
        """A fire-and-forget call queued behind a slow call runs only after it."""
        conn = self.connect()
        conn.client.call("deferred", 1)
        conn.client.notify("record", "after")
        self.server.flush()
        self.assertNotIn(("record", "after"), self.log.events)
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertIn(("record", "after"), self.log.events)

    def test_concurrent_opt_in(self) -> None:
        """With @hub(concurrent=True) a later call finishes while an earlier one is still running."""
        conn = self.connect("parallel")
        first = conn.client.call("deferred", 1)
        second = conn.client.call("plain", 2)
        third = conn.client.call("coroutine", 3)
        self.server.flush()
        self.assertEqual(self.successResultOf(second), 2)
        self.assertNoResult(first)
        self.assertEqual(len(self.log.pending), 2)  # both slow calls started
        self.log.pending[1].callback("z")
        self.server.flush()
        self.assertEqual(self.successResultOf(third), [3, "z"])
        self.assertNoResult(first)
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertEqual(self.successResultOf(first), 1)

    def test_connections_do_not_block_each_other(self) -> None:
        """A slow call on one connection does not delay calls on another."""
        slow = self.connect()
        fast = self.connect()
        slow.client.call("deferred", 1)
        self.server.flush()
        self.assertEqual(self.call(fast, "plain", 2), 2)


#: The usage detail of WorkHub.add(self, a: int, b: int = 0, *, scale: int = 1).
ADD_USAGE = {"signature": "add(a: int, b: int = …, *, scale: int = …)", "max_positional": 2}


class ErrorTests(ServerTestBase):
    def test_hub_error_exact(self) -> None:
        """A HubError raised by a method reaches the caller with exactly its code, message and detail."""
        conn = self.connect()
        error = self.call_error(conn, "fail", "my-code", "my message", {"n": [1, 2], "b": b"\x00"})
        expected = ("my-code", "my message", {"n": [1, 2], "b": b"\x00"})
        self.assertEqual((error.code, error.message, error.detail), expected)
        self.assertEqual(self.hub_logs("error") + self.hub_logs("critical"), [])

    def test_hub_error_from_deferred_and_async(self) -> None:
        """A HubError from a failing Deferred or an async def also passes through exactly."""
        conn = self.connect()
        self.assertEqual(self.call_error(conn, "fail_later", "c1"), HubError("c1", "later", [1, 2]))
        self.assertEqual(self.call_error(conn, "fail_async", "c2"), HubError("c2", "async", {"k": "v"}))

    def test_other_exception_is_internal_without_text(self) -> None:
        """Any other exception answers 'internal' without its text or traceback, and is logged once."""
        conn = self.connect()
        error = self.call_error(conn, "crash")
        self.assertEqual(error.code, ErrorCode.INTERNAL)
        self.assertNotIn("secret", error.message)
        self.assertIsNone(error.detail)
        failures = [e for e in self.hub_logs() if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["method"], "crash")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(conn.client.is_connected)

    def test_async_exception_is_internal(self) -> None:
        """An exception in an async def method is an internal error too, and is logged."""
        conn = self.connect()
        error = self.call_error(conn, "crash_async")
        self.assertEqual((error.code, error.detail), (ErrorCode.INTERNAL, None))
        self.assertNotIn("secret", error.message)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_debug_sends_text_and_traceback(self) -> None:
        """With debug=True the internal error carries the exception text and the traceback."""
        self.server = HubTestServer([work_hub(self.log)], debug=True)
        conn = self.connect()
        error = self.call_error(conn, "crash")
        self.assertEqual(error.code, ErrorCode.INTERNAL)
        self.assertIn("ZeroDivisionError: secret server text", error.message)
        self.assertIn("Traceback", error.detail)
        self.assertIn("secret server text", error.detail)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unknown_method(self) -> None:
        """An unknown method answers 'unknown-method'."""
        conn = self.connect()
        error = self.call_error(conn, "nope")
        self.assertEqual(error.code, ErrorCode.UNKNOWN_METHOD)
        self.assertIn("nope", error.message)

    def test_wrong_arity(self) -> None:
        """Too many, too few or unexpected keyword arguments answer 'invalid-arguments'."""
        conn = self.connect()
        for args, kwargs in (([], {}), ([1, 2, 3], {}), ([1], {"nope": 1})):
            error = self.call_error(conn, "add", *args, **kwargs)
            self.assertEqual(error.code, ErrorCode.INVALID_ARGUMENTS, (args, kwargs))
            self.assertEqual(error.detail, ADD_USAGE)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_usage_detail(self) -> None:
        """invalid-arguments carries the signature (defaults hidden) and the most positionals; *args: no most."""
        conn = self.connect()
        self.assertEqual(self.call_error(conn, "add", "1").detail, ADD_USAGE)  # a type check
        self.assertEqual(self.call_error(conn, "add", 1, scale="x").detail, ADD_USAGE)
        self.assertEqual(self.call_error(conn, "add", 1, 2, 3).message, "add: too many positional arguments")

        def spread(self: Any, first: str, *rest: Any) -> None: ...

        usage = hub_module._describe("spread", spread).usage()
        self.assertEqual(usage, {"signature": "spread(first: str, *rest: Any)", "max_positional": None})

    def test_wrong_types(self) -> None:
        """Annotated argument types are checked, positional and keyword, bool is not an int."""
        conn = self.connect()
        for args, kwargs in ((["1"], {}), ([1, 2.5], {}), ([True], {}), ([1], {"scale": "x"}), ([], {"a": None})):
            error = self.call_error(conn, "add", *args, **kwargs)
            self.assertEqual(error.code, ErrorCode.INVALID_ARGUMENTS, (args, kwargs))
        self.assertEqual(self.call(conn, "add", a=1, b=2), 3)

    def test_codes_are_distinct(self) -> None:
        """Unknown hub, unknown method and invalid arguments are told apart."""
        conn = self.connect()
        codes = {self.call_error(conn, "nope").code, self.call_error(conn, "add").code}
        refused = self.server.connect("no-such-hub")
        status = self.failureResultOf(refused.ready, HandshakeError).value.status  # type: ignore[attr-defined]
        self.assertEqual(codes, {ErrorCode.UNKNOWN_METHOD, ErrorCode.INVALID_ARGUMENTS})
        self.assertEqual(status, 404)

    def test_type_error_inside_method_is_internal(self) -> None:
        """A TypeError raised inside a method (arguments were fine) is internal, not invalid-arguments."""
        conn = self.connect()
        self.assertEqual(self.call_error(conn, "type_error_inside").code, ErrorCode.INTERNAL)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_unencodable_result(self) -> None:
        """A result msgpack cannot encode answers 'internal' and keeps the connection."""
        conn = self.connect()
        self.assertEqual(self.call_error(conn, "unencodable").code, ErrorCode.INTERNAL)
        self.assertEqual(self.call(conn, "plain", 1), 1)


class ReceiverTests(ServerTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.receivers = [Recorder() for _ in range(4)]
        self.conns = [self.connect(receiver=r) for r in self.receivers]
        self.ids = [c.client.connection_id for c in self.conns]

    def heard(self) -> list[int]:
        """Which receivers got a 'said' call (and clear them)."""
        result = [i for i, r in enumerate(self.receivers) if r.calls]
        for r in self.receivers:
            r.calls.clear()
        return result

    def test_ids_match(self) -> None:
        """The client learns the id the server uses for its connection."""
        self.assertEqual(self.ids, [c.hub.connection.id for c in self.conns])
        self.assertEqual(len(set(self.ids)), 4)

    def test_caller(self) -> None:
        """clients.caller reaches only the calling connection, with the arguments."""
        self.call(self.conns[1], "to_caller", "hi")
        self.assertEqual(self.receivers[1].calls, [("said", ("hi",))])
        self.assertEqual(self.heard(), [1])

    def test_all(self) -> None:
        """clients.all reaches every connection of the hub."""
        self.call(self.conns[0], "to_all", "hi")
        self.assertEqual(self.heard(), [0, 1, 2, 3])

    def test_others(self) -> None:
        """clients.others reaches everyone but the caller."""
        self.call(self.conns[2], "to_others", "hi")
        self.assertEqual(self.heard(), [0, 1, 3])

    def test_all_except(self) -> None:
        """clients.all_except skips the given connections."""
        self.call(self.conns[0], "to_all_except", [self.ids[1], self.ids[3]], "hi")
        self.assertEqual(self.heard(), [0, 2])

    def test_only(self) -> None:
        """clients.only reaches just the given connections, skipping unknown ids."""
        self.call(self.conns[0], "to_only", [self.ids[3], "unknown", self.ids[1]], "hi")
        self.assertEqual(self.heard(), [1, 3])

    def test_client(self) -> None:
        """clients.client(id) reaches one connection."""
        self.call(self.conns[0], "to_client", self.ids[2], "hi")
        self.assertEqual(self.receivers[2].calls, [("said", ("hi",))])
        self.assertEqual(self.heard(), [2])

    def test_group(self) -> None:
        """clients.group reaches every member of a group and nobody else."""
        self.call(self.conns[0], "join", "room")
        self.call(self.conns[2], "join", "room")
        self.call(self.conns[3], "join", "other")
        self.call(self.conns[1], "to_group", "room", "hi")
        self.assertEqual(self.heard(), [0, 2])
        self.call(self.conns[1], "to_group", "empty", "hi")
        self.assertEqual(self.heard(), [])

    def test_group_except(self) -> None:
        """clients.group_except skips the given members."""
        for conn in self.conns[:3]:
            self.call(conn, "join", "room")
        self.call(self.conns[0], "to_group_except", "room", [self.ids[0]], "hi")
        self.assertEqual(self.heard(), [1, 2])

    def test_other_hubs_not_reached(self) -> None:
        """clients.all reaches only connections of the same hub."""
        recorder = Recorder()
        self.connect("parallel", receiver=recorder)
        self.call(self.conns[0], "to_all", "hi")
        self.assertEqual(recorder.calls, [])
        self.assertEqual(self.heard(), [0, 1, 2, 3])

    def test_group_message_encoded_once(self) -> None:
        """A group message to N members is encoded and prepared once, not N times."""
        for conn in self.conns:
            self.call(conn, "join", "room")
        real_encode = hub_module.receiver_call_payload
        encoded: list[str] = []

        def counting(method: str, *args: Any) -> bytes:
            encoded.append(method)
            return real_encode(method, *args)

        factory = self.server.factory
        with mock.patch.object(hub_module, "receiver_call_payload", counting), mock.patch.object(
            factory, "prepareMessage", wraps=factory.prepareMessage
        ) as prepare:
            self.call(self.conns[0], "to_group", "room", "hi")
        self.assertEqual(len(encoded), 1)
        self.assertEqual(prepare.call_count, 1)
        self.assertEqual(self.heard(), [0, 1, 2, 3])

    def test_receiver_call_keeps_order_with_result(self) -> None:
        """A receiver call made by a method arrives before that method's result."""
        conn = self.conns[0]
        order: list[str] = []
        self.receivers[0].said = lambda *a: order.append("said")  # type: ignore[method-assign]
        d = conn.client.call("to_caller", "x")
        d.addCallback(lambda _: order.append("result"))
        self.server.flush()
        self.assertEqual(order, ["said", "result"])


class GroupTests(ServerTestBase):
    def test_add_remove_count_members(self) -> None:
        """Groups add, remove, count and list members in joining order."""
        a, b, c = self.connect(), self.connect(), self.connect()
        self.assertEqual(self.call(b, "join", "g"), 1)
        self.assertEqual(self.call(a, "join", "g"), 2)
        self.assertEqual(self.call(a, "join", "g"), 2)  # joining twice is a no-op
        self.assertEqual(self.call(c, "members", "g"), [b.client.connection_id, a.client.connection_id])
        self.assertEqual(self.call(b, "leave", "g"), 1)
        self.assertEqual(self.call(b, "leave", "g"), 1)  # leaving twice is a no-op
        self.assertEqual(self.call(c, "members", "g"), [a.client.connection_id])
        self.assertEqual(self.call(c, "members", "none"), [])

    def test_joined(self) -> None:
        """A connection lists the groups it is in."""
        a = self.connect()
        self.call(a, "join", "x")
        self.call(a, "join", "y")
        self.assertEqual(self.call(a, "joined"), ["x", "y"])

    def test_disconnect_leaves_all_groups(self) -> None:
        """A disconnected connection leaves every group before on_disconnected runs."""
        a, b = self.connect(), self.connect()
        for group in ("x", "y", "z"):
            self.call(a, "join", group)
        self.call(b, "join", "x")
        a.client.disconnect()
        self.server.flush()
        runtime = self.server.factory.hub_runtime("work")
        self.assertEqual(runtime.groups.names(), ["x"])
        self.assertEqual(self.call(b, "members", "x"), [b.client.connection_id])
        disconnected = [e for e in self.log.events if e[0] == "disconnected"]
        self.assertEqual(disconnected[0][2], frozenset())

    def test_dropped_connection_leaves_groups(self) -> None:
        """A connection lost without a close handshake also leaves its groups."""
        a = self.connect()
        self.call(a, "join", "x")
        a.drop()
        self.server.flush()
        self.assertEqual(self.server.factory.hub_runtime(WorkHub).groups.count("x"), 0)
        self.assertEqual(self.server.factory.hub_runtime(WorkHub).connections, {})


class GroupAfterCloseTests(ServerTestBase):
    """Membership changes from a connection that has closed are ignored; its hub instance is released."""

    def join_then_close(self, close: str) -> tuple[TestConnection, Any]:
        conn = self.connect()
        other = self.connect()
        self.call(other, "join", "room")
        pending = conn.client.call("join_later", "room")
        self.server.flush()
        if close == "drop":
            conn.drop()
        else:
            conn.client.disconnect()
        self.server.flush()
        self.failureResultOf(pending, ConnectionClosedError)
        return conn, other

    def test_async_join_after_drop_is_ignored(self) -> None:
        """An async method that joins a group after its client dropped leaves no dead member."""
        conn, other = self.join_then_close("drop")
        self.log.pending[0].callback(None)
        self.server.flush()
        runtime = self.server.factory.hub_runtime(WorkHub)
        self.assertEqual(runtime.groups.members_of("room"), [other.server_protocol.session])
        self.assertEqual(runtime.groups.groups_of(conn.client.connection_id), frozenset())
        self.assertEqual(self.call(other, "members", "room"), [other.client.connection_id])

    def test_async_join_after_normal_close_is_ignored(self) -> None:
        """The same after a normal close: the group counts only open members."""
        conn, other = self.join_then_close("close")
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertEqual(self.server.factory.hub_runtime(WorkHub).groups.count("room"), 1)

    def test_hub_instance_released(self) -> None:
        """After the late join, nothing in the registry keeps the closed connection's hub (or protocol) alive."""
        import gc
        import weakref

        conn, other = self.join_then_close("drop")
        hub_ref = weakref.ref(conn.hub)
        protocol_ref = weakref.ref(conn.server_protocol)
        self.server.connections.remove(conn)
        del conn
        self.log.pending.pop(0).callback(None)
        self.server.flush()
        gc.collect()
        self.assertIsNone(hub_ref())
        self.assertIsNone(protocol_ref())
        self.assertEqual(self.server.factory.hub_runtime(WorkHub).groups.count("room"), 1)

    def test_join_while_open_still_works(self) -> None:
        """The same async join completes normally while the client is connected."""
        conn = self.connect()
        pending = conn.client.call("join_later", "room")
        self.server.flush()
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertEqual(self.successResultOf(pending), 1)
        self.assertEqual(self.call(conn, "joined"), ["room"])


class LifecycleTests(ServerTestBase):
    def refusal(self, path: str, **kwargs: Any) -> HandshakeError:
        conn = self.server.connect(path=path, **kwargs)
        return self.failureResultOf(conn.ready, HandshakeError).value  # type: ignore[return-value]

    def test_refuse_sync(self) -> None:
        """RefuseConnection raised in on_connecting refuses with its HTTP status; ready fails."""
        error = self.refusal("/hub/guarded?mode=refuse")
        self.assertEqual(error.status, 401)
        self.assertIn("who are you", error.reason)
        self.assertEqual(self.server.factory.hub_runtime("guarded").connections, {})

    def test_refuse_deferred(self) -> None:
        """A Deferred from on_connecting holds the handshake; failing it with RefuseConnection refuses."""
        from twisted_hub import RefuseConnection

        conn = self.server.connect(path="/hub/guarded?mode=later")
        self.assertNoResult(conn.ready)
        assert self.guard.gate is not None
        self.guard.gate.errback(RefuseConnection(429, "slow down"))
        self.server.flush()
        error = self.failureResultOf(conn.ready, HandshakeError).value
        self.assertEqual(error.status, 429)  # type: ignore[attr-defined]

    def test_accept_deferred(self) -> None:
        """A Deferred from on_connecting that succeeds accepts the connection."""
        conn = self.server.connect(path="/hub/guarded?mode=later")
        self.assertNoResult(conn.ready)
        assert self.guard.gate is not None
        self.guard.gate.callback(None)
        self.server.flush()
        client = self.successResultOf(conn.ready)
        self.assertEqual(self.call(conn, "hello"), "hi")
        self.assertTrue(client.is_connected)

    def test_on_connecting_crash_is_500(self) -> None:
        """An on_connecting that raises something else refuses with 500 and logs it."""
        error = self.refusal("/hub/guarded?mode=crash")
        self.assertEqual(error.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unknown_hub_404(self) -> None:
        """A path that names no hub is refused with 404."""
        self.assertEqual(self.refusal("/hub/nothing").status, 404)

    def test_single_hub_any_path(self) -> None:
        """With one hub served, any path reaches it."""
        self.server = HubTestServer([work_hub(self.log)])
        conn = self.server.connect(path="/whatever")
        self.successResultOf(conn.ready)
        self.assertEqual(self.call(conn, "plain", 1), 1)

    def test_single_hub_below_a_mount_needs_its_name(self) -> None:
        """Mounted at /hub (HubResource, twistd hub), one hub is reached at /hub or by its name; another name is 404."""
        factory = HubServerFactory([work_hub(self.log)], clock=Clock())
        work = factory.runtimes["work"]
        self.assertIs(factory.route("/hub", "/hub"), work)
        self.assertIs(factory.route("/hub/", "/hub"), work)
        self.assertIs(factory.route("/hub/work", "/hub"), work)
        self.assertIsNone(factory.route("/hub/nosuch", "/hub"))
        self.assertIsNone(factory.route("/api/hub/nosuch/", "/api/hub"))
        self.assertIs(factory.route("/anything", None), work)  # a port of its own: any path

    def test_no_subprotocol_400(self) -> None:
        """A client that offers no supported subprotocol is refused with 400."""
        error = self.refusal("/hub/work", protocols=["other.v9"])
        self.assertEqual(error.status, 400)
        self.assertIn("twisted-hub.v1", error.reason)

    def test_disallowed_origin_403(self) -> None:
        """A browser origin not in allowed_origins is refused with 403; allowed ones and none pass."""
        self.server = HubTestServer([work_hub(self.log)], allowed_origins=["https://good.example"])
        self.assertEqual(self.refusal("/hub/work", origin="https://evil.example").status, 403)
        self.successResultOf(self.server.connect("work", origin="https://good.example").ready)
        self.successResultOf(self.server.connect("work").ready)

    def test_connected_and_disconnected_hooks(self) -> None:
        """on_connected runs once open, on_disconnected gets the reason (normal close here)."""
        conn = self.connect()
        self.assertEqual(self.log.events, [("connected", conn.client.connection_id)])
        conn.client.disconnect("bye")
        self.server.flush()
        reason = self.log.events[-1][1]
        self.assertEqual(reason.kind, DisconnectKind.NORMAL)
        self.assertEqual(reason.code, CloseCode.NORMAL)
        self.assertFalse(reason.locally)

    def test_disconnected_hook_on_drop(self) -> None:
        """on_disconnected gets CONNECTION_LOST when the link breaks."""
        conn = self.connect()
        conn.drop()
        self.server.flush()
        self.assertEqual(self.log.events[-1][1].kind, DisconnectKind.CONNECTION_LOST)
        self.assertEqual(self.server.factory.connection_count, 0)

    def test_refused_connection_runs_no_hooks(self) -> None:
        """A refused handshake never calls on_connected or on_disconnected."""
        self.refusal("/hub/guarded?mode=refuse")
        self.server.flush()
        self.assertEqual(self.server.factory.connection_count, 0)


class OnConnectingKindsTests(ServerTestBase):
    """on_connecting as a plain function, a Deferred and an async def, each refusing and accepting."""

    def setUp(self) -> None:
        super().setUp()
        self.server = HubTestServer([guarded_hub(self.guard), guarded_hub(self.guard, AsyncGuardedHub)])

    def assert_refused(self, conn: TestConnection, status: int, reason: str | None = None) -> None:
        """The handshake failed with C{status}, nothing is registered and no hub method can run."""
        self.server.flush()
        error = self.failureResultOf(conn.ready, HandshakeError).value
        self.assertEqual(error.status, status)  # type: ignore[attr-defined]
        if reason is not None:
            self.assertIn(reason, error.reason)  # type: ignore[attr-defined]
        for name in ("guarded", "async-guarded"):
            self.assertEqual(self.server.factory.hub_runtime(name).connections, {})
        self.assertEqual(self.server.factory.connection_count, 0)
        self.assertTrue(conn.closed)
        self.assertIsNone(conn.server_protocol.core.peer_max_message_size)
        self.failureResultOf(conn.client.call("hello"), ConnectionClosedError)
        self.server.flush()
        self.assertEqual(self.guard.calls, 0)

    def assert_accepted(self, conn: TestConnection) -> None:
        """The handshake succeeded and a hub method runs."""
        self.server.flush()
        self.successResultOf(conn.ready)
        self.assertEqual(self.call(conn, "hello"), "hi")
        self.assertEqual(self.guard.calls, 1)

    def open_gate(self, value: object) -> None:
        gate = self.guard.gate
        assert gate is not None
        if isinstance(value, Exception):
            gate.errback(value)
        else:
            gate.callback(None)

    def test_sync_refuses(self) -> None:
        """A plain on_connecting raising RefuseConnection refuses with its status."""
        self.assert_refused(self.server.connect(path="/hub/guarded?mode=refuse"), 401, "who are you")

    def test_sync_accepts(self) -> None:
        """A plain on_connecting returning None accepts."""
        self.assert_accepted(self.server.connect(path="/hub/guarded"))

    def test_deferred_refuses(self) -> None:
        """A Deferred from on_connecting failing with RefuseConnection refuses with its status."""
        from twisted_hub import RefuseConnection

        conn = self.server.connect(path="/hub/guarded?mode=later")
        self.assertNoResult(conn.ready)
        self.open_gate(RefuseConnection(429, "slow down"))
        self.assert_refused(conn, 429, "slow down")

    def test_deferred_accepts(self) -> None:
        """A Deferred from on_connecting that succeeds accepts, not before it fires."""
        conn = self.server.connect(path="/hub/guarded?mode=later")
        self.assertNoResult(conn.ready)
        self.open_gate(None)
        self.assert_accepted(conn)

    def test_async_refuses_at_once(self) -> None:
        """An async def on_connecting that raises RefuseConnection without awaiting refuses (the bug)."""
        self.assert_refused(self.server.connect(path="/hub/async-guarded?mode=refuse"), 401, "async: who are you")

    def test_async_refuses_after_await(self) -> None:
        """An async def on_connecting that awaits and then refuses holds the handshake, then refuses."""
        conn = self.server.connect(path="/hub/async-guarded?mode=wait-refuse")
        self.assertNoResult(conn.ready)
        self.assertEqual(self.server.factory.connection_count, 0)
        self.open_gate(None)
        self.assert_refused(conn, 401, "async: who are you")

    def test_async_awaited_refusal(self) -> None:
        """A RefuseConnection raised by what an async def on_connecting awaits refuses with its status."""
        from twisted_hub import RefuseConnection

        conn = self.server.connect(path="/hub/async-guarded?mode=wait-")
        self.open_gate(RefuseConnection(403, "banned"))
        self.assert_refused(conn, 403, "banned")

    def test_async_accepts_at_once(self) -> None:
        """An async def on_connecting that returns without awaiting accepts."""
        self.assert_accepted(self.server.connect(path="/hub/async-guarded"))

    def test_async_accepts_after_await(self) -> None:
        """An async def on_connecting that awaits and returns accepts, not before it returns."""
        conn = self.server.connect(path="/hub/async-guarded?mode=wait-accept")
        self.assertNoResult(conn.ready)
        self.open_gate(None)
        self.assert_accepted(conn)

    def test_async_crash_is_500(self) -> None:
        """An async def on_connecting that raises something else refuses with 500 and logs it once."""
        self.assert_refused(self.server.connect(path="/hub/async-guarded?mode=crash"), 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ClientResultTests(ServerTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.answers = Answers()
        self.conn = self.connect(receiver=self.answers)

    def test_value(self) -> None:
        """The server awaits a client method's return value."""
        self.assertEqual(self.call(self.conn, "ask", "double", 21), 42)

    def test_deferred_value(self) -> None:
        """A client method returning a Deferred answers when it fires."""
        d = self.conn.client.call("ask", "later")
        self.server.flush()
        self.assertNoResult(d)
        self.answers.pending[0].callback("done")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "done")

    def test_client_hub_error(self) -> None:
        """A HubError raised by the client reaches the server exactly."""
        error = self.call_error(self.conn, "ask", "refuse")
        self.assertEqual(error, HubError("nope", "the client says no", {"why": 1}))

    def test_client_other_error(self) -> None:
        """Another exception in the client gives 'internal' without its text, logged on the client."""
        error = self.call_error(self.conn, "ask", "crash")
        self.assertEqual(error.code, ErrorCode.INTERNAL)
        self.assertNotIn("secret", error.message)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unknown_receiver_method(self) -> None:
        """Asking for a method the client lacks gives 'unknown-method'."""
        self.assertEqual(self.call_error(self.conn, "ask", "missing").code, ErrorCode.UNKNOWN_METHOD)
        self.assertEqual(self.call_error(self.conn, "ask", "_private").code, ErrorCode.UNKNOWN_METHOD)

    def test_default_timeout(self) -> None:
        """A client that never answers times out after the default 5 s, not before."""
        d = self.conn.client.call("ask", "later")
        self.server.advance(4.9)
        self.assertNoResult(d)
        self.server.advance(0.2)
        error = self.failureResultOf(d, HubError).value
        self.assertEqual(error.code, ErrorCode.TIMEOUT)  # type: ignore[attr-defined]
        self.assertTrue(self.conn.client.is_connected)

    def test_explicit_timeout(self) -> None:
        """A per-call timeout replaces the default."""
        d = self.conn.client.call("ask_with_timeout", "later", 1.0)
        self.server.advance(1.01)
        self.assertEqual(self.failureResultOf(d, HubError).value.code, ErrorCode.TIMEOUT)  # type: ignore[attr-defined]

    def test_late_answer_after_timeout_ignored(self) -> None:
        """An answer arriving after the timeout is dropped without breaking the connection."""
        d = self.conn.client.call("ask", "later")
        self.server.advance(6)
        self.failureResultOf(d, HubError)
        self.answers.pending[0].callback("too late")
        self.server.flush()
        self.assertTrue(self.conn.client.is_connected)
        self.assertEqual(self.call(self.conn, "plain", 1), 1)

    def test_server_side_timeout_error_type(self) -> None:
        """On the server the timeout is a CallTimeoutError."""
        hub = self.conn.hub
        d = hub.connection.invoke("later", timeout=2)
        self.server.advance(2.5)
        self.failureResultOf(d, CallTimeoutError)

    def test_client_disconnects(self) -> None:
        """The client disconnecting while the server waits gives ConnectionClosedError."""
        d = self.conn.hub.connection.invoke("later")
        self.server.flush()
        self.conn.client.disconnect()
        self.server.flush()
        self.failureResultOf(d, ConnectionClosedError)

    def test_invoke_after_disconnect(self) -> None:
        """Asking a closed connection fails at once with ConnectionClosedError."""
        hub = self.conn.hub
        self.conn.drop()
        self.server.flush()
        error = self.failureResultOf(hub.connection.invoke("double", 1), ConnectionClosedError).value
        self.assertEqual(error.reason.kind, DisconnectKind.CONNECTION_LOST)  # type: ignore[attr-defined]


class KickTests(ServerTestBase):
    def test_kick_reason_reaches_client(self) -> None:
        """A kicked client's wait_for_disconnect gives KICKED with the server's reason."""
        conn = self.connect()
        waiting = conn.client.wait_for_disconnect()
        call = conn.client.call("kick_me", "spamming")
        self.server.flush()
        self.failureResultOf(call, ConnectionClosedError)  # closed before its result
        reason = self.successResultOf(waiting)
        self.assertEqual((reason.kind, reason.code, reason.message), (DisconnectKind.KICKED, 4000, "spamming"))
        server_reason = self.log.events[-1][1]
        self.assertEqual((server_reason.kind, server_reason.locally), (DisconnectKind.KICKED, True))

    def test_kick_from_outside_a_call(self) -> None:
        """The server can kick a connection outside of any call (e.g. from an admin action)."""
        conn = self.connect()
        conn.hub.connection.kick("maintenance")
        self.server.flush()
        reason = self.successResultOf(conn.client.wait_for_disconnect())
        self.assertEqual((reason.kind, reason.message), (DisconnectKind.KICKED, "maintenance"))
        self.assertTrue(conn.closed)


class KickByIdTests(ServerTestBase):
    def test_kick_another_connection(self) -> None:
        """clients.kick(id) closes that connection with KICKED and its reason; the caller stays connected and gets its result."""
        admin, target, bystander = self.connect(), self.connect(), self.connect()
        waiting = target.client.wait_for_disconnect()
        self.assertIsNone(self.call(admin, "kick", target.client.connection_id, "banned"))
        reason = self.successResultOf(waiting)
        self.assertEqual((reason.kind, reason.code, reason.message), (DisconnectKind.KICKED, 4000, "banned"))
        self.assertTrue(target.closed)
        self.assertTrue(admin.client.is_connected and bystander.client.is_connected)
        disconnected = [e for e in self.log.events if e[0] == "disconnected"]
        self.assertEqual([(e[1].kind, e[1].locally) for e in disconnected], [(DisconnectKind.KICKED, True)])

    def test_kick_self_by_id(self) -> None:
        """Kicking the caller's own id is self.connection.kick(): closed before its result."""
        conn = self.connect()
        call = conn.client.call("kick", conn.client.connection_id, "bye")
        self.server.flush()
        self.failureResultOf(call, ConnectionClosedError)
        self.assertEqual(self.successResultOf(conn.client.wait_for_disconnect()).message, "bye")

    def test_unknown_or_gone_id_is_ignored(self) -> None:
        """An id no connection has (any more) is ignored: nobody is closed, the call answers."""
        admin, gone = self.connect(), self.connect()
        gone_id = gone.client.connection_id
        gone.client.disconnect()
        self.server.flush()
        self.assertIsNone(self.call(admin, "kick", gone_id, "late"))
        self.assertIsNone(self.call(admin, "kick", "no-such-1", "nobody"))
        self.assertTrue(admin.client.is_connected)

    def test_only_this_hub(self) -> None:
        """clients.kick reaches the connections of its own hub only, like every clients.* target."""
        admin, other_hub = self.connect(), self.connect("parallel")
        self.assertIsNone(self.call(admin, "kick", other_hub.client.connection_id, "no"))
        self.assertTrue(other_hub.client.is_connected)

    def test_bad_id_is_an_error_for_the_hub(self) -> None:
        """A connection id that is not a non-empty str raises HubArgumentError in the hub (the caller sees internal)."""
        admin, target = self.connect(), self.connect()
        for bad in (17, "", None):
            error = self.call_error(admin, "kick", bad, "x")
            self.assertEqual(error.code, "internal")
        self.assertTrue(target.client.is_connected)
        errors = self.flushLoggedErrors(HubArgumentError)
        self.assertEqual(len(errors), 3)
        self.assertIn("kick: a connection id is a non-empty str, got 17", str(errors[0].value))


class LimitTests(ServerTestBase):
    def test_max_message_size(self) -> None:
        """A message over max_message_size closes the connection with 1009 (MESSAGE_TOO_BIG)."""
        self.server = HubTestServer([work_hub(self.log)], max_message_size=1000)
        conn = self.connect()
        other = self.connect()
        self.assertEqual(self.call(conn, "plain", b"x" * 900), b"x" * 900)
        d = conn.client.call("deferred", 0)  # stays pending until the connection closes
        # A peer that ignores the limit the server announced in its welcome:
        conn.client.sendMessage(msgpack.packb([2, 99, "plain", [b"x" * 1001]]), isBinary=True)
        self.server.flush()
        self.failureResultOf(d, ConnectionClosedError)
        reason = self.successResultOf(conn.client.wait_for_disconnect())
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.MESSAGE_TOO_BIG, CloseCode.MESSAGE_TOO_BIG))
        self.assertEqual(self.log.events[-1][1].kind, DisconnectKind.MESSAGE_TOO_BIG)
        self.assertEqual(self.call(other, "plain", 1), 1)

    def test_client_respects_announced_limit(self) -> None:
        """The client learns the server's limit from the welcome and refuses a too-big call locally."""
        self.server = HubTestServer([work_hub(self.log)], max_message_size=1000)
        conn = self.connect()
        self.assertEqual(conn.client.core.peer_max_message_size, 1000)
        error = self.call_error(conn, "plain", b"x" * 1001)
        self.assertEqual(error.code, ErrorCode.INVALID_ARGUMENTS)
        self.assertEqual(self.call(conn, "plain", 1), 1)

    def test_batches_split_at_the_client_limit(self) -> None:
        """Messages for a client with a smaller limit leave in frames that fit it; one over it is not sent."""
        conn = self.connect(options=HubClientOptions(max_message_size=1500))
        self.assertEqual(conn.server_protocol.core.peer_max_message_size, 1500)
        conn.client_received.clear()
        pushed = conn.client.call("push_many", 600, 3)  # three 600-byte receiver calls in one handler
        oversized = conn.client.call("big", 2000)  # a 2000-byte result the client could not take
        self.server.flush()
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(self.successResultOf(pushed), 3)
        self.assertGreaterEqual(len(conn.client_received), 2)
        self.assertTrue(all(len(frame) <= 1500 for frame in conn.client_received))
        self.assertEqual(self.failureResultOf(oversized, HubError).value.code, ErrorCode.INTERNAL)

    def test_result_too_big(self) -> None:
        """A result over max_message_size answers 'internal' (logged) instead of breaking the reactor."""
        self.server = HubTestServer([work_hub(self.log)], max_message_size=1000)
        conn = self.connect()
        error = self.call_error(conn, "big", 2000)
        self.assertEqual((error.code, error.message), (ErrorCode.INTERNAL, "the result is too big to send"))
        self.assertEqual(len(self.hub_logs("error")), 1)
        self.assertEqual(self.call(conn, "big", 10), b"x" * 10)

    def test_receiver_call_too_big(self) -> None:
        """A receiver call over max_message_size fails the hub method, not the connection."""
        self.server = HubTestServer([work_hub(self.log)], max_message_size=1000)
        conn = self.connect(receiver=Recorder())
        self.assertEqual(self.call_error(conn, "push_many", 2000, 1).code, ErrorCode.INTERNAL)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertTrue(conn.client.is_connected)

    def test_batches_stay_under_the_limit(self) -> None:
        """Several messages that together exceed max_message_size are sent in several frames."""
        self.server = HubTestServer([work_hub(self.log)], max_message_size=1000)
        recorder = Recorder()
        conn = self.connect(receiver=recorder)
        before = len(conn.client_received)
        self.assertEqual(self.call(conn, "push_many", 600, 3), 3)
        self.assertEqual(len(recorder.calls), 3)
        frames = conn.client_received[before:]
        self.assertGreaterEqual(len(frames), 3)
        self.assertTrue(all(len(f) <= 1000 for f in frames))

    def test_batches_small_messages(self) -> None:
        """Small messages queued together still share one frame."""
        recorder = Recorder()
        conn = self.connect(receiver=recorder)
        before = len(conn.client_received)
        self.assertEqual(self.call(conn, "push_many", 10, 5), 5)
        self.assertEqual(len(conn.client_received) - before, 1)
        self.assertEqual(len(recorder.calls), 5)

    def test_max_pending_calls(self) -> None:
        """Calls beyond max_pending_calls (running + queued) answer 'too-many-pending'."""
        self.server = HubTestServer([work_hub(self.log)], max_pending_calls=3)
        conn = self.connect()
        calls = [conn.client.call("deferred", i) for i in range(5)]
        self.server.flush()
        for d in calls[:3]:
            self.assertNoResult(d)
        for d in calls[3:]:
            self.assertEqual(self.failureResultOf(d, HubError).value.code, ErrorCode.TOO_MANY_PENDING)  # type: ignore[attr-defined]
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertEqual(self.successResultOf(calls[0]), 0)
        self.assertTrue(conn.client.is_connected)
        later = conn.client.call("plain", "again")  # room again
        self.server.flush()
        self.assertNoResult(later)  # queued behind call 1

    def test_max_pending_concurrent(self) -> None:
        """The pending-call limit also holds for concurrent hubs."""
        self.server = HubTestServer([work_hub(self.log, ParallelHub)], max_pending_calls=2)
        conn = self.connect("parallel")
        calls = [conn.client.call("deferred", i) for i in range(3)]
        self.server.flush()
        self.assertEqual(self.failureResultOf(calls[2], HubError).value.code, ErrorCode.TOO_MANY_PENDING)  # type: ignore[attr-defined]
        self.assertNoResult(calls[0])

    def test_limits_must_be_positive(self) -> None:
        """Zero or negative limits are refused when the factory is built."""
        for option in ("max_message_size", "max_outgoing_buffer", "max_pending_calls", "max_messages_per_frame"):
            self.assertRaises(ValueError, HubTestServer, [work_hub(self.log)], **{option: 0})


def notifies(method: str, count: int) -> bytes:
    """One frame payload of C{count} NOTIFYs of C{method}, back to back."""
    return b"".join(msgpack.packb([3, method, [n]]) for n in range(count))


class FrameWorkLimitTests(ServerTestBase):
    """One frame costs bounded work: a message count limit, pending NOTIFYs counted, bounded logging."""

    def setUp(self) -> None:
        super().setUp()
        self.server = HubTestServer([work_hub(self.log), work_hub(self.log, ParallelHub)], max_messages_per_frame=8)

    def info_lines(self) -> list[LogEvent]:
        return [e for e in self.hub_logs() if e["log_level"].name == "info"]

    def test_frame_at_the_limit_runs(self) -> None:
        """A frame with exactly max_messages_per_frame messages runs them all, in order."""
        conn = self.connect()
        conn.client.sendMessage(notifies("record", 8), isBinary=True)
        self.server.flush()
        self.assertEqual([e for e in self.log.events if e[0] == "record"], [("record", n) for n in range(8)])
        self.assertTrue(conn.client.is_connected)

    def test_frame_over_the_limit_closes_1008_and_runs_nothing(self) -> None:
        """One message over the limit: nothing in the frame runs, the client sees 1008, one log line."""
        conn, other = self.connect(), self.connect()
        pending = conn.client.call("deferred", 0)
        self.server.flush()
        conn.client.sendMessage(notifies("record", 9), isBinary=True)
        self.server.flush()
        self.assertEqual([e for e in self.log.events if e[0] == "record"], [])
        reason = self.successResultOf(conn.client.wait_for_disconnect())
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.PROTOCOL_ERROR, CloseCode.POLICY_VIOLATION))
        self.assertIn("more than 8 messages", reason.message)
        self.failureResultOf(pending, ConnectionClosedError)
        server_side = [e[1] for e in self.log.events if e[0] == "disconnected"]
        self.assertEqual([(r.kind, r.code) for r in server_side], [(DisconnectKind.PROTOCOL_ERROR, 1008)])
        lines = self.info_lines()
        self.assertEqual(len(lines), 1, [e["log_format"] for e in lines])
        self.assertIn("more than 8 messages", lines[0]["log_format"].format(**lines[0]))
        self.assertEqual(self.call(other, "plain", "unaffected"), "unaffected")

    def test_client_splits_batches_under_the_default_limit(self) -> None:
        """Our client never puts more than BATCH_MESSAGES messages in a frame, so a server at that limit takes them all."""
        from twisted_hub._core.wire import BATCH_MESSAGES

        self.server = HubTestServer([work_hub(self.log)], max_messages_per_frame=BATCH_MESSAGES)
        conn = self.connect()
        for n in range(2 * BATCH_MESSAGES + 5):
            conn.client.notify("record", n)
        self.server.flush()
        self.assertEqual(len([e for e in self.log.events if e[0] == "record"]), 2 * BATCH_MESSAGES + 5)
        self.assertTrue(conn.client.is_connected)
        self.assertTrue(all(len(list(msgpack.Unpacker(io.BytesIO(f)))) <= BATCH_MESSAGES for f in conn.server_received))

    def test_default_limit(self) -> None:
        """The documented default: 1024 messages per frame."""
        self.assertEqual(HubTestServer([work_hub(self.log)]).factory.max_messages_per_frame, 1024)

    def test_pending_notifies_count_against_max_pending_calls(self) -> None:
        """NOTIFYs still running count like calls: an INVOKE after them gets too-many-pending, more NOTIFYs are dropped."""
        self.server = HubTestServer([work_hub(self.log, ParallelHub)], max_pending_calls=3)
        conn = self.connect("parallel")
        for n in range(3):
            conn.client.notify("deferred", n)
        dropped = conn.client.notify("record", "dropped")
        call = conn.client.call("plain", 1)
        self.server.flush()
        self.assertIsNone(dropped)
        self.assertEqual(self.failureResultOf(call, HubError).value.code, ErrorCode.TOO_MANY_PENDING)  # type: ignore[attr-defined]
        self.assertNotIn(("record", "dropped"), self.log.events)
        lines = self.info_lines()
        self.assertEqual(len(lines), 1)
        self.assertIn("'record' dropped", lines[0]["log_format"].format(**lines[0]))
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertEqual(self.call(conn, "plain", 2), 2)

    def test_peer_mistakes_logged_once_per_second(self) -> None:
        """Failing NOTIFYs log at most one line per connection per second, the next one counting the suppressed."""
        conn = self.connect()
        conn.client.sendMessage(notifies("nope", 8), isBinary=True)
        self.server.flush()
        lines = self.info_lines()
        self.assertEqual(len(lines), 1)
        self.assertNotIn("suppressed", lines[0]["log_format"])
        self.server.advance(0.5)
        conn.client.notify("nope", 1)
        self.server.flush()
        self.assertEqual(len(self.info_lines()), 1)
        self.server.advance(0.5)
        conn.client.notify("nope", 2)
        self.server.flush()
        lines = self.info_lines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[1]["suppressed"], 8)
        self.assertIn("8 similar lines suppressed", lines[1]["log_format"].format(**lines[1]))

    def test_limit_is_per_connection(self) -> None:
        """One connection's noise does not silence another connection's first line."""
        a, b = self.connect(), self.connect()
        a.client.sendMessage(notifies("nope", 8), isBinary=True)
        b.client.notify("nope", 1)
        self.server.flush()
        self.assertEqual(sorted(e["id"] for e in self.info_lines()), sorted([a.client.connection_id, b.client.connection_id]))

    def test_suppressed_count_reported_at_close(self) -> None:
        """Lines still suppressed when the connection closes are counted in one last line."""
        conn = self.connect()
        conn.client.sendMessage(notifies("nope", 5), isBinary=True)
        self.server.flush()
        conn.drop()
        self.server.flush()
        lines = self.info_lines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[1]["suppressed"], 4)

    def test_peer_strings_truncated_in_logs_and_errors(self) -> None:
        """A long method name is cut to 64 characters and repr'd in the log line and the error message."""
        conn = self.connect()
        name = "evil\n" + "x" * 5000
        conn.client.notify(name)
        error = self.call_error(conn, name)
        lines = self.info_lines()
        self.assertEqual(len(lines), 1)
        text = lines[0]["log_format"].format(**lines[0])
        self.assertNotIn("\n", text)
        self.assertIn("'evil\\n" + "x" * 59 + "'... (5005 chars)", text)
        self.assertLess(len(text), 400)
        self.assertEqual(error.code, ErrorCode.UNKNOWN_METHOD)
        self.assertLess(len(error.message), 200)
        self.assertIn("(5005 chars)", error.message)


class BadInputTests(ServerTestBase):
    def send_raw(self, payload: bytes, binary: bool = True) -> tuple[TestConnection, TestConnection]:
        """Open two connections, send raw bytes on the first; return both."""
        bad, good = self.connect(), self.connect()
        pending = bad.client.call("deferred", 0)
        bad.client.sendMessage(payload, isBinary=binary)
        self.server.flush()
        self.failureResultOf(pending, ConnectionClosedError)
        return bad, good

    def check_closed(self, bad: TestConnection, good: TestConnection, code: int) -> None:
        reason = self.successResultOf(bad.client.wait_for_disconnect())
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.PROTOCOL_ERROR, code))
        self.assertTrue(bad.closed)
        server_reason = [e[1] for e in self.log.events if e[0] == "disconnected"]
        self.assertEqual([(r.kind, r.code) for r in server_reason], [(DisconnectKind.PROTOCOL_ERROR, code)])
        lines = [e for e in self.hub_logs() if e["log_level"].name != "debug"]
        self.assertEqual(len(lines), 1, [e["log_format"] for e in lines])
        self.assertNotIn("log_failure", lines[0])
        self.assertEqual(self.call(good, "plain", "still fine"), "still fine")
        self.assertTrue(good.client.is_connected)

    def test_malformed_msgpack(self) -> None:
        """Bytes that are not msgpack close that connection with 4002 and one log line."""
        bad, good = self.send_raw(b"\xc1\xc1")
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_truncated_msgpack(self) -> None:
        """A truncated msgpack value closes that connection with 4002."""
        bad, good = self.send_raw(msgpack.packb([2, 1, "plain", [b"x" * 50]])[:-10])
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_wrong_shape(self) -> None:
        """A msgpack value that is not a message array closes that connection with 4002."""
        bad, good = self.send_raw(msgpack.packb({"kind": 2}))
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_wrong_field_types(self) -> None:
        """An invoke with a non-integer call id closes that connection with 4002."""
        bad, good = self.send_raw(msgpack.packb([2, "one", "plain", []]))
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_unknown_kind(self) -> None:
        """An unknown message kind closes that connection with 4002."""
        bad, good = self.send_raw(msgpack.packb([99, 1]))
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_client_only_kind(self) -> None:
        """A server-to-client kind sent by a client (welcome) closes with 4002."""
        bad, good = self.send_raw(msgpack.packb([1, {"caps": [], "id": "x"}]))
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)

    def test_text_frame(self) -> None:
        """A text frame closes that connection with 1003 and one log line."""
        bad, good = self.send_raw(b"[2, 1, \"plain\", []]", binary=False)
        self.check_closed(bad, good, CloseCode.UNSUPPORTED_DATA)

    def test_hello_twice(self) -> None:
        """A second hello closes that connection with 4002."""
        bad, good = self.send_raw(msgpack.packb([0, {"caps": []}]))
        self.check_closed(bad, good, CloseCode.PROTOCOL_ERROR)


class HelloDeadlineTests(ServerTestBase):
    def test_silent_client_closed_after_hello_timeout(self) -> None:
        """A client that opens the WebSocket but never says hello is closed with 4003 after hello_timeout."""

        class Mute(HubClientProtocol):
            def onOpen(self) -> None:
                pass  # never sends hello

        conn = self.server.connect("work", client_protocol=Mute)
        self.server.advance(9.9)
        self.assertFalse(conn.closed)
        self.server.advance(0.1)
        reason = self.successResultOf(conn.client.wait_for_disconnect())
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.HANDSHAKE_FAILED, CloseCode.HANDSHAKE_FAILED))
        self.assertTrue(conn.closed)

    def test_hello_cancels_the_deadline(self) -> None:
        """A normal client is not affected by the hello deadline, and leaves no timer behind."""
        conn = self.connect()
        self.server.advance(60)
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(self.server.clock.getDelayedCalls(), [])


class AnswerOrderTests(SynchronousTestCase):
    def test_answers_in_a_batch_keep_the_order_of_the_messages(self) -> None:
        """For [INVOKE 101, NOTIFY, INVOKE 102, CLIENT_HEARTBEAT 77, INVOKE 103]: hb 77 first (urgent), then 101, 102, 103."""
        from twisted_hub._core.wire import ClientHeartbeat, Invoke, Notify, decode_frame, encode

        server = HubTestServer([EchoOrderHub])
        conn = server.connect("echoorder")
        server.flush()
        conn.server_received.clear()
        conn.client_received.clear()
        frame = b"".join(
            encode(m) for m in (
                Invoke(101, "echo", [1], None), Notify("echo", [2], None), Invoke(102, "echo", [3], None),
                ClientHeartbeat(77, 123), Invoke(103, "echo", [4], None),
            )
        )
        conn.client.sendMessage(frame, isBinary=True)
        server.flush()
        messages = [m for p in conn.client_received for m in decode_frame(p)]
        answers = [(m.kind, getattr(m, "call_id", getattr(m, "sequence", None))) for m in messages]
        self.assertEqual(answers, [(12, 77), (4, 101), (4, 102), (4, 103)])
        # The heartbeat answer in a frame of its own, the results batched in call order.
        self.assertEqual([len(decode_frame(p)) for p in conn.client_received], [1, 3])


class EchoOrderHub(twisted_hub.Hub):
    hub_name = "echoorder"

    @twisted_hub.method
    def echo(self, value: Any) -> Any:
        return value


class WholeFrameTests(SynchronousTestCase):
    def test_an_invalid_message_after_valid_ones_runs_none_of_them(self) -> None:
        """[INVOKE, then a message invalid in this direction] closes with 4002 and the INVOKE never runs."""
        from twisted_hub._core.wire import Invoke, ReceiverCall, encode

        calls: list[int] = []

        class CountingHub(twisted_hub.Hub):
            hub_name = "counting"

            @twisted_hub.method
            def count(self) -> int:
                calls.append(1)
                return len(calls)

        server = HubTestServer([CountingHub])
        conn = server.connect("counting")
        frame = encode(Invoke(1, "count", [], None)) + encode(ReceiverCall("x", [], None))
        conn.client.sendMessage(frame, isBinary=True)
        server.flush()
        self.assertEqual(calls, [])
        reason = conn.server_protocol.disconnect_reason
        assert reason is not None
        self.assertEqual(reason.code, 4002)
