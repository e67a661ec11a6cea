"""The adapter lifecycle both roles and both clients share (twisted_hub._core.session)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._core.errors import DisconnectKind, DisconnectReason
from twisted_hub._core.session import Lifecycle, SessionState, close_for_frame_error, ended_reason
from twisted_hub._core.wire import CloseCode, ProtocolError, TooManyMessagesError


class LifecycleTests(SynchronousTestCase):
    def test_starts_connecting_then_opens(self) -> None:
        """A new lifecycle is CONNECTING; opened() moves it to OPEN once."""
        life = Lifecycle()
        self.assertIs(life.state, SessionState.CONNECTING)
        life.opened()
        self.assertIs(life.state, SessionState.OPEN)

    def test_first_local_decision_stands(self) -> None:
        """A second local close decision is refused and changes nothing."""
        life = Lifecycle()
        life.opened()
        self.assertTrue(life.close_locally(DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"))
        self.assertFalse(life.close_locally(DisconnectKind.KICKED, CloseCode.KICKED, "kicked"))
        self.assertEqual(
            life.decided, DisconnectReason(DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout", True)
        )
        self.assertIs(life.state, SessionState.CLOSING)
        self.assertTrue(life.closing_locally)

    def test_peer_close_stands_unless_we_decide(self) -> None:
        """The peer's CLOSE is the reason; a later local decision replaces it."""
        life = Lifecycle()
        life.opened()
        life.peer_closing(CloseCode.KICKED, "bye")
        self.assertEqual(life.decided, DisconnectReason(DisconnectKind.KICKED, CloseCode.KICKED, "bye", False))
        self.assertFalse(life.closing_locally)
        self.assertTrue(life.close_locally(DisconnectKind.PROTOCOL_ERROR, CloseCode.PROTOCOL_ERROR, "bad"))
        self.assertEqual(life.finish(DisconnectReason(DisconnectKind.CONNECTION_LOST)).kind, DisconnectKind.PROTOCOL_ERROR)

    def test_peer_close_after_local_decision_ignored(self) -> None:
        """A CLOSE from the peer after we decided does not change the reason."""
        life = Lifecycle()
        life.close_locally(DisconnectKind.NORMAL, CloseCode.NORMAL, "done")
        life.peer_closing(CloseCode.GOING_AWAY, "restart")
        self.assertEqual(life.decided, DisconnectReason(DisconnectKind.NORMAL, CloseCode.NORMAL, "done", True))

    def test_finish_uses_observed_when_nobody_decided(self) -> None:
        """Without a decision the observed reason is the end; finish is idempotent and final."""
        life = Lifecycle()
        lost = DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "gone")
        self.assertIs(life.finish(lost), lost)
        self.assertIs(life.finish(DisconnectReason(DisconnectKind.NORMAL)), lost)
        self.assertIs(life.state, SessionState.CLOSED)
        self.assertFalse(life.close_locally(DisconnectKind.KICKED, CloseCode.KICKED, "late"))
        life.peer_closing(CloseCode.NORMAL, "late")
        self.assertIs(life.ended, lost)


    def test_finish_handshake_without_decision(self) -> None:
        """Lost before WELCOME with nothing decided: a handshake failure with the given text, final."""
        life = Lifecycle()
        text = "connection closed during the handshake"
        reason = life.finish_handshake(text)
        self.assertEqual(reason, DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, None, text))
        self.assertIs(life.state, SessionState.CLOSED)
        self.assertIs(life.finish_handshake("other"), reason)

    def test_finish_handshake_keeps_a_decision_code_and_words(self) -> None:
        """A protocol error decided before WELCOME ends as a handshake failure with its close code, words and side."""
        life = Lifecycle()
        life.close_locally(DisconnectKind.PROTOCOL_ERROR, CloseCode.PROTOCOL_ERROR, "bad welcome")
        self.assertEqual(
            life.finish_handshake("unused"),
            DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, CloseCode.PROTOCOL_ERROR, "bad welcome", True),
        )

class EndedReasonTests(SynchronousTestCase):
    def test_own_close_code_first(self) -> None:
        """A close code our WebSocket layer sent (1009) wins over the peer's frame."""
        reason = ended_reason(CloseCode.MESSAGE_TOO_BIG, "too big", CloseCode.NORMAL, "", "lost")
        self.assertEqual(reason, DisconnectReason(DisconnectKind.MESSAGE_TOO_BIG, 1009, "too big", True))

    def test_peer_close_frame(self) -> None:
        """Without our own code, the peer's close frame says why (4001 is the peer's timeout)."""
        reason = ended_reason(None, "", CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout", "lost")
        self.assertEqual(reason, DisconnectReason(DisconnectKind.PEER_TIMED_OUT, 4001, "heartbeat timeout"))

    def test_no_close_frame_is_lost(self) -> None:
        """No code at all, or 1006 (no close frame), is a lost connection with the given text."""
        for code in (None, 1006):
            self.assertEqual(
                ended_reason(None, "", code, "", "connection lost"),
                DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "connection lost"),
            )


class FrameErrorTests(SynchronousTestCase):
    def test_codes(self) -> None:
        """Too many messages is 1008, another protocol error 4002, a bug of ours 1011."""
        self.assertEqual(close_for_frame_error(TooManyMessagesError("more than 5 messages")), (1008, "more than 5 messages"))
        self.assertEqual(close_for_frame_error(ProtocolError("x" * 300)), (4002, "x" * 100))
        self.assertEqual(close_for_frame_error(KeyError("oops")), (1011, "internal error"))
