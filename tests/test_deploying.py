"""Every example of docs/deploying.md, run: twistd, the CLI check, the config, systemd, nginx, TLS."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import DisconnectKind, connect
from twisted_hub.tap import Options

from ._certs import write_self_signed
from ._docs import named_blocks
from ._nginx import start_nginx
from ._twistd import TWISTD, Child, spawn_python, started_port

DOC = "docs/deploying.md"
BLOCKS = named_blocks(DOC)


def code(name: str) -> str:
    return BLOCKS[name][1]


def command_lines(name: str) -> list[list[str]]:
    return [shlex.split(line) for line in code(name).splitlines() if line.strip()]


def as_python(argv: list[str]) -> list[str]:
    """The doc's command with `twistd`/`python3` replaced by this interpreter (and the repo's code)."""
    if argv[0].endswith("twistd"):
        return [*TWISTD, *argv[1:]]
    if argv[0] == "python3":
        return argv[1:]
    raise AssertionError(f"unexpected command {argv[0]!r}")


def run_doc_command(reactor: Any, argv: list[str]) -> Child:
    return spawn_python(reactor, *as_python(argv))


def with_port(argv: list[str], old: str, new: int | str) -> list[str]:
    return [arg.replace(old, str(new)) for arg in argv]


async def finished(child: Child, reactor: Any, timeout: float = 30.0) -> Child:
    await child.ended.addTimeout(timeout, reactor)
    return child


class DocumentTests(SynchronousTestCase):
    def test_every_block_is_known(self) -> None:
        """Every code block of the document is one this module runs."""
        self.assertEqual(
            set(BLOCKS),
            {
                "twistd-run", "cli-check", "hub-config", "systemd-unit", "nginx-site", "twistd-tls", "static-run",
                "usage-error",
            },
        )

    def test_usage_error_example(self) -> None:
        """The usage-error example is what twistd hub says for that --listen in a folder without key.pem."""
        from twisted.scripts.twistd import ServerOptions

        first, hint = code("usage-error").splitlines()
        listen = re.search(r"--listen '([^']+)'", first).group(1)  # type: ignore[union-attr]
        previous = os.getcwd()
        with tempfile.TemporaryDirectory() as directory:
            os.chdir(directory)
            try:
                with self.assertRaises(SystemExit) as caught:
                    ServerOptions().parseOptions(["--nodaemon", "--pidfile=", "hub", "--listen", listen])
            finally:
                os.chdir(previous)
        self.assertEqual(str(caught.exception.code).splitlines(), [first, hint])

    def test_config_example_parses(self) -> None:
        """The TOML example is a valid config whose values reach the options."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "hub.toml"
            path.write_text(code("hub-config"))
            options = Options()
            options.parseOptions(["--config", str(path)])
        self.assertEqual(options["heartbeat"].interval, 20)
        self.assertEqual(options["heartbeat"].timeout, 45)
        self.assertEqual([h.hub_name for h in options["hubs"]], ["echo", "chat"])
        self.assertEqual(options["origin-policy"].origins, frozenset({"https://app.example.com"}))
        self.assertTrue(options["origin-policy"].same_host)
        self.assertEqual(options["allowed-hosts"], ["hub.example.com", "127.0.0.1"])
        self.assertEqual((options["handshake-timeout"], options["max-connections"]), (10, 10000))

    def test_file_limit_covers_max_connections(self) -> None:
        """The unit's LimitNOFILE exceeds the config's max-connections plus 100 files for the process."""
        max_connections = int(re.search(r"max-connections = (\d+)", code("hub-config")).group(1))  # type: ignore[union-attr]
        self.assertGreaterEqual(int(parse_unit()["Service"]["LimitNOFILE"]), max_connections + 100)

    def test_timeouts_are_consistent(self) -> None:
        """nginx's read timeout exceeds every documented heartbeat interval; systemd waits out the shutdown."""
        read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", code("nginx-site")).group(1))  # type: ignore[union-attr]
        interval = float(command_lines("twistd-run")[0][-1])
        config_interval = float(re.search(r"heartbeat-interval = (\d+)", code("hub-config")).group(1))  # type: ignore[union-attr]
        self.assertGreater(read_timeout, 2 * interval)
        self.assertGreater(read_timeout, 2 * config_interval)
        unit = parse_unit()
        shutdown = float(re.search(r"shutdown-timeout = (\d+)", code("hub-config")).group(1))  # type: ignore[union-attr]
        self.assertGreater(float(unit["Service"]["TimeoutStopSec"]), shutdown)
        self.assertEqual(unit["Service"]["KillSignal"], "SIGTERM")

    def test_options_table_lists_every_option(self) -> None:
        """The options table documents every option twistd hub accepts."""
        text = (Path(__file__).resolve().parent.parent / DOC).read_text()
        for long_name in ["listen", "port", "path", "hub", "heartbeat-interval", "heartbeat-timeout",
                          "max-message-size", "allowed-origin", "log-level", "shutdown-timeout", "config",
                          "allowed-host", "handshake-timeout", "max-connections", "max-connections-per-ip",
                          "status-path", "no-status", "static", "static-listing", "call-rate", "call-burst",
                          "call-timeout", "log-calls", "filter"]:
            self.assertIn(f"`--{long_name}", text)


def parse_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(code("systemd-unit"))
    return unit


@pytest_twisted.ensureDeferred
async def test_twistd_and_cli_check() -> None:
    """The twistd command serves; the CLI check's call prints the JSON and watch sees heartbeats."""
    from twisted.internet import reactor

    (twistd,) = command_lines("twistd-run")
    server = run_doc_command(reactor, with_port(twistd, "8080", "0") + ["--log-level", "info"])
    try:
        port = await started_port(server, reactor)
        call, watch = command_lines("cli-check")
        child = await finished(run_doc_command(reactor, with_port(call, "8080", port)), reactor)
        assert child.exit_code == 0, child.output()
        assert child.lines == ['"hello"']
        child = await finished(run_doc_command(reactor, with_port(watch, "8080", port)), reactor)
        assert child.exit_code == 0, child.output()
        assert len([line for line in child.lines if line.startswith("heartbeat #")]) == 3
        assert child.lines[-1] == "disconnected: normal: watch finished"
    finally:
        await server.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_static_example(tmp_path: Path) -> None:
    """The --static example, run beside site/: / is site/index.html, the hub answers, the status page is at /status."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    (twistd,) = command_lines("static-run")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<!DOCTYPE html><title>my page</title>\n")
    at = twistd.index("--port")
    assert twistd[at + 1] == "8080"
    argv = [*twistd[:at], "--listen", "tcp:0:interface=127.0.0.1", *twistd[at + 2:]]
    server = spawn_python(reactor, *as_python(argv), cwd=tmp_path)  # "site" is relative to where twistd starts
    try:
        port = await started_port(server, reactor)
        agent = Agent(reactor)
        front = await agent.request(b"GET", f"http://127.0.0.1:{port}/".encode())
        assert (front.code, await readBody(front)) == (200, b"<!DOCTYPE html><title>my page</title>\n")
        status = await agent.request(b"GET", f"http://127.0.0.1:{port}/status".encode())
        assert status.code == 200 and b"<title>twisted-hub</title>" in await readBody(status)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "echo", clock=reactor, timeout=10)
        assert await client.call("echo", "beside the page") == "beside the page"
        await client.disconnect()
    finally:
        await server.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_systemd_unit() -> None:
    """The unit's ExecStart (with the config example) serves, and its KillSignal stops it within TimeoutStopSec."""
    from twisted.internet import reactor

    unit = parse_unit()
    service = unit["Service"]
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "hub.toml"
        config.write_text(code("hub-config").replace("tcp:8080", "tcp:0"))
        argv = shlex.split(service["ExecStart"])
        argv = [str(config) if arg == "/etc/twisted-hub/hub.toml" else arg for arg in argv]
        server = run_doc_command(reactor, argv)
        try:
            port = await started_port(server, reactor)
            client = await connect(f"ws://127.0.0.1:{port}/hub", "echo", clock=reactor, timeout=10)
            assert await client.call("echo", "from systemd") == "from systemd"
            disconnected = client.wait_for_disconnect()
            started = time.monotonic()
            server.signal(getattr(signal, service["KillSignal"]))
            reason = await disconnected.addTimeout(10, reactor)
            assert reason.kind is DisconnectKind.GOING_AWAY
            await server.ended.addTimeout(float(service["TimeoutStopSec"]), reactor)
            assert time.monotonic() - started < float(service["TimeoutStopSec"])
            assert server.ended_cleanly, server.output()
        finally:
            await server.stop(reactor)


def nginx_locations() -> str:
    """The doc's location blocks, as a template for tests/_nginx.py (backend port filled in there)."""
    site = code("nginx-site")
    assert "map $http_upgrade $connection_upgrade" in site
    blocks = re.findall(r"^[ \t]*location[^{]*\{.*?^[ \t]*\}", site, re.S | re.M)
    assert len(blocks) == 2, blocks
    template = "\n".join(blocks).replace("{", "{{").replace("}", "}}")
    assert "127.0.0.1:8080" in template
    return template.replace("127.0.0.1:8080", "127.0.0.1:{backend_port}")


@pytest_twisted.ensureDeferred
async def test_nginx_in_front() -> None:
    """Through the doc's nginx locations: the status page, a call and server heartbeats all pass."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    from twisted_hub import HubClientOptions

    backend = spawn_python(reactor, *TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "hub", "--port", "0",
                           "--heartbeat-interval", "0.2")
    nginx = None
    try:
        backend_port = await started_port(backend, reactor)
        nginx = start_nginx(backend_port, nginx_locations())
        base = f"127.0.0.1:{nginx.port}"
        response = await Agent(reactor).request(b"GET", f"http://{base}/".encode())
        assert response.code == 200
        assert b"server time (UTC)" in await readBody(response)
        beats: list[object] = []
        options = HubClientOptions(on_server_heartbeat=beats.append)
        client = await connect(f"ws://{base}/hub", "echo", options=options, clock=reactor, timeout=10)
        assert await client.call("echo", "through nginx") == "through nginx"
        from twisted.internet.task import deferLater

        for _ in range(100):
            if len(beats) >= 2:
                break
            await deferLater(reactor, 0.05)
        assert len(beats) >= 2, "server heartbeats did not pass through nginx"
        await client.disconnect()
    finally:
        if nginx is not None:
            nginx.stop()
        await backend.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_tls_example() -> None:
    """The TLS example serves wss:// with a (generated) certificate; the CLI check and curl (with ALPN) pass."""
    from twisted.internet import reactor
    from twisted.internet.utils import getProcessOutputAndValue

    twistd, call, curl = command_lines("twistd-tls")
    curl_path = shutil.which(curl[0])
    if curl_path is None:
        pytest.fail("curl is not installed: the TLS example needs it (apt-get install curl; see .ci/run)")
    with tempfile.TemporaryDirectory() as directory:
        key, cert = write_self_signed(Path(directory))

        def local(argv: list[str]) -> list[str]:
            return [
                arg.replace("/etc/twisted-hub/key.pem", str(key)).replace("/etc/twisted-hub/fullchain.pem", str(cert))
                for arg in argv
            ]

        server = run_doc_command(reactor, with_port(local(twistd), "ssl:8443", "ssl:0:interface=127.0.0.1"))
        try:
            port = await started_port(server, reactor)
            child = await finished(run_doc_command(reactor, with_port(local(call), "8443", port)), reactor)
            assert child.exit_code == 0, child.output()
            assert child.lines == ['"over TLS"']
            out, err, code = await getProcessOutputAndValue(
                curl_path, with_port(local(curl), "8443", port)[1:], env={"PATH": os.environ.get("PATH", "")}, reactor=reactor,
            )
            assert (code, out) == (0, b"ok\n"), err.decode("utf-8", "replace")
        finally:
            await server.stop(reactor)


def test_missing_nginx_fails_the_proxy_tests() -> None:
    """Without nginx the proxy tests fail with a line saying how to install it: never a skip."""
    from unittest import mock

    from . import _nginx

    with mock.patch.object(_nginx.shutil, "which", return_value=None), \
            mock.patch.object(_nginx.os.path, "exists", return_value=False):
        with pytest.raises(pytest.fail.Exception, match="nginx is not installed: .*scripts/test installs it"):
            _nginx.start_nginx(1)
