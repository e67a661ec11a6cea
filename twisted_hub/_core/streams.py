"""
Streams with credit-based flow control, without I/O: L{StreamTable}.

One table per connection, the same on both sides.  A stream has one
producer and one consumer.  The consumer grants credit (a number of items);
the producer sends at most that many L{StreamItem}s and then waits for more
(L{StreamCredit}); it ends the stream with L{StreamEnd} (done or failed),
and the consumer may stop it at any time with L{StreamCancel}.  So a
consumer that stops taking items holds at most its window of items, and a
producer that only makes an item when it may send one holds at most one
more (docs/streams.md, docs/protocol.md section 3.18).

This module decides what each stream message means and keeps the counts;
the adapters (L{twisted_hub._twisted.streams}, the asyncio client) own the
waiting: they set C{wake} on a stream and are called back when it changes.
No Twisted, no asyncio, no time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from .base_error import HubArgumentError
from .errors import HubError
from .wire import (
    ErrorCode,
    Message,
    MessageKind,
    ProtocolError,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamItem,
    encode_fields,
)

__all__ = [
    "DEFAULT_STREAM_WINDOW", "InboundStream", "NO_STREAMS", "OutboundStream", "StreamSink",
    "StreamTable", "is_stream_source", "refused_stream",
]

#: The credit a consumer grants unless told otherwise: items in flight or buffered per stream.
DEFAULT_STREAM_WINDOW: Final = 16

_ITEM = MessageKind.STREAM_ITEM


def is_stream_source(value: object) -> bool:
    """C{value} is something a stream argument is made from: an async iterable (or iterator)."""
    return hasattr(value, "__aiter__") or hasattr(value, "__anext__")


class InboundStream:
    """
    The consumer's side of one stream: the items received and not yet
    taken, the credit granted and not yet used, how it ended.

    @ivar wake: called (no arguments) when an item arrives or the stream
        ends; the adapter sets it to resolve whoever waits in L{take}.
    """

    def __init__(self, stream_id: int, window: int) -> None:
        if window < 1:
            raise HubArgumentError(f"a stream window must be at least 1 item, not {window!r}")
        self.stream_id = stream_id
        self.window = window
        self.buffer: deque[Any] = deque()
        #: credit granted and not yet used by an item
        self.outstanding = window
        #: items taken since credit was last granted
        self.taken = 0
        self.ended = False
        #: why it ended, None: it ended normally (or has not)
        self.error: Exception | None = None
        self.wake: Callable[[], object] | None = None

    def push(self, item: Any) -> None:
        """An item arrived; more items than the credit granted is the producer's protocol error."""
        if self.outstanding <= 0:
            raise ProtocolError(f"stream {self.stream_id}: an item beyond the credit granted")
        self.outstanding -= 1
        self.buffer.append(item)
        self._wake()

    def finish(self, error: Exception | None = None) -> None:
        """The stream ended: normally (C{error} None) or with C{error}; items already received stay takeable."""
        if self.ended:
            return
        self.ended = True
        self.error = error
        self._wake()

    def _wake(self) -> None:
        wake = self.wake
        if wake is not None:
            wake()

    @property
    def ready(self) -> bool:
        """L{take} would not wait: an item is buffered, or the stream ended."""
        return bool(self.buffer) or self.ended

    def take(self) -> Any:
        """
        The next item.  Call only when L{ready}.

        @raise StopAsyncIteration: the stream ended normally and every item was taken.
        @raise Exception: the error it ended with, once every item was taken.
        """
        if self.buffer:
            self.taken += 1
            return self.buffer.popleft()
        if self.error is not None:
            raise self.error
        raise StopAsyncIteration

    def credit_due(self) -> int:
        """
        Credit to grant now (0: none yet): what was taken, once at least half
        the window was (so credit travels once per half window, not per item).
        """
        if self.ended or self.taken < max(1, self.window // 2):
            return 0
        due, self.taken = self.taken, 0
        self.outstanding += due
        return due


class OutboundStream:
    """
    The producer's side of one stream: the credit it may still use.

    @ivar wake: called when credit arrives or the consumer cancels; the
        adapter resumes or stops its producer.
    """

    def __init__(self, stream_id: int, credit: int) -> None:
        self.stream_id = stream_id
        self.credit = credit
        self.cancelled = False
        self.ended = False
        self.items_sent = 0
        self.wake: Callable[[], object] | None = None

    @property
    def may_send(self) -> bool:
        """The producer may send an item now."""
        return self.credit > 0 and not self.cancelled and not self.ended

    def _wake(self) -> None:
        wake = self.wake
        if wake is not None:
            wake()


class StreamTable:
    """
    One connection's streams, both directions.

    @param send: queues a message on the connection (its core's C{send}).
    @param send_payload: queues an encoded message, returning False when
        it is too big for the peer (its core's C{queue_payload}).
    """

    def __init__(self, send: Callable[[Message], None], send_payload: Callable[[bytes], bool]) -> None:
        self._send = send
        self._send_payload = send_payload
        self.inbound: dict[int, InboundStream] = {}
        self.outbound: dict[int, OutboundStream] = {}
        #: messages for streams no longer known (after a cancel they may still come): ignored
        self.late = 0

    # -- consumer -----------------------------------------------------------
    def open_inbound(self, stream_id: int, window: int, *, grant: bool) -> InboundStream:
        """
        A stream we consume.  C{grant}: send the first credit now (a stream
        the peer declared); False when it went with our request (STREAM_INVOKE).
        """
        if stream_id in self.inbound:
            raise ProtocolError(f"stream {stream_id} is already open")
        stream = InboundStream(stream_id, window)
        self.inbound[stream_id] = stream
        if grant:
            self._send(StreamCredit(stream_id, window))
        return stream

    def take(self, stream: InboundStream) -> Any:
        """L{InboundStream.take}, granting credit when due."""
        item = stream.take()
        due = stream.credit_due()
        if due and self.inbound.get(stream.stream_id) is stream:
            self._send(StreamCredit(stream.stream_id, due))
        return item

    def cancel_inbound(self, stream: InboundStream) -> bool:
        """
        We want no more of C{stream}: tell the producer (once), end it here
        (normally: what is buffered is dropped).  False when it had ended already.
        """
        if self.inbound.get(stream.stream_id) is not stream:
            return False
        del self.inbound[stream.stream_id]
        stream.buffer.clear()
        if not stream.ended:
            self._send(StreamCancel(stream.stream_id))
            stream.finish(None)
            return True
        return False

    # -- producer -----------------------------------------------------------
    def open_outbound(self, stream_id: int, credit: int = 0) -> OutboundStream:
        """A stream we produce, with the credit the consumer granted so far."""
        if stream_id in self.outbound:
            raise ProtocolError(f"stream {stream_id} is already open")
        stream = OutboundStream(stream_id, credit)
        self.outbound[stream_id] = stream
        return stream

    def send_item(self, stream: OutboundStream, item: Any, max_size: int) -> None:
        """
        Send one item (call only when L{OutboundStream.may_send}).

        @raise HubError: C{internal}, the item cannot be encoded or is larger
            than C{max_size} or the peer's limit; nothing is sent.
        """
        if not stream.may_send:
            raise ProtocolError(f"stream {stream.stream_id}: no credit to send an item")
        try:
            payload = encode_fields([_ITEM, stream.stream_id, item])
        except (TypeError, ValueError, OverflowError) as e:
            raise HubError(ErrorCode.INTERNAL, f"a stream item cannot be encoded: {e}") from None
        if len(payload) > max_size or not self._send_payload(payload):
            raise HubError(ErrorCode.INTERNAL, f"a stream item is too big to send ({len(payload)} bytes)")
        stream.credit -= 1
        stream.items_sent += 1

    def end(self, stream: OutboundStream, error: HubError | None = None) -> None:
        """The producer is done (C{error} None) or failed: send STREAM_END, unless the consumer cancelled."""
        if stream.ended:
            return
        stream.ended = True
        if self.outbound.get(stream.stream_id) is stream:
            del self.outbound[stream.stream_id]
        if stream.cancelled:
            return
        if error is None:
            self._send(StreamEnd(stream.stream_id))
        else:
            self._send(StreamEnd(stream.stream_id, error.code, error.message, error.detail))

    # -- what the peer sent -------------------------------------------------
    def receive(self, message: StreamItem | StreamEnd | StreamCredit | StreamCancel) -> None:
        """
        One stream message from the peer.  Messages for streams we no longer
        know are ignored (they crossed our cancel, or our end).

        @raise ProtocolError: an item beyond the credit granted.
        """
        if isinstance(message, StreamItem):
            inbound = self.inbound.get(message.stream_id)
            if inbound is None:
                self.late += 1
                return
            inbound.push(message.item)
        elif isinstance(message, StreamEnd):
            inbound = self.inbound.pop(message.stream_id, None)
            if inbound is None:
                self.late += 1
                return
            if message.code is None:
                inbound.finish(None)
            else:
                inbound.finish(HubError(message.code, message.message, message.detail))
        elif isinstance(message, StreamCredit):
            outbound = self.outbound.get(message.stream_id)
            if outbound is None:
                self.late += 1
                return
            outbound.credit += message.credit
            outbound._wake()
        else:
            outbound = self.outbound.pop(message.stream_id, None)
            if outbound is None:
                self.late += 1
                return
            outbound.cancelled = True
            outbound._wake()

    def close(self, error: Exception) -> None:
        """
        The connection ended: every stream we consume fails with C{error}
        (after the items already received), every stream we produce is
        cancelled (its producer stops).
        """
        inbound, self.inbound = self.inbound, {}
        for stream in inbound.values():
            stream.finish(error)
        outbound, self.outbound = self.outbound, {}
        for out in outbound.values():
            out.cancelled = True
            out._wake()


class StreamSink(Protocol):
    """
    What a server session hands its streams (the adapter's; on Twisted
    L{twisted_hub._twisted.server_streams.ServerStreams}): calls that
    involve streams, the stream messages, and the end of the connection.
    """

    def received_call(self, invocation: Any) -> Any:
        """An INVOKE/STREAM_INVOKE that involves streams: the invocation the dispatcher runs."""

    def receive(self, message: Any) -> None:
        """A STREAM_ITEM, STREAM_END, STREAM_CREDIT or STREAM_CANCEL."""

    def closed(self, reason: Any) -> None:
        """The connection ended: every open stream fails with C{reason}."""

    def any_open(self) -> bool:
        """Is a stream, or a call that involves one, open now?"""


class _NoStreams:
    """The streams of a session whose adapter has none: the messages are protocol errors."""

    def received_call(self, invocation: Any) -> Any:
        raise ProtocolError("this server does not take streams")

    def receive(self, message: Any) -> None:
        raise ProtocolError("this server does not take streams")

    def closed(self, reason: Any) -> None:
        """Nothing is open."""

    def any_open(self) -> bool:
        return False


#: the streams of a session until its adapter gives it some
NO_STREAMS: StreamSink = _NoStreams()


def refused_stream(error: Exception, window: int) -> tuple[StreamTable, InboundStream]:
    """A result stream that ends with C{error} at its first read (the call could not be made), on a table of its own."""
    stream = InboundStream(0, window)
    stream.finish(error)
    return StreamTable(lambda message: None, lambda payload: True), stream
