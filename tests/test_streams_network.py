"""
Streams over real sockets (127.0.0.1, bounded in time): a large stream
through a rate-limited link does not delay heartbeats past a tight timeout,
because heartbeats go ahead of queued output and credit bounds what queues;
and a consumer that takes nothing holds a `twistd hub` producer's memory
to its window and one item, measured with tracemalloc in the server process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from twisted_hub import HeartbeatPolicy, Hub, HubClientOptions, HubResource, HubServerFactory, connect, hub, method

from ._rate_proxy import RateLimitingProxy
from ._twistd import started_port, twistd_hub

#: bytes/s toward the client: the whole stream takes 3.3 s to cross, one window (16 items of 16 KiB) 0.13 s
RATE = 2_000_000
ITEM = 16 * 1024
ITEMS = 400  # 6.5 MB
INTERVAL = 0.1
#: a tenth of the time the stream takes: a heartbeat queued behind the stream (not just behind
#: one window of it, plus the transport's, the kernel's and the proxy's buffers) would miss it
TIMEOUT = 0.4


@hub("bulk")
class BulkHub(Hub):
    @method
    async def blobs(self, count: int, size: int) -> AsyncIterator[bytes]:
        for i in range(count):
            yield bytes([i % 256]) * size

    @method
    async def total(self, numbers: AsyncIterator[int]) -> int:
        return sum([n async for n in numbers])


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_heartbeats_are_not_queued_behind_a_large_stream() -> None:
    """6.5 MB streamed at 2 MB/s (3.3 s), heartbeats every 0.1 s with a 0.4 s timeout both ways: every answer in time."""
    policy = HeartbeatPolicy(enabled=True, interval=INTERVAL, timeout=TIMEOUT)
    factory = HubServerFactory([BulkHub], url="ws://127.0.0.1/hub", clock=reactor(), heartbeat=policy)
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    proxy = RateLimitingProxy(reactor(), port.getHost().port, to_client=RATE, to_server=None, socket_buffer=32 * 1024)
    proxy_port = proxy.listen()
    round_trips: list[float] = []
    options = HubClientOptions(
        heartbeat=policy, on_heartbeat_response=lambda event: round_trips.append(event.round_trip),
    )
    client = await connect(f"ws://127.0.0.1:{proxy_port}/hub", "bulk", options=options, clock=reactor(), timeout=10)
    (session,) = factory.runtimes["bulk"].connections.values()
    server_latencies: list[float] = []
    session.ack_callback = server_latencies.append
    try:
        received = 0
        async for blob in client.stream("blobs", ITEMS, ITEM):
            received += len(blob)
        assert received == ITEMS * ITEM
        assert client.is_connected and session.is_open
        # Every heartbeat, each way, was answered within the timeout, though the link toward the
        # client was full all along; and no deadline passed that only "progress counts as life" excused.
        for samples in (round_trips, server_latencies):
            assert len(samples) >= 10, samples
            assert max(samples) < TIMEOUT, samples
        assert client.core.heartbeat.timeouts_avoided == 0
        assert session.core.heartbeat.timeouts_avoided == 0
    finally:
        await client.disconnect()
        await proxy.port.stopListening()
        await port.stopListening()


#: items of a quarter MiB, a window of 8: 2 MiB in flight at most, the producer would make
#: about 1 GB a second without flow control
BLOB = 256 * 1024
WINDOW = 8


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_stalled_consumer_holds_the_producers_memory_to_its_window() -> None:
    """
    A consumer that takes nothing of an endless stream of 256 KiB items
    (window 8): the `twistd hub` process generated exactly the window, and
    what it allocated meanwhile and still holds (tracemalloc, in the server
    process) is within the window and one item; its peak, each item beside
    its encoded frame, within twice that.
    """
    child = twistd_hub(reactor(), "--listen", "tcp:0:interface=127.0.0.1", "--hub", "tests.helpers.hubs:BlobStreamHub")
    client = None
    try:
        port = await started_port(child, reactor())
        client = await connect(f"ws://127.0.0.1:{port}/hub/blobstream", "blobstream", clock=reactor(), timeout=10)
        await client.call("start_tracing")
        before, _, generated = await client.call("traced")
        assert generated == 0
        stream = client.open_stream("blobs", [BLOB], None, window=WINDOW)
        for _ in range(200):  # until the window has arrived (at most 10 s)
            if stream.buffered == WINDOW:
                break
            await deferLater(reactor(), 0.05, lambda: None)
        assert stream.buffered == WINDOW
        # The producer is now waiting for credit: give one that ignored it time to run away.
        await deferLater(reactor(), 0.5, lambda: None)
        held, peak, generated = await client.call("traced")
        print(f"\nstalled consumer, window {WINDOW} x {BLOB} B: the producer generated {generated} items; "
              f"the server holds {held - before:,} B more than before the stream (peak {peak - before:,} B)")
        assert generated == WINDOW
        assert stream.buffered == WINDOW  # nothing more arrived
        assert held - before <= (WINDOW + 1) * BLOB, (held - before, (WINDOW + 1) * BLOB)
        # At its peak, while a window's items were written, each item lived beside its encoded
        # frame (items ready at once leave in one frame): twice the bound, never more.
        assert peak - before <= 2 * (WINDOW + 1) * BLOB, (peak - before, 2 * (WINDOW + 1) * BLOB)
        # Taking half the window lets the producer make exactly that many more.
        for _ in range(WINDOW // 2):
            await stream.__anext__()
        for _ in range(200):
            if stream.buffered == WINDOW:
                break
            await deferLater(reactor(), 0.05, lambda: None)
        held, peak, generated = await client.call("traced")
        assert generated == WINDOW + WINDOW // 2
        assert held - before <= (WINDOW + 1) * BLOB, (held - before, (WINDOW + 1) * BLOB)
        stream.cancel()
    finally:
        if client is not None:
            await client.disconnect()
        await child.stop(reactor())


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_streams_through_a_hub_resource_on_a_site() -> None:
    """A HubResource mounted on a plain Site serves streams both ways, as listenTCP and twistd hub do."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"hub", HubResource([BulkHub]))
    port = reactor().listenTCP(0, Site(root), interface="127.0.0.1")
    client = await connect(f"ws://127.0.0.1:{port.getHost().port}/hub/bulk", "bulk", clock=reactor(), timeout=10)
    try:
        blobs = [blob async for blob in client.open_stream("blobs", [40, 1000], None, window=4)]
        assert blobs == [bytes([i]) * 1000 for i in range(40)]

        async def numbers() -> AsyncIterator[int]:
            for n in range(100):
                yield n

        assert await client.call("total", numbers()) == 4950
    finally:
        await client.disconnect()
        await port.stopListening()
