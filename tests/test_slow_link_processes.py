"""
A slow link is not a dead peer, on real processes and sockets (127.0.0.1,
bounded in time): a server and clients in their own processes, a
rate-limiting proxy (tests/_rate_proxy.py) in this one.  The rule itself is
tested on a Clock in test_slow_link.py.

Each test runs its scenarios side by side (one connection each through the
proxy) to keep the wall-clock time down.
"""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred

from ._processes import ScriptProcess, spawn_script
from ._rate_proxy import Link, RateLimitingProxy

INTERVAL = 1.0
TIMEOUT = 3.0
RATE = 200_000
SIZE = 900_000
#: the slower link, with payloads giving the same 3x-the-timeout transfer per call
SLOW_RATE = 50_000
SLOW_SIZE = 150_000
#: SO_RCVBUF/SO_SNDBUF of the proxy's sockets and the frozen peer's (Linux doubles it):
#: small buffers between, so a stopped peer's bytes stop moving soon
BUFFER = 32 * 1024
#: what the scheduling of three processes on a shared machine may add to a drop
SLACK = 0.6


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


def client(url: str, *args: str) -> ScriptProcess:
    """A tests/helpers/bulk_client.py process (it prints READY, not a port)."""
    process = spawn_script(reactor(), "bulk_client.py", url, *args)
    process.started.addErrback(lambda failure: None)
    return process


async def ready(process: ScriptProcess) -> tuple[str, int]:
    """The client's connection id and local port, once it is connected."""
    line: str = await process.wait_for_line("READY ").addTimeout(20, reactor())
    _, connection_id, port = line.split()
    return connection_id, int(port)


def results(process: ScriptProcess) -> list[str]:
    return [line for line in process.lines if line.startswith(("RESULT", "FAILED"))]


def all_ok(process: ScriptProcess, calls: int) -> bool:
    """The client got every result, each equal to what it sent, and closed normally."""
    lines = results(process)
    return len(lines) == calls and all(" ok " in line for line in lines) and any(
        line.startswith("CLOSED normal") for line in process.lines
    )


def timed_out(server: ScriptProcess) -> set[str]:
    """The connections the server timed out (from its "DISCONNECTED <id> <kind>" lines)."""
    return {line.split()[1] for line in server.lines if line.startswith("DISCONNECTED ") and line.endswith(" timed-out")}


def bytes_stopped_at(link: Link, dropped_at: float) -> float:
    """When the proxy last read from the side sending to the frozen peer (its bytes stopped moving then)."""
    last = link.to_client.last_read_at
    assert last is not None and last <= dropped_at
    return last


@pytest_twisted.ensureDeferred
async def test_server_keeps_downloading_clients_and_drops_a_frozen_one() -> None:
    """
    Server heartbeats 1 s / 3 s, client-bound bytes rate-limited: a client
    downloading 3 x 900,000-byte echo results at 200 KB/s (13.5 s, every
    heartbeat queued behind up to 2.7 MB) and one downloading 3 x 150,000
    at 50 KB/s (9 s) are never timed out and get every result; a third,
    SIGSTOPped 2 s into its download at 200 KB/s, is dropped within
    interval + timeout of the moment its bytes stopped moving.
    """
    server = spawn_script(reactor(), "heartbeat_server.py", "--interval", str(INTERVAL), "--timeout", str(TIMEOUT))
    port = await server.started.addTimeout(20, reactor())
    fast = RateLimitingProxy(reactor(), port, to_client=RATE, to_server=None, socket_buffer=BUFFER)
    slow = RateLimitingProxy(reactor(), port, to_client=SLOW_RATE, to_server=None, socket_buffer=BUFFER)
    fast_url = f"ws://127.0.0.1:{fast.listen()}/hub/probe"
    slow_url = f"ws://127.0.0.1:{slow.listen()}/hub/probe"
    clients: list[ScriptProcess] = []
    try:
        clients.append(client(fast_url, "--calls", "3", "--size", str(SIZE)))
        clients.append(client(slow_url, "--calls", "3", "--size", str(SLOW_SIZE)))
        clients.append(client(fast_url, "--calls", "3", "--size", str(SIZE), "--socket-buffer", str(BUFFER)))
        live, slow_live, frozen = clients
        live_ids = [(await ready(live))[0], (await ready(slow_live))[0]]
        frozen_id, frozen_port = await ready(frozen)
        await sleep(2.0)
        frozen.freeze()
        frozen_at = time.monotonic()

        await server.wait_for_line(f"DISCONNECTED {frozen_id} timed-out").addTimeout(30, reactor())
        dropped_at = time.monotonic()
        for process in (live, slow_live):
            await process.wait_for_line("CLOSED").addTimeout(30, reactor())

        assert all_ok(live, 3), live.lines
        assert all_ok(slow_live, 3), slow_live.lines
        assert not set(live_ids) & timed_out(server), "\n".join(server.lines)
        stopped = bytes_stopped_at(fast.link_from(frozen_port), dropped_at)
        print(
            f"frozen client: its bytes stopped moving {stopped - frozen_at:.2f}s after SIGSTOP, "
            f"dropped {dropped_at - stopped:.2f}s after that ({dropped_at - frozen_at:.2f}s after SIGSTOP)"
        )
        assert dropped_at - stopped <= INTERVAL + TIMEOUT + SLACK
        # With 64 KB buffers between, they filled within a second (docs/heartbeat.md, "Slow links").
        assert stopped - frozen_at <= 3.0
    finally:
        for process in clients:
            await process.stop(reactor())
        await server.stop(reactor())
        await fast.stop()
        await slow.stop()


@pytest_twisted.ensureDeferred
async def test_uploading_clients_are_kept_and_drop_a_frozen_server() -> None:
    """
    Client heartbeats 1 s / 3 s (and the server's, 1 s / 3 s), server-bound
    bytes at 200 KB/s: a Twisted and an asyncio client each uploading
    3 x 900,000-byte echo calls (13.5 s; their heartbeats, and their
    answers to the server's, queued behind up to 2.7 MB) are never timed
    out by either side and get every result; the same two, uploading to a
    server SIGSTOPped 2 s in, drop it within interval + timeout of the
    moment their bytes stopped moving.
    """
    beats = ("--interval", str(INTERVAL), "--timeout", str(TIMEOUT))
    server = spawn_script(reactor(), "heartbeat_server.py", *beats)
    stopped_server = spawn_script(reactor(), "heartbeat_server.py", *beats, "--socket-buffer", str(BUFFER))
    proxies = [
        RateLimitingProxy(reactor(), await process.started.addTimeout(20, reactor()), None, RATE, BUFFER)
        for process in (server, stopped_server)
    ]
    urls = [f"ws://127.0.0.1:{proxy.listen()}/hub/probe" for proxy in proxies]
    heartbeat = ("--heartbeat", str(INTERVAL), str(TIMEOUT))
    clients: list[ScriptProcess] = []
    try:
        for url in urls:
            for kind in ((), ("--asyncio",)):
                clients.append(client(url, "--calls", "3", "--size", str(SIZE), *heartbeat, *kind))
        live, live_aio, to_frozen, to_frozen_aio = clients
        live_ids = [(await ready(live))[0], (await ready(live_aio))[0]]
        ports = [(await ready(to_frozen))[1], (await ready(to_frozen_aio))[1]]
        await sleep(2.0)
        stopped_server.freeze()
        frozen_at = time.monotonic()

        drops = []
        for process, port in zip((to_frozen, to_frozen_aio), ports, strict=True):
            line = await process.wait_for_line("CLOSED").addTimeout(30, reactor())
            dropped_at = time.monotonic()
            assert line.startswith("CLOSED timed-out"), process.lines
            stopped = proxies[1].link_from(port).to_server.last_read_at
            assert stopped is not None and stopped <= dropped_at
            drops.append((stopped - frozen_at, dropped_at - stopped))
        for process in (live, live_aio):
            await process.wait_for_line("CLOSED").addTimeout(30, reactor())

        assert all_ok(live, 3), live.lines
        assert all_ok(live_aio, 3), live_aio.lines
        assert not set(live_ids) & timed_out(server), "\n".join(server.lines)
        print("frozen server (Twisted client, asyncio client): bytes stopped moving / dropped after that:", drops)
        for stopped_after, detection in drops:
            assert detection <= INTERVAL + TIMEOUT + SLACK
            assert stopped_after <= 3.0
    finally:
        for process in clients:
            await process.stop(reactor())
        for process in (server, stopped_server):
            await process.stop(reactor())
        for proxy in proxies:
            await proxy.stop()


def sleep(seconds: float) -> Deferred[None]:
    from twisted.internet import task

    return task.deferLater(reactor(), seconds, lambda: None)
