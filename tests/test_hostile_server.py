"""
A hostile server (issue 18 item 5): both clients, the Twisted one and the
asyncio one, against a raw-socket server on 127.0.0.1
(tests/helpers/hostile_server.py) that completes the upgrade and the hub
handshake, breaks a rule once, and then holds the TCP connection open
without ever answering a close frame.  Each scenario is written once and
run with both clients: the same reason (kind, code, side), the pending call
failing with it, the socket closed, all within a bound.

The bounds: a frame the WebSocket layer refuses (a message over
max_message_size, bad framing) ends the connection at once, no answer
being awaited (RFC 6455 section 7.1.7), so its reason comes within 1 s;
closes that wait for the server (a hub protocol error, our disconnect(),
the server's own close) end at the closing-handshake deadline, 1 s, so
within 1 s + a margin for a loaded machine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any

import pytest
import pytest_twisted

from twisted_hub import ConnectionClosedError, DisconnectKind, HandshakeError, HeartbeatPolicy, HubClientOptions
from twisted_hub import connect as twisted_connect
from twisted_hub.aio import _CLOSE_WAIT, open_client
from twisted_hub.types import DisconnectReason

from .helpers.hostile_server import HostileServer, running

#: seconds a reason may take when the close waits for the server: the closing-handshake deadline + a margin
WAITED = _CLOSE_WAIT + 1.0
#: what a server that answers nothing costs a heartbeat-enabled client if heartbeats decided (they must not)
HEARTBEAT = HeartbeatPolicy.every(0.1, 0.3)


class Driver:
    """What a scenario needs from one client library."""

    async def connect(self, port: int, options: HubClientOptions | None) -> Any:
        raise NotImplementedError

    async def call(self, client: Any, method: str, *args: Any) -> Any:
        """Start a call, queued on the session when this returns; the result (a Deferred or a Task) is awaited later."""
        raise NotImplementedError

    async def within(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        """Await it, failing the test if it takes longer than C{seconds}."""
        raise NotImplementedError

    async def set_within(self, event: threading.Event, seconds: float) -> bool:
        """Wait (off this loop) until the server thread sets C{event}, at most C{seconds}."""
        raise NotImplementedError


class TwistedDriver(Driver):
    async def connect(self, port: int, options: HubClientOptions | None) -> Any:
        from twisted.internet import reactor

        return await twisted_connect(f"ws://127.0.0.1:{port}/hub", "hostile", options=options, clock=reactor, timeout=10)

    async def call(self, client: Any, method: str, *args: Any) -> Any:
        return client.call(method, *args)

    async def within(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred

        deferred = awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)  # type: ignore[arg-type]
        return await deferred.addTimeout(seconds, reactor)

    async def set_within(self, event: threading.Event, seconds: float) -> bool:
        from twisted.internet.threads import deferToThread

        return await deferToThread(event.wait, seconds)


class AsyncioDriver(Driver):
    async def connect(self, port: int, options: HubClientOptions | None) -> Any:
        return await open_client(f"ws://127.0.0.1:{port}/hub", "hostile", options=options, timeout=10)

    async def call(self, client: Any, method: str, *args: Any) -> Any:
        task = asyncio.ensure_future(client.call(method, *args))
        # The task's first step queues the call on the session.  Without this a
        # scenario's next step can run first: from Python 3.12 asyncio.wait_for
        # runs its coroutine in the caller's task, so within(client.disconnect())
        # closed the session before the call was made ("not connected").
        await asyncio.sleep(0)
        return task

    async def within(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        return await asyncio.wait_for(awaitable, seconds)

    async def set_within(self, event: threading.Event, seconds: float) -> bool:
        return await asyncio.to_thread(event.wait, seconds)


# -- the scenarios, written once ------------------------------------------------

async def attacked(
    driver: Driver, server: HostileServer, expected: DisconnectReason, bound: float,
    options: HubClientOptions | None = None,
) -> DisconnectReason:
    """
    Connect, make a call (the server attacks when it arrives), and check: the
    reason within C{bound} s, the call failing with it, the client's TCP
    connection ended.  Returns the reason.
    """
    client = await driver.connect(server.port, options)
    pending = await driver.call(client, "echo", 1)
    reason: DisconnectReason = await driver.within(client.wait_for_disconnect(), bound)
    assert (reason.kind, reason.code, reason.locally) == (expected.kind, expected.code, expected.locally), reason
    with pytest.raises(ConnectionClosedError) as failed:
        await driver.within(pending, 1.0)
    assert failed.value.reason == reason
    assert await driver.set_within(server.client_gone, WAITED), "the client's TCP connection is still open"
    return reason


async def refused_by_the_websocket_layer(driver: Driver, attack: str, code: int, kind: DisconnectKind, heartbeat: bool) -> None:
    with running(attack) as server:
        options = HubClientOptions(heartbeat=HEARTBEAT) if heartbeat else None
        await attacked(driver, server, DisconnectReason(kind, code, "", True), 1.0, options)
        # Our close frame went out, then TCP closed at once: no wait for an answer
        # (waiting would take the 1 s deadline on the asyncio client).
        assert server.attacked_at is not None and server.gone_at is not None
        assert server.gone_at - server.attacked_at < 0.5
        assert [c for c, _ in server.close_frames] == [code]


async def hub_protocol_error(driver: Driver, attack: str, code: int) -> None:
    with running(attack) as server:
        await attacked(driver, server, DisconnectReason(DisconnectKind.PROTOCOL_ERROR, code, "", True), WAITED)
        assert [c for c, _ in server.close_frames] == [code]


async def server_closes_and_holds(driver: Driver) -> None:
    with running("close-then-hold") as server:
        reason = await attacked(driver, server, DisconnectReason(DisconnectKind.KICKED, 4000, "", False), WAITED)
        assert reason.message == "go away"
        assert len(server.close_frames) == 1  # our answer to its close frame


async def disconnect_unanswered(driver: Driver) -> None:
    with running("silent") as server:
        client = await driver.connect(server.port, None)
        pending = await driver.call(client, "echo", 1)
        reason = await driver.within(client.disconnect(), WAITED)
        assert (reason.kind, reason.code, reason.locally) == (DisconnectKind.NORMAL, 1000, True)
        with pytest.raises(ConnectionClosedError) as failed:
            await driver.within(pending, 1.0)
        assert failed.value.reason == reason
        assert await driver.set_within(server.client_gone, WAITED)
        assert [c for c, _ in server.close_frames] == [1000]


async def welcome_too_big(driver: Driver) -> None:
    with running("big-welcome") as server:
        with pytest.raises(HandshakeError) as refused:
            await driver.within(driver.connect(server.port, None), 1.0)
        assert refused.value.status is None and "1048576" in refused.value.reason, refused.value
        assert await driver.set_within(server.client_gone, WAITED)
        assert [c for c, _ in server.close_frames] == [1009]


# -- run with both clients ------------------------------------------------------

#: attack -> (close code, kind) the WebSocket layer closes with
WEBSOCKET_LAYER = {
    "big-result": (1009, DisconnectKind.MESSAGE_TOO_BIG),
    "huge-header": (1009, DisconnectKind.MESSAGE_TOO_BIG),
    "huge-partial": (1009, DisconnectKind.MESSAGE_TOO_BIG),
    "bad-opcode": (1002, DisconnectKind.PROTOCOL_ERROR),
    "rsv-bit": (1002, DisconnectKind.PROTOCOL_ERROR),
}
#: attack -> close code of a protocol error whose close waits for the server (at most the deadline):
#: the hub session's (4002, 1003, 1008), and invalid UTF-8 in a text frame (1007), which the
#: Twisted client's autobahn refuses on arrival, at once, but websockets only when the message is
#: read, so the asyncio client closes as for the session's own errors
HUB_LEVEL = {"bad-message": 4002, "text-frame": 1003, "too-many-messages": 1008, "bad-utf8": 1007}


def in_asyncio(scenario: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 30))


@pytest.mark.parametrize("heartbeat", [False, True], ids=["plain", "heartbeats"])
@pytest.mark.parametrize("attack", list(WEBSOCKET_LAYER))
@pytest_twisted.ensureDeferred
async def test_twisted_refused_by_the_websocket_layer(attack: str, heartbeat: bool) -> None:
    """A message over the limit (2 MiB, a 100 MiB header bare or with some body) or bad framing: reason within 1 s, TCP closed."""
    await refused_by_the_websocket_layer(TwistedDriver(), attack, *WEBSOCKET_LAYER[attack], heartbeat)


@pytest.mark.parametrize("heartbeat", [False, True], ids=["plain", "heartbeats"])
@pytest.mark.parametrize("attack", list(WEBSOCKET_LAYER))
def test_asyncio_refused_by_the_websocket_layer(attack: str, heartbeat: bool) -> None:
    """The same for the asyncio client: the same reason within 1 s, the call failed, TCP closed."""
    in_asyncio(refused_by_the_websocket_layer(AsyncioDriver(), attack, *WEBSOCKET_LAYER[attack], heartbeat))


@pytest.mark.parametrize("attack", list(HUB_LEVEL))
@pytest_twisted.ensureDeferred
async def test_twisted_hub_protocol_error(attack: str) -> None:
    """A malformed message, a text frame, invalid UTF-8, too many messages in a frame: protocol-error, within the deadline."""
    await hub_protocol_error(TwistedDriver(), attack, HUB_LEVEL[attack])


@pytest.mark.parametrize("attack", list(HUB_LEVEL))
def test_asyncio_hub_protocol_error(attack: str) -> None:
    """The same for the asyncio client."""
    in_asyncio(hub_protocol_error(AsyncioDriver(), attack, HUB_LEVEL[attack]))


@pytest_twisted.ensureDeferred
async def test_twisted_server_closes_and_holds_tcp() -> None:
    """A server that sends its CLOSE and close frame but never ends TCP: its reason (kicked), within the deadline."""
    await server_closes_and_holds(TwistedDriver())


def test_asyncio_server_closes_and_holds_tcp() -> None:
    """The same for the asyncio client."""
    in_asyncio(server_closes_and_holds(AsyncioDriver()))


@pytest_twisted.ensureDeferred
async def test_twisted_disconnect_unanswered() -> None:
    """disconnect() to a server that never answers the close: normal, within the deadline, the pending call failed."""
    await disconnect_unanswered(TwistedDriver())


def test_asyncio_disconnect_unanswered() -> None:
    """The same for the asyncio client."""
    in_asyncio(disconnect_unanswered(AsyncioDriver()))


@pytest_twisted.ensureDeferred
async def test_twisted_welcome_too_big() -> None:
    """A WELCOME over the client's limit: connect fails with HandshakeError within 1 s, after a 1009."""
    await welcome_too_big(TwistedDriver())


def test_asyncio_welcome_too_big() -> None:
    """The same for the asyncio client (the WELCOME comes with the upgrade's answer, before the client exists)."""
    in_asyncio(welcome_too_big(AsyncioDriver()))
