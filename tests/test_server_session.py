"""
The server's per-connection decisions without autobahn: L{TwistedServerSession} on a
task.Clock behind a fake transport, admission (L{twisted_hub._core.admission}) and
the slow-consumer rule (L{OutputBudget}).

The fake transport records what the session asks of it; frames it is given
are read back with a sans-IO L{ClientConnection}, as the real client would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import CallTimeoutError, ConnectionClosedError, DisconnectKind, HeartbeatPolicy, HubError
from twisted_hub._backplane.interface import LocalBackplane
from twisted_hub._core.admission import HandshakeWatch, Refusal, check_request
from twisted_hub._core.backpressure import BUFFERED_WRITE_OVERHEAD, OutputBudget
from twisted_hub._core.connection import CallSucceeded, ClientConnection, HandshakeCompleted
from twisted_hub._core.heartbeat import StallDetector
from twisted_hub._core.resume import SessionRegistry
from twisted_hub._core.session import TEXT_FRAME_CLOSE, SessionState
from twisted_hub._core.stats import HeartbeatWindow, RecentDisconnects
from twisted_hub._core.wire import (
    CAP_BATCH,
    CAP_HEARTBEAT,
    SUBPROTOCOL,
    ClientInvoke,
    Close,
    CloseCode,
    Error,
    Invoke,
    Message,
    Result,
    ServerHeartbeat,
    Welcome,
    decode_frame,
    encode,
)
from twisted_hub._hubs.hub import Hub, HubRuntime, RefuseConnection, method
from twisted_hub._twisted.admit import run_on_connecting
from twisted_hub._twisted.limits import ConnectionLimits
from twisted_hub._twisted.liveness import ServerHeartbeatScheduler, ping_frame, ping_sequence
from twisted_hub._twisted.server_io import TwistedServerSession, call_later
from twisted_hub.types import DisconnectReason

# -- fakes --------------------------------------------------------------------


@dataclass
class Prepared:
    """A frame prepared once for many connections (the fake's PreparedMessage)."""

    payload: bytes


@dataclass
class FakeTransport:
    """A ServerTransport that records every request."""

    peer: str | None = "tcp:192.0.2.7:40000"
    can_send: bool = True
    frames: list[bytes] = field(default_factory=list)
    prepared: list[Prepared] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    closes: list[tuple[int, str, bool]] = field(default_factory=list)
    aborted: int = 0
    #: what was sent as urgent (heartbeats, answers to them, pings)
    urgent: list[Any] = field(default_factory=list)
    #: what queued_bytes reports (None: the transport cannot tell)
    queued: int | None = None

    def send_frame(self, payload: bytes, urgent: bool = False) -> None:
        assert self.can_send, "the session sent a frame on a transport that cannot send"
        self.frames.append(payload)
        if urgent:
            self.urgent.append(payload)

    def send_prepared(self, prepared: Any, urgent: bool = False) -> bool:
        if not self.can_send:
            return False
        self.prepared.append(prepared)
        if urgent:
            self.urgent.append(prepared)
        return True

    def send_raw(self, data: bytes, urgent: bool = False) -> None:
        self.raw.append(data)
        if urgent:
            self.urgent.append(data)

    def send_close(self, code: int, reason: str, drop_after: bool) -> None:
        self.closes.append((code, reason, drop_after))
        self.can_send = False  # as autobahn: closing, nothing more leaves

    def abort(self) -> None:
        self.aborted += 1
        self.can_send = False

    def queued_bytes(self) -> int | None:
        return self.queued

    def receiving(self) -> tuple[int, bool]:
        return 0, False

    def messages(self) -> list[Message]:
        """Every message of every frame sent so far, in order."""
        return [m for frame in self.frames for m in decode_frame(frame)]


class FakeHost:
    """The SessionHost a HubServerFactory would be: settings, clock, shared state."""

    def __init__(self, clock: Clock, **settings: Any) -> None:
        self.clock = clock
        self.max_message_size = settings.get("max_message_size", 1024 * 1024)
        self.max_messages_per_frame = settings.get("max_messages_per_frame", 1024)
        self.max_pending_calls = 256
        self.max_pending_bytes = 8 * 1024 * 1024
        self.client_result_timeout = settings.get("client_result_timeout", 5.0)
        self.hello_timeout = settings.get("hello_timeout", 10.0)
        self.debug = False
        self.connection_count = 0
        self.metrics = None
        self.heartbeat_window = HeartbeatWindow()
        self.recent_disconnects = RecentDisconnects()
        self.backplane = LocalBackplane()
        self.authenticator = settings.get("authenticator")
        self.authentication_timeout = 5.0
        self._schedulers: dict[HeartbeatPolicy, ServerHeartbeatScheduler] = {}
        #: resumable sessions (docs/resumption.md): on with a ResumePolicy
        self.resume_policy = settings.get("resume")
        self._registries: dict[str, SessionRegistry] = {}

    #: one node, no backplane: no snapshots, no claims
    snapshots = False
    moves_sessions = False

    def resume_registry(self, hub_name: str) -> SessionRegistry:
        if hub_name not in self._registries:
            self._registries[hub_name] = SessionRegistry(self.resume_policy, b"epoc")
        return self._registries[hub_name]

    def scheduler_for(self, policy: HeartbeatPolicy) -> ServerHeartbeatScheduler:
        if policy not in self._schedulers:
            self._schedulers[policy] = ServerHeartbeatScheduler(policy, self.clock, Prepared, StallDetector())
        return self._schedulers[policy]


class EchoHub(Hub):
    """Methods and hooks that record what happened, per instance."""

    hub_name = "echo"

    def __init__(self, journal: list[Any]) -> None:
        self.journal = journal

    def on_connected(self) -> None:
        self.journal.append("connected")

    def on_disconnected(self, reason: DisconnectReason) -> None:
        self.journal.append(("disconnected", reason, self.groups.joined()))

    @method
    def echo(self, value: Any) -> Any:
        return value

    @method
    def join(self, group: str) -> None:
        self.groups.add(group)

    @method
    def kick(self) -> None:
        self.connection.kick("out")

    @method
    def ask(self, question: str) -> Deferred[Any]:
        return self.connection.invoke("answer", question, timeout=2.0)

    @method
    def fail(self) -> None:
        raise HubError("nope", "it failed")


def request(path: str = "/echo", **headers: str) -> ConnectionRequest:
    """An upgrade request as autobahn hands it to onConnect."""
    return ConnectionRequest(
        "tcp:192.0.2.7:40000", {"host": "example.test", **headers}, "example.test", path, {}, 13,
        headers.get("origin"), [SUBPROTOCOL], [],
    )


class SessionCase(SynchronousTestCase):
    """A session, its hub runtime, host and fake transport on a Clock, and a sans-IO client core."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.journal: list[Any] = []
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.host = FakeHost(self.clock)
        self.runtime: HubRuntime[TwistedServerSession] = HubRuntime(
            EchoHub, lambda: EchoHub(self.journal), backplane=self.host.backplane,
            heartbeat=HeartbeatPolicy(), max_message_size=self.host.max_message_size, prepare=Prepared,
        )

    def new_session(self, transport: FakeTransport | None = None, budget: OutputBudget | None = None) -> TwistedServerSession:
        return TwistedServerSession(
            transport or FakeTransport(), self.host, self.runtime, request(), budget or OutputBudget(4096)
        )

    def open(
        self, capabilities: tuple[str, ...] = (CAP_BATCH, CAP_HEARTBEAT)
    ) -> tuple[TwistedServerSession, FakeTransport, ClientConnection[Any]]:
        """An open session whose client said hello (its WELCOME read by the client core)."""
        transport = FakeTransport()
        session = self.new_session(transport)
        session.opened()
        client: ClientConnection[Any] = ClientConnection(capabilities)
        self.to_client(transport, client)
        client.hello(1024 * 1024)
        self.to_server(client, session)
        return session, transport, client

    def to_server(self, client: ClientConnection[Any], session: TwistedServerSession) -> None:
        for frame in client.frames_to_send():
            session.receive(frame, True)

    def to_client(self, transport: FakeTransport, client: ClientConnection[Any]) -> list[Any]:
        events = [e for frame in transport.frames for e in client.receive_frame(frame, self.clock.seconds())]
        transport.frames.clear()
        return events


# -- opening and calls --------------------------------------------------------


class OpeningTests(SessionCase):
    def test_opened_welcomes_and_joins_the_hub(self) -> None:
        """opened() sends WELCOME with the connection id, counts the connection and runs on_connected."""
        transport = FakeTransport()
        session = self.new_session(transport)
        self.assertTrue(session.connecting)
        session.opened()
        [welcome] = transport.messages()
        assert isinstance(welcome, Welcome)
        self.assertEqual(welcome.connection_id, session.connection_id)
        self.assertEqual(welcome.max_message_size, self.host.max_message_size)
        self.assertIs(self.runtime.connections[session.connection_id], session)
        self.assertEqual(self.host.connection_count, 1)
        self.assertEqual(self.journal, ["connected"])
        self.assertIs(session.lifecycle.state, SessionState.OPEN)

    def test_hello_completes_the_handshake(self) -> None:
        """After the client's HELLO the session is open to calls and the client core saw the handshake."""
        transport = FakeTransport()
        session = self.new_session(transport)
        session.opened()
        client: ClientConnection[Any] = ClientConnection()
        [completed] = self.to_client(transport, client)
        self.assertIsInstance(completed, HandshakeCompleted)
        self.assertFalse(session.is_open)
        client.hello(1000)
        self.to_server(client, session)
        self.assertTrue(session.is_open)
        self.assertEqual(session.core.peer_max_message_size, 1000)

    def test_no_hello_closes_with_4003(self) -> None:
        """A client that sends no HELLO within hello_timeout (on the clock) is closed with 4003."""
        transport = FakeTransport()
        session = self.new_session(transport)
        session.opened()
        self.clock.advance(self.host.hello_timeout - 0.01)
        self.assertEqual(transport.closes, [])
        self.clock.advance(0.01)
        self.assertEqual(transport.closes, [(CloseCode.HANDSHAKE_FAILED, "no hello", False)])
        assert session.lifecycle.decided is not None
        self.assertIs(session.lifecycle.decided.kind, DisconnectKind.HANDSHAKE_FAILED)


class CallTests(SessionCase):
    def test_call_is_answered_with_its_result(self) -> None:
        """An INVOKE runs the hub method; its RESULT leaves through send_frame and resolves the client's call."""
        session, transport, client = self.open()
        call: Deferred[Any] = Deferred()
        client.invoke(call, "echo", ["hi"])
        self.to_server(client, session)
        [event] = self.to_client(transport, client)
        assert isinstance(event, CallSucceeded)
        self.assertEqual(event.value, "hi")

    def test_answers_of_one_frame_leave_in_one_frame_in_order(self) -> None:
        """Two calls in one frame are answered in one batch frame, in the order of the calls."""
        session, transport, client = self.open()
        client.invoke("first", "echo", [1])
        client.invoke("second", "fail", [])
        self.to_server(client, session)
        self.assertEqual(len(transport.frames), 1)
        first, second = transport.messages()
        self.assertEqual(first, Result(1, 1))
        assert isinstance(second, Error)
        self.assertEqual((second.call_id, second.code, second.message), (2, "nope", "it failed"))

    def test_text_frame_closes_with_1003(self) -> None:
        """A text frame closes the connection with 1003: the CLOSE message leaves before the close frame."""
        session, transport, client = self.open()
        session.receive(b"hello", False)
        self.assertEqual([m for m in transport.messages() if isinstance(m, Close)], [Close(*TEXT_FRAME_CLOSE)])
        self.assertEqual(transport.closes, [(*TEXT_FRAME_CLOSE, False)])
        assert session.lifecycle.decided is not None
        self.assertIs(session.lifecycle.decided.kind, DisconnectKind.PROTOCOL_ERROR)

    def test_malformed_frame_closes_with_4002_and_a_log_line(self) -> None:
        """A frame that is not msgpack closes the connection with 4002, with one info line."""
        session, transport, client = self.open()
        session.receive(b"\xc1", True)
        self.assertEqual(transport.closes[0][0], CloseCode.PROTOCOL_ERROR)
        self.assertEqual([e["log_format"][:14] for e in self.logs if "protocol error" in e.get("log_format", "")],
                         ["protocol error"])

    def test_too_many_messages_close_with_1008(self) -> None:
        """A frame holding more messages than max_messages_per_frame closes with 1008, running none of them."""
        self.host.max_messages_per_frame = 2
        session, transport, client = self.open()
        frame = b"".join(encode(Invoke(i, "echo", [i])) for i in range(1, 4))
        session.receive(frame, True)
        self.assertEqual(transport.closes[0][0], CloseCode.POLICY_VIOLATION)
        self.assertFalse([m for m in transport.messages() if isinstance(m, Result)])

    def test_frames_after_a_local_close_are_not_handled(self) -> None:
        """Once the session decided to close, later frames run no hub method."""
        session, transport, client = self.open()
        session.close_with(CloseCode.KICKED, "bye", DisconnectKind.KICKED)
        transport.frames.clear()
        session.receive(encode(Invoke(1, "join", ["room"])), True)
        self.assertEqual(self.runtime.groups.count("room"), 0)
        self.assertEqual(transport.frames, [])


# -- closing ------------------------------------------------------------------


class CloseTests(SessionCase):
    def test_first_close_decision_stands(self) -> None:
        """A second close_with sends nothing and does not change the reason."""
        session, transport, client = self.open()
        session.close_with(CloseCode.KICKED, "first", DisconnectKind.KICKED)
        session.close_with(CloseCode.GOING_AWAY, "second", DisconnectKind.GOING_AWAY)
        self.assertEqual(transport.closes, [(CloseCode.KICKED, "first", False)])
        self.assertEqual([m for m in transport.messages() if isinstance(m, Close)], [Close(CloseCode.KICKED, "first")])
        reason = session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.assertEqual(reason, DisconnectReason(DisconnectKind.KICKED, CloseCode.KICKED, "first", True))

    def test_close_on_a_transport_that_cannot_send_aborts(self) -> None:
        """Closing when no frame can leave (the WebSocket is not open) drops the connection instead."""
        transport = FakeTransport()
        session = self.new_session(transport)
        transport.can_send = False
        session.close_with(CloseCode.GOING_AWAY, "bye", DisconnectKind.GOING_AWAY)
        self.assertEqual((transport.aborted, transport.closes), (1, []))

    def test_heartbeat_timeout_close_does_not_wait_for_the_reply(self) -> None:
        """A heartbeat-timeout close asks the transport to drop the socket once the close frame is out."""
        session, transport, client = self.open()
        session.heartbeat.heartbeat_timed_out()
        self.assertEqual(transport.closes, [(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout", True)])

    def test_transport_closed_does_the_bookkeeping(self) -> None:
        """The end leaves groups, uncounts, records the disconnect, runs on_disconnected and fires when_closed."""
        session, transport, client = self.open()
        client.invoke("j", "join", ["room"])
        self.to_server(client, session)
        self.assertEqual(self.runtime.groups.count("room"), 1)
        closed = session.when_closed()
        self.assertNoResult(closed)
        observed = DisconnectReason(DisconnectKind.NORMAL, 1000, "done")
        self.assertEqual(session.transport_closed(observed), observed)
        self.successResultOf(closed)
        self.assertEqual(self.runtime.groups.count("room"), 0)
        self.assertNotIn(session.connection_id, self.runtime.connections)
        self.assertEqual(self.host.connection_count, 0)
        self.assertEqual(self.journal[-1], ("disconnected", observed, frozenset()))
        [entry] = self.host.recent_disconnects.entries
        self.assertEqual((entry["id"], entry["kind"], entry["code"]), (session.connection_id, "normal", 1000))
        self.assertEqual(session.disconnect_reason, observed)
        self.assertIsNone(self.successResultOf(session.when_closed()))  # once closed, it fires at once

    def test_a_connection_that_never_opened_only_ends(self) -> None:
        """A session refused during the handshake ends without hooks or counts."""
        session = self.new_session()
        waiter = session.when_closed()
        session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.successResultOf(waiter)
        self.assertEqual((self.journal, self.host.connection_count, list(self.host.recent_disconnects.entries)), ([], 0, []))

    def test_peer_close_message_is_the_reason(self) -> None:
        """The client's CLOSE message is why the connection ended, unless the server decided otherwise."""
        session, transport, client = self.open()
        session.receive(encode(Close(CloseCode.GOING_AWAY, "leaving")), True)
        reason = session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.assertEqual((reason.kind, reason.code, reason.message, reason.locally),
                         (DisconnectKind.GOING_AWAY, CloseCode.GOING_AWAY, "leaving", False))

    def test_slow_consumer_decides_the_reason(self) -> None:
        """A write refused by the output budget makes SLOW_CONSUMER (4004) the reason, with a warning."""
        session, transport, client = self.open()
        session.output.pause()
        self.assertFalse(session.output.take(5000))
        session.slow_consumer()
        assert session.lifecycle.decided is not None
        self.assertEqual((session.lifecycle.decided.kind, session.lifecycle.decided.code),
                         (DisconnectKind.SLOW_CONSUMER, CloseCode.SLOW_CONSUMER))
        [warning] = [e for e in self.logs if e["log_level"].name == "warn"]
        self.assertEqual((warning["size"], warning["limit"]), (5000 + BUFFERED_WRITE_OVERHEAD, 4096))


# -- client results -----------------------------------------------------------


class ClientResultTests(SessionCase):
    def ask(self) -> tuple[TwistedServerSession, FakeTransport, ClientConnection[Any], Any]:
        session, transport, client = self.open()
        call: Deferred[Any] = Deferred()
        client.invoke(call, "ask", ["why?"])
        self.to_server(client, session)
        [request_] = [m for m in transport.messages() if isinstance(m, ClientInvoke)]
        transport.frames.clear()
        return session, transport, client, (call, request_)

    def test_client_result_answers_the_call(self) -> None:
        """A client's RESULT to a CLIENT_INVOKE resolves the hub's invoke, and the hub's answer goes back."""
        session, transport, client, (call, asked) = self.ask()
        self.assertEqual((asked.method, asked.args), ("answer", ["why?"]))
        client.reply(asked.call_id, "because")
        self.to_server(client, session)
        self.assertEqual(self.to_client(transport, client)[0].value, "because")

    def test_client_result_times_out_on_the_clock(self) -> None:
        """No answer within the timeout (on the clock): invoke_client fails with CallTimeoutError; a late answer is dropped."""
        session, transport, client = self.open()
        waiting = session.invoke_client("answer", [], None, 2.0)
        [asked] = [m for m in transport.messages() if isinstance(m, ClientInvoke)]
        self.clock.advance(1.99)
        self.assertNoResult(waiting)
        self.clock.advance(0.01)
        self.failureResultOf(waiting, CallTimeoutError)
        client.reply(asked.call_id, "too late")
        self.to_server(client, session)
        self.assertEqual(session.core.late_answers, 1)

    def test_pending_client_result_fails_when_the_connection_ends(self) -> None:
        """A client result still pending when the connection ends fails with ConnectionClosedError."""
        session, transport, client = self.open()
        waiting = session.invoke_client("answer", [], None, None)
        session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.failureResultOf(waiting, ConnectionClosedError)

    def test_invoke_after_close_fails_with_the_reason(self) -> None:
        """invoke_client after a close decision fails at once with that reason."""
        session, transport, client = self.open()
        session.close_with(CloseCode.KICKED, "out", DisconnectKind.KICKED)
        failure = self.failureResultOf(session.invoke_client("answer", [], None, None), ConnectionClosedError)
        self.assertIs(failure.value.reason.kind, DisconnectKind.KICKED)  # type: ignore[attr-defined]


# -- sending and fan-out ------------------------------------------------------


class FanOutTests(SessionCase):
    def test_many_targets_get_one_prepared_frame_one_target_a_message(self) -> None:
        """HubRuntime frames a receiver call once for many sessions; a single target gets it as a queued message."""
        opened = [self.open() for _ in range(3)]
        self.runtime.send_receiver_call([s for s, _, _ in opened], "said", ["hi"], None)
        self.assertEqual([len(t.prepared) for _, t, _ in opened], [1, 1, 1])
        self.assertEqual(len({id(t.prepared[0]) for _, t, _ in opened}), 1)
        session, transport, client = opened[0]
        self.runtime.send_receiver_call([session], "said", ["only you"], None)
        self.assertEqual([m.args for m in transport.messages()], [["only you"]])  # type: ignore[attr-defined]

    def test_message_over_the_clients_limit_is_not_sent(self) -> None:
        """A message larger than the client announced is dropped with a warning, never sent."""
        session, transport, client = self.open()
        session.core.peer_max_message_size = 10
        session.write_message(b"x" * 11)
        session.send_prepared(Prepared(b"y" * 11))
        self.assertEqual((transport.frames, transport.prepared), ([], []))
        self.assertEqual(len([e for e in self.logs if e["log_level"].name == "warn"]), 2)

    def test_nothing_is_sent_after_a_local_close(self) -> None:
        """After close_with, messages and prepared frames are not sent."""
        session, transport, client = self.open()
        session.close_with(CloseCode.KICKED, "out", DisconnectKind.KICKED)
        transport.can_send = True  # even if the transport still could
        transport.frames.clear()
        session.write_message(encode(Result(1, 1)))
        session.send_prepared(Prepared(b"z"))
        self.assertEqual((transport.frames, transport.prepared), ([], []))


# -- heartbeats ---------------------------------------------------------------


class HeartbeatTests(SessionCase):
    policy = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)

    def setUp(self) -> None:
        super().setUp()
        self.runtime.heartbeat_policy = self.policy

    def test_heartbeats_come_from_the_shared_tick_and_time_out(self) -> None:
        """A client that announced heartbeats gets the scheduler's prepared beats; unanswered, it is closed with 4001."""
        session, transport, client = self.open()
        self.assertTrue(session.heartbeat_active)
        self.clock.advance(1.0)
        [beat] = transport.prepared
        self.assertIsInstance(decode_frame(beat.payload)[0], ServerHeartbeat)
        for _ in range(4):
            self.clock.advance(1.0)
        self.assertEqual(transport.closes, [(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout", True)])

    def test_ping_fallback_for_a_client_without_heartbeats(self) -> None:
        """A client that did not announce heartbeats gets ping frames; a pong with the sequence answers."""
        session, transport, client = self.open(capabilities=(CAP_BATCH,))
        self.assertTrue(session.heartbeat_by_ping)
        self.clock.advance(1.0)
        self.assertEqual(transport.raw, [ping_frame(1)])
        self.clock.advance(0.25)
        session.pong(ping_sequence((1).to_bytes(8, "big")))
        self.assertEqual(session.heartbeat_latency, 0.25)
        self.assertEqual(list(self.host.heartbeat_window.latencies), [0.25])

    def test_stop_heartbeat_leaves_the_scheduler(self) -> None:
        """stop_heartbeat (HeartbeatFeature.unregister) ends the beats of this connection."""
        session, transport, client = self.open()
        session.hub.connection.heartbeat.unregister()
        self.assertFalse(session.heartbeat_active)
        self.clock.advance(5.0)
        self.assertEqual((transport.prepared, transport.closes), ([], []))


# -- admission ----------------------------------------------------------------


class Rules:
    """RequestRules with fixed answers."""

    def __init__(self, host: bool = True, origin: bool = True, route: str | None = "echo") -> None:
        self._host, self._origin, self._route = host, origin, route

    def host_allowed(self, host_header: str | None) -> bool:
        return self._host

    def origin_allowed(self, request: ConnectionRequest) -> bool:
        return self._origin

    def route(self, path: str, mount: str | None = None) -> str | None:
        return self._route


class CheckRequestTests(SynchronousTestCase):
    def test_routed(self) -> None:
        """A request that passes every check answers with what its path routes to."""
        self.assertEqual(check_request(Rules(), request()), "echo")

    def test_each_refusal_in_order(self) -> None:
        """Host (400), subprotocol (400), origin (403) and path (404) refusals, checked in that order."""
        self.assertEqual(check_request(Rules(host=False, origin=False), request()).status, 400)  # type: ignore[union-attr]
        no_subprotocol = request()
        no_subprotocol.protocols = ["other"]
        refusal = check_request(Rules(), no_subprotocol)
        self.assertEqual(refusal, Refusal(400, f"no supported subprotocol offered; this server speaks {SUBPROTOCOL}"))
        self.assertEqual(check_request(Rules(origin=False, route=None), request(origin="https://evil.test")),
                         Refusal(403, "origin 'https://evil.test' is not allowed"))
        self.assertEqual(check_request(Rules(route=None), request("/nope")), Refusal(404, "no hub named 'nope' at path '/nope'"))


class GateHub(Hub):
    """on_connecting answers with the C{answer} it was made with (raised if it is an exception)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def on_connecting(self, request: ConnectionRequest) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class OnConnectingTests(SynchronousTestCase):
    def run_hook(self, answer: Any) -> Any:
        return run_on_connecting(GateHub(answer), request())

    def test_sync_accept_and_refusal_answer_at_once(self) -> None:
        """A hook that returns or raises at once is answered at once: None, or its status and reason."""
        self.assertIsNone(self.run_hook(None))
        self.assertEqual(self.run_hook(RefuseConnection(401, "who?")), Refusal(401, "who?"))

    def test_crash_is_a_500_with_a_log_line(self) -> None:
        """A hook raising anything else refuses with 500 and logs the failure."""
        self.assertEqual(self.run_hook(ValueError("bug")), Refusal(500, "internal server error"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_deferred_answer_waits(self) -> None:
        """A hook returning an unfired Deferred is answered when it fires; a refusal through it refuses."""
        gate: Deferred[None] = Deferred()
        decided = self.run_hook(gate)
        assert isinstance(decided, Deferred)
        self.assertNoResult(decided)
        gate.errback(RefuseConnection(403, "later"))
        self.assertEqual(self.successResultOf(decided), Refusal(403, "later"))
        self.assertIsNone(self.run_hook(succeed(None)))

    def test_async_def_refusal_is_awaited(self) -> None:
        """An async def hook that refuses after waiting refuses (the bug of issue 10)."""
        gate: Deferred[None] = Deferred()

        class AsyncGate(Hub):
            async def on_connecting(self, request: ConnectionRequest) -> None:
                await gate
                raise RefuseConnection(401, "async no")

        decided = run_on_connecting(AsyncGate(), request())
        assert isinstance(decided, Deferred)
        self.assertNoResult(decided)
        gate.callback(None)
        self.assertEqual(self.successResultOf(decided), Refusal(401, "async no"))


class Address:
    """An IAddress with a host."""

    def __init__(self, host: str) -> None:
        self.host = host


class HandshakeWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limits = ConnectionLimits(self.clock, max_connections=1, handshake_timeout=5.0)
        self.connecting = True
        self.aborts = 0

    def watch(self) -> HandshakeWatch:
        def abort() -> None:
            self.aborts += 1

        return HandshakeWatch(self.limits, lambda: self.connecting, abort, lambda delay, f: call_later(self.clock, delay, f))

    def test_counts_until_lost_and_refuses_over_the_cap(self) -> None:
        """An accepted connection is counted until lost; one over the cap is refused and not counted."""
        first, second = self.watch(), self.watch()
        self.assertTrue(first.accepted(Address("192.0.2.1"), counted_by_guard=False))  # type: ignore[arg-type]
        self.assertFalse(second.accepted(Address("192.0.2.2"), counted_by_guard=False))  # type: ignore[arg-type]
        self.assertTrue(second.refused)
        self.assertEqual(self.limits.open_connections, 1)
        first.lost()
        self.assertEqual(self.limits.open_connections, 0)

    def test_deadline_aborts_a_slow_handshake(self) -> None:
        """Still connecting when the handshake timeout passes (on the clock): aborted once."""
        watch = self.watch()
        watch.accepted(Address("192.0.2.1"), counted_by_guard=False)  # type: ignore[arg-type]
        self.clock.advance(4.9)
        self.assertEqual(self.aborts, 0)
        self.clock.advance(0.1)
        self.assertEqual(self.aborts, 1)

    def test_opened_cancels_the_deadline(self) -> None:
        """A handshake done in time cancels the deadline: no abort, no timer left."""
        watch = self.watch()
        watch.accepted(Address("192.0.2.1"), counted_by_guard=False)  # type: ignore[arg-type]
        watch.opened()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.aborts, 0)

    def test_guarded_connection_is_not_counted_twice(self) -> None:
        """Behind a ConnectionGuard the watch counts nothing but still keeps the deadline."""
        watch = self.watch()
        self.assertTrue(watch.accepted(Address("192.0.2.1"), counted_by_guard=True))  # type: ignore[arg-type]
        self.assertEqual(self.limits.open_connections, 0)
        self.clock.advance(5.0)
        self.assertEqual(self.aborts, 1)
        watch.lost()
        self.assertEqual(self.limits.open_connections, 0)


# -- the output budget --------------------------------------------------------


class OutputBudgetTests(SynchronousTestCase):
    def test_paused_writes_count_up_to_the_limit(self) -> None:
        """While paused each write counts with its overhead; the one over the limit is refused and stops the budget."""
        budget = OutputBudget(1000)
        budget.pause()
        self.assertTrue(budget.take(400))
        self.assertTrue(budget.take(400))
        self.assertEqual(budget.written_while_paused, 800 + 2 * BUFFERED_WRITE_OVERHEAD)
        self.assertFalse(budget.take(100))
        self.assertTrue(budget.stopped)
        self.assertEqual(budget.refused_at, 900 + 3 * BUFFERED_WRITE_OVERHEAD)
        self.assertEqual(budget.written_while_paused, 800 + 2 * BUFFERED_WRITE_OVERHEAD)

    def test_repeated_pause_keeps_the_count_and_resume_clears_it(self) -> None:
        """A second pause does not restart the count; resume does."""
        budget = OutputBudget(1000)
        budget.pause()
        budget.take(500)
        budget.pause()
        self.assertEqual(budget.written_while_paused, 500 + BUFFERED_WRITE_OVERHEAD)
        budget.resume()
        self.assertEqual((budget.paused, budget.written_while_paused), (False, 0))

    def test_the_write_that_filled_the_buffer_counts(self) -> None:
        """filled(n) starts the count with the write that paused the transport."""
        budget = OutputBudget(1000)
        budget.pause()
        budget.filled(700)
        self.assertFalse(budget.take(300))



class InstanceSizeTests(SynchronousTestCase):
    def test_a_session_keeps_its_attributes_key_shared(self) -> None:
        """
        A server session has fewer than 30 instance attributes: CPython shares
        the keys of instance dicts only up to 30 (SHARED_KEYS_MAX_SIZE), and an
        unshared dict costs each idle connection about 1.3 KB more (measured:
        the idle1000 bench's RSS per connection, docs/performance.md).
        """
        from twisted_hub.testing import HubTestServer

        class Small(Hub):
            hub_name = "small"

        server = HubTestServer([Small], heartbeat=HeartbeatPolicy.every(1.0))
        session = server.connect("small").server_protocol.session
        self.assertLess(len(vars(session)), 30, sorted(vars(session)))

    def test_a_connection_keeps_its_instance_dict_small(self) -> None:
        """
        A server connection has at most 85 instance attributes through its
        handshake, heartbeats and calls: CPython's dict of 86 to 170 keys
        takes 3.3 KB, one of up to 85 1.5 KB (bench/conn_memory_sites.py).
        """
        from twisted_hub.testing import HubTestServer

        class Echo(Hub):
            hub_name = "echo"

            @method
            def echo(self, value: object) -> object:
                return value

        server = HubTestServer([Echo], heartbeat=HeartbeatPolicy.every(1.0, 3.0))
        connection = server.connect("echo")
        answered = connection.client.call("echo", 1)
        server.advance(3.5)
        self.assertEqual(self.successResultOf(answered), 1)
        self.assertLessEqual(len(vars(connection.server_protocol)), 85, sorted(vars(connection.server_protocol)))

    def test_an_idle_connection_keeps_no_queues_and_no_raw_handshake(self) -> None:
        """
        The call queue and the held-frames queue are made when first used (an
        empty deque is 760 bytes, and an idle connection never uses them); the
        upgrade's raw request and response text is let go once open, the
        parsed request stays.
        """
        from twisted_hub.testing import HubTestServer

        class Echo(Hub):
            hub_name = "echo"

            @method
            def echo(self, value: object) -> object:
                return value

        server = HubTestServer([Echo], heartbeat=HeartbeatPolicy.every(1.0, 3.0))
        connection = server.connect("echo")
        answered = connection.client.call("echo", 1)
        server.advance(3.5)
        self.assertEqual(self.successResultOf(answered), 1)
        protocol = connection.server_protocol
        assert protocol.session is not None
        self.assertEqual((protocol.session.dispatcher._queue, protocol.held._frames), (None, None))
        self.assertEqual((protocol.http_request_data, protocol.http_response_data), (b"", ""))
        self.assertEqual(protocol.session.request.headers["host"], "127.0.0.1:80")
