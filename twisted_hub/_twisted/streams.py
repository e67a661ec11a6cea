"""
Streams on Twisted: L{HubStream}, an async iterator over a stream we
consume, and L{StreamPump}, which feeds a stream we produce from an async
iterator as credit allows.  Used by the server (its hub methods' streams)
and by the Twisted client; the decisions are L{twisted_hub._core.streams}'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python.failure import Failure

from .._core.errors import HubError
from .._core.streams import InboundStream, OutboundStream, StreamTable, is_stream_source
from .._core.wire import ErrorCode

__all__ = ["HubStream", "StreamPump", "close_source", "is_stream_source"]


class HubStream:
    """
    The items of a stream as they arrive: C{async for item in stream}
    (in a coroutine run by Twisted, e.g. with C{ensureDeferred} or
    C{pytest_twisted.ensureDeferred}), or L{each} with Deferreds.

    Taking items is what grants the producer more credit, so a consumer
    that stops taking them stops the producer after its window.  The
    iteration ends when the producer ends the stream, raises the
    L{HubError} it failed with, or
    L{ConnectionClosedError<twisted_hub.ConnectionClosedError>} when the
    connection ends first.  L{cancel} stops the producer.
    """

    def __init__(
        self, table: StreamTable, stream: InboundStream, flush: Callable[[], None],
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self._table = table
        self._stream = stream
        self._flush = flush
        self._on_cancel = on_cancel
        self._waiter: Deferred[None] | None = None
        stream.wake = self._wake

    @property
    def stream_id(self) -> int:
        return self._stream.stream_id

    @property
    def buffered(self) -> int:
        """Items received and not taken yet (at most the window)."""
        return len(self._stream.buffer)

    def __aiter__(self) -> HubStream:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        while not stream.ready:
            waiter: Deferred[None] = Deferred()
            self._waiter = waiter
            await waiter
        outstanding = stream.outstanding
        item = self._table.take(stream)
        if stream.outstanding != outstanding:
            self._flush()  # credit was granted
        return item

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    def each(self, consume: Callable[[Any], object]) -> Deferred[None]:
        """
        Call C{consume(item)} for every item; a Deferred it returns is
        waited for before the next item is taken (so a slow C{consume}
        slows the producer).  Fires when the stream ends; fails with the
        error it ended with.
        """

        async def run() -> None:
            async for item in self:
                result = consume(item)
                if isinstance(result, Deferred):
                    await result

        return ensureDeferred(run())

    def cancel(self) -> None:
        """Stop the stream: the producer is told to stop (its C{finally} runs); the iteration ends."""
        if self._on_cancel is not None:
            self._on_cancel()
        elif self._table.cancel_inbound(self._stream):
            self._flush()

    async def aclose(self) -> None:
        """Like L{cancel} (so C{contextlib.aclosing(stream)} cancels a stream left early)."""
        self.cancel()


def _pull(source: AsyncIterator[Any]) -> list[Any] | Deferred[Any]:
    """
    The next item of C{source}: C{[item]} (or C{[Failure]}) when it is
    ready at once, which is the common case of an async generator between
    two awaits; else a Deferred of it.  The fast case costs no coroutine
    and no Deferred per item.
    """
    awaitable = source.__anext__()
    send = getattr(awaitable, "send", None)
    if send is None:  # an awaitable that is no coroutine-like object
        return ensureDeferred(_await(awaitable))
    try:
        waiting_on = send(None)
    except StopIteration as done:
        return [done.value]
    except Exception:
        return [Failure()]
    return Deferred.fromCoroutine(_go_on(awaitable, waiting_on))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _go_on(awaitable: Any, waiting_on: Any) -> Generator[Any, Any, Any]:
    """Drive an awaitable that suspended on C{waiting_on} to its end, as Twisted's coroutine runner would have."""
    while True:
        try:
            result = yield waiting_on
        except BaseException as e:  # noqa: BLE001 - passed into the awaitable, not handled here
            try:
                waiting_on = awaitable.throw(e)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = awaitable.send(result)
            except StopIteration as done:
                return done.value


async def _close(source: Any) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()


class StreamPump:
    """
    Sends the items of C{source} (an async iterator) on C{stream}: takes
    the next item only when the consumer's credit allows one, so it holds
    at most one item the consumer did not ask for.  Ends the stream when
    the source is exhausted or fails; stops (closing the source, so its
    C{finally} runs) when the consumer cancels or the connection ends.

    @param done: called once with the error the stream ended with (None:
        it ended normally or was stopped).
    @param crashed: called with the failure of a source that raised
        something other than a L{HubError} (to log it).
    """

    def __init__(
        self,
        table: StreamTable,
        stream: OutboundStream,
        source: Any,
        flush: Callable[[], None],
        max_size: int,
        *,
        crashed: Callable[[Failure], None],
        debug: bool = False,
    ) -> None:
        self._table = table
        self._stream = stream
        self._source: AsyncIterator[Any] = source.__aiter__() if not hasattr(source, "__anext__") else source
        self._flush = flush
        self._max_size = max_size
        self._crashed = crashed
        self._debug = debug
        self._pulling: Deferred[Any] | None = None
        self._running = False
        self.finished = False
        #: items taken from the source (sent, or one waiting to be)
        self.items_pulled = 0
        stream.wake = self._wake

    def start(self) -> None:
        self._run()

    def _wake(self) -> None:
        if self.finished:
            return
        if self._stream.cancelled:
            self._stop()
        elif self._pulling is None:
            self._run()

    def _run(self) -> None:
        if self._running:
            return  # (woken while handling an item: the loop below goes on)
        self._running = True
        try:
            while not self.finished and self._pulling is None:
                stream = self._stream
                if stream.cancelled:
                    self._stop()
                    return
                if not stream.may_send:
                    return  # woken by credit
                outcome = _pull(self._source)
                if isinstance(outcome, Deferred):
                    self._pulling = outcome
                    outcome.addBoth(self._pulled_later)
                    return
                self._handle(outcome[0])
        finally:
            self._running = False
            # the items of one run leave together (batched), not a frame each
            self._flush()

    def _pulled_later(self, outcome: Any) -> None:  # (the outcome, value or Failure, is taken here)
        self._pulling = None
        if self.finished:
            return
        self._handle(outcome)
        self._run()

    def _handle(self, outcome: Any) -> None:
        table, stream = self._table, self._stream
        if isinstance(outcome, Failure):
            if outcome.check(StopAsyncIteration):
                self._end(None)
            elif outcome.check(HubError):
                error = outcome.value
                assert isinstance(error, HubError)
                self._end(error)
            elif outcome.check(CancelledError) and stream.cancelled:
                self.finished = True
            else:
                self._crashed(outcome)
                message = f"{type(outcome.value).__name__}: {outcome.value}" if self._debug else "internal error"
                self._end(HubError(ErrorCode.INTERNAL, message, outcome.getTraceback() if self._debug else None))
            return
        self.items_pulled += 1
        if stream.cancelled:
            self._stop()
            return
        try:
            table.send_item(stream, outcome, self._max_size)
        except HubError as e:
            self._end(e)
            self._close_source()

    def _end(self, error: HubError | None) -> None:
        self.finished = True
        self._table.end(self._stream, error)

    def _stop(self) -> None:
        """The consumer cancelled, or the connection ended: stop the source."""
        if self.finished:
            return
        self.finished = True
        self._table.end(self._stream, None)  # (cancelled: nothing is sent)
        pulling, self._pulling = self._pulling, None
        if pulling is not None:
            pulling.cancel()
        self._close_source()

    def _close_source(self) -> None:
        close_source(self._source).addErrback(self._crashed)


def close_source(source: Any) -> Deferred[None]:
    """Close an async iterator (C{aclose}, when it has one: an async generator's C{finally} runs)."""
    return ensureDeferred(_close(source))
