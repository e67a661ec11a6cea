"""
The streams of one client connection (docs/streams.md): L{ClientStreams}, a unit
of L{twisted_hub._core.client_session.ClientSession}: calls that involve streams
(a result we consume, arguments we produce), cancelling, a failed result stream,
the server's stream messages.  What each message means and the credit
accounting are L{twisted_hub._core.streams.StreamTable}'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base_error import HubArgumentError
from .errors import HubError
from .streams import InboundStream, OutboundStream, StreamTable
from .wire import ErrorCode, StreamCancel, StreamCredit, StreamEnd, StreamItem

if TYPE_CHECKING:
    from .client_session import ClientSession

__all__ = ["ClientStreams"]


class ClientStreams:
    """
    @ivar table: the connection's streams (L{StreamTable}); the adapters'
        stream objects read and grant credit through it.
    """

    __slots__ = ("session", "_table", "_ids", "call_ids")

    def __init__(self, session: ClientSession[Any]) -> None:
        self.session = session
        self._table: StreamTable | None = None  # made at the first stream: most connections have none
        self._ids = 0
        #: the ids of calls that involve streams (pruned of settled ones as it grows): a
        #: resumable session fails them when its connection drops (streams end with it)
        self.call_ids: set[int] = set()

    @property
    def table(self) -> StreamTable:
        table = self._table
        if table is None:
            core = self.session.core
            table = self._table = StreamTable(core.send, core.queue_payload)
        return table

    def close(self, error: Exception) -> None:
        """The connection ended: every open stream fails with C{error}."""
        if self._table is not None:
            self._table.close(error)

    def invoke(
        self, token: Any, method: str, args: list[Any], kwargs: dict[str, Any] | None, window: int | None,
        is_source: Callable[[object], bool],
    ) -> tuple[int, InboundStream | None, list[tuple[OutboundStream, Any]]]:
        """
        Queue a call that involves streams: its result is a stream (C{window}:
        the credit we grant, in items; None: its result is a value), and/or
        some of its arguments are (those C{is_source} says are; the adapter
        feeds each L{OutboundStream} from its source as credit comes).
        Return the call id, the stream we consume, the streams we produce.

        @raise HubArgumentError: C{window} is not a whole number of at least 1.
        @raise ConnectionClosedError: the connection is not open.
        @raise HubError: C{stream-mismatch}, the server does not speak
            streams; C{invalid-arguments}, see L{invoke}.
        """
        session = self.session
        if window is not None and (not isinstance(window, int) or window < 1):
            # Before anything is queued: a refused window leaves no call behind.
            raise HubArgumentError(f"{method}: a stream window must be at least 1 item, not {window!r}")
        if not session.is_connected:
            raise session.closed_error()
        core = session.core
        if not core.server_takes_streams:
            raise HubError(ErrorCode.STREAM_MISMATCH, f"{method}: the server does not speak streams (capability 'stream')")
        args = list(args)
        kwargs = dict(kwargs) if kwargs else None
        declared: list[list[Any]] = []
        sources: list[tuple[int, Any]] = []
        places: list[tuple[int | str, Any]] = list(enumerate(args))
        if kwargs:
            places.extend(kwargs.items())
        for where, value in places:
            if is_source(value):
                self._ids += 1
                declared.append([where, self._ids])
                sources.append((self._ids, value))
                if isinstance(where, int):
                    args[where] = None
                else:
                    assert kwargs is not None
                    kwargs[where] = None
        try:
            call_id = core.invoke(
                token, method, args, kwargs, core.send_limit(session.options.max_message_size),
                credit=window, streams=declared or None,
            )
        except (TypeError, ValueError, OverflowError) as e:
            raise HubError(ErrorCode.INVALID_ARGUMENTS, f"{method}: {e}") from None
        calls = self.call_ids
        calls.add(call_id)
        if len(calls) > 1024:
            self.call_ids = {i for i in calls if i in core._pending}
        inbound = self.table.open_inbound(call_id, window, grant=False) if window is not None else None
        outbound = [(self.table.open_outbound(stream_id), source) for stream_id, source in sources]
        if not session._handling:
            session.flush()
        return call_id, inbound, outbound

    def cancel(self, stream: InboundStream) -> None:
        """We want no more of a result stream: the server's producer stops; the call is forgotten."""
        if self.table.cancel_inbound(stream):
            self.session.core.forget_call(stream.stream_id)
            self.session.flush()

    def failed(self, stream: InboundStream, error: Exception) -> None:
        """The call of a result stream failed (an ERROR answer, the connection ended): the stream ends with C{error}."""
        if self.table.inbound.get(stream.stream_id) is stream:
            del self.table.inbound[stream.stream_id]
        stream.finish(error)

    def message(self, message: StreamItem | StreamEnd | StreamCredit | StreamCancel) -> None:
        """A stream message from the server."""
        ends_call = isinstance(message, StreamEnd) and message.stream_id in self.table.inbound
        self.table.receive(message)
        if ends_call:
            # the result stream ended: so did its call
            token = self.session.core.forget_call(message.stream_id)
            if token is not None:
                self.session.io.call_succeeded(token, None)
