"""
How one server connection joins its hub, closes, and what its end does,
without I/O: L{SessionClosing}.

The first close decision stands (L{twisted_hub._core.session.Lifecycle}); a
close started here sends the hub's CLOSE message before the WebSocket close
frame, and does not wait for a presumably dead peer after a heartbeat
timeout.  Once the transport is gone, an opened connection leaves the hub
layer, is uncounted, reported and logged, its calls and client results are
dropped or failed, C{on_disconnected} runs, and whoever waits is woken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .connection import ConnectionState
from .errors import DisconnectKind, DisconnectReason
from .log import CoreLog
from .ratelimit import bounded_text, peer_field
from .server_resume import detaches
from .session import SessionState
from .wire import Close, CloseCode, ResumeReason

if TYPE_CHECKING:
    from .server_session import ServerSession

__all__ = ["SessionClosing"]


class SessionClosing:
    """
    The closing side of one L{ServerSession}.

    @ivar joined: the connection opened and is among its hub's connections.
    @ivar opened_at: when it opened (for the closing log line's duration).
    """

    __slots__ = ("_session", "connection_log", "joined", "opened_at")

    def __init__(self, session: ServerSession[Any], connection_log: CoreLog) -> None:
        self._session = session
        self.connection_log = connection_log
        self.joined = False
        self.opened_at = 0.0

    def opened(self) -> None:
        """The connection opened: join the hub layer, count it, report and log it."""
        session = self._session
        session.io.joined()
        self.joined = True
        session.host.connection_count += 1
        self.opened_at = session.io.seconds()
        session.observer.connected()
        self.connection_log.info(
            "{hub} connection {id} opened from {peer}",
            hub=session.hub_name, id=session.connection_id, peer=peer_field(session.transport.peer),
        )

    def close_with(self, code: int, reason: str, kind: DisconnectKind) -> None:
        """
        Close the connection with a close code the client understands.  The
        first decision stands: a second close does nothing.  The hub's CLOSE
        message leaves before the WebSocket close frame; on a heartbeat
        timeout the socket is closed without waiting for the peer's reply.
        """
        session = self._session
        resumable = session.resumable
        if resumable is not None and resumable.detached:
            # no connection to close: the session ends at once (docs/resumption.md)
            resumable.end(DisconnectReason(kind, code, reason, True), ResumeReason.SESSION_UNKNOWN)
            return
        if not session.lifecycle.close_locally(kind, code, reason):
            return
        transport = session.transport
        if not transport.can_send:
            transport.abort()
            return
        core = session.core
        if core.state is not ConnectionState.CLOSED:
            core.send(Close(code, reason))
            session.out.flush()
            core.closing()
        transport.send_close(code, reason, code == CloseCode.HEARTBEAT_TIMEOUT)

    def slow_consumer(self) -> None:
        """The output budget refused a write: the client reads too slowly (the adapter drops it right after)."""
        session = self._session
        output = session.output
        session.log.warn(
            "{id} does not read its data ({size} bytes waiting, limit {limit}): disconnecting",
            id=session.connection_id, size=output.refused_at, limit=output.limit,
        )
        if session.lifecycle.close_locally(DisconnectKind.SLOW_CONSUMER, CloseCode.SLOW_CONSUMER, "outgoing buffer limit"):
            session.observer.slow_consumer_closed()

    def finish(self, observed: DisconnectReason) -> DisconnectReason:
        """
        The transport is gone; C{observed} is what its closing handshake
        showed (used when neither side decided at the hub level).  Leave
        every group, count and log the disconnect, fail pending client
        results, run C{on_disconnected}, wake L{ServerIO.closed}.  Return
        the reason.  A connection that never opened (refused) only ends.
        """
        session = self._session
        resumable = session.resumable
        if resumable is not None and self.joined:
            reason = session.lifecycle.finish(observed)
            if detaches(reason):  # the link failed: the session waits for a resume
                session.output.stopped = True
                resumable.detach(reason)
                return reason
            resumable.stop()
            session.resumable = None
            session.core.resume = None
        io = session.io
        was = session.lifecycle.state
        reason = session.lifecycle.finish(observed)
        session.output.stopped = True
        session.tokens.stop()
        session.stop_hello_deadline()
        if was is SessionState.CONNECTING or not self.joined:
            io.closed()
            return reason  # never opened (refused handshake), or already ended
        self.joined = False
        session.heartbeat.leave()
        io.left()
        session.host.connection_count -= 1
        self._log_closed(reason)
        session.dispatcher.close()
        if session.streams is not None:
            session.streams.closed(reason)
        # Client results still awaited were sent: the client may have run them.
        session.results.connection_closed(session.core.closed(), reason)
        io.run_hook("on_disconnected", reason)
        io.closed()
        peer_log = session.out.peer_log
        if peer_log is not None and peer_log.suppressed:
            session.log.info(
                "{id}: {suppressed} more lines about its mistakes were suppressed",
                id=session.connection_id, suppressed=peer_log.suppressed,
            )
        return reason

    def _log_closed(self, reason: DisconnectReason) -> None:
        """Report a disconnect (metrics, the status page) and log one line about it."""
        session = self._session
        now = session.io.seconds()
        text = bounded_text(reason.message or "")
        session.observer.disconnected(now, session.connection_id, reason, text)
        # "closed: normal (1000) bye; from ...", "closed: normal (1000); from ...", "closed: connection-lost; from ..."
        how = "{kind}" + (" ({code})" if reason.code is not None else "") + (" {reason}" if text else "")
        self.connection_log.info(
            "{hub} connection {id} closed: " + how + "; from {peer} after {duration:.1f}s",
            hub=session.hub_name, id=session.connection_id, peer=peer_field(session.transport.peer),
            duration=now - self.opened_at, kind=reason.kind.value, code=reason.code, reason=text,
            locally=reason.locally,
        )
