"""
Per-frame shortcuts through autobahn, shared by the server and client protocols.

autobahn spends a good part of each small frame on work a hub connection never
uses: it builds debug-log arguments (``hltype``/``hlval``, which style strings
with click) for every frame it sends even with debug logging off, and after
every received message it fires its observer event ``"message"``, which
creates and chains a Deferred even when nobody listens.  These overrides do
the same protocol work without that; measured in docs/performance.md.
"""

from __future__ import annotations

from typing import Any


class FastPathMixin:
    """Mix in before autobahn's C{WebSocketServerProtocol}/C{WebSocketClientProtocol}."""

    # Attributes set by autobahn's protocol.
    send_queue: Any
    transport: Any
    state: Any
    trafficStats: Any
    logOctets: bool
    failedByMe: bool
    message_data: Any
    message_is_binary: bool
    trackedTimings: Any
    _listeners: Any
    STATE_OPEN: int
    STATE_CONNECTING: int
    STATE_PROXY_CONNECTING: int

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # autobahn's sendData, minus the debug-log call on the common path.
        if chopsize or sync or self.send_queue:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        self.transport.write(data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state == self.STATE_CONNECTING or self.state == self.STATE_PROXY_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)  # type: ignore[attr-defined]

    def onMessageEnd(self) -> None:
        # autobahn's onMessageEnd without firing the "message" observer event
        # when no observer is registered (it costs a Deferred per message).
        if self._listeners is not None or self.trackedTimings:
            super().onMessageEnd()  # type: ignore[misc]
            return
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)  # type: ignore[attr-defined]
        self.message_data = None
