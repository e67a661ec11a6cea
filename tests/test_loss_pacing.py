"""
Lost connections are torn down at most C{per_turn} per reactor turn
(L{twisted_hub._twisted.loss_pacing.LossPacer}): a storm of resets no longer
holds the loop for the whole teardown, and the live connections are served
between the batches (docs/performance.md, "A reconnect storm against one
process").
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._twisted.loss_pacing import DEFAULT_LOSSES_PER_TURN, LossPacer
from twisted_hub.testing import HubTestServer

from .helpers.hubs import WorkLog, work_hub


def next_turn(clock: Clock) -> None:
    """
    The reactor's next turn: run the calls due now, not those they schedule
    (the reactor runs a C{callLater(0)} made in a turn in the next turn;
    C{Clock.advance(0)} would run it at once).
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = True
        call.func(*call.args, **call.kw)


class LossPacerTests(SynchronousTestCase):
    def test_the_first_per_turn_run_at_once_the_rest_in_later_turns_in_order(self) -> None:
        clock = Clock()
        pacer = LossPacer(clock, per_turn=2)
        ran: list[int] = []
        for n in range(5):
            pacer.lost(lambda n=n: ran.append(n))
        self.assertEqual(ran, [0, 1])
        self.assertEqual(len(pacer), 3)
        next_turn(clock)
        self.assertEqual(ran, [0, 1, 2, 3])
        next_turn(clock)
        self.assertEqual(ran, [0, 1, 2, 3, 4])
        self.assertEqual(len(pacer), 0)
        next_turn(clock)  # the turn that finds nothing waiting schedules no other
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_each_turn_has_its_own_budget(self) -> None:
        clock = Clock()
        pacer = LossPacer(clock, per_turn=2)
        ran: list[str] = []
        for turn in range(3):
            pacer.lost(lambda turn=turn: ran.append(f"{turn}a"))
            pacer.lost(lambda turn=turn: ran.append(f"{turn}b"))
            self.assertEqual(len(pacer), 0, "two losses in a turn of two run at once")
            next_turn(clock)
        self.assertEqual(ran, ["0a", "0b", "1a", "1b", "2a", "2b"])

    def test_a_loss_in_a_turn_that_drains_waits_behind_the_earlier_ones(self) -> None:
        clock = Clock()
        pacer = LossPacer(clock, per_turn=1)
        ran: list[str] = []
        pacer.lost(lambda: ran.append("a"))
        pacer.lost(lambda: ran.append("b"))
        next_turn(clock)  # runs b: this turn's budget is spent
        pacer.lost(lambda: ran.append("c"))
        self.assertEqual(ran, ["a", "b"])
        next_turn(clock)
        self.assertEqual(ran, ["a", "b", "c"])

    def test_per_turn_must_be_positive(self) -> None:
        self.assertRaises(ValueError, LossPacer, Clock(), 0)

    def test_the_server_default(self) -> None:
        server = HubTestServer([work_hub(WorkLog())])
        self.assertEqual(server.factory.loss_pacer.per_turn, DEFAULT_LOSSES_PER_TURN)


class ServerLossPacingTests(SynchronousTestCase):
    def test_many_connections_lost_in_one_turn_end_over_several(self) -> None:
        log = WorkLog()
        server = HubTestServer([work_hub(log)])
        server.factory.loss_pacer.per_turn = 2
        connections = [server.connect("work") for _ in range(5)]
        server.flush()
        ids = [c.hub.connection.id for c in connections]
        for connection in connections:
            connection.drop()
        ended = [event[0] for event in log.events if event[0] == "disconnected"]
        self.assertEqual(len(ended), 2)
        self.assertEqual(server.factory.connection_count, 3, "the sessions still waiting are still counted")
        next_turn(server.clock)
        self.assertEqual(len([e for e in log.events if e[0] == "disconnected"]), 4)
        next_turn(server.clock)
        self.assertEqual(len([e for e in log.events if e[0] == "disconnected"]), 5)
        self.assertEqual(server.factory.connection_count, 0)
        connected = [event[1] for event in log.events if event[0] == "connected"]
        self.assertEqual(connected, ids)

    def test_a_broadcast_may_reach_a_waiting_session(self) -> None:
        # Twisted's transports drop what is written after the connection was lost
        # (FileDescriptor.write checks `connected`); the session must take it quietly.
        log = WorkLog()
        server = HubTestServer([work_hub(log)])
        server.factory.loss_pacer.per_turn = 1
        first, second = server.connect("work"), server.connect("work")
        first.drop()
        second.drop()
        waiting = second.server_protocol
        self.assertIsNone(waiting.disconnect_reason, "its teardown waits for the next turn")
        self.assertIsNotNone(first.server_protocol.disconnect_reason)
        second.hub.clients.all.note("to everyone")
        self.assertEqual(self.flushLoggedErrors(), [])
        next_turn(server.clock)
        reason = waiting.disconnect_reason
        assert reason is not None
        self.assertEqual(reason.kind.value, "connection-lost")
