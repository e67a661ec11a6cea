"""The README's set-up (two commands), its examples and its test command run as written and do what it says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub.testing import HubTestServer

from ._docs import ROOT, named_blocks
from ._twistd import TWISTD, spawn_python, started_port

README = "README.md"


def block(name: str) -> str:
    return named_blocks(README)[name][1]


class ReadmeExampleTests(SynchronousTestCase):
    def test_example_runs(self) -> None:
        """room.py, saved and run as its first line says, serves a hub, calls it and hears the broadcast."""
        code = block("room.py")
        self.assertTrue(code.startswith("# room.py: run with  python3 room.py\n"), code.splitlines()[0])
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / "room.py").write_text(code)
            result = subprocess.run(
                [sys.executable, "room.py"], capture_output=True, text=True, timeout=60, cwd=directory,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.splitlines(),
            ["members: 1", "ann: hello, room", "disconnected: normal"],
        )

    def test_heartbeat_snippet_runs(self) -> None:
        """The README's heartbeat fragment runs on top of room.py's definitions and configures what it says."""
        namespace: dict[str, object] = {"__name__": "readme"}
        exec(compile(block("room.py"), README, "exec"), namespace)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the showcase must be a configuration we do not warn about
            exec(compile(block("heartbeat-settings"), README, "exec"), namespace)
            HubTestServer([namespace["GameHub"]])  # type: ignore[list-item]
        factory = namespace["factory"]
        self.assertEqual(factory.heartbeat.timeout, 15.0)  # type: ignore[attr-defined]
        self.assertEqual(namespace["options"].heartbeat_timeout, 15.0)  # type: ignore[attr-defined]
        override = namespace["GameHub"].heartbeat_override  # type: ignore[attr-defined]
        self.assertEqual((override.interval, override.timeout), (2, 6))
        self.assertEqual(namespace["options"].heartbeat, factory.heartbeat)  # type: ignore[attr-defined]


class SetUpTests(SynchronousTestCase):
    def test_two_commands(self) -> None:
        """The README's set-up is two shell commands: one serves (twistd -n hub), one runs the tests (scripts/test)."""
        shell = {name: code for name, (language, code) in named_blocks(README).items() if language == "sh"}
        self.assertEqual(set(shell), {"serve", "run-tests"})
        self.assertEqual(shell["serve"], "pip install . && twistd -n --pidfile= hub --port 8080\n")
        self.assertEqual(shell["run-tests"], "scripts/test\n")
        self.assertTrue(os.access(ROOT / "scripts" / "test", os.X_OK), "scripts/test is not executable")

    def test_ci_runs_the_readme_test_command(self) -> None:
        """.ci/run runs the README's test command exactly, and pytest nowhere else."""
        lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
        # (a step may be bounded with `timeout SECONDS`: the command itself is the README's)
        commands = [re.sub(r"^timeout \d+ ", "", line) for line in lines if line and not line.startswith("#")]
        self.assertIn(block("run-tests").strip(), commands)
        self.assertEqual([c for c in commands if "pytest" in c], [])


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses a LISTEN socket of this port is bound to (Linux /proc/net/tcp)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            addresses.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses


@pytest_twisted.ensureDeferred
async def test_serve_command() -> None:
    """The serve command (on a free port) listens on 127.0.0.1 only, writes no twistd.pid, and echo.add 2 3 prints 5."""
    from twisted.internet import reactor

    argv = shlex.split(block("serve").split("&&")[1])
    assert argv[:2] == ["twistd", "-n"] and argv[-2:] == ["--port", "8080"], argv
    with tempfile.TemporaryDirectory() as directory:
        child = spawn_python(reactor, *TWISTD, *argv[1:-1], "0", cwd=Path(directory))
        try:
            port = await started_port(child, reactor)
            await child.wait_for(r"listening on ws://127\.0\.0\.1:0/hub", reactor)
            assert listening_addresses(port) == {"127.0.0.1"}
            call = spawn_python(reactor, "-m", "twisted_hub", "call", f"ws://127.0.0.1:{port}/hub", "echo.add", "2", "3")
            assert await call.ended.addTimeout(30, reactor) == 0, call.output()
            assert call.lines == ["5"]
            assert os.listdir(directory) == [], os.listdir(directory)
        finally:
            await child.stop(reactor)
    assert re.search(r"Site starting on \d+", child.output())
