"""
A server connection's streams: L{ServerStreams}, held by its session.

Its narrow interface to the session (docs/streams.md "Where it plugs in"):
L{received_call} for an INVOKE/STREAM_INVOKE that involves streams,
L{involved} and L{answer} when a call's result is ready, L{forget} when a
call was answered with an error, L{receive} for the stream messages and
L{closed} when the session ends (with resume, a drop does not end it: the
streams go on, sending through the session's own core, which a resume
moves onto the new connection).  What the messages mean is
L{twisted_hub._core.streams.StreamTable}'s; how a source is driven,
L{twisted_hub._twisted.streams.StreamPump}'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from .._core.connection import ServerConnection
from .._core.errors import ConnectionClosedError, DisconnectReason
from .._core.streams import DEFAULT_STREAM_WINDOW, StreamTable
from .._core.wire import ErrorCode, Invoke, StreamCancel, StreamCredit, StreamEnd, StreamInvoke, StreamItem
from .streams import HubStream, StreamPump, close_source

__all__ = ["PLAIN_RESULTS", "ServerStreams"]

#: result types that are never streams: the session asks L{ServerStreams.involved} of no such
#: result unless a call with streams is open (one type lookup on the fast path)
PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})


class ServerStreams:
    """
    The streams of one server connection: results that are streams
    (a hub method returned an async iterator), and arguments that are.

    @param flush: sends what the connection's core queued.
    @param method_crashed: logs a hub method's stream that raised.
    @param window: the credit the server grants a client's stream argument.
    """

    def __init__(
        self,
        core: ServerConnection[Any],
        flush: Callable[[], None],
        method_crashed: Callable[[str, Failure], None],
        max_message_size: int,
        *,
        debug: bool = False,
        window: int = DEFAULT_STREAM_WINDOW,
    ) -> None:
        self._core = core
        self._flush = flush
        self._method_crashed = method_crashed
        self._max_message_size = max_message_size
        self._debug = debug
        self.window = window
        self.table = StreamTable(core.send, core.queue_payload)
        #: calls not answered yet that want a stream (call id -> first credit) or that have stream arguments
        self.calls: dict[int, tuple[int | None, list[HubStream]]] = {}
        self.pumps: dict[int, StreamPump] = {}
        self._holding = 0

    # -- the session's call sites --------------------------------------------
    def received_call(self, invocation: Invoke) -> Invoke:
        """
        An INVOKE with stream arguments, or a STREAM_INVOKE: put a
        L{HubStream} in place of each stream argument (granting it credit)
        and remember the call; return it for the dispatcher.
        """
        credit = invocation.credit if isinstance(invocation, StreamInvoke) else None
        readers: list[HubStream] = []
        for where, stream_id in invocation.streams or ():
            reader = HubStream(self.table, self.table.open_inbound(stream_id, self.window, grant=True), self._flush_soon)
            readers.append(reader)
            if isinstance(where, int):
                invocation.args[where] = reader
            else:
                assert invocation.kwargs is not None
                invocation.kwargs[where] = reader
        self.calls[invocation.call_id] = (credit, readers)
        return invocation

    def involved(self, call_id: int, value: Any) -> bool:
        """The answer to call C{call_id} is L{answer}'s to give (cheap: called for every result)."""
        return (bool(self.calls) and call_id in self.calls) or hasattr(value, "__anext__")

    def answer(self, call_id: int, method: str, value: Any) -> bool:
        """
        Answer call C{call_id}: start the stream C{value} (an async
        iterator) when the client asked for one, refuse a mismatch with
        C{stream-mismatch}, or send a plain result.  Stream arguments the
        method left unread are cancelled.  Return False when the answer was
        an error the session did not choose.
        """
        credit, readers = self.calls.pop(call_id, (None, []))
        for reader in readers:
            reader.cancel()
        is_stream = hasattr(value, "__anext__")
        if credit is not None and is_stream:
            pump = StreamPump(
                self.table, self.table.open_outbound(call_id, credit), value, self._flush_soon,
                self._core.send_limit(self._max_message_size),
                crashed=lambda failure: self._method_crashed(method, failure), debug=self._debug,
            )
            self.pumps[call_id] = pump
            self._holding += 1
            try:
                pump.start()
            finally:
                self._holding -= 1
            if pump.finished:
                del self.pumps[call_id]
            self._flush_soon()
            return True
        if is_stream:
            close_source(value).addErrback(lambda failure: self._method_crashed(method, failure))
            self._core.send_error(call_id, ErrorCode.STREAM_MISMATCH, f"{method} returns a stream: ask for one (stream())")
        elif credit is not None:
            self._core.send_error(call_id, ErrorCode.STREAM_MISMATCH, f"{method} returns a value, not a stream: call it")
        else:
            problem = self._core.send_result(call_id, value, self._max_message_size)
            self._flush_soon()
            return problem is None
        self._flush_soon()
        return True

    def forget(self, call_id: int) -> None:
        """Call C{call_id} was answered with an error: cancel its unread stream arguments."""
        _, readers = self.calls.pop(call_id, (None, []))
        for reader in readers:
            reader.cancel()

    def receive(self, message: StreamItem | StreamEnd | StreamCredit | StreamCancel) -> None:
        """A stream message from the client (the session flushes after the frame)."""
        self._holding += 1
        try:
            self.table.receive(message)
        finally:
            self._holding -= 1
        if isinstance(message, StreamCancel):
            self.pumps.pop(message.stream_id, None)
        self._reap()

    def any_open(self) -> bool:
        """Is a stream, or a call that involves one, open now? (Such a session does not move to another node.)"""
        table = self.table
        return bool(self.calls or self.pumps or table.inbound or table.outbound)

    def closed(self, reason: DisconnectReason) -> None:
        """The connection ended: stream arguments fail, stream results stop (their sources are closed)."""
        self.calls.clear()
        self._holding += 1  # nothing can be sent any more
        self.table.close(ConnectionClosedError(reason, may_have_run=True))
        self.pumps.clear()

    # -- internals -------------------------------------------------------------
    def _reap(self) -> None:
        if self.pumps:
            for call_id in [call_id for call_id, pump in self.pumps.items() if pump.finished]:
                del self.pumps[call_id]

    def _flush_soon(self) -> None:
        if not self._holding:
            self._reap()
            self._flush()
