"""
A session's snapshot at rest (twisted_hub/_core/session_snapshot.py,
docs/resumption.md "When a node dies"), sans-IO: when it is written (only
when the session is quiet, after an acknowledgement, and only when it
changed), when it is deleted (the session ended, its token rotated), and
when another node may resume a client from it (its RESUME's counts match
exactly; the user matches; the secret is checked as for any resume).
"""

from __future__ import annotations

from typing import Any

from twisted_hub._core.backpressure import OutputBudget
from twisted_hub._core.connection import ClientConnection
from twisted_hub._core.server_resume import claim_answered, give_up
from twisted_hub._core.server_session import ServerSession
from twisted_hub._core.session_move import MovedSession
from twisted_hub._core.session_snapshot import restore_problem
from twisted_hub._core.wire import (
    CAP_BATCH,
    CAP_HEARTBEAT,
    CAP_RESUME,
    Ack,
    Error,
    ErrorCode,
    Invoke,
    Resume,
    Resumed,
    ResumeReason,
    ResumeRefused,
    SessionGrant,
    decode_frame,
    encode,
)

from .test_resume_server_core import WINDOW, ResumeCase, receiver_call
from .test_server_core import Calls, Host, Log, Observer, Slot, Transport, User


class SnapshotCase(ResumeCase):
    """A node that keeps snapshots; the client's session granted and quiet at first."""

    def setUp(self) -> None:
        super().setUp()
        self.host.snapshots = True
        self.token = self.grant().token
        self.key = self.session.resumable.record.token.key  # type: ignore[union-attr]

    def call_and_answer(self, value: int = 7) -> None:
        """The client calls echo; the hub answers it; the client gets the answer."""
        self.client.invoke("t", "echo", [value])
        self.to_server()
        invocation, _ = self.calls.received[-1]
        self.session.out.answer_result(invocation.call_id, "echo", value)
        self.to_client()

    def ack_from_client(self) -> None:
        """The client acknowledges everything it received (a standalone ACK)."""
        received = self.client.resume.ledger.received  # type: ignore[union-attr]
        self.session.receive(encode(Ack(received.acknowledge())), True)

    def server_acks(self) -> None:
        """The server's ack_delay passes: it acknowledges what it received."""
        self.io.advance(2.0)
        self.to_client()

    def snapshot(self) -> MovedSession:
        return MovedSession.decode(self.host.saved[self.key])


class WritingTests(SnapshotCase):
    def test_a_quiet_session_is_written_with_its_counts_items_and_groups(self) -> None:
        """After a call, both acknowledgements make the session quiet: the snapshot holds what another node needs."""
        self.session.carried = lambda: ({"name": "ann"}, ["lobby"])  # type: ignore[method-assign]  # (the adapter's part)
        self.call_and_answer()
        self.assertEqual(self.host.saved, {})  # the server's answer is not acknowledged yet
        self.server_acks()
        self.assertEqual(self.host.saved, {})  # nor is it now
        self.ack_from_client()
        moved = self.snapshot()
        self.assertEqual((moved.sent[0], moved.received[0]), (1, 1))  # it sent the answer, received the call
        self.assertEqual(moved.calls, [[], [], 1, 1])  # no answer kept: a repeat would be duplicate-call
        self.assertEqual((moved.items, moved.groups, moved.connection_id), ({"name": "ann"}, ["lobby"], "c1"))
        self.assertEqual(moved.token, self.session.resumable.record.token.export())  # type: ignore[union-attr]
        self.assertNotIn(self.token[16:], self.host.saved[self.key])  # the secret is never written, only its digest

    def test_written_only_when_it_changed(self) -> None:
        """The same quiet state is not written twice; a new message makes the next quiet moment write again."""
        self.call_and_answer()
        self.server_acks()
        self.ack_from_client()
        self.assertEqual(self.host.writes, 1)
        self.ack_from_client()
        self.server_acks()
        self.assertEqual(self.host.writes, 1)
        self.session.write_message(receiver_call(1))
        self.session.flush()
        self.to_client()
        self.ack_from_client()
        self.assertEqual((self.host.writes, self.snapshot().sent[0]), (2, 2))

    def test_not_written_while_anything_is_in_flight(self) -> None:
        """A call running, output unacknowledged, input unacknowledged, a detached session: no snapshot."""
        self.client.invoke("t", "echo", [1])
        self.to_server()
        self.server_acks()  # the server acknowledged the call, which runs
        self.ack_from_client()
        self.assertEqual(self.host.saved, {})
        invocation, _ = self.calls.received[-1]
        self.session.out.answer_result(invocation.call_id, "echo", 1)
        self.to_client()
        self.server_acks()
        self.assertEqual(self.host.saved, {})  # the answer is not acknowledged
        self.client.notify("ping", [])
        self.to_server()
        self.ack_from_client()
        self.assertEqual(self.host.saved, {})  # the notification is not acknowledged
        self.server_acks()
        self.assertEqual(self.snapshot().received[0], 2)  # now it is quiet
        self.drop()
        self.session.write_message(receiver_call(1))
        self.io.advance(WINDOW / 2)
        self.assertEqual(self.snapshot().sent[0], 1)  # detached: never written

    def test_a_write_that_could_not_go_is_tried_at_the_next_quiet_moment(self) -> None:
        self.host.save_ok = False
        self.call_and_answer()
        self.server_acks()
        self.ack_from_client()
        self.assertEqual(self.host.saved, {})
        self.host.save_ok = True
        self.ack_from_client()
        self.assertEqual(self.snapshot().sent[0], 1)

    def test_items_msgpack_cannot_carry_delete_the_snapshot_and_say_so(self) -> None:
        self.call_and_answer()
        self.server_acks()
        self.ack_from_client()
        self.assertIn(self.key, self.host.saved)
        self.session.carried = lambda: ({"lock": object()}, [])  # type: ignore[method-assign]
        self.call_and_answer(8)
        self.server_acks()
        self.ack_from_client()
        self.assertEqual((self.host.saved, self.host.forgotten), ({}, [self.key]))
        self.assertIn("no snapshot of the session is kept", " ".join(f for _, f in self.session.log.lines))  # type: ignore[attr-defined]


class DeletingTests(SnapshotCase):
    def quiet(self) -> None:
        self.call_and_answer()
        self.server_acks()
        self.ack_from_client()
        self.assertIn(self.key, self.host.saved)

    def test_deleted_when_the_session_resumes_its_token_rotated(self) -> None:
        self.quiet()
        self.drop()
        [resumed, *_] = self.resume_on(self.newcomer(), self.token, 1)
        assert isinstance(resumed, Resumed)
        self.assertEqual((self.host.saved, self.host.forgotten), ({}, [self.key]))

    def test_deleted_when_the_session_ends(self) -> None:
        self.quiet()
        self.drop()
        self.io.advance(WINDOW)
        self.assertEqual((self.host.saved, self.host.forgotten), ({}, [self.key]))

    def test_a_session_never_written_deletes_nothing(self) -> None:
        self.drop()
        self.io.advance(WINDOW)
        self.assertEqual(self.host.forgotten, [])


class RestoringTests(SnapshotCase):
    """Node B restores the snapshot node A wrote (A died: nobody answered B's claim)."""

    def setUp(self) -> None:
        super().setUp()
        self.session.carried = lambda: ({"name": "ann"}, ["lobby"])  # type: ignore[method-assign]
        self.call_and_answer()
        self.server_acks()
        self.ack_from_client()
        self.state = self.host.saved[self.key]
        self.node_b = Host(resume_policy=self.host.resume_policy, moves_sessions=True, snapshots=True)

    def claim_on_b(self, received: int, sent: int | None, user: Any = None) -> tuple[ServerSession[str], Transport]:
        transport = Transport()
        session: ServerSession[str] = ServerSession(
            transport, self.io, self.node_b, "b-9", "echo", self.policy, OutputBudget(4096), Observer(), Log(), Log(),
        )
        session.dispatcher = Calls()
        session.tokens.slot = Slot(user)
        session.opened()
        client: ClientConnection[Any] = ClientConnection((CAP_BATCH, CAP_HEARTBEAT, CAP_RESUME))
        for frame in transport.frames:
            client.receive_frame(frame, self.io.now)
        transport.frames.clear()
        client.hello(1024 * 1024, Resume(self.token, received, sent))
        [frame] = client.frames_to_send()
        session.receive(frame, True)
        self.assertEqual(len(self.node_b.claims), 1)  # B does not hold it: it asked the other nodes
        self.b_client = client
        return session, transport

    def answers(self, transport: Transport) -> list[Any]:
        events = [m for f in transport.frames for m in self.b_client.receive_frame(f, self.io.now)]
        transport.frames.clear()
        return events

    def test_a_client_whose_counts_match_resumes_from_the_snapshot(self) -> None:
        session, transport = self.claim_on_b(received=1, sent=1)
        carried: list[Any] = []
        session.carry = lambda items, groups: carried.append((items, groups))  # type: ignore[method-assign]
        installed = claim_answered(session, MovedSession.decode(self.state), restored=True)
        self.assertTrue(installed)
        [resumed] = self.answers(transport)
        assert isinstance(resumed, Resumed)
        self.assertEqual((resumed.received, resumed.connection_id), (1, "c1"))
        self.assertEqual(carried, [({"name": "ann"}, ["lobby"])])  # handed to the hub layer (the adapter's)
        self.assertEqual(self.node_b.forgotten, [self.key])  # the token rotated: the snapshot is deleted
        self.assertEqual(self.io.events[-1], ("on_resumed", None))
        # a repeat of the call the dead node ran (id 1) is never run again: duplicate-call
        session.receive(encode(Invoke(1, "echo", [7])), True)
        session.flush()
        self.assertEqual(session.dispatcher.received, [])  # type: ignore[attr-defined]
        errors = [m for f in transport.frames for m in decode_frame(f) if isinstance(m, Error)]
        self.assertEqual([(e.call_id, e.code) for e in errors], [(1, ErrorCode.DUPLICATE_CALL)])

    def test_the_writer_hearing_of_the_restore_late_gives_its_copy_up_without_ending_it(self) -> None:
        """
        Node A was only cut off from Redis: it hears later that B restored
        its snapshot (session_store.py finds the key taken) and gives its copy
        up as a move does: no on_disconnected there, the half-open connection
        closed with 4006, the key no longer held by A's registry.
        """
        session, _ = self.claim_on_b(received=1, sent=1)
        self.assertTrue(claim_answered(session, MovedSession.decode(self.state), restored=True))
        registry = self.host.resume_registry("echo")
        self.assertIsNotNone(registry.find_key(self.key))  # A's stale copy, its connection attached (half-open)
        hooks_before = len(self.io.events)
        forwards: list[str] = []

        def forward_for(connection_id: str) -> Any:
            forwards.append(connection_id)
            return lambda payload: None

        self.assertTrue(give_up(registry, self.key, forward_for))
        self.assertEqual(forwards, ["c1"])
        self.assertIsNone(registry.find_key(self.key))
        self.assertEqual(self.transport.moved_codes, [4006])
        after = self.io.events[hooks_before:]
        self.assertIn("left", after)  # it left A's hub layer (its groups there)
        self.assertFalse([e for e in after if isinstance(e, tuple) and e[0] == "on_disconnected"], after)
        self.assertEqual(self.host.forgotten, [])  # A deletes nothing: the key is B's now
        self.assertFalse(give_up(registry, self.key, forward_for))  # (nothing held any more)

    def test_counts_that_differ_are_refused_session_unknown_and_start_afresh(self) -> None:
        """The client received (or sent) something the snapshot does not know: traffic in flight at the death."""
        for received, sent in ((2, 1), (1, 2), (0, 1), (1, 0)):
            with self.subTest(received=received, sent=sent):
                self.node_b.claims.clear()
                session, transport = self.claim_on_b(received, sent)
                self.assertFalse(claim_answered(session, MovedSession.decode(self.state), restored=True))
                refused, fresh = self.answers(transport)
                assert isinstance(refused, ResumeRefused) and isinstance(fresh, SessionGrant)
                self.assertEqual(refused.reason, ResumeReason.SESSION_UNKNOWN)
                self.assertIn("messages in flight", refused.message)
        self.assertEqual(self.node_b.forgotten, [])  # a refusal leaves the snapshot for the holder of the token

    def test_a_resume_without_sent_is_refused(self) -> None:
        session, transport = self.claim_on_b(1, None)
        self.assertFalse(claim_answered(session, MovedSession.decode(self.state), restored=True))
        refused, _ = self.answers(transport)
        assert isinstance(refused, ResumeRefused)
        self.assertEqual(refused.reason, ResumeReason.SESSION_UNKNOWN)
        self.assertIn("does not say what it sent", refused.message)

    def test_another_user_is_refused_token_invalid(self) -> None:
        session, transport = self.claim_on_b(1, 1, user=User("mallory"))
        self.assertFalse(claim_answered(session, MovedSession.decode(self.state), restored=True))
        refused, _ = self.answers(transport)
        assert isinstance(refused, ResumeRefused)
        self.assertEqual(refused.reason, ResumeReason.TOKEN_INVALID)

    def test_a_wrong_secret_is_refused_token_invalid_and_the_snapshot_stays(self) -> None:
        """The claim carries only the digest's key; the full token is checked here, and a wrong one deletes nothing."""
        forged = self.token[:16] + bytes(16)
        self.token = forged
        session, transport = self.claim_on_b(1, 1)
        self.assertFalse(claim_answered(session, MovedSession.decode(self.state), restored=True))
        refused, _ = self.answers(transport)
        assert isinstance(refused, ResumeRefused)
        self.assertEqual(refused.reason, ResumeReason.TOKEN_INVALID)
        self.assertEqual(self.node_b.forgotten, [])


class RestoreProblemTests(SnapshotCase):
    def test_each_rule(self) -> None:
        self.call_and_answer()
        self.server_acks()
        self.ack_from_client()
        moved = self.snapshot()
        self.assertIsNone(restore_problem(Resume(self.token, 1, 1), moved, None))
        cases = [
            (Resume(self.token, 1, 1), "bob", ResumeReason.TOKEN_INVALID, "another user"),
            (Resume(self.token, 1), None, ResumeReason.SESSION_UNKNOWN, "does not say"),
            (Resume(self.token, 1, 2), None, ResumeReason.SESSION_UNKNOWN, "in flight"),
            (Resume(self.token, 0, 1), None, ResumeReason.SESSION_UNKNOWN, "in flight"),
        ]
        for request, user, reason, text in cases:
            problem = restore_problem(request, moved, user)
            assert problem is not None
            self.assertEqual(problem[0], reason)
            self.assertIn(text, problem[1])
