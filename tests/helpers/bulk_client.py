"""
A hub client process for the slow-link tests: bulk echo calls.

    python3 tests/helpers/bulk_client.py ws://127.0.0.1:PORT/hub/probe --calls 3 --size 900000
        [--heartbeat INTERVAL TIMEOUT] [--asyncio] [--socket-buffer BYTES] [--in-flight N] [--wait-go]

Connects (the Twisted client, or the asyncio one with --asyncio), prints
"READY <connection id> <local port>", then makes its echo calls, each with
its own payload, all at once or at most N at a time (--in-flight: a new one
as each result arrives, so the results queued at the server stay within its
outgoing budget), right away or, with --wait-go, once a line arrives on stdin
(so that many clients start together), and prints "RESULT <i> ok <seconds>" for each result equal
to what it sent ("RESULT <i> wrong ..." / "FAILED <i> <error>" otherwise),
then "DONE <seconds>" and closes normally.  Whenever the connection ends it
prints "CLOSED <kind> <message>".  Seconds count from READY.  "STALLED <message>"
when the client deferred its heartbeat timeout because its own event loop
was stalled (docs/heartbeat.md, "Stall awareness": one more exchange).

--socket-buffer sets the socket's SO_RCVBUF and SO_SNDBUF once connected
(Linux then stops growing them): a stopped client's kernel takes only that
much of what is sent to it, as on a path with small buffers.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def payload(index: int, size: int) -> bytes:
    return bytes([65 + index % 26]) * size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--size", type=int, default=900_000)
    parser.add_argument("--heartbeat", type=float, nargs=2, metavar=("INTERVAL", "TIMEOUT"))
    parser.add_argument("--asyncio", action="store_true")
    parser.add_argument("--socket-buffer", type=int, default=0)
    parser.add_argument("--in-flight", type=int, default=0, help="at most this many calls at once (0: all)")
    parser.add_argument("--wait-go", action="store_true", help="start calling once a line arrives on stdin")
    args = parser.parse_args()

    from twisted_hub import HeartbeatPolicy, HubClientOptions

    policy = None
    if args.heartbeat:
        policy = HeartbeatPolicy(enabled=True, interval=args.heartbeat[0], timeout=args.heartbeat[1])
    options = HubClientOptions(
        heartbeat=policy, max_message_size=4 * 1024 * 1024,
        on_disconnected=lambda reason: print(f"CLOSED {reason.kind.value} {reason.message}", flush=True),
    )
    report_stalls(args.asyncio)
    if args.asyncio:
        run_asyncio(args, options)
    else:
        run_twisted(args, options)


def report_stalls(asyncio: bool) -> None:
    """Print "STALLED <message>" when the client takes its stall grace (its log line says so)."""
    if asyncio:
        import logging

        class Stalls(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                message = record.getMessage()
                if "event loop was stalled" in message:
                    print(f"STALLED {message}", flush=True)

        logger = logging.getLogger("twisted_hub.aio")
        logger.setLevel(logging.INFO)
        logger.addHandler(Stalls())
    else:
        from twisted.logger import formatEvent, globalLogPublisher

        def stalls(event: dict[str, Any]) -> None:
            if "event loop was stalled" in (event.get("log_format") or ""):
                print(f"STALLED {formatEvent(event)}", flush=True)

        globalLogPublisher.addObserver(stalls)


def small_buffers(sock: Any, size: int) -> None:
    import socket

    if size:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def report(index: int, value: Any, size: int, started: float) -> None:
    verdict = "ok" if value == payload(index, size) else f"wrong {type(value).__name__} {len(value or b'')}"
    print(f"RESULT {index} {verdict} {time.monotonic() - started:.3f}", flush=True)


def run_twisted(args: argparse.Namespace, options: Any) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredList

    from twisted_hub import connect

    def connected(client: Any) -> Any:
        small_buffers(client.transport.getHandle(), args.socket_buffer)
        print(f"READY {client.connection_id} {client.transport.getHost().port}", flush=True)
        if args.wait_go:
            from twisted.internet.threads import deferToThread

            return deferToThread(sys.stdin.readline).addCallback(lambda _: calling(client))
        return calling(client)

    def calling(client: Any) -> Any:
        started = time.monotonic()
        from twisted.internet.defer import DeferredSemaphore

        slots = DeferredSemaphore(args.in_flight or args.calls)
        calls = []
        for index in range(args.calls):
            d = slots.run(client.call, "echo", payload(index, args.size))
            d.addCallback(lambda value, i=index: report(i, value, args.size, started)).addErrback(
                lambda f, i=index: print(f"FAILED {i} {f.value!r}", flush=True)
            )
            calls.append(d)

        def done(_: object) -> Any:
            print(f"DONE {time.monotonic() - started:.3f}", flush=True)
            return client.disconnect()

        return DeferredList(calls).addCallback(done)

    def failed(failure: Any) -> None:
        print(f"FAILED connect {failure.value!r}", flush=True)

    d = connect(args.url, options=options).addCallback(connected).addErrback(failed)
    d.addBoth(lambda _: reactor.callLater(0, reactor.stop))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def run_asyncio(args: argparse.Namespace, options: Any) -> None:
    import asyncio

    from twisted_hub.aio import open_client

    async def one(client: Any, index: int, started: float, slots: asyncio.Semaphore) -> None:
        try:
            async with slots:
                value = await client.call("echo", payload(index, args.size))
        except Exception as e:
            print(f"FAILED {index} {e!r}", flush=True)
        else:
            report(index, value, args.size, started)

    async def run() -> None:
        client = await open_client(args.url, options=options)
        small_buffers(client._websocket.transport.get_extra_info("socket"), args.socket_buffer)
        print(f"READY {client.connection_id} {client._websocket.local_address[1]}", flush=True)
        if args.wait_go:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = time.monotonic()
        slots = asyncio.Semaphore(args.in_flight or args.calls)
        await asyncio.gather(*(one(client, index, started, slots) for index in range(args.calls)))
        print(f"DONE {time.monotonic() - started:.3f}", flush=True)
        if client.disconnect_reason is None:
            await client.disconnect()

    asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
