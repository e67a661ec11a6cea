"""
Per-frame shortcuts through autobahn, shared by the server and client protocols.

autobahn spends a good part of each small frame on work a hub connection never
uses: it builds debug-log arguments (``hltype``/``hlval``, which style strings
with click) for every frame it sends even with debug logging off, and after
every received message it fires its observer event ``"message"``, which
creates and chains a Deferred even when nobody listens.  And for every frame
it receives it runs a general frame state machine (a masker object, frame
begin/data/end callbacks, a list join) although nearly every frame a hub sees
is one small, complete, unfragmented binary message.  For every binary
message it sends it goes through its general C{sendFrame} and, on a client,
creates a masker object per frame.  And for every new connection it
pretty-prints all its options for a debug log line.  These overrides do the
same protocol work without that; measured in docs/performance.md.

They lean on autobahn's private frame-handling attributes, so they are
guarded: they run only on the autobahn versions they were checked against
(L{TESTED_AUTOBAHN}, also the bound in setup.cfg), only while nobody
observes autobahn's per-message events or timings, and a factory's
C{fast_path = False} turns them off.  Otherwise every call goes to stock
autobahn.  C{tests/test_fastpath.py} checks both paths against each other.
The direct socket writes (L{write_through}) read private attributes of
Twisted's TCP connection and are guarded the same way (L{TESTED_TWISTED},
L{TCP_ATTRIBUTES}).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any
from weakref import WeakKeyDictionary

import autobahn
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.tcp import Connection as _TCPConnection
from twisted.logger import Logger

import twisted

from .._core.errors import DisconnectReason
from .._core.session import ended_reason
from .._support.logging import HUB_LOG_OBSERVER

_log = Logger(observer=HUB_LOG_OBSERVER)

#: autobahn releases (major, minor) the fast path was checked against: [low, high).
TESTED_AUTOBAHN = ((26, 10), (27, 0))


def version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as C{"26.10.1"} (missing parts: 0)."""
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
    return low <= version_tuple(version) < high


#: Whether the installed autobahn can take the fast path at all.
FAST_PATH_AVAILABLE = fast_path_supported(str(getattr(autobahn, "__version__", "0")))


def _native_masker() -> Any:
    """autobahn's C (NVX) masker factory, or None when autobahn runs its pure-Python one."""
    try:
        from autobahn.websocket import USES_NVX
        from autobahn.websocket.xormasker import create_xor_masker  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - every tested autobahn has both
        return None
    return create_xor_masker if USES_NVX else None


#: Creates a C masker (mask, length) -> object with .process(bytes); None without NVX.
NATIVE_MASKER = _native_masker()

#: Payload size (bytes) above which a received frame is unmasked with
#: autobahn's C masker instead of one big-integer XOR.  Measured (min of 7
#: timeit repeats, docs/performance.md): the XOR takes 0.9 / 3.3 / 5.5 / 20 /
#: 81 us at 128 B / 1 / 2 / 4 / 16 KiB, the C masker (created per frame, as
#: autobahn does) 4.1 / 4.5 / 4.6 / 4.7 / 10.9 us: they cross between 1 and 2 KiB.
NATIVE_MASK_THRESHOLD = 1536


def _mask_xor(mask: bytes, payload: bytes) -> bytes:
    """C{payload} XOR-ed with the repeated 4-byte C{mask} (RFC 6455 masking), as one big-integer XOR."""
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")


def apply_mask(mask: bytes, payload: bytes) -> bytes:
    """
    Mask (or unmask) C{payload}: autobahn's C masker over
    L{NATIVE_MASK_THRESHOLD} bytes when it has one, one big-integer XOR
    otherwise (below the threshold it is the faster, and autobahn's
    pure-Python masker is slower than it at every size).
    """
    if not payload:
        return payload
    if len(payload) > NATIVE_MASK_THRESHOLD and NATIVE_MASKER is not None:
        return NATIVE_MASKER(mask, len(payload)).process(payload)  # type: ignore[no-any-return]
    return _mask_xor(mask, payload)


class MaskSource:
    """
    Frame masks for a client: 4 bytes each from C{os.urandom}, read
    C{pool_size} bytes at a time (one system call per 1,024 frames, not one per
    frame).  The masks stay as unpredictable as C{os.urandom} itself; a forked
    child process refills its pool, so parent and child never share masks.
    """

    def __init__(self, pool_size: int = 4096) -> None:
        self._pool_size = pool_size - pool_size % 4 or 4
        self._pool = b""
        self._offset = 0

    def next(self) -> bytes:
        """The next unused 4-byte mask."""
        offset = self._offset
        if offset >= len(self._pool):
            self._pool = os.urandom(self._pool_size)
            offset = 0
        self._offset = offset + 4
        return self._pool[offset : offset + 4]

    def discard(self) -> None:
        """Forget the unused masks (after a fork: the parent has the same ones)."""
        self._pool = b""
        self._offset = 0


#: Where the send fast path takes its masks (one per process).
MASKS = MaskSource()
os.register_at_fork(after_in_child=MASKS.discard)


def apply_tcp_nodelay(transport: Any, nodelay: bool) -> None:
    """
    Set TCP_NODELAY on a hub connection's socket as autobahn's C{tcpNoDelay}
    option says (on by default: no Nagle delay on small messages, as asyncio
    does for every TCP connection).

    autobahn means to do this itself, but its C{connectionMade} reads the
    option before it has copied the options from the factory, and swallows
    the C{AttributeError}: with stock autobahn the option never takes effect
    and Nagle's algorithm stays on.  Off the fast path this runs after
    autobahn's C{connectionMade}; the fast path copies the options before
    it, so autobahn's own call takes effect.  A transport without TCP options (an in-memory
    test transport) is left alone; a socket that refuses the option (a UNIX
    socket) is logged at debug level and left as it is.
    """
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is None:
        return
    try:
        setter(nodelay)
    except OSError as e:
        _log.debug("TCP_NODELAY not set on {transport!r}: {error}", transport=transport, error=e)


_NO_OPTION = object()


def copy_options(protocol: Any, factory: Any) -> None:
    """
    autobahn's copy of its options from the factory to a new connection
    (C{WebSocketProtocol._connectionMade}: an option already set on the
    connection or its class is kept), except that an option of
    C{OPTION_DEFAULTS} whose factory value equals the class attribute is not
    copied: the connection reads the same value from its class.  A server
    connection has about a hundred instance attributes, and CPython's dict
    of 86 to 170 keys takes 3.3 KB where one of up to 85 takes 1.5 KB;
    these options were 25 of them (C{bench/conn_memory_sites.py}).
    """
    cls = type(protocol)
    defaults = _class_defaults(cls)
    own = protocol.__dict__
    for name in cls.CONFIG_ATTRS:
        if name in own:
            continue  # set on this connection: kept
        default = defaults.get(name, _NO_OPTION)
        if default is not _NO_OPTION:
            value = getattr(factory, name)
            # equal immutable values only (a list or a function is copied unless it is the very object)
            if value is default or (type(value) is type(default) and type(value) in _SCALARS and value == default):
                continue
            setattr(protocol, name, value)
        elif not hasattr(protocol, name):  # (a subclass's own class attribute is kept, as by autobahn)
            setattr(protocol, name, getattr(factory, name))


_SCALARS = frozenset({bool, int, float, str, type(None)})
_DEFAULTS_BY_CLASS: WeakKeyDictionary[type, dict[str, object]] = WeakKeyDictionary()


def _class_defaults(cls: type) -> dict[str, object]:
    """
    The C{OPTION_DEFAULTS} that C{cls} reads from the class declaring them: an
    option a subclass sets as its own class attribute (even to the same value)
    is the subclass's, kept as autobahn keeps it.  Worked out once per class.
    """
    found = _DEFAULTS_BY_CLASS.get(cls)
    if found is None:
        found = {}
        for name, value in getattr(cls, "OPTION_DEFAULTS", {}).items():
            for klass in cls.__mro__:
                if name in vars(klass):
                    if "OPTION_DEFAULTS" in vars(klass) and vars(klass)[name] is value:
                        found[name] = value
                    break
        _DEFAULTS_BY_CLASS[cls] = found
    return found


class FastPathMixin:
    """Mix in before autobahn's C{WebSocketServerProtocol}/C{WebSocketClientProtocol}."""

    # Attributes set by autobahn's protocol.
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
    STATE_CLOSED: int
    data: bytes
    current_frame: Any
    inside_message: bool
    _perMessageCompress: Any
    logFrames: bool
    autoPingTimeoutCall: Any
    maxFramePayloadSize: int
    maxMessagePayloadSize: int
    autoFragmentSize: int
    maskServerFrames: bool
    maskClientFrames: bool
    applyMask: bool
    tcpNoDelay: bool
    factory: Any
    core: Any
    CONFIG_ATTRS: Any
    #: per connection: the factory allows it and the autobahn version is tested
    _fast_path = False
    #: "any traffic counts": every chunk received is a sign of life
    count_any_traffic = False
    #: the reactor turn (L{WriteTurns}) of this connection's last write straight to the socket
    _direct_turn = -1
    #: bytes received from and written toward the peer (read by the heartbeat's progress samples)
    bytes_in = 0
    bytes_out = 0

    #: autobahn options (CONFIG_ATTRS) a connection reads from its class while its
    #: factory's value is the same (see L{copy_options}); the class has them as attributes
    OPTION_DEFAULTS: dict[str, object] = {}

    def connectionMade(self) -> None:
        self._fast_path = FAST_PATH_AVAILABLE and bool(getattr(self.factory, "fast_path", True))
        if not self._fast_path:
            # (autobahn's own loop then finds every option set and copies none)
            copy_options(self, self.factory)
            super().connectionMade()  # type: ignore[misc]
            # autobahn read tcpNoDelay before copying it: set it now (see apply_tcp_nodelay).
            apply_tcp_nodelay(self.transport, bool(self.tcpNoDelay))
        else:
            # autobahn copies its options (CONFIG_ATTRS) from the factory to
            # each new connection and logs them at debug level, pretty-printed
            # with pformat even when debug logging is off: a quarter of a hub
            # server's CPU per accepted connection (docs/performance.md,
            # "Accept rate").  The copy is done here, the same way (an option
            # already set on the connection is kept); autobahn's loop then has
            # nothing to copy or print.  With the options copied first,
            # autobahn's own setTcpNoDelay sees tcpNoDelay and sets it.
            copy_options(self, self.factory)
            self.CONFIG_ATTRS = ()
            try:
                super().connectionMade()  # type: ignore[misc]
            finally:
                del self.CONFIG_ATTRS

    def receiving(self) -> tuple[int, bool]:
        """
        Bytes received so far, and whether a message is half received now
        (a frame's header or payload incomplete, or a fragmented message
        unfinished): the peer's large message is still coming in.
        """
        return self.bytes_in, bool(self.data) or self.current_frame is not None or bool(self.inside_message)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.count_any_traffic:
            # Bytes of a large message still arriving are a sign of life too.
            self.core.last_received = self.factory.clock.seconds()
        if self._fast_path:
            # autobahn's dataReceived logs every chunk at debug level, building
            # the arguments even when debug logging is off.
            if self.state == self.STATE_OPEN and not self.data and not self.logOctets:
                # autobahn's _dataReceived and consumeData for an open connection
                # with nothing left over from the last chunk, in one call.
                self.trafficStats.incomingOctetsWireLevel += len(data)
                self.data = data
                while self.processData() and self.state != self.STATE_CLOSED:
                    pass
            else:
                self._dataReceived(data)  # type: ignore[attr-defined]
        else:
            super().dataReceived(data)  # type: ignore[misc]

    def _observed(self) -> bool:
        """Someone listens to autobahn's per-message events or timings: take the stock path."""
        return bool(self._listeners) or bool(self.trackedTimings)

    def processData(self) -> bool:
        # The common frame, handled here: a complete, unfragmented binary
        # message (FIN, RSV 0, opcode 2) of less than 64 KiB, masked exactly
        # when the sender is a client, with no frame logging or autoPing in
        # play.  With permessage-deflate negotiated, an uncompressed message
        # (RSV1 clear: 0x82) still comes here; a compressed one (0xC2) goes
        # to autobahn, which inflates it.  Payloads over NATIVE_MASK_THRESHOLD are unmasked
        # with autobahn's C masker, smaller ones with one big-integer XOR.
        # Everything else (control frames, fragments, text, large or partial
        # frames, anything invalid) goes through autobahn, which also produces
        # every protocol-violation close.
        data = self.data
        if (
            not self._fast_path
            or len(data) < 2
            or data[0] != 0x82
            or self.current_frame is not None
            or self.inside_message
            or self.state != self.STATE_OPEN
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
            payload = apply_mask(mask, payload)
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

    def sendMessage(
        self, payload: bytes, isBinary: bool = False, fragmentSize: int | None = None, sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        # The common message, sent here: one binary message in one frame
        # (autobahn would not fragment it), not to be compressed (no
        # permessage-deflate, or C{doNotCompress}: RSV1 stays clear, as
        # autobahn would send it), no frame logging or timing tracking, masked exactly when autobahn would mask it (a
        # client's frames).  The frame is built in one go: header, a mask from
        # MASKS (os.urandom), the payload masked by apply_mask -- where autobahn
        # creates a masker object per frame and goes through its general
        # sendFrame.  Everything else goes to autobahn.
        length = len(payload)
        if (
            not self._fast_path
            or not isBinary
            or fragmentSize is not None
            or sync
            or type(payload) is not bytes
            or self.state != self.STATE_OPEN
            or (self._perMessageCompress is not None and not doNotCompress)
            or self.logFrames
            or self.trackedTimings
            or 0 < self.autoFragmentSize < length
            or 0 < self.maxMessagePayloadSize < length
        ):
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)  # type: ignore[misc]
            return
        masked = self.maskServerFrames if self.factory.isServer else self.maskClientFrames
        if masked and not self.applyMask:  # a testing option of autobahn: mask bit set, payload left as is
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)  # type: ignore[misc]
            return
        bit = 0x80 if masked else 0
        if length < 126:
            header = bytes((0x82, bit | length))
        elif length < 0x10000:
            header = bytes((0x82, bit | 126, length >> 8, length & 0xFF))
        else:
            header = bytes((0x82, bit | 127)) + length.to_bytes(8, "big")
        if masked:
            mask = MASKS.next()
            frame = header + mask + apply_mask(mask, payload)
        else:
            frame = header + payload
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += length
        stats.outgoingOctetsWebSocketLevel += length
        stats.outgoingWebSocketFrames += 1
        self.sendData(frame)

    # autobahn's queue of synchronous and chopped writes (send_queue), made when
    # autobahn first uses it: nearly every connection never does, and the empty
    # deque autobahn makes for each is 760 bytes (bench/conn_memory_sites.py).
    _send_queue: deque[Any] | None = None

    @property
    def send_queue(self) -> deque[Any]:
        queue = self._send_queue
        if queue is None:
            queue = self._send_queue = deque()
        return queue

    @send_queue.setter
    def send_queue(self, queue: deque[Any]) -> None:
        self._send_queue = queue if queue else None

    # autobahn's incremental UTF-8 validator, used for text messages only (a hub
    # speaks binary): made when a text message first arrives instead of for
    # every connection (its cffi state and wrapper are 220 bytes).
    _utf8validator: Any = None

    @property
    def utf8validator(self) -> Any:
        validator = self._utf8validator
        if validator is None:
            validator = self._utf8validator = Utf8Validator()
        return validator

    @utf8validator.setter
    def utf8validator(self, validator: Any) -> None:
        # autobahn's connectionMade gives each connection a new one: let it go
        self._utf8validator = None

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # autobahn's sendData, minus the debug-log call on the common path.
        self.bytes_out += len(data)
        if chopsize or sync or self._send_queue or not self._fast_path:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        # At most one write per connection and reactor turn goes straight to
        # the socket; the rest of the turn's writes wait in Twisted's buffer
        # and leave together (one send for a burst of broadcasts, not one each).
        factory = self.factory
        turns = factory.__dict__.get("_write_turns")
        if turns is None:
            # hub factories carry the clock they were given; autobahn's, its reactor
            turns = factory._write_turns = WriteTurns(getattr(factory, "clock", None) or factory.reactor)
        turn = turns.current()
        if self._direct_turn != turn:
            self._direct_turn = turn
            write_through(self.transport, data)
        else:
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


class WriteTurns:
    """
    Numbers the reactor turns in which something was written, lazily: the
    first write of a turn schedules one C{callLater(0)} that moves to the next
    number, so idle turns cost nothing.  One per factory (on its clock).
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.turn = 0
        self._next_call: Any = None

    def current(self) -> int:
        if self._next_call is None:
            self._next_call = self.clock.callLater(0, self._advance)
        return self.turn

    def _advance(self) -> None:
        self._next_call = None
        self.turn += 1


#: Twisted releases (major, minor) write_through was checked against: [low, high),
#: from the lower bound in setup.cfg to the newest release tested.
TESTED_TWISTED = ((26, 4), (27, 0))

#: What write_through reads of a Twisted TCP connection (C{tcp.Connection}
#: and its base C{abstract.FileDescriptor}): public ones and, for "nothing
#: buffered, not closing", the private C{_tempDataLen}, C{_writeDisconnecting}
#: and C{_writeDisconnected}.
TCP_ATTRIBUTES = (
    "TLS", "socket", "connected", "disconnecting", "dataBuffer", "_tempDataLen", "_writeDisconnecting",
    "_writeDisconnected",
)


def write_through_supported(version: str) -> bool:
    """True when write_through was checked against this Twisted version."""
    low, high = TESTED_TWISTED
    return low <= version_tuple(version) < high


#: Whether the installed Twisted can take write_through's direct sends at all.
WRITE_THROUGH_AVAILABLE = write_through_supported(str(getattr(twisted, "__version__", "0")))

#: transport class -> whether write_through may send on its instances directly
#: (a TCP connection with every attribute of TCP_ATTRIBUTES); filled on first use.
_DIRECT_CLASSES: dict[type, bool] = {}


def _sends_directly(transport: Any) -> bool:
    """Whether write_through may use this transport's socket: decided once per transport class."""
    cls = type(transport)
    known = _DIRECT_CLASSES.get(cls)
    if known is None:
        known = _DIRECT_CLASSES[cls] = (
            WRITE_THROUGH_AVAILABLE
            and isinstance(transport, _TCPConnection)
            and all(hasattr(transport, name) for name in TCP_ATTRIBUTES)
        )
    return known


def write_through(transport: Any, data: bytes) -> None:
    """
    C{transport.write(data)}, but on a plain TCP connection with nothing
    buffered the bytes go to the socket at once, as asyncio's transports do.

    Twisted's C{write} always buffers: it registers the socket for writing
    (an C{epoll_ctl}), the reactor's next turn sends, and then unregisters it
    (another C{epoll_ctl}), per connection and per write.  With an empty
    buffer the order of bytes cannot change by sending now; whatever the
    socket does not take (a full socket buffer), and every write while
    something is buffered, goes to C{transport.write} as before, so the
    transport's buffer, its producer pauses and C{max_outgoing_buffer} work
    unchanged.  A send that fails (reset, broken pipe) hands the bytes to
    C{transport.write} too: Twisted's own write then meets the same error and
    reports the lost connection as it always does.  Other transports (TLS,
    test transports, behind a proxy protocol, after C{startTLS}) always take
    C{transport.write}.  Measured in docs/performance.md ("What stalled,
    what was slow, what changed").

    "Nothing buffered, not closing" is read from Twisted's TCP connection,
    partly from private attributes (L{TCP_ATTRIBUTES}).  So this is guarded
    like the autobahn fast path: direct sends happen only on the Twisted
    versions it was checked against (L{TESTED_TWISTED}) and only on transport
    classes that have every one of those attributes (checked once per class);
    anywhere else every write is a plain C{transport.write}.
    """
    if (
        _sends_directly(transport)
        and not transport.TLS  # startTLS: bytes must go through the TLS layer
        and not transport.dataBuffer
        and not transport._tempDataLen
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
    ):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0  # the socket takes nothing now: Twisted's buffer waits for it
        except OSError:
            sent = 0  # the connection failed: Twisted's write path meets and reports the error
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


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
    sent = protocol.localCloseCode if protocol.closedByMe else None
    return ended_reason(
        sent, (protocol.localCloseReason or b"").decode("utf-8", "replace"),
        protocol.remoteCloseCode, protocol.remoteCloseReason or "", lost_text or "",
    )


class BoundedDropMixin:
    """
    Ending a connection to a peer we gave up on: our close frame goes out
    first (so the peer can learn why), then TCP is closed once our buffer is
    written, and aborted if that takes more than L{CLOSE_FLUSH_TIMEOUT} (a
    stopped peer reads nothing).  Shared by the server and client protocols.
    """

    transport: Any
    wasClean: bool  # autobahn's
    _abort_call: Any = None

    def drop_after_close(self, clock: Any) -> None:
        """Close TCP after the close frame; abort it if that is not done in time."""
        # autobahn logs a warning ("dropping connection to peer ... abort=False:
        # None") when it drops a connection whose closing handshake did not
        # finish: ours is a decision the session logged already, with its
        # reason.  Seen as clean for that call only, autobahn logs at debug;
        # the flag is back before the connection is lost (never synchronously:
        # loseConnection waits for the reactor), so onClose still sees it unclean.
        was_clean = self.wasClean
        self.wasClean = True
        try:
            self.dropConnection(abort=False)  # type: ignore[attr-defined]
        finally:
            self.wasClean = was_clean
        self.abort_later(clock)

    def abort_later(self, clock: Any) -> None:
        """Abort the connection unless it is gone within L{CLOSE_FLUSH_TIMEOUT} (L{cancel_drop})."""
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
