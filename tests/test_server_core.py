"""
The server's sans-IO session core without Twisted: L{ServerSession} and its
units driven with time passed in, timers that a test fires by hand, and a
sans-IO L{ClientConnection} as the peer.  Nothing here runs a reactor, and a
subprocess proves the core modules load no Twisted or autobahn at all.
"""

from __future__ import annotations

import unittest
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted_hub._core.admission import HandshakeWatch
from twisted_hub._core.backpressure import OutputBudget
from twisted_hub._core.calls import CallRules
from twisted_hub._core.connection import ClientConnection
from twisted_hub._core.connection_limits import ConnectionCounts
from twisted_hub._core.errors import CallTimeoutError, ConnectionClosedError, DisconnectKind, DisconnectReason, HubError
from twisted_hub._core.heartbeat import HeartbeatPolicy
from twisted_hub._core.heartbeat_member import HeartbeatMembership
from twisted_hub._core.log import CoreLog
from twisted_hub._core.server_session import ServerSession
from twisted_hub._core.wire import CAP_BATCH, CAP_HEARTBEAT, CAP_TOKEN_REFRESH, ClientInvoke, Close, CloseCode, Invoke, Notify

# That no core module loads Twisted, autobahn, zope or prometheus is tested for every module of
# twisted_hub/_core/ at once: tests/test_architecture.py (CoreTests.test_core_loads_no_framework).


# -- fakes --------------------------------------------------------------------


@dataclass
class Prepared:
    payload: bytes


@dataclass
class Transport:
    """A ServerTransport that records what it was asked."""

    peer: str | None = "tcp:192.0.2.7:40000"
    can_send: bool = True
    frames: list[bytes] = field(default_factory=list)
    closes: list[tuple[int, str, bool]] = field(default_factory=list)
    aborted: int = 0
    moved: int = 0
    #: the close codes of L{moved_away}, in order
    moved_codes: list[int] = field(default_factory=list)

    def moved_away(self, code: int = 4006, reason: str = "") -> None:
        self.moved += 1
        self.moved_codes.append(code)
        self.can_send = False

    def send_frame(self, payload: bytes, urgent: bool = False) -> None:
        self.frames.append(payload)

    def send_prepared(self, prepared: Any, urgent: bool = False) -> bool:
        self.frames.append(prepared.payload)
        return True

    def send_raw(self, data: bytes, urgent: bool = False) -> None:
        pass

    def send_close(self, code: int, reason: str, drop_after: bool) -> None:
        self.closes.append((code, reason, drop_after))
        self.can_send = False

    def abort(self) -> None:
        self.aborted += 1

    def queued_bytes(self) -> int | None:
        return 0

    def receiving(self) -> tuple[int, bool]:
        return 0, False


class IO:
    """A ServerIO whose time a test sets and whose timers a test fires (L{advance})."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], object]]] = []
        self.settled: list[tuple[str, Any, Any]] = []
        self.events: list[Any] = []
        self.fresh: list[tuple[str, int, Any]] = []

    def seconds(self) -> float:
        return self.now

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        entry = (self.now + delay, function)
        self.timers.append(entry)
        return lambda: self.timers.remove(entry) if entry in self.timers else None

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for entry in sorted(t for t in self.timers if t[0] <= self.now):
            if entry in self.timers:
                self.timers.remove(entry)
                entry[1]()

    def client_result(self, token: Any, value: Any) -> None:
        self.settled.append(("result", token, value))

    def client_failed(self, token: Any, error: Exception) -> None:
        self.settled.append(("failed", token, error))

    def check_fresh_token(self, token: str, sequence: int, previous: Any) -> None:
        self.fresh.append((token, sequence, previous))

    def joined(self) -> None:
        self.events.append("joined")

    def left(self) -> None:
        self.events.append("left")

    def run_hook(self, name: str, reason: DisconnectReason | None) -> None:
        self.events.append((name, reason))

    def closed(self) -> None:
        self.events.append("closed")


@dataclass
class Host:
    max_message_size: int = 1024 * 1024
    max_messages_per_frame: int = 1024
    client_result_timeout: float = 5.0
    hello_timeout: float = 10.0
    authenticator: object | None = None
    connection_count: int = 0
    groups: list[Any] = field(default_factory=list)
    #: resumable sessions (docs/resumption.md): on with a ResumePolicy
    resume_policy: Any = None
    registries: dict[str, Any] = field(default_factory=dict)
    #: sessions may be claimed from other nodes (docs/resumption.md, "Across nodes"): the claims made
    moves_sessions: bool = False
    claims: list[tuple[Any, bytes, bytes, str | None]] = field(default_factory=list)
    #: quiet sessions' snapshots are kept (docs/resumption.md, "When a node dies"): key -> state, and the deletes
    snapshots: bool = False
    saved: dict[bytes, bytes] = field(default_factory=dict)
    forgotten: list[bytes] = field(default_factory=list)
    #: save_snapshot answers this (False: as if Redis were away); the writes made
    save_ok: bool = True
    writes: int = 0

    def save_snapshot(self, hub_name: str, key: bytes, state: bytes) -> bool:
        if self.save_ok:
            self.saved[key] = state
            self.writes += 1
        return self.save_ok

    def forget_snapshot(self, key: bytes) -> None:
        self.saved.pop(key, None)
        self.forgotten.append(key)

    def scheduler_for(self, policy: HeartbeatPolicy) -> Any:
        return Group(self.groups)

    def claim_session(self, session: Any, key: bytes, digest: bytes, user: str | None) -> None:
        self.claims.append((session, key, digest, user))

    def resume_registry(self, hub_name: str) -> Any:
        from twisted_hub._core.resume import SessionRegistry

        if hub_name not in self.registries:
            self.registries[hub_name] = SessionRegistry(self.resume_policy, b"epoc")
        return self.registries[hub_name]


class Group:
    def __init__(self, members: list[Any]) -> None:
        self.members = members
        self.acknowledged = 0

    def add(self, member: HeartbeatMembership) -> None:
        self.members.append(member)

    def remove(self, member: HeartbeatMembership) -> None:
        self.members.remove(member)


class Calls:
    """A CallSink that records the calls it got."""

    def __init__(self) -> None:
        self.received: list[tuple[Invoke | Notify, int]] = []
        self.closed = False
        self.in_progress = 0
        self.pending_bytes = 0

    def receive(self, invocation: Invoke | Notify, size: int) -> None:
        self.received.append((invocation, size))

    def close(self) -> None:
        self.closed = True


class Observer:
    """A SessionObserver that records every report."""

    def __init__(self) -> None:
        self.reports: list[tuple[Any, ...]] = []

    def connected(self) -> None:
        self.reports.append(("connected",))

    def disconnected(self, now: float, connection_id: str, reason: DisconnectReason, text: str) -> None:
        self.reports.append(("disconnected", reason.kind, reason.code, text))

    def slow_consumer_closed(self) -> None:
        self.reports.append(("slow",))

    def frame_received(self, messages: int) -> None:
        self.reports.append(("frame", messages))

    def heartbeat_answered(self, latency: float) -> None:
        self.reports.append(("answered", latency))

    def heartbeat_timed_out(self) -> None:
        self.reports.append(("timed out",))


class Log:
    """A CoreLog that keeps its lines' formats."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, format: str) -> None:
        self.lines.append((level, format))

    def debug(self, format: str, **fields: Any) -> None:
        self._add("debug", format)

    def info(self, format: str, **fields: Any) -> None:
        self._add("info", format)

    def warn(self, format: str, **fields: Any) -> None:
        self._add("warn", format)

    def error(self, format: str, **fields: Any) -> None:
        self._add("error", format)

    def failure(self, format: str, error: BaseException | None = None, **fields: Any) -> None:
        self._add("failure", format)


@dataclass
class User:
    id: str
    expires_at: float | None = None

    def expires_in(self, now: float) -> float | None:
        return None if self.expires_at is None else max(self.expires_at - now, 0.0)


@dataclass
class Slot:
    user: Any = None


class CoreCase(unittest.TestCase):
    """A core session on fakes, with a sans-IO client at the other end."""

    policy = HeartbeatPolicy(enabled=False)

    def setUp(self) -> None:
        self.io = IO()
        self.host = Host()
        self.transport = Transport()
        self.observer = Observer()
        self.log = Log()
        log: CoreLog = self.log
        self.session: ServerSession[str] = ServerSession(
            self.transport, self.io, self.host, "c1", "echo", self.policy, OutputBudget(4096), self.observer, log, Log(),
        )
        self.calls = Calls()
        self.session.dispatcher = self.calls
        self.slot = Slot()
        self.session.tokens.slot = self.slot
        self.client: ClientConnection[Any] = ClientConnection((CAP_BATCH, CAP_HEARTBEAT, CAP_TOKEN_REFRESH))

    def to_client(self) -> list[Any]:
        events = [e for frame in self.transport.frames for e in self.client.receive_frame(frame, self.io.now)]
        self.transport.frames.clear()
        return events

    def to_server(self) -> None:
        for frame in self.client.frames_to_send():
            self.session.receive(frame, True)

    def open(self) -> None:
        self.session.opened()
        self.to_client()
        self.client.hello(1024 * 1024)
        self.to_server()


class OpeningTests(CoreCase):
    def test_open_joins_reports_and_runs_on_connected(self) -> None:
        """opened() joins the hub layer, counts, reports a connect and runs on_connected, in that order."""
        self.session.opened()
        self.assertEqual(self.io.events, ["joined", ("on_connected", None)])
        self.assertEqual((self.host.connection_count, self.observer.reports), (1, [("connected",)]))

    def test_hello_deadline_is_a_timer_of_the_adapter(self) -> None:
        """No hello by the deadline (a timer the IO fires): closed with 4003 and the handshake-failed reason."""
        self.session.opened()
        self.io.advance(9.99)
        self.assertEqual(self.transport.closes, [])
        self.io.advance(0.01)
        self.assertEqual(self.transport.closes, [(CloseCode.HANDSHAKE_FAILED, "no hello", False)])
        assert self.session.lifecycle.decided is not None
        self.assertIs(self.session.lifecycle.decided.kind, DisconnectKind.HANDSHAKE_FAILED)

    def test_hello_cancels_the_deadline(self) -> None:
        """The client's hello cancels the hello timer: nothing is left scheduled, nothing closes."""
        self.open()
        self.assertEqual(self.io.timers, [])
        self.io.advance(60)
        self.assertEqual(self.transport.closes, [])

    def test_calls_go_to_the_sink_with_their_share_of_the_frame(self) -> None:
        """Each INVOKE of a frame goes to the call sink with its share of the frame's bytes; the frame is reported."""
        self.open()
        self.client.invoke("a", "echo", [1])
        self.client.invoke("b", "echo", [2])
        [frame] = self.client.frames_to_send()
        self.session.receive(frame, True)
        self.assertEqual([(i.method, i.args, size) for i, size in self.calls.received], [
            ("echo", [1], len(frame) // 2), ("echo", [2], len(frame) // 2),
        ])
        self.assertEqual(self.observer.reports[-1], ("frame", 2))


class ClientResultTests(CoreCase):
    def test_answer_settles_the_token(self) -> None:
        """The client's RESULT settles the adapter's token with the value and stops its timeout."""
        self.open()
        self.session.call_client("token-1", "answer", ["why?"], None, None)
        [asked] = [e for e in self.to_client() if isinstance(e, ClientInvoke)]
        self.assertEqual(len(self.io.timers), 1)
        self.client.reply(asked.call_id, "because")
        self.to_server()
        self.assertEqual((self.io.settled, self.io.timers), ([("result", "token-1", "because")], []))

    def test_error_settles_the_token_with_a_hub_error(self) -> None:
        """The client's ERROR fails the token with a HubError of its code and message."""
        self.open()
        self.session.call_client("t", "answer", [], None, None)
        [asked] = [e for e in self.to_client() if isinstance(e, ClientInvoke)]
        self.client.reply_error(asked.call_id, "nope", "no answer")
        self.to_server()
        [(how, token, error)] = self.io.settled
        self.assertEqual((how, token, type(error), error.code, error.message), ("failed", "t", HubError, "nope", "no answer"))

    def test_timeout_fails_the_token_and_drops_a_late_answer(self) -> None:
        """At the timeout (time passed in) the token fails with CallTimeoutError; the late answer settles nothing."""
        self.open()
        self.session.call_client("t", "answer", [], None, 2.0)
        [asked] = [e for e in self.to_client() if isinstance(e, ClientInvoke)]
        self.io.advance(1.99)
        self.assertEqual(self.io.settled, [])
        self.io.advance(0.01)
        [(how, token, error)] = self.io.settled
        self.assertEqual((how, token, str(error)), ("failed", "t", "[timeout] client did not answer 'answer' within 2.0s"))
        self.assertIsInstance(error, CallTimeoutError)
        self.client.reply(asked.call_id, "late")
        self.to_server()
        self.assertEqual((len(self.io.settled), self.session.core.late_answers), (1, 1))

    def test_forget_stops_waiting(self) -> None:
        """forget (the adapter's waiter was cancelled) stops the timer; the answer then settles nothing."""
        self.open()
        call_id = self.session.call_client("t", "answer", [], None, None)
        self.session.results.forget(call_id)
        self.assertEqual(self.io.timers, [])
        self.io.advance(10)
        self.assertEqual(self.io.settled, [])

    def test_end_fails_pending_tokens_as_maybe_run(self) -> None:
        """The connection's end fails pending tokens with ConnectionClosedError(may_have_run=True) and stops their timers."""
        self.open()
        self.session.call_client("t", "answer", [], None, None)
        self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        [(how, token, error)] = self.io.settled
        self.assertIsInstance(error, ConnectionClosedError)
        self.assertTrue(error.may_have_run)
        self.assertEqual(self.io.timers, [])

    def test_call_after_close_raises_with_the_reason(self) -> None:
        """call_client after a close decision raises ConnectionClosedError with that reason, sending nothing."""
        self.open()
        self.session.close_with(CloseCode.KICKED, "out", DisconnectKind.KICKED)
        with self.assertRaises(ConnectionClosedError) as raised:
            self.session.call_client("t", "answer", [], None, None)
        self.assertIs(raised.exception.reason.kind, DisconnectKind.KICKED)


class TokenTests(CoreCase):
    def test_expiry_closes_with_4005(self) -> None:
        """A user whose token expires is closed with 4005 when the adapter's timer fires (not before)."""
        self.session.authenticated(User("ann", expires_at=self.io.now + 30))  # type: ignore[arg-type]
        self.open()
        self.io.advance(29.9)
        self.assertEqual(self.transport.closes, [])
        self.io.advance(0.1)
        self.assertEqual([c[0] for c in self.transport.closes], [CloseCode.TOKEN_EXPIRED])

    def test_fresh_token_of_the_same_user_moves_the_expiry(self) -> None:
        """A fresh token is handed to the adapter; the same user's acceptance moves the expiry and is answered."""
        self.host.authenticator = object()
        self.session.authenticated(User("ann", expires_at=self.io.now + 30))  # type: ignore[arg-type]
        self.open()
        self.client.send_token("fresh")
        self.to_server()
        [(token, sequence, previous)] = self.io.fresh
        self.assertEqual((token, previous.id), ("fresh", "ann"))
        self.session.tokens.accepted(sequence, User("ann", expires_at=self.io.now + 100), self.io.now)  # type: ignore[arg-type]
        self.io.advance(50)
        self.assertEqual(self.transport.closes, [])
        self.assertEqual(self.slot.user.expires_at, 1100.0)

    def test_another_users_token_is_forbidden(self) -> None:
        """A fresh token accepted for another user is answered forbidden and replaces nothing."""
        self.host.authenticator = object()
        self.session.authenticated(User("ann"))  # type: ignore[arg-type]
        self.open()
        self.client.send_token("mallory")
        self.to_server()
        [(_, sequence, _)] = self.io.fresh
        self.session.tokens.accepted(sequence, User("mallory"), self.io.now)  # type: ignore[arg-type]
        [answer] = [e for e in self.to_client() if hasattr(e, "error")]
        self.assertEqual((answer.error, self.slot.user.id), ("forbidden", "ann"))


class EndTests(CoreCase):
    def test_end_does_the_bookkeeping_in_order(self) -> None:
        """The end: leave the hub layer, uncount, report, close the sink, run on_disconnected, then wake 'closed'."""
        self.open()
        self.io.events.clear()
        reason = self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.assertEqual(self.io.events, ["left", ("on_disconnected", reason), "closed"])
        self.assertEqual((self.host.connection_count, self.calls.closed), (0, True))
        self.assertEqual(self.observer.reports[-1], ("disconnected", DisconnectKind.CONNECTION_LOST, None, ""))
        self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.assertEqual(self.io.events[-1], "closed")
        self.assertEqual(self.host.connection_count, 0)  # counted down once

    def test_never_opened_only_ends(self) -> None:
        """A session that never opened only wakes 'closed': no leaving, no count, no report."""
        self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.assertEqual((self.io.events, self.observer.reports), (["closed"], []))

    def test_peer_close_message_is_the_reason(self) -> None:
        """The client's CLOSE message is the reason the connection ended."""
        self.open()
        self.client.send(Close(CloseCode.NORMAL, "bye"))
        self.to_server()
        reason = self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.assertEqual((reason.kind, reason.code, reason.message), (DisconnectKind.NORMAL, 1000, "bye"))


class HeartbeatCoreTests(CoreCase):
    policy = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)

    def test_hello_joins_the_group_and_the_end_leaves_it(self) -> None:
        """After hello the session's heartbeat unit is a member of its policy's group; the end removes it."""
        self.open()
        self.assertEqual(self.host.groups, [self.session.heartbeat])
        self.assertTrue(self.session.heartbeat_active)
        self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST))
        self.assertEqual(self.host.groups, [])

    def test_timeout_reports_and_closes_with_4001(self) -> None:
        """A heartbeat timeout is reported to the observer and closes with 4001 without waiting for the reply."""
        self.open()
        self.session.heartbeat.heartbeat_timed_out()
        self.assertIn(("timed out",), self.observer.reports)
        self.assertEqual(self.transport.closes, [(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout", True)])


# -- call rules (_calls.py) without Twisted -------------------------------------


class Awaitable:
    """A result a hub method is still working on (it has __await__), settled by the test."""

    def __await__(self) -> Any:
        raise AssertionError("the rules never await a result themselves")


class ManualRules(CallRules):
    """CallRules whose awaited results the test settles (no Deferreds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaited: list[tuple[Any, ...]] = []
        self.idle = 0

    def _await(self, result: Any, call_id: int | None, method: str, size: int, started: float) -> None:
        self.awaited.append((call_id, method, size, started))

    def settle(self, value: Any) -> None:
        self._async_done(value, *self.awaited.pop(0))

    def fail(self, error: BaseException) -> None:
        self._async_failed(error, *self.awaited.pop(0))

    def _idle(self) -> None:
        self.idle += 1


class RulesHub:
    hub_name = "work"


@dataclass
class Spec:
    """A MethodSpec for a plain function with one int argument."""

    function: Callable[..., Any]
    checks: tuple[tuple[int, str, tuple[type, ...]], ...] = ((0, "n", (int,)),)

    def check(self, args: list[Any], kwargs: dict[str, Any] | None) -> None:
        if args and not isinstance(args[0], int):
            raise HubError("invalid-arguments", "n must be int")

    def explain_type_error(self, args: list[Any], kwargs: dict[str, Any] | None) -> str | None:
        return "work(n) takes one argument" if len(args) != 1 else None

    def usage(self) -> dict[str, Any]:
        return {"usage": "work(n)"}


class Answers:
    def __init__(self) -> None:
        self.answers: list[tuple[Any, ...]] = []
        self.logged: list[str] = []
        self.crashes: list[str] = []

    def answer_result(self, call_id: int, method: str, value: Any) -> bool:
        self.answers.append(("result", call_id, value))
        return True

    def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        self.answers.append(("error", call_id, code, message))

    def peer_mistake(self, format: str, **fields: Any) -> None:
        self.logged.append("mistake")

    def call_failed(self, format: str, **fields: Any) -> None:
        self.logged.append("failed")

    def method_crashed(self, method: str, failure: Any) -> None:
        self.crashes.append(method)

    def hold_answers(self) -> None:
        pass

    def release_answers(self) -> None:
        pass


class Outcomes:
    """A CallObserver that records each outcome, with its duration."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, float | None]] = []

    def refused(self, method: str) -> None:
        self.seen.append((method, "refused", None))

    def ended(self, method: str, outcome: int, seconds: float) -> None:
        self.seen.append((method, outcome, seconds))


class CallRulesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.now = 0.0
        self.pending: list[Awaitable] = []

        def work(hub: Any, n: int) -> Any:
            if n < 0:
                raise ValueError("negative")
            return Awaitable() if n == 0 else n * 2

        self.answers = Answers()
        self.outcomes = Outcomes()
        self.rules = ManualRules(
            RulesHub(), {"work": Spec(work)}, self.answers, max_pending_calls=2, metrics=self.outcomes,
            now=lambda: self.now,
        )

    def test_sync_result_is_answered_and_timed(self) -> None:
        """A method that returns at once is answered at once; its outcome is reported as OK (0)."""
        self.rules.receive(Invoke(1, "work", [21]), 10)
        self.assertEqual(self.answers.answers, [("result", 1, 42)])
        self.assertEqual(self.outcomes.seen, [("work", 0, 0.0)])

    def test_calls_wait_their_turn_and_count_against_the_limit(self) -> None:
        """While a call is awaited the next one is queued (in order); over max_pending_calls the next is refused."""
        self.rules.receive(Invoke(1, "work", [0]), 10)
        self.rules.receive(Invoke(2, "work", [1]), 20)
        self.rules.receive(Invoke(3, "work", [1]), 30)
        self.assertEqual((self.rules.in_progress, self.rules.pending_bytes), (2, 30))
        self.assertEqual(self.answers.answers, [("error", 3, "too-many-pending", "more than 2 calls pending on this connection")])
        self.now = 1.5
        self.rules.settle("done")
        self.assertEqual(self.answers.answers[1:], [("result", 1, "done"), ("result", 2, 2)])
        self.assertEqual((self.rules.in_progress, self.rules.pending_bytes, self.rules.idle), (0, 0, 1))
        self.assertEqual(self.outcomes.seen, [("work", "refused", None), ("work", 0, 1.5), ("work", 0, 0.0)])

    def test_unknown_method_and_bad_arguments_are_the_peers_mistakes(self) -> None:
        """An unknown method and a failed argument check are answered with their codes and logged as mistakes."""
        self.rules.receive(Invoke(1, "nope", []), 1)
        self.rules.receive(Invoke(2, "work", ["x"]), 1)
        self.rules.receive(Invoke(3, "work", [1, 2]), 1)
        self.assertEqual([a[2] for a in self.answers.answers], ["unknown-method", "invalid-arguments", "invalid-arguments"])
        self.assertEqual(self.answers.answers[2][3], "work(n) takes one argument")
        self.assertEqual(self.answers.logged, ["mistake", "mistake", "mistake"])

    def test_crash_is_an_internal_error_and_a_report(self) -> None:
        """A method raising something else is reported as crashed and answered 'internal error' (no detail)."""
        self.rules.receive(Invoke(1, "work", [-1]), 1)
        self.assertEqual(self.answers.answers, [("error", 1, "internal", "internal error")])
        self.assertEqual((self.answers.crashes, self.outcomes.seen[-1][1]), (["work"], 2))

    def test_awaited_hub_error_is_answered_with_its_code(self) -> None:
        """An awaited result failing with a HubError is answered with its code and counted by it."""
        self.rules.receive(Invoke(1, "work", [0]), 1)
        self.rules.fail(HubError("forbidden", "not you"))
        self.assertEqual(self.answers.answers, [("error", 1, "forbidden", "not you")])
        self.assertEqual(self.answers.logged, ["failed"])

    def test_nothing_is_answered_after_close(self) -> None:
        """After close a running call's result is not answered and queued calls are dropped."""
        self.rules.receive(Invoke(1, "work", [0]), 10)
        self.rules.receive(Notify("work", [1]), 5)
        self.rules.close()
        self.rules.settle("late")
        self.assertEqual((self.answers.answers, self.rules.in_progress, self.rules.pending_bytes), ([], 0, 0))


# -- admission and counts (_admission.py, _connection_limits.py) without Twisted --


@dataclass
class Peer:
    host: str


class HandshakeWatchCoreTests(unittest.TestCase):
    def setUp(self) -> None:
        self.io = IO()
        self.log = Log()
        self.counts = ConnectionCounts(self.io, self.log, max_connections=2, handshake_timeout=5.0)
        self.connecting = True
        self.aborted = 0

    def watch(self) -> HandshakeWatch:
        def abort() -> None:
            self.aborted += 1

        return HandshakeWatch(self.counts, lambda: self.connecting, abort, self.io.call_later)

    def test_deadline_is_the_adapters_timer(self) -> None:
        """A handshake still going at the deadline is aborted and logged once; the count drops when it is lost."""
        watch = self.watch()
        self.assertTrue(watch.accepted(Peer("192.0.2.1"), counted_by_guard=False))
        self.assertEqual((self.counts.open_connections, len(self.io.timers)), (1, 1))
        self.io.advance(4.99)
        self.assertEqual(self.aborted, 0)
        self.io.advance(0.01)
        self.assertEqual(self.aborted, 1)
        self.assertEqual([level for level, _ in self.log.lines], ["warn"])
        watch.lost()
        self.assertEqual(self.counts.open_connections, 0)

    def test_opened_stops_the_deadline(self) -> None:
        """A handshake that finished cancels its timer: nothing is aborted later."""
        watch = self.watch()
        watch.accepted(Peer("192.0.2.1"), counted_by_guard=False)
        watch.opened()
        self.assertEqual(self.io.timers, [])

    def test_an_open_connection_keeps_only_its_count(self) -> None:
        """After the handshake the watch lets its callables go, and still uncounts the connection when it is lost."""
        import gc

        watch = self.watch()
        watch.accepted(Peer("192.0.2.1"), counted_by_guard=False)
        watch.opened()
        self.assertFalse([r for r in gc.get_referents(watch) if callable(r) and not isinstance(r, type)])
        watch.lost()
        self.assertEqual((self.counts.open_connections, self.aborted), (0, 0))

    def test_over_the_cap_is_refused_uncounted(self) -> None:
        """A connection over max_connections is refused at once: not counted, no timer."""
        first, second, third = self.watch(), self.watch(), self.watch()
        self.assertTrue(first.accepted(Peer("192.0.2.1"), counted_by_guard=False))
        self.assertTrue(second.accepted(Peer("192.0.2.2"), counted_by_guard=False))
        self.assertFalse(third.accepted(Peer("192.0.2.3"), counted_by_guard=False))
        self.assertTrue(third.refused)
        self.assertEqual((self.counts.open_connections, len(self.io.timers)), (2, 2))
