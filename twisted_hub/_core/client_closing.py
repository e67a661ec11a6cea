"""
The client's closing decisions: L{ClientClosing}, the part of
L{twisted_hub._core.client_session.ClientSession} that decides to close
(the user's disconnect, a frame we cannot handle, what the WebSocket layer
refused, an abandoned handshake).  The first decision stands
(L{twisted_hub._core.session.Lifecycle}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DisconnectKind, kind_for_close
from .wire import CloseCode

if TYPE_CHECKING:
    from .client_common import ClientIO
    from .client_heartbeat import ClientHeartbeat
    from .connection import ClientConnection
    from .log import CoreLog
    from .session import Lifecycle

__all__ = ["ClientClosing"]


class ClientClosing:
    """How a client session closes, on its own decision."""

    core: ClientConnection[Any]
    lifecycle: Lifecycle
    io: ClientIO[Any]
    log: CoreLog
    heartbeat: ClientHeartbeat

    def disconnect(self, reason: str) -> None:
        """The user closes normally (nothing happens when this side already decided)."""
        self._close_locally(DisconnectKind.NORMAL, CloseCode.NORMAL, reason)

    def close_for_error(self, code: int, reason: str) -> None:
        """Close for a frame we cannot handle (L{twisted_hub._core.session.close_for_frame_error})."""
        self._close_locally(DisconnectKind.PROTOCOL_ERROR, code, reason)

    def _close_locally(self, kind: DisconnectKind, code: int, reason: str) -> None:
        if self.lifecycle.close_locally(kind, code, reason):
            self.core.closing()
            self.io.send_close(code, reason, True)

    def websocket_failed(self, code: int, reason: str) -> bool:
        """
        The WebSocket layer refused what the server sent as it arrived and
        has sent close C{code} on its own: 1009 (a message over
        C{max_message_size}), 1002 (bad framing), 1007 (invalid UTF-8, seen
        on arrival by autobahn).  This side's decision, like one of the
        session's own: it is the reason (unless this side decided before),
        pending calls fail with it, heartbeats stop.

        True when it is this side's first decision: the adapter then closes
        TCP once the close frame is written (aborting it if that takes more
        than a second) without waiting for the server's answer, which could
        not be read anyway, the byte stream being lost past the refused
        frame (RFC 6455 section 7.1.7).
        """
        if not self.lifecycle.close_locally(kind_for_close(code, True), code, reason):
            return False
        self.log.info(
            "the server sent what our WebSocket layer refused: closing with {code} ({reason})", code=code, reason=reason
        )
        self.heartbeat.stop()
        self.core.closing()
        return True

    def abandon_handshake(self, stage: str) -> None:
        """Whoever waited for the handshake gave up on it (a timeout); the adapter drops the socket."""
        self.lifecycle.close_locally(DisconnectKind.HANDSHAKE_FAILED, None, f"handshake abandoned waiting for the {stage}")
