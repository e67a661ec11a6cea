"""
The reconnecting clients as users run them: a real `twistd -n hub` process,
real TCP sockets, and a proxy that resets the connections (RST, both halves)
over and over while the clients keep calling.  Held for the Python
(Twisted) client and for the JavaScript client (Node), each through a proxy
of its own:

- never more than one open connection per client, at any moment;
- every call resolves, with its result or an error, within its timeout;
- on_connected runs once per connection, each on a different connection;
- no unhandled error, neither in the client nor in the server;
- afterwards each client holds exactly one connection that answers, and
  the server holds exactly as many as there are clients.

Loopback only; every wait is bounded; the twistd and node processes are
ended by their pid.
"""

from __future__ import annotations

import gc
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.web.client import Agent, readBody
from zope.interface import provider

from twisted_hub import (
    CallTimeoutError,
    ConnectionClosedError,
    HubClientOptions,
    ReconnectingHubClient,
    full_jitter_policy,
)
from twisted_hub.types import HubClientProtocol

from ._cutting_proxy import CuttingProxy
from ._twistd import ROOT, Child, spawn_python, started_port, twistd_hub

pytestmark = pytest.mark.timeout(240)

#: How many resets each client's connection goes through.
CUTS = 150
#: A call's own timeout (s), and how long it may wait for a connection first: it must
#: resolve within the two and a little slack.
CALL_TIMEOUT = 3.0


class _Errors:
    """Log events at error level or above, and failures, from this process."""

    def __init__(self) -> None:
        self.events: list[str] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            level = event.get("log_level")
            if event.get("log_failure") is not None or (level is not None and level >= LogLevel.error):
                failure = event.get("log_failure")
                self.events.append(f"{event.get('log_format')}: {failure.getTraceback() if failure else ''}")

        self.observer = observe

    def __enter__(self) -> _Errors:
        globalLogPublisher.addObserver(self.observer)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.collect()  # an unhandled failure in a Deferred is logged when it is collected
        globalLogPublisher.removeObserver(self.observer)


async def _status(reactor: Any, port: int) -> dict[str, Any]:
    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/status.json".encode())
    body: dict[str, Any] = json.loads(await readBody(response))
    return body


async def _server(reactor: Any) -> tuple[Child, int]:
    server = twistd_hub(reactor, "--listen", "tcp:0:interface=127.0.0.1")
    return server, await started_port(server, reactor)


async def _cut_until(reactor: Any, proxies: list[CuttingProxy], cuts: int, rng: random.Random) -> None:
    """Reset each proxy's open connection every 10-40 ms until each was cut C{cuts} times (bounded: 120 s)."""
    deadline = reactor.seconds() + 120
    while any(proxy.cuts < cuts for proxy in proxies):
        assert reactor.seconds() < deadline, [proxy.cuts for proxy in proxies]
        await task.deferLater(reactor, rng.uniform(0.01, 0.04), lambda: None)
        for proxy in proxies:
            if proxy.cuts < cuts:
                proxy.cut_all()


async def _until(reactor: Any, condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < deadline, f"not {what} within {timeout} s"
        await task.deferLater(reactor, 0.02, lambda: None)


class _PythonClient:
    """One ReconnectingHubClient through its own proxy, calling all the time (up to 4 calls in flight)."""

    def __init__(self, reactor: Any, port: int, index: int) -> None:
        self.reactor = reactor
        self.index = index
        self.prepared: list[HubClientProtocol] = []
        self.client = ReconnectingHubClient(
            f"ws://127.0.0.1:{port}/hub", "echo",
            options=HubClientOptions(call_timeout=CALL_TIMEOUT),
            on_connected=self.prepared.append,
            retry_policy=full_jitter_policy(initial_delay=0.01, max_delay=0.1),
            clock=reactor, wait_for_connection=CALL_TIMEOUT,
        )
        self.issued = 0
        self.answered = 0
        self.failed: dict[str, int] = {}
        self.late: list[float] = []
        self.wrong: list[Any] = []
        self.in_flight = 0
        self.calling = True

    def _call(self) -> None:
        n = self.issued
        self.issued += 1
        self.in_flight += 1
        started = self.reactor.seconds()

        def done(result: Any) -> None:
            self.in_flight -= 1
            took = self.reactor.seconds() - started
            if took > 2 * CALL_TIMEOUT + 1.0:  # wait_for_connection, then call_timeout
                self.late.append(took)
            if isinstance(result, defer.Failure):
                if not result.check(ConnectionClosedError, CallTimeoutError):
                    self.wrong.append(result.getTraceback())
                name = type(result.value).__name__
                if isinstance(result.value, ConnectionClosedError) and result.value.may_have_run:
                    name += "(may have run)"
                self.failed[name] = self.failed.get(name, 0) + 1
            elif result != n + self.index:
                self.wrong.append((n, result))
            else:
                self.answered += 1
            if self.calling:
                self.reactor.callLater(0, self._call)

        self.client.call("add", n, self.index).addBoth(done)

    def start(self) -> None:
        self.client.start()
        for _ in range(4):
            self._call()

    async def quiesce(self) -> None:
        self.calling = False
        await _until(self.reactor, lambda: self.in_flight == 0, "every call resolved", CALL_TIMEOUT * 2 + 2)


@pytest_twisted.ensureDeferred
async def test_python_client_through_hundreds_of_resets() -> None:
    from twisted.internet import reactor

    rng = random.Random(26)
    server, port = await _server(reactor)
    listening = []
    try:
        with _Errors() as errors:
            proxies = [CuttingProxy(reactor, port) for _ in range(3)]
            listening = [reactor.listenTCP(0, proxy, interface="127.0.0.1") for proxy in proxies]
            clients = [_PythonClient(reactor, p.getHost().port, i) for i, p in enumerate(listening)]
            for client in clients:
                client.start()
            await _cut_until(reactor, proxies, CUTS, rng)
            for client in clients:
                await client.quiesce()
            # After the storm: one connection each, which answers.
            for client, proxy in zip(clients, proxies, strict=True):
                assert await client.client.call("add", 1, 2) == 3
                assert len(proxy.live) == 1
            status = await _status(reactor, port)
            assert status["connections"] == len(clients), status
            for client, proxy in zip(clients, proxies, strict=True):
                c = client.client
                assert proxy.most_open == 1, f"{proxy.most_open} connections open at once through one proxy"
                assert proxy.cuts >= CUTS
                # on_connected ran once per connection, each on a different one, all of which
                # the proxy saw (an attempt cut before WELCOME is no connection).
                assert len(client.prepared) == c.connections
                assert len({id(p) for p in client.prepared}) == c.connections
                assert len({p.connection_id for p in client.prepared}) == c.connections
                assert CUTS // 2 <= c.connections <= proxy.accepts
                assert client.wrong == [] and client.late == [], (client.wrong[:3], client.late[:3])
                assert client.answered > 0 and sum(client.failed.values()) > 0, (client.answered, client.failed)
                assert client.answered + sum(client.failed.values()) == client.issued
            for client in clients:
                await client.client.stop()
            await _until(reactor, lambda: all(not proxy.live for proxy in proxies), "closed after stop()")
            assert (await _status(reactor, port))["connections"] == 0
        assert errors.events == [], errors.events[:3]
    finally:
        for listened in listening:
            await listened.stopListening()
        await server.stop(reactor)
    output = server.output()
    assert "Traceback" not in output and "Unhandled" not in output, output[-3000:]


@pytest_twisted.ensureDeferred
async def test_javascript_client_through_hundreds_of_resets() -> None:
    """The JS client's ReconnectingHubClient (Node, `ws`), the same storm, the same promises."""
    from twisted.internet import reactor

    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JavaScript client's tests need it (apt-get install nodejs, .ci/run)")
    assert (ROOT / "js" / "dist" / "index.js").exists() or _build_js()
    rng = random.Random(126)
    server, port = await _server(reactor)
    proxy = CuttingProxy(reactor, port)
    listening = reactor.listenTCP(0, proxy, interface="127.0.0.1")
    storm = spawn_python(reactor, "-c", _RUN_NODE, node, str(ROOT / "js" / "test" / "reconnect-storm.mjs"),
                         f"ws://127.0.0.1:{listening.getHost().port}/hub", str(int(CALL_TIMEOUT * 1000)))
    try:
        await storm.wait_for("^calling$", reactor, timeout=30)
        await _cut_until(reactor, [proxy], CUTS, rng)
        assert storm.transport is not None
        storm.transport.write(b"stop\n")
        # Calls in flight resolve within 2 x CALL_TIMEOUT; then a connection (up to 10 s) and one
        # more call: generous, for a loaded CI machine.
        line = await storm.wait_for(r"^\{.*\}$", reactor, timeout=60)
        stats = json.loads(line.group(0))
        assert stats["error"] is None, stats
        await storm.ended
        assert storm.exit_code == 0, storm.output()[-3000:]
        assert proxy.most_open == 1, f"{proxy.most_open} connections open at once"
        assert stats["onConnected"] == stats["connections"] == stats["distinctIds"]
        assert CUTS // 2 <= stats["connections"] <= proxy.accepts
        assert stats["answered"] > 0 and stats["failed"] > 0
        assert stats["answered"] + stats["failed"] == stats["issued"]
        assert stats["wrong"] == [] and stats["late"] == [] and stats["unhandled"] == [], stats
        assert stats["finalCall"] == 3
        await _until(reactor, lambda: not proxy.live, "closed after stop()")
        assert (await _status(reactor, port))["connections"] == 0
    finally:
        storm.signal(9)
        await listening.stopListening()
        await server.stop(reactor)
    output = server.output()
    assert "Traceback" not in output and "Unhandled" not in output, output[-3000:]


#: Runs node with stdin kept open for the test (spawn_python gives a pipe).
_RUN_NODE = "import os, sys; os.execv(sys.argv[1], sys.argv[1:2] + sys.argv[2:])"


def _build_js() -> bool:
    import subprocess

    subprocess.run(["node", "build.mjs"], cwd=Path(ROOT / "js"), check=True, timeout=180)
    return True
