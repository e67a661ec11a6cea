"""
The scripted server of the conformance suite: a raw asyncio server on
127.0.0.1 that speaks docs/protocol.md byte for byte, one script per
scenario, and records what each client sent.

A client reaches a scenario's script through the path of its URL,
C{/<scenario>/<client>} (the hub name is the last path segment, and no hub
routing happens here: the path only selects the script).  Each connection
gets a L{ScriptedConnection}: the script answers the upgrade (or refuses
it), sends messages, waits for the client's, closes or drops; whatever the
script leaves is served by L{ScriptedConnection.serve} (answering calls,
heartbeats and the closing handshake).  Everything the client sent is kept
in the connection's L{ScriptedConnection.record}, a JSON-able dict the
suite merges into the client's observed outcome as C{server}.

It runs on its own event loop in a thread (L{running}), so one server
serves the Twisted, the asyncio and the JavaScript drivers at once.  The
frame helpers are those of the hostile-server tests
(tests/helpers/hostile_server.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import msgpack

from ..helpers.hostile_server import MIB, binary, close_frame, frame, on_own_loop
from ..helpers.hostile_server import _header as header_value
from ..helpers.hostile_server import _read_frame as read_frame

_frame = frame  # (close() has a parameter named frame)

__all__ = ["MIB", "ClientGone", "Script", "ScriptedConnection", "ScriptedServer", "binary", "close_frame", "frame", "running"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "twisted-hub.v1"
#: the WELCOME's capabilities unless a script says otherwise
CAPABILITIES = ["heartbeat", "batch", "stream"]
#: a sender's batch limit (protocol.md 1.2): the server's answers respect it too
BATCH_MESSAGES = 256

Script = Callable[["ScriptedConnection"], Awaitable[None]]


class ClientGone(Exception):
    """The client's close frame arrived, or its TCP connection ended."""


def now_us() -> int:
    """UTC microseconds since the Unix epoch (protocol.md 3.10)."""
    return int(time.time() * 1_000_000)


class ScriptedConnection:
    """One client connection, driven by a scenario's script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, index: int) -> None:
        self.reader = reader
        self.writer = writer
        self.request = request
        #: 0 for the first connection of this scenario and client, 1 for the next ...
        self.index = index
        self.messages: list[Any] = []
        self._pending: list[Any] = []
        self._kinds: Counter[int] = Counter()
        self._per_frame: list[int] = []
        self._sent_close = False
        self._closed = False
        #: what the client did, JSON-able (merged into its outcome as "server")
        self.record: dict[str, Any] = {
            "subprotocols": [p.strip() for p in _header(request, b"sec-websocket-protocol").split(",") if p.strip()],
            "headers": _headers(request),
            "hello": None,
            "hello_alone": None,
            "frames": 0,
            "max_messages_per_frame": 0,
            "kinds": {},
            "client_heartbeats": 0,
            "hub_close": None,
            "close": None,
            "close_reason": None,
            "answered_close": False,
            "gone": False,
            "open_seconds": None,
            "notes": {},
        }

    # -- the opening handshake --------------------------------------------------
    def refuse(self, status: int, reason: str) -> None:
        """Refuse the upgrade with a plain HTTP response (protocol.md 1.1), and close."""
        body = reason.encode("utf-8")
        self.writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode() + body
        )
        self._closed = True
        self.writer.close()

    def accept(self, subprotocol: str | None = SUBPROTOCOL) -> None:
        """Answer 101, selecting C{subprotocol} (None: no Sec-WebSocket-Protocol header)."""
        key = header_value(self.request, b"sec-websocket-key")
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        chosen = b"" if subprotocol is None else b"Sec-WebSocket-Protocol: " + subprotocol.encode() + b"\r\n"
        self.writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + chosen + b"\r\n"
        )

    def welcome(self, **info: Any) -> None:
        """Send WELCOME: caps, an id and max (1 MiB) unless given (a value None leaves its key out)."""
        fields = {"caps": CAPABILITIES, "id": f"conformance-{self.index + 1}", "max": MIB, **info}
        self.send([1, {key: value for key, value in fields.items() if value is not None}])

    async def open(self, **info: Any) -> None:
        """Accept the upgrade, send WELCOME (with C{info}) and wait for the client's HELLO."""
        self.accept()
        self.welcome(**info)
        await self.hello()

    async def hello(self) -> Any:
        """The client's HELLO (its first message), recorded; a protocol error is noted, not raised."""
        messages = await self._next_frame()
        self.record["hello"] = messages[0][1] if messages and messages[0][0] == 0 else None
        self.record["hello_alone"] = len(messages) == 1
        self._pending.extend(messages[1:])
        return self.record["hello"]

    # -- sending ----------------------------------------------------------------
    def send(self, *messages: Any) -> None:
        """One binary frame holding these messages."""
        self.writer.write(binary(*messages))

    def write(self, data: bytes) -> None:
        """Raw bytes (frames built by hand)."""
        self.writer.write(data)

    def close(self, code: int | None, reason: str, *, message: bool = True, frame: bool = True) -> None:
        """
        The server closes: C{[8, code, reason]} (unless not C{message}), then
        a close frame (unless not C{frame}; without a code when C{code} is None).
        """
        if message:
            self.send([8, code, reason])
        if frame:
            self.write(close_frame(code, reason) if code is not None else _frame(0x8, b""))
            self._sent_close = True

    def drop(self) -> None:
        """End TCP at once, no close frame (the client sees 1006)."""
        self._closed = True
        self.writer.transport.abort()

    def end_tcp(self) -> None:
        """End TCP in order, after what was written (FIN), with no close frame (the client sees 1006 after the data)."""
        self._closed = True
        self.writer.close()

    def note(self, key: str, value: Any) -> None:
        """Something the script observed, for the scenario's expectation (C{server.notes})."""
        self.record["notes"][key] = value

    # -- receiving --------------------------------------------------------------
    async def receive(self) -> Any:
        """
        The client's next hub message.

        @raise ClientGone: its close frame arrived (answered, unless the
            server closed first) or TCP ended.
        """
        while not self._pending:
            self._pending.extend(await self._next_frame())
        return self._pending.pop(0)

    async def expect(self, kind: int) -> Any:
        """The client's next message of this kind (earlier ones of other kinds are recorded and passed over)."""
        while True:
            message = await self.receive()
            if message[0] == kind:
                return message

    async def _next_frame(self) -> list[Any]:
        """The messages of the client's next binary frame (pings answered, close frames handled)."""
        if self._closed:
            raise ClientGone()
        try:
            while True:
                opcode, payload = await read_frame(self.reader)
                if opcode == 0x0:
                    # No client here fragments its messages; a continuation
                    # frame would make the record wrong: say so.
                    self.note("fragmented", True)
                if opcode == 0x8:
                    self._client_closed(payload)
                    raise ClientGone()
                if opcode == 0x9:
                    self.write(frame(0xA, payload))
                    continue
                if opcode != 0x2:
                    continue
                messages = _messages(payload)
                self._count(messages)
                return messages
        except (asyncio.IncompleteReadError, ConnectionError):
            self._gone()
            raise ClientGone() from None

    def _count(self, messages: list[Any]) -> None:
        self.messages.extend(messages)
        self.record["frames"] += 1
        self._per_frame.append(len(messages))
        self.record["max_messages_per_frame"] = max(self._per_frame)
        for message in messages:
            kind = message[0] if isinstance(message, list) and message else None
            if isinstance(kind, int):
                self._kinds[kind] += 1
                if kind == 8:
                    self.record["hub_close"] = message
                if kind == 11:
                    self.record["client_heartbeats"] += 1
                    self.record.setdefault("first_client_heartbeat", message)
        self.record["kinds"] = {str(kind): count for kind, count in sorted(self._kinds.items())}

    def _client_closed(self, payload: bytes) -> None:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        self.record["close"] = code
        self.record["close_reason"] = payload[2:].decode("utf-8", "replace")
        if self._sent_close:
            # Our close was answered: the server ends TCP (RFC 6455 7.1.1).
            self.record["answered_close"] = True
        else:
            # The client closes: answer with its code (none if it gave none), then end TCP.
            self.write(close_frame(code, "") if code is not None else frame(0x8, b""))
        self._closed = True
        self.writer.close()

    def _gone(self) -> None:
        self._closed = True
        self.record["gone"] = True

    # -- the default tail ---------------------------------------------------------
    async def serve(self, *, heartbeats: bool = True, answer: Callable[[Any], Any] | None = None) -> None:
        """
        Answer the client until it leaves: each frame's calls are answered in
        one frame (at most 256 messages each).  INVOKE C{echo(x)} answers
        C{x}; C{wire(...)} answers what arrived: C{{"args": ..., "kwargs":
        ...}} (kwargs None when left out); C{ids()} the call ids seen so
        far; C{notified()} the NOTIFY messages seen so far; C{never()} is
        never answered; others C{unknown-method}.  C{CLIENT_HEARTBEAT}s are answered (unless not
        C{heartbeats}).  C{answer(message)} may answer first: a reply, []
        for none, or None to fall through.
        """
        try:
            while True:
                while not self._pending:
                    self._pending.extend(await self._next_frame())
                messages, self._pending = self._pending, []
                replies = []
                for message in messages:
                    reply = answer(message) if answer is not None else None
                    if reply is None:
                        reply = self._default_reply(message, heartbeats)
                    if reply:  # (an answer may return [] for "no reply")
                        replies.append(reply)
                for start in range(0, len(replies), BATCH_MESSAGES):
                    self.send(*replies[start:start + BATCH_MESSAGES])
        except ClientGone:
            return

    def _default_reply(self, message: Any, heartbeats: bool) -> Any:
        kind = message[0]
        if kind == 2:
            call_id, method, args = message[1], message[2], message[3]
            if method == "echo":
                return [4, call_id, args[0] if args else None]
            if method == "wire":
                return [4, call_id, {"args": args, "kwargs": message[4] if len(message) > 4 else None}]
            if method == "ids":
                return [4, call_id, [m[1] for m in self.messages if m[0] == 2]]
            if method == "notified":
                return [4, call_id, [m for m in self.messages if m[0] == 3]]
            if method == "never":
                return None  # held until the connection ends
            return [5, call_id, "unknown-method", f"no method {method!r}", None]
        if kind == 11 and heartbeats:
            return [12, message[1], message[2], now_us()]
        return None


class ScriptedServer:
    """Serves each scenario's script to every client that asks for it by path."""

    def __init__(self, scripts: dict[str, Script]) -> None:
        self.scripts = scripts
        self.port = 0
        #: (scenario, client) -> the record of each of its connections, in order
        self.records: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no connection is being served (at most C{seconds}); False if some still are."""
        if not self._handlers:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            parts = request.split(b"\r\n", 1)[0].split(b" ")[1].decode("ascii", "replace")
            segments = [s for s in urlsplit(parts).path.split("/") if s]
            if len(segments) < 2 or segments[0] not in self.scripts:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                self.errors.append(f"no script for {parts}")
                return
            accepted = time.monotonic()
            key = (segments[0], segments[1])
            records = self.records.setdefault(key, [])
            connection = ScriptedConnection(reader, writer, request, len(records))
            records.append(connection.record)
            try:
                await self.scripts[segments[0]](connection)
                if not connection._closed:
                    await connection.serve()
            except ClientGone:
                pass
            except Exception as e:  # a broken script: the scenario fails with this text
                connection.record["notes"]["script_error"] = f"{type(e).__name__}: {e}"
            if not connection.record["gone"] and not writer.transport.is_closing():
                # Wait for the client to end TCP (bounded): "gone" is part of the record.
                try:
                    while await asyncio.wait_for(reader.read(65536), 5):
                        pass
                    connection.record["gone"] = True
                except (TimeoutError, ConnectionError):
                    pass
            else:
                connection.record["gone"] = True
            # How long the TCP connection lived, to 0.1 s.
            connection.record["open_seconds"] = round(time.monotonic() - accepted, 1)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.transport.abort()
            self._handlers.discard(handler)
            if not self._handlers:
                self._idle.set()


def _messages(payload: bytes) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(payload)
    return list(unpacker)


def _headers(request: bytes) -> dict[str, str]:
    """The request's headers, names in lower case (the last of repeated ones)."""
    fields = {}
    for line in request.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return fields


def _header(request: bytes, name: bytes) -> str:
    try:
        return header_value(request, name).decode("latin-1")
    except ValueError:
        return ""


@contextmanager
def running(scripts: dict[str, Script]) -> Iterator[tuple[ScriptedServer, Callable[[float], bool]]]:
    """
    A L{ScriptedServer} on 127.0.0.1, on its own loop in a thread we start
    and join; with a function that waits (at most the seconds given) until
    it serves no connection.
    """
    server = ScriptedServer(scripts)
    with on_own_loop(server, "the scripted server") as loop:

        def wait_idle(seconds: float) -> bool:
            return asyncio.run_coroutine_threadsafe(server.wait_idle(seconds), loop).result(seconds + 5)

        yield server, wait_idle
