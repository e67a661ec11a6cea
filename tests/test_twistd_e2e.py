"""End to end: `twistd -n hub` as a child process, called over loopback, stopped with SIGTERM."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from twisted_hub import DisconnectKind, connect

from ._twistd import started_port, twistd_hub


@pytest_twisted.ensureDeferred
async def test_serve_call_and_sigterm() -> None:
    """The demo hub answers; SIGTERM closes the client with going-away and twistd exits within the bound."""
    from twisted.internet import reactor

    child = twistd_hub(reactor, "--listen", "tcp:0:interface=127.0.0.1", "--shutdown-timeout", "3")
    try:
        port = await started_port(child, reactor)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "echo", clock=reactor, timeout=10)
        assert await client.call("echo", {"x": [1, 2]}) == {"x": [1, 2]}
        assert await client.call("add", 2, 3) == 5
        disconnected = client.wait_for_disconnect()
        started = time.monotonic()
        child.signal(signal.SIGTERM)
        reason = await disconnected.addTimeout(10, reactor)
        assert reason.kind is DisconnectKind.GOING_AWAY, reason
        assert reason.code == 1001
        code = await child.ended.addTimeout(10, reactor)
        assert time.monotonic() - started < 3 + 2, "twistd took longer than the shutdown bound"
        assert child.ended_cleanly, (code, child.exit_signal, child.output())
        assert "Server Shut Down." in child.output()
    finally:
        await child.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_status_page() -> None:
    """GET / answers a plain HTML status page with the hubs, their connections and heartbeat settings."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    child = twistd_hub(reactor, "--port", "0", "--heartbeat-interval", "5")
    try:
        port = await started_port(child, reactor)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "chat", clock=reactor, timeout=10)
        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode())
        body = (await readBody(response)).decode()
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
        assert "server time (UTC)" in body
        assert "<td>chat</td><td><code>/hub/chat</code></td><td>1</td><td>every 5 s, timeout 15 s</td>" in body
        assert "<td>echo</td><td><code>/hub/echo</code></td><td>0</td>" in body
        await client.disconnect()
    finally:
        await child.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_bad_option_fails_before_listening() -> None:
    """A bad value stops twistd with a usage error naming the option, and nothing listens."""
    from twisted.internet import reactor

    child = twistd_hub(reactor, "--port", "0", "--heartbeat-interval", "soon")
    try:
        code = await child.ended.addTimeout(20, reactor)
        assert code != 0
        assert "--heartbeat-interval must be a number" in child.output()
        assert "starting on" not in child.output()
    finally:
        await child.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_port_in_use_is_one_clear_line() -> None:
    """twistd hub on a port another socket holds ends at once with one line naming the port and --port, no traceback."""
    import socket

    from twisted.internet import reactor

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        child = twistd_hub(reactor, "--listen", f"tcp:{port}:interface=127.0.0.1")
        await child.ended.addTimeout(30, reactor)
        output = child.output()
        assert f"twistd hub: cannot listen on port {port} on 127.0.0.1: Address already in use" in output, output
        assert "--port" in output and "Traceback" not in output, output
        assert not child.ended_cleanly
    finally:
        holder.close()


@pytest_twisted.ensureDeferred
async def test_json_logs_for_shippers() -> None:
    """twistd --logger twisted_hub.tap.json_log_observer: every line is a JSON event; the banner carries its fields."""
    import json

    from twisted.internet import reactor

    child = twistd_hub(
        reactor, "--listen", "tcp:0:interface=127.0.0.1",
        twistd_args=("--logger", "twisted_hub.tap.json_log_observer"),
    )
    try:
        await child.wait_for(r"listening on", reactor, 30)
        events = [json.loads(line.lstrip("\x1e")) for line in child.lines if line.strip("\x1e").strip()]
        banner = [e for e in events if e.get("log_format", "").startswith("twisted-hub {version} listening on")]
        assert len(banner) == 1, child.output()
        assert banner[0]["urls"].startswith("ws://127.0.0.1:") and "echo" in banner[0]["hubs"]
    finally:
        await child.stop(reactor)


@pytest.mark.parametrize("level", ["info", "debug"])
@pytest_twisted.ensureDeferred
async def test_log_level_filters_twistds_log(level: str) -> None:
    """twistd hub --log-level: at info no debug line reaches twistd's log; at debug ours do, autobahn's not."""
    import re

    from twisted.internet import reactor

    child = twistd_hub(
        reactor, "--listen", "tcp:0:interface=127.0.0.1", "--heartbeat-interval", "5", "--log-level", level
    )
    try:
        port = await started_port(child, reactor)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "echo", clock=reactor, timeout=10)
        assert await client.call("echo", 1) == 1
        await client.disconnect()
        # the heartbeat timer started (a debug line) before this connection closed (an info line)
        await child.wait_for(r"echo connection \S+ closed", reactor, 10)
        debug = [text for text in child.lines if "#debug]" in text]
        if level == "info":
            assert debug == [], child.output()
        else:
            assert any(re.search(r"\[twisted_hub[\w.]*#debug\] heartbeat timer started", text) for text in debug), debug
            assert not [text for text in debug if "[autobahn" in text], child.output()
    finally:
        await child.stop(reactor)


async def _until(condition: Callable[[], bool], reactor: Any, seconds: float, what: str) -> None:
    """Check C{condition} every 50 ms (a file being written gives us nothing to wait on) until it holds; fail after C{seconds}."""
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_log_destination_is_twistds(tmp_path: Path) -> None:
    """twistd --logfile FILE hub: twistd writes the hub's log to FILE (ours at --log-level) and rotates it on SIGUSR1."""
    from twisted.internet import reactor

    log = tmp_path / "hub.log"
    child = twistd_hub(
        reactor, "--listen", "tcp:0:interface=127.0.0.1", "--heartbeat-interval", "5", "--log-level", "debug",
        twistd_args=(f"--logfile={log}",),
    )
    try:
        await _until(lambda: log.exists() and "listening on" in log.read_text(), reactor, 30, f"the banner in {log}")
        port = int(re.search(r"Site starting on (\d+)", log.read_text()).group(1))  # type: ignore[union-attr]
        client = await connect(f"ws://127.0.0.1:{port}/hub", "echo", clock=reactor, timeout=10)
        await client.disconnect()
        await _until(lambda: "echo connection" in log.read_text() and " closed" in log.read_text(), reactor, 10, "the close line")
        assert re.search(r"\[twisted_hub[\w.]*#debug\] heartbeat timer started", log.read_text()), log.read_text()
        assert child.lines == [], child.output()  # nothing on standard output: the file is the log
        child.signal(signal.SIGUSR1)
        rotated = tmp_path / "hub.log.1"
        await _until(rotated.exists, reactor, 10, "hub.log rotated to hub.log.1")
        assert "listening on" in rotated.read_text()
    finally:
        await child.stop(reactor)
