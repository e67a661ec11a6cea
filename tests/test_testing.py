"""The public testing helpers (twisted_hub.testing) behave as documented."""

from __future__ import annotations

from typing import Any

import msgpack
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import DisconnectKind, HubClientOptions, connect
from twisted_hub.testing import HubTestServer

from .helpers.hubs import Recorder, WorkHub, WorkLog, work_hub


class HubTestServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = WorkLog()
        self.server = HubTestServer([work_hub(self.log)])

    def test_connect_runs_handshake(self) -> None:
        """connect() returns a connection whose handshake is done and whose hub instance is reachable."""
        conn = self.server.connect("work")
        client = self.successResultOf(conn.ready)
        self.assertIs(client, conn.client)
        self.assertIsInstance(conn.hub, WorkHub)
        self.assertEqual(conn.hub.connection.id, client.connection_id)
        self.assertEqual(self.server.connections, [conn])
        self.assertEqual(self.server.factory.connection_count, 1)

    def test_own_clock(self) -> None:
        """The server, its factory and its clients share the given Clock."""
        clock = Clock()
        server = HubTestServer([work_hub(self.log)], clock=clock)
        conn = server.connect("work")
        self.assertIs(server.factory.clock, clock)
        self.assertIs(conn.client.factory.clock, clock)

    def test_flush_exchanges_everything(self) -> None:
        """flush() carries calls, results and the messages they cause until all is quiet."""
        recorder = Recorder()
        conn = self.server.connect("work", receiver=recorder)
        d = conn.client.call("to_caller", "hi")
        self.assertNoResult(d)
        self.server.flush()
        self.successResultOf(d)
        self.assertEqual(recorder.calls, [("said", ("hi",))])

    def test_spies(self) -> None:
        """client_received / server_received hold every binary payload each side got, in order."""
        conn = self.server.connect("work")
        self.assertEqual(msgpack.unpackb(conn.client_received[0])[0], 1)  # welcome
        self.assertEqual(msgpack.unpackb(conn.server_received[0])[0], 0)  # hello
        conn.client.call("plain", "x")
        self.server.flush()
        self.assertEqual(msgpack.unpackb(conn.server_received[-1]), [2, 1, "plain", ["x"]])
        self.assertEqual(msgpack.unpackb(conn.client_received[-1]), [4, 1, "x"])

    def test_advance_exchanges_between_timers(self) -> None:
        """advance() stops at each timer and exchanges messages before the next one fires."""
        recorder = Recorder()
        conn = self.server.connect("work", receiver=recorder)
        seen_at_2: list[int] = []
        self.server.clock.callLater(1, lambda: conn.hub.clients.caller.said("t1"))
        self.server.clock.callLater(2, lambda: seen_at_2.append(len(recorder.calls)))
        self.server.advance(3)
        self.assertEqual(seen_at_2, [1])
        self.assertEqual(self.server.clock.seconds(), 3)

    def test_advance_fires_timeouts(self) -> None:
        """advance() moves the shared clock: a client call timeout fires exactly on time."""
        conn = self.server.connect("work", options=HubClientOptions(call_timeout=2))
        d = conn.client.call("deferred", 1)
        self.server.advance(1.5)
        self.assertNoResult(d)
        self.server.advance(0.5)
        self.failureResultOf(d)

    def test_stall(self) -> None:
        """stall() fires due timers late, before data that was waiting is read."""
        conn = self.server.connect("work")
        d = conn.client.call("plain", 1)
        seen: list[bool] = []
        self.server.clock.callLater(1, lambda: seen.append(d.called))
        self.server.stall(5)
        self.assertEqual(seen, [False])
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.server.clock.seconds(), 5)

    def test_freeze_client_holds_both_directions(self) -> None:
        """A frozen client sends nothing and receives nothing until thawed."""
        recorder = Recorder()
        conn = self.server.connect("work", receiver=recorder)
        conn.freeze_client()
        d = conn.client.call("record", "while frozen")
        conn.hub.clients.caller.said("to frozen")
        self.server.advance(10)
        self.assertNoResult(d)
        self.assertNotIn(("record", "while frozen"), self.log.events)
        self.assertEqual(recorder.calls, [])
        conn.thaw()
        self.server.flush()
        self.successResultOf(d)
        self.assertIn(("record", "while frozen"), self.log.events)
        self.assertEqual(recorder.calls, [("said", ("to frozen",))])

    def test_freeze_server(self) -> None:
        """A frozen server side neither reads calls nor answers until thawed."""
        conn = self.server.connect("work")
        conn.freeze_server()
        d = conn.client.call("plain", 1)
        self.server.advance(10)
        self.assertNoResult(d)
        self.assertEqual(len(conn.server_received), 1)  # just the hello
        conn.thaw()
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 1)

    def test_frozen_peer_does_not_see_close(self) -> None:
        """A frozen client learns of a server-side close only once thawed."""
        conn = self.server.connect("work")
        conn.freeze_client()
        conn.hub.connection.kick("bye")
        self.server.flush()
        waiting = conn.client.wait_for_disconnect()
        self.assertNoResult(waiting)
        conn.thaw()
        self.server.flush()
        self.assertEqual(self.successResultOf(waiting).kind, DisconnectKind.KICKED)

    def test_drop(self) -> None:
        """drop() breaks the link: both sides see the connection lost at once."""
        conn = self.server.connect("work")
        self.assertFalse(conn.closed)
        conn.drop()
        self.assertTrue(conn.closed)
        self.assertEqual(self.successResultOf(conn.client.wait_for_disconnect()).kind, DisconnectKind.CONNECTION_LOST)
        self.assertEqual(self.log.events[-1][1].kind, DisconnectKind.CONNECTION_LOST)
        conn.drop()  # twice is harmless
        self.server.flush()

    def test_closed_after_normal_close(self) -> None:
        """closed becomes true once both transports are disconnected after a close handshake."""
        conn = self.server.connect("work")
        conn.client.disconnect()
        self.server.flush()
        self.assertTrue(conn.closed)

    def test_endpoint_with_connect(self) -> None:
        """server.endpoint() lets the public connect() run in memory on the Clock."""
        endpoint = self.server.endpoint()
        d = connect("ws://127.0.0.1/hub", "work", clock=self.server.clock, endpoint=endpoint)
        self.server.flush()
        client: Any = self.successResultOf(d)
        call = client.call("plain", 5)
        self.server.flush()
        self.assertEqual(self.successResultOf(call), 5)
        self.assertEqual(endpoint.attempts, 1)

    def test_endpoint_refusing(self) -> None:
        """A refusing endpoint fails connection attempts with ConnectionRefusedError and counts them."""
        endpoint = self.server.endpoint()
        endpoint.refusing = True
        d = connect("ws://127.0.0.1/hub", "work", clock=self.server.clock, endpoint=endpoint)
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(endpoint.attempts, 1)

    def test_not_collected_by_pytest(self) -> None:
        """The helper classes opt out of pytest collection despite their Test* names."""
        from twisted_hub.testing import TestConnection, TestEndpoint

        self.assertFalse(TestConnection.__test__)
        self.assertFalse(TestEndpoint.__test__)
        self.assertFalse(HubTestServer.__test__)
