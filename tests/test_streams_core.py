"""The sans-IO stream core (twisted_hub/_core/streams.py): credit, ordering, cancel, end, what each message means."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._core.base_error import HubArgumentError
from twisted_hub._core.errors import HubError
from twisted_hub._core.streams import DEFAULT_STREAM_WINDOW, InboundStream, StreamTable, is_stream_source
from twisted_hub._core.wire import (
    Message,
    ProtocolError,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamItem,
    decode_frame,
    encode,
)


class Peer:
    """A StreamTable whose outgoing messages are collected (decoded, as the peer would see them)."""

    def __init__(self, peer_limit: int | None = None) -> None:
        self.sent: list[Message] = []
        self.peer_limit = peer_limit
        self.table = StreamTable(self.send, self.send_payload)

    def send(self, message: Message) -> None:
        self.sent.extend(decode_frame(encode(message)))

    def send_payload(self, payload: bytes) -> bool:
        if self.peer_limit is not None and len(payload) > self.peer_limit:
            return False
        self.sent.extend(decode_frame(payload))
        return True

    def take_sent(self) -> list[Message]:
        sent, self.sent = self.sent, []
        return sent


def deliver(source: Peer, target: Peer) -> None:
    """Everything C{source} sent, received by C{target}'s table."""
    for message in source.take_sent():
        assert isinstance(message, (StreamItem, StreamEnd, StreamCredit, StreamCancel))
        target.table.receive(message)


def take_all(table: StreamTable, stream: InboundStream) -> list[Any]:
    items = []
    while stream.buffer:
        items.append(table.take(stream))
    return items


class CreditTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.producer = Peer()
        self.consumer = Peer()
        self.outbound = self.producer.table.open_outbound(7)
        self.inbound = self.consumer.table.open_inbound(7, 4, grant=True)
        self.first_grant = self.consumer.sent[:]
        deliver(self.consumer, self.producer)

    def produce(self, count: int) -> int:
        """Send items while the credit allows, at most C{count}; return how many went."""
        sent = 0
        while sent < count and self.outbound.may_send:
            self.producer.table.send_item(self.outbound, sent, 1 << 20)
            sent += 1
        return sent

    def test_first_credit_is_the_window(self) -> None:
        """A declared stream's consumer grants its window first; the producer then has exactly that credit."""
        self.assertEqual(self.first_grant, [StreamCredit(7, 4)])
        self.assertEqual(self.outbound.credit, 4)
        silent = Peer()
        silent.table.open_inbound(8, 4, grant=False)  # (its credit went with the request: STREAM_INVOKE)
        self.assertEqual(silent.sent, [])

    def test_producer_stops_at_the_window(self) -> None:
        """With credit 4 and a consumer taking nothing, 4 items go, then none."""
        self.assertEqual(self.produce(100), 4)
        deliver(self.producer, self.consumer)
        self.assertEqual(list(self.inbound.buffer), [0, 1, 2, 3])
        self.assertRaises(ProtocolError, self.producer.table.send_item, self.outbound, 4, 1 << 20)

    def test_credit_comes_per_half_window(self) -> None:
        """Taking one item grants nothing; taking the second (half of 4) grants 2."""
        self.produce(4)
        deliver(self.producer, self.consumer)
        self.assertEqual(self.consumer.table.take(self.inbound), 0)
        self.assertEqual(self.consumer.take_sent(), [])
        self.assertEqual(self.consumer.table.take(self.inbound), 1)
        self.assertEqual(self.consumer.take_sent(), [StreamCredit(7, 2)])

    def test_item_beyond_credit_is_a_protocol_error(self) -> None:
        """An item the consumer did not grant credit for is the producer's protocol error."""
        for i in range(4):
            self.consumer.table.receive(StreamItem(7, i))
        self.assertRaises(ProtocolError, self.consumer.table.receive, StreamItem(7, 4))

    def test_ordered_and_bounded_end_to_end(self) -> None:
        """1,000 items through a window of 4: in order, never more than 4 buffered."""
        got: list[Any] = []
        next_item = 0
        for _ in range(10_000):
            while self.outbound.may_send and next_item < 1000:
                self.producer.table.send_item(self.outbound, next_item, 1 << 20)
                next_item += 1
            deliver(self.producer, self.consumer)
            self.assertLessEqual(len(self.inbound.buffer), 4)
            got.extend(take_all(self.consumer.table, self.inbound))
            deliver(self.consumer, self.producer)
            if next_item == 1000 and not self.inbound.buffer:
                break
        self.assertEqual(got, list(range(1000)))

    def test_end_and_error(self) -> None:
        """STREAM_END ends after the buffered items; with a code it raises that HubError."""
        self.produce(1)
        self.producer.table.end(self.outbound, HubError("app", "broke", {"x": 1}))
        self.assertEqual(self.producer.sent[-1], StreamEnd(7, "app", "broke", {"x": 1}))
        deliver(self.producer, self.consumer)
        self.assertEqual(self.consumer.table.take(self.inbound), 0)
        error = self.assertRaises(HubError, self.consumer.table.take, self.inbound)
        self.assertEqual((error.code, error.message, error.detail), ("app", "broke", {"x": 1}))
        self.assertNotIn(7, self.consumer.table.inbound)

    def test_cancel(self) -> None:
        """The consumer cancels: CANCEL once, the stream ends here; the producer is told and sends no end."""
        self.assertTrue(self.consumer.table.cancel_inbound(self.inbound))
        self.assertFalse(self.consumer.table.cancel_inbound(self.inbound))
        self.assertEqual(self.consumer.sent, [StreamCancel(7)])
        self.assertRaises(StopAsyncIteration, self.inbound.take)
        woken: list[bool] = []
        self.outbound.wake = lambda: woken.append(self.outbound.cancelled)
        deliver(self.consumer, self.producer)
        self.assertEqual(woken, [True])
        self.producer.table.end(self.outbound)
        self.assertEqual(self.producer.sent, [])

    def test_late_messages_are_ignored(self) -> None:
        """Items, ends, credit and cancels for unknown streams are counted, not errors."""
        table = Peer().table
        for message in (StreamItem(9, 1), StreamEnd(9), StreamCredit(9, 1), StreamCancel(9)):
            table.receive(message)
        self.assertEqual(table.late, 4)

    def test_close_fails_inbound_and_cancels_outbound(self) -> None:
        """The connection ends: consumed streams fail with the error after their items; produced ones are cancelled."""
        self.produce(1)
        deliver(self.producer, self.consumer)
        error = HubError("disconnected", "gone")
        self.consumer.table.close(error)
        self.producer.table.close(error)
        self.assertEqual(self.consumer.table.take(self.inbound), 0)
        self.assertIs(self.assertRaises(HubError, self.inbound.take), error)
        self.assertTrue(self.outbound.cancelled)

    def test_unsendable_items(self) -> None:
        """An item that cannot be encoded, or is over the limit, raises internal and uses no credit."""
        error = self.assertRaises(HubError, self.producer.table.send_item, self.outbound, {1, 2}, 1 << 20)
        self.assertEqual(error.code, "internal")
        error = self.assertRaises(HubError, self.producer.table.send_item, self.outbound, b"x" * 100, 50)
        self.assertIn("too big", error.message)
        self.assertEqual(self.outbound.credit, 4)


class MiscTests(SynchronousTestCase):
    def test_window_must_be_positive(self) -> None:
        """A window of 0 would stall forever: refused with a HubArgumentError (a TwistedHubError, still a ValueError)."""
        error = self.assertRaises(HubArgumentError, InboundStream, 1, 0)
        self.assertIsInstance(error, ValueError)

    def test_duplicate_ids_refused(self) -> None:
        """A stream id open twice in one direction is a protocol error."""
        table = Peer().table
        table.open_inbound(1, DEFAULT_STREAM_WINDOW, grant=False)
        self.assertRaises(ProtocolError, table.open_inbound, 1, 4, grant=False)
        table.open_outbound(1)
        self.assertRaises(ProtocolError, table.open_outbound, 1)

    def test_stream_sources(self) -> None:
        """Async iterables are stream sources; str, bytes, lists and dicts are not."""

        async def gen() -> Any:
            yield 1

        agen = gen()
        self.assertTrue(is_stream_source(agen))
        for value in ("abc", b"abc", [1], {"a": 1}, None, 3):
            self.assertFalse(is_stream_source(value))
        agen.aclose().close()
