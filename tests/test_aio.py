"""
The asyncio client (twisted_hub.aio) passes the same behavioural scenarios as
the Twisted client, against a real `twistd -n hub` on 127.0.0.1: calls and
errors, receivers and client results, heartbeats and the clock offset,
disconnect reasons, a frozen server, reconnecting.  Each scenario is written
once and run with both clients.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted

from twisted_hub import (
    DisconnectKind,
    HeartbeatPolicy,
    HubClientOptions,
    HubError,
)
from twisted_hub import connect as twisted_connect

from ._twistd import ROOT, SITE_STARTED, TWISTD


class TwistdHub:
    """`twistd -n hub` as a child process we started (ended by its PID)."""

    def __init__(self, *args: str, port: int = 0) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
        argv = [sys.executable, *TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "hub",
                "--listen", f"tcp:{port}:interface=127.0.0.1", *args]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + 60  # generous: CI machines are shared
        lines: list[str] = []
        pending = b""
        # os.read, not readline: lines already in a reader's buffer would not
        # wake select, and the port line could wait there unseen.
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], 0.5)
            if ready:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    break  # the process ended
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", "replace") + "\n"
                    lines.append(line)
                    match = SITE_STARTED.search(line)
                    if match:
                        return int(match.group(1))
        self.stop()
        raise RuntimeError("twistd did not start:\n" + "".join(lines[-20:]))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/hub"

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()  # else a ResourceWarning surfaces in whichever test runs next


@pytest.fixture(scope="module")
def hub_server() -> Iterator[TwistdHub]:
    server = TwistdHub("--heartbeat-interval", "0.25", "--heartbeat-timeout", "2")
    yield server
    server.stop()


class Signal:
    """Something a receiver sets and a scenario awaits, on either event loop."""

    def __init__(self, side: Side) -> None:
        self.values: list[Any] = []
        self._side = side
        self._waiters: list[tuple[int, Callable[[], None]]] = []

    def set(self, value: Any) -> None:
        self.values.append(value)
        ready = [w for w in self._waiters if len(self.values) >= w[0]]
        self._waiters = [w for w in self._waiters if w not in ready]
        for _, wake in ready:
            wake()

    async def wait(self, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait (on the side's own loop, bounded) until C{count} values were set."""
        if len(self.values) < count:
            waiting, wake = self._side.event()
            self._waiters.append((count, wake))
            try:
                await self._side.bounded(waiting, timeout)
            except Exception as e:
                raise AssertionError(f"waited for {count} values, got {self.values}") from e
        return self.values


class Side:
    """What a scenario needs from one client library."""

    name = ""

    async def connect(self, hub: str, receiver: object | None = None, options: HubClientOptions | None = None) -> Any:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def event(self) -> tuple[Any, Callable[[], None]]:
        """Something awaitable on this side's loop, and the function that fires it."""
        raise NotImplementedError

    async def bounded(self, awaitable: Any, timeout: float) -> None:
        raise NotImplementedError

    def signal(self) -> Signal:
        return Signal(self)


class TwistedSide(Side):
    name = "twisted"

    def __init__(self, server: TwistdHub) -> None:
        self.server = server

    async def connect(self, hub: str, receiver: object | None = None, options: HubClientOptions | None = None) -> Any:
        from twisted.internet import reactor

        return await twisted_connect(self.server.url, hub, receiver, options, clock=reactor, timeout=10)

    async def sleep(self, seconds: float) -> None:
        from twisted.internet import reactor, task

        await task.deferLater(reactor, seconds, lambda: None)

    def event(self) -> tuple[Any, Callable[[], None]]:
        from twisted.internet.defer import Deferred

        d: Deferred[None] = Deferred()
        return d, lambda: None if d.called else d.callback(None)

    async def bounded(self, awaitable: Any, timeout: float) -> None:
        from twisted.internet import reactor

        await awaitable.addTimeout(timeout, reactor)


class AsyncioSide(Side):
    name = "asyncio"

    def __init__(self, server: TwistdHub) -> None:
        self.server = server

    async def connect(self, hub: str, receiver: object | None = None, options: HubClientOptions | None = None) -> Any:
        from twisted_hub.aio import open_client

        return await open_client(self.server.url, hub, receiver, options, timeout=10)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def event(self) -> tuple[Any, Callable[[], None]]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return future, lambda: None if future.done() else future.set_result(None)

    async def bounded(self, awaitable: Any, timeout: float) -> None:
        await asyncio.wait_for(awaitable, timeout)


# -- the scenarios, written once ------------------------------------------------

async def calls_and_errors(side: Side) -> None:
    client = await side.connect("echo")
    assert await client.call("echo", {"x": [1, 2, b"\x00"]}) == {"x": [1, 2, b"\x00"]}
    assert await client.call("add", 2, 3) == 5
    with pytest.raises(HubError) as raised:
        await client.call("fail", "no-way", "because")
    assert (raised.value.code, raised.value.message) == ("no-way", "because")
    with pytest.raises(HubError) as unknown:
        await client.call("nope")
    assert unknown.value.code == "unknown-method"
    with pytest.raises(HubError) as bad:
        await client.call("add", "two", 3)
    assert bad.value.code == "invalid-arguments"
    assert await client.proxy().add(4, 5) == 9
    assert client.notify("echo", 1) is None
    assert client.connection_id == await client.call("whoami")
    reason = await client.disconnect()
    assert (reason.kind, reason.code) == (DisconnectKind.NORMAL, 1000)
    with pytest.raises(HubError) as closed:
        await client.call("echo", 1)
    assert closed.value.code == "disconnected"


async def receivers_and_client_results(side: Side) -> None:
    heard = side.signal()

    class Listener:
        def joined(self, room: str, user: str) -> None:
            pass

        def said(self, room: str, user: str, text: str) -> None:
            heard.set((room, user, text))

        def left(self, room: str, user: str) -> None:
            pass

    ann = await side.connect("chat", Listener())
    bob = await side.connect("chat", Listener())
    assert await ann.call("join", "lobby", "ann") == 1
    assert await bob.call("join", "lobby", "bob") == 2
    assert await ann.call("say", "lobby", "hello") == 2
    assert sorted(await heard.wait(2)) == [("lobby", "ann", "hello")] * 2

    class Answerer:
        def double(self, n: int) -> int:
            return 2 * n

        async def later(self, n: int) -> int:
            await side.sleep(0.01)
            return n + 1

        def broken(self) -> None:
            raise HubError("client-says-no", "not today")

    asker = await side.connect("echo", Answerer())
    assert await asker.call("ask", "double", 21) == 42
    assert await asker.call("ask", "later", 1) == 2
    with pytest.raises(HubError) as refused:
        await asker.call("ask", "broken")
    assert refused.value.code == "client-says-no"
    with pytest.raises(HubError) as missing:
        await asker.call("ask", "_private")
    assert missing.value.code == "unknown-method"
    for client in (ann, bob, asker):
        await client.disconnect()


async def heartbeats_and_clock(side: Side) -> None:
    beats, answers = side.signal(), side.signal()
    options = HubClientOptions(
        heartbeat=HeartbeatPolicy(enabled=True, interval=0.2, timeout=2.0),
        on_server_heartbeat=beats.set, on_heartbeat_response=answers.set,
    )
    client = await side.connect("echo", options=options)
    await beats.wait(2)
    await answers.wait(2)
    assert beats.values[0].server_time.tzinfo is not None
    assert 0 < client.round_trip < 1.0
    offset = client.clock_offset
    assert offset is not None and abs(offset.offset) <= offset.error + 0.05  # one machine, one clock
    assert abs(client.server_now().timestamp() - time.time()) < 1.0
    await client.disconnect()


SCENARIOS: list[Callable[[Side], Awaitable[None]]] = [calls_and_errors, receivers_and_client_results, heartbeats_and_clock]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
@pytest_twisted.ensureDeferred
async def test_twisted_client(scenario: Callable[[Side], Awaitable[None]], hub_server: TwistdHub) -> None:
    """The Twisted client passes the shared scenario against twistd hub."""
    await scenario(TwistedSide(hub_server))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_asyncio_client(scenario: Callable[[Side], Awaitable[None]], hub_server: TwistdHub) -> None:
    """The asyncio client passes the same scenario against the same twistd hub."""
    asyncio.run(asyncio.wait_for(scenario(AsyncioSide(hub_server)), 30))


async def frozen_server(side: Side, server: TwistdHub) -> None:
    options = HubClientOptions(heartbeat=HeartbeatPolicy(enabled=True, interval=0.3, timeout=0.9))
    client = await side.connect("echo", options=options)
    assert await client.call("echo", 1) == 1
    server.freeze()
    frozen_at = time.monotonic()
    try:
        reason = await client.wait_for_disconnect()
        assert (reason.kind, reason.code) == (DisconnectKind.TIMED_OUT, 4001)
        assert time.monotonic() - frozen_at <= 0.3 + 0.9 + 0.25
    finally:
        server.thaw()


@pytest_twisted.ensureDeferred
async def test_twisted_client_times_out_frozen_server() -> None:
    """A SIGSTOPped twistd hub: the Twisted client reports TIMED_OUT within interval + timeout."""
    server = TwistdHub()
    try:
        await frozen_server(TwistedSide(server), server)
    finally:
        server.stop()


def test_asyncio_client_times_out_frozen_server() -> None:
    """The same for the asyncio client, on the same core verdict."""
    server = TwistdHub()
    try:
        asyncio.run(asyncio.wait_for(frozen_server(AsyncioSide(server), server), 20))
    finally:
        server.stop()


def test_asyncio_reconnects_with_jitter_and_restores_state() -> None:
    """ReconnectingAsyncHubClient: after the server restarts it reconnects and on_connected runs again."""
    from twisted_hub.aio import ReconnectingAsyncHubClient

    first = TwistdHub()
    port = first.port
    joined: list[int] = []

    async def main() -> None:
        async def rejoin(client: Any) -> None:
            joined.append(await client.call("join", "lobby", "ann"))

        delays = iter([0.05] * 100)
        async with ReconnectingAsyncHubClient(
            f"ws://127.0.0.1:{port}/hub", "chat", on_connected=rejoin, retry_policy=lambda attempt: next(delays),
            timeout=5,
        ) as reconnecting:
            assert await reconnecting.call("rooms") == ["lobby"]
            old = reconnecting.client
            assert old is not None
            await asyncio.to_thread(first.stop)  # the client answers the server's close meanwhile
            await asyncio.wait_for(old.wait_for_disconnect(), 10)
            second = await asyncio.to_thread(TwistdHub, port=port)
            try:
                new = await asyncio.wait_for(reconnecting.connected(), 20)
                assert new is not old and reconnecting.connections == 2
                assert await reconnecting.call("rooms") == ["lobby"]
                assert reconnecting.disconnects[0].kind is DisconnectKind.GOING_AWAY
            finally:
                await reconnecting.stop()
                second.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 40))
    finally:
        first.stop()
    assert joined == [1, 1]


def test_import_installs_no_reactor() -> None:
    """Importing twisted_hub.aio imports no Twisted reactor (asyncio programs keep their own loop)."""
    code = "import sys, twisted_hub.aio; assert 'twisted.internet.reactor' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_docs_example_runs(hub_server: TwistdHub, tmp_path: Any) -> None:
    """docs/asyncio.md's example, saved under the name its first line gives, runs with twistd hub's URL and prints 5, 42, hi."""
    import re

    from ._docs import python_blocks

    code = python_blocks("docs/asyncio.md")["asyncio-example"]
    file_name = re.match(r"# (\S+\.py): run with  python3 \1 \[URL\]", code)
    assert file_name is not None, code.splitlines()[0]
    script = tmp_path / file_name.group(1)
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(script), hub_server.url], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    promised = [m.group(1).strip().split(":")[0] for m in re.finditer(r"^\s*print\(.*\)\s+#\s*(.+)$", code, re.M)]
    assert promised == ["5", "42", "hi"]
    assert done.stdout.splitlines() == promised


def test_asyncio_reconnecting_client_during_an_outage() -> None:
    """
    The outage rule of both reconnecting clients: a call made between
    connections waits wait_for_connection for the next one, then fails
    unsent (may_have_run False); a call sent when its connection ends fails
    with may_have_run True; a failing on_connected closes that connection
    and is retried; stop() fails the calls still waiting.
    """
    from twisted_hub import ConnectionClosedError
    from twisted_hub.aio import ReconnectingAsyncHubClient

    first = TwistdHub()
    port = first.port
    prepared: list[Any] = []
    failures = [RuntimeError("rejoin failed")]

    async def on_connected(client: Any) -> None:
        prepared.append(client)
        if failures:
            raise failures.pop()

    async def main() -> None:
        reconnecting = ReconnectingAsyncHubClient(
            f"ws://127.0.0.1:{port}/hub", "echo", on_connected=on_connected, retry_policy=lambda attempt: 0.05,
            timeout=5, wait_for_connection=0.5,
        )
        not_started = reconnecting.call("add", 1, 2)
        with pytest.raises(ConnectionClosedError, match="not running"):
            await not_started
        reconnecting.start()
        try:
            assert await reconnecting.call("add", 1, 2) == 3
            # The first on_connected failed: that connection was closed, the next one is used.
            assert len(prepared) == 2 and prepared[0].disconnect_reason is not None
            assert reconnecting.client is prepared[1]
            # Sent, then the server dies before answering: it may have run.
            first.freeze()
            sent = asyncio.ensure_future(reconnecting.call("add", 2, 2))
            await asyncio.sleep(0.2)
            first.process.kill()
            first.process.wait(timeout=10)
            with pytest.raises(ConnectionClosedError) as lost:
                await asyncio.wait_for(sent, 10)
            assert lost.value.may_have_run
            # No server: a new call waits 0.5 s for a connection, then fails unsent.
            started = time.monotonic()
            with pytest.raises(ConnectionClosedError) as unsent:
                await reconnecting.call("add", 3, 3)
            assert 0.45 <= time.monotonic() - started < 3
            assert not unsent.value.may_have_run
            assert "no connection within 0.5s" in unsent.value.reason.message
            # A call waiting for a connection when stop() comes fails at once.
            reconnecting.wait_for_connection = None
            waiting = asyncio.ensure_future(reconnecting.call("add", 4, 4))
            await asyncio.sleep(0.1)
            assert not waiting.done()
        finally:
            await reconnecting.stop()
        with pytest.raises(ConnectionClosedError, match="stopped"):
            await asyncio.wait_for(waiting, 2)

    try:
        asyncio.run(asyncio.wait_for(main(), 40))
    finally:
        first.stop()


def test_a_call_right_after_the_connection_ended_waits_for_the_next_one() -> None:
    """
    The connection has just ended and the reconnecting loop has not noticed
    yet (its "connected" is still set): a call then waits for the next
    connection instead of failing at once on the one that ended (seen once
    in the chaos test's rolling restart: a call failed going-away).
    """
    from twisted_hub.aio import ReconnectingAsyncHubClient

    class Connection:
        def __init__(self, connected: bool) -> None:
            self.is_connected = connected

        async def call(self, method: str, *args: Any) -> Any:
            assert self.is_connected, "a call on a connection that ended"
            return [method, *args]

    async def main() -> None:
        reconnecting = ReconnectingAsyncHubClient("ws://127.0.0.1:1/hub", "echo", wait_for_connection=2.0)
        reconnecting._task = asyncio.get_running_loop().create_future()  # (running, as far as calls can tell)
        ended, fresh = Connection(False), Connection(True)
        reconnecting.client = ended  # type: ignore[assignment]
        reconnecting._connected.set()  # (stale: _run clears it once it has noticed the end)

        def next_connection() -> None:
            reconnecting.client = fresh  # type: ignore[assignment]
            reconnecting._connected.set()

        asyncio.get_running_loop().call_later(0.05, next_connection)
        assert await reconnecting.call("add", 1, 2) == ["add", 1, 2]
        assert reconnecting.client is fresh
        reconnecting._task.cancel()

    asyncio.run(main())
