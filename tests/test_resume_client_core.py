"""
Session resumption in the client's sans-IO session (L{ClientResumption},
docs/resumption.md): a L{ClientSession} on a fake adapter, time from a
Clock, the server's messages built by hand.
"""

from __future__ import annotations

from typing import Any

from twisted_hub._core.client_resume import ClientResumption, ends_session
from twisted_hub._core.client_session import ClientSession
from twisted_hub._core.errors import ConnectionClosedError, DisconnectKind, DisconnectReason
from twisted_hub._core.resume import ResumePolicy
from twisted_hub._core.wire import (
    CAP_BATCH,
    CAP_HEARTBEAT,
    CAP_RESUME,
    Ack,
    Close,
    CloseCode,
    Hello,
    Invoke,
    ReceiverCall,
    Result,
    Resume,
    Resumed,
    ResumeReason,
    ResumeRefused,
    SessionGrant,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamInvoke,
    StreamItem,
    Welcome,
    decode_frame,
    encode,
)
from twisted_hub._support.logging import TwistedCoreLog

from .test_client_session import FakeIO, SessionTests

TOKEN = bytes(range(32))
NEW_TOKEN = bytes(range(32, 64))


class ResumeIO(FakeIO):
    """The fake adapter, with the clock and timers a resumable session uses."""

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock

    def seconds(self) -> float:
        return float(self.clock.seconds())

    def call_later(self, delay: float, function: Any) -> Any:
        return self.clock.callLater(delay, function).cancel


def welcome(resume: bool = True, connection_id: str = "c1") -> bytes:
    capabilities = [CAP_HEARTBEAT, CAP_BATCH, "stream"] + ([CAP_RESUME] if resume else [])
    return encode(Welcome(capabilities, connection_id, None, None, 1024 * 1024, None))


class ClientResumeTests(SessionTests):
    def setUp(self) -> None:
        super().setUp()
        self.io = ResumeIO(self.clock)
        self.resumption: ClientResumption[str] = ClientResumption(ResumePolicy(ack_every=3, ack_delay=2.0))

    def connection(self) -> ClientSession[str]:
        """A new connection of the reconnecting client (its WebSocket just opened)."""
        session: ClientSession[str] = ClientSession(self.io, TwistedCoreLog("test", self.observer))
        from twisted_hub import HubClientOptions

        session.configure(HubClientOptions(), self.receiver, None, self.resumption)
        session.opened()
        self.current = session
        return session

    def sent(self) -> list[list[Any]]:
        """Each frame the client sent since the last look, as its messages."""
        frames = [decode_frame(frame) for frame in self.io.frames]
        self.io.frames.clear()
        return frames

    def start(self) -> ClientSession[str]:
        """A first connection: HELLO (announcing resume), WELCOME, SESSION."""
        session = self.connection()
        [[hello]] = self.sent()
        assert isinstance(hello, Hello)
        self.assertIn(CAP_RESUME, hello.capabilities)
        session.receive_frame(welcome(), self.clock.seconds())
        session.receive_frame(encode(SessionGrant(TOKEN, 30.0)), self.clock.seconds())
        self.assertTrue(self.resumption.resumable)
        return session

    def lose(self, session: ClientSession[str], kind: DisconnectKind = DisconnectKind.CONNECTION_LOST) -> None:
        session.connection_lost(DisconnectReason(kind, None, "gone"))

    def test_a_dropped_link_keeps_the_calls_and_the_next_connection_resumes(self) -> None:
        """
        Calls in flight survive the drop; the next connection waits for the
        WELCOME, sends HELLO + RESUME in one frame, and is open only at
        RESUMED, after replaying what the server lacks; the answer settles the call once.
        """
        session = self.start()
        call_id = session.invoke("t1", "slow", [1], None)
        session.receive_frame(encode(ReceiverCall("said", ["r", "ann", "x"])), self.clock.seconds())
        self.sent()
        self.lose(session)
        self.assertEqual((self.io.failed, list(self.resumption.pending)), ([], [call_id]))
        second = self.connection()
        self.assertEqual(self.sent(), [])  # no hello before the WELCOME
        second.receive_frame(welcome(connection_id="c9"), self.clock.seconds())
        [[hello, resume]] = self.sent()
        assert isinstance(hello, Hello) and isinstance(resume, Resume)
        self.assertEqual((resume.token, resume.received), (TOKEN, 1))
        self.assertEqual(self.io.handshakes, [None])  # the first connection's only
        second.receive_frame(encode(Resumed(0, NEW_TOKEN, "c1")), self.clock.seconds())
        self.assertEqual(self.io.handshakes, [None, None])
        [[replayed]] = self.sent()
        assert isinstance(replayed, Invoke)
        self.assertEqual((replayed.call_id, replayed.method), (call_id, "slow"))
        self.assertEqual((self.resumption.resumes, second.core.welcome.connection_id), (1, "c1"))  # type: ignore[union-attr]
        second.receive_frame(encode(Result(call_id, 1)), self.clock.seconds())
        second.receive_frame(encode(Result(call_id, 1)), self.clock.seconds())  # a replayed copy
        self.assertEqual(self.io.succeeded, [("t1", 1)])
        # call ids go on across the session
        self.assertEqual(second.invoke("t2", "slow", [2], None), call_id + 1)

    def test_a_refusal_fails_the_kept_calls_and_starts_afresh(self) -> None:
        """RESUME_REFUSED: the kept calls fail (why, in the error), the reason is counted, SESSION starts anew."""
        session = self.start()
        session.invoke("t1", "slow", [1], None)
        self.lose(session, DisconnectKind.TIMED_OUT)
        second = self.connection()
        second.receive_frame(welcome(), self.clock.seconds())
        self.sent()
        refused = encode(ResumeRefused(ResumeReason.WINDOW_EXPIRED, "too late")) + encode(SessionGrant(NEW_TOKEN, 30.0))
        second.receive_frame(refused, self.clock.seconds())
        [(token, error)] = self.io.failed
        assert isinstance(error, ConnectionClosedError)
        self.assertEqual(token, "t1")
        self.assertIn("window-expired", str(error))
        self.assertEqual(self.resumption.refusals[ResumeReason.WINDOW_EXPIRED], 1)
        self.assertTrue(second.is_connected and self.resumption.resumable)
        self.assertEqual(self.resumption.state.request().token, NEW_TOKEN)

    def test_a_server_without_resume_loses_the_session(self) -> None:
        """A WELCOME without resume: a plain HELLO, the calls fail, session-unknown is counted."""
        session = self.start()
        session.invoke("t1", "slow", [1], None)
        self.lose(session)
        self.sent()
        second = self.connection()
        second.receive_frame(welcome(resume=False), self.clock.seconds())
        [[hello]] = self.sent()
        assert isinstance(hello, Hello)
        self.assertEqual([token for token, _ in self.io.failed], ["t1"])
        self.assertEqual(self.resumption.refusals[ResumeReason.SESSION_UNKNOWN], 1)
        self.assertTrue(second.is_connected)

    def test_a_close_on_purpose_ends_the_session(self) -> None:
        """Our own disconnect ends the session: its calls fail, the next connection starts afresh."""
        session = self.start()
        session.invoke("t1", "slow", [1], None)
        session.disconnect("bye")
        session.connection_lost(DisconnectReason(DisconnectKind.NORMAL, CloseCode.NORMAL, "bye", True))
        self.assertEqual([token for token, _ in self.io.failed], ["t1"])
        self.assertFalse(self.resumption.resumable)

    def test_acknowledgements_after_ack_every_and_ack_delay(self) -> None:
        """Three receiver calls: an ACK at once; one more: an ACK from the 2 s timer."""
        session = self.start()
        self.sent()
        for index in range(3):
            session.receive_frame(encode(ReceiverCall("said", ["r", "ann", str(index)])), self.clock.seconds())
        self.assertEqual([m for frame in self.sent() for m in frame], [Ack(3)])
        session.receive_frame(encode(ReceiverCall("said", ["r", "ann", "3"])), self.clock.seconds())
        self.assertEqual(self.sent(), [])
        self.clock.advance(2.0)
        self.assertEqual([m for frame in self.sent() for m in frame], [Ack(4)])

    def test_which_ends_end_the_session(self) -> None:
        """Link failures keep the session; closes on purpose (1000, 4000, 4005, 4006, errors) end it."""
        keep = [
            DisconnectReason(DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "", True),
            DisconnectReason(DisconnectKind.PEER_TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, ""),
            DisconnectReason(DisconnectKind.CONNECTION_LOST, None, ""),
            DisconnectReason(DisconnectKind.GOING_AWAY, CloseCode.GOING_AWAY, "restart"),
            DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, None, "refused"),
        ]
        end = [
            DisconnectReason(DisconnectKind.NORMAL, CloseCode.NORMAL, ""),
            DisconnectReason(DisconnectKind.NORMAL, CloseCode.SESSION_MOVED, ""),
            DisconnectReason(DisconnectKind.KICKED, CloseCode.KICKED, ""),
            DisconnectReason(DisconnectKind.TOKEN_EXPIRED, CloseCode.TOKEN_EXPIRED, ""),
            DisconnectReason(DisconnectKind.PROTOCOL_ERROR, CloseCode.PROTOCOL_ERROR, ""),
            DisconnectReason(DisconnectKind.GOING_AWAY, CloseCode.GOING_AWAY, "", True),
        ]
        self.assertEqual([ends_session(r) for r in keep], [False] * len(keep))
        self.assertEqual([ends_session(r) for r in end], [True] * len(end))

    def test_a_client_result_call_seen_again_does_not_run_twice(self) -> None:
        """The server's CLIENT_INVOKE with an id seen before: the kept answer again, not a second run."""
        from twisted_hub._core.wire import ClientInvoke

        session = self.start()
        self.sent()
        calls: list[int] = []
        self.receiver.answer = lambda x: calls.append(x) or x * 2  # type: ignore[attr-defined]
        frame = encode(ClientInvoke(5, "answer", [21]))
        session.receive_frame(frame, self.clock.seconds())
        session.receive_frame(frame, self.clock.seconds())  # the same id again (state that lagged)
        answers = [m for frame_ in self.sent() for m in frame_ if isinstance(m, Result)]
        self.assertEqual(calls, [21])
        self.assertEqual([(a.call_id, a.value) for a in answers], [(5, 42), (5, 42)])

    def resume(self, received: int = 0) -> ClientSession[str]:
        """The next connection: WELCOME, HELLO + RESUME, RESUMED (the server received C{received})."""
        second = self.connection()
        second.receive_frame(welcome(connection_id="c9"), self.clock.seconds())
        [[hello, resume]] = self.sent()
        assert isinstance(hello, Hello) and isinstance(resume, Resume)
        second.receive_frame(encode(Resumed(received, NEW_TOKEN, "c1")), self.clock.seconds())
        return second

    def test_a_result_stream_survives_a_resume(self) -> None:
        """
        Items before and after the drop arrive complete, once, in order;
        credit granted while detached is held and goes out after the
        replay, on the new connection; the stream's end settles its call.
        """
        session = self.start()
        call_id, inbound, _ = session.streams.invoke("s1", "ticks", [], None, 4, lambda value: False)
        assert inbound is not None
        [[invocation]] = self.sent()
        assert isinstance(invocation, StreamInvoke)
        session.receive_frame(encode(StreamItem(call_id, 0)) + encode(StreamItem(call_id, 1)), self.clock.seconds())
        table = session.streams.table
        taken = [table.take(inbound)]
        self.lose(session)
        self.assertEqual((self.io.failed, inbound.ended), ([], False))
        taken.append(table.take(inbound))  # half the window taken: credit is due, and held
        self.assertEqual(self.sent(), [])
        second = self.resume(received=0)
        self.assertIs(second.streams.table, table)
        [[replayed, credit]] = self.sent()  # the replay first, then what was held
        assert isinstance(replayed, StreamInvoke) and isinstance(credit, StreamCredit)
        self.assertEqual((replayed.call_id, credit.stream_id, credit.credit), (call_id, call_id, 2))
        frames = b"".join(encode(StreamItem(call_id, n)) for n in range(2, 6)) + encode(StreamEnd(call_id))
        second.receive_frame(frames, self.clock.seconds())
        while inbound.buffer:
            taken.append(table.take(inbound))
        self.assertEqual(taken, list(range(6)))
        self.assertTrue(inbound.ended and inbound.error is None)
        self.assertEqual((self.io.succeeded, self.io.failed), ([("s1", None)], []))

    def test_an_argument_stream_survives_a_resume(self) -> None:
        """
        A stream we produce: items sent with the credit we had go on being
        sent while detached (held: never more than that credit), then after the replay.
        """
        session = self.start()
        call_id, _, [(outbound, _)] = session.streams.invoke("t1", "total", [object()], None, None, lambda value: True)
        session.receive_frame(encode(StreamCredit(outbound.stream_id, 3)), self.clock.seconds())
        table = session.streams.table
        table.send_item(outbound, "a", 1024)
        session.flush()
        [[invocation], [item_a]] = self.sent()
        self.lose(session)
        table.send_item(outbound, "b", 1024)
        table.send_item(outbound, "c", 1024)
        self.assertFalse(outbound.may_send)  # the credit is used up: the producer waits, holding nothing more
        second = self.resume(received=2)  # the server had the invocation and "a"
        self.assertEqual([m.item for frame in self.sent() for m in frame], ["b", "c"])
        second.receive_frame(encode(StreamCredit(outbound.stream_id, 1)), self.clock.seconds())
        self.assertTrue(outbound.may_send)
        table.end(outbound)
        second.flush()
        [[end]] = self.sent()
        assert isinstance(end, StreamEnd)
        second.receive_frame(encode(Result(call_id, 3)), self.clock.seconds())
        self.assertEqual(self.io.succeeded, [("t1", 3)])

    def test_a_stream_cancelled_while_detached(self) -> None:
        """Cancelling while detached: the call is forgotten at once, STREAM_CANCEL goes out after the resume."""
        session = self.start()
        call_id, inbound, _ = session.streams.invoke("s1", "ticks", [], None, 4, lambda value: False)
        assert inbound is not None
        self.sent()
        self.lose(session)
        session.streams.cancel(inbound)
        self.assertEqual(list(self.resumption.pending), [])
        self.resume(received=1)
        [[cancel]] = self.sent()
        assert isinstance(cancel, StreamCancel)
        self.assertEqual(cancel.stream_id, call_id)
        self.assertEqual((self.io.succeeded, self.io.failed), ([], []))

    def test_a_lost_session_fails_its_streams(self) -> None:
        """A refused resume: the kept streams fail with ConnectionClosedError, after the items already received."""
        session = self.start()
        call_id, inbound, _ = session.streams.invoke("s1", "ticks", [], None, 4, lambda value: False)
        _, _, [(outbound, _)] = session.streams.invoke("t1", "total", [object()], None, None, lambda value: True)
        assert inbound is not None
        session.receive_frame(encode(StreamItem(call_id, "x")), self.clock.seconds())
        self.lose(session, DisconnectKind.TIMED_OUT)
        second = self.connection()
        second.receive_frame(welcome(), self.clock.seconds())
        self.sent()
        refused = encode(ResumeRefused(ResumeReason.WINDOW_EXPIRED, "too late")) + encode(SessionGrant(NEW_TOKEN, 30.0))
        second.receive_frame(refused, self.clock.seconds())
        self.assertEqual(inbound.take(), "x")
        with self.assertRaises(ConnectionClosedError) as raised:
            inbound.take()
        self.assertIn("window-expired", str(raised.exception))
        self.assertTrue(outbound.cancelled)  # its producer stops
        self.assertEqual(sorted(token for token, error in self.io.failed), ["s1", "t1"])
        self.assertTrue(all(isinstance(error, ConnectionClosedError) for _, error in self.io.failed))
        self.assertIsNot(second.streams.table, session.streams.table)  # the new session's streams start afresh

    def test_a_session_closed_on_purpose_fails_its_streams(self) -> None:
        """A 4006 (the session moved) ends the session: its streams fail at once with ConnectionClosedError."""
        session = self.start()
        _, inbound, _ = session.streams.invoke("s1", "ticks", [], None, 4, lambda value: False)
        assert inbound is not None
        session.receive_frame(encode(Close(CloseCode.SESSION_MOVED, "moved")), self.clock.seconds())
        session.connection_lost(DisconnectReason(DisconnectKind.NORMAL, CloseCode.SESSION_MOVED, "moved"))
        with self.assertRaises(ConnectionClosedError):
            inbound.take()
        self.assertIsNone(self.resumption.streams)

    def test_a_client_stopped_while_detached_fails_its_streams(self) -> None:
        """The reconnecting client stopped while its session waits for a resume: kept calls and streams fail with its error."""
        session = self.start()
        _, inbound, _ = session.streams.invoke("s1", "ticks", [], None, 4, lambda value: False)
        assert inbound is not None
        self.lose(session)
        stopped = ConnectionClosedError(DisconnectReason(DisconnectKind.NORMAL, None, "the client was stopped", locally=True))
        self.assertEqual(self.resumption.end(stopped), ["s1"])
        with self.assertRaises(ConnectionClosedError) as raised:
            inbound.take()
        self.assertIs(raised.exception, stopped)
        self.assertFalse(self.resumption.resumable)

    def test_without_resume_a_stream_ends_with_its_connection(self) -> None:
        """No resume negotiated (the server lacks it): a drop fails the stream and its call with ConnectionClosedError."""
        session = self.connection()
        self.sent()
        session.receive_frame(welcome(resume=False), self.clock.seconds())
        _, inbound, _ = session.streams.invoke("s1", "ticks", [], None, 4, lambda value: False)
        assert inbound is not None
        self.lose(session)
        with self.assertRaises(ConnectionClosedError):
            inbound.take()
        [(token, error)] = self.io.failed
        self.assertEqual(token, "s1")
        assert isinstance(error, ConnectionClosedError)
        self.assertIsNone(self.resumption.streams)
