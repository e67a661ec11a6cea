"""
The streams of one client connection (docs/streams.md): L{ClientStreams}, a unit
of L{twisted_hub._core.client_session.ClientSession}: calls that involve streams
(a result we consume, arguments we produce), cancelling, a failed result stream,
the server's stream messages.  What each message means and the credit
accounting are L{twisted_hub._core.streams.StreamTable}'s.

With resume (docs/resumption.md), the streams outlive their connection: when it
drops with the session alive they are kept (L{detach}: what they send meanwhile
is held, at most the credit each producer had), the next connection's session
takes them over (L{ClientResumption.attach}) and, once RESUMED arrives, what
was held goes out after the replay (L{resumed}).  A session that ends for good
fails them with L{ConnectionClosedError<twisted_hub.ConnectionClosedError>}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base_error import HubArgumentError
from .errors import HubError
from .streams import InboundStream, OutboundStream, StreamTable
from .wire import ErrorCode, Message, StreamCancel, StreamCredit, StreamEnd, StreamItem

if TYPE_CHECKING:
    from .client_session import ClientSession

__all__ = ["ClientStreams"]


class ClientStreams:
    """
    @ivar table: the connection's streams (L{StreamTable}); the adapters'
        stream objects read and grant credit through it.
    @ivar session: the session of the connection they send on (with resume:
        the newest one, L{ClientResumption.attach} rebinds it).
    """

    __slots__ = ("session", "_table", "_ids", "held")

    def __init__(self, session: ClientSession[Any]) -> None:
        self.session = session
        self._table: StreamTable | None = None  # made at the first stream: most connections have none
        self._ids = 0
        #: while the session is detached (resume): what the streams sent, in order, for the
        #: next connection (None: attached, they send on C{session}'s core)
        self.held: list[Message | bytes] | None = None

    @property
    def table(self) -> StreamTable:
        table = self._table
        if table is None:
            table = self._table = StreamTable(self._send, self._send_payload)
        return table

    def close(self, error: Exception) -> None:
        """The connection (with resume: the session) ended: every open stream fails with C{error}."""
        self.held = None
        if self._table is not None:
            self._table.close(error)

    # -- across a resume --------------------------------------------------------
    def detach(self) -> None:
        """The connection dropped with the session alive: hold what the streams send until it resumes."""
        if self.held is None:
            self.held = []

    def resumed(self) -> int:
        """
        RESUMED arrived (the replay is queued): what was held goes out now, in
        order, numbered on the new connection.  Return how many messages.
        """
        held, self.held = self.held or [], None
        core = self.session.core
        for message in held:
            if isinstance(message, bytes):
                # (its size was checked against this session's limit when it was held)
                core.queue_payload(message)
            else:
                core.send(message)
        return len(held)

    def _send(self, message: Message) -> None:
        held = self.held
        if held is None:
            self.session.core.send(message)
        else:
            held.append(message)

    def _send_payload(self, payload: bytes) -> bool:
        held = self.held
        if held is None:
            return self.session.core.queue_payload(payload)
        limit = self.session.core.peer_max_message_size
        if limit is not None and len(payload) > limit:
            return False
        held.append(payload)
        return True

    def flush(self) -> None:
        """Send what the streams queued (the adapters' stream objects call it; while detached: nothing)."""
        self.session.flush()

    def forget_call(self, call_id: int) -> Any:
        """Forget a call that involves streams (while detached, the resumption keeps the calls)."""
        session = self.session
        token = session.core.forget_call(call_id)
        if token is None and self.held is not None and session.resumption is not None:
            token = session.resumption.pending.pop(call_id, None)
        return token

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
        inbound = self.table.open_inbound(call_id, window, grant=False) if window is not None else None
        outbound = [(self.table.open_outbound(stream_id), source) for stream_id, source in sources]
        if not session._handling:
            session.flush()
        return call_id, inbound, outbound

    def cancel(self, stream: InboundStream) -> None:
        """We want no more of a result stream: the server's producer stops; the call is forgotten."""
        if self.table.cancel_inbound(stream):
            self.forget_call(stream.stream_id)
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
            token = self.forget_call(message.stream_id)
            if token is not None:
                self.session.io.call_succeeded(token, None)
