"""
RPC load over one connection with each implementation's own client:
``python3 bench/_rpc_client.py IMPL PORT --inflight K --warmup S --duration S --server-pid P``.

- ``hub``: ``twisted_hub.connect()`` then ``client.call("echo", x)``;
- ``autobahn``: a plain ``WebSocketClientProtocol`` sending msgpack
  ``[id, "echo", [x]]`` and reading ``[id, x]``;
- ``socketio``: ``AsyncClient(serializer="msgpack")`` and ``call("echo", x)``;
- ``websockets``: websockets' asyncio client (compression off) sending
  msgpack ``[id, "echo", [x]]`` and reading ``[id, x]``.

``x`` is ``--size`` bytes (msgpack bin).  The asyncio clients run on uvloop, the
autobahn client with TCP_NODELAY, unless ``BENCH_REFERENCES=stock`` (see _server.py).

With ``--connect N`` (the ``accept-own`` case) the client instead opens N
connections one after another, each with its library's own client and as
that client opens one (hub: ``connect()``, the upgrade then HELLO and
WELCOME; autobahn and websockets: the upgrade then one echo call, the
equivalent first exchange), keeps them open, and reports the time, its own
CPU and the server's.

K calls are kept in flight: each answer starts the next call.  Completed
calls are counted over the measured window (after a warm-up); the server's
CPU over the same window is read with psutil.  Prints one ``result`` line.
"""

from __future__ import annotations

import argparse

from _common import (
    HOST,
    HUB_NAME,
    STOCK_REFERENCES,
    apply_hub_ablation,
    cpu_seconds,
    emit,
    now,
    require_websockets_speedups,
    rpc_value,
    run_asyncio,
)


class Window:
    """Counts completions between two instants."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.completed = 0
        self.stopping = False
        self.start_count = 0
        self.start_time = 0.0
        self.start_cpu = 0.0
        self.result: dict[str, float] = {}

    def begin(self) -> None:
        self.start_count = self.completed
        self.start_time = now()
        self.start_cpu = cpu_seconds(self.server_pid)

    def end(self) -> None:
        elapsed = now() - self.start_time
        self.result = {
            "calls": self.completed - self.start_count,
            "elapsed": elapsed,
            "server_cpu": cpu_seconds(self.server_pid) - self.start_cpu,
        }
        self.stopping = True


def run_twisted(args: argparse.Namespace) -> None:
    from twisted.internet import defer, task

    window = Window(args.server_pid)
    value = rpc_value(args.size)

    async def main(reactor) -> None:  # type: ignore[no-untyped-def]
        if args.connect:
            await _connect_twisted(reactor, args)
            return
        if args.impl == "hub":
            import os

            from autobahn.twisted.websocket import WebSocketClientProtocol

            from twisted_hub import connect
            from twisted_hub.types import HubClientProtocol

            # Ablation (see _server.py): BENCH_HUB_DISABLE=sendData,onMessageEnd.
            for name in filter(None, os.environ.get("BENCH_HUB_DISABLE", "").split(",")):
                setattr(HubClientProtocol, name, getattr(WebSocketClientProtocol, name))
            apply_hub_ablation()  # BENCH_HUB_ABLATE (see _common.py)

            url = f"ws://{HOST}:{args.port}/{HUB_NAME}"
            if os.environ.get("BENCH_HUB_RESUME") == "1":
                # bench/resume_cost.py: a resumable session (only reconnecting clients resume)
                from twisted_hub import HubClientOptions, ReconnectingHubClient

                service = ReconnectingHubClient(url, options=HubClientOptions(resume=True), clock=reactor)
                service.start()
                client = await service.when_connected()
                assert client.session.core.resume is not None, "the session is not resumable"
            else:
                client = await connect(url, clock=reactor)

            def issue() -> None:
                client.call("echo", value).addCallback(answered)

            def answered(value: object) -> None:
                window.completed += 1
                if not window.stopping:
                    issue()
        else:
            issue = await _raw_autobahn(reactor, args.port, window, value)
        for _ in range(args.inflight):
            issue()
        await task.deferLater(reactor, args.warmup, window.begin)
        await task.deferLater(reactor, args.duration, window.end)
        await task.deferLater(reactor, 0.2, lambda: None)  # let calls in flight drain
        emit("result", **window.result)

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))


async def _raw_autobahn(reactor, port: int, window: Window, value: bytes):  # type: ignore[no-untyped-def]
    import msgpack
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint

    packb, unpackb = msgpack.packb, msgpack.unpackb
    opened: Deferred[None] = Deferred()

    class RawClient(WebSocketClientProtocol):
        next_id = 0
        # Nagle off, as autobahn's documented default says (see _server.py, RawProtocol)
        if not STOCK_REFERENCES:
            tcpNoDelay = True

        def onOpen(self) -> None:
            opened.callback(None)

        def issue(self) -> None:
            self.next_id += 1
            self.sendMessage(packb([self.next_id, "echo", [value]]), isBinary=True)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            unpackb(payload)
            window.completed += 1
            if not window.stopping:
                self.issue()

    factory = WebSocketClientFactory(f"ws://{HOST}:{port}/")
    factory.protocol = RawClient
    protocol = await TCP4ClientEndpoint(reactor, HOST, port).connect(factory)
    await opened
    return protocol.issue


def run_socketio(args: argparse.Namespace) -> None:
    import asyncio

    import socketio

    window = Window(args.server_pid)
    value = rpc_value(args.size)

    async def main() -> None:
        sio = socketio.AsyncClient(serializer="msgpack", reconnection=False)
        await sio.connect(f"http://{HOST}:{args.port}", transports=["websocket"])

        async def worker() -> None:
            while not window.stopping:
                await sio.call("echo", value, timeout=10)
                window.completed += 1

        workers = [asyncio.ensure_future(worker()) for _ in range(args.inflight)]
        await asyncio.sleep(args.warmup)
        window.begin()
        await asyncio.sleep(args.duration)
        window.end()
        await asyncio.wait(workers, timeout=2)
        emit("result", **window.result)
        await sio.disconnect()

    run_asyncio(main())


async def _connect_twisted(reactor, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    """--connect N: open N connections one at a time with the hub's or autobahn's own client."""
    import msgpack
    from twisted.internet.defer import Deferred

    kept: list[object] = []
    value = rpc_value(16)
    if args.impl == "hub":
        from twisted_hub import connect

        async def open_one() -> None:
            kept.append(await connect(f"ws://{HOST}:{args.port}/{HUB_NAME}", clock=reactor))
    else:
        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
        from twisted.internet.endpoints import TCP4ClientEndpoint

        class FirstEcho(WebSocketClientProtocol):
            if not STOCK_REFERENCES:
                tcpNoDelay = True

            def onOpen(self) -> None:
                self.sendMessage(msgpack.packb([1, "echo", [value]]), isBinary=True)

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                msgpack.unpackb(payload)
                self.factory.answered.callback(None)

        endpoint = TCP4ClientEndpoint(reactor, HOST, args.port)

        async def open_one() -> None:
            factory = WebSocketClientFactory(f"ws://{HOST}:{args.port}/")
            factory.protocol = FirstEcho
            factory.answered = Deferred()
            kept.append(await endpoint.connect(factory))
            await factory.answered

    await _timed_opening(open_one, args)


async def _timed_opening(open_one, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    for _ in range(max(1, args.connect // 10)):  # warm-up: imports, caches, the server's first connections
        await open_one()
    t0, cpu0, server0 = now(), cpu_seconds(), cpu_seconds(args.server_pid)
    for _ in range(args.connect):
        await open_one()
    emit(
        "result", connections=args.connect, elapsed=now() - t0, client_cpu=cpu_seconds() - cpu0,
        server_cpu=cpu_seconds(args.server_pid) - server0,
    )


def run_websockets(args: argparse.Namespace) -> None:
    import asyncio

    import msgpack
    from websockets.asyncio.client import connect

    if not STOCK_REFERENCES:
        require_websockets_speedups()
    window = Window(args.server_pid)
    value = rpc_value(args.size)
    packb, unpackb = msgpack.packb, msgpack.unpackb

    async def open_one() -> None:
        ws = await connect(f"ws://{HOST}:{args.port}/", compression=None, max_size=1024 * 1024, ping_interval=None)
        await ws.send(packb([1, "echo", [rpc_value(16)]]))
        unpackb(await ws.recv())
        kept.append(ws)

    kept: list[object] = []

    async def main() -> None:
        if args.connect:
            await _timed_opening(open_one, args)
            return
        async with connect(
            f"ws://{HOST}:{args.port}/", compression=None, max_size=1024 * 1024, ping_interval=None
        ) as ws:
            next_id = 0

            async def calls() -> None:
                nonlocal next_id
                for _ in range(args.inflight):
                    next_id += 1
                    await ws.send(packb([next_id, "echo", [value]]))
                while True:
                    unpackb(await ws.recv())
                    window.completed += 1
                    if window.stopping:
                        continue
                    next_id += 1
                    await ws.send(packb([next_id, "echo", [value]]))

            worker = asyncio.ensure_future(calls())
            await asyncio.sleep(args.warmup)
            window.begin()
            await asyncio.sleep(args.duration)
            window.end()
            await asyncio.sleep(0.2)  # let calls in flight drain
            worker.cancel()
            emit("result", **window.result)

    run_asyncio(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl", choices=["hub", "autobahn", "socketio", "websockets"])
    parser.add_argument("port", type=int)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--size", type=int, default=100, help="bytes in each call's argument")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--connect", type=int, default=0, help="open this many connections one at a time instead")
    args = parser.parse_args()
    if args.impl == "socketio":
        run_socketio(args)
    elif args.impl == "websockets":
        run_websockets(args)
    else:
        run_twisted(args)


if __name__ == "__main__":
    main()
