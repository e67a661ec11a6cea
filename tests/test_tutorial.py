"""
docs/tutorial.md, run as written: its files are written into a new folder,
the real C{twistd} script is started in that folder (which is on no
C{PYTHONPATH}: C{--hub counterhub:CounterHub} must find the module there),
and the command-line calls, the asyncio script and the page in headless
Chromium each get the answers the page says.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from ._docs import named_blocks
from ._twistd import Child, spawn_python, started_port
from .test_javascript import JS, _run, _tool

DOC = "docs/tutorial.md"
BLOCKS = named_blocks(DOC)
#: A process of the tutorial gets this long to finish (a loaded machine starts Python slowly).
PROCESS_SECONDS = 60.0

pytestmark = pytest.mark.timeout(400)


def code(name: str) -> str:
    return BLOCKS[name][1]


def twistd_script() -> Path:
    """
    The C{twistd} console script of this interpreter, run as a user runs it:
    its own folder, not the current directory, is first on C{sys.path}.
    """
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        script = Path(sysconfig.get_path("scripts", scheme)) / "twistd"
        if script.is_file():
            return script
    pytest.fail("the twistd script of this Python is not installed (pip install twisted)")


def doc_command(line: str, port: int) -> list[str]:
    """A command line of the page, with the free port for 8080 and without its comment."""
    return shlex.split(line.replace("8080", str(port)), comments=True)


async def ended(child: Child, reactor: Any) -> Child:
    await child.ended.addTimeout(PROCESS_SECONDS, reactor)
    return child


class DocumentTests(SynchronousTestCase):
    def test_every_block_is_known(self) -> None:
        """Every code block of the tutorial is one this module runs or compares."""
        self.assertEqual(
            list(BLOCKS),
            ["counterhub.py", "serve", "hub-typo", "cli", "cli-mistake", "counter_client.py",
             "counter_client-output", "index.html"],
        )


@pytest.fixture(scope="module")
def puppeteer() -> Path:
    """js/node_modules with puppeteer-core (npm ci from the lock file when absent)."""
    _tool("node")
    if not (JS / "node_modules" / "puppeteer-core").is_dir():
        _run(_tool("npm"), "ci", "--no-audit", "--no-fund", timeout=600)
    return JS / "node_modules"


@pytest_twisted.ensureDeferred
async def test_the_tutorial_as_written(puppeteer: Path) -> None:
    """Write the hub and the page, serve them with twistd in their folder, call from the CLI, asyncio and Chromium."""
    from twisted.internet import reactor

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: the tutorial's page needs it (apt-get install chromium; see .ci/run)")
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        assert str(folder) not in os.environ.get("PYTHONPATH", "")
        (folder / "counterhub.py").write_text(code("counterhub.py"))
        (folder / "site").mkdir()
        (folder / "site" / "index.html").write_text(code("index.html"))
        twistd = [str(twistd_script())]

        # Step 2: a typo in the class name is the two lines the page shows.
        serve = shlex.split(code("serve"))
        assert serve[0] == "twistd"
        typo = [arg.replace("counterhub:CounterHub", "counterhub:Counter") for arg in serve[1:]]
        child = await ended(spawn_python(reactor, *twistd, *typo, cwd=folder), reactor)
        assert (child.exit_code, child.lines) == (1, []), child.output()
        assert child.err_lines == code("hub-typo").splitlines(), child.output()

        server = spawn_python(reactor, *twistd, *[a.replace("tcp:8080", "tcp:0") for a in serve[1:]], cwd=folder)
        try:
            port = await started_port(server, reactor, PROCESS_SECONDS)

            # Step 3: each command prints what its comment says.
            for line in code("cli").splitlines():
                argv = doc_command(line, port)
                assert argv[:3] == ["python3", "-m", "twisted_hub"], line
                child = await ended(spawn_python(reactor, *argv[1:], cwd=folder), reactor)
                assert (child.exit_code, child.lines) == (0, [line.rsplit("#", 1)[1].strip()]), child.output()
            prompt, *expected = code("cli-mistake").splitlines()
            argv = doc_command(prompt.removeprefix("$ "), port)
            child = await ended(spawn_python(reactor, *argv[1:], cwd=folder), reactor)
            assert (child.exit_code, child.lines, child.err_lines) == (1, [], expected), child.output()

            # Step 4: the asyncio script.
            script = folder / "counter_client.py"
            script.write_text(code("counter_client.py").replace("8080", str(port)))
            child = await ended(spawn_python(reactor, script.name, cwd=folder), reactor)
            assert child.exit_code == 0, child.output()
            assert child.lines == code("counter_client-output").splitlines(), child.output()

            # Step 5: the page, in Chromium: it shows the count, +1 adds one, a change from the CLI shows.
            page = Child()
            reactor.spawnProcess(
                page, _tool("node"), [_tool("node"), "test/tutorial-page.mjs", f"http://127.0.0.1:{port}/"],
                env={**os.environ, "CHROMIUM": chromium, "PYTHON": sys.executable}, path=str(JS),
            )
            try:
                shown = int((await page.wait_for(r"^shown (\d+)$", reactor, PROCESS_SECONDS)).group(1))
                assert shown == 16
                assert (await page.wait_for(r"^clicked (\d+)$", reactor, PROCESS_SECONDS)).group(1) == "17"
                by_five = [line for line in code("cli").splitlines() if "by=5" in line]
                argv = doc_command(by_five[0], port)
                child = await ended(spawn_python(reactor, *argv[1:], cwd=folder), reactor)
                assert child.lines == ["22"], child.output()
                assert (await page.wait_for(r"^changed (\d+)$", reactor, PROCESS_SECONDS)).group(1) == "22"
                assert await page.ended.addTimeout(PROCESS_SECONDS, reactor) == 0, page.output()
            finally:
                await page.stop(reactor)
        finally:
            await server.stop(reactor)
        assert not re.search(r"Traceback|Unhandled", server.output()), server.output()
