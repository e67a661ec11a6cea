"""Streams with credit-based flow control, server and Twisted client, on a Clock (docs/streams.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import ConnectionClosedError, Hub, HubArgumentError, HubError, hub, method
from twisted_hub.testing import HubTestServer


class Tally:
    """What the stream hub's producers did, for the tests to read."""

    def __init__(self) -> None:
        self.generated = 0
        self.finally_ran = 0
        self.received: list[Any] = []
        self.errors: list[Exception] = []
        self.gate: Deferred[None] | None = None


@hub("streams")
class StreamHub(Hub):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    @method
    async def count(self, n: int) -> AsyncIterator[int]:
        """n items, counting what was generated and whether cleanup ran."""
        try:
            for i in range(n):
                self.tally.generated += 1
                yield i
        finally:
            self.tally.finally_ran += 1

    @method
    async def forever(self) -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                self.tally.generated += 1
                yield i
                i += 1
        finally:
            self.tally.finally_ran += 1

    @method
    async def slow(self) -> AsyncIterator[int]:
        """Waits on the tally's gate before its second item."""
        try:
            yield 0
            self.tally.gate = Deferred()
            await self.tally.gate
            yield 1
        finally:
            self.tally.finally_ran += 1

    @method
    async def waits(self, fail: bool) -> AsyncIterator[int]:
        """Awaits the tally's gate before its second item (then fails when asked), so the producer is resumed later."""
        yield 0
        self.tally.gate = Deferred()
        value = await self.tally.gate
        if fail:
            raise HubError("after-wait", "failed after waiting")
        yield value

    @method
    async def broken(self) -> AsyncIterator[int]:
        yield 1
        raise HubError("app-code", "it broke", {"at": 1})

    @method
    async def crashing(self) -> AsyncIterator[int]:
        yield 1
        raise ZeroDivisionError("secret")

    @method
    def plain(self) -> int:
        return 7

    @method
    async def total(self, numbers: AsyncIterator[int]) -> int:
        """Sums a client's stream argument (noting how its iteration failed, if it did)."""
        result = 0
        try:
            async for n in numbers:
                self.tally.received.append(n)
                result += n
        except Exception as e:
            self.tally.errors.append(e)
            raise
        return result

    @method
    async def first_only(self, numbers: AsyncIterator[int]) -> int:
        async for n in numbers:
            return n
        return -1


def collect(stream: Any) -> Deferred[list[Any]]:
    async def run() -> list[Any]:
        return [item async for item in stream]

    return ensureDeferred(run())


class ServerToClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tally = Tally()
        self.server = HubTestServer([partial(StreamHub, self.tally)])
        self.conn = self.server.connect("streams")
        self.client = self.successResultOf(self.conn.ready)

    def test_items_arrive_in_order(self) -> None:
        """A hub method that yields is consumed with async for: every item, in order, then the end."""
        result = collect(self.client.stream("count", 50))
        self.server.flush()
        self.assertEqual(self.successResultOf(result), list(range(50)))
        self.assertEqual(self.tally.finally_ran, 1)

    def test_wire(self) -> None:
        """The client asks with STREAM_INVOKE and the default credit; items are STREAM_ITEMs; STREAM_END ends."""
        result = collect(self.client.stream("count", 2))
        self.server.flush()
        self.successResultOf(result)
        sent = [msgpack.unpackb(frame) for frame in self.conn.server_received[1:]]
        self.assertEqual(sent[0], [15, 1, "count", [2], None, 16])
        items = b"".join(self.conn.client_received[1:])
        unpacker = msgpack.Unpacker()
        unpacker.feed(items)
        self.assertEqual(list(unpacker), [[16, 1, 0], [16, 1, 1], [17, 1]])

    def test_stalled_consumer_bounds_producer(self) -> None:
        """A consumer that takes nothing: the producer makes exactly the window of items and waits."""
        stream = self.client.open_stream("forever", [], None, window=8)
        for _ in range(5):
            self.server.flush()
            self.server.advance(1)
        self.assertEqual(self.tally.generated, 8)
        self.assertEqual(stream.buffered, 8)
        self.assertEqual(self.tally.finally_ran, 0)

    def test_taking_grants_credit(self) -> None:
        """Taking half the window grants that much credit: the producer makes that many more, no more."""
        stream = self.client.open_stream("forever", [], None, window=8)
        self.server.flush()

        async def take(n: int) -> list[int]:
            return [await stream.__anext__() for _ in range(n)]

        self.assertEqual(self.successResultOf(ensureDeferred(take(3))), [0, 1, 2])
        self.server.flush()
        self.assertEqual(self.tally.generated, 8)  # 3 taken: below half the window, no credit yet
        self.assertEqual(self.successResultOf(ensureDeferred(take(1))), [3])
        self.server.flush()
        self.assertEqual(self.tally.generated, 12)
        self.assertEqual(stream.buffered, 8)

    def test_zero_window_refused_before_anything_is_sent(self) -> None:
        """open_stream(window=0) raises HubArgumentError at once and leaves no call pending or queued."""
        received = len(self.conn.server_received)
        error = self.assertRaises(HubArgumentError, self.client.open_stream, "forever", [], None, window=0)
        self.assertIn("at least 1 item", str(error))
        self.assertEqual(self.client.session.core._pending, {})
        self.server.flush()
        self.assertEqual(len(self.conn.server_received), received)
        self.assertEqual(self.tally.generated, 0)
        # The connection goes on: a stream with a window works.
        result = collect(self.client.stream("count", 3))
        self.server.flush()
        self.assertEqual(self.successResultOf(result), [0, 1, 2])

    def test_client_cancel_stops_producer(self) -> None:
        """cancel() sends STREAM_CANCEL: the producer stops within one round trip and its finally runs."""
        stream = self.client.open_stream("forever", [], None, window=4)
        self.server.flush()
        stream.cancel()
        self.server.flush()
        self.assertEqual(self.tally.finally_ran, 1)
        self.assertEqual(self.tally.generated, 4)
        self.assertEqual(self.successResultOf(collect(stream)), [])
        self.assertEqual(self.server.factory.connection_count, 1)
        self.assertEqual(msgpack.unpackb(self.conn.server_received[-1]), [19, 1])
        # The connection goes on: a call afterwards works.
        d = self.client.call("plain")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 7)

    def test_cancel_while_producer_waits(self) -> None:
        """A producer awaiting something when the cancel arrives is stopped there (its finally runs)."""
        stream = self.client.stream("slow")
        self.server.flush()
        self.assertIsNotNone(self.tally.gate)
        stream.cancel()
        self.server.flush()
        self.assertEqual(self.tally.finally_ran, 1)

    def test_producer_resumed_after_awaiting(self) -> None:
        """A producer that awaits a Deferred between items goes on when it fires, with the value it got."""
        done = collect(self.client.stream("waits", False))
        self.server.flush()
        self.assertNoResult(done)
        assert self.tally.gate is not None
        self.tally.gate.callback(41)
        self.server.flush()
        self.assertEqual(self.successResultOf(done), [0, 41])

    def test_producer_fails_after_awaiting(self) -> None:
        """A producer that fails after awaiting, or whose awaited Deferred fails, ends the stream with that error."""
        done = collect(self.client.stream("waits", True))
        self.server.flush()
        assert self.tally.gate is not None
        self.tally.gate.callback(None)
        self.server.flush()
        self.assertEqual(self.failureResultOf(done, HubError).value.code, "after-wait")
        other = collect(self.client.stream("waits", False))
        self.server.flush()
        self.tally.gate.errback(HubError("from-deferred", "the awaited Deferred failed"))
        self.server.flush()
        self.assertEqual(self.failureResultOf(other, HubError).value.code, "from-deferred")

    def test_producer_error_is_typed(self) -> None:
        """A HubError raised by the producer ends the stream with that HubError, after the items before it."""
        stream = self.client.stream("broken")
        items: list[int] = []
        done = stream.each(items.append)
        self.server.flush()
        error = self.failureResultOf(done, HubError).value
        self.assertEqual((error.code, error.message, error.detail), ("app-code", "it broke", {"at": 1}))
        self.assertEqual(items, [1])

    def test_producer_crash_is_internal(self) -> None:
        """Any other exception ends the stream with [internal], its text kept from the client and logged."""
        done = collect(self.client.stream("crashing"))
        self.server.flush()
        error = self.failureResultOf(done, HubError).value
        self.assertEqual(error.code, "internal")
        self.assertNotIn("secret", error.message)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_connection_end_fails_stream(self) -> None:
        """The connection ends mid-stream: the iteration fails with ConnectionClosedError; the producer's finally runs."""
        stream = self.client.open_stream("forever", [], None, window=4)
        self.server.flush()
        done = collect(stream)
        self.conn.drop()
        self.server.flush()
        self.failureResultOf(done, ConnectionClosedError)
        self.assertEqual(self.tally.finally_ran, 1)

    def test_mismatch(self) -> None:
        """A stream asked of a plain method, or a call of a stream method, is refused with stream-mismatch."""
        done = collect(self.client.stream("plain"))
        call = self.client.call("count", 3)
        self.server.flush()
        self.assertEqual(self.failureResultOf(done, HubError).value.code, "stream-mismatch")
        self.assertEqual(self.failureResultOf(call, HubError).value.code, "stream-mismatch")
        self.assertEqual(self.tally.generated, 0)
        self.assertEqual(self.tally.finally_ran, 0)  # never started: closing it runs nothing

    def test_unknown_method_fails_stream(self) -> None:
        """An ERROR answer to the stream's call ends the stream with that error."""
        done = collect(self.client.stream("nosuch"))
        self.server.flush()
        self.assertEqual(self.failureResultOf(done, HubError).value.code, "unknown-method")


class ClientToServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tally = Tally()
        self.server = HubTestServer([partial(StreamHub, self.tally)])
        self.conn = self.server.connect("streams")
        self.client = self.successResultOf(self.conn.ready)
        self.made = 0
        self.closed = 0

    async def numbers(self, n: int | None) -> AsyncIterator[int]:
        try:
            i = 0
            while n is None or i < n:
                self.made += 1
                yield i
                i += 1
        finally:
            self.closed += 1

    def test_upload(self) -> None:
        """An async iterable argument is streamed: the hub method iterates it and returns."""
        d = self.client.call("total", self.numbers(100))
        self.server.flush()
        self.assertEqual(self.successResultOf(d), sum(range(100)))
        self.assertEqual(self.tally.received, list(range(100)))
        self.assertEqual(self.closed, 1)

    def test_server_stops_early(self) -> None:
        """The method returns before the end: the client's producer is cancelled (its finally runs)."""
        d = self.client.call("first_only", self.numbers(None))
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.closed, 1)
        self.assertLessEqual(self.made, 16 + 1)

    def test_connection_end_stops_both_sides(self) -> None:
        """The connection ends mid-upload: the client's source is closed; the hub method's iteration fails."""
        server = HubTestServer([partial(StreamHub, self.tally)])
        conn = server.connect("streams")
        client = self.successResultOf(conn.ready)
        gate: Deferred[None] = Deferred()

        async def source() -> AsyncIterator[int]:
            try:
                yield 1
                yield 2
                await gate  # (never fires: the upload stalls here)
                yield 3
            finally:
                self.closed += 1

        d = client.call("total", source())
        server.flush()
        self.assertEqual(self.tally.received, [1, 2])
        conn.drop()
        server.flush()
        self.failureResultOf(d, ConnectionClosedError)
        self.assertEqual(self.closed, 1)
        self.assertEqual([type(e) for e in self.tally.errors], [ConnectionClosedError])

