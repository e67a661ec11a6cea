"""
Per-frame shortcuts through autobahn, shared by the server and client protocols.

autobahn spends a good part of each small frame on work a hub connection never
uses: it builds debug-log arguments (``hltype``/``hlval``, which style strings
with click) for every frame it sends even with debug logging off, and after
every received message it fires its observer event ``"message"``, which
creates and chains a Deferred even when nobody listens.  And for every frame
it receives it runs a general frame state machine (a masker object, frame
begin/data/end callbacks, a list join) although nearly every frame a hub sees
is one small, complete, unfragmented binary message.  These overrides do the
same protocol work without that; measured in docs/performance.md.

They lean on autobahn's private frame-handling attributes, so they are
guarded: they run only on the autobahn versions they were checked against
(L{TESTED_AUTOBAHN}, also the bound in setup.cfg), only while nobody
observes autobahn's per-message events or timings, and a factory's
C{fast_path = False} turns them off.  Otherwise every call goes to stock
autobahn.  C{tests/test_fastpath.py} checks both paths against each other.
"""

from __future__ import annotations

from typing import Any

import autobahn

from ._errors import DisconnectKind, DisconnectReason, kind_for_close

#: autobahn releases (major, minor) the fast path was checked against: [low, high).
TESTED_AUTOBAHN = ((24, 4), (27, 0))


def _version_tuple(version: str) -> tuple[int, int]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def fast_path_supported(version: str) -> bool:
    """True when the fast path was checked against this autobahn version."""
    low, high = TESTED_AUTOBAHN
    return low <= _version_tuple(version) < high


#: Whether the installed autobahn can take the fast path at all.
FAST_PATH_AVAILABLE = fast_path_supported(str(getattr(autobahn, "__version__", "0")))


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
    data: bytes
    current_frame: Any
    inside_message: bool
    _perMessageCompress: Any
    logFrames: bool
    autoPingTimeoutCall: Any
    maxFramePayloadSize: int
    maxMessagePayloadSize: int
    factory: Any
    core: Any
    #: per connection: the factory allows it and the autobahn version is tested
    _fast_path = False
    #: "any traffic counts": every chunk received is a sign of life
    count_any_traffic = False

    def connectionMade(self) -> None:
        self._fast_path = FAST_PATH_AVAILABLE and bool(getattr(self.factory, "fast_path", True))
        super().connectionMade()  # type: ignore[misc]

    def dataReceived(self, data: bytes) -> None:
        if self.count_any_traffic:
            # Bytes of a large message still arriving are a sign of life too.
            self.core.last_received = self.factory.clock.seconds()
        if self._fast_path:
            # autobahn's dataReceived logs every chunk at debug level, building
            # the arguments even when debug logging is off.
            self._dataReceived(data)  # type: ignore[attr-defined]
        else:
            super().dataReceived(data)  # type: ignore[misc]

    def _observed(self) -> bool:
        """Someone listens to autobahn's per-message events or timings: take the stock path."""
        return bool(self._listeners) or bool(self.trackedTimings)

    def processData(self) -> bool:
        # The common frame, handled here: a complete, unfragmented binary
        # message (FIN, RSV 0, opcode 2) of less than 64 KiB, masked exactly
        # when the sender is a client, with no extension, frame logging or
        # autoPing in play.  Everything else (control frames, fragments, text,
        # large or partial frames, anything invalid) goes through autobahn,
        # which also produces every protocol-violation close.
        data = self.data
        if (
            not self._fast_path
            or len(data) < 2
            or data[0] != 0x82
            or self.current_frame is not None
            or self.inside_message
            or self.state != self.STATE_OPEN
            or self._perMessageCompress is not None
            or self.logFrames
            or self.autoPingTimeoutCall is not None
            or self._observed()
        ):
            return super().processData()  # type: ignore[misc, no-any-return]
        second = data[1]
        masked = second & 0x80
        if bool(masked) != bool(self.factory.isServer):
            return super().processData()  # type: ignore[misc, no-any-return]
        length = second & 0x7F
        start = 2
        if length == 126:
            if len(data) < 4:
                return super().processData()  # type: ignore[misc, no-any-return]
            length = (data[2] << 8) | data[3]
            start = 4
            if length < 126:
                return super().processData()  # type: ignore[misc, no-any-return]  # not minimal: a violation
        elif length == 127:
            return super().processData()  # type: ignore[misc, no-any-return]
        if (0 < self.maxFramePayloadSize < length) or (0 < self.maxMessagePayloadSize < length):
            return super().processData()  # type: ignore[misc, no-any-return]  # autobahn closes with 1009
        if masked:
            end = start + 4 + length
            if len(data) < end:
                return super().processData()  # type: ignore[misc, no-any-return]
            mask = data[start : start + 4]
            payload = data[start + 4 : end]
            if length:
                key = (mask * (length // 4 + 1))[:length]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
        else:
            end = start + length
            if len(data) < end:
                return super().processData()  # type: ignore[misc, no-any-return]
            payload = data[start:end]
        self.data = data[end:]
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += length
        stats.incomingOctetsAppLevel += length
        stats.incomingWebSocketFrames += 1
        stats.incomingWebSocketMessages += 1
        self.onMessage(payload, True)  # type: ignore[attr-defined]
        return len(self.data) > 0

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # autobahn's sendData, minus the debug-log call on the common path.
        if chopsize or sync or self.send_queue or not self._fast_path:
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
        if not self._fast_path or self._observed():
            super().onMessageEnd()  # type: ignore[misc]
            return
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)  # type: ignore[attr-defined]
        self.message_data = None


#: Seconds we let our close frame take to leave before the socket is aborted.
CLOSE_FLUSH_TIMEOUT = 1.0


def final_close_reason(protocol: Any, decided: DisconnectReason | None, lost_text: str | None) -> DisconnectReason:
    """
    Why an autobahn connection ended, computed in one place for both sides:
    the reason this side decided (a timeout, a kick, a CLOSE message it
    received), else the close code autobahn sent on its own (1009, bad
    framing), else the peer's close frame, else a lost connection.
    """
    if decided is not None:
        return decided
    if protocol.closedByMe and protocol.localCloseCode is not None:
        text = (protocol.localCloseReason or b"").decode("utf-8", "replace")
        return DisconnectReason(kind_for_close(protocol.localCloseCode, True), protocol.localCloseCode, text, True)
    remote = protocol.remoteCloseCode
    if remote is not None:
        return DisconnectReason(kind_for_close(remote, False), remote, protocol.remoteCloseReason or "")
    return DisconnectReason(DisconnectKind.CONNECTION_LOST, None, lost_text or "")


class BoundedDropMixin:
    """
    Ending a connection to a peer we gave up on: our close frame goes out
    first (so the peer can learn why), then TCP is closed once our buffer is
    written, and aborted if that takes more than L{CLOSE_FLUSH_TIMEOUT} (a
    stopped peer reads nothing).  Shared by the server and client protocols.
    """

    transport: Any
    _abort_call: Any = None

    def drop_after_close(self, clock: Any) -> None:
        """Close TCP after the close frame; abort it if that is not done in time."""
        self.dropConnection(abort=False)  # type: ignore[attr-defined]
        if self._abort_call is None:
            self._abort_call = clock.callLater(CLOSE_FLUSH_TIMEOUT, self._abort_now)

    def _abort_now(self) -> None:
        self._abort_call = None
        transport = self.transport
        if transport is not None:
            transport.abortConnection()

    def cancel_drop(self) -> None:
        """The connection is gone: the abort timer is not needed."""
        call = self._abort_call
        if call is not None:
            self._abort_call = None
            if call.active():
                call.cancel()
