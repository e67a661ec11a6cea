"""
The client's decisions (twisted_hub._core.client_session.ClientSession), shared by
the Twisted and the asyncio client, tested without autobahn or asyncio: a
fake adapter records what the session asks of it, a server core plays the
server, and time comes from a task.Clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import HeartbeatPolicy, HubClientOptions
from twisted_hub._core.client_session import ClientHeartbeatEvent, ClientSession, ServerHeartbeatEvent
from twisted_hub._core.connection import ServerConnection
from twisted_hub._core.errors import ConnectionClosedError, DisconnectKind, DisconnectReason, HandshakeError, HubError
from twisted_hub._core.heartbeat import Traffic
from twisted_hub._core.log import StdlibCoreLog
from twisted_hub._core.session import SessionState
from twisted_hub._core.wire import (
    HEARTBEAT_TIMEOUT_REASON,
    ClientHeartbeat,
    Close,
    CloseCode,
    Error,
    ErrorCode,
    Hello,
    Invoke,
    Message,
    MessageKind,
    Notify,
    ReceiverCall,
    Result,
    ServerHeartbeat,
    Welcome,
    decode_frame,
    encode,
)
from twisted_hub._support.logging import TwistedCoreLog
from twisted_hub.metrics import ClientMetrics

LOST = DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "connection lost")


class FakeIO:
    """An adapter that records what its session asks of it; tokens are strings."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        #: those of them sent as urgent (heartbeats and answers to them)
        self.urgent: list[bytes] = []
        self.closes: list[tuple[int, str, bool]] = []
        self.succeeded: list[tuple[str, Any]] = []
        self.failed: list[tuple[str, Exception]] = []
        self.waiting: list[tuple[Awaitable[Any], Callable[[Any], object], Callable[[BaseException], object]]] = []
        self.handshakes: list[HandshakeError | None] = []
        self.heartbeat: list[float | None] = []
        self.ended: list[DisconnectReason] = []
        #: what traffic() reports
        self.link = Traffic(0, None, 0, False)

    def send_frames(self, frames: list[bytes], urgent: bool = False) -> None:
        self.frames.extend(frames)
        if urgent:
            self.urgent.extend(frames)

    def send_close(self, code: int, reason: str, wait_for_peer: bool) -> None:
        self.closes.append((code, reason, wait_for_peer))

    def call_succeeded(self, token: str, value: Any) -> None:
        self.succeeded.append((token, value))

    def call_failed(self, token: str, error: Exception) -> None:
        self.failed.append((token, error))

    def await_result(
        self, result: Awaitable[Any], on_result: Callable[[Any], object], on_error: Callable[[BaseException], object],
    ) -> None:
        self.waiting.append((result, on_result, on_error))

    def handshake_done(self) -> None:
        self.handshakes.append(None)

    def handshake_failed(self, error: HandshakeError) -> None:
        self.handshakes.append(error)

    def start_heartbeat(self, interval: float) -> None:
        self.heartbeat.append(interval)

    def stop_heartbeat(self) -> None:
        self.heartbeat.append(None)

    def disconnected(self, reason: DisconnectReason) -> None:
        self.ended.append(reason)

    def traffic(self) -> Traffic:
        return self.link



class Receiver:
    """The client's receiver object."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.pending: Deferred[Any] | None = None

    def said(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("said", args, kwargs))

    def broken(self) -> None:
        raise RuntimeError("receiver bug")

    def later(self) -> Deferred[Any]:
        self.pending = Deferred()
        return self.pending

    def answer(self, x: int) -> int:
        return x * 2

    def refuse(self) -> None:
        raise HubError("not-now", "busy", {"retry": 5})


class SessionTests(SynchronousTestCase):
    """A session on a fake adapter, a server core as its peer, time from a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.io = FakeIO()
        self.observer = EventLoggingObserver()
        self.receiver = Receiver()
        self.server: ServerConnection[str] = ServerConnection("conn-1")

    def session(self, interface: frozenset[str] | None = None, **options: Any) -> ClientSession[str]:
        """A configured session, not yet open (it becomes C{self.current})."""
        session: ClientSession[str] = ClientSession(self.io, TwistedCoreLog("test", self.observer))
        session.configure(HubClientOptions(**options), self.receiver, interface)
        self.current = session
        return session

    def open(self, interface: frozenset[str] | None = None, **options: Any) -> ClientSession[str]:
        """A session whose hub handshake with C{self.server} is done."""
        session = self.session(interface, **options)
        session.opened()
        self.to_server()
        self.server.welcome()
        self.from_server()
        return session

    def to_server(self) -> list[Message]:
        """Deliver what the client sent to the server core; return the messages."""
        messages: list[Message] = []
        now = self.clock.seconds()
        for frame in self.io.frames:
            messages.extend(decode_frame(frame))
            for event in self.server.receive_frame(frame, now):
                if isinstance(event, ClientHeartbeat):
                    self.server.answer_heartbeat(event, now)  # what the server adapter does
        self.io.frames.clear()
        return messages

    def from_server(self, *extra: Message) -> None:
        """Deliver what the server queued, then C{extra} messages, as one frame to the client session."""
        for message in extra:
            self.server.send(message)
        for frame in self.server.frames_to_send():
            self.current.receive_frame(frame, self.clock.seconds())

    def logs(self, level: str) -> list[str]:
        return [formatEvent(e) for e in self.observer if e["log_level"].name == level]


class HandshakeTests(SessionTests):
    def test_hello_then_welcome_opens(self) -> None:
        """opened() says hello with our size limit; the WELCOME opens the session and tells the adapter once."""
        session = self.session(max_message_size=5000)
        session.opened()
        (hello,) = self.to_server()
        assert isinstance(hello, Hello)
        self.assertEqual(hello.max_message_size, 5000)
        self.assertFalse(session.is_connected)
        self.server.welcome()
        self.from_server()
        self.assertEqual(self.io.handshakes, [None])
        self.assertTrue(session.is_connected)
        self.assertIs(session.lifecycle.state, SessionState.OPEN)

    def test_refused_handshake(self) -> None:
        """A refused upgrade fails the handshake with its HTTP status; the reason is HANDSHAKE_FAILED."""
        session = self.session()
        session.refused(401, "Unauthorized")
        reason = session.connection_lost(LOST, "connection was closed uncleanly")
        (error,) = self.io.handshakes
        assert isinstance(error, HandshakeError)
        self.assertEqual((error.status, reason.kind, reason.message), (401, DisconnectKind.HANDSHAKE_FAILED, "Unauthorized"))
        self.assertEqual(self.io.ended, [reason])

    def test_lost_during_handshake(self) -> None:
        """A connection lost before WELCOME is a handshake failure with the transport's words, or a default."""
        session = self.session()
        session.opened()
        reason = session.connection_lost(LOST)
        self.assertEqual(
            (reason.kind, reason.message), (DisconnectKind.HANDSHAKE_FAILED, "connection closed during the handshake")
        )
        self.assertFalse(reason.locally)

    def test_abandoned_handshake(self) -> None:
        """An abandoned handshake (a connect timeout) is a local handshake failure naming the stage."""
        session = self.session()
        session.opened()
        session.abandon_handshake("welcome")
        reason = session.connection_lost(LOST)
        self.assertEqual(
            reason, DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, None, "handshake abandoned waiting for the welcome", True)
        )

    def test_protocol_error_before_welcome_is_a_handshake_failure(self) -> None:
        """A bad first message closes with 4002, and the connection counts as a failed handshake."""
        session = self.session()
        session.opened()
        session.receive_frame(encode(Result(1, None)), self.clock.seconds())
        self.assertEqual(self.io.closes[0][0], CloseCode.PROTOCOL_ERROR)
        reason = session.connection_lost(LOST)
        self.assertEqual(
            (reason.kind, reason.code, reason.locally), (DisconnectKind.HANDSHAKE_FAILED, CloseCode.PROTOCOL_ERROR, True)
        )
        self.assertIsInstance(self.io.handshakes[0], HandshakeError)


class CallTests(SessionTests):
    def test_result_and_error_settle_tokens(self) -> None:
        """RESULT settles its call's token with the value; ERROR with a HubError carrying code, message, detail."""
        session = self.open()
        first = session.invoke("a", "echo", [1], None)
        second = session.invoke("b", "fail", [], {"x": 1})
        invokes = self.to_server()
        self.assertEqual(invokes, [Invoke(first, "echo", [1]), Invoke(second, "fail", [], {"x": 1})])
        self.from_server(Result(first, "one"), Error(second, "nope", "no", {"d": 2}))
        self.assertEqual(self.io.succeeded, [("a", "one")])
        ((token, error),) = self.io.failed
        assert isinstance(error, HubError)
        self.assertEqual((token, error.code, error.message, error.detail), ("b", "nope", "no", {"d": 2}))

    def test_unencodable_arguments(self) -> None:
        """Arguments that cannot be encoded fail the call with invalid-arguments; nothing is sent, the session lives."""
        session = self.open()
        with self.assertRaises(HubError) as caught:
            session.invoke("a", "echo", [object()], None)
        self.assertEqual(caught.exception.code, ErrorCode.INVALID_ARGUMENTS)
        self.assertEqual(self.io.frames, [])
        self.assertTrue(session.is_connected)
        self.assertEqual(session.core.pending_count, 0)

    def test_not_connected(self) -> None:
        """Calls and notifications before the handshake raise ConnectionClosedError."""
        session = self.session()
        self.assertRaises(ConnectionClosedError, session.invoke, "a", "echo", [], None)
        self.assertRaises(ConnectionClosedError, session.notify, "echo", [], None)

    def test_sending_waits_for_the_frame_being_handled(self) -> None:
        """A call made by a receiver while a frame is handled leaves after the frame; the heartbeat answer goes first, urgent."""
        session = self.open()
        self.receiver.said = lambda *a, **k: session.invoke("c", "echo", [], None)  # type: ignore[method-assign]
        self.server.send(ServerHeartbeat(1, 1_700_000_000_000_000))
        self.server.send(ReceiverCall("said", []))
        (frame,) = self.server.frames_to_send()
        session.receive_frame(frame, self.clock.seconds())
        ack, call = self.io.frames
        self.assertEqual(self.io.urgent, [ack])
        self.assertEqual([m.kind for m in decode_frame(ack)], [MessageKind.SERVER_HEARTBEAT_ACK])
        self.assertEqual([m.kind for m in decode_frame(call)], [MessageKind.INVOKE])

    def test_connection_lost_fails_pending_calls(self) -> None:
        """When the transport goes, pending calls fail with the reason, the adapter and on_disconnected hear it once."""
        seen: list[DisconnectReason] = []
        metrics = ClientMetrics(CollectorRegistry())
        session = self.open(on_disconnected=seen.append, metrics=metrics)
        session.invoke("a", "echo", [], None)
        reason = session.connection_lost(LOST)
        self.assertEqual(reason, LOST)
        ((token, error),) = self.io.failed
        assert isinstance(error, ConnectionClosedError)
        self.assertEqual((token, error.reason), ("a", LOST))
        self.assertEqual((self.io.ended, seen), ([LOST], [LOST]))
        self.assertIs(session.connection_lost(DisconnectReason(DisconnectKind.NORMAL)), reason)
        self.assertEqual((self.io.ended, seen), ([LOST], [LOST]))
        disconnects = metrics.registry.get_sample_value("twisted_hub_client_disconnects_total", {"reason": "connection-lost"})
        self.assertEqual(disconnects, 1)
        self.assertFalse(session.is_connected)
        self.assertEqual(session.disconnect_reason, LOST)


class ReceiverTests(SessionTests):
    def test_receiver_call(self) -> None:
        """A receiver call runs the receiver method with its arguments and keyword arguments."""
        self.open()
        self.from_server(ReceiverCall("said", ["lobby", "hi"], {"user": "ann"}))
        self.assertEqual(self.receiver.calls, [("said", ("lobby", "hi"), {"user": "ann"})])

    def test_unknown_receiver_method_logged_once_per_second(self) -> None:
        """Unknown receiver methods log one warning per second; the next one counts the suppressed lines."""
        self.open()
        for _ in range(3):
            self.from_server(ReceiverCall("missing", []))
        self.assertEqual(self.logs("warn"), ["the server called receiver method 'missing', which the receiver lacks"])
        self.clock.advance(1.0)
        self.from_server(ReceiverCall("_private", []))
        self.assertEqual(
            self.logs("warn")[1],
            "the server called receiver method '_private', which the receiver lacks (2 similar lines suppressed)",
        )

    def test_undeclared_receiver_method(self) -> None:
        """With a receiver interface, a method it does not declare is refused and the log says so."""
        self.open(interface=frozenset({"answer"}))
        self.from_server(ReceiverCall("said", ["x"]))
        self.assertEqual(self.receiver.calls, [])
        self.assertEqual(
            self.logs("warn"), ["the server called receiver method 'said', which the receiver interface does not declare"]
        )

    def test_receiver_exceptions_logged(self) -> None:
        """A receiver method that raises, or whose awaitable fails, is logged; the session lives."""
        session = self.open()
        self.from_server(ReceiverCall("broken", []), ReceiverCall("later", []))
        ((awaitable, on_result, on_error),) = self.io.waiting
        self.assertIs(awaitable, self.receiver.pending)
        on_error(ValueError("late bug"))
        errors = [e for e in self.observer if e["log_level"].name == "critical"]
        self.assertEqual([formatEvent(e) for e in errors], ["receiver method broken raised", "receiver method later failed"])
        self.assertIsInstance(errors[0]["log_failure"].value, RuntimeError)
        self.assertIsInstance(errors[1]["log_failure"].value, ValueError)
        self.assertTrue(session.is_connected)

    def test_receiver_exceptions_on_the_standard_logging_module(self) -> None:
        """With the asyncio client's StdlibCoreLog, the same failures are logging ERROR records with their tracebacks."""
        session: ClientSession[str] = ClientSession(self.io, StdlibCoreLog("twisted_hub.aio"))
        session.configure(HubClientOptions(), self.receiver, None)
        self.current = session
        session.opened()
        self.to_server()
        self.server.welcome()
        self.from_server()
        with self.assertLogs("twisted_hub.aio", "ERROR") as captured:
            self.from_server(ReceiverCall("broken", []), ReceiverCall("later", []))
            ((_, _, on_error),) = self.io.waiting
            on_error(ValueError("late bug"))
        messages = [r.getMessage() for r in captured.records]
        self.assertEqual(messages, ["receiver method broken raised", "receiver method later failed"])
        self.assertEqual([r.exc_info[0] for r in captured.records if r.exc_info], [RuntimeError, ValueError])


class ClientInvokeTests(SessionTests):
    def answers(self) -> list[Message]:
        return [m for m in self.to_server() if isinstance(m, (Result, Error))]

    def invoke_client(self, method: str, *args: Any) -> int:
        call_id = self.server.invoke_client("server-token", method, list(args))
        self.from_server()
        return call_id

    def test_result(self) -> None:
        """A client-result request is answered with the receiver method's return value."""
        self.open()
        call_id = self.invoke_client("answer", 21)
        self.assertEqual(self.answers(), [Result(call_id, 42)])

    def test_unknown_method(self) -> None:
        """A method the receiver lacks is answered with unknown-method."""
        self.open()
        call_id = self.invoke_client("missing")
        self.assertEqual(self.answers(), [Error(call_id, ErrorCode.UNKNOWN_METHOD, "the client has no method 'missing'")])

    def test_hub_error(self) -> None:
        """A HubError raised by the receiver is answered with its code, message and detail."""
        self.open()
        call_id = self.invoke_client("refuse")
        self.assertEqual(self.answers(), [Error(call_id, "not-now", "busy", {"retry": 5})])

    def test_other_exception_is_internal(self) -> None:
        """Any other exception is answered with internal "internal error" and logged with its traceback."""
        self.open()
        call_id = self.invoke_client("broken")
        self.assertEqual(self.answers(), [Error(call_id, ErrorCode.INTERNAL, "internal error")])
        (event,) = [e for e in self.observer if e["log_level"].name == "critical"]
        self.assertEqual(formatEvent(event), "receiver method broken raised")
        self.assertIsInstance(event["log_failure"].value, RuntimeError)

    def test_awaitable_result(self) -> None:
        """An awaitable result is answered once the adapter reports it, value or failure."""
        self.open()
        first = self.invoke_client("later")
        second = self.invoke_client("later")
        (_, on_result, _), (_, _, on_error) = self.io.waiting
        self.assertEqual(self.answers(), [])
        on_result("done")
        on_error(HubError("late", "too late"))
        self.assertEqual(self.answers(), [Result(first, "done"), Error(second, "late", "too late")])

    def test_no_answer_after_close(self) -> None:
        """An answer that comes after the connection began closing is not sent."""
        session = self.open()
        self.invoke_client("later")
        session.disconnect("bye")
        (_, on_result, _), = self.io.waiting
        on_result("done")
        self.assertEqual(self.answers(), [])


class HeartbeatTests(SessionTests):
    def test_server_heartbeat_callback(self) -> None:
        """The server's heartbeat reaches the callback with an aware UTC time and the metadata."""
        events: list[ServerHeartbeatEvent] = []
        self.open(on_server_heartbeat=events.append)
        self.from_server(ServerHeartbeat(3, 1_700_000_000_500_000, b"v1"))
        self.assertEqual(events, [ServerHeartbeatEvent(3, datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC), b"v1")])

    def test_server_heartbeat_time_out_of_range(self) -> None:
        """A server time no datetime can hold skips the callback with a warning; the heartbeat is still answered."""
        events: list[ServerHeartbeatEvent] = []
        self.open(on_server_heartbeat=events.append)
        self.from_server(ServerHeartbeat(1, 2**63 - 1))
        self.assertEqual(events, [])
        self.assertEqual(self.logs("warn"), [f"server heartbeat time {2**63 - 1}us is out of range; callback skipped"])
        self.assertEqual([m.kind for m in self.to_server()], [MessageKind.SERVER_HEARTBEAT_ACK])

    def test_heartbeat_answered(self) -> None:
        """An answered heartbeat sets the metrics and calls back with round trip and clock sample."""
        answers: list[ClientHeartbeatEvent] = []
        metrics = ClientMetrics(CollectorRegistry())
        session = self.open(
            heartbeat=HeartbeatPolicy(enabled=True, interval=1.0), on_heartbeat_response=answers.append, metrics=metrics,
        )
        self.assertEqual(self.io.heartbeat, [1.0])
        self.clock.advance(1.0)
        session.heartbeat.beat(self.clock.seconds())
        self.to_server()
        self.clock.advance(0.25)
        self.from_server()
        (answer,) = answers
        self.assertEqual((answer.sequence, answer.round_trip), (1, 0.25))
        self.assertEqual(metrics.registry.get_sample_value("twisted_hub_client_round_trip_seconds"), 0.25)
        self.assertEqual(session.core.heartbeat.latency, 0.25)

    def test_timeout_decision(self) -> None:
        """An unanswered heartbeat past its deadline: TIMED_OUT 4001, counted, callback, CLOSE then close frame, no waiting."""
        timeouts: list[None] = []
        metrics = ClientMetrics(CollectorRegistry())
        session = self.open(
            heartbeat=HeartbeatPolicy.every(1.0, 3.0), on_heartbeat_timeout=lambda: timeouts.append(None), metrics=metrics,
        )
        self.clock.advance(1.0)
        session.heartbeat.beat(self.clock.seconds())
        self.io.frames.clear()  # the heartbeat is lost
        deadline = session.heartbeat.deadline()
        self.assertEqual(deadline, self.clock.seconds() + 3.0)
        self.clock.advance(2.9)
        self.assertTrue(session.heartbeat.check(self.clock.seconds(), None))
        self.clock.advance(0.1)
        assert deadline is not None
        self.assertFalse(session.heartbeat.check(self.clock.seconds(), deadline))
        self.assertEqual(
            session.lifecycle.decided,
            DisconnectReason(
                DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "the server did not answer our heartbeat", True
            ),
        )
        self.assertEqual(timeouts, [None])
        self.assertEqual(metrics.registry.get_sample_value("twisted_hub_client_heartbeat_timeouts_total"), 1)
        self.assertEqual(self.to_server(), [Close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON)])
        self.assertEqual(self.io.closes, [(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON, False)])
        self.assertEqual(self.io.heartbeat, [1.0, None])
        self.assertEqual(self.logs("info"), ["server heartbeat timed out after 3.0s: closing with 4001"])
        self.assertFalse(session.heartbeat.check(self.clock.seconds(), None))  # checking is over
        session.heartbeat.beat(self.clock.seconds())
        self.assertEqual(self.io.frames, [])  # no more heartbeats

    def test_stall_gives_grace(self) -> None:
        """A deadline checked late after our own stall gets one more exchange (logged), not a timeout."""
        session = self.open(heartbeat=HeartbeatPolicy.every(1.0, 3.0))
        self.clock.advance(1.0)
        session.heartbeat.beat(self.clock.seconds())
        deadline = session.heartbeat.deadline()
        assert deadline is not None
        self.clock.advance(5.0)  # our loop was stalled: the check runs 2 s late
        self.assertTrue(session.heartbeat.check(self.clock.seconds(), deadline))
        self.assertEqual(self.logs("info"), ["heartbeat timeout deferred: our event loop was stalled (2.000s late)"])
        self.assertEqual(session.heartbeat.stall.stalls, 1)
        self.assertTrue(session.is_connected)

    def test_no_heartbeat_for_a_server_without_the_capability(self) -> None:
        """Our heartbeat starts only when the server announced it takes heartbeats."""
        self.session(heartbeat=HeartbeatPolicy(enabled=True, interval=1.0)).opened()
        self.to_server()
        self.server.welcome()
        (frame,) = self.server.frames_to_send()
        (welcome,) = decode_frame(frame)
        assert isinstance(welcome, Welcome)
        welcome.capabilities.remove("heartbeat")  # a server from before heartbeats
        self.current.receive_frame(encode(welcome), self.clock.seconds())
        self.assertTrue(self.current.is_connected)
        self.assertEqual(self.io.heartbeat, [])


class ClosingTests(SessionTests):
    def test_frame_errors_close(self) -> None:
        """A text frame closes with 1003, a malformed frame with 4002, too many messages with 1008: once, locally."""
        for payload, binary, code in [
            (b"hi", False, CloseCode.UNSUPPORTED_DATA),
            (b"\xc1", True, CloseCode.PROTOCOL_ERROR),
            (encode(Notify("x", [])) * 3, True, CloseCode.POLICY_VIOLATION),
        ]:
            self.io, self.server = FakeIO(), ServerConnection("conn-1")
            session = self.open(max_messages_per_frame=2)
            session.receive_frame(payload, self.clock.seconds(), binary)
            session.receive_frame(payload, self.clock.seconds(), binary)
            ((sent_code, _, wait),) = self.io.closes
            self.assertEqual((sent_code, wait), (code, True))
            reason = session.connection_lost(LOST)
            self.assertEqual((reason.kind, reason.code, reason.locally), (DisconnectKind.PROTOCOL_ERROR, code, True))

    def test_adapter_bug_closes_with_internal_error(self) -> None:
        """An unexpected exception while handling a frame is logged and closes with 1011, not raised."""
        session = self.open()
        call_id = session.invoke("a", "echo", [], None)

        def broken(token: str, value: Any) -> None:
            raise RuntimeError("adapter bug")

        self.io.call_succeeded = broken  # type: ignore[method-assign]
        self.from_server(Result(call_id, 1))
        self.assertEqual(self.io.closes, [(CloseCode.INTERNAL_ERROR, "internal error", True)])
        self.assertEqual(self.logs("critical"), ["unexpected error handling a frame from the server"])

    def test_server_close_is_the_reason(self) -> None:
        """The server's CLOSE message is the reason when this side decides nothing."""
        session = self.open()
        self.from_server(Close(CloseCode.KICKED, "bye"))
        self.assertEqual(session.connection_lost(LOST), DisconnectReason(DisconnectKind.KICKED, CloseCode.KICKED, "bye"))

    def test_local_decision_wins_over_an_earlier_server_close(self) -> None:
        """A local close decided after the server's CLOSE arrived is the reason, and its close frame is sent."""
        session = self.open()
        self.from_server(Close(CloseCode.KICKED, "bye"))
        session.disconnect("leaving")
        self.assertEqual(self.io.closes, [(CloseCode.NORMAL, "leaving", True)])
        self.assertEqual(
            session.connection_lost(LOST), DisconnectReason(DisconnectKind.NORMAL, CloseCode.NORMAL, "leaving", True)
        )

    def test_first_local_decision_stands(self) -> None:
        """A second local decision (disconnect after a protocol error) sends nothing and changes nothing."""
        session = self.open()
        session.receive_frame(b"\xc1", self.clock.seconds())
        session.disconnect("bye")
        self.assertEqual(len(self.io.closes), 1)
        self.assertEqual(session.connection_lost(LOST).kind, DisconnectKind.PROTOCOL_ERROR)

    def test_websocket_layer_failure_is_this_sides_decision(self) -> None:
        """The WebSocket layer's own 1009 is the reason (locally); heartbeats stop; later decisions change nothing."""
        session = self.open(heartbeat=HeartbeatPolicy.every(1.0, 3.0))
        session.invoke("a", "echo", [], None)
        self.assertTrue(session.websocket_failed(CloseCode.MESSAGE_TOO_BIG, "frame too big"))
        expected = DisconnectReason(DisconnectKind.MESSAGE_TOO_BIG, CloseCode.MESSAGE_TOO_BIG, "frame too big", True)
        self.assertEqual(session.lifecycle.decided, expected)
        self.assertFalse(session.is_connected)
        self.assertEqual(self.io.heartbeat, [1.0, None])
        self.assertEqual(self.io.closes, [])  # the WebSocket layer sent its close frame itself
        self.clock.advance(10.0)
        self.assertFalse(session.heartbeat.check(self.clock.seconds(), None))  # no timeout verdict now
        session.disconnect("bye")
        self.assertFalse(session.websocket_failed(CloseCode.PROTOCOL_ERROR, "bad framing"))
        self.assertEqual(self.io.closes, [])
        self.assertEqual(session.connection_lost(LOST), expected)
        ((token, error),) = self.io.failed
        assert isinstance(error, ConnectionClosedError)
        self.assertEqual((token, error.reason), ("a", expected))
        self.assertEqual(
            self.logs("info"), ["the server sent what our WebSocket layer refused: closing with 1009 (frame too big)"]
        )

    def test_websocket_layer_failure_after_a_decision(self) -> None:
        """A WebSocket-layer failure after this side decided (a protocol error) is not a new decision: False, reason kept."""
        session = self.open()
        session.receive_frame(b"\xc1", self.clock.seconds())
        self.assertFalse(session.websocket_failed(CloseCode.MESSAGE_TOO_BIG, "frame too big"))
        self.assertEqual(session.connection_lost(LOST).kind, DisconnectKind.PROTOCOL_ERROR)

    def test_frames_after_the_end_are_ignored(self) -> None:
        """Once the transport is gone, a late frame changes nothing."""
        session = self.open()
        session.connection_lost(LOST)
        self.from_server(ReceiverCall("said", []))
        self.assertEqual(self.receiver.calls, [])

    def test_callback_exceptions_are_logged(self) -> None:
        """A user callback that raises (on_disconnected) is logged, not raised into the adapter."""

        def on_disconnected(reason: DisconnectReason) -> None:
            raise ValueError("user bug")

        session = self.open(on_disconnected=on_disconnected)
        self.assertEqual(session.connection_lost(LOST), LOST)
        self.assertEqual(self.logs("critical"), ["client callback on_disconnected raised"])
        self.assertEqual(self.io.ended, [LOST])
