"""
One benchmark server process: ``python3 bench/_server.py IMPL [--heartbeat S]``.

IMPL is ``hub`` (twisted-hub), ``autobahn`` (raw autobahn on Twisted),
``socketio`` (python-socketio AsyncServer on aiohttp, msgpack serializer) or
``websockets`` (websockets' asyncio server, msgpack echo as for autobahn).
The references run as their libraries document they run fastest (raw autobahn
with its documented TCP_NODELAY, the asyncio ones on uvloop, websockets with its
C extension); ``BENCH_REFERENCES=stock`` runs them as before 2026-12-07
(docs/performance.md, "The references").
Every implementation offers the same three things:

- an RPC ``echo`` (hub method / msgpack ``[id, method, args]`` echo / socket.io
  event with an ack);
- a group ``g`` that every connection joins when it opens (hub group / a list
  of protocols / a socket.io room);
- a heartbeat at ``--heartbeat`` seconds (hub server heartbeat / autobahn
  ``autoPingInterval`` / engine.io ping), off when 0.

It listens on an ephemeral loopback port, reports ``{"event": "ready",
"port": ...}`` on stdout, then takes commands on stdin, one per line:
``stats`` (Twisted servers: with ``lag_max``, the longest reactor turn since
``mark``, as a 0.1 s timer's worst lateness), ``fanout COUNT SIZE [turn]`` (``turn``: one broadcast per
reactor turn, else all in one turn), ``trim`` (Twisted servers: ``malloc_trim(0)``,
then report the RSS), ``snapshot PATH`` (Twisted servers started with ``PYTHONTRACEMALLOC``:
a tracemalloc snapshot dumped to PATH), ``profile`` and ``profile_stop PATH`` (Twisted servers:
cProfile between them, the stats written to PATH), ``gc`` (Twisted servers: the
garbage collector's runs by generation, and the objects it tracks), ``opcodes`` and
``opcodes_stop`` (Twisted servers: Python bytecodes run between them, a count that
does not depend on the machine's load) and ``quit``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from _common import (
    HOST,
    HUB_NAME,
    STOCK_REFERENCES,
    apply_hub_ablation,
    cpu_seconds,
    emit,
    now,
    raise_nofile,
    require_websockets_speedups,
    rss_bytes,
    run_asyncio,
)

BACKLOG = 4096


def fanout_payload(size: int) -> bytes:
    return bytes(range(256))[:size] if size <= 256 else b"x" * size


# -- Twisted servers (hub, autobahn) -------------------------------------------
def _twisted_logging() -> None:
    # As under twistd: a real observer, events under warn filtered out.  txaio (autobahn's
    # logging layer) at the same level, as `twistd hub` sets it (LogLevelService): its
    # loggers then drop info events where they are emitted.
    import txaio
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    txaio.set_global_log_level("warn")
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


class LagWatch:
    """
    How late a 0.1 s timer fires at worst since the last C{mark}: the longest reactor turn
    (bench/storm.py: one turn handles every connection reset at once), reported by ``stats``.
    """

    def __init__(self, reactor) -> None:  # type: ignore[no-untyped-def]
        from twisted.internet.task import LoopingCall

        self.worst = 0.0
        self.reactor = reactor
        self.last = reactor.seconds()
        self.call = LoopingCall(self.tick)
        self.call.clock = reactor
        self.call.start(0.1, now=False)

    def tick(self) -> None:
        t = self.reactor.seconds()
        self.worst = max(self.worst, t - self.last - 0.1)
        self.last = t

    def mark(self) -> None:
        self.worst = 0.0


def _serve_commands_twisted(reactor, handle) -> None:  # type: ignore[no-untyped-def]
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    lag = LagWatch(reactor)

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            words = line.decode().split()
            if not words:
                return
            if words[0] == "quit":
                reactor.stop()
                return
            if words[0] == "stats":
                gc.collect()
                extra = {}
                if hasattr(handle, "group_count"):
                    extra = {"group": handle.group_count(), "backplane": handle.backplane_stats()}
                emit("stats", conns=handle.connections(), rss=rss_bytes(), cpu=cpu_seconds(), lag_max=lag.worst,
                     **extra)
                return
            if words[0] == "profile":  # bench/fanout_profile.py, bench/heartbeat_profile.py: cProfile from now on
                import cProfile

                self.profiler = cProfile.Profile()
                self.profiler.enable()
                emit("profiling")
                return
            if words[0] == "profile_stop":  # ... until now, the stats written to words[1]
                self.profiler.disable()
                self.profiler.dump_stats(words[1])
                emit("profiled", path=words[1], conns=handle.connections())
                return
            if words[0] == "opcodes":  # bench/fanout_profile.py: count the bytecodes run from now on
                counts = self.opcodes = {}

                def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
                    frame.f_trace_opcodes = True
                    if event == "opcode":
                        code = frame.f_code
                        counts[code] = counts.get(code, 0) + 1
                    return tracer

                sys.settrace(tracer)
                emit("counting")
                return
            if words[0] == "opcodes_stop":  # ... until now: the total, and the 40 functions that ran most
                sys.settrace(None)
                top = sorted(self.opcodes.items(), key=lambda item: -item[1])[:40]
                emit("opcodes", count=sum(self.opcodes.values()),
                     top=[[f"{c.co_filename.rsplit('site-packages/', 1)[-1]}:{c.co_firstlineno}({c.co_name})", n]
                          for c, n in top])
                return
            if words[0] == "gc":  # bench/fanout_profile.py: the collector's runs so far, by generation
                emit("gc", collections=[g["collections"] for g in gc.get_stats()], objects=len(gc.get_objects()))
                return
            if words[0] == "mark":  # bench/storm.py: the longest turn from now on
                lag.mark()
                emit("marked")
                return
            if words[0] == "snapshot":  # bench/conn_memory_sites.py: Python's allocations, by site
                import tracemalloc

                gc.collect()
                tracemalloc.take_snapshot().dump(words[1])
                emit("snapshot", rss=rss_bytes(), conns=handle.connections())
                return
            if words[0] == "trim":  # bench/memory.py: how much of the kept memory malloc can give back
                import ctypes

                gc.collect()
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                emit("trim", rss=rss_bytes())
                return
            if words[0] == "fanout":
                count, size = int(words[1]), int(words[2])
                per_turn = len(words) > 3 and words[3] == "turn"
                payload = fanout_payload(size)
                t0 = now()
                if not per_turn:
                    # burst: every round in one reactor turn
                    for _ in range(count):
                        handle.broadcast(payload)
                    emit("fanout", t0=t0, t1=now(), members=handle.connections(), count=count)
                    return

                # one round per reactor turn: the next broadcast is scheduled
                # after the reactor had its chance to write and read
                def step(left: int) -> None:
                    handle.broadcast(payload)
                    if left > 1:
                        reactor.callLater(0, step, left - 1)
                    else:
                        emit("fanout", t0=t0, t1=now(), members=handle.connections(), count=count)

                step(count)
            if words[0] == "fanout_turns":
                # bench/scaleout.py: the same messages, the reactor running between them (as when
                # they come from separate calls), so writes to Redis leave while the burst goes on.
                from twisted.internet.task import cooperate

                count, size = int(words[1]), int(words[2])
                payload = fanout_payload(size)
                t0 = now()
                work = (handle.fanout(1, payload) for _ in range(count))
                cooperate(work).whenDone().addCallback(
                    lambda _: emit("fanout", t0=t0, t1=now(), members=handle.connections(), count=count)
                )

        def connectionLost(self, reason: object = None) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Commands())


def run_hub(args: argparse.Namespace) -> None:
    from twisted.internet import reactor

    from twisted_hub import HeartbeatPolicy, Hub, HubServerFactory, hub, method

    @hub(HUB_NAME)
    class BenchHub(Hub):
        @method
        def echo(self, value: object) -> object:
            return value

        def on_connected(self) -> None:
            self.groups.add("g")

    # Ablation, for measuring one library fast path at a time:
    # BENCH_HUB_DISABLE=sendData,onMessageEnd puts autobahn's own method back.
    from autobahn.twisted.websocket import WebSocketServerProtocol

    from twisted_hub.types import HubServerProtocol

    for name in filter(None, os.environ.get("BENCH_HUB_DISABLE", "").split(",")):
        setattr(HubServerProtocol, name, getattr(WebSocketServerProtocol, name))
    apply_hub_ablation()  # BENCH_HUB_ABLATE=no-write-through,batch-1m,no-native-mask

    policy = HeartbeatPolicy.every(args.heartbeat, args.timeout) if args.heartbeat else None
    backplane = None
    if args.redis:  # bench/scaleout.py: one node of several on one Redis
        from twisted_hub.redis import RedisBackplane

        backplane = RedisBackplane(args.redis)
    # Every bench client connects from 127.0.0.1: no per-address or total cap.
    factory = HubServerFactory(
        [BenchHub], heartbeat=policy, clock=reactor, backplane=backplane,
        max_connections=None, max_connections_per_ip=None,
        metrics=args.metrics or bool(os.environ.get("BENCH_HUB_METRICS")),
        # bench/resume_cost.py: sessions resumable (its clients announce resume too)
        resume=os.environ.get("BENCH_HUB_RESUME") == "1",
    )
    runtime = factory.hub_runtime(HUB_NAME)

    class Handle:
        def connections(self) -> int:
            return len(runtime.connections)

        def group_count(self) -> int:
            """Members of the group on every node (with --redis)."""
            return runtime.groups.count("g") + runtime.backplane.remote_count(HUB_NAME, "g")

        def backplane_stats(self) -> dict[str, object]:
            b = runtime.backplane
            return {name: getattr(b, name) for name in ("published", "dropped_disconnected", "dropped_overload")
                    if hasattr(b, name)}

        def fanout(self, count: int, payload: bytes) -> int:
            for _ in range(count):
                self.broadcast(payload)
            return runtime.groups.count("g")

        def broadcast(self, payload: bytes) -> None:
            # The public path: a hub instance broadcasting to its group.
            sender = next(iter(runtime.connections.values())).hub
            sender.clients.group("g").msg(payload)

    _listen_twisted(reactor, factory, Handle())


def run_autobahn(args: argparse.Namespace) -> None:
    import msgpack
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet import reactor

    methods = {"echo": lambda value: value}
    unpackb = msgpack.unpackb
    packb = msgpack.packb

    class RawProtocol(WebSocketServerProtocol):
        # autobahn's documented default is tcpNoDelay=True, but its connectionMade reads the
        # option before it copies the options from the factory, swallows the AttributeError and
        # leaves Nagle's algorithm on (autobahn 26.x).  An attribute of the protocol class is
        # read there (and kept by the copy), so the default autobahn documents takes effect.
        if not STOCK_REFERENCES:
            tcpNoDelay = True

        def onOpen(self) -> None:
            self.factory.members[id(self)] = self

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            call_id, name, call_args = unpackb(payload)
            self.sendMessage(packb([call_id, methods[name](*call_args)]), isBinary=True)

        def onClose(self, wasClean: bool, code: object, reason: object) -> None:
            self.factory.members.pop(id(self), None)

    factory = WebSocketServerFactory()
    factory.protocol = RawProtocol
    factory.members = {}
    # autobahn's other defaults are already its fastest for this traffic (docs/performance.md,
    # "The references"): no auto-fragmentation (autoFragmentSize=0), no frame/octet logging or
    # timing tracking, NVX (its C masker and UTF-8 validator) when built; utf8validateIncoming
    # only touches text messages (these are all binary); applyMask=False would break RFC 6455.
    if args.heartbeat:
        # autoPingSize stays at its minimum (12: the timestamp and sequence number it checks)
        factory.setProtocolOptions(autoPingInterval=args.heartbeat, autoPingTimeout=args.timeout)

    class Handle:
        def connections(self) -> int:
            return len(factory.members)

        def broadcast(self, payload: bytes) -> None:
            # The reference loop: encode once, write the same frame to each member.
            prepared = factory.prepareMessage(payload, isBinary=True)
            for protocol in list(factory.members.values()):
                protocol.sendPreparedMessage(prepared)

    _listen_twisted(reactor, factory, Handle())


#: the port to listen on (0: any free one); bench/storm.py restarts a server on the same port
LISTEN_PORT = 0


def _listen_twisted(reactor, factory, handle) -> None:  # type: ignore[no-untyped-def]
    _twisted_logging()
    port = reactor.listenTCP(LISTEN_PORT, factory, backlog=BACKLOG, interface=HOST)
    _serve_commands_twisted(reactor, handle)
    reactor.callWhenRunning(lambda: emit("ready", port=port.getHost().port))
    reactor.run()


# -- python-socketio ---------------------------------------------------------
def run_socketio(args: argparse.Namespace) -> None:
    import asyncio
    import logging

    import socketio
    from aiohttp import web

    logging.basicConfig(level=logging.WARNING)
    interval = args.heartbeat or 3600
    timeout = args.timeout if args.heartbeat else 3600
    # bench/scaleout.py: one node of several on one Redis (python-socketio's own scale-out)
    manager = socketio.AsyncRedisManager(args.redis) if args.redis else None
    sio = socketio.AsyncServer(
        async_mode="aiohttp", serializer="msgpack", ping_interval=interval, ping_timeout=timeout,
        cors_allowed_origins="*", max_http_buffer_size=1024 * 1024, client_manager=manager,
    )
    app = web.Application()
    sio.attach(app)
    members: set[str] = set()

    @sio.event
    async def connect(sid: str, environ: dict[str, object]) -> None:
        members.add(sid)
        await sio.enter_room(sid, "g")

    @sio.event
    async def disconnect(sid: str, *rest: object) -> None:
        members.discard(sid)

    @sio.on("echo")
    async def echo(sid: str, value: object) -> object:
        return value

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0, backlog=BACKLOG)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        lines: asyncio.Queue[str] = asyncio.Queue()
        buffer = bytearray()

        def readable() -> None:
            import os

            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                lines.put_nowait("quit")
                return
            buffer.extend(chunk)
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                lines.put_nowait(line.decode())

        loop.add_reader(sys.stdin.fileno(), readable)
        emit("ready", port=port)

        async def commands() -> None:
            while True:
                words = (await lines.get()).split()
                if not words:
                    continue
                if words[0] == "quit":
                    break
                if words[0] == "stats":
                    gc.collect()
                    emit("stats", conns=len(members), rss=rss_bytes(), cpu=cpu_seconds())
                elif words[0] == "fanout":
                    count, size = int(words[1]), int(words[2])
                    per_turn = len(words) > 3 and words[3] == "turn"
                    payload = fanout_payload(size)
                    t0 = now()
                    for _ in range(count):
                        await sio.emit("msg", payload, room="g")
                        if per_turn:
                            await asyncio.sleep(0)  # one round per event-loop turn
                    emit("fanout", t0=t0, t1=now(), members=len(members), count=count)
            done.set_result(None)

        task = asyncio.ensure_future(commands())
        await done
        loop.remove_reader(sys.stdin.fileno())
        task.cancel()
        await runner.cleanup()

    run_asyncio(main())


# -- websockets (asyncio) -----------------------------------------------------
def run_websockets(args: argparse.Namespace) -> None:
    """websockets' asyncio server: msgpack ``[id, method, args]`` echo as in the autobahn server."""
    import asyncio

    import msgpack
    from websockets.asyncio.server import broadcast, serve

    if not STOCK_REFERENCES:
        require_websockets_speedups()

    methods = {"echo": lambda value: value}
    unpackb, packb = msgpack.unpackb, msgpack.packb
    members: set[object] = set()

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        members.add(ws)
        try:
            async for message in ws:
                call_id, name, call_args = unpackb(message)
                await ws.send(packb([call_id, methods[name](*call_args)]))
        finally:
            members.discard(ws)

    async def main() -> None:
        # Compression off, as on the other servers (websockets would otherwise
        # negotiate permessage-deflate with its own client); its own ping is the
        # heartbeat, off when --heartbeat is 0.
        async with serve(
            handler, HOST, 0, compression=None, max_size=1024 * 1024, backlog=BACKLOG,
            ping_interval=args.heartbeat or None, ping_timeout=args.timeout if args.heartbeat else None,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            loop = asyncio.get_running_loop()
            lines = _asyncio_lines(loop)
            emit("ready", port=port)
            while True:
                words = (await lines.get()).split()
                if not words:
                    continue
                if words[0] == "quit":
                    break
                if words[0] == "stats":
                    gc.collect()
                    emit("stats", conns=len(members), rss=rss_bytes(), cpu=cpu_seconds())
                elif words[0] == "fanout":
                    count, size = int(words[1]), int(words[2])
                    per_turn = len(words) > 3 and words[3] == "turn"
                    payload = fanout_payload(size)
                    t0 = now()
                    for _ in range(count):
                        broadcast(members, payload)  # type: ignore[arg-type]
                        if per_turn:
                            await asyncio.sleep(0)  # one round per event-loop turn
                    emit("fanout", t0=t0, t1=now(), members=len(members), count=count)
            loop.remove_reader(sys.stdin.fileno())

    run_asyncio(main())


def _asyncio_lines(loop):  # type: ignore[no-untyped-def]
    """Commands from stdin, one per line, as an asyncio queue ("quit" at EOF)."""
    import asyncio

    lines: asyncio.Queue[str] = asyncio.Queue()
    buffer = bytearray()

    def readable() -> None:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            lines.put_nowait("quit")
            loop.remove_reader(sys.stdin.fileno())
            return
        buffer.extend(chunk)
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            lines.put_nowait(line.decode())

    loop.add_reader(sys.stdin.fileno(), readable)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl", choices=["hub", "autobahn", "socketio", "websockets"])
    parser.add_argument("--heartbeat", type=float, default=0.0, help="interval in seconds, 0 = off")
    parser.add_argument("--timeout", type=float, default=3.0, help="heartbeat timeout in seconds")
    parser.add_argument("--redis", default="", help="join the other servers on this Redis URL (hub, socketio)")
    parser.add_argument("--metrics", action="store_true", help="hub: keep Prometheus metrics (also BENCH_HUB_METRICS=1)")
    parser.add_argument("--port", type=int, default=0, help="hub/autobahn: listen on this port (0: any free one)")
    args = parser.parse_args()
    global LISTEN_PORT
    LISTEN_PORT = args.port
    raise_nofile()
    {"hub": run_hub, "autobahn": run_autobahn, "socketio": run_socketio, "websockets": run_websockets}[args.impl](args)


if __name__ == "__main__":
    main()
