"""
The autobahn fast path (twisted_hub/_twisted/fastpath.py) receives exactly what
autobahn itself receives: a differential test over random frame streams.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import main, tcp
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import twisted
from twisted_hub._twisted import fastpath as _autobahn
from twisted_hub._twisted.fastpath import FastPathMixin, fast_path_supported

HANDSHAKE = (
    b"GET /hub HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def record_native_masker(case: SynchronousTestCase) -> list[int]:
    """Patch autobahn's C masker to record the length of each payload it masks (skip the test without it)."""
    native = _autobahn.NATIVE_MASKER
    if native is None:
        raise SkipTest("autobahn runs without its native (NVX) masker here")
    used: list[int] = []

    def recording(mask: bytes, length: int) -> Any:
        used.append(length)
        return native(mask, length)

    case.patch(_autobahn, "NATIVE_MASKER", recording)
    return used


class Transport(StringTransport):
    """autobahn unregisters a producer it never registered when it drops a connection."""

    def unregisterProducer(self) -> None:
        self.producer = None


class Recording:
    received: list[tuple[bytes, bool]]
    closes: list[Any]

    def onOpen(self) -> None:
        self.received = []
        self.closes = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append((bytes(payload), isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closes.append(code)


class PlainServer(Recording, WebSocketServerProtocol):  # type: ignore[misc]
    pass


class FastServer(FastPathMixin, Recording, WebSocketServerProtocol):  # type: ignore[misc]
    pass


class PlainClient(Recording, WebSocketClientProtocol):  # type: ignore[misc]
    pass


class FastClient(FastPathMixin, Recording, WebSocketClientProtocol):  # type: ignore[misc]
    pass


def open_server(protocol_class: type, max_size: int) -> tuple[Any, StringTransport]:
    factory = WebSocketServerFactory(reactor=Clock())
    factory.protocol = protocol_class
    factory.setProtocolOptions(
        openHandshakeTimeout=0, closeHandshakeTimeout=0, maxFramePayloadSize=max_size, maxMessagePayloadSize=max_size
    )
    protocol = factory.buildProtocol(None)
    transport = Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    assert protocol.state == protocol.STATE_OPEN
    transport.clear()
    return protocol, transport


def open_client(protocol_class: type, max_size: int) -> tuple[Any, StringTransport]:
    factory = WebSocketClientFactory("ws://127.0.0.1/hub", reactor=Clock())
    factory.protocol = protocol_class
    factory.setProtocolOptions(
        openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0,
        maxFramePayloadSize=max_size, maxMessagePayloadSize=max_size,
    )
    protocol = factory.buildProtocol(None)
    transport = Transport()
    protocol.makeConnection(transport)
    request = transport.value().decode()
    key = [line.split(": ")[1] for line in request.split("\r\n") if line.lower().startswith("sec-websocket-key")][0]
    import base64
    import hashlib

    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    protocol.dataReceived(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    assert protocol.state == protocol.STATE_OPEN
    transport.clear()
    return protocol, transport


def frame(fin: bool, rsv: int, opcode: int, payload: bytes, mask: bytes | None, length_form: str) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    masked = 0x80 if mask is not None else 0
    if length_form == "7" and length < 126:
        header = bytes([first, masked | length])
    elif length < 65536 and length_form in ("7", "16"):
        header = bytes([first, masked | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, masked | 127]) + struct.pack("!Q", length)
    if mask is None:
        return header + payload
    key = (mask * (length // 4 + 1))[:length]
    masked_payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return header + mask + masked_payload


# 60-70 KB payloads (around the 64 KiB edge of the fast path), cheap to generate.
large_payloads = st.builds(
    lambda n, seed: (seed * (n // len(seed) + 1))[:n], st.integers(60_000, 70_000), st.binary(min_size=1, max_size=16)
)

# 1-20 KB payloads: both sides of NATIVE_MASK_THRESHOLD (big-integer XOR below, C masker above).
medium_payloads = st.builds(
    lambda n, seed: (seed * (n // len(seed) + 1))[:n],
    st.integers(_autobahn.NATIVE_MASK_THRESHOLD - 600, 20_000), st.binary(min_size=1, max_size=16),
)

frames = st.builds(
    frame,
    fin=st.booleans() | st.just(True),
    rsv=st.sampled_from([0, 0, 0, 0, 4]),
    opcode=st.sampled_from([2, 2, 2, 2, 1, 0, 9, 10, 8, 3]),
    payload=st.binary(max_size=300) | medium_payloads | large_payloads,
    mask=st.one_of(st.binary(min_size=4, max_size=4), st.none()),
    length_form=st.sampled_from(["7", "7", "7", "16", "64"]),
)


def outgoing_frames(wire: bytes) -> list[tuple[int, bytes]]:
    """(first header byte, unmasked payload) of each frame written; a client's masks are random."""
    found = []
    while len(wire) >= 2:
        length, masked, start = wire[1] & 0x7F, wire[1] & 0x80, 2
        if length == 126:
            length, start = struct.unpack("!H", wire[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack("!Q", wire[2:10])[0], 10
        mask = wire[start : start + 4] if masked else b"\0\0\0\0"
        start += 4 if masked else 0
        key = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(wire[start : start + length], "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
        found.append((wire[0], payload))
        wire = wire[start + length :]
    return found


def feed(protocol: Any, stream: bytes, cuts: list[int]) -> None:
    position = 0
    for cut in sorted(cuts) + [len(stream)]:
        if cut > position:
            protocol.dataReceived(stream[position:cut])
            position = cut


class FastPathDifferentialTests(SynchronousTestCase):
    def check(self, opener: Any, plain: type, fast: type, streams: list[bytes], cuts: list[int], max_size: int) -> None:
        stream = b"".join(streams)
        cuts = [c % (len(stream) + 1) for c in cuts]
        results = []
        for protocol_class in (plain, fast):
            protocol, transport = opener(protocol_class, max_size)
            feed(protocol, stream, cuts)
            wire = outgoing_frames(transport.value())
            stats = protocol.trafficStats
            counters = (
                stats.incomingOctetsWireLevel, stats.incomingOctetsWebSocketLevel, stats.incomingOctetsAppLevel,
                stats.incomingWebSocketFrames, stats.incomingWebSocketMessages,
            )
            results.append((protocol.received, protocol.state, wire, transport.disconnecting, counters))
        self.assertEqual(results[0], results[1])

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.lists(frames, max_size=6), st.lists(st.integers(min_value=0), max_size=6), st.sampled_from([0, 100, 65_536]))
    def test_server_side_matches_autobahn(self, streams: list[bytes], cuts: list[int], max_size: int) -> None:
        """A server with the fast path delivers the same messages, closes and replies as stock autobahn."""
        self.check(open_server, PlainServer, FastServer, streams, cuts, max_size)

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.lists(frames, max_size=6), st.lists(st.integers(min_value=0), max_size=6), st.sampled_from([0, 100, 65_536]))
    def test_client_side_matches_autobahn(self, streams: list[bytes], cuts: list[int], max_size: int) -> None:
        """A client with the fast path delivers the same messages, closes and replies as stock autobahn."""
        self.check(open_client, PlainClient, FastClient, streams, cuts, max_size)

    def test_fast_path_is_taken(self) -> None:
        """A small masked binary frame reaches onMessage without autobahn's frame machinery."""
        protocol, _ = open_server(FastServer, 0)
        calls: list[str] = []
        protocol.onFrameBegin = lambda: calls.append("frame machinery")
        protocol.dataReceived(frame(True, 0, 2, b"hello", os.urandom(4), "7"))
        self.assertEqual((protocol.received, calls), ([(b"hello", True)], []))


    def test_large_frame_unmasked_by_the_native_masker(self) -> None:
        """A 16 KiB frame takes the fast path and is unmasked by autobahn's C masker, a 1 KiB one by the XOR."""
        used = record_native_masker(self)
        protocol, _ = open_server(FastServer, 0)
        calls: list[str] = []
        protocol.onFrameBegin = lambda: calls.append("frame machinery")
        big, small = os.urandom(16384), os.urandom(1024)
        protocol.dataReceived(frame(True, 0, 2, big, os.urandom(4), "16") + frame(True, 0, 2, small, os.urandom(4), "16"))
        self.assertEqual((protocol.received, calls, used), ([(big, True), (small, True)], [], [16384]))


def parse_frames(wire: bytes) -> list[tuple[bytes, bytes | None, bytes]]:
    """(header without the mask, the mask or None, the payload as sent) of each complete frame in C{wire}."""
    found: list[tuple[bytes, bytes | None, bytes]] = []
    while len(wire) >= 2:
        length, start = wire[1] & 0x7F, 2
        if length == 126:
            length, start = struct.unpack("!H", wire[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack("!Q", wire[2:10])[0], 10
        mask = wire[start : start + 4] if wire[1] & 0x80 else None
        body = start + (4 if mask is not None else 0)
        found.append((wire[:start], mask, wire[body : body + length]))
        wire = wire[body + length :]
    return found


#: Messages to send: small, around NATIVE_MASK_THRESHOLD, at every length-encoding edge, over 64 KiB.
send_payloads = (
    st.binary(max_size=300)
    | medium_payloads
    | large_payloads
    | st.builds(lambda n: b"\x5a" * n, st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]))
)

#: How a message is sent, and what the sending protocol is set to: the first
#: takes the send fast path, the others must get autobahn's own sendMessage.
send_modes = st.sampled_from(
    ["plain", "plain", "plain", "text", "fragment", "auto-fragment", "max-size", "timings", "fast-path-off", "log-frames"]
)


def sender(opener: Any, protocol_class: type, mode: str) -> tuple[Any, StringTransport]:
    """An open protocol set up for one of L{send_modes}."""
    protocol, transport = opener(protocol_class, 100_000 if mode == "max-size" else 0)
    if mode == "auto-fragment":
        protocol.autoFragmentSize = 1000
    elif mode == "timings":
        protocol.trackedTimings = _TrackedTimings()
    elif mode == "fast-path-off":
        protocol._fast_path = False
    elif mode == "log-frames":
        protocol.logFrames = True
    return protocol, transport


def send_all(protocol: Any, mode: str, payloads: list[bytes]) -> list[str]:
    """Send every payload as C{mode} says; the outcome of each ("sent" or the exception autobahn raised)."""
    outcomes = []
    for payload in payloads:
        try:
            if mode == "text":
                protocol.sendMessage(payload, isBinary=False)
            elif mode == "fragment":
                protocol.sendMessage(payload, isBinary=True, fragmentSize=500)
            else:
                protocol.sendMessage(payload, isBinary=True)
        except Exception as e:  # autobahn refuses some messages (over its size limit): both must refuse alike
            outcomes.append(type(e).__name__)
        else:
            outcomes.append("sent")
    return outcomes


def digest(data: bytes) -> tuple[int, str]:
    """Length and hash of some bytes: compared instead of the bytes, a failure does not diff 70 KB reprs."""
    return len(data), hashlib.sha256(data).hexdigest()[:16]


def outgoing_counters(protocol: Any) -> tuple[int, ...]:
    stats = protocol.trafficStats
    return (
        stats.outgoingOctetsWireLevel, stats.outgoingOctetsWebSocketLevel, stats.outgoingOctetsAppLevel,
        stats.outgoingWebSocketFrames, stats.outgoingWebSocketMessages,
    )


class FastSendDifferentialTests(SynchronousTestCase):
    """The send fast path writes what autobahn's own sendMessage writes (a client: up to the random mask)."""

    @settings(max_examples=100, deadline=None, database=None)
    @given(st.lists(send_payloads, max_size=5), send_modes)
    def test_server_frames_are_identical(self, payloads: list[bytes], mode: str) -> None:
        """A server with the fast path writes byte for byte what stock autobahn writes, with the same counters."""
        results = []
        for protocol_class in (PlainServer, FastServer):
            protocol, transport = sender(open_server, protocol_class, mode)
            outcomes = send_all(protocol, mode, payloads)
            results.append((outcomes, digest(transport.value()), outgoing_counters(protocol)))
        self.assertEqual(results[0], results[1])

    @settings(max_examples=100, deadline=None, database=None)
    @given(st.lists(send_payloads, max_size=5), send_modes)
    def test_client_frames_parse_alike(self, payloads: list[bytes], mode: str) -> None:
        """
        A client with the fast path writes the frames stock autobahn writes (same
        headers, same payloads once unmasked, only the masks differ), a stock
        autobahn server receives the same messages from both, and the counters agree.
        """
        results = []
        for protocol_class in (PlainClient, FastClient):
            protocol, transport = sender(open_client, protocol_class, mode)
            outcomes = send_all(protocol, mode, payloads)
            wire = transport.value()
            frames = parse_frames(wire)
            self.assertTrue(all(mask is not None for _, mask, _ in frames))  # RFC 6455: every client frame masked
            server, _ = open_server(PlainServer, 0)
            server.dataReceived(wire)
            results.append((
                outcomes, [header for header, _, _ in frames],
                [(first, digest(payload)) for first, payload in outgoing_frames(wire)],
                [(digest(payload), binary) for payload, binary in server.received], server.state,
                outgoing_counters(protocol),
            ))
        self.assertEqual(results[0], results[1])

    def test_fast_send_builds_the_frame_itself(self) -> None:
        """A binary message is sent without autobahn's sendFrame, masked with the next mask of MASKS."""
        masks = _autobahn.MaskSource(pool_size=8)
        pool = bytes(range(1, 9))
        self.patch(_autobahn.os, "urandom", lambda n: pool[:n])
        self.patch(_autobahn, "MASKS", masks)
        protocol, transport = open_client(FastClient, 0)
        calls: list[int] = []
        protocol.sendFrame = lambda *args, **kwargs: calls.append(1)
        protocol.sendMessage(b"hello", isBinary=True)
        protocol.sendMessage(b"world!", isBinary=True)
        frames = parse_frames(transport.value())
        self.assertEqual(calls, [])
        self.assertEqual([(header, mask) for header, mask, _ in frames], [(b"\x82\x85", pool[:4]), (b"\x82\x86", pool[4:8])])
        self.assertEqual(outgoing_frames(transport.value()), [(0x82, b"hello"), (0x82, b"world!")])

    def test_stock_send_when_observed_or_switched_off(self) -> None:
        """Timing tracking, frame logging, fast_path off, text, fragments and compression all get autobahn's sendMessage."""
        setups: dict[str, Any] = {
            "timings": lambda p: setattr(p, "trackedTimings", _TrackedTimings()),
            "log frames": lambda p: setattr(p, "logFrames", True),
            "fast path off": lambda p: setattr(p, "_fast_path", False),
            "auto-fragment": lambda p: setattr(p, "autoFragmentSize", 2),
            "compression": lambda p: setattr(p, "_perMessageCompress", _Compressor()),
        }
        for name, setup in setups.items():
            protocol, _ = open_client(FastClient, 0)
            setup(protocol)
            self.assertTrue(self.sent_by_autobahn(protocol, isBinary=True), name)
        for kwargs in ({"isBinary": False}, {"isBinary": True, "fragmentSize": 2}):
            self.assertTrue(self.sent_by_autobahn(open_client(FastClient, 0)[0], **kwargs), str(kwargs))
        self.assertFalse(self.sent_by_autobahn(open_client(FastClient, 0)[0], isBinary=True))

    @staticmethod
    def sent_by_autobahn(protocol: Any, **kwargs: Any) -> bool:
        """Whether sending one message went through autobahn's sendFrame."""
        frames: list[int] = []
        protocol.sendFrame = lambda *args, **kw: frames.append(1)
        protocol.sendMessage(b"hello", **kwargs)
        return bool(frames)

    def test_large_frames_masked_by_the_native_masker(self) -> None:
        """A 16 KiB client message is masked by autobahn's C masker, a 1 KiB one by the XOR; both arrive intact."""
        used = record_native_masker(self)
        protocol, transport = open_client(FastClient, 0)
        big, small = os.urandom(16384), os.urandom(1024)
        protocol.sendMessage(big, isBinary=True)
        protocol.sendMessage(small, isBinary=True)
        server, _ = open_server(PlainServer, 0)
        server.dataReceived(transport.value())
        received = [(digest(payload), binary) for payload, binary in server.received]
        self.assertEqual((received, used), ([(digest(big), True), (digest(small), True)], [16384]))


class LazyAutobahnStateTests(SynchronousTestCase):
    """autobahn's send queue and UTF-8 validator are made when first used, and work as autobahn's own."""

    def test_utf8_validator_made_for_text_only(self) -> None:
        """No validator after binary messages; a text message gets one: valid text arrives, invalid UTF-8 closes 1007."""
        protocol, transport = open_server(FastServer, 0)
        protocol.failByDrop = False  # a close frame, not a bare drop
        protocol.dataReceived(frame(True, 0, 2, b"\xff binary", b"abcd", "7"))
        self.assertIsNone(protocol._utf8validator)
        protocol.dataReceived(frame(True, 0, 1, "h\u00e9llo".encode(), b"abcd", "7"))
        self.assertIsNotNone(protocol._utf8validator)
        self.assertEqual(protocol.received[-1], ("h\u00e9llo".encode(), False))
        protocol.dataReceived(frame(True, 0, 1, b"bad \xff", b"abcd", "7"))
        self.assertEqual(outgoing_frames(transport.value())[-1][1][:2], struct.pack("!H", 1007))
        self.assertEqual(len(protocol.received), 2)

    def test_sync_and_chopped_writes_as_stock_autobahn(self) -> None:
        """Plain, synchronous and chopped writes, mixed, leave in the same order and bytes as from stock autobahn."""
        import txaio

        outputs = []
        for protocol_class in (PlainServer, FastServer):
            protocol, transport = open_server(protocol_class, 0)
            clock = Clock()
            self.patch(txaio, "call_later", clock.callLater)  # autobahn's queued writes wait on it
            protocol.sendData(b"a" * 10)
            protocol.sendData(b"b" * 10, sync=True)
            protocol.sendData(b"c" * 10)
            protocol.sendData(b"d" * 25, chopsize=7)
            protocol.sendData(b"e" * 3)
            for _ in range(50):
                clock.advance(1)
            outputs.append(transport.value())
        self.assertEqual(outputs[0], outputs[1])
        self.assertEqual(outputs[1], b"a" * 10 + b"b" * 10 + b"c" * 10 + b"d" * 25 + b"e" * 3)

    def test_no_queue_until_needed(self) -> None:
        """A fast-path connection has no send queue after its handshake and plain writes; a synchronous write makes one."""
        protocol, _ = open_server(FastServer, 0)
        protocol.sendData(b"plain")
        self.assertIsNone(protocol._send_queue)
        protocol.sendData(b"sync", sync=True)
        self.assertIsNotNone(protocol._send_queue)
        protocol.send_queue = type(protocol.send_queue)()  # an empty queue assigned (autobahn's connectionMade) is dropped
        self.assertIsNone(protocol._send_queue)


class ConnectionOptionsTests(SynchronousTestCase):
    """A new connection gets autobahn's options from its factory without autobahn pretty-printing them."""

    def options(self, protocol: Any) -> dict[str, Any]:
        return {name: getattr(protocol, name) for name in type(protocol).CONFIG_ATTRS}

    def test_options_copied_as_autobahn_copies_them(self) -> None:
        """Server and client connections end up with the same option values as stock autobahn's, and nothing else changes."""
        for opener, plain, fast in ((open_server, PlainServer, FastServer), (open_client, PlainClient, FastClient)):
            stock, ours = opener(plain, 100)[0], opener(fast, 100)[0]
            for protocol in (stock, ours):  # each has its factory's value of every option
                factory_options = {name: getattr(protocol.factory, name) for name in type(protocol).CONFIG_ATTRS}
                self.assertEqual(self.options(protocol), factory_options)
            self.assertEqual(ours.maxMessagePayloadSize, 100)
            self.assertEqual(type(ours).CONFIG_ATTRS, type(stock).CONFIG_ATTRS)
            self.assertNotIn("CONFIG_ATTRS", vars(ours))  # the per-connection override is gone again

    def test_option_set_on_the_connection_is_kept(self) -> None:
        """An option set on the connection before it opens wins over the factory's, as in autobahn."""
        factory = WebSocketServerFactory(reactor=Clock())
        factory.protocol = FastServer
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, maxFramePayloadSize=100)
        protocol = factory.buildProtocol(None)
        protocol.maxFramePayloadSize = 7
        protocol.makeConnection(Transport())
        self.assertEqual(protocol.maxFramePayloadSize, 7)

    def test_hub_connections_read_the_factory_defaults_from_their_class(self) -> None:
        """
        A hub server connection keeps no copy of an option whose factory value
        is the class's default, copies one that differs, and either way reads
        its factory's value of every option; with fast_path off too.
        """
        from twisted_hub import Hub, HubServerFactory
        from twisted_hub.types import HubServerProtocol

        class Small(Hub):
            hub_name = "small"

        for fast in (True, False):
            factory = HubServerFactory([Small], clock=Clock(), max_message_size=100)
            factory.fast_path = fast
            protocol = factory.buildProtocol(None)
            protocol.makeConnection(Transport())
            self.assertEqual(self.options(protocol), {name: getattr(factory, name) for name in factory.protocol.CONFIG_ATTRS})
            copied = set(vars(protocol)) & set(HubServerProtocol.CONFIG_ATTRS)
            # the two sizes differ from the default factory's; the three per-factory objects are never equal
            self.assertEqual(copied, {"maxFramePayloadSize", "maxMessagePayloadSize", "perMessageCompressionAccept",
                                      "allowedOrigins", "allowedOriginsPatterns", "flashSocketPolicy"})
            self.assertEqual(protocol.maxMessagePayloadSize, 100)

    def test_a_subclass_option_wins_over_the_hub_default(self) -> None:
        """A subclass that sets an option as a class attribute keeps it (even at the hub's default value), as in autobahn."""
        from twisted_hub import Hub, HubServerFactory
        from twisted_hub.types import HubServerProtocol

        class Small(Hub):
            hub_name = "small"

        class Chatty(HubServerProtocol):
            autoFragmentSize = 512
            failByDrop = False  # the hub's default too, but the subclass's own

        factory = HubServerFactory([Small], clock=Clock())
        factory.setProtocolOptions(failByDrop=True)
        factory.protocol = Chatty
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(Transport())
        self.assertEqual((protocol.autoFragmentSize, factory.autoFragmentSize), (512, 0))
        self.assertEqual((protocol.failByDrop, factory.failByDrop), (False, True))
        self.assertNotIn("autoFragmentSize", vars(protocol))
        self.assertNotIn("failByDrop", vars(protocol))

    def test_options_not_pretty_printed(self) -> None:
        """autobahn's debug log of every option (pformat per connection) gets nothing to format; with fast_path off it does."""
        import autobahn.websocket.protocol as autobahn_protocol

        formatted: list[Any] = []
        self.patch(autobahn_protocol, "pformat", lambda value: formatted.append(value) or "")
        open_server(FastServer, 0)
        self.assertEqual(formatted, [[]])
        formatted.clear()
        self.patch(_autobahn, "FAST_PATH_AVAILABLE", False)
        open_server(FastServer, 0)
        self.assertEqual(len(formatted[0]), len(FastServer.CONFIG_ATTRS))


class MaskSourceTests(SynchronousTestCase):
    """Client frame masks come from os.urandom, a pool at a time, never reused."""

    def test_masks_are_consecutive_urandom_bytes(self) -> None:
        """Each mask is the next 4 bytes of os.urandom output; a new pool is read only when one is used up."""
        reads: list[int] = []
        counter = iter(range(1_000_000))

        def urandom(n: int) -> bytes:
            reads.append(n)
            return bytes(next(counter) % 256 for _ in range(n))

        self.patch(_autobahn.os, "urandom", urandom)
        masks = _autobahn.MaskSource(pool_size=12)
        drawn = [masks.next() for _ in range(7)]
        self.assertEqual(drawn, [bytes(range(i * 4, i * 4 + 4)) for i in range(7)])
        self.assertEqual(reads, [12, 12, 12])

    def test_discard_forgets_the_pool(self) -> None:
        """After discard (done in a forked child) the next mask comes from a new os.urandom read."""
        reads: list[int] = []
        self.patch(_autobahn.os, "urandom", lambda n: (reads.append(n), b"\x01" * n)[1])
        masks = _autobahn.MaskSource(pool_size=16)
        masks.next()
        masks.discard()
        masks.next()
        self.assertEqual(reads, [16, 16])

    def test_forked_child_draws_other_masks(self) -> None:
        """A child process forked mid-pool does not send the masks its parent will send."""
        _autobahn.MASKS.next()  # a pool is in use
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.write(write_end, b"".join(_autobahn.MASKS.next() for _ in range(8)))
            finally:
                os._exit(0)
        os.close(write_end)
        child = b""
        while len(child) < 32:
            chunk = os.read(read_end, 32)
            if not chunk:
                break
            child += chunk
        os.close(read_end)
        os.waitpid(pid, 0)
        parent = b"".join(_autobahn.MASKS.next() for _ in range(8))
        self.assertEqual(len(child), 32)
        self.assertNotEqual(child, parent)


class _Compressor:
    """Stands in for a negotiated permessage-deflate (only its presence is looked at before falling back)."""

    def start_compress_message(self) -> None:
        pass

    def compress_message_data(self, data: bytes) -> bytes:
        return data

    def end_compress_message(self) -> bytes:
        return b""


class FastPathGuardTests(SynchronousTestCase):
    """The fast path steps aside whenever its shortcuts could be observed or are untested."""

    def taken(self, protocol: Any) -> bool:
        calls: list[str] = []
        protocol.onFrameBegin = lambda: (calls.append("frame machinery"), type(protocol).onFrameBegin(protocol))[1]
        protocol.dataReceived(frame(True, 0, 2, b"hello", os.urandom(4), "7"))
        self.assertEqual(protocol.received, [(b"hello", True)])
        return not calls

    def test_message_observer_gets_stock_behaviour(self) -> None:
        """With a "message" observer registered, frames take autobahn's path and the observer fires."""
        protocol, _ = open_server(FastServer, 0)
        heard: list[Any] = []
        protocol.on("message", lambda *args, **kwargs: heard.append(args))
        self.assertFalse(self.taken(protocol))
        self.assertEqual(len(heard), 1)

    def test_timing_tracking_gets_stock_behaviour(self) -> None:
        """With autobahn's timing tracking on, frames take autobahn's path."""
        protocol, _ = open_server(FastServer, 0)
        protocol.trackedTimings = protocol.trackedTimings or _TrackedTimings()
        self.assertFalse(self.taken(protocol))

    def test_factory_switch_turns_it_off(self) -> None:
        """A factory with fast_path = False gets stock autobahn on every frame."""
        self.assertTrue(self.taken(open_server(FastServer, 0)[0]))
        original = WebSocketServerFactory.fast_path if hasattr(WebSocketServerFactory, "fast_path") else None
        WebSocketServerFactory.fast_path = False  # type: ignore[attr-defined]
        try:
            self.assertFalse(self.taken(open_server(FastServer, 0)[0]))
        finally:
            if original is None:
                del WebSocketServerFactory.fast_path  # type: ignore[attr-defined]
            else:
                WebSocketServerFactory.fast_path = original  # type: ignore[attr-defined]

    def test_untested_autobahn_gets_stock_behaviour(self) -> None:
        """Outside the tested autobahn range the fast path is never taken."""
        self.assertTrue(fast_path_supported("26.10.2"))
        self.assertTrue(fast_path_supported("26.10.1"))
        self.assertFalse(fast_path_supported("26.7.1"))
        self.assertFalse(fast_path_supported("24.4.2"))
        self.assertFalse(fast_path_supported("27.1.0"))
        self.patch(_autobahn, "FAST_PATH_AVAILABLE", False)
        self.assertFalse(self.taken(open_server(FastServer, 0)[0]))

    def test_hub_factories_carry_the_switch(self) -> None:
        """HubServerFactory and HubClientFactory expose fast_path, on by default."""
        from twisted_hub import HubServerFactory
        from twisted_hub.types import HubClientFactory

        self.assertEqual((HubServerFactory.fast_path, HubClientFactory.fast_path), (True, True))


class _TrackedTimings:
    """A stand-in for autobahn's Timings object (only its truthiness and track() are used)."""

    def track(self, key: str) -> None:
        pass


class _Reactor:
    """The part of a reactor a TCP connection uses to (un)register for writing."""

    def __init__(self) -> None:
        self.writers: list[Any] = []

    def addWriter(self, writer: Any) -> None:
        if writer not in self.writers:
            self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        if writer in self.writers:
            self.writers.remove(writer)

    def addReader(self, reader: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass


class WriteThroughTests(SynchronousTestCase):
    """write_through sends at once only when that cannot reorder bytes; otherwise Twisted buffers as before."""

    def connection(self, sndbuf: int | None = None) -> tuple[Any, socket.socket, _Reactor]:
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        peer.setblocking(False)
        if sndbuf is not None:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.addCleanup(ours.close)
        self.addCleanup(peer.close)
        reactor = _Reactor()
        transport = tcp.Connection(ours, Protocol(), reactor=reactor)
        transport.connected = True
        return transport, peer, reactor

    def read_all(self, transport: Any, peer: socket.socket, reactor: _Reactor) -> bytes:
        received = b""
        for _ in range(10_000):
            try:
                chunk = peer.recv(1 << 20)
            except BlockingIOError:
                chunk = b""
            received += chunk
            if reactor.writers:
                transport.doWrite()
            elif not chunk:
                return received
        raise AssertionError("the transport never finished writing")

    def test_empty_buffer_sends_at_once(self) -> None:
        """With nothing buffered the bytes reach the socket during the call; the socket is never registered for writing."""
        transport, peer, reactor = self.connection()
        _autobahn.write_through(transport, b"hello")
        self.assertEqual((peer.recv(100), reactor.writers, transport._tempDataLen), (b"hello", [], 0))

    def test_full_socket_leaves_the_rest_to_twisted_in_order(self) -> None:
        """What the socket does not take is buffered by Twisted, and later writes queue behind it: nothing is reordered."""
        transport, peer, reactor = self.connection(sndbuf=4096)
        first, second, third = os.urandom(300_000), b"second", os.urandom(5000)
        _autobahn.write_through(transport, first)
        self.assertEqual(reactor.writers, [transport])  # the rest waits in Twisted's buffer
        self.assertGreater(transport._tempDataLen, 0)
        _autobahn.write_through(transport, second)
        _autobahn.write_through(transport, third)
        self.assertEqual(self.read_all(transport, peer, reactor), first + second + third)

    def test_disconnecting_transport_takes_twisted_path(self) -> None:
        """After loseConnection the bytes go to transport.write (which decides), never straight to the socket."""
        transport, peer, reactor = self.connection()
        written: list[bytes] = []
        transport.write = written.append
        transport.disconnecting = True
        _autobahn.write_through(transport, b"late")
        self.assertEqual(written, [b"late"])
        self.assertRaises(BlockingIOError, peer.recv, 100)

    def test_failed_send_is_reported_by_twisted(self) -> None:
        """A send that fails (peer gone) hands the bytes to Twisted, whose write reports the lost connection."""
        transport, peer, reactor = self.connection()
        peer.close()
        _autobahn.write_through(transport, b"into the void")
        self.assertEqual(reactor.writers, [transport])
        self.assertIs(transport.doWrite(), main.CONNECTION_LOST)

    def buffered_by_twisted(self, transport: Any, peer: socket.socket, reactor: _Reactor) -> None:
        """write_through left the bytes to Twisted: nothing reached the socket, it is registered for writing."""
        _autobahn.write_through(transport, b"hello")
        self.assertRaises(BlockingIOError, peer.recv, 100)
        self.assertEqual(reactor.writers, [transport])
        transport.doWrite()
        self.assertEqual(peer.recv(100), b"hello")

    def test_untested_twisted_takes_plain_write(self) -> None:
        """Outside the tested Twisted range every write is a plain transport.write, even on a TCP connection."""
        self.assertTrue(_autobahn.write_through_supported("26.4.0"))
        self.assertTrue(_autobahn.write_through_supported("26.10.0"))
        self.assertFalse(_autobahn.write_through_supported("25.5.0"))
        self.assertFalse(_autobahn.write_through_supported("27.1.0"))
        self.assertEqual(_autobahn.WRITE_THROUGH_AVAILABLE, _autobahn.write_through_supported(twisted.__version__))
        self.patch(_autobahn, "WRITE_THROUGH_AVAILABLE", False)
        self.patch(_autobahn, "_DIRECT_CLASSES", {})
        self.buffered_by_twisted(*self.connection())

    def test_connection_without_an_expected_attribute_takes_plain_write(self) -> None:
        """A TCP connection class lacking one of the attributes write_through reads gets transport.write."""
        self.patch(_autobahn, "TCP_ATTRIBUTES", (*_autobahn.TCP_ATTRIBUTES, "_attribute_twisted_does_not_have"))
        self.patch(_autobahn, "_DIRECT_CLASSES", {})
        self.buffered_by_twisted(*self.connection())

    def test_tested_twisted_has_every_attribute(self) -> None:
        """On the installed (tested) Twisted, a TCP connection has everything write_through reads: it sends directly."""
        transport, _, _ = self.connection()
        self.patch(_autobahn, "_DIRECT_CLASSES", {})
        self.assertTrue(_autobahn._sends_directly(transport))
        self.assertFalse(_autobahn._sends_directly(StringTransport()))

    def test_other_transports_use_write(self) -> None:
        """A transport that is not a plain TCP connection (TLS, test transports) always gets transport.write."""
        transport = StringTransport()
        _autobahn.write_through(transport, b"data")
        self.assertEqual(transport.value(), b"data")

    def test_one_direct_write_per_connection_and_turn(self) -> None:
        """In one reactor turn only the first write goes to the socket; later ones leave together from Twisted's buffer."""
        protocol, _ = open_server(FastServer, 0)
        transport, peer, reactor = self.connection()
        protocol.transport = transport
        clock = protocol.factory.reactor
        clock.advance(0)  # a turn after the one that wrote the handshake answer
        protocol.sendData(b"first")
        protocol.sendData(b"second")
        protocol.sendData(b"third")
        self.assertEqual((peer.recv(100), reactor.writers), (b"first", [transport]))
        transport.doWrite()  # the next turn: Twisted writes what waited, in one send
        self.assertEqual(peer.recv(100), b"secondthird")
        clock.advance(0)
        protocol.sendData(b"fourth")  # a new turn: straight to the socket again
        self.assertEqual((peer.recv(100), reactor.writers), (b"fourth", []))
