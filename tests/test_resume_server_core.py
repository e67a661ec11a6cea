"""
Session resumption in the server's sans-IO session (docs/resumption.md,
docs/protocol.md section 10), on the fakes of tests/test_server_core.py:
time passed in, timers fired by hand, a sans-IO client core as the peer.
"""

from __future__ import annotations

from typing import Any

from twisted_hub._core.backpressure import OutputBudget
from twisted_hub._core.connection import ClientConnection
from twisted_hub._core.errors import DisconnectKind, DisconnectReason
from twisted_hub._core.resume import ResumePolicy, SessionLedger
from twisted_hub._core.resume_link import ResumeLink
from twisted_hub._core.server_session import ServerSession
from twisted_hub._core.wire import (
    CAP_BATCH,
    CAP_HEARTBEAT,
    CAP_RESUME,
    Ack,
    Close,
    CloseCode,
    Error,
    ErrorCode,
    ReceiverCall,
    Result,
    Resume,
    Resumed,
    ResumeReason,
    ResumeRefused,
    SessionGrant,
    StreamCredit,
    StreamEnd,
    StreamItem,
    Welcome,
    encode,
)

from .test_server_core import Calls, CoreCase, Log, Observer, Slot, Transport, User

WINDOW = 30.0


def receiver_call(number: int) -> bytes:
    return encode(ReceiverCall("item", [number]))


class ResumeCase(CoreCase):
    """A server with resume on and a client that announced it."""

    def setUp(self) -> None:
        super().setUp()
        self.host.resume_policy = ResumePolicy(window=WINDOW, ack_every=4, ack_delay=2.0)
        self.client = ClientConnection((CAP_BATCH, CAP_HEARTBEAT, CAP_RESUME))

    def grant(self) -> SessionGrant:
        """Open the connection; return the SESSION the server sent after the HELLO."""
        self.session.opened()
        [welcome] = self.to_client()
        assert isinstance(welcome, type(welcome))
        self.client.hello(1024 * 1024)
        self.to_server()
        frames = list(self.transport.frames)
        self.transport.frames.clear()
        grants = [m for f in frames for m in self.client.receive_frame(f, self.io.now)]
        [grant] = grants
        assert isinstance(grant, SessionGrant)
        # the client numbers and counts from here (as ClientResumption does)
        self.client.resume = ResumeLink(SessionLedger(ResumePolicy()), lambda: self.io.now)
        return grant

    def newcomer(self, transport: Transport | None = None, connection_id: str = "c2") -> ServerSession[str]:
        """A second connection's session on the same host (it says nothing yet)."""
        session: ServerSession[str] = ServerSession(
            transport or Transport(), self.io, self.host, connection_id, "echo", self.policy, OutputBudget(4096),
            Observer(), Log(), Log(),
        )
        session.dispatcher = Calls()
        session.tokens.slot = Slot()
        return session

    def resume_on(self, session: ServerSession[str], token: bytes, received: int) -> list[Any]:
        """HELLO + RESUME in one frame on C{session}; return what the client gets on that connection."""
        session.opened()
        client: ClientConnection[Any] = ClientConnection((CAP_BATCH, CAP_HEARTBEAT, CAP_RESUME))
        transport = session.transport
        assert isinstance(transport, Transport)
        for frame in transport.frames:
            client.receive_frame(frame, self.io.now)  # the WELCOME
        transport.frames.clear()
        client.hello(1024 * 1024, Resume(token, received))
        [frame] = client.frames_to_send()
        session.receive(frame, True)
        events = [m for f in transport.frames for m in client.receive_frame(f, self.io.now)]
        transport.frames.clear()
        self.resumed_client = client
        return events

    def drop(self) -> None:
        """The link fails (no close handshake)."""
        self.transport.can_send = False
        self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "peer dropped"))


class NegotiationTests(ResumeCase):
    def test_welcome_announces_resume_and_session_comes_first(self) -> None:
        """WELCOME lists resume; on_connected waits for the HELLO; SESSION is the first message after it."""
        self.session.opened()
        self.to_client()
        welcome = self.client.welcome
        assert isinstance(welcome, Welcome)
        self.assertIn(CAP_RESUME, welcome.capabilities)
        self.assertEqual(self.io.events, [])  # not joined, no on_connected before the hello
        self.client.hello(1024 * 1024)
        self.to_server()
        [grant] = self.to_client()
        assert isinstance(grant, SessionGrant)
        self.assertEqual((len(grant.token), grant.window), (32, WINDOW))
        self.assertEqual(self.io.events, ["joined", ("on_connected", None)])
        self.assertEqual(self.host.connection_count, 1)

    def test_a_client_without_resume_gets_no_session(self) -> None:
        """A HELLO without resume: no SESSION, nothing numbered, on_connected at the hello."""
        self.client = ClientConnection((CAP_BATCH, CAP_HEARTBEAT))
        self.open()
        self.assertEqual(self.to_client()[1:], [])
        self.assertIsNone(self.session.resumable)
        self.assertIsNone(self.session.core.resume)
        self.assertEqual(self.io.events, ["joined", ("on_connected", None)])

    def test_an_ack_without_resume_is_a_protocol_error(self) -> None:
        """ACK from a client that did not negotiate resume closes with 4002."""
        self.client = ClientConnection((CAP_BATCH, CAP_HEARTBEAT))
        self.open()
        self.to_client()
        self.session.receive(encode(Ack(0)), True)
        self.assertEqual(self.transport.closes[0][0], CloseCode.PROTOCOL_ERROR)

    def test_resume_not_right_after_hello_is_a_protocol_error(self) -> None:
        """RESUME in a frame of its own, after the handshake, is a protocol error."""
        grant = self.grant()
        self.session.receive(encode(Resume(grant.token, 0)), True)
        self.assertEqual(self.transport.closes[0][0], CloseCode.PROTOCOL_ERROR)


class NumberingTests(ResumeCase):
    def test_what_is_sent_is_kept_until_acknowledged(self) -> None:
        """Receiver calls are numbered and kept; the client's ACK drops them; an ack beyond them is 4002."""
        self.grant()
        for number in range(3):
            self.session.write_message(receiver_call(number))
        buffer = self.session.core.resume.ledger.sent  # type: ignore[union-attr]
        self.assertEqual((buffer.last_sent, len(buffer)), (3, 3))
        self.session.receive(encode(Ack(2)), True)
        self.assertEqual(len(buffer), 1)
        self.session.receive(encode(Ack(9)), True)
        self.assertEqual(self.transport.closes[0][0], CloseCode.PROTOCOL_ERROR)

    def test_acks_go_after_ack_every_and_after_ack_delay(self) -> None:
        """Four calls in: an ACK at once; one call in: an ACK when the 2 s timer fires."""
        self.grant()
        sent = self.client.resume.ledger.sent  # type: ignore[union-attr]
        for index in range(4):
            self.client.notify("ping", [index])
        self.to_server()
        self.to_client()
        self.assertEqual(sent.acked, 4)
        self.client.notify("ping", [5])
        self.to_server()
        self.to_client()
        self.assertEqual(sent.acked, 4)
        self.io.advance(1.99)
        self.to_client()
        self.assertEqual(sent.acked, 4)
        self.io.advance(0.01)
        self.to_client()
        self.assertEqual(sent.acked, 5)

    def test_heartbeat_answers_carry_the_ack(self) -> None:
        """CLIENT_HEARTBEAT_ACK carries what the server received: the client's buffer drops it."""
        self.grant()
        sent = self.client.resume.ledger.sent  # type: ignore[union-attr]
        self.client.notify("ping", [])
        self.to_server()
        self.assertEqual((sent.acked, len(sent)), (0, 1))
        self.client.send_heartbeat(self.io.now)
        self.to_server()
        self.to_client()
        self.assertEqual((sent.acked, len(sent)), (1, 0))


class DetachTests(ResumeCase):
    def test_a_lost_link_detaches_and_the_window_ends_the_session(self) -> None:
        """Connection lost: no on_disconnected; messages keep being kept; after the window, it ends once."""
        self.grant()
        self.io.events.clear()
        self.drop()
        self.assertEqual(self.io.events, [])
        self.assertEqual(self.host.connection_count, 0)
        self.session.write_message(receiver_call(1))
        self.assertEqual(self.session.core.resume.ledger.sent.last_sent, 1)  # type: ignore[union-attr]
        self.io.advance(WINDOW - 0.01)
        self.assertEqual(self.io.events, [])
        self.io.advance(0.01)
        [on_disconnected] = [e for e in self.io.events if isinstance(e, tuple)]
        reason = on_disconnected[1]
        self.assertEqual((on_disconnected[0], reason.kind), ("on_disconnected", DisconnectKind.CONNECTION_LOST))
        self.assertIn("not resumed within 30s", reason.message)
        self.assertEqual(self.io.events, ["left", on_disconnected, "closed"])
        self.assertEqual((self.host.connection_count, len(self.host.registries["echo"])), (0, 0))

    def test_a_normal_close_ends_the_session_at_once(self) -> None:
        """The client's CLOSE 1000: the session ends with the connection (no window)."""
        self.grant()
        self.session.receive(encode(Close(CloseCode.NORMAL, "bye")), True)
        self.session.transport_closed(DisconnectReason(DisconnectKind.NORMAL, CloseCode.NORMAL, "bye"))
        self.assertIn(("on_disconnected", self.session.lifecycle.ended), self.io.events)
        self.assertEqual((len(self.host.registries["echo"]), self.io.timers), (0, []))

    def test_a_kick_ends_a_detached_session_at_once(self) -> None:
        """Kicking a detached session (no connection to close) ends it now."""
        self.grant()
        self.drop()
        self.session.close_with(CloseCode.KICKED, "out", DisconnectKind.KICKED)
        [(name, reason)] = [e for e in self.io.events if isinstance(e, tuple) and e[0] == "on_disconnected"]
        self.assertEqual(reason.kind, DisconnectKind.KICKED)
        self.assertEqual(self.io.timers, [])


class TakeOverTests(ResumeCase):
    def test_resume_replays_what_the_client_lacks_on_the_new_connection(self) -> None:
        """
        Detached with messages 1..3 sent and the client having received 1:
        RESUMED (with the session's id and a new token), then 2 and 3, on
        the new connection; on_resumed runs, not on_connected; one connection counted.
        """
        grant = self.grant()
        self.session.write_message(receiver_call(1))
        self.to_client()
        self.drop()
        self.session.write_message(receiver_call(2))
        self.session.write_message(receiver_call(3))
        self.io.events.clear()
        newcomer = self.newcomer()
        events = self.resume_on(newcomer, grant.token, 1)
        resumed, *replayed = events
        assert isinstance(resumed, Resumed)
        self.assertEqual((resumed.connection_id, resumed.received), ("c1", 0))
        self.assertNotEqual(resumed.token, grant.token)
        self.assertEqual([m.args for m in replayed if isinstance(m, ReceiverCall)], [[2], [3]])
        self.assertEqual(self.io.events, [("on_resumed", None)])
        self.assertEqual(self.host.connection_count, 1)
        # the session sends on the new connection from now on
        self.session.write_message(receiver_call(4))
        self.assertEqual(
            [m.args for f in newcomer.transport.frames for m in self.resumed_client.receive_frame(f, self.io.now)],  # type: ignore[attr-defined]
            [[4]],
        )

    def test_an_old_connection_still_attached_is_closed_with_4006(self) -> None:
        """The server had not noticed the drop: the old connection is told it moved; the session lives on."""
        grant = self.grant()
        events = self.resume_on(self.newcomer(), grant.token, 0)
        self.assertIsInstance(events[0], Resumed)
        self.assertEqual(self.transport.moved, 1)
        self.assertEqual([e for e in self.io.events if isinstance(e, tuple) and e[0] == "on_disconnected"], [])

    def test_an_old_token_is_refused_after_a_resume(self) -> None:
        """
        The token rotates: once the client said anything on the resumed
        connection (so it has the new token), a resume with the first token is
        refused (token-invalid); a fresh session follows.
        """
        grant = self.grant()
        self.drop()
        newcomer = self.newcomer()
        self.resume_on(newcomer, grant.token, 0)
        self.resumed_client.notify("echo", [1])
        [frame] = self.resumed_client.frames_to_send()
        newcomer.transport.frames.clear()  # type: ignore[attr-defined]
        self.session.receive(frame, True)
        thief = self.newcomer(connection_id="c3")
        refused, fresh = self.resume_on(thief, grant.token, 0)
        assert isinstance(refused, ResumeRefused) and isinstance(fresh, SessionGrant)
        self.assertEqual(refused.reason, ResumeReason.TOKEN_INVALID)
        self.assertEqual(self.host.registries["echo"].refused[ResumeReason.TOKEN_INVALID], 1)
        self.assertEqual(self.session.resumable is not None, True)  # the real session is untouched

    def test_a_resume_cut_before_its_answer_can_be_made_again_with_the_same_token(self) -> None:
        """
        The link dies after the server took the resume but before RESUMED
        reached the client, which still holds the token it resumed with: that
        token resumes the session again (found by the chaos test: the client
        was refused token-invalid and lost its calls in flight).
        """
        grant = self.grant()
        self.drop()
        first = self.newcomer()
        [resumed, *_] = self.resume_on(first, grant.token, 0)
        assert isinstance(resumed, Resumed)
        # RESUMED never arrives: the new connection dies at once
        first.transport.can_send = False  # type: ignore[attr-defined]
        self.session.transport_closed(DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "cut again"))
        [again, *_] = self.resume_on(self.newcomer(connection_id="c3"), grant.token, 0)
        assert isinstance(again, Resumed), again
        self.assertEqual(again.connection_id, "c1")
        self.assertEqual(self.host.registries["echo"].refused[ResumeReason.TOKEN_INVALID], 0)

    def test_another_users_connection_cannot_take_the_session(self) -> None:
        """With authentication, a resume by a connection of another user is refused: token-invalid."""
        self.slot.user = User("ann")
        grant = self.grant()
        self.drop()
        other = self.newcomer()
        other.tokens.slot.user = User("bob")  # type: ignore[union-attr]
        refused, _ = self.resume_on(other, grant.token, 0)
        assert isinstance(refused, ResumeRefused)
        self.assertEqual(refused.reason, ResumeReason.TOKEN_INVALID)

    def test_a_late_resume_is_refused_window_expired(self) -> None:
        """After the window: RESUME_REFUSED window-expired, then SESSION; the newcomer runs on_connected."""
        grant = self.grant()
        self.drop()
        self.io.advance(WINDOW)
        self.io.events.clear()
        refused, fresh = self.resume_on(self.newcomer(), grant.token, 0)
        assert isinstance(refused, ResumeRefused) and isinstance(fresh, SessionGrant)
        self.assertEqual(refused.reason, ResumeReason.WINDOW_EXPIRED)
        self.assertEqual(self.io.events, ["joined", ("on_connected", None)])

    def test_a_repeated_call_is_not_run_twice(self) -> None:
        """
        A call id seen again (a client that resent it: its state lagged)
        is not run again: a settled one gets its kept answer (numbered as a
        new message), a running one waits for its one answer.
        """
        self.grant()
        self.client.invoke("t", "echo", [7])
        self.client.invoke("u", "echo", [8])
        self.to_server()
        first, second = (invocation for invocation, _ in self.calls.received)
        self.session.out.answer_result(first.call_id, "echo", 7)
        self.to_client()
        self.session.receive(encode_invoke(first.call_id), True)
        self.session.receive(encode_invoke(second.call_id), True)
        self.assertEqual(len(self.calls.received), 2)  # neither ran again
        answers = [m for f in self.transport.frames for m in decode_all(f) if isinstance(m, Result)]
        self.assertEqual([(a.call_id, a.value) for a in answers], [(first.call_id, 7)])
        self.assertEqual(self.session.core.resume.ledger.sent.last_sent, 2)  # type: ignore[union-attr]

    def test_a_forgotten_call_is_answered_duplicate_call(self) -> None:
        """A repeat of a call whose answer is no longer kept is answered duplicate-call, never run."""
        self.host.resume_policy = ResumePolicy(window=WINDOW, max_calls=1)
        self.grant()
        for value in (1, 2):
            self.client.invoke("t", "echo", [value])
        self.to_server()
        for invocation, _ in self.calls.received:
            self.session.out.answer_result(invocation.call_id, "echo", invocation.args[0])
        self.to_client()
        self.session.receive(encode_invoke(1), True)
        self.assertEqual(len(self.calls.received), 2)
        errors = [m for f in self.transport.frames for m in decode_all(f) if isinstance(m, Error)]
        self.assertEqual([(e.call_id, e.code) for e in errors], [(1, ErrorCode.DUPLICATE_CALL)])


def encode_invoke(call_id: int) -> bytes:
    from twisted_hub._core.wire import Invoke

    return encode(Invoke(call_id, "echo", [call_id]))


def decode_all(frame: bytes) -> list[Any]:
    from twisted_hub._core.wire import decode_frame

    return decode_frame(frame)



class StreamTests(ResumeCase):
    """
    Streams across a resume, with the Twisted adapter's L{ServerStreams}
    and a real producer (an async generator driven by its L{StreamPump}).
    """

    def setUp(self) -> None:
        super().setUp()
        from twisted_hub._twisted.server_streams import ServerStreams

        self.crashed: list[Any] = []
        session = self.session
        self.streams = ServerStreams(
            session.core, session.flush, lambda method, failure: self.crashed.append(failure), 1024 * 1024, window=4,
        )
        session.streams = self.streams
        self.pulled: list[Any] = []

    async def ticks(self, count: int) -> Any:
        try:
            for n in range(count):
                self.pulled.append(n)
                yield n
        finally:
            self.pulled.append("finally")

    def start_stream(self, count: int, credit: int) -> None:
        """The client asks for C{ticks(count)} with C{credit}; the hub method answers with the generator."""
        self.client.invoke("s", "ticks", [count], credit=credit)
        self.to_server()
        [(invocation, _)] = self.calls.received
        self.streams.answer(invocation.call_id, "ticks", self.ticks(count))

    def items(self, events: list[Any]) -> list[Any]:
        return [e.item for e in events if isinstance(e, StreamItem)]

    def test_a_result_stream_survives_a_resume(self) -> None:
        """
        Items before and after the drop arrive once, in order, on the
        connections that resumed; the producer held nothing beyond the
        credit while detached; credit granted after the resume reaches it.
        """
        grant = self.grant()
        self.start_stream(10, credit=4)
        self.assertEqual(self.items(self.to_client()), [0, 1, 2, 3])
        self.client.send(StreamCredit(1, 2))
        self.to_server()
        self.transport.frames.clear()  # items 4 and 5 are lost with the link
        self.drop()
        self.assertEqual(self.pulled, [0, 1, 2, 3, 4, 5])  # no credit, no more items: at most the window
        self.assertIs(self.session.streams, self.streams)
        newcomer = self.newcomer()
        events = self.resume_on(newcomer, grant.token, 4)  # the client had 4 of the session's messages
        resumed, *replayed = events
        assert isinstance(resumed, Resumed)
        self.assertEqual(self.items(replayed), [4, 5])
        # credit on the new connection (its frames go to the session: the adapter's part) reaches
        # the producer, which sends on the new connection
        self.session.receive(encode(StreamCredit(1, 8)), True)
        self.session.flush()
        events = [m for f in newcomer.transport.frames for m in self.resumed_client.receive_frame(f, self.io.now)]  # type: ignore[attr-defined]
        self.assertEqual(self.items(events), [6, 7, 8, 9])
        self.assertTrue(any(isinstance(e, StreamEnd) for e in events))
        self.assertEqual((self.pulled[-1], self.crashed), ("finally", []))

    def test_a_stream_survives_a_take_over_from_a_connection_still_attached(self) -> None:
        """The server had not noticed the drop (4006 to the old connection): the stream goes on, on the new one."""
        grant = self.grant()
        self.start_stream(6, credit=2)
        self.assertEqual(self.items(self.to_client()), [0, 1])
        events = self.resume_on(self.newcomer(), grant.token, 2)
        self.assertEqual((self.transport.moved, self.items(events[1:])), (1, []))
        self.session.receive(encode(StreamCredit(1, 4)), True)
        self.session.flush()
        events = [m for f in self.session.transport.frames for m in self.resumed_client.receive_frame(f, self.io.now)]  # type: ignore[attr-defined]
        self.assertEqual(self.items(events), [2, 3, 4, 5])

    def test_a_session_that_expires_ends_its_streams(self) -> None:
        """
        The window passes: the producer stops (its finally runs) and an
        argument stream the hub method reads fails with ConnectionClosedError.
        """
        from twisted_hub._core.errors import ConnectionClosedError

        self.grant()
        self.client.invoke("u", "total", [None], streams=[[0, 7]])
        self.to_server()
        [(upload, _)] = self.calls.received
        reader = upload.args[0]
        self.calls.received.clear()
        self.start_stream(10, credit=2)
        self.drop()
        self.assertEqual(self.pulled, [0, 1])
        self.io.advance(WINDOW)
        self.assertEqual(self.pulled, [0, 1, "finally"])
        with self.assertRaises(ConnectionClosedError):
            reader._stream.take()


class HandOffTests(ResumeCase):
    def test_a_stopping_node_keeps_what_it_sends_from_the_moment_it_hands_off(self) -> None:
        """
        hand_off (a rolling restart): the session detaches at once, so what
        the hub sends it from then on is numbered and kept (none falls into
        the closing handshake), its connection is closed with 1001, and
        whoever waits for the connection's end is told; the session is not over.
        """
        self.grant()
        resumable = self.session.resumable
        assert resumable is not None
        ledger = resumable.record.ledger
        before = ledger.sent.last_sent
        self.io.events.clear()
        resumable.hand_off()
        self.assertEqual(self.transport.moved_codes, [CloseCode.GOING_AWAY])
        self.assertTrue(resumable.detached)
        self.session.write_message(receiver_call(1))
        self.session.write_message(receiver_call(2))
        self.assertEqual(ledger.sent.last_sent, before + 2)
        self.assertEqual(self.transport.frames, [])  # (nothing went to the old connection)
        self.assertEqual(self.io.events, ["closed"])  # (not left, no on_disconnected: the session waits)
