"""
The client adapter on a Clock with in-memory transports: calls, receivers,
disconnect reasons and what happens to calls around a disconnect.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_hub import (
    CallTimeoutError,
    ConnectionClosedError,
    ConnectTimeoutError,
    DisconnectKind,
    HandshakeError,
    HubClientOptions,
    HubError,
    connect,
)
from twisted_hub.testing import HubTestServer, TestConnection
from twisted_hub.types import CloseCode, DisconnectReason, HubClientProtocol, HubServerProtocol

from .helpers.hubs import GuardLog, Recorder, WorkLog, guarded_hub, hub_events, work_hub


class ClientTestBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = WorkLog()
        self.guard = GuardLog()
        self.server = HubTestServer([work_hub(self.log), guarded_hub(self.guard)])
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def connect(self, receiver: object | None = None, options: HubClientOptions | None = None) -> TestConnection:
        conn = self.server.connect("work", receiver=receiver, options=options)
        self.successResultOf(conn.ready)
        return conn

    def reason(self, conn: TestConnection) -> DisconnectReason:
        return self.successResultOf(conn.client.wait_for_disconnect())

    def hub_logs(self) -> list[LogEvent]:
        return hub_events(list(self.logs))


class CallTests(ClientTestBase):
    def test_ready_fires_with_client(self) -> None:
        """ready fires with the connected client, which knows its connection id."""
        conn = self.server.connect("work")
        client = self.successResultOf(conn.ready)
        self.assertIs(client, conn.client)
        self.assertTrue(client.is_connected)
        self.assertTrue(client.connection_id)

    def test_call_and_notify(self) -> None:
        """call returns the result; notify runs the method and returns nothing."""
        conn = self.connect()
        d = conn.client.call("add", 1, 2, scale=3)
        self.assertIsNone(conn.client.notify("record", "n"))
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 9)
        self.assertIn(("record", "n"), self.log.events)

    def test_invoke_explicit(self) -> None:
        """invoke takes argument containers explicitly."""
        conn = self.connect()
        d = conn.client.invoke("add", [1], {"b": 4})
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 5)

    def test_bad_arguments_fail_the_call_not_the_connection(self) -> None:
        """Unencodable or oversized arguments fail that call with invalid-arguments; the connection lives."""
        conn = self.connect(options=HubClientOptions(max_message_size=1000))
        unencodable = conn.client.call("add", object())
        oversized = conn.client.call("add", b"x" * 2000)
        self.assertEqual(self.failureResultOf(unencodable, HubError).value.code, "invalid-arguments")
        self.assertIn("message limit", self.failureResultOf(oversized, HubError).value.message)
        d = conn.client.call("add", 1, 2)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(conn.client.core.pending_count, 0)

    def test_many_calls_match_their_results(self) -> None:
        """Many calls in flight each get their own result."""
        conn = self.connect()
        calls = [conn.client.call("plain", i) for i in range(50)]
        self.server.flush()
        self.assertEqual([self.successResultOf(d) for d in calls], list(range(50)))

    def test_call_timeout(self) -> None:
        """With call_timeout set, an unanswered call fails with CallTimeoutError on the Clock."""
        conn = self.connect(options=HubClientOptions(call_timeout=2.0))
        d = conn.client.call("deferred", 1)
        self.server.advance(1.9)
        self.assertNoResult(d)
        self.server.advance(0.2)
        self.failureResultOf(d, CallTimeoutError)
        self.assertTrue(conn.client.is_connected)

    def test_per_call_timeout_and_late_answer(self) -> None:
        """A per-call timeout applies, and the late answer is ignored without harm."""
        conn = self.connect()
        d = conn.client.invoke("deferred", [1], timeout=1.0)
        self.server.advance(1.5)
        self.assertEqual(self.failureResultOf(d, HubError).value.code, "timeout")  # type: ignore[attr-defined]
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertTrue(conn.client.is_connected)
        self.assertEqual(self.successResultOf(self._call(conn, "plain", 2)), 2)

    def test_no_timeout_by_default(self) -> None:
        """Without call_timeout a call waits as long as the connection lives."""
        conn = self.connect()
        d = conn.client.call("deferred", 1)
        self.server.advance(3600)
        self.assertNoResult(d)

    def test_cancel_a_call(self) -> None:
        """Cancelling a call's Deferred forgets it; the later answer is ignored."""
        conn = self.connect()
        d = conn.client.call("deferred", 1)
        self.server.flush()
        d.cancel()
        self.failureResultOf(d)
        self.log.pending[0].callback(None)
        self.server.flush()
        self.assertTrue(conn.client.is_connected)

    def _call(self, conn: TestConnection, method: str, *args: Any) -> Any:
        d = conn.client.call(method, *args)
        self.server.flush()
        return d


class ReceiverTests(ClientTestBase):
    def test_receiver_called(self) -> None:
        """Server receiver calls reach the receiver object's methods with their arguments."""
        recorder = Recorder()
        conn = self.connect(receiver=recorder)
        self.successResultOf(self._call(conn, "to_caller", "hello"))
        self.assertEqual(recorder.calls, [("said", ("hello",))])

    def test_missing_receiver_method_is_logged(self) -> None:
        """A receiver call the receiver lacks is logged and does not break the connection."""
        conn = self.connect(receiver=object())
        self.successResultOf(self._call(conn, "to_caller", "hello"))
        self.assertTrue(conn.client.is_connected)
        warnings = [e for e in self.hub_logs() if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["method"], "'said'")

    def test_receiver_raising_is_logged(self) -> None:
        """A receiver method that raises is logged; the connection keeps working."""

        class Broken:
            def said(self, text: str) -> None:
                raise ValueError(text)

        conn = self.connect(receiver=Broken())
        self.successResultOf(self._call(conn, "to_caller", "boom"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.successResultOf(self._call(conn, "plain", 1)), 1)

    def test_no_receiver(self) -> None:
        """A client without a receiver survives receiver calls."""
        conn = self.connect()
        self.successResultOf(self._call(conn, "to_caller", "x"))
        self.assertTrue(conn.client.is_connected)

    def _call(self, conn: TestConnection, method: str, *args: Any) -> Any:
        d = conn.client.call(method, *args)
        self.server.flush()
        return d


class DisconnectTests(ClientTestBase):
    def test_disconnect_normal(self) -> None:
        """disconnect() fires with NORMAL (locally) and the server sees NORMAL too."""
        conn = self.connect()
        d = conn.client.disconnect("done")
        self.server.flush()
        reason = self.successResultOf(d)
        self.assertEqual((reason.kind, reason.code, reason.locally), (DisconnectKind.NORMAL, CloseCode.NORMAL, True))
        self.assertEqual(self.log.events[-1][1].kind, DisconnectKind.NORMAL)
        self.assertTrue(conn.closed)
        self.assertFalse(conn.client.is_connected)

    def test_disconnect_twice(self) -> None:
        """A second disconnect() gives the same reason and does nothing else."""
        conn = self.connect()
        first = conn.client.disconnect()
        second = conn.client.disconnect()
        self.server.flush()
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual(self.successResultOf(conn.client.disconnect()).kind, DisconnectKind.NORMAL)

    def test_wait_after_disconnect(self) -> None:
        """wait_for_disconnect after the end fires at once with the same reason."""
        conn = self.connect()
        conn.client.disconnect()
        self.server.flush()
        self.assertEqual(self.reason(conn).kind, DisconnectKind.NORMAL)

    def test_pending_calls_fail_at_once(self) -> None:
        """On disconnect every pending call fails at once with ConnectionClosedError carrying the reason."""
        conn = self.connect()
        calls = [conn.client.call("deferred", i) for i in range(3)]
        self.server.flush()
        conn.drop()
        for d in calls:
            error = self.failureResultOf(d, ConnectionClosedError).value
            self.assertEqual(error.reason.kind, DisconnectKind.CONNECTION_LOST)  # type: ignore[attr-defined]
            self.assertEqual(error.code, "disconnected")  # type: ignore[attr-defined]

    def test_pending_calls_fail_on_own_disconnect(self) -> None:
        """Calls pending when we call disconnect() fail once the connection is closed."""
        conn = self.connect()
        d = conn.client.call("deferred", 1)
        self.server.flush()
        conn.client.disconnect()
        self.server.flush()
        self.assertEqual(
            self.failureResultOf(d, ConnectionClosedError).value.reason.kind,  # type: ignore[attr-defined]
            DisconnectKind.NORMAL,
        )

    def test_calls_after_disconnect_fail_at_once(self) -> None:
        """call after the end fails at once (no flush needed), notify raises."""
        conn = self.connect()
        conn.client.disconnect()
        self.server.flush()
        error = self.failureResultOf(conn.client.call("plain", 1), ConnectionClosedError).value
        self.assertEqual(error.reason.kind, DisconnectKind.NORMAL)  # type: ignore[attr-defined]
        self.assertRaises(ConnectionClosedError, conn.client.notify, "record", 1)

    def test_calls_while_closing_fail_at_once(self) -> None:
        """A call made after disconnect() but before the close completes fails at once."""
        conn = self.connect()
        conn.client.disconnect()
        self.failureResultOf(conn.client.call("plain", 1), ConnectionClosedError)

    def test_kicked(self) -> None:
        """A kicked client's reason is KICKED with the server's text."""
        conn = self.connect()
        conn.hub.connection.kick("bye now")
        self.server.flush()
        reason = self.reason(conn)
        self.assertEqual((reason.kind, reason.code, reason.message, reason.locally),
                         (DisconnectKind.KICKED, CloseCode.KICKED, "bye now", False))

    def test_server_protocol_error(self) -> None:
        """Garbage from the server gives PROTOCOL_ERROR (4002, decided locally) and one log line."""
        conn = self.connect()
        conn.server_protocol.sendMessage(b"\xc1", isBinary=True)
        self.server.flush()
        reason = self.reason(conn)
        self.assertEqual((reason.kind, reason.code, reason.locally),
                         (DisconnectKind.PROTOCOL_ERROR, CloseCode.PROTOCOL_ERROR, True))
        self.assertEqual(self.log.events[-1][1].kind, DisconnectKind.PROTOCOL_ERROR)
        self.assertEqual(len([e for e in self.hub_logs() if e["log_level"].name == "info"]), 1)

    def test_server_unknown_kind(self) -> None:
        """A message kind the client does not accept (an invoke) is a protocol error."""
        conn = self.connect()
        conn.server_protocol.sendMessage(msgpack.packb([2, 1, "x", []]), isBinary=True)
        self.server.flush()
        self.assertEqual(self.reason(conn).kind, DisconnectKind.PROTOCOL_ERROR)

    def test_server_text_frame(self) -> None:
        """A text frame from the server closes with 1003 (PROTOCOL_ERROR)."""
        conn = self.connect()
        conn.server_protocol.sendMessage(b"hello", isBinary=False)
        self.server.flush()
        reason = self.reason(conn)
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.PROTOCOL_ERROR, CloseCode.UNSUPPORTED_DATA))

    def test_connection_lost(self) -> None:
        """A broken link gives CONNECTION_LOST without a close code."""
        conn = self.connect()
        waiting = conn.client.wait_for_disconnect()
        conn.drop()
        reason = self.successResultOf(waiting)
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.CONNECTION_LOST, None))

    def test_going_away(self) -> None:
        """factory.close_all() gives every client GOING_AWAY (1001)."""
        conns = [self.connect(), self.connect()]
        self.assertEqual(self.server.factory.close_all(), 2)
        self.server.flush()
        for conn in conns:
            reason = self.reason(conn)
            self.assertEqual((reason.kind, reason.code), (DisconnectKind.GOING_AWAY, CloseCode.GOING_AWAY))
        self.assertEqual(self.server.factory.connection_count, 0)

    def test_normal_close_from_server(self) -> None:
        """A server closing with 1000 gives the client NORMAL, not decided locally."""
        conn = self.connect()
        conn.server_protocol.sendClose(1000, "done")
        self.server.flush()
        reason = self.reason(conn)
        self.assertEqual((reason.kind, reason.locally), (DisconnectKind.NORMAL, False))

    def test_message_too_big_from_server(self) -> None:
        """A server that ignores the client's announced limit and sends more gets closed with MESSAGE_TOO_BIG."""
        conn = self.connect(options=HubClientOptions(max_message_size=1000))
        conn.server_protocol.core.peer_max_message_size = None  # a server that ignores the hello's "max"
        d = conn.client.call("big", 2000)
        self.server.flush()
        self.failureResultOf(d, ConnectionClosedError)
        self.assertEqual(self.reason(conn).kind, DisconnectKind.MESSAGE_TOO_BIG)

    def test_message_too_big_ends_without_waiting_for_the_server(self) -> None:
        """After autobahn's 1009 the client closes TCP once its close frame is out: a server that never answers holds nothing."""
        conn = self.connect(options=HubClientOptions(max_message_size=1000))
        conn.server_protocol.core.peer_max_message_size = None  # a server that ignores the hello's "max"
        d = conn.client.call("big", 2000)
        conn.pump()  # the call reaches the server, which answers
        conn.pump()  # the answer reaches the client: 1009
        conn.freeze_server()  # the server reads nothing more: it never answers the close
        self.server.flush()
        reason = self.reason(conn)
        self.assertEqual((reason.kind, reason.code, reason.locally), (DisconnectKind.MESSAGE_TOO_BIG, 1009, True))
        self.assertEqual(self.failureResultOf(d, ConnectionClosedError).value.reason, reason)  # type: ignore[attr-defined]
        self.assertTrue(conn.client_transport.disconnected)
        self.assertEqual(self.server.clock.getDelayedCalls(), [])  # the abort timer went with the connection

    def test_server_close_held_open_is_aborted(self) -> None:
        """The client answers the server's close frame and aborts TCP 1 s later if the server never closes it."""
        conn = self.connect()
        conn.server_protocol.sendClose(4000, "bye")
        conn.pump()  # the close frame reaches the client, which answers it
        conn.freeze_server()  # the server never reads the answer, so never ends TCP
        waiting = conn.client.wait_for_disconnect()
        self.server.advance(0.999)
        self.assertNoResult(waiting)
        self.server.advance(0.001)
        reason = self.successResultOf(waiting)
        self.assertEqual((reason.kind, reason.code, reason.locally), (DisconnectKind.KICKED, 4000, False))
        self.assertTrue(conn.client_transport.disconnected)

    def test_connection_ended_callback(self) -> None:
        """The factory's on_connection_ended hook is told the reason."""
        conn = self.connect()
        seen: list[DisconnectReason] = []
        conn.client.factory.on_connection_ended = lambda protocol, reason: seen.append(reason)
        conn.drop()
        self.assertEqual([r.kind for r in seen], [DisconnectKind.CONNECTION_LOST])


class ClientFrameLimitTests(ClientTestBase):
    """A frame from the server with more messages than the client accepts is refused whole."""

    def receiver_calls(self, count: int) -> bytes:
        return b"".join(msgpack.packb([6, "said", [n]]) for n in range(count))

    def test_at_the_limit_runs(self) -> None:
        """A frame of exactly max_messages_per_frame receiver calls reaches the receiver whole."""
        recorder = Recorder()
        conn = self.connect(receiver=recorder, options=HubClientOptions(max_messages_per_frame=4))
        conn.server_protocol.sendMessage(self.receiver_calls(4), isBinary=True)
        self.server.flush()
        self.assertEqual(recorder.calls, [("said", (n,)) for n in range(4)])
        self.assertTrue(conn.client.is_connected)

    def test_over_the_limit_closes_1008(self) -> None:
        """One more: no receiver call runs, the client closes with 1008 and reports a protocol error."""
        recorder = Recorder()
        conn = self.connect(receiver=recorder, options=HubClientOptions(max_messages_per_frame=4))
        conn.server_protocol.sendMessage(self.receiver_calls(5), isBinary=True)
        self.server.flush()
        self.assertEqual(recorder.calls, [])
        reason = self.reason(conn)
        self.assertEqual((reason.kind, reason.code, reason.locally), (DisconnectKind.PROTOCOL_ERROR, 1008, True))
        self.assertIn("more than 4 messages", reason.message)

    def test_default_and_validation(self) -> None:
        """The default is 1024 messages per frame; zero is refused."""
        self.assertEqual(HubClientOptions().max_messages_per_frame, 1024)
        self.assertRaises(ValueError, HubClientOptions, max_messages_per_frame=0)


class ChatReceiver(Protocol):
    """The receiver interface both sides agree on: only said()."""

    def said(self, *args: Any) -> None: ...


class Exposed(Recorder):
    """A receiver with more public methods than its interface declares, plus private ones."""

    not_a_method = 42

    def shutdown(self, *args: Any) -> str:
        self.calls.append(("shutdown", args))
        return "shut down"

    def _hidden(self) -> str:
        self.calls.append(("_hidden", ()))
        return "hidden"


class ReceiverInterfaceTests(ClientTestBase):
    """With receiver_interface only its methods may be called; without, any public callable of the receiver."""

    def _call(self, conn: TestConnection, method: str, *args: Any) -> Any:
        d = conn.client.call(method, *args)
        self.server.flush()
        return d

    def declared(self) -> tuple[TestConnection, Exposed]:
        receiver = Exposed()
        conn = self.server.connect("work", receiver=receiver, receiver_interface=ChatReceiver)
        self.successResultOf(conn.ready)
        return conn, receiver

    def test_declared_method_callable_both_ways(self) -> None:
        """A method the interface declares works as a receiver call and as a client result."""
        conn, receiver = self.declared()
        self.successResultOf(self._call(conn, "call_receiver", "said", "hi"))
        self.assertIsNone(self.successResultOf(self._call(conn, "ask", "said", "there")))
        self.assertEqual(receiver.calls, [("said", ("hi",)), ("said", ("there",))])

    def test_undeclared_client_result_is_unknown_method(self) -> None:
        """A client-result call of a public but undeclared method answers unknown-method and does not run it."""
        conn, receiver = self.declared()
        failure = self.failureResultOf(self._call(conn, "ask", "shutdown"), HubError)
        self.assertEqual(failure.value.code, "unknown-method")  # type: ignore[attr-defined]
        self.assertEqual(receiver.calls, [])
        self.assertTrue(conn.client.is_connected)

    def test_undeclared_receiver_call_is_logged_not_run(self) -> None:
        """A receiver call of an undeclared method is not run; one warning says the interface does not declare it."""
        conn, receiver = self.declared()
        self.successResultOf(self._call(conn, "call_receiver", "shutdown", "now"))
        self.assertEqual(receiver.calls, [])
        warnings = [e for e in self.hub_logs() if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["method"], warnings[0]["lacks"]), ("'shutdown'", "interface does not declare"))

    def test_without_interface_any_public_callable(self) -> None:
        """Without an interface every public callable of the receiver may be called, nothing private or non-callable."""
        receiver = Exposed()
        conn = self.connect(receiver=receiver)
        self.assertEqual(self.successResultOf(self._call(conn, "ask", "shutdown", 1)), "shut down")
        for name in ("_hidden", "not_a_method", "__class__"):
            failure = self.failureResultOf(self._call(conn, "ask", name), HubError)
            self.assertEqual(failure.value.code, "unknown-method")  # type: ignore[attr-defined]
        self.successResultOf(self._call(conn, "call_receiver", "not_a_method"))
        self.assertEqual(receiver.calls, [("shutdown", (1,))])

    def test_server_mistakes_logged_once_per_second(self) -> None:
        """Unknown receiver calls log at most one line per second; the next one counts the suppressed."""
        conn, receiver = self.declared()
        for _ in range(5):
            self.successResultOf(self._call(conn, "call_receiver", "shutdown"))
        self.assertEqual(len([e for e in self.hub_logs() if e["log_level"].name == "warn"]), 1)
        self.server.advance(1.0)
        self.successResultOf(self._call(conn, "call_receiver", "x" * 500))
        warnings = [e for e in self.hub_logs() if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[1]["suppressed"], 4)
        self.assertLess(len(warnings[1]["method"]), 100)


class HandshakeTests(ClientTestBase):
    def test_refused(self) -> None:
        """A refused handshake fails ready with HandshakeError(status) and HANDSHAKE_FAILED."""
        conn = self.server.connect(path="/hub/guarded?mode=refuse")
        error = self.failureResultOf(conn.ready, HandshakeError).value
        self.assertEqual(error.status, 401)  # type: ignore[attr-defined]
        self.assertEqual(self.reason(conn).kind, DisconnectKind.HANDSHAKE_FAILED)
        self.failureResultOf(conn.client.call("hello"), ConnectionClosedError)

    def test_refused_str(self) -> None:
        """HandshakeError's text names the status and the server's reason."""
        conn = self.server.connect("nothing-here")
        error = self.failureResultOf(conn.ready, HandshakeError).value
        self.assertIn("404", str(error))
        self.assertIn("no hub named 'nothing-here'", str(error))

    def test_call_before_ready_fails(self) -> None:
        """A call made before the hub handshake is done fails at once."""
        conn = self.server.connect(path="/hub/guarded?mode=later")
        self.assertNoResult(conn.ready)
        self.failureResultOf(conn.client.call("hello"), ConnectionClosedError)
        assert self.guard.gate is not None
        self.guard.gate.callback(None)
        self.server.flush()
        self.successResultOf(conn.ready)


class WorkApi(Protocol):
    """The client's typed view of WorkHub (only what these tests use)."""

    def add(self, a: int, b: int = 0, scale: int = 1) -> Deferred[int]: ...

    def plain(self, value: Any) -> Deferred[Any]: ...


class ProxyTests(ClientTestBase):
    def test_typed_proxy_calls_the_hub(self) -> None:
        """proxy(Interface) methods are hub calls with positional and keyword arguments."""
        conn = self.connect()
        work = conn.client.proxy(WorkApi)
        first, second = work.add(1, 2), work.add(1, b=2, scale=10)
        self.server.flush()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (3, 30))

    def test_undeclared_method_is_refused_locally(self) -> None:
        """A name the interface does not declare raises AttributeError and sends nothing."""
        conn = self.connect()
        work = conn.client.proxy(WorkApi)
        conn.server_received.clear()
        with self.assertRaises(AttributeError):
            work.record  # noqa: B018 - the attribute access itself is the test
        self.server.flush()
        self.assertEqual(conn.server_received, [])

    def test_untyped_proxy_allows_any_name(self) -> None:
        """Without an interface any public name is a call; the server answers unknown ones."""
        conn = self.connect()
        anything = conn.client.proxy()
        known, unknown = anything.plain("x"), anything.nope()
        self.server.flush()
        self.assertEqual(self.successResultOf(known), "x")
        self.assertEqual(self.failureResultOf(unknown, HubError).value.code, "unknown-method")


class MuteServerProtocol(HubServerProtocol):
    """A server that completes the WebSocket upgrade and then never sends WELCOME (nor reads HELLO)."""

    def onOpen(self) -> None:
        pass

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass


class SocketLikeTransport(StringTransport):
    """A StringTransport that, like Twisted's TCP transports, lets a protocol unregister no producer."""

    def unregisterProducer(self) -> None:
        self.producer = None


@implementer(IStreamClientEndpoint)
class SilentEndpoint:
    """
    Either never connects (C{connects=False}: the TCP connect hangs, its
    cancellation recorded), or connects to a transport that never answers.
    """

    def __init__(self, connects: bool) -> None:
        self.connects = connects
        self.cancelled = 0
        self.transport = SocketLikeTransport()
        self.protocol: HubClientProtocol | None = None

    def connect(self, factory: Any) -> Deferred[Any]:
        if not self.connects:

            def cancel(d: Deferred[Any]) -> None:
                self.cancelled += 1

            return Deferred(cancel)
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.protocol.makeConnection(self.transport)  # type: ignore[union-attr]
        return succeed(self.protocol)


class ConnectTimeoutTests(SynchronousTestCase):
    """connect(timeout=...) covers the TCP connection, the WebSocket upgrade and the WELCOME."""

    def test_tcp_connect_hangs(self) -> None:
        """A TCP connect that never completes fails with ConnectTimeoutError('connection') and is cancelled."""
        clock = Clock()
        endpoint = SilentEndpoint(connects=False)
        d = connect("ws://127.0.0.1/hub", "work", clock=clock, endpoint=endpoint, timeout=3)
        clock.advance(2.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        error = self.failureResultOf(d, ConnectTimeoutError).value
        self.assertEqual((error.stage, error.seconds), ("connection", 3))  # type: ignore[attr-defined]
        self.assertEqual(endpoint.cancelled, 1)

    def test_upgrade_never_answered(self) -> None:
        """A server that accepts TCP and never answers the upgrade: ConnectTimeoutError('upgrade'), socket closed."""
        clock = Clock()
        endpoint = SilentEndpoint(connects=True)
        d = connect("ws://127.0.0.1/hub", "work", clock=clock, endpoint=endpoint, timeout=3)
        self.assertIn(b"Upgrade: WebSocket", endpoint.transport.value())
        clock.advance(3)
        error = self.failureResultOf(d, ConnectTimeoutError).value
        self.assertIsInstance(error, HandshakeError)
        self.assertEqual(error.stage, "upgrade")  # type: ignore[attr-defined]
        self.assertIn("WebSocket upgrade within 3s", str(error))
        self.assertTrue(endpoint.transport.disconnecting)

    def test_welcome_never_sent(self) -> None:
        """A server that upgrades and never sends WELCOME: ConnectTimeoutError('welcome'), the socket closed."""
        server = HubTestServer([work_hub(WorkLog())])
        server.factory.protocol = MuteServerProtocol
        d = connect("ws://127.0.0.1/hub", "work", clock=server.clock, endpoint=server.endpoint(), timeout=3)
        (conn,) = server.connections
        server.flush()  # the endpoint reports the connection before the upgrade, as TCP does
        self.assertEqual(conn.client.state, conn.client.STATE_OPEN)  # upgraded
        server.advance(2.9)
        self.assertNoResult(d)
        server.advance(0.1)
        error = self.failureResultOf(d, ConnectTimeoutError).value
        self.assertEqual(error.stage, "welcome")  # type: ignore[attr-defined]
        self.assertTrue(conn.closed)
        reason = self.successResultOf(conn.client.wait_for_disconnect())
        self.assertEqual(reason.kind, DisconnectKind.HANDSHAKE_FAILED)
        self.assertIn("welcome", reason.message)
        self.assertEqual(server.factory.connection_count, 0)

    def test_timer_gone_after_success(self) -> None:
        """A handshake that completes in time leaves no timer behind: the client stays connected past the timeout."""
        server = HubTestServer([work_hub(WorkLog())])
        d = connect("ws://127.0.0.1/hub", "work", clock=server.clock, endpoint=server.endpoint(), timeout=3)
        server.flush()
        client = self.successResultOf(d)
        server.advance(10)
        self.assertTrue(client.is_connected)
        self.assertEqual(client.handshake_stage, "done")


class ReconnectingHandshakeTimeoutTests(SynchronousTestCase):
    def test_mute_server_does_not_hang_the_reconnecting_client(self) -> None:
        """ReconnectingHubClient gives up a handshake without WELCOME after handshake_timeout, closes it and retries."""
        from twisted_hub import ReconnectingHubClient

        server = HubTestServer([work_hub(WorkLog())])
        server.factory.protocol = MuteServerProtocol
        endpoint = server.endpoint()
        client = ReconnectingHubClient(
            "ws://127.0.0.1/hub", "work", endpoint=endpoint, clock=server.clock,
            handshake_timeout=5, retry_policy=lambda attempt: 1.0,
        )
        client.start()
        first = client.when_connected(fail_after_failures=1)
        server.advance(4.9)
        self.assertNoResult(first)
        server.advance(0.1)
        error = self.failureResultOf(first, ConnectTimeoutError).value
        self.assertEqual(error.stage, "welcome")  # type: ignore[attr-defined]
        self.assertTrue(server.connections[0].closed)
        # it keeps trying, once a second after each 5 s attempt, closing each one
        server.advance(1.0 + 5.0)
        self.assertEqual(endpoint.attempts, 2)
        self.assertTrue(server.connections[1].closed)
        # a server that answers again is used at the next attempt
        server.factory.protocol = HubServerProtocol
        server.advance(1.0)
        connected = self.successResultOf(client.when_connected())
        self.assertTrue(connected.is_connected)
        self.assertEqual(list(client.disconnects), [])
        stopped = client.stop()
        server.flush()
        self.successResultOf(stopped)

    def test_refused_handshakes_are_failed_attempts(self) -> None:
        """A refusing server: each refusal is a failed attempt (backoff grows), nothing raises, a later accept connects."""
        from twisted_hub import ReconnectingHubClient

        server = HubTestServer([guarded_hub(GuardLog())])
        endpoint = server.endpoint()
        delays: list[int] = []
        client = ReconnectingHubClient(
            "ws://127.0.0.1/hub/guarded?mode=refuse", endpoint=endpoint, clock=server.clock,
            retry_policy=lambda attempt: delays.append(attempt) or float(attempt),
        )
        first = client.when_connected(fail_after_failures=1)
        client.start()
        server.flush()
        self.assertEqual(self.failureResultOf(first, HandshakeError).value.status, 401)  # type: ignore[attr-defined]
        server.advance(1.0 + 2.0)
        self.assertEqual((endpoint.attempts, delays), (3, [1, 2, 3]))
        self.assertTrue(all(c.closed for c in server.connections))
        self.assertEqual(list(client.disconnects), [])
        self.successResultOf(client.stop())


class EndpointForTests(SynchronousTestCase):
    """
    C{endpoint_for}: an IP address is connected to directly; a host name is
    resolved (a resolver thread per connection cost more than the rest of
    opening one to 127.0.0.1: docs/performance.md, "Connection opening with
    each library's own client").
    """

    def test_ip_addresses_skip_name_resolution(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
        from twisted.internet.task import Clock

        from twisted_hub._twisted.client import endpoint_for

        v4 = endpoint_for("ws://127.0.0.1:8080/hub", Clock())
        self.assertIsInstance(v4, TCP4ClientEndpoint)
        self.assertEqual((v4._host, v4._port), ("127.0.0.1", 8080))
        v6 = endpoint_for("ws://[::1]/hub", Clock())
        self.assertIsInstance(v6, TCP6ClientEndpoint)
        self.assertEqual((v6._host, v6._port), ("::1", 80))

    def test_host_names_are_resolved(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.endpoints import HostnameEndpoint

        from twisted_hub._twisted.client import endpoint_for

        endpoint = endpoint_for("ws://localhost:8080/hub", reactor)
        self.assertIsInstance(endpoint, HostnameEndpoint)

    def test_wss_to_an_ip_address_is_tls_over_the_direct_endpoint(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, _WrapperEndpoint
        from twisted.internet.task import Clock

        from twisted_hub._twisted.client import endpoint_for

        endpoint = endpoint_for("wss://127.0.0.1/hub", Clock())
        self.assertIsInstance(endpoint, _WrapperEndpoint)
        self.assertIsInstance(endpoint._wrappedEndpoint, TCP4ClientEndpoint)
        self.assertEqual(endpoint._wrappedEndpoint._port, 443)
