"""
Many WebSocket connections in one cheap client process, for the fan-out and
idle-heartbeat cases: ``python3 bench/_wsload.py IMPL PORT CONNS``.

The three servers see exactly the bytes their own clients would send, so the
server-side work is the same; the client side is a minimal frame parser on
asyncio so that it costs little and the server stays the bottleneck:

- ``hub``: subprotocol ``twisted-hub.v1``, sends hello, answers every server
  heartbeat ``[9, seq, time, meta]`` with ``[10, seq]`` from the frame handler;
- ``autobahn`` and ``websockets``: plain WebSocket, answers every ping with a
  pong carrying its payload;
- ``socketio``: engine.io v4 over WebSocket, connects namespace ``/`` with the
  msgpack serializer, answers every ping ``2`` with ``3``.

With ``--first-echo`` (the ``accept`` cases of bench/run.py), an
``autobahn`` or ``websockets`` connection counts as open only once one small
echo call (``[1, "echo", [16 bytes]]``) has been answered: the equivalent of
the hub's hello and welcome.

Reports JSON lines on stdout: ``ready`` once every connection is usable,
``done`` when an armed count of data frames has arrived, ``count`` on demand.
Commands on stdin: ``arm N`` (expect N data frames per connection), ``count``,
``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys

import msgpack
from _common import HOST, HUB_NAME, emit, now, raise_nofile

_ZERO_MASK = b"\x00\x00\x00\x00"  # a valid mask key; XOR with zeros leaves the payload as is
_HELLO = msgpack.packb([0, {"caps": ["heartbeat", "batch"]}])
#: bench/resume_cost.py: announce resume, count the server's receiver calls, acknowledge every 64
_RESUME = os.environ.get("BENCH_HUB_RESUME") == "1"
if _RESUME:
    _HELLO = msgpack.packb([0, {"caps": ["heartbeat", "batch", "resume"]}])
_SIO_CONNECT = msgpack.packb({"type": 0, "nsp": "/"})
_FIRST_ECHO = msgpack.packb([1, "echo", [b"0123456789abcdef"]])


def client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + _ZERO_MASK + payload


class Load:
    def __init__(self, impl: str, port: int, conns: int) -> None:
        self.impl = impl
        self.port = port
        self.total = conns
        self.ready = 0
        self.closed = 0
        self.frames = 0  # data frames that are not heartbeats, counted once armed
        self.expect = 0
        self.armed = False
        self.last_frame = 0.0
        self.beats = 0  # heartbeats answered
        self.path = ""  # --path: the hubs' path prefix (twistd hub serves them under /hub)
        self.protocols: list[Conn] = []
        self.all_ready = asyncio.get_running_loop().create_future()
        #: --reconnect: reopen lost connections with full-jitter backoff (bench/storm.py)
        self.reconnect = False
        self.lost_at: float | None = None
        self.restored = 0
        self.refused = 0
        self.other_errors: dict[str, int] = {}
        #: --first-echo: autobahn/websockets connections are usable after one echo call
        self.first_echo = False

    def conn_ready(self) -> None:
        if self.lost_at is not None:
            return  # a reconnection (--reconnect): counted in restored
        self.ready += 1
        if self.ready == self.total and not self.all_ready.done():
            self.all_ready.set_result(None)

    def data_frame(self) -> None:
        if self.armed:
            self.frames += 1
            if self.frames >= self.expect:
                self.armed = False
                emit("done", t_last=now(), frames=self.frames)


class Conn(asyncio.Protocol):
    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.is_ready = False
        #: fires once the connection is usable, or lost
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        #: the server's sequenced messages received (with resume, bench/resume_cost.py)
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        impl = self.load.impl
        path, extra = "/", ""
        if impl == "hub":
            path, extra = f"{self.load.path}/{HUB_NAME}", "Sec-WebSocket-Protocol: twisted-hub.v1\r\n"
        elif impl == "socketio":
            path = "/socket.io/?EIO=4&transport=websocket"
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.load.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.closed += 1
        if not self.settled.done():
            self.settled.set_result(None)
        load = self.load
        if load.reconnect and self.is_ready:
            if load.lost_at is None:
                load.lost_at = now()
            asyncio.ensure_future(reopen(load))

    def send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(opcode, payload))

    def make_ready(self) -> None:
        if not self.is_ready:
            self.is_ready = True
            self.load.conn_ready()
            if not self.settled.done():
                self.settled.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                emit("error", status=status.decode(errors="replace"))
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            if self.load.impl == "hub":
                self.send(2, _HELLO)
            elif self.load.impl in ("autobahn", "websockets"):
                if self.load.first_echo:
                    self.send(2, _FIRST_ECHO)
                else:
                    self.make_ready()
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > n:
                break
            opcode = b0 & 0x0F
            if self.is_ready and opcode == 2 and self.load.impl != "hub":
                self.load.data_frame()  # the hot path of fan-out: no payload copy
            else:
                self.frame(opcode, bytes(buf[pos + head : end]))
            pos = end
        if pos:
            del buf[:pos]

    def frame(self, opcode: int, payload: bytes) -> None:
        load = self.load
        impl = load.impl
        if opcode == 9:  # ping (autobahn autoPing)
            self.send(10, payload)
            load.beats += 1
            return
        if opcode == 8:  # close: answer it
            self.send(8, payload[:2])
            return
        if impl == "hub" and opcode == 2:
            if payload[:2] == b"\x94\x09":  # [9, seq, time, meta]: a server heartbeat
                message = msgpack.unpackb(payload)
                self.send(2, msgpack.packb([10, message[1]]))
                load.beats += 1
            elif not self.is_ready:
                self.make_ready()  # the welcome
            elif _RESUME and payload[1] != 6:
                pass  # SESSION, ACK: not data
            else:
                load.data_frame()
                if _RESUME:
                    self.received += 1
                    if self.received % 64 == 0:
                        self.send(2, msgpack.packb([24, self.received]))
            return
        if opcode == 2 and not self.is_ready and load.first_echo and impl in ("autobahn", "websockets"):
            self.make_ready()  # the answer to the first echo call
            return
        if impl == "socketio":
            if opcode == 1:
                if payload == b"2":
                    self.send(1, b"3")
                    load.beats += 1
                elif payload[:1] == b"0":  # engine.io open: connect the namespace
                    self.send(2, _SIO_CONNECT)
            elif opcode == 2 and not self.is_ready:
                self.make_ready()  # the namespace connect answer
            return
        if opcode in (1, 2) and self.is_ready:
            load.data_frame()


async def reopen(load: Load) -> None:
    """Reconnect one lost connection: attempt n waits uniform(0, min(10, 0.5 * 2**(n-1))) s (full jitter)."""
    import random

    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        attempt += 1
        await asyncio.sleep(random.uniform(0.0, min(10.0, 0.5 * 2 ** (attempt - 1))))
        try:
            transport, protocol = await loop.create_connection(lambda: Conn(load), HOST, load.port)
        except ConnectionRefusedError:
            load.refused += 1
            continue
        except OSError as e:
            name = type(e).__name__ + (f"[{e.errno}]" if e.errno else "")
            load.other_errors[name] = load.other_errors.get(name, 0) + 1
            continue
        while not protocol.is_ready and not transport.is_closing():
            await asyncio.sleep(0.005)
        if protocol.is_ready:
            load.protocols.append(protocol)
            load.restored += 1
            if load.restored == load.ready:
                emit("restored", seconds=now() - (load.lost_at or now()), attempts_refused=load.refused,
                     other_errors=load.other_errors, conns=load.restored)
            return


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl", choices=["hub", "autobahn", "socketio", "websockets"])
    parser.add_argument("port", type=int)
    parser.add_argument("conns", type=int)
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes in progress at once")
    parser.add_argument("--timeout", type=float, default=40.0)
    parser.add_argument("--reconnect", action="store_true", help="reopen lost connections (full jitter)")
    parser.add_argument("--first-echo", action="store_true",
                        help="autobahn/websockets: usable only after one echo call is answered")
    parser.add_argument("--path", default="", help="hub: the hubs' path prefix (twistd hub's is /hub)")
    args = parser.parse_args()
    raise_nofile()
    loop = asyncio.get_running_loop()
    load = Load(args.impl, args.port, args.conns)
    load.reconnect = args.reconnect
    load.path = args.path
    load.first_echo = args.first_echo
    gate = asyncio.Semaphore(args.concurrency)

    async def open_one() -> None:
        async with gate:
            transport, protocol = await loop.create_connection(lambda: Conn(load), HOST, args.port)
            load.protocols.append(protocol)
            await protocol.settled

    started = now()
    opening = asyncio.gather(*(open_one() for _ in range(args.conns)))
    try:
        await asyncio.wait_for(asyncio.shield(opening), args.timeout)
    except TimeoutError:
        # A server too slow to accept them all in time: go on with what is
        # open (the runner reports how many) rather than blow the time bound.
        opening.cancel()
    except OSError as e:
        emit("error", message=f"{type(e).__name__}: {e}", ready=load.ready)
        return
    if not load.ready:
        emit("error", message="no connection became ready", ready=0)
        return
    emit("ready", conns=load.ready, wanted=args.conns, seconds=now() - started)

    lines: asyncio.Queue[str] = asyncio.Queue()

    def readable() -> None:
        chunk = os.read(sys.stdin.fileno(), 65536)
        for line in chunk.decode().splitlines():
            lines.put_nowait(line)
        if not chunk:
            lines.put_nowait("quit")

    loop.add_reader(sys.stdin.fileno(), readable)
    while True:
        words = (await lines.get()).split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "arm":
            load.frames = 0
            load.expect = int(words[1]) * load.ready
            load.armed = True
        elif words[0] == "count":
            emit("count", beats=load.beats, closed=load.closed, frames=load.frames, t=now())
    loop.remove_reader(sys.stdin.fileno())
    for protocol in load.protocols:
        if protocol.transport is not None:
            protocol.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())
