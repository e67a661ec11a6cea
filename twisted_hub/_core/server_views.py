"""
What the hub layer reads of a server connection (its C{ConnectionControl}):
L{ServerSessionViews}, the read-only side of
L{twisted_hub._core.server_session.ServerSession}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .connection import ConnectionState
from .errors import DisconnectReason
from .session import SessionState

if TYPE_CHECKING:
    from typing import Any

    from .backpressure import OutputBudget
    from .connection import ServerConnection
    from .heartbeat_member import HeartbeatMembership
    from .server_session import CallSink
    from .session import Lifecycle

__all__ = ["ServerSessionViews"]


class ServerSessionViews:
    """The state, heartbeat and traffic figures of one server connection, read from its parts."""

    core: ServerConnection[Any]
    lifecycle: Lifecycle
    heartbeat: HeartbeatMembership
    output: OutputBudget
    dispatcher: CallSink

    @property
    def is_open(self) -> bool:
        return self.core.state is ConnectionState.OPEN

    @property
    def connecting(self) -> bool:
        return self.lifecycle.state is SessionState.CONNECTING

    @property
    def heartbeat_latency(self) -> float:
        return self.core.heartbeat.latency

    @property
    def heartbeat_active(self) -> bool:
        return self.heartbeat.group is not None

    @property
    def heartbeat_by_ping(self) -> bool:
        return self.heartbeat.heartbeat_by_ping

    @property
    def ack_callback(self) -> Callable[[float], object] | None:
        return self.heartbeat.ack_callback

    @ack_callback.setter
    def ack_callback(self, callback: Callable[[float], object] | None) -> None:
        self.heartbeat.ack_callback = callback

    def stop_heartbeat(self) -> None:
        """Stop heartbeats (and their timeout) for this connection."""
        self.heartbeat.leave()

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why this connection ended, once it has (None while open)."""
        return self.lifecycle.ended

    @property
    def bytes_sent(self) -> int:
        """Bytes written to this client (read by the metrics)."""
        return self.output.bytes_sent

    @property
    def calls_in_progress(self) -> int:
        """Hub calls this connection is running or has queued."""
        return self.dispatcher.in_progress

    @property
    def bytes_in_progress(self) -> int:
        """Encoded size of the calls this connection is running (asynchronously) or has queued."""
        return self.dispatcher.pending_bytes
