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

For bench/storm.py: with ``--reconnect`` a lost connection is opened again
with full-jitter backoff, and the command ``drop`` resets every open
connection at once (``SO_LINGER`` 0, then close: an RST, as when a network
path or a proxy in front fails) and reopens them all the same way; the
process reports ``dropped``, then ``restored`` once every one is back (with
each connection's time to come back).  ``--watch INTERVAL TIMEOUT`` makes the
connections bystanders that watch the server as a hub client does: each
sends its own client heartbeat (``[11, seq, time]``) every INTERVAL seconds
and times the server's answer (``[12, ...]``); one unanswered for more than
TIMEOUT seconds is a client-side heartbeat timeout (counted, not acted on:
the connection stays, so the count is of false timeouts a real client would
have had); the gaps between the server's own heartbeats are measured too.
``mark`` starts those measurements again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import socket
import struct
import sys

import msgpack
from _common import HOST, HUB_NAME, emit, now, raise_nofile

_ZERO_MASK = b"\x00\x00\x00\x00"  # a valid mask key; XOR with zeros leaves the payload as is
_HELLO = msgpack.packb([0, {"caps": ["heartbeat", "batch"]}])
#: bench/resume_cost.py: announce resume, count the server's receiver calls, acknowledge every 256 (the clients' default)
_RESUME = os.environ.get("BENCH_HUB_RESUME") == "1"
_ACK_EVERY = int(os.environ.get("BENCH_HUB_ACK_EVERY", "256"))
if _RESUME:
    _HELLO = msgpack.packb([0, {"caps": ["heartbeat", "batch", "resume"]}])
_SIO_CONNECT = msgpack.packb({"type": 0, "nsp": "/"})
_FIRST_ECHO = msgpack.packb([1, "echo", [b"0123456789abcdef"]])
#: --watch: also count the bystanders that client heartbeat timeouts of these seconds would have dropped
#: (3: HeartbeatPolicy.FAST_DETECTION, 45: PROXY_SAFE)
WOULD_TIME_OUT = (3.0, 5.0, 10.0, 15.0, 45.0)


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
        #: lost connections (dropped or not) being reopened: "restored" is reported when it is 0 again
        self.pending = 0
        #: seconds from the loss to each reopened connection being usable again
        self.back_delays: list[float] = []
        self.attempts = 0
        self.open_timeouts = 0
        #: seconds an attempt may take from connect to the hub welcome (--open-timeout)
        self.open_timeout = 30.0
        #: connections lost that this process did not drop (closed by the server, reset), once usable
        self.unexpected_closes = 0
        #: the same, since "restored" was last reported (--crash: every loss is unexpected)
        self.closes_since_back = 0
        #: close frames received, by close code
        self.close_codes: dict[str, int] = {}
        #: --watch: the bystanders' own heartbeats and the server's, timed
        self.watch: Watch | None = None
        #: with resume (BENCH_HUB_RESUME=1, bench/storm.py --resume): sessions resumed, and refusals by reason
        self.resumes = 0
        self.resume_refusals: dict[str, int] = {}


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


class Watch:
    """What a bystander connection sees of the server: its answers to our heartbeats, and the gaps between its own."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.mark()

    def mark(self, conns: list[Conn] | tuple[()] = ()) -> None:
        #: connections whose oldest unanswered client heartbeat waited more than the timeout
        self.timeouts = 0
        self.sent = 0
        self.answered = 0
        #: round trips of client heartbeats (seconds)
        self.rtts: list[float] = []
        #: the longest wait between two server heartbeats on one connection (seconds)
        self.beat_gap_max = 0.0
        for conn in conns:
            conn.hb_worst = 0.0

    def report(self, conns: list[Conn], t: float) -> dict[str, object]:
        waiting = [t - min(c.hb_out.values()) for c in conns if c.hb_out and not c.lost]
        gaps = [t - c.last_server_beat for c in conns if c.last_server_beat and not c.lost]
        rtts = sorted(self.rtts)
        worst = [max(c.hb_worst, t - min(c.hb_out.values()) if c.hb_out else 0.0) for c in conns if not c.lost]
        return {
            "client_timeouts": self.timeouts, "sent": self.sent, "answered": self.answered,
            # connections a client heartbeat timeout of T seconds would have dropped, for other timeouts than ours
            "would_time_out": {str(limit): sum(w > limit for w in worst) for limit in WOULD_TIME_OUT},
            "rtt_max": max(rtts + waiting, default=0.0),
            "rtt_p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else 0.0,
            "rtt_median": rtts[len(rtts) // 2] if rtts else 0.0,
            "beat_gap_max": max([self.beat_gap_max, *gaps]),
        }


class Conn(asyncio.Protocol):
    def __init__(self, load: Load, carry: tuple[bytes, int] | None = None) -> None:
        self.load = load
        #: with resume: the session to resume on this connection (token, messages received), from the one lost
        self.carry = carry
        #: with resume: this connection's session token (from SESSION or RESUMED)
        self.token: bytes | None = None
        self.resuming = False
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.is_ready = False
        #: fires once the connection is usable, or lost
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        #: the server's sequenced messages received (with resume, bench/resume_cost.py)
        self.received = 0

        self.dropped = False  # reset on purpose (the "drop" command)
        self.refused = False  # the upgrade was answered with another status than 101
        self.lost = False
        # --watch: client heartbeats in flight (sequence -> time sent), the next one's time
        self.hb_out: dict[int, float] = {}
        self.hb_seq = 0
        self.hb_due = 0.0
        self.hb_timed_out = False
        self.last_server_beat = 0.0
        self.hb_worst = 0.0  # the longest any of our heartbeats waited for its answer since the mark

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
        self.lost = True
        if not self.settled.done():
            self.settled.set_result(None)
        load = self.load
        if not self.is_ready:
            return  # a failed attempt: reopen() counts it
        carry = (self.token, self.received) if _RESUME and self.token is not None else None
        if self.dropped:  # counted in pending by the drop
            asyncio.ensure_future(reopen(load, carry))
            return
        load.unexpected_closes += 1
        load.closes_since_back += 1
        if load.reconnect:
            if load.lost_at is None:
                load.lost_at = now()
            load.pending += 1
            asyncio.ensure_future(reopen(load, carry))

    def drop(self) -> bool:
        """Reset this connection (an RST: SO_LINGER 0, then close) if it is open; the loss is then expected."""
        transport = self.transport
        if not self.is_ready or self.lost or transport is None or transport.is_closing():
            return False
        self.dropped = True
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return True

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
                self.refused = True
                if self.load.lost_at is not None:  # a reconnection refused: counted, retried
                    name = status.decode(errors="replace")[:40]
                    self.load.other_errors[name] = self.load.other_errors.get(name, 0) + 1
                else:
                    emit("error", status=status.decode(errors="replace"))
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            if self.load.impl == "hub" and self.carry is None:
                self.send(2, _HELLO)  # (to resume, HELLO + RESUME wait for the WELCOME)
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
            elif (opcode == 2 and self.is_ready and length > 1 and buf[pos + head + 1] == 6
                  and buf[pos + head] & 0xF0 == 0x90 and self.load.watch is None):
                # the hub's hot path of fan-out, as cheap as the others': a receiver call
                # ([6, ...], its kind the second byte) is counted without a copy or a parse
                self.load.data_frame()
                if _RESUME:
                    self.received += 1
                    if self.received % _ACK_EVERY == 0:
                        self.send(2, msgpack.packb([24, self.received]))
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
            code = str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else "none"
            load.close_codes[code] = load.close_codes.get(code, 0) + 1
            self.send(8, payload[:2])
            return
        if impl == "hub" and opcode == 2 and load.watch is not None and self.is_ready:
            self.watched_frame(load.watch, payload)
            return
        if impl == "hub" and opcode == 2:
            if payload[:2] == b"\x94\x09":  # [9, seq, time, meta]: a server heartbeat
                message = msgpack.unpackb(payload)
                self.send(2, msgpack.packb([10, message[1]]))
                load.beats += 1
            elif self.carry is not None and not self.is_ready:
                self.resume_frame(payload)
            elif not self.is_ready:
                self.make_ready()  # the welcome
            elif _RESUME and payload[1] == 20:
                self.token = msgpack.unpackb(payload)[1]  # SESSION: the token to resume with
            elif _RESUME and payload[1] != 6:
                pass  # ACK: not data
            else:
                load.data_frame()
                if _RESUME:
                    self.received += 1
                    if self.received % _ACK_EVERY == 0:
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


    def resume_frame(self, payload: bytes) -> None:
        """Resuming (docs/protocol.md 10.5): the WELCOME, then RESUMED, or RESUME_REFUSED and SESSION."""
        assert self.carry is not None
        load = self.load
        for message in _messages(payload):
            kind = message[0]
            if kind == 1 and not self.resuming:  # the WELCOME: HELLO + RESUME in one frame
                token, received = self.carry
                self.send(2, _HELLO + msgpack.packb([21, token, received]))
                self.resuming = True
            elif kind == 22:  # RESUMED: the rotated token
                self.token = message[2]  # type: ignore[assignment]
                load.resumes += 1
                self.make_ready()
            elif kind == 23:  # RESUME_REFUSED: a fresh session (SESSION) follows
                reason = str(message[1])
                load.resume_refusals[reason] = load.resume_refusals.get(reason, 0) + 1
            elif kind == 20:
                self.token = message[1]  # type: ignore[assignment]
                self.make_ready()

    def watched_frame(self, watch: Watch, payload: bytes) -> None:
        """A bystander's frame: every message of it (a batch holds several), heartbeats timed."""
        load = self.load
        for message in _messages(payload):
            kind = message[0]
            if kind == 9:  # a server heartbeat: answer it, note the gap since the last one
                self.send(2, msgpack.packb([10, message[1]]))
                load.beats += 1
                t = now()
                if self.last_server_beat:
                    watch.beat_gap_max = max(watch.beat_gap_max, t - self.last_server_beat)
                self.last_server_beat = t
            elif kind == 12:  # the answer to one of our heartbeats
                sent = self.hb_out.pop(message[1], None)
                if sent is not None:
                    rtt = now() - sent
                    watch.answered += 1
                    watch.rtts.append(rtt)
                    self.hb_worst = max(self.hb_worst, rtt)
                if not self.hb_out:
                    self.hb_timed_out = False
            else:
                load.data_frame()


def _messages(payload: bytes) -> list[list[object]]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload)
    return list(unpacker)


async def beat(load: Load, watch: Watch) -> None:
    """The bystanders' client heartbeats: each connection every interval (staggered), checked for timeouts."""
    while True:
        await asyncio.sleep(0.05)
        t = now()
        for conn in load.protocols:
            if not conn.is_ready or conn.lost:
                continue
            if not conn.hb_due:
                conn.hb_due = t + random.uniform(0.0, watch.interval)
            elif t >= conn.hb_due:
                conn.hb_seq += 1
                conn.hb_out[conn.hb_seq] = t
                conn.send(2, msgpack.packb([11, conn.hb_seq, int(t * 1e6)]))
                watch.sent += 1
                conn.hb_due += watch.interval
            if conn.hb_out and not conn.hb_timed_out and t - min(conn.hb_out.values()) > watch.timeout:
                conn.hb_timed_out = True  # once per episode: until every heartbeat in flight is answered
                watch.timeouts += 1


async def reopen(load: Load, carry: tuple[bytes, int] | None = None) -> None:
    """Reconnect one lost connection: attempt n waits uniform(0, min(10, 0.5 * 2**(n-1))) s (full jitter)."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        attempt += 1
        await asyncio.sleep(random.uniform(0.0, min(10.0, 0.5 * 2 ** (attempt - 1))))
        load.attempts += 1
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: Conn(load, carry), HOST, load.port), load.open_timeout)
        except ConnectionRefusedError:
            load.refused += 1
            continue
        except TimeoutError:
            load.open_timeouts += 1
            continue
        except OSError as e:
            name = type(e).__name__ + (f"[{e.errno}]" if e.errno else "")
            load.other_errors[name] = load.other_errors.get(name, 0) + 1
            continue
        try:
            await asyncio.wait_for(asyncio.shield(protocol.settled), load.open_timeout)
        except TimeoutError:
            transport.abort()
            load.open_timeouts += 1
            continue
        if not protocol.is_ready:
            if not protocol.refused:  # a refused upgrade is counted under its status line
                load.other_errors["closed before the welcome"] = load.other_errors.get("closed before the welcome", 0) + 1
            continue
        t = now()
        load.protocols.append(protocol)
        load.restored += 1
        load.back_delays.append(t - (load.lost_at or t))
        load.pending -= 1
        if load.pending == 0:
            load.closes_since_back = 0
            emit("restored", seconds=t - (load.lost_at or t), t_last=t, attempts=load.attempts,
                 resumes=load.resumes, resume_refusals=load.resume_refusals,
                 attempts_refused=load.refused, open_timeouts=load.open_timeouts, other_errors=load.other_errors,
                 conns=load.restored, delays=[round(d, 4) for d in load.back_delays])
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
    parser.add_argument("--open-timeout", type=float, default=30.0,
                        help="--reconnect: seconds one attempt may take from connect to the hub welcome")
    parser.add_argument("--watch", type=float, nargs=2, metavar=("INTERVAL", "TIMEOUT"),
                        help="hub: bystanders (bench/storm.py): own heartbeats every INTERVAL s, late after TIMEOUT s")
    args = parser.parse_args()
    raise_nofile()
    loop = asyncio.get_running_loop()
    load = Load(args.impl, args.port, args.conns)
    load.reconnect = args.reconnect
    load.open_timeout = args.open_timeout
    if args.watch:
        if args.impl != "hub":
            parser.error("--watch: hub only")
        load.watch = Watch(*args.watch)
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
    beating = asyncio.ensure_future(beat(load, load.watch)) if load.watch is not None else None

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
            t = now()
            watched = load.watch.report(load.protocols, t) if load.watch is not None else {}
            emit("count", beats=load.beats, closed=load.closed, frames=load.frames, t=t,
                 unexpected_closes=load.unexpected_closes, closes_since_back=load.closes_since_back,
                 close_codes=load.close_codes, **watched)
        elif words[0] == "mark" and load.watch is not None:
            load.watch.mark(load.protocols)
            emit("marked")
        elif words[0] == "drop":  # bench/storm.py: every open connection reset at once, then reopened
            t = now()
            load.lost_at = t
            dropped = sum(protocol.drop() for protocol in load.protocols)
            load.pending += dropped
            load.protocols = []  # reopen() adds the new ones
            emit("dropped", conns=dropped, t=t)
    if beating is not None:
        beating.cancel()
    loop.remove_reader(sys.stdin.fileno())
    for protocol in load.protocols:
        if protocol.transport is not None:
            protocol.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())
