"""
Heartbeats between real processes on 127.0.0.1: frozen peers (SIGSTOP), a
real nginx in the path, and a stalled server reactor.  Each test is bounded.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred

from twisted_hub import DisconnectKind, HeartbeatPolicy, Hub, HubClientOptions, HubServerFactory, connect, method
from twisted_hub.types import DisconnectReason

from ._nginx import start_nginx
from ._processes import ScriptProcess, spawn_script

INTERVAL = 0.5
TIMEOUT = 1.0
#: the issue's bound: detection within interval + timeout + 250 ms
DETECTION_BOUND = INTERVAL + TIMEOUT + 0.25
#: The freeze phases, from a seed: a failure names its phase and can be replayed.
PHASES = random.Random(78)


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


async def start_server(*args: str) -> tuple[ScriptProcess, int]:
    process = spawn_script(reactor(), "heartbeat_server.py", *args)
    port = await process.started.addTimeout(20, reactor())
    return process, port


async def measure_detection(url: str, server: ScriptProcess) -> tuple[DisconnectReason, float, float]:
    """Connect with client heartbeats, freeze the server at a random phase, time the detection."""
    policy = HeartbeatPolicy(enabled=True, interval=INTERVAL, timeout=TIMEOUT)
    client = await connect(url, options=HubClientOptions(heartbeat=policy))
    assert await client.call("echo", "alive") == "alive"
    # Freeze at a random point of the heartbeat cycle: the phase changes the delay.
    phase = PHASES.uniform(0.5, 0.5 + INTERVAL)
    await task.deferLater(reactor(), phase, lambda: None)
    server.freeze()
    frozen_at = time.monotonic()
    reason = await client.wait_for_disconnect().addTimeout(DETECTION_BOUND + 5, reactor())
    delay = time.monotonic() - frozen_at
    server.thaw()
    return reason, delay, phase


@pytest_twisted.ensureDeferred
async def test_frozen_server_detected_within_bound() -> None:
    """A SIGSTOPped server is reported TIMED_OUT within interval + timeout + 250 ms (3 trials)."""
    server, port = await start_server()
    try:
        for _ in range(3):
            reason, delay, phase = await measure_detection(f"ws://127.0.0.1:{port}/hub/probe", server)
            assert reason.kind is DisconnectKind.TIMED_OUT, (reason, phase)
            assert TIMEOUT - 0.05 <= delay <= DETECTION_BOUND, (delay, phase)
    finally:
        await server.stop(reactor())


@pytest_twisted.ensureDeferred
async def test_frozen_server_detected_through_nginx() -> None:
    """Through a real nginx, which keeps the client's TCP open, the heartbeat still detects a frozen backend."""
    server, port = await start_server()
    nginx = start_nginx(port)
    try:
        url = f"ws://127.0.0.1:{nginx.port}/hub/probe"
        reason, delay, phase = await measure_detection(url, server)
        assert reason.kind is DisconnectKind.TIMED_OUT, (reason, phase)
        assert delay <= DETECTION_BOUND, (delay, phase)
    finally:
        nginx.stop()
        await server.stop(reactor())


@dataclass
class Departures:
    """What one test's RoomsHubs saw: every disconnect (connection id, reason), and the first one."""

    disconnects: list[tuple[str, DisconnectReason]] = field(default_factory=list)
    first_disconnect: Deferred[None] = field(default_factory=Deferred)


class RoomsHub(Hub):
    hub_name = "rooms"

    def __init__(self, departures: Departures) -> None:
        self.departures = departures

    @method
    def join(self, room: str) -> int:
        self.groups.add(room)
        return self.groups.count(room)

    @method
    def count(self, room: str) -> int:
        return self.groups.count(room)

    @method
    def shout(self, room: str, text: str) -> None:
        self.clients.group(room).heard(text)

    def on_disconnected(self, reason: DisconnectReason) -> None:
        self.departures.disconnects.append((self.connection.id, reason))
        if not self.departures.first_disconnect.called:
            self.departures.first_disconnect.callback(None)


@pytest_twisted.ensureDeferred
async def test_frozen_client_removed_by_server() -> None:
    """A SIGSTOPped client is timed out by the server, leaves its groups; other clients are unaffected."""
    departures = Departures()
    factory = HubServerFactory(
        [partial(RoomsHub, departures)], heartbeat=HeartbeatPolicy(enabled=True, interval=INTERVAL, timeout=TIMEOUT)
    )
    listening = reactor().listenTCP(0, factory, interface="127.0.0.1")
    url = f"ws://127.0.0.1:{listening.getHost().port}/hub/rooms"
    frozen = spawn_script(reactor(), "heartbeat_client.py", url, "lobby")
    try:
        ready = await frozen.wait_for_line("READY").addTimeout(20, reactor())
        frozen_id = ready.split()[1]

        heard: Deferred[str] = Deferred()

        class Receiver:
            def heard(self, text: str) -> None:
                heard.callback(text)

        other = await connect(url, receiver=Receiver())
        assert await other.call("join", "lobby") == 2
        frozen.freeze()
        frozen_at = time.monotonic()
        await departures.first_disconnect.addTimeout(DETECTION_BOUND + 5, reactor())
        connection_id, reason = departures.disconnects[0]
        assert (connection_id, reason.kind) == (frozen_id, DisconnectKind.TIMED_OUT)
        assert time.monotonic() - frozen_at <= DETECTION_BOUND
        assert await other.call("count", "lobby") == 1
        await other.call("shout", "lobby", "still here")
        assert await heard.addTimeout(5, reactor()) == "still here"
        assert other.is_connected
        await other.disconnect()
    finally:
        await frozen.stop(reactor())
        await listening.stopListening()


async def run_stall(*server_args: str) -> tuple[Any, ScriptProcess]:
    """Server timeout 2 s; its reactor blocks 3 s right after a beat; observe 3 s more."""
    server, port = await start_server("--interval", "0.5", "--timeout", "2.0", *server_args)
    client = await connect(f"ws://127.0.0.1:{port}/hub/probe")
    await client.call("stall_after_next_beat", 3.0)
    await server.wait_for_line("STALLED").addTimeout(10, reactor())
    # Bounded observation window: a false timeout would show within it.
    await task.deferLater(reactor(), 3.0, lambda: None)
    return client, server


@pytest_twisted.ensureDeferred
async def test_server_stall_causes_no_false_timeout() -> None:
    """The server's reactor blocked 3 s with timeout 2 s keeps a live client connected."""
    client, server = await run_stall()
    try:
        assert client.is_connected, client.disconnect_reason
        assert await client.call("echo", "ok") == "ok"
        assert not [line for line in server.lines if line.startswith("DISCONNECTED")]
        await client.disconnect()
    finally:
        await server.stop(reactor())


@pytest_twisted.ensureDeferred
async def test_server_stall_without_grace_times_out() -> None:
    """Control: with stall grace off, the same stall drops the live client (so the test above can fail)."""
    client, server = await run_stall("--no-stall-grace")
    try:
        assert not client.is_connected
        assert client.disconnect_reason.kind is DisconnectKind.PEER_TIMED_OUT
    finally:
        await server.stop(reactor())
