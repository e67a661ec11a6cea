"""
Tests for the sans-IO connection core (L{twisted_hub._core.connection}) and the
heartbeat bookkeeping (L{twisted_hub._core.heartbeat}): no reactor, no Clock, the
time is passed explicitly and the two cores are wired together by hand.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import twisted_hub._core.connection as connection_module
from twisted_hub._core.connection import (
    BATCH_BYTES,
    CallFailed,
    CallSucceeded,
    ClientConnection,
    Connection,
    ConnectionState,
    Event,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerConnection,
    ServerHeartbeatReceived,
    shared_capabilities,
    to_us,
)
from twisted_hub._core.heartbeat import (
    MAX_REMEMBERED_HEARTBEATS,
    ClockOffset,
    ClockSync,
    HeartbeatConfigurationError,
    HeartbeatConfigurationWarning,
    HeartbeatPolicy,
    HeartbeatTracker,
    HeartbeatVerdict,
    StallDetector,
)
from twisted_hub._core.wire import (
    BATCH_MESSAGES,
    CAP_BATCH,
    CAP_HEARTBEAT,
    OUR_CAPABILITIES,
    ClientHeartbeat,
    ClientHeartbeatAck,
    ClientInvoke,
    Close,
    Error,
    Hello,
    Invoke,
    Message,
    Notify,
    ProtocolError,
    ReceiverCall,
    Result,
    ServerHeartbeat,
    ServerHeartbeatAck,
    TooManyMessagesError,
    Welcome,
    decode_frame,
    encode,
)

Server = ServerConnection[str]
Client = ClientConnection[str]


def deliver(source: Connection[Any], destination: Connection[Any], now: float = 0.0) -> list[Event]:
    """Move everything C{source} queued into C{destination}; return the events."""
    events: list[Event] = []
    for frame in source.frames_to_send():
        for event in destination.receive_frame(frame, now):
            if isinstance(event, ClientHeartbeat) and isinstance(destination, ServerConnection):
                destination.answer_heartbeat(event, now)  # what the server adapter does, in order
            else:
                events.append(event)
    return events


def sent_messages(connection: Connection[Any]) -> list[list[Message]]:
    """Drain C{connection}'s outbox: the messages of each frame it would send."""
    return [decode_frame(frame) for frame in connection.frames_to_send()]


def connected_pair(
    client_capabilities: tuple[str, ...] = OUR_CAPABILITIES,
    heartbeat_interval: float | None = None,
    heartbeat_timeout: float | None = None,
) -> tuple[Server, Client]:
    """A server and a client core that completed the hello/welcome exchange."""
    server: Server = ServerConnection("conn-1", heartbeat_interval, heartbeat_timeout)
    client: Client = ClientConnection(client_capabilities)
    server.welcome()
    client.hello()
    deliver(server, client)
    deliver(client, server)
    return server, client


class HandshakeTests(SynchronousTestCase):
    """The hello/welcome exchange and the order it imposes."""

    def test_exchange(self) -> None:
        """Welcome and hello each produce HandshakeCompleted with the peer's capabilities."""
        server: Server = ServerConnection("conn-7", 30.0, 90.0)
        client: Client = ClientConnection(("heartbeat",))
        server.welcome()
        client.hello()
        self.assertEqual((server.state, client.state), (ConnectionState.HANDSHAKING, ConnectionState.HANDSHAKING))
        self.assertEqual(deliver(server, client), [HandshakeCompleted(frozenset(OUR_CAPABILITIES))])
        self.assertEqual(deliver(client, server), [HandshakeCompleted(frozenset({"heartbeat"}))])
        self.assertEqual((server.state, client.state), (ConnectionState.OPEN, ConnectionState.OPEN))
        self.assertEqual(client.welcome, Welcome(list(OUR_CAPABILITIES), "conn-7", 30.0, 90.0))
        self.assertTrue(server.peer_takes_heartbeats)
        self.assertTrue(client.server_takes_heartbeats)

    def test_welcomeWithoutHeartbeat(self) -> None:
        """A server without an interval announces no heartbeat settings, even with a timeout."""
        server: Server = ServerConnection("c", None, 5.0)
        server.welcome()
        self.assertEqual(sent_messages(server), [[Welcome(list(OUR_CAPABILITIES), "c", None, None)]])

    def test_clientWithoutHeartbeatCapability(self) -> None:
        """A client that does not announce heartbeat is not one the server may beat."""
        server, client = connected_pair(client_capabilities=(CAP_BATCH,))
        self.assertFalse(server.peer_takes_heartbeats)
        self.assertEqual(server.peer_capabilities, frozenset({CAP_BATCH}))

    def test_serverRequiresHelloFirst(self) -> None:
        """Any message but hello as the client's first is a ProtocolError."""
        firsts: list[Message] = [Invoke(1, "m", []), Notify("m", []), ClientHeartbeat(1, 0), ServerHeartbeatAck(1)]
        for first in [*firsts, Close(1000, "")]:
            server: Server = ServerConnection("c")
            error = self.assertRaises(ProtocolError, server.receive_frame, encode(first), 0.0)
            self.assertIn("hello", str(error))
            self.assertEqual(server.state, ConnectionState.HANDSHAKING)

    def test_helloTwice(self) -> None:
        """A second hello is a ProtocolError."""
        server, _ = connected_pair()
        error = self.assertRaises(ProtocolError, server.receive_frame, encode(Hello([])), 1.0)
        self.assertIn("twice", str(error))

    def test_clientRequiresWelcomeFirst(self) -> None:
        """Any message but welcome as the server's first is a ProtocolError."""
        for first in (Result(1, None), ReceiverCall("m", []), ServerHeartbeat(1, 0), Close(1001, "")):
            client: Client = ClientConnection()
            error = self.assertRaises(ProtocolError, client.receive_frame, encode(first), 0.0)
            self.assertIn("welcome", str(error))

    def test_welcomeTwice(self) -> None:
        """A second welcome is a ProtocolError."""
        _, client = connected_pair()
        error = self.assertRaises(ProtocolError, client.receive_frame, encode(Welcome([], "x")), 1.0)
        self.assertIn("twice", str(error))

    def test_helloAndCallInOneFrame(self) -> None:
        """Hello followed by a call in the same frame: both are handled, in order."""
        server: Server = ServerConnection("c")
        events = server.receive_frame(encode(Hello(["batch"])) + encode(Invoke(1, "m", [2])), 0.0)
        self.assertEqual(events, [HandshakeCompleted(frozenset({"batch"})), Invoke(1, "m", [2])])


class SharedCapabilitiesTests(SynchronousTestCase):
    """Connections that announce the same capabilities share one set (memory per idle connection)."""

    def setUp(self) -> None:
        self.patch(connection_module, "_capability_sets", {})

    def test_same_list_same_set(self) -> None:
        """Two hellos with the same list give their connections the very same frozenset; another list another set."""
        servers = []
        for caps in (["heartbeat", "batch"], ["heartbeat", "batch"], ["batch"]):
            server: Server = ServerConnection("c")
            server.receive_frame(encode(Hello(list(caps))), 0.0)
            servers.append(server)
        first, second, third = (server.peer_capabilities for server in servers)
        self.assertIs(first, second)
        self.assertEqual((first, third), (frozenset({"heartbeat", "batch"}), frozenset({"batch"})))

    def test_bounded(self) -> None:
        """Past MAX_SHARED_CAPABILITY_SETS distinct lists, a list gets a set of its own and nothing more is kept."""
        limit = connection_module.MAX_SHARED_CAPABILITY_SETS
        for i in range(limit + 10):
            self.assertEqual(shared_capabilities([f"cap{i}"]), frozenset({f"cap{i}"}))
        self.assertEqual(len(connection_module._capability_sets), limit)
        late = shared_capabilities([f"cap{limit + 1}"])
        self.assertIsNot(late, shared_capabilities([f"cap{limit + 1}"]))


class DirectionTests(SynchronousTestCase):
    """Each side rejects the message kinds only it may send."""

    def test_serverRejectsServerKinds(self) -> None:
        """A client sending welcome, receiver calls, client invokes or server heartbeats is rejected."""
        for message in (
            Welcome([], "x"),
            ReceiverCall("m", []),
            ClientInvoke(1, "m", []),
            ServerHeartbeat(1, 0),
            ClientHeartbeatAck(1, 0, 0),
        ):
            server, _ = connected_pair()
            error = self.assertRaises(ProtocolError, server.receive_frame, encode(message), 1.0)
            self.assertIn("direction", str(error))

    def test_clientRejectsClientKinds(self) -> None:
        """A server sending hello, invokes, notifies or client heartbeats is rejected."""
        for message in (Hello([]), Invoke(1, "m", []), Notify("m", []), ServerHeartbeatAck(1), ClientHeartbeat(1, 0)):
            _, client = connected_pair()
            error = self.assertRaises(ProtocolError, client.receive_frame, encode(message), 1.0)
            self.assertIn("direction", str(error))

    def test_wrongDirectionInHandshake(self) -> None:
        """The direction check applies before the handshake too."""
        server: Server = ServerConnection("c")
        self.assertRaises(ProtocolError, server.receive_frame, encode(ReceiverCall("m", [])), 0.0)

    def test_malformedFrame(self) -> None:
        """Bytes that are not msgpack messages raise ProtocolError from receive_frame."""
        server, client = connected_pair()
        self.assertRaises(ProtocolError, server.receive_frame, b"\xc1", 1.0)
        self.assertRaises(ProtocolError, client.receive_frame, b"", 1.0)


class CallTests(SynchronousTestCase):
    """Call ids, pending calls and the answers matched to them."""

    def test_callIdsCount(self) -> None:
        """Client call ids start at 1 and go up by one; the server sees them in order."""
        server, client = connected_pair()
        ids = [client.invoke("a", "echo", [1]), client.invoke("b", "echo", [2], {"k": 3})]
        client.notify("typing", [True])
        self.assertEqual(ids, [1, 2])
        self.assertEqual(client.pending_count, 2)
        self.assertEqual(
            deliver(client, server),
            [Invoke(1, "echo", [1]), Invoke(2, "echo", [2], {"k": 3}), Notify("typing", [True])],
        )

    def test_resultsMatchedOutOfOrder(self) -> None:
        """Answers arriving in any order reach the tokens of their own calls."""
        server, client = connected_pair()
        client.invoke("first", "a", [])
        client.invoke("second", "b", [])
        deliver(client, server)
        server.send(Error(2, "boom", "failed", {"x": 1}))
        server.send(Result(1, "one"))
        events = deliver(server, client)
        self.assertEqual(
            events, [CallFailed("second", Error(2, "boom", "failed", {"x": 1})), CallSucceeded("first", "one")]
        )
        self.assertEqual(client.pending_count, 0)
        self.assertEqual(client.late_answers, 0)

    def test_lateAnswerAfterForget(self) -> None:
        """After forget_call, the answer is dropped and counted as late."""
        server, client = connected_pair()
        call_id = client.invoke("token", "slow", [])
        self.assertEqual(client.forget_call(call_id), "token")
        self.assertIsNone(client.forget_call(call_id))
        server.send(Result(call_id, 1))
        self.assertEqual(deliver(server, client), [])
        self.assertEqual(client.late_answers, 1)

    def test_unknownCallIdDropped(self) -> None:
        """An answer to a call never made is dropped and counted, not an error."""
        server, client = connected_pair()
        server.send(Result(99, None))
        server.send(Error(98, "c", "m"))
        self.assertEqual(deliver(server, client), [])
        self.assertEqual(client.late_answers, 2)

    def test_answerOnlyOnce(self) -> None:
        """A second answer with the same call id is a late answer."""
        server, client = connected_pair()
        client.invoke("t", "m", [])
        server.send(Result(1, "a"))
        server.send(Result(1, "b"))
        self.assertEqual(deliver(server, client), [CallSucceeded("t", "a")])
        self.assertEqual(client.late_answers, 1)

    def test_closedReturnsPending(self) -> None:
        """closed() returns every pending token once and leaves nothing pending."""
        server, client = connected_pair()
        client.invoke("a", "m", [])
        client.invoke("b", "m", [])
        client.invoke("c", "m", [])
        client.forget_call(2)
        self.assertEqual(sorted(client.closed()), ["a", "c"])
        self.assertEqual(client.closed(), [])
        self.assertEqual(client.state, ConnectionState.CLOSED)

    def test_closedDropsTraffic(self) -> None:
        """A closed connection ignores frames and queues nothing."""
        server, client = connected_pair()
        client.invoke("a", "m", [])
        client.closed()
        self.assertFalse(client.has_outgoing)
        self.assertEqual(client.receive_frame(encode(Result(1, 1)), 5.0), [])
        client.notify("m", [])
        self.assertEqual(client.frames_to_send(), [])

    def test_clientResult(self) -> None:
        """A server client-invoke reaches the client and the client's answer resolves it."""
        server, client = connected_pair()
        call_id = server.invoke_client("deferred", "confirm", ["quit?"], {"default": False})
        self.assertEqual(deliver(server, client), [ClientInvoke(call_id, "confirm", ["quit?"], {"default": False})])
        client.send(Result(call_id, True))
        self.assertEqual(deliver(client, server), [CallSucceeded("deferred", True)])
        self.assertEqual(server.pending_count, 0)

    def test_serverAndClientIdSpacesIndependent(self) -> None:
        """Server call ids and client call ids both start at 1 without clashing."""
        server, client = connected_pair()
        self.assertEqual(client.invoke("client-call", "m", []), 1)
        self.assertEqual(server.invoke_client("server-call", "r", []), 1)
        deliver(client, server)
        deliver(server, client)
        client.send(Error(1, "unknown-method", "no"))
        server.send(Result(1, "answer"))
        self.assertEqual(deliver(client, server), [CallFailed("server-call", Error(1, "unknown-method", "no"))])
        self.assertEqual(deliver(server, client), [CallSucceeded("client-call", "answer")])

    def test_closeMessage(self) -> None:
        """A CLOSE message is passed on as an event and moves the receiver to CLOSING."""
        server, client = connected_pair()
        server.send(Close(4000, "bye"))
        self.assertEqual(deliver(server, client), [Close(4000, "bye")])
        self.assertEqual(client.state, ConnectionState.CLOSING)
        client.send(Close(1000, ""))
        self.assertEqual(deliver(client, server), [Close(1000, "")])
        self.assertEqual(server.state, ConnectionState.CLOSING)

    def test_receiveBookkeeping(self) -> None:
        """receive_frame records the time of the last frame and counts frames."""
        server, client = connected_pair()
        client.notify("m", [])
        deliver(client, server, now=42.5)
        self.assertEqual((server.last_received, server.frames_received), (42.5, 2))


class BatchingTests(SynchronousTestCase):
    """Several queued messages leave as one frame only for a batch-capable peer."""

    def test_batchForBatchPeer(self) -> None:
        """Messages queued together leave in one frame when the peer announced batch."""
        server, client = connected_pair()
        server.send(Result(1, "a"))
        server.send(ReceiverCall("m", [1]))
        server.send(ClientHeartbeatAck(1, 2, 3))
        frames = server.frames_to_send()
        self.assertEqual(len(frames), 1)
        self.assertEqual(decode_frame(frames[0]), [Result(1, "a"), ReceiverCall("m", [1]), ClientHeartbeatAck(1, 2, 3)])
        self.assertFalse(server.has_outgoing)

    def test_noBatchWithoutCapability(self) -> None:
        """For a peer without batch every message leaves in its own frame, in order."""
        server, client = connected_pair(client_capabilities=(CAP_HEARTBEAT,))
        server.send(Result(1, "a"))
        server.send(ReceiverCall("m", [1]))
        server.send(Close(1000, ""))
        self.assertEqual(sent_messages(server), [[Result(1, "a")], [ReceiverCall("m", [1])], [Close(1000, "")]])

    def test_clientBatchesOnlyForBatchServer(self) -> None:
        """The client batches only after a welcome that announced batch."""
        server: Server = ServerConnection("c")
        client: Client = ClientConnection()
        client.receive_frame(encode(Welcome([CAP_HEARTBEAT], "c")), 0.0)
        client.invoke("a", "m", [])
        client.invoke("b", "m", [])
        self.assertEqual(len(client.frames_to_send()), 2)
        server2, client2 = connected_pair()
        client2.invoke("a", "m", [])
        client2.invoke("b", "m", [])
        self.assertEqual(len(client2.frames_to_send()), 1)
        self.assertEqual(server.state, ConnectionState.HANDSHAKING)

    def test_batchSplitAtMaxSize(self) -> None:
        """With max_size, batches are split so no frame exceeds it; a bigger message goes alone."""
        server, client = connected_pair()
        small = [Result(n, "x" * 10) for n in range(1, 4)]
        big = Result(9, "y" * 100)
        for message in [*small, big, small[0]]:
            server.send(message)
        size = len(encode(small[0]))
        frames = server.frames_to_send(max_size=2 * size)
        self.assertEqual([decode_frame(f) for f in frames], [small[:2], small[2:], [big], small[:1]])
        self.assertTrue(all(len(f) <= 2 * size for f in frames if f != encode(big)))

    def test_batchSplitAtBatchBytes(self) -> None:
        """Under a larger peer limit, batches still close before BATCH_BYTES; a bigger message goes alone."""
        server, client = connected_pair()
        quarter = [Result(n, b"q" * (BATCH_BYTES // 4 - 16)) for n in range(1, 6)]
        big = Result(9, b"b" * BATCH_BYTES)
        for message in [*quarter, big, quarter[0]]:
            server.send(message)
        frames = server.frames_to_send(max_size=1024 * 1024)
        self.assertEqual([decode_frame(f) for f in frames], [quarter[:4], quarter[4:], [big], quarter[:1]])
        self.assertTrue(all(len(f) <= BATCH_BYTES for f in frames if f != encode(big)))

    def test_batchSplitAtMessageCount(self) -> None:
        """A batch never holds more than BATCH_MESSAGES messages, with or without max_size."""
        for max_size in (None, 10_000_000):
            server, client = connected_pair()
            sent = [Result(n, n) for n in range(1, 2 * BATCH_MESSAGES + 2)]
            for message in sent:
                server.send(message)
            frames = server.frames_to_send(max_size=max_size)
            decoded = [decode_frame(f) for f in frames]
            self.assertEqual([len(d) for d in decoded], [BATCH_MESSAGES, BATCH_MESSAGES, 1])
            self.assertEqual([m for d in decoded for m in d], sent)

    def test_receiverEnforcesMessagesPerFrame(self) -> None:
        """A core with max_messages_per_frame refuses a bigger frame before handling any of it."""
        server, client = connected_pair()
        server.max_messages_per_frame = 3
        for n in range(4):
            client.notify("m", [n])
        frame = b"".join(client.frames_to_send())
        self.assertRaises(TooManyMessagesError, server.receive_frame, frame, 1.0)
        for n in range(3):
            client.notify("m", [n])
        events = server.receive_frame(b"".join(client.frames_to_send()), 2.0)
        self.assertEqual(events, [Notify("m", [n]) for n in range(3)])

    def test_maxSizeWithoutBatch(self) -> None:
        """For a peer without batch, max_size changes nothing: one frame per message."""
        server, client = connected_pair(client_capabilities=())
        server.send(Result(1, 1))
        server.send(Result(2, 2))
        self.assertEqual(server.frames_to_send(max_size=10_000), [encode(Result(1, 1)), encode(Result(2, 2))])

    def test_singleMessageOneFrame(self) -> None:
        """One queued message is one frame holding exactly its encoding."""
        server, client = connected_pair()
        server.send(Result(7, None))
        self.assertEqual(server.frames_to_send(), [encode(Result(7, None))])
        self.assertEqual(server.frames_to_send(), [])

    def test_answersToBatchLeaveInOneFrame(self) -> None:
        """Heartbeat answers produced while handling one batched frame leave together."""
        server, client = connected_pair()
        client.send_heartbeat(1.0)
        client.send_heartbeat(2.0)
        deliver(client, server, now=3.0)
        frames = sent_messages(server)
        self.assertEqual(
            frames, [[ClientHeartbeatAck(1, to_us(1.0), to_us(3.0)), ClientHeartbeatAck(2, to_us(2.0), to_us(3.0))]]
        )


class ConnectionHeartbeatTests(SynchronousTestCase):
    """Heartbeats through the connection cores."""

    def test_serverAnswersClientHeartbeatAlways(self) -> None:
        """A server with its own heartbeats off still echoes a client heartbeat with its time."""
        server, client = connected_pair(heartbeat_interval=None)
        sequence, started = client.send_heartbeat(10.0)
        self.assertEqual((sequence, started), (1, True))
        self.assertEqual(deliver(client, server, now=10.5), [])
        self.assertEqual(sent_messages(server), [[ClientHeartbeatAck(1, 10_000_000, 10_500_000)]])

    def test_clientHeartbeatRoundTrip(self) -> None:
        """The client gets the round trip and a clock sample from the server's echo."""
        server, client = connected_pair()
        client.send_heartbeat(10.0)
        deliver(client, server, now=1000.5)  # the server's clock is ~990 s ahead
        events = deliver(server, client, now=11.0)
        self.assertEqual(events, [HeartbeatAnswered(1, 1.0, ClockOffset(990.0, 0.5, 1.0))])
        self.assertEqual(client.heartbeat.latency, 1.0)
        self.assertIsNone(client.heartbeat.timeout_started_at)
        self.assertEqual(client.clock_sync.best, ClockOffset(990.0, 0.5, 1.0))

    def test_clientHeartbeatLateEchoCounts(self) -> None:
        """The echo of an older client heartbeat clears it: the timeout moves to the next unanswered one."""
        server, client = connected_pair()
        self.assertEqual(client.send_heartbeat(1.0), (1, True))
        self.assertEqual(client.send_heartbeat(2.0), (2, False))
        client.frames_to_send()
        server.send(ClientHeartbeatAck(1, to_us(1.0), 0))
        [first] = deliver(server, client, now=2.5)
        assert isinstance(first, HeartbeatAnswered)
        self.assertEqual((first.sequence, first.latency, client.heartbeat.timeout_started_at), (1, 1.5, 2.0))
        server.send(ClientHeartbeatAck(2, to_us(2.0), 0))
        [event] = deliver(server, client, now=2.75)
        assert isinstance(event, HeartbeatAnswered)
        self.assertEqual((event.sequence, event.latency, client.heartbeat.timeout_started_at), (2, 0.75, None))

    def test_serverDoesNotAnswerWhileClosing(self) -> None:
        """Once the server is closing it queues no heartbeat answers."""
        server, client = connected_pair()
        server.closing()
        client.send_heartbeat(1.0)
        deliver(client, server, now=1.0)
        self.assertFalse(server.has_outgoing)

    def test_clientAnswersServerHeartbeat(self) -> None:
        """The client answers a server heartbeat with its sequence and reports the beat."""
        server, client = connected_pair(heartbeat_interval=5.0, heartbeat_timeout=15.0)
        beat = ServerHeartbeat(41, 1_767_225_600_000_000, b"\x01")
        self.assertTrue(server.heartbeat.sent(41, 100.0))
        server.send(beat)
        self.assertEqual(deliver(server, client, now=3.0), [ServerHeartbeatReceived(beat)])
        self.assertEqual(sent_messages(client), [[ServerHeartbeatAck(41)]])

    def test_serverHeartbeatLatency(self) -> None:
        """The server's latency is the time from sending its newest beat to the ack."""
        server, client = connected_pair(heartbeat_interval=5.0, heartbeat_timeout=15.0)
        server.heartbeat.sent(1, 100.0)
        server.send(ServerHeartbeat(1, 0))
        deliver(server, client)
        self.assertEqual(deliver(client, server, now=100.25), [HeartbeatAnswered(1, 0.25)])
        self.assertEqual(server.heartbeat.latency, 0.25)
        self.assertIsNone(server.heartbeat.timeout_started_at)

    def test_serverCountsOlderAck(self) -> None:
        """An ack of an older server heartbeat is a sign of life: the timeout runs from the next unanswered one."""
        server, client = connected_pair(heartbeat_interval=5.0)
        server.heartbeat.sent(1, 100.0)
        server.heartbeat.sent(2, 105.0)
        client.send(ServerHeartbeatAck(1))
        self.assertEqual(deliver(client, server, now=106.0), [HeartbeatAnswered(1, 6.0)])
        self.assertEqual(server.heartbeat.timeout_started_at, 105.0)
        client.send(ServerHeartbeatAck(1))
        self.assertEqual(deliver(client, server, now=107.0), [])

    def test_closingStopsTracker(self) -> None:
        """closing() forgets the running timeout, so a late ack reports nothing."""
        server, client = connected_pair(heartbeat_interval=5.0)
        server.heartbeat.sent(1, 100.0)
        server.closing()
        self.assertIsNone(server.heartbeat.timeout_started_at)
        client.send(ServerHeartbeatAck(1))
        self.assertEqual(deliver(client, server, now=101.0), [])
        self.assertEqual(server.state, ConnectionState.CLOSING)

    def test_toUs(self) -> None:
        """Seconds become whole microseconds."""
        self.assertEqual((to_us(1.5), to_us(0.0000014), to_us(1_767_225_600.0)), (1_500_000, 1, 1_767_225_600_000_000))


class HeartbeatTrackerTests(SynchronousTestCase):
    """An answer to beat k clears every beat up to k; the timeout runs from the oldest unanswered one."""

    def test_timeoutFromOldest(self) -> None:
        """Only the first unanswered send starts the timeout; later sends leave it."""
        tracker = HeartbeatTracker()
        self.assertTrue(tracker.sent(1, 10.0))
        self.assertFalse(tracker.sent(2, 15.0))
        self.assertFalse(tracker.sent(3, 20.0))
        self.assertEqual((tracker.timeout_started_at, tracker.newest_sequence, tracker.unanswered), (10.0, 3, 3))

    def test_ackClearsEveryEarlierBeat(self) -> None:
        """An ack of beat 2 of 3 clears beats 1 and 2, measures beat 2's round trip, and leaves beat 3 running."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 10.0)
        tracker.sent(2, 15.0)
        tracker.sent(3, 20.0)
        self.assertEqual(tracker.acknowledged(2, 21.0), 6.0)
        self.assertEqual((tracker.timeout_started_at, tracker.acks, tracker.latency, tracker.unanswered), (20.0, 1, 6.0, 1))
        self.assertEqual(tracker.acknowledged(3, 20.5), 0.5)
        self.assertEqual((tracker.timeout_started_at, tracker.acks, tracker.unanswered), (None, 2, 0))

    def test_newTimeoutAfterAck(self) -> None:
        """After the newest ack, the next send starts a fresh timeout."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 10.0)
        tracker.acknowledged(1, 10.1)
        self.assertTrue(tracker.sent(2, 20.0))
        self.assertEqual(tracker.timeout_started_at, 20.0)

    def test_duplicateAndOlderAcksAreIgnored(self) -> None:
        """A repeated ack, or an ack of a beat already cleared by a newer one, changes nothing."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 10.0)
        tracker.sent(2, 11.0)
        self.assertEqual(tracker.acknowledged(2, 11.25), 0.25)
        tracker.sent(3, 12.0)
        self.assertIsNone(tracker.acknowledged(2, 12.5))
        self.assertIsNone(tracker.acknowledged(1, 12.5))
        self.assertEqual((tracker.timeout_started_at, tracker.acks, tracker.latency), (12.0, 1, 0.25))

    def test_acksOfUnsentBeatsAreIgnored(self) -> None:
        """An ack of a beat never sent (newer than the newest, older than the first) clears nothing."""
        tracker = HeartbeatTracker()
        tracker.sent(5, 10.0)
        self.assertIsNone(tracker.acknowledged(6, 10.5))
        self.assertIsNone(tracker.acknowledged(4, 10.5))
        self.assertEqual((tracker.timeout_started_at, tracker.acks), (10.0, 0))

    def test_rememberedBeatsAreBounded(self) -> None:
        """A peer that never answers costs at most MAX_REMEMBERED_HEARTBEATS entries; the timeout keeps the oldest."""
        tracker = HeartbeatTracker()
        for sequence in range(1, 1001):
            tracker.sent(sequence, float(sequence))
        self.assertEqual((tracker.unanswered, tracker.timeout_started_at), (MAX_REMEMBERED_HEARTBEATS, 1.0))
        # An answer to a forgotten beat still clears it and everything before it.
        self.assertIsNone(tracker.acknowledged(900, 1000.5))
        self.assertEqual((tracker.timeout_started_at, tracker.acks), (937.0, 1))
        self.assertEqual(tracker.acknowledged(1000, 1000.75), 0.75)
        self.assertIsNone(tracker.timeout_started_at)

    def test_heardFromClearsBeatsSentBefore(self) -> None:
        """Other traffic at t clears the beats sent up to t without measuring a round trip."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 10.0)
        tracker.sent(2, 11.0)
        tracker.heard_from(10.5)
        self.assertEqual((tracker.timeout_started_at, tracker.acks, tracker.latency), (11.0, 0, 0.0))
        tracker.heard_from(11.0)
        self.assertIsNone(tracker.timeout_started_at)

    def test_stop(self) -> None:
        """stop() forgets the timeout and the beats, so a late ack is ignored."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 10.0)
        tracker.stop()
        self.assertIsNone(tracker.timeout_started_at)
        self.assertIsNone(tracker.acknowledged(1, 11.0))
        self.assertEqual(tracker.acks, 0)


class HeartbeatVerdictTests(SynchronousTestCase):
    """HeartbeatTracker.check: the one liveness verdict both sides use."""

    policy = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)

    def test_waitingUntilTheDeadline(self) -> None:
        """Unanswered beats are WAITING until oldest + timeout, then TIMED_OUT."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        tracker.sent(2, 2.0)
        self.assertEqual(tracker.deadline(3.0), 4.0)
        self.assertIs(tracker.check(3.99, self.policy, 0.0, None), HeartbeatVerdict.WAITING)
        self.assertIs(tracker.check(4.0, self.policy, 0.0, None), HeartbeatVerdict.TIMED_OUT)

    def test_nothingOutstandingIsAlive(self) -> None:
        """No unanswered beat, or no timeout at all, is ALIVE."""
        tracker = HeartbeatTracker()
        self.assertIs(tracker.check(100.0, self.policy, 0.0, None), HeartbeatVerdict.ALIVE)
        tracker.sent(1, 1.0)
        never = HeartbeatPolicy(enabled=True, interval=1.0, timeout=None)
        self.assertIs(tracker.check(100.0, never, 0.0, None), HeartbeatVerdict.ALIVE)
        self.assertIsNone(tracker.deadline(None))

    def test_lateAnswersBelowTheTimeoutNeverTimeOut(self) -> None:
        """Answers delayed 1.2x and 2.5x the interval (below the 3 s timeout) keep the peer alive over 100 beats."""
        for delay in (1.2, 2.5):
            tracker = HeartbeatTracker()
            answers: list[tuple[float, int]] = []
            for tick in range(1, 101):
                now = float(tick)
                for at, sequence in [a for a in answers if a[0] <= now]:
                    tracker.acknowledged(sequence, at)
                answers = [a for a in answers if a[0] > now]
                self.assertIsNot(tracker.check(now, self.policy, 0.0, None), HeartbeatVerdict.TIMED_OUT, (delay, tick))
                tracker.sent(tick, now)
                answers.append((now + delay, tick))
            self.assertAlmostEqual(tracker.latency, delay)

    def test_stallGivesOneGrace(self) -> None:
        """A deadline passed after our own stall gets one more timeout; a second one times out."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        self.assertIs(tracker.check(6.0, self.policy, 0.0, 5.9), HeartbeatVerdict.GRACE)
        self.assertEqual(tracker.deadline(3.0), 9.0)
        self.assertIs(tracker.check(8.0, self.policy, 0.0, 5.9), HeartbeatVerdict.WAITING)
        self.assertIs(tracker.check(9.0, self.policy, 0.0, 8.5), HeartbeatVerdict.TIMED_OUT)

    def test_stallBeforeTheWindowGivesNoGrace(self) -> None:
        """A stall that ended before the oldest unanswered beat was sent is no excuse."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        self.assertIs(tracker.check(4.0, self.policy, 0.0, 0.5), HeartbeatVerdict.TIMED_OUT)
        no_grace = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0, stall_grace=False)
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        self.assertIs(tracker.check(4.0, no_grace, 0.0, 3.5), HeartbeatVerdict.TIMED_OUT)

    def test_answerAfterGraceRestoresIt(self) -> None:
        """An answer after a grace makes the next stall deserve a grace again."""
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        tracker.check(6.0, self.policy, 0.0, 5.9)
        tracker.acknowledged(1, 6.5)
        self.assertFalse(tracker.grace_used)

    def test_anyTrafficCounts(self) -> None:
        """With any_traffic_counts, data received after the oldest beat clears it; without, it does not."""
        counting = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0, any_traffic_counts=True)
        tracker = HeartbeatTracker()
        tracker.sent(1, 1.0)
        tracker.sent(2, 2.0)
        self.assertIs(tracker.check(4.0, self.policy, 1.5, None), HeartbeatVerdict.TIMED_OUT)
        self.assertIs(tracker.check(4.0, counting, 1.5, None), HeartbeatVerdict.WAITING)
        self.assertEqual(tracker.timeout_started_at, 2.0)
        self.assertIs(tracker.check(5.0, counting, 2.5, None), HeartbeatVerdict.ALIVE)

class ClockSyncTests(SynchronousTestCase):
    """NTP-style offset estimate; the lowest round trip wins."""

    def test_offsetFromKnownTimes(self) -> None:
        """t0=100, t1=205, t3=102 give offset 104, error 1, round trip 2."""
        sync = ClockSync()
        sample = sync.add(100.0, 205.0, 102.0)
        self.assertEqual(sample, ClockOffset(104.0, 1.0, 2.0))
        self.assertEqual(sync.best, sample)

    def test_lowestRoundTripWins(self) -> None:
        """Of several samples the one with the lowest round trip is the best estimate."""
        sync = ClockSync()
        sync.add(0.0, 54.0, 4.0)  # rtt 4, offset 52
        fast = sync.add(10.0, 60.5, 11.0)  # rtt 1, offset 50
        sync.add(20.0, 73.0, 23.0)  # rtt 3, offset 51.5
        self.assertEqual(sync.best, fast)
        self.assertEqual(fast, ClockOffset(50.0, 0.5, 1.0))

    def test_windowForgetsOldBest(self) -> None:
        """A fast sample older than the window no longer counts."""
        sync = ClockSync(window=2)
        sync.add(0.0, 0.0, 0.1)
        sync.add(1.0, 1.0, 2.0)
        newest = sync.add(2.0, 2.0, 3.5)
        assert sync.best is not None
        self.assertEqual(sync.best.round_trip, 1.0)
        sync.add(3.0, 3.0, 5.0)
        self.assertEqual(sync.best, newest)

    def test_negativeRoundTripClamped(self) -> None:
        """A clock that went backwards gives a zero round trip, never a negative error."""
        sample = ClockSync().add(10.0, 20.0, 9.0)
        self.assertEqual((sample.round_trip, sample.error), (0.0, 0.0))


class StallDetectorTests(SynchronousTestCase):
    """Late timers reveal a stalled event loop."""

    def test_smallLagIsNotAStall(self) -> None:
        """A timer late by less than the threshold is not a stall."""
        detector = StallDetector(threshold=0.25)
        self.assertAlmostEqual(detector.observe(10.0, 10.1), 0.1)
        self.assertIsNone(detector.last_stall_at)
        self.assertFalse(detector.stalled_since(0.0))

    def test_stallOverlapsLaterWindowsOnly(self) -> None:
        """A stall counts for timeout windows that began before it ended, not after."""
        detector = StallDetector(threshold=0.25)
        self.assertEqual(detector.observe(20.0, 21.0), 1.0)
        self.assertEqual(detector.last_stall_at, 21.0)
        self.assertTrue(detector.stalled_since(15.0))
        self.assertFalse(detector.stalled_since(21.0))
        self.assertFalse(detector.stalled_since(30.0))

    def test_maxAndLastLag(self) -> None:
        """max_lag keeps the worst lag; last_lag the most recent."""
        detector = StallDetector()
        detector.observe(0.0, 2.0)
        detector.observe(5.0, 5.1)
        self.assertAlmostEqual(detector.last_lag, 0.1)
        self.assertEqual(detector.max_lag, 2.0)


class HeartbeatPolicyTests(SynchronousTestCase):
    """Policies refuse impossible values and warn about risky ones."""

    def test_rejectsNonPositive(self) -> None:
        """Zero, negative and NaN intervals or timeouts raise with a clear message."""
        for value in (0, 0.0, -1, -0.5, math.nan):
            error = self.assertRaises(HeartbeatConfigurationError, HeartbeatPolicy, interval=value)
            self.assertIn("interval must be > 0 seconds", str(error))
            error = self.assertRaises(HeartbeatConfigurationError, HeartbeatPolicy, timeout=value)
            self.assertIn("timeout must be > 0 seconds", str(error))

    def test_rejectsNonNumbers(self) -> None:
        """Strings, booleans and None intervals are rejected as not a number of seconds."""
        for value in ("5", True, None):
            error = self.assertRaises(HeartbeatConfigurationError, HeartbeatPolicy, interval=value)
            self.assertIn("number of seconds", str(error))

    def test_errorIsValueError(self) -> None:
        """Configuration errors are ValueErrors, for callers that catch those."""
        self.assertTrue(issubclass(HeartbeatConfigurationError, ValueError))

    def test_warnsTimeoutShorterThanInterval(self) -> None:
        """An enabled policy whose timeout is below its interval warns."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            HeartbeatPolicy(enabled=True, interval=10.0, timeout=5.0)
        self.assertEqual([w.category for w in caught], [HeartbeatConfigurationWarning])
        self.assertIn("shorter than the interval", str(caught[0].message))
        self.assertEqual(caught[0].filename, __file__)

    def test_noWarningWhenSensible(self) -> None:
        """Disabled policies, no timeout, or timeout >= interval do not warn."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            HeartbeatPolicy(enabled=False, interval=10.0, timeout=5.0)
            HeartbeatPolicy(enabled=True, interval=10.0, timeout=None)
            HeartbeatPolicy(enabled=True, interval=10.0, timeout=10.0)
        self.assertEqual(caught, [])

    def test_every(self) -> None:
        """every(n) is enabled with a timeout of 3 n; an explicit timeout (or None) wins."""
        self.assertEqual(HeartbeatPolicy.every(2.0), HeartbeatPolicy(enabled=True, interval=2.0, timeout=6.0))
        self.assertEqual(HeartbeatPolicy.every(2.0, 4.0).timeout, 4.0)
        self.assertIsNone(HeartbeatPolicy.every(2.0, None).timeout)
        self.assertRaises(HeartbeatConfigurationError, HeartbeatPolicy.every, 0)

    def test_overridden(self) -> None:
        """overridden() replaces given settings and keeps the rest; None timeout is a value."""
        base = HeartbeatPolicy.every(5.0)
        self.assertEqual(base.overridden(interval=1.0), HeartbeatPolicy(enabled=True, interval=1.0, timeout=15.0))
        self.assertIsNone(base.overridden(timeout=None).timeout)
        self.assertEqual(base.overridden(), base)
        self.assertFalse(base.overridden(enabled=False).enabled)
        self.assertRaises(HeartbeatConfigurationError, base.overridden, timeout=0)


class CoreEncodesAnswersTests(SynchronousTestCase):
    """The server core encodes its answers and enforces both sides' size limits in one place."""

    def test_result_error_and_limits(self) -> None:
        """send_result queues RESULT; an unencodable or oversized result becomes an internal ERROR; all are answered."""
        from twisted_hub._core.connection import receiver_call_payload

        server, client = connected_pair()
        server.peer_max_message_size = 64
        self.assertIsNone(server.send_result(1, "ok", own_limit=1024))
        self.assertIn("cannot be encoded", server.send_result(2, object(), own_limit=1024) or "")
        self.assertIn("too big", server.send_result(3, "x" * 100, own_limit=1024) or "")
        server.send_error(4, "boom", "y" * 500, None)  # over the client's 64 bytes: shortened
        sent = [m for frame in server.frames_to_send() for m in decode_frame(frame)]
        self.assertEqual([(m.kind, m.call_id) for m in sent], [(4, 1), (5, 2), (5, 3), (5, 4)])
        self.assertEqual(sent[0].value, "ok")
        self.assertEqual(sent[1].code, "internal")
        self.assertFalse(server.queue_payload(b"z" * 65))
        self.assertEqual(decode_frame(receiver_call_payload("said", [1], {"a": 2}, 100))[0].kwargs, {"a": 2})
        with self.assertRaises(ValueError):
            receiver_call_payload("said", ["x" * 200], None, 100)


class HeartbeatAckFieldTests(SynchronousTestCase):
    """
    The trailing ack of kinds 10-12 (capability resume, docs/protocol.md
    section 10) decodes, but no connection negotiates resume yet, so both
    sides refuse it as they did before the codec knew it.
    """

    def test_serverRefusesAcks(self) -> None:
        from twisted_hub._core.connection import ServerConnection
        from twisted_hub._core.wire import ProtocolError, encode

        for message in (ServerHeartbeatAck(1, 5), ClientHeartbeat(1, 0, 5)):
            server: ServerConnection[object] = ServerConnection("c1")
            server.receive_frame(encode(Hello(["heartbeat"])), 0.0)
            with self.assertRaises(ProtocolError) as caught:
                server.receive_frame(encode(message), 0.0)
            self.assertIn("resume was not negotiated", str(caught.exception))

    def test_clientRefusesAcks(self) -> None:
        from twisted_hub._core.connection import ClientConnection
        from twisted_hub._core.wire import ClientHeartbeatAck, ProtocolError, Welcome, encode

        client: ClientConnection[object] = ClientConnection()
        client.receive_frame(encode(Welcome(["heartbeat"], "c1")), 0.0)
        with self.assertRaises(ProtocolError) as caught:
            client.receive_frame(encode(ClientHeartbeatAck(1, 0, 0, 5)), 0.0)
        self.assertIn("resume was not negotiated", str(caught.exception))
