"""
Session snapshots in Redis (twisted_hub/_backplane/session_store.py,
docs/resumption.md "When a node dies"), on the in-memory Redis and a
L{Clock}: written with an expiry, renewed while the node lives, outliving
a killed node by at least three quarters of their ttl, deleted when told
(or when Redis is back, if it was away), signed with the nodes' secret, and
refused when unusable (logged).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import msgpack
from twisted.internet.task import Clock
from twisted.trial import unittest

from twisted_hub.redis import RedisBackplane

from ._fakeredis import FakeRedis

TTL = 20.0  # (two windows of 10 s)
KEY = b"epoc" + bytes(range(12))
NAME = b"twisted-hub:v1:session:" + KEY.hex().encode()


class StoreCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis(self.clock)
        self.connector = self.redis.connector()
        self.backplane = self.node(self.connector)

    def node(self, connector: Any, **options: Any) -> RedisBackplane:
        backplane = RedisBackplane(lease=3.0, clock=self.clock, connector=connector, **options)
        backplane.attach(_NoHubs(self.clock))  # type: ignore[arg-type]
        backplane.start()
        return backplane

    def read(self, backplane: RedisBackplane, hub: str = "chat") -> Any:
        found: list[Any] = []
        backplane._read_session(hub, KEY, found.append)
        [result] = found
        return result

    def advance(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)


class _NoHubs:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        #: the sessions given up (hub, key), and the forward each was given
        self.given_up: list[tuple[str, bytes]] = []
        self.forwards: list[Any] = []

    def give_up(self, hub: str, key: bytes, forward: Any) -> bool:
        self.given_up.append((hub, key))
        self.forwards.append(forward)
        return True

    def knows(self, hub: str) -> bool:
        return False

    def memberships(self) -> Any:
        return iter(())

    def node_gone(self, token: str) -> None:
        pass


class SavingTests(StoreCase):
    def test_a_snapshot_is_written_with_its_hub_cutoffs_and_expiry_and_read_back(self) -> None:
        self.assertTrue(self.backplane.save_session("chat", KEY, b"state", TTL))
        self.assertEqual(self.redis.expires[NAME], self.clock.seconds() + TTL)
        layout, hub, state, cutoffs = msgpack.unpackb(self.redis.data[NAME])
        self.assertEqual((layout, hub, state), (1, "chat", b"state"))
        self.assertIsInstance(cutoffs, dict)
        self.assertEqual(self.read(self.backplane), (b"state", cutoffs))
        self.assertEqual((self.backplane.saved, self.backplane.snapshots_kept), (1, 1))
        rows = dict(self.backplane.status())  # (the status page's row)
        self.assertEqual(
            rows["sessions kept in redis"], "1 snapshot(s) of quiet sessions; 0 restored here after their node was lost",
        )

    def test_nothing_is_written_while_redis_is_away(self) -> None:
        self.connector.lose()
        self.assertFalse(self.backplane.save_session("chat", KEY, b"state", TTL))
        self.assertNotIn(NAME, self.redis.data)
        self.assertIsNone(self.read(self.backplane))  # (and nothing can be read: the claim is unanswered)

    def test_renewed_while_the_node_lives_and_gone_a_ttl_after_it_died(self) -> None:
        self.backplane.save_session("chat", KEY, b"state", TTL)
        self.advance(3 * TTL)  # (the node beats every lease / 3 and renews what is a quarter ttl old)
        self.assertIn(NAME, self.redis.data)
        self.assertGreaterEqual(self.redis.expires[NAME] - self.clock.seconds(), 0.75 * TTL - 1.0)
        self.connector.kill()  # kill -9: nothing renews it any more
        other = self.node(self.redis.connector())
        self.advance(0.7 * TTL)
        self.assertEqual(self.read(other), (b"state", msgpack.unpackb(self.redis.data[NAME])[3]))
        self.advance(0.3 * TTL + 1.0)
        self.assertIsNone(self.read(other))

    def test_a_snapshot_redis_lost_is_written_again_at_its_renewal(self) -> None:
        """Redis flushed (or restarted without its data): the renewal finds the key gone and writes it again."""
        self.backplane.save_session("chat", KEY, b"state", TTL)
        value = self.redis.data[NAME]
        self.redis.data.clear()
        self.redis.expires.clear()
        self.advance(TTL / 4 + 1.0)
        self.assertEqual(self.redis.data.get(NAME), value)
        self.assertEqual(self.backplane._sessions.rewritten, 1)

    def test_renewals_are_spread_over_the_beats(self) -> None:
        """Many snapshots due at once: at most REFRESH_AT_ONCE renewals per beat, never a burst of all."""
        from twisted_hub._backplane.session_store import REFRESH_AT_ONCE

        count = 2 * REFRESH_AT_ONCE + 10
        for n in range(count):
            self.backplane.save_session("chat", n.to_bytes(16, "big"), b"state", TTL)

        def renewals() -> int:
            return sum(1 for name, args in self.redis.log if name == "EVAL" and b":v1:session:" in args[2])

        self.clock.advance(TTL / 4)  # (every snapshot is due; the node's beat at that moment renewed the first lot)
        self.assertEqual(renewals(), REFRESH_AT_ONCE)
        self.backplane._beat()
        self.assertEqual(renewals(), 2 * REFRESH_AT_ONCE)
        self.clock.advance(0.001)
        self.backplane._beat()
        self.assertEqual(renewals(), count)

    def test_forgotten_at_once_or_when_redis_is_back(self) -> None:
        self.backplane.save_session("chat", KEY, b"state", TTL)
        self.backplane.forget_session(KEY)
        self.assertNotIn(NAME, self.redis.data)
        self.backplane.save_session("chat", KEY, b"state", TTL)
        self.connector.lose()
        self.backplane.forget_session(KEY)
        self.assertIn(NAME, self.redis.data)  # (Redis away: the delete waits)
        self.connector.connect()
        self.assertNotIn(NAME, self.redis.data)
        self.assertEqual((self.backplane.forgotten, self.backplane.snapshots_kept), (2, 0))


def _errors_logged(case: unittest.TestCase) -> list[str]:
    """The error lines logged from now on, for the rest of the test."""
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.error, LogLevel.critical):
            failure = event.get("log_failure")
            lines.append(formatEvent(event) + ("\n" + failure.getTraceback() if failure is not None else ""))

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class TakenTests(StoreCase):
    """
    Node A wrote the snapshot and was cut off from Redis, alive; node B
    restored the session from it (nobody answered B's claim).  B marks the
    key taken; A, back, finds it so at its renewal and gives its copy up.
    """

    def setUp(self) -> None:
        super().setUp()
        self.hubs_a: _NoHubs = self.backplane._hubs  # type: ignore[assignment]
        self.b = self.node(self.redis.connector())
        self.backplane.save_session("chat", KEY, b"state", TTL)
        self.value = self.redis.data[NAME]
        self.connector.lose()  # A is cut off (alive: its copy of the session stays)

    def restore_on_b(self) -> None:
        self.advance(1.0)  # (A's claim timeout passes, cut off)
        self.assertIsNotNone(self.read(self.b))  # the claim nobody answered reads the snapshot
        self.b.forget_session(KEY)  # the client resumed on B: its token rotated there

    def test_the_restorer_marks_the_key_taken_with_its_expiry_and_never_restores_it_twice(self) -> None:
        expires = self.redis.expires[NAME]
        self.restore_on_b()
        self.assertEqual(msgpack.unpackb(self.redis.data[NAME]), [0, self.b.token])
        self.assertEqual(self.redis.expires[NAME], expires)  # (the expiry the snapshot had)
        self.assertEqual((self.b._sessions.marked_taken, self.b.forgotten), (1, 1))
        errors = _errors_logged(self)
        self.assertIsNone(self.read(self.b))  # a second claim nobody answers: not restored again
        self.assertEqual((self.b._sessions.read_taken, errors), (1, []))  # (and not an error)

    def test_the_writer_back_gives_its_copy_up_and_leaves_the_key_alone(self) -> None:
        self.restore_on_b()
        taken = self.redis.data[NAME]
        self.assertEqual(self.hubs_a.given_up, [])  # cut off: A knows nothing yet
        self.connector.connect()  # back: the renewals it sends at once find the key taken
        self.assertEqual(self.hubs_a.given_up, [("chat", KEY)])
        self.assertEqual(self.redis.data[NAME], taken)  # not written back over it
        self.assertEqual((self.backplane.given_up, self.backplane.snapshots_kept, self.backplane._sessions.rewritten),
                         (1, 0, 0))
        row = dict(self.backplane.status())["sessions kept in redis"]
        self.assertIn("1 restored elsewhere while this node was cut off", row)
        # what the copy's calls would still send goes to B
        self.hubs_a.forwards[0]("c-1")
        self.assertEqual(self.backplane._moves.node_of("c-1"), self.b.token)
        self.advance(TTL)  # later beats renew nothing of it
        self.assertEqual(self.hubs_a.given_up, [("chat", KEY)])

    def test_a_failure_giving_the_copy_up_is_logged_with_its_traceback(self) -> None:
        self.restore_on_b()

        def broken(hub: str, key: bytes, forward: Any) -> bool:
            raise RuntimeError("a bug in giving up")

        self.hubs_a.give_up = broken  # type: ignore[method-assign]
        errors = _errors_logged(self)
        self.connector.connect()
        self.assertEqual(self.backplane.given_up, 1)
        self.assertEqual(len(errors), 1)
        self.assertIn("giving up a session of hub chat another node restored failed", errors[0])
        self.assertIn("a bug in giving up", errors[0])  # (the traceback)
        self.flushLoggedErrors(RuntimeError)

    def test_a_key_holding_another_nodes_snapshot_by_now_is_given_up_too(self) -> None:
        self.restore_on_b()
        self.b.save_session("chat", KEY, b"newer", TTL)  # quiet again on B: its own snapshot
        self.connector.connect()
        self.assertEqual(self.hubs_a.given_up, [("chat", KEY)])
        self.assertEqual(self.read(self.b)[0], b"newer")
        self.hubs_a.forwards[0]("c-1")  # (which node does not say: the id's own node routes it)
        self.assertNotEqual(self.backplane._moves.node_of("c-1"), self.b.token)

    def test_unchanged_or_flushed_keys_are_kept(self) -> None:
        """Nobody restored it: A's renewal renews it; Redis flushed: A writes it again. Nothing is given up."""
        self.connector.connect()
        self.assertEqual(self.redis.data[NAME], self.value)
        self.redis.data.clear()
        self.redis.expires.clear()
        self.advance(TTL / 4 + 1.0)
        self.assertEqual(self.redis.data[NAME], self.value)
        self.assertEqual((self.hubs_a.given_up, self.backplane._sessions.rewritten), ([], 1))

    def test_the_mark_waits_while_redis_is_away_from_the_restorer_too(self) -> None:
        self.advance(1.0)
        self.assertIsNotNone(self.read(self.b))
        b_connector = self.redis.connectors[-1]
        b_connector.lose()
        self.b.forget_session(KEY)
        self.assertEqual(self.redis.data[NAME], self.value)  # (B cannot reach Redis either)
        b_connector.connect()
        self.assertEqual(msgpack.unpackb(self.redis.data[NAME]), [0, self.b.token])  # marked, not deleted

    def test_a_restored_key_the_restorer_wrote_again_is_deleted_when_forgotten(self) -> None:
        self.restore_on_b()
        self.b.save_session("chat", KEY, b"newer", TTL)
        self.b.forget_session(KEY)  # (its session ended on B)
        self.assertNotIn(NAME, self.redis.data)


class TrustTests(StoreCase):
    def setUp(self) -> None:
        super().setUp()
        # (not self.mktemp(): under pytest it writes below the current directory, the checkout)
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.secret = os.path.join(directory.name, "secret")
        with open(self.secret, "w") as f:
            f.write("a-shared-secret-of-enough-length\n")
        self.signed = self.node(self.redis.connector(), secret_file=self.secret)

    def test_a_signed_snapshot_reads_back_and_a_forged_one_is_refused_and_logged(self) -> None:
        self.signed.save_session("chat", KEY, b"state", TTL)
        self.assertNotEqual(self.redis.data[NAME][:1], msgpack.packb([1])[:1])  # (a MAC goes first)
        self.assertEqual(self.read(self.signed)[0], b"state")
        self.redis.data[NAME] = msgpack.packb([1, "chat", b"forged", {}])  # written by someone without the secret
        errors = self._errors()
        self.assertIsNone(self.read(self.signed))
        self.assertIn("not signed with the nodes' secret", " ".join(errors))

    def test_a_snapshot_of_another_hub_or_layout_is_refused(self) -> None:
        self.backplane.save_session("echo", KEY, b"state", TTL)
        self.assertIsNone(self.read(self.backplane, "chat"))
        self.redis.data[NAME] = msgpack.packb([2, "chat", b"state", {}])
        self.assertIsNone(self.read(self.backplane))
        self.assertEqual(self.backplane._sessions.read_unusable, 2)

    def test_a_value_not_signed_found_at_a_renewal_is_overwritten_not_obeyed(self) -> None:
        """Someone without the secret wrote a taken mark over the node's snapshot: logged, and written back."""
        hubs: _NoHubs = self.signed._hubs  # type: ignore[assignment]
        self.signed.save_session("chat", KEY, b"state", TTL)
        value = self.redis.data[NAME]
        self.redis.data[NAME] = msgpack.packb([0, "a-node-of-the-forger"])
        errors = _errors_logged(self)
        self.advance(TTL / 4 + 1.0)
        self.assertEqual(self.redis.data[NAME], value)
        self.assertEqual((hubs.given_up, self.signed.given_up), ([], 0))
        self.assertIn("not signed with the nodes' secret", " ".join(errors))

    def test_a_signed_taken_mark_is_obeyed(self) -> None:
        hubs: _NoHubs = self.signed._hubs  # type: ignore[assignment]
        other = self.node(self.redis.connector(), secret_file=self.secret)
        self.signed.save_session("chat", KEY, b"state", TTL)
        self.advance(1.0)
        self.assertIsNotNone(self.read(other))
        other.forget_session(KEY)
        self.advance(TTL / 4 + 1.0)
        self.assertEqual(hubs.given_up, [("chat", KEY)])
        hubs.forwards[0]("c-9")  # (the mark is authentic: what the copy still sends goes to the node it names)
        self.assertEqual(self.signed._moves.node_of("c-9"), other.token)

    def _errors(self) -> list[str]:
        from twisted.logger import globalLogPublisher

        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if "session snapshot" in str(event.get("log_format", "")):
                lines.append(str(event.get("problem", "")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines

