"""
A hostile hub *server* on a raw asyncio socket, for the client tests of
issue 18 item 5 (tests/test_hostile_server.py): it answers the WebSocket
upgrade and the hub handshake by hand (docs/protocol.md sections 1.1 and
1.4), waits for the client's first INVOKE, then misbehaves in one way
(L{ATTACKS}) and keeps the TCP connection open, never answering the
client's close frame and never closing it: a client that waits for the
closing handshake without a deadline of its own waits forever.

It runs on its own event loop in its own thread (L{running}), so the
Twisted client (on the reactor) and the asyncio client (on theirs) meet the
same bytes.  What the client did is recorded for the test: the close frames
it sent (L{HostileServer.close_frames}) and when its TCP connection ended
(L{HostileServer.client_gone}).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MIB = 1024 * 1024


def frame_header(opcode: int, length: int, rsv: int = 0) -> bytes:
    """The header of one final, unmasked frame (a server's) announcing C{length} payload bytes."""
    first = 0x80 | rsv << 4 | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def frame(opcode: int, payload: bytes, rsv: int = 0) -> bytes:
    """One final, unmasked frame."""
    return frame_header(opcode, len(payload), rsv) + payload


def binary(*messages: object) -> bytes:
    """One binary frame holding these hub messages back to back."""
    return frame(0x2, b"".join(msgpack.packb(m, use_bin_type=True) for m in messages))


def close_frame(code: int, reason: str) -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason.encode("utf-8"))


#: What the server sends once the client's first INVOKE (its call id) arrived.
ATTACKS: dict[str, Callable[[int], bytes]] = {
    # a RESULT of 2 MiB, over the client's 1 MiB limit: 1009
    "big-result": lambda call_id: binary([4, call_id, b"x" * (2 * MIB)]),
    # a header announcing 100 MiB, and no body: 1009 from the header alone
    "huge-header": lambda call_id: frame_header(0x2, 100 * MIB),
    # the same header and 256 KiB of its body
    "huge-partial": lambda call_id: frame_header(0x2, 100 * MIB) + b"x" * (256 * 1024),
    # a hub message of an unknown kind: the hub protocol's error, 4002
    "bad-message": lambda call_id: binary([99, call_id]),
    # a text frame: 1003
    "text-frame": lambda call_id: frame(0x1, b"[4, 1, 1]"),
    # a text frame that is not UTF-8: 1007
    "bad-utf8": lambda call_id: frame(0x1, b"\xff\xfe"),
    # more receiver calls in one frame than the client takes (1,024 by default): 1008
    "too-many-messages": lambda call_id: binary(*([6, "said", []] for _ in range(1025))),
    # a reserved opcode: bad WebSocket framing, 1002
    "bad-opcode": lambda call_id: frame(0x3, b"?"),
    # RSV1 set although no extension was negotiated: bad framing, 1002
    "rsv-bit": lambda call_id: frame(0x2, msgpack.packb([4, call_id, 1]), rsv=4),
    # the hub's CLOSE and a close frame 4000 (a kick), then TCP held open
    "close-then-hold": lambda call_id: binary([8, 4000, "go away"]) + close_frame(4000, "go away"),
    # nothing: the call is never answered (and neither is the client's close)
    "silent": lambda call_id: b"",
    # a WELCOME of 2 MiB (WELCOMES): the client refuses it before any call
    "big-welcome": lambda call_id: b"",
}

WELCOME = [1, {"caps": ["heartbeat", "batch"], "id": "hostile-1", "max": MIB}]
#: What the server sends instead of its WELCOME, for some attacks.
WELCOMES = {"big-welcome": binary([1, {"caps": ["heartbeat", "batch"], "id": "x" * (2 * MIB)}])}


class HostileServer:
    """Serves one attack to every client, on the event loop it is started on."""

    def __init__(self, attack: str) -> None:
        self.attack = ATTACKS[attack]
        self.welcome = WELCOMES.get(attack, binary(WELCOME))
        self.port = 0
        #: (code, reason) of every close frame a client sent
        self.close_frames: list[tuple[int, str]] = []
        #: when the attack was sent (time.monotonic())
        self.attacked_at: float | None = None
        #: set when a client's TCP connection ended (EOF or reset), at gone_at (time.monotonic())
        self.client_gone = threading.Event()
        self.gone_at: float | None = None
        self._server: asyncio.Server | None = None
        self._handlers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.append(handler)
        try:
            await self._attack(reader, writer)
        finally:
            writer.transport.abort()

    async def _attack(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            key = _header(request, b"sec-websocket-key")
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: twisted-hub.v1\r\n\r\n"
            )
            writer.write(self.welcome)
            attacked = False
            while True:
                opcode, payload = await _read_frame(reader)
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    self.close_frames.append((code, payload[2:].decode("utf-8", "replace")))
                    continue  # never answered
                if opcode != 0x2 or attacked:
                    continue
                for message in _messages(payload):
                    if isinstance(message, list) and message and message[0] == 2:  # INVOKE
                        self.attacked_at = time.monotonic()
                        writer.write(self.attack(message[1]))
                        attacked = True
                        break
        except (asyncio.IncompleteReadError, ConnectionError):
            # The client ended TCP (we never do: our side stays open until stop()).
            self.gone_at = time.monotonic()
            self.client_gone.set()


def _messages(payload: bytes) -> list[object]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload)
    return list(unpacker)


def _header(request: bytes, name: bytes) -> bytes:
    for line in request.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name:
            return value.strip()
    raise ValueError(f"no {name!r} header in {request!r}")


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One masked client frame: its opcode and unmasked payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    body = await reader.readexactly(length)
    key = (mask * (length // 4 + 1))[:length]
    payload = (int.from_bytes(body, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big") if length else b""
    return first & 0x0F, payload


@contextmanager
def on_own_loop(server: Any, name: str) -> Iterator[asyncio.AbstractEventLoop]:
    """
    Run C{server} (C{start()}/C{stop()} coroutines) on its own asyncio loop in
    a thread we start and join; yields that loop.
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError(f"{name} did not start within 10 s")
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def running(attack: str) -> Iterator[HostileServer]:
    """A L{HostileServer} for C{attack} on 127.0.0.1, on its own loop in a thread we start and join."""
    server = HostileServer(attack)
    with on_own_loop(server, f"hostile-server-{attack}"):
        yield server
