"""
Streams on asyncio, for L{twisted_hub.aio}: L{AsyncHubStream} (a stream we
consume, as an async iterator) and L{run_pump} (feeds a stream we produce
from an async iterable as credit allows).  The decisions are
L{twisted_hub._core.streams}'; this module only waits.  No Twisted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from .._core.errors import HubError
from .._core.log import CoreLog
from .._core.streams import InboundStream, OutboundStream, StreamTable
from .._core.wire import ErrorCode

__all__ = ["AsyncHubStream", "run_pump"]


class AsyncHubStream:
    """
    The items of a stream as they arrive: C{async for item in stream}.

    Taking items grants the producer more credit; leaving the loop early
    does not stop the producer by itself: call L{cancel} (or use
    C{async with client.stream(...) as stream:}, which cancels on exit).
    The iteration raises the L{HubError} the stream failed with, or
    L{ConnectionClosedError<twisted_hub.ConnectionClosedError>} when the
    connection ends first.
    """

    def __init__(
        self, table: StreamTable, stream: InboundStream, flush: Callable[[], None],
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self._table = table
        self._stream = stream
        self._flush = flush
        self._on_cancel = on_cancel
        self._waiter: asyncio.Future[None] | None = None
        stream.wake = self._wake

    @property
    def buffered(self) -> int:
        """Items received and not taken yet (at most the window)."""
        return len(self._stream.buffer)

    def __aiter__(self) -> AsyncHubStream:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        while not stream.ready:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter
        outstanding = stream.outstanding
        item = self._table.take(stream)
        if stream.outstanding != outstanding:
            self._flush()  # credit was granted
        return item

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel(self) -> None:
        """Stop the stream: the producer is told to stop (its C{finally} runs); the iteration ends."""
        if self._on_cancel is not None:
            self._on_cancel()
        elif self._table.cancel_inbound(self._stream):
            self._flush()

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> AsyncHubStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()


async def run_pump(
    table: StreamTable, stream: OutboundStream, source: AsyncIterable[Any], flush: Callable[[], None],
    max_size: int, log: CoreLog,
) -> None:
    """
    Send the items of C{source} on C{stream}, taking the next one only when
    there is credit to send it; end the stream when the source ends or
    fails; stop (closing the source) when the consumer cancels or the
    connection ends.
    """
    iterator: AsyncIterator[Any] = source.__aiter__()
    changed = asyncio.Event()
    stream.wake = changed.set
    pulling: asyncio.Task[Any] | None = None
    try:
        while True:
            while not stream.may_send:
                if stream.cancelled or stream.ended:
                    return
                changed.clear()
                await changed.wait()
            pulling = asyncio.ensure_future(iterator.__anext__())
            while not pulling.done():
                changed.clear()
                waker = asyncio.ensure_future(changed.wait())
                await asyncio.wait({pulling, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if stream.cancelled:
                    return  # (the source is stopped below)
            try:
                item = pulling.result()
            except StopAsyncIteration:
                table.end(stream)
                flush()
                return
            except HubError as e:
                table.end(stream, e)
                flush()
                return
            except Exception:
                log.failure("a stream argument raised")
                table.end(stream, HubError(ErrorCode.INTERNAL, "internal error"))
                flush()
                return
            finally:
                pulling = None
            try:
                table.send_item(stream, item, max_size)
            except HubError as e:
                table.end(stream, e)
                flush()
                return
            flush()
    finally:
        if pulling is not None and not pulling.done():
            pulling.cancel()
            try:
                await pulling
            except asyncio.CancelledError:
                pass  # stopped where it waited, as asked
            except Exception:
                log.failure("a stream argument raised as it was stopped")
        if stream.cancelled:
            table.end(stream)
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
