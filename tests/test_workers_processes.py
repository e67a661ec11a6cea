"""
C{twistd hub --workers 2} with real processes: the supervisor, two worker
processes on one 127.0.0.1 port, a real C{redis-server} joining them, real
clients.  Every wait has a deadline; the tests signal only the supervisor
they started and the workers it started for them (by PID).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest_twisted

from twisted_hub import DisconnectKind, DisconnectReason, HubClientProtocol, connect

from ._redis import RedisServer
from ._twistd import Child, twistd_hub
from .test_scaling_processes import Inbox, eventually

HUB = "tests.helpers.worker_hubs:PidWorkHub"
SUPERVISING = re.compile(r"supervising 2 hub worker\(s\) on 127\.0\.0\.1:(\d+)")
ALL_LISTENING = "all 2 hub workers are listening"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def lines_with(child: Child, text: str) -> int:
    return sum(1 for line in child.lines + child.err_lines if text in line)


class Supervised:
    """The supervisor we started, its port, and helpers to reach its workers."""

    def __init__(self, reactor: Any, child: Child, port: int) -> None:
        self.reactor = reactor
        self.child = child
        self.port = port
        self.clients: list[tuple[HubClientProtocol, Inbox, int]] = []

    async def client(self) -> tuple[HubClientProtocol, Inbox, int]:
        """A connected client, its inbox, and the pid of the worker holding it."""
        inbox = Inbox()
        protocol = await connect(
            f"ws://127.0.0.1:{self.port}/hub", "work", receiver=inbox, clock=self.reactor, timeout=10
        )
        pid = await protocol.call("pid")
        entry = (protocol, inbox, pid)
        self.clients.append(entry)
        return entry

    async def clients_on_both(self, at_least: int = 12, at_most: int = 60) -> dict[int, list[HubClientProtocol]]:
        """Connect clients until there are C{at_least} and both workers hold some (bounded)."""
        by_pid: dict[int, list[HubClientProtocol]] = {}
        for count in range(at_most):
            protocol, _, pid = await self.client()
            by_pid.setdefault(pid, []).append(protocol)
            if count + 1 >= at_least and len(by_pid) == 2:
                return by_pid
        raise AssertionError(f"{at_most} connections all went to one worker: {list(by_pid)}")

    async def wait_line(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        async def seen() -> bool:
            return lines_with(self.child, text) >= count

        await eventually(seen, self.reactor, timeout, f"{count} x {text!r} in the supervisor's log")


@asynccontextmanager
async def supervisor(reactor: Any, *extra: str) -> AsyncIterator[Supervised]:
    redis = RedisServer(reactor)
    await redis.start()
    child = twistd_hub(
        reactor, "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "--hub", HUB,
        "--redis", redis.url, "--shutdown-timeout", "2", *extra,
    )
    supervised: Supervised | None = None
    try:
        match = await child.wait_for(SUPERVISING, reactor, 20)
        supervised = Supervised(reactor, child, int(match.group(1)))
        await child.wait_for(ALL_LISTENING, reactor, 30)
        await supervised.wait_line("connected to Redis at", 2)
        yield supervised
    finally:
        for protocol, _, _ in supervised.clients if supervised else []:
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
        await child.stop(reactor, timeout=15)
        await redis.stop()


def closes(protocol: HubClientProtocol) -> list[DisconnectReason]:
    """A list that gets the client's disconnect reason when it closes."""
    reasons: list[DisconnectReason] = []
    protocol.wait_for_disconnect().addCallback(reasons.append)
    return reasons


@pytest_twisted.ensureDeferred
async def test_connections_spread_and_a_group_spans_both_workers() -> None:
    """Connections land on both workers; a group message from one worker reaches the members on both; /metrics has both."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    async with supervisor(reactor, "--metrics") as hub:
        by_pid = await hub.clients_on_both(at_least=12)
        assert len(by_pid) == 2
        for protocol, _, _ in hub.clients:
            await protocol.call("join", "room")

        async def everyone_counted() -> bool:
            counts = [len(await protocol.call("members", "room")) for protocol, _, _ in hub.clients]
            return all(count == len(hub.clients) for count in counts)

        await eventually(everyone_counted, reactor, 10, "every worker counts every member of the group")
        sender, _, _ = hub.clients[0]
        await sender.call("to_group", "room", "hello both")
        for _, inbox, _ in hub.clients:
            await inbox.wait_for("hello both", reactor)

        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{hub.port}/metrics".encode())
        text = (await readBody(response)).decode()
        assert 'twisted_hub_worker_up{worker="0"} 1.0' in text
        assert 'twisted_hub_worker_up{worker="1"} 1.0' in text
        held = sum(
            float(value) for value in
            re.findall(r'twisted_hub_connections\{hub="work",worker="[01]"\} (\S+)', text)
        )
        assert held == len(hub.clients)

        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{hub.port}/".encode())
        page = (await readBody(response)).decode()
        worker = re.search(r"([01]) of 2 \(pid (\d+)\); this page shows this worker only", page)
        assert worker is not None and int(worker.group(2)) in by_pid, page


@pytest_twisted.ensureDeferred
async def test_rolling_restart_keeps_the_other_workers_connections() -> None:
    """SIGHUP: worker 0 is replaced and drained (no drain delay) while worker 1's clients stay connected; then worker 1."""
    from twisted.internet import reactor

    async with supervisor(reactor, "--drain-delay", "3") as hub:
        by_pid = await hub.clients_on_both(at_least=8)
        # which pid is worker 0: its own metrics port says so
        first = next(line for line in hub.child.lines if "worker 0 is listening (pid" in line)
        pid0 = int(re.search(r"pid (\d+)", first).group(1))  # type: ignore[union-attr]
        pid1 = next(pid for pid in by_pid if pid != pid0)
        reasons = {pid: [closes(protocol) for protocol in protocols] for pid, protocols in by_pid.items()}

        hub.child.signal(signal.SIGHUP)
        await hub.wait_line(f"worker 0 (pid {pid0}): a new worker serves its sockets; stopping (no drain delay)")
        await hub.wait_line(f"worker 0 (pid {pid0}) stopped", timeout=20)
        assert lines_with(hub.child, "listeners close in") == 0, "the replaced worker waited for --drain-delay"
        assert all(r and r[0].kind is DisconnectKind.GOING_AWAY for r in reasons[pid0])
        assert not any(r for r in reasons[pid1]), "worker 1's clients were cut while worker 0 restarted"
        for protocol in by_pid[pid1]:
            assert await protocol.call("plain", "still here") == "still here"
        _, _, pid = await hub.client()  # a new client is served meanwhile
        assert pid != pid0

        await hub.wait_line("rolling restart done", timeout=30)
        assert all(r and r[0].kind is DisconnectKind.GOING_AWAY for r in reasons[pid1])
        assert not alive(pid0) and not alive(pid1)
        _, _, pid = await hub.client()
        assert pid not in (pid0, pid1)


@pytest_twisted.ensureDeferred
async def test_a_killed_worker_is_restarted() -> None:
    """kill -9 of a worker: the supervisor logs it and starts another on its sockets; connections reach it."""
    from twisted.internet import reactor

    async with supervisor(reactor) as hub:
        by_pid = await hub.clients_on_both(at_least=4)
        victim = next(iter(by_pid))
        survivor = next(pid for pid in by_pid if pid != victim)
        os.kill(victim, signal.SIGKILL)  # a worker of the supervisor this test started
        await hub.wait_line(f"(pid {victim}) ended (signal 9)")
        await hub.wait_line("is listening (pid", count=3)

        async def new_worker_serves() -> bool:
            _, _, pid = await hub.client()
            return pid not in (victim, survivor)

        await eventually(new_worker_serves, reactor, 20, "a client lands on the restarted worker")
        assert alive(survivor)


@pytest_twisted.ensureDeferred
async def test_sigterm_ends_the_workers_and_a_killed_supervisor_leaves_none() -> None:
    """SIGTERM to the supervisor stops both workers then itself cleanly; a SIGKILLed supervisor's workers stop on their own."""
    from twisted.internet import reactor

    async with supervisor(reactor) as hub:
        by_pid = await hub.clients_on_both(at_least=4)
        await hub.child.stop(reactor, timeout=15)
        assert hub.child.ended_cleanly, hub.child.output()
        for pid in by_pid:
            assert not alive(pid)

    async with supervisor(reactor) as hub:
        by_pid = await hub.clients_on_both(at_least=4)
        hub.child.signal(signal.SIGKILL)
        await hub.child.ended

        async def workers_gone() -> bool:
            return not any(alive(pid) for pid in by_pid)

        await eventually(workers_gone, reactor, 15, "the workers of a killed supervisor stop")

