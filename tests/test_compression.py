"""
permessage-deflate (CompressionPolicy): the settings, the negotiation both
ways, the size threshold and uncompressed heartbeats seen on the wire by a
raw client, round trips through real sockets with every client kind that
can compress (Twisted, asyncio, the JavaScript client in Node), the zlib
state released without context takeover, and a zip bomb refused with 1009
without being inflated.  Real sockets on 127.0.0.1 only; every wait bounded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_twisted
from autobahn.websocket.compress import PerMessageDeflateOffer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import (
    CompressionPolicy,
    HandshakeError,
    HeartbeatPolicy,
    HubArgumentError,
    HubClientOptions,
    HubServerFactory,
    connect,
)
from twisted_hub._compression import (
    HubDeflate,
    check_autobahn_bounds_inflation,
    server_accept,
)
from twisted_hub._wire import MessageKind
from twisted_hub.demo import DEMO_HUBS
from twisted_hub.tap import Options, makeService
from twisted_hub.types import HubClientFactory, HubServerProtocol

WAIT = 10.0
#: compresses to a fraction of its size (repeated words, as chat text does)
TEXT_PHRASE, TEXT_TIMES = "the quick brown fox jumps over the lazy dog, lorem ipsum dolor sit amet", 400
TEXT = " ".join([TEXT_PHRASE] * TEXT_TIMES)


def bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


# -- settings ----------------------------------------------------------------------
class PolicyTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """The defaults: from 1 KiB, window bits 12 both ways, memLevel 5, level 1, no context takeover."""
        policy = CompressionPolicy()
        self.assertEqual(
            (policy.min_size, policy.server_max_window_bits, policy.client_max_window_bits, policy.mem_level,
             policy.level, policy.context_takeover),
            (1024, 12, 12, 5, 1, False),
        )

    def test_bad_values_are_refused(self) -> None:
        """Each setting out of range (or of the wrong type) raises HubArgumentError naming it."""
        for settings, name in [
            ({"min_size": 63}, "min_size"), ({"min_size": 1.5}, "min_size"), ({"min_size": True}, "min_size"),
            ({"server_max_window_bits": 8}, "server_max_window_bits"),
            ({"client_max_window_bits": 16}, "client_max_window_bits"),
            ({"mem_level": 0}, "mem_level"), ({"mem_level": 10}, "mem_level"), ({"level": 10}, "level"),
            ({"context_takeover": 1}, "context_takeover"),
        ]:
            with self.assertRaises(HubArgumentError) as caught:
                CompressionPolicy(**settings)
            self.assertIn(name, str(caught.exception))

    def test_factory_and_options_take_only_a_policy(self) -> None:
        """compression=True (not a policy) is refused by the server factory and the client options."""
        with self.assertRaises(HubArgumentError):
            HubServerFactory(DEMO_HUBS, compression=True)  # type: ignore[arg-type]
        with self.assertRaises(HubArgumentError):
            HubClientOptions(compression=True)  # type: ignore[arg-type]

    def test_autobahn_without_bounded_inflation_is_refused(self) -> None:
        """Compression needs autobahn >= 26.10, which bounds inflation: older versions get a clear error."""
        with self.assertRaises(HubArgumentError) as caught:
            check_autobahn_bounds_inflation("26.7.1")
        self.assertIn("autobahn >= 26.10", str(caught.exception))
        check_autobahn_bounds_inflation("26.10.1")
        check_autobahn_bounds_inflation("27.0")


class ServerAcceptTests(SynchronousTestCase):
    def offer(self, **params: Any) -> PerMessageDeflateOffer:
        return PerMessageDeflateOffer.parse({name: [value] for name, value in params.items()})

    def test_browser_offer(self) -> None:
        """A browser's offer (client_max_window_bits, no value): the client is asked for 12 bits, the server uses 12."""
        accept = server_accept(CompressionPolicy(), 1 << 20)([self.offer(client_max_window_bits=True)])
        assert accept is not None
        self.assertEqual(
            accept.get_extension_string(), "permessage-deflate; client_no_context_takeover; client_max_window_bits=12"
        )
        self.assertEqual(accept.window_bits, 12)

    def test_client_asks_for_a_smaller_server_window(self) -> None:
        """A client asking for server_max_window_bits=10 gets it: the server compresses with 10 bits."""
        accept = server_accept(CompressionPolicy(), 1 << 20)([self.offer(server_max_window_bits="10")])
        assert accept is not None
        self.assertEqual(accept.window_bits, 10)
        self.assertIn("server_max_window_bits=10", accept.get_extension_string())

    def test_no_context_takeover_is_asked_of_the_client_and_kept_by_the_server(self) -> None:
        """Without context takeover (the default) the client is asked for client_no_context_takeover; the server drops its own."""
        accept = server_accept(CompressionPolicy(), 1 << 20)([self.offer()])
        assert accept is not None
        self.assertIn("client_no_context_takeover", accept.get_extension_string())
        self.assertTrue(accept.no_context_takeover)

    def test_context_takeover_on_request(self) -> None:
        """context_takeover=True: nothing asked of the client, the server keeps its context unless the client asks."""
        policy = CompressionPolicy(context_takeover=True)
        accept = server_accept(policy, 1 << 20)([self.offer()])
        assert accept is not None
        self.assertNotIn("no_context_takeover", accept.get_extension_string())
        self.assertFalse(accept.no_context_takeover)
        accept = server_accept(policy, 1 << 20)([self.offer(server_no_context_takeover=True)])
        assert accept is not None
        self.assertTrue(accept.no_context_takeover)

    def test_no_deflate_offer(self) -> None:
        """No permessage-deflate offer among the offers: declined (None), the connection opens uncompressed."""
        self.assertIsNone(server_accept(CompressionPolicy(), 1 << 20)([]))
        self.assertIsNone(server_accept(CompressionPolicy(), 1 << 20)([object()]))


class TwistdOptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_off_by_default(self) -> None:
        """Without --compression the factory twistd builds compresses nothing."""
        options = self.parse()
        self.assertIsNone(options["compression-policy"])
        [service] = list(makeService(options))  # type: ignore[call-overload]
        self.assertIsNone(service.factory.compression)

    def test_on_with_settings(self) -> None:
        """--compression --compression-min-size 2KiB --compression-window-bits 10 reach the factory's policy."""
        options = self.parse("--compression", "--compression-min-size", "2KiB", "--compression-window-bits", "10")
        [service] = list(makeService(options))  # type: ignore[call-overload]
        self.assertEqual(
            service.factory.compression,
            CompressionPolicy(min_size=2048, server_max_window_bits=10, client_max_window_bits=10),
        )

    def test_toml(self) -> None:
        """The TOML file takes the same names: compression = true, compression-min-size = 4096."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = Path(directory) / "hub.toml"
        path.write_text("compression = true\ncompression-min-size = 4096\n")
        options = self.parse("--config", str(path))
        self.assertEqual(options["compression-policy"], CompressionPolicy(min_size=4096))

    def test_old_autobahn(self) -> None:
        """With an autobahn older than 26.10, --compression is a usage error, and the factory and client refuse it."""
        import autobahn

        self.patch(autobahn, "__version__", "26.7.1")
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--compression")
        self.assertIn("--compression: compression needs autobahn >= 26.10", str(caught.exception))
        self.parse()  # without compression, any tested autobahn does
        with self.assertRaises(HubArgumentError):
            HubServerFactory(DEMO_HUBS, compression=CompressionPolicy())
        with self.assertRaises(HubArgumentError):
            HubClientFactory("ws://127.0.0.1:1/hub", options=HubClientOptions(compression=CompressionPolicy()))

    def test_errors(self) -> None:
        """Settings without --compression, window bits out of range, a tiny min size: usage errors naming the option."""
        for argv, text in [
            (["--compression-min-size", "2048"], "--compression-min-size needs --compression"),
            (["--compression-window-bits", "10"], "--compression-window-bits needs --compression"),
            (["--compression", "--compression-window-bits", "8"], "server_max_window_bits"),
            (["--compression", "--compression-window-bits", "ten"], "window bits"),
            (["--compression", "--compression-min-size", "10"], "min_size"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*argv)
            self.assertIn(text, str(caught.exception))


# -- a raw client: the bytes on the wire ---------------------------------------------
class Frame:
    def __init__(self, fin: bool, rsv1: bool, opcode: int, payload: bytes) -> None:
        self.fin, self.rsv1, self.opcode, self.payload = fin, rsv1, opcode, payload


def masked(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """One final, masked client frame; RSV1 marks a compressed message."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    key = (mask * (length // 4 + 1))[:length]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big") if length else b""
    return header + mask + body


def deflate(data: bytes, bits: int = 12) -> bytes:
    """One message compressed as permessage-deflate does (raw deflate, sync flush, the 4-byte tail cut)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, unmasked payload) of each complete client frame in C{data} (payloads under 64 KiB)."""
    frames = []
    while len(data) >= 6:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = struct.unpack("!H", data[2:4])[0], 4
        mask, body = data[start : start + 4], data[start + 4 : start + 4 + length]
        frames.append((data[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(body))))
        data = data[start + 4 + length :]
    return frames


class RawClient(Protocol):
    """A WebSocket client written out by hand: it shows every frame's RSV1 bit."""

    def __init__(self, extensions: str | None) -> None:
        self.extensions = extensions
        self.buffer = b""
        self.headers: dict[str, str] | None = None
        self.frames: list[Frame] = []
        self.inflater = zlib.decompressobj(-15)  # context takeover: one inflater for the connection
        self.waiters: list[tuple[Any, Deferred[Frame]]] = []
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /hub/echo HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: twisted-hub.v1",
        ]
        if self.extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {self.extensions}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.headers is None:
            if b"\r\n\r\n" not in self.buffer:
                return
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status, *fields = head.decode().split("\r\n")
            assert " 101 " in status, status
            self.headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
            self.send_message(msgpack.packb([MessageKind.HELLO, {"caps": ["heartbeat"]}]))
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            length, start = second & 0x7F, 2
            if length == 126:
                length, start = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif length == 127:
                length, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < start + length:
                return
            frame = Frame(bool(first & 0x80), bool(first & 0x40), first & 0x0F, self.buffer[start : start + length])
            self.buffer = self.buffer[start + length :]
            for test, waiter in self.waiters:
                if test(frame):
                    self.waiters.remove((test, waiter))
                    waiter.callback(frame)
                    break
            else:
                self.frames.append(frame)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def send_message(self, payload: bytes, compressed: bool = False) -> None:
        self.transport.write(masked(0x2, payload, rsv1=compressed))  # type: ignore[union-attr]

    def messages(self, frame: Frame) -> list[Any]:
        """The hub messages of a binary frame, inflated when RSV1 says so (in arrival order: context takeover)."""
        payload = self.inflater.decompress(frame.payload + b"\x00\x00\xff\xff") if frame.rsv1 else frame.payload
        return _unpack(payload)

    def wait(self, test: Any) -> Deferred[Frame]:
        """The first frame (received or to come) that passes C{test}, taken out of L{frames}; bounded."""
        waiting: Deferred[Frame] = Deferred()
        for frame in self.frames:
            if test(frame):
                self.frames.remove(frame)
                waiting.callback(frame)
                return waiting
        self.waiters.append((test, waiting))
        return bounded(waiting)


def _unpack(payload: bytes) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload)
    return list(unpacker)


class Listening:
    """A HubServerFactory on an ephemeral 127.0.0.1 port; its connections' protocols are kept."""

    def __init__(self, **options: Any) -> None:
        from twisted.internet import reactor

        self.protocols: list[HubServerProtocol] = []
        #: (compressed, payload length) of each data frame received, in order (with fast_path off:
        #: every frame then goes through autobahn's frame parser)
        self.received: list[tuple[bool, int]] = []
        outer = self

        class Recording(HubServerProtocol):
            def connectionMade(self) -> None:
                outer.protocols.append(self)
                super().connectionMade()

            def onFrameBegin(self) -> None:
                frame = self.current_frame
                if frame.opcode in (1, 2):
                    outer.received.append((frame.rsv == 4, frame.length))
                super().onFrameBegin()

        self.factory = HubServerFactory(DEMO_HUBS, **options)
        self.factory.protocol = Recording
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.port.getHost().port}/hub"

    async def raw(self, extensions: str | None) -> RawClient:
        from twisted.internet import reactor

        client = RawClient(extensions)
        factory = ClientFactory.forProtocol(lambda: client)
        reactor.connectTCP("127.0.0.1", self.port.getHost().port, factory)
        welcome = await client.wait(lambda f: f.opcode == 2 and _unpack(f.payload)[0][0] == MessageKind.WELCOME)
        assert welcome is not None
        return client

    async def close(self) -> None:
        self.factory.close_all()
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        await bounded(self.port.stopListening())


def is_result(call_id: int) -> Any:
    def test(frame: Frame) -> bool:
        if frame.opcode != 2:
            return False
        if frame.rsv1:
            return True  # the only compressed frames in these tests are results
        return any(m[0] == MessageKind.RESULT and m[1] == call_id for m in _unpack(frame.payload))

    return test


async def echo(client: RawClient, call_id: int, value: Any, compress: bool = False) -> tuple[Frame, Any]:
    """Call echo(value) over the raw client; the result frame and the value it carried."""
    payload = msgpack.packb([MessageKind.INVOKE, call_id, "echo", [value]])
    client.send_message(deflate(payload) if compress else payload, compressed=compress)
    frame = await client.wait(is_result(call_id))
    [result] = [m for m in client.messages(frame) if m[0] == MessageKind.RESULT]
    assert result[1] == call_id
    return frame, result[2]


@pytest_twisted.ensureDeferred
async def test_threshold_and_heartbeats_on_the_wire() -> None:
    """Negotiated: results below min_size and every heartbeat (even past min_size) go with RSV1 clear; larger ones compressed."""
    metadata = b"m" * 3000  # a heartbeat far over min_size: still never compressed
    server = Listening(
        compression=CompressionPolicy(min_size=200, context_takeover=True),
        heartbeat=HeartbeatPolicy(enabled=True, interval=0.05, timeout=None, metadata_provider=lambda: metadata),
    )
    try:
        client = await server.raw("permessage-deflate; client_max_window_bits")
        assert client.headers is not None
        assert client.headers["sec-websocket-extensions"] == "permessage-deflate; client_max_window_bits=12"
        # (with context takeover: nothing asked of the client, so the raw client's one inflater is right)
        beats = [await client.wait(lambda f: f.opcode == 2 and f.payload[1:2] == b"\x09") for _ in range(3)]
        assert [b.rsv1 for b in beats] == [False, False, False]
        assert all(_unpack(b.payload)[0][3] == metadata for b in beats)
        # RESULT [4, id, str of n] is n + 5 bytes (array, kind, id, str8 header): 194 characters make 199 bytes.
        frame, value = await echo(client, 1, "x" * 194)
        assert (len(frame.payload), frame.rsv1, value) == (199, False, "x" * 194)
        frame, value = await echo(client, 2, "x" * 195)
        assert frame.rsv1 and len(frame.payload) < 100 and value == "x" * 195
        # context takeover: the second large result inflates with the first one's window
        for call_id in (3, 4):
            frame, value = await echo(client, call_id, TEXT)
            assert frame.rsv1 and len(frame.payload) < len(TEXT) // 10 and value == TEXT
        # a compressed call from the client is inflated by the server
        frame, value = await echo(client, 5, TEXT, compress=True)
        assert value == TEXT
        [protocol] = server.protocols
        assert protocol.compressed
    finally:
        await server.close()


#: INVOKE [2, id, "echo", [str of n]] is n + 11 bytes (array, kind, id, "echo", array, str8 header)
SMALL_CALL, LARGE_CALL = "y" * 188, "y" * 189  # 199 and 200 bytes


def check_client_frames(received: list[tuple[bool, int]]) -> None:
    """A client with min_size=200 sent only the 200-byte call and TEXT compressed; its hello, heartbeats and 199 bytes plain."""
    compressed = [length for was_compressed, length in received if was_compressed]
    plain = [length for was_compressed, length in received if not was_compressed]
    assert len(compressed) == 2 and compressed[0] < 100 and compressed[1] < len(TEXT) / 5, received
    assert 199 in plain, received
    assert len([length for length in plain if length < 30]) >= 2, received  # heartbeats (the hello is longer)


@pytest_twisted.ensureDeferred
async def test_twisted_client_threshold_and_heartbeats_on_the_wire() -> None:
    """The Twisted client sends its heartbeats and frames under min_size with RSV1 clear, larger ones compressed."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    server = Listening(compression=CompressionPolicy())
    server.factory.fast_path = False
    try:
        options = HubClientOptions(
            compression=CompressionPolicy(min_size=200), heartbeat=HeartbeatPolicy(enabled=True, interval=0.05)
        )
        client = await bounded(connect(server.url, "echo", options=options, clock=reactor, timeout=WAIT))
        for value in (SMALL_CALL, LARGE_CALL, TEXT):
            assert await bounded(client.call("echo", value)) == value
        await deferLater(reactor, 0.2, lambda: None)  # a few heartbeats
        check_client_frames(server.received)
        await bounded(client.disconnect())
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_asyncio_client_threshold_and_heartbeats_on_the_wire() -> None:
    """The asyncio client sends its heartbeats and frames under min_size with RSV1 clear, larger ones compressed."""
    import asyncio

    from twisted.internet.threads import deferToThread

    from twisted_hub.aio import open_client

    server = Listening(compression=CompressionPolicy())
    server.factory.fast_path = False

    def run_client() -> list[Any]:
        async def main() -> list[Any]:
            options = HubClientOptions(
                compression=CompressionPolicy(min_size=200), heartbeat=HeartbeatPolicy(enabled=True, interval=0.05)
            )
            client = await open_client(server.url, "echo", options=options, timeout=WAIT)
            try:
                results = [await client.call("echo", value) for value in (SMALL_CALL, LARGE_CALL, TEXT)]
                await asyncio.sleep(0.2)  # a few heartbeats
                return results
            finally:
                await client.disconnect()

        return asyncio.run(asyncio.wait_for(main(), WAIT))

    try:
        assert await bounded(deferToThread(run_client), 2 * WAIT) == [SMALL_CALL, LARGE_CALL, TEXT]
        check_client_frames(server.received)
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_client_without_deflate_on_a_compressing_server() -> None:
    """A client that offers no deflate gets an uncompressed connection: no extension header, RSV1 never set."""
    server = Listening(compression=CompressionPolicy())
    try:
        client = await server.raw(None)
        assert client.headers is not None and "sec-websocket-extensions" not in client.headers
        frame, value = await echo(client, 1, TEXT)
        assert not frame.rsv1 and value == TEXT and len(frame.payload) > len(TEXT)
        [protocol] = server.protocols
        assert not protocol.compressed
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_server_without_compression_declines_the_offer() -> None:
    """Compression off (the default): the offer is declined, nothing is compressed."""
    server = Listening()
    try:
        client = await server.raw("permessage-deflate; client_max_window_bits")
        assert client.headers is not None and "sec-websocket-extensions" not in client.headers
        frame, value = await echo(client, 1, TEXT)
        assert not frame.rsv1 and value == TEXT
    finally:
        await server.close()


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("server_on", [True, False])
@pytest.mark.parametrize("client_on", [True, False])
@pytest_twisted.ensureDeferred
async def test_twisted_client_negotiation_both_ways(server_on: bool, client_on: bool, fast_path: bool) -> None:
    """Twisted client x server, compression on/off each: compressed exactly when both want it; mixed sizes round-trip."""
    from twisted.internet import reactor

    server = Listening(compression=CompressionPolicy() if server_on else None)
    server.factory.fast_path = fast_path
    try:
        options = HubClientOptions(compression=CompressionPolicy() if client_on else None)
        client = await bounded(connect(server.url, "echo", options=options, clock=reactor, timeout=WAIT))
        client.factory.fast_path = fast_path
        values: list[Any] = [TEXT, "small", {"list": [TEXT] * 3}, 7, TEXT[:500], b"\x00" * 5000]
        for value in values:
            assert await bounded(client.call("echo", value)) == value
        both = server_on and client_on
        [protocol] = server.protocols
        assert (client.compressed, protocol.compressed) == (both, both)
        stats = client.trafficStats
        sent = sum(len(msgpack.packb(v)) for v in values)
        # compressed: far fewer bytes on the wire than the values; else at least the values
        assert (stats.outgoingOctetsWireLevel < sent / 3) == both
        assert (stats.incomingOctetsWireLevel < sent / 3) == both
        await bounded(client.disconnect())
    finally:
        await server.close()


@pytest.mark.parametrize("takeover", [True, False])
@pytest_twisted.ensureDeferred
async def test_zlib_state_kept_or_released(takeover: bool) -> None:
    """With context takeover the zlib objects stay with the connection; without, both sides release them after each message."""
    from twisted.internet import reactor

    policy = CompressionPolicy(context_takeover=takeover)
    server = Listening(compression=policy)
    try:
        client = await bounded(connect(server.url, "echo", options=HubClientOptions(compression=policy),
                                       clock=reactor, timeout=WAIT))
        for _ in range(3):
            assert await bounded(client.call("echo", TEXT)) == TEXT
        [protocol] = server.protocols
        for deflate_state in (protocol._perMessageCompress, client._perMessageCompress):
            assert isinstance(deflate_state, HubDeflate)
            held = (deflate_state._compressor is not None, deflate_state._decompressor is not None)
            assert held == (takeover, takeover)
        await bounded(client.disconnect())
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_broadcast_reaches_compressed_and_plain_clients() -> None:
    """A group broadcast (one prepared frame) reaches a compressing and a plain client alike."""
    from twisted.internet import reactor

    server = Listening(compression=CompressionPolicy())
    try:
        heard: dict[str, Deferred[str]] = {"deflate": Deferred(), "plain": Deferred()}

        class Listener:
            def __init__(self, name: str) -> None:
                self.name = name

            def said(self, room: str, user: str, text: str) -> None:
                heard[self.name].callback(text)

            def joined(self, room: str, user: str) -> None:
                pass

        clients = {}
        for name, policy in (("deflate", CompressionPolicy()), ("plain", None)):
            clients[name] = await bounded(connect(
                server.url, "chat", receiver=Listener(name), options=HubClientOptions(compression=policy),
                clock=reactor, timeout=WAIT,
            ))
            await bounded(clients[name].call("join", "room", name))
        await bounded(clients["plain"].call("say", "room", TEXT))
        assert await bounded(heard["deflate"]) == TEXT
        assert await bounded(heard["plain"]) == TEXT
        assert clients["deflate"].compressed and not clients["plain"].compressed
        assert clients["deflate"].trafficStats.incomingOctetsWireLevel < len(TEXT)
        for client in clients.values():
            await bounded(client.disconnect())
    finally:
        await server.close()


class CountingZlib:
    """twisted_hub._compression's zlib, counting the compressors made."""

    def __init__(self) -> None:
        self.compressors = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)

    def compressobj(self, *args: Any) -> Any:
        self.compressors += 1
        return zlib.compressobj(*args)


@pytest.mark.parametrize("takeover", [False, True])
@pytest_twisted.ensureDeferred
async def test_broadcast_compressed_once_without_context_takeover(takeover: bool, monkeypatch: Any) -> None:
    """A large broadcast to 3 compressing members: one compressor for all without context takeover, one each with it."""
    from twisted.internet import reactor

    from twisted_hub import _compression

    counting = CountingZlib()
    monkeypatch.setattr(_compression, "zlib", counting)
    policy = CompressionPolicy(context_takeover=takeover)
    server = Listening(compression=policy)
    try:
        heard: list[Deferred[str]] = [Deferred() for _ in range(3)]

        class Listener:
            def __init__(self, index: int) -> None:
                self.index = index

            def said(self, room: str, user: str, text: str) -> None:
                heard[self.index].callback(text)

            def joined(self, room: str, user: str) -> None:
                pass

        clients = []
        for index in range(3):
            client = await bounded(connect(
                server.url, "chat", receiver=Listener(index), options=HubClientOptions(compression=policy),
                clock=reactor, timeout=WAIT,
            ))
            await bounded(client.call("join", "room", f"user{index}"))
            clients.append(client)
        assert counting.compressors == 0  # nothing large was sent yet
        await bounded(clients[0].call("say", "room", TEXT))
        assert [await bounded(d) for d in heard] == [TEXT] * 3
        # one for the call that carried TEXT up (the client's); then the broadcast: one, or one per member
        assert counting.compressors == 1 + (3 if takeover else 1)
        received = [c.trafficStats.incomingOctetsWireLevel for c in clients]
        assert max(received) < len(TEXT) / 5, received
        for client in clients:
            await bounded(client.disconnect())
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_asyncio_client_round_trip() -> None:
    """The asyncio client (websockets) offers deflate from HubClientOptions and round-trips large payloads compressed."""
    import asyncio

    from twisted.internet.threads import deferToThread

    from twisted_hub.aio import open_client

    server = Listening(compression=CompressionPolicy())

    def run_client() -> list[Any]:
        async def main() -> list[Any]:
            options = HubClientOptions(compression=CompressionPolicy())
            client = await open_client(server.url, "echo", options=options, timeout=WAIT)
            try:
                return [await client.call("echo", value) for value in (TEXT, "small", TEXT)]
            finally:
                await client.disconnect()

        return asyncio.run(asyncio.wait_for(main(), WAIT))

    try:
        assert await bounded(deferToThread(run_client), 2 * WAIT) == [TEXT, "small", TEXT]
        [protocol] = server.protocols
        stats = protocol.trafficStats
        assert protocol.compressed
        # what the client sent arrived compressed (wire bytes far below the app-level bytes), and what we sent left so
        assert stats.incomingOctetsWebSocketLevel < stats.incomingOctetsAppLevel / 5
        assert stats.outgoingOctetsWebSocketLevel < stats.outgoingOctetsAppLevel / 5
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_javascript_client_in_node_round_trip() -> None:
    """The JavaScript client on Node's `ws` (which offers deflate by default) round-trips a large payload compressed."""
    from twisted.internet.threads import deferToThread

    from .test_javascript import JS, _run, _tool

    modules = JS / "node_modules"
    if not (modules / "ws").is_dir() or not (JS / "dist" / "index.js").is_file():
        await deferToThread(_run, _tool("npm"), "ci", "--no-audit", "--no-fund", timeout=600)
        await deferToThread(_run, _tool("node"), "build.mjs", timeout=180)
    server = Listening(compression=CompressionPolicy())
    script = """
        import WebSocket from "ws";
        import { connect } from "./dist/index.js";
        const [url, phrase, times] = process.argv.slice(1);
        const text = Array(Number(times)).fill(phrase).join(" ");
        const client = await connect(url, "echo", { WebSocket, log: () => {} });
        const results = [await client.call("echo", text), await client.call("echo", "small"), await client.call("echo", text)];
        console.log(JSON.stringify({ same: results[0] === text && results[1] === "small" && results[2] === text }));
        await client.disconnect();
    """
    phrase, times = TEXT_PHRASE, TEXT_TIMES
    try:
        result = await bounded(deferToThread(
            _run, _tool("node"), "--input-type=module", "-e", script, server.url, phrase, str(times), timeout=60,
        ), 70)
        assert json.loads(result.stdout.strip().splitlines()[-1]) == {"same": True}
        [protocol] = server.protocols
        stats = protocol.trafficStats
        assert protocol.compressed
        assert stats.incomingOctetsWebSocketLevel < stats.incomingOctetsAppLevel / 5
        assert stats.outgoingOctetsWebSocketLevel < stats.outgoingOctetsAppLevel / 5
    finally:
        await server.close()


# -- hostile: a zip bomb ----------------------------------------------------------------
def bomb(inflated: int) -> bytes:
    """A permessage-deflate payload of zeros that inflates to C{inflated} bytes (about 1,000 : 1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    chunk = b"\x00" * (1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(inflated // len(chunk))]
    return (b"".join(parts) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest_twisted.ensureDeferred
async def test_zip_bomb_to_the_server_is_refused_without_inflating_it() -> None:
    """A 64 MiB zip bomb (~64 KB on the wire) to a 1 MiB server: close 1009, and the server never holds more than a few MiB."""
    payload = bomb(64 * 1024 * 1024)
    assert len(payload) < 100_000
    server = Listening(compression=CompressionPolicy(), max_message_size=1024 * 1024)
    try:
        client = await server.raw("permessage-deflate; client_max_window_bits")
        tracemalloc.start()
        try:
            client.send_message(payload, compressed=True)
            close = await client.wait(lambda f: f.opcode == 0x8)
            await bounded(client.closed)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert struct.unpack("!H", close.payload[:2])[0] == 1009
        assert b"decompression" in close.payload or b"exceeds" in close.payload
        assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while refusing the bomb"
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_zip_bomb_to_the_twisted_client_is_refused() -> None:
    """A server that sends a compressed message inflating past the client's max_message_size: the client closes with 1009."""
    from twisted.internet import reactor

    payload = bomb(16 * 1024 * 1024)
    assert 126 <= len(payload) < 65536
    received: list[bytes] = []
    closed: Deferred[None] = Deferred()

    class BombServer(Protocol):
        """Answers the upgrade with permessage-deflate, then sends the bomb; records what the client sends after."""

        request = b""
        upgraded = False

        def dataReceived(self, data: bytes) -> None:
            if self.upgraded:
                received.append(data)
                return
            self.request += data
            if b"\r\n\r\n" not in self.request:
                return
            self.upgraded = True
            head = self.request.decode("latin-1")
            [key] = [
                line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key:")
            ]
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: twisted-hub.v1\r\n"
                b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n\r\n"
                + struct.pack("!BBH", 0xC2, 126, len(payload)) + payload  # FIN, RSV1, binary
            )

        def connectionLost(self, reason: Any = None) -> None:
            closed.callback(None)

    port = reactor.listenTCP(0, ServerFactory.forProtocol(BombServer), interface="127.0.0.1")
    try:
        options = HubClientOptions(compression=CompressionPolicy(), max_message_size=1024 * 1024)
        attempt = connect(f"ws://127.0.0.1:{port.getHost().port}/hub", "echo", options=options, clock=reactor, timeout=WAIT)
        await bounded(closed)
        with pytest.raises(HandshakeError):  # the connection is gone before the hub's WELCOME
            await bounded(attempt)
        frames = client_frames(b"".join(received))
        assert [opcode for opcode, _ in frames] == [0x2, 0x8]  # the hello, then the close
        assert struct.unpack("!H", frames[1][1][:2])[0] == 1009, frames[1][1]
    finally:
        await bounded(port.stopListening())
