"""
Every example in docs/auth.md runs as written: the complete example, the
twistd command and the config file; and, over the network, tokenhub.py
under `twistd hub` with the asyncio and the JavaScript clients' examples.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import DisconnectKind
from twisted_hub.tap import Options

from ._docs import named_blocks
from .helpers.auth import ExpiringAuthenticator
from .test_aio import TwistdHub
from .test_javascript import JS, _run, _tool, node_modules  # noqa: F401 - node_modules is a fixture

DOC = "docs/auth.md"
#: the example's module names, for ones these tests can import
STAND_INS = {
    "myapp.notes:NotesHub": "tests.helpers.auth:WhoAmIHub",
    "myapp.auth:Accounts": "tests.helpers.auth:ExpiringAuthenticator",
}


def code(name: str) -> str:
    return named_blocks(DOC)[name][1]


def stand_in(text: str) -> str:
    for name, replacement in STAND_INS.items():
        text = text.replace(name, replacement)
    return text


class AuthDocTests(SynchronousTestCase):
    def test_every_block_is_known(self) -> None:
        """Each block of the page is one these tests run."""
        self.assertEqual(
            set(named_blocks(DOC)),
            {"auth-example", "auth-twistd", "auth-config", "tokenhub.py", "tokens-twistd", "tokens-asyncio", "tokens-js"},
        )

    def test_example_runs(self) -> None:
        """The complete example runs and its asserts hold: refusals, policies, a refresh across key rotation, an expiry."""
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(code("auth-example"), DOC, "exec"), namespace)
        self.assertEqual(namespace["bob"].disconnect_reason.kind, DisconnectKind.TOKEN_EXPIRED)
        self.assertTrue(namespace["ann"].is_connected)

    def check(self, options: Options) -> None:
        self.assertIsInstance(options["authenticator"], ExpiringAuthenticator)
        self.assertEqual(options["auth-timeout"], 3.0)
        self.assertTrue(options["deny-by-default"])

    def test_twistd_command(self) -> None:
        """The twistd command line loads the authenticator (a class, made) with its deadline and deny-by-default."""
        argv = shlex.split(stand_in(code("auth-twistd")))
        options = Options()
        options.parseOptions(argv[argv.index("hub") + 1:])
        self.check(options)

    def test_config_file(self) -> None:
        """The TOML example gives the same settings."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text(stand_in(code("auth-config")))
        options = Options()
        options.parseOptions(["--config", str(path)])
        self.check(options)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TwistdHub, Path]]:
    """tokenhub.py under `twistd hub` with the page's command line (its port made free)."""
    (tmp_path / "tokenhub.py").write_text(code("tokenhub.py"))
    argv = shlex.split(code("tokens-twistd"))
    assert argv[:3] == ["twistd", "-n", "hub"] and argv[-2:] == ["--listen", "tcp:8080"], argv
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = TwistdHub(*argv[3:-2])
    yield server, tmp_path
    server.stop()


def test_asyncio_example(served: tuple[TwistdHub, Path]) -> None:
    """The asyncio example outlives its 2 s token (refreshed) and prints what its comments say."""
    server, tmp_path = served
    source = code("tokens-asyncio")
    assert source.startswith("# tokens_aio.py: run with  python3 tokens_aio.py [URL]")
    script = tmp_path / "tokens_aio.py"
    script.write_text(source)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run(
        [sys.executable, str(script), server.url], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ann", "forbidden"], done.stdout + done.stderr


def test_js_example(served: tuple[TwistdHub, Path], node_modules: Path) -> None:  # noqa: F811 - the fixture
    """The JavaScript example outlives its 2 s token (refreshed) and prints what its comments say."""
    server, _ = served
    source = code("tokens-js").replace('"twisted-hub"', '"../../dist/index.js"')
    source = source.replace("ws://127.0.0.1:8080/hub", server.url)
    generated = JS / "test" / "generated"
    generated.mkdir(exist_ok=True)
    script = generated / "tokens-example.mjs"
    script.write_text(source)
    done = _run(_tool("node"), str(script), timeout=60)
    printed = [re.sub(r"\s+", " ", line).strip() for line in done.stdout.splitlines()]
    assert printed == ["ann", "forbidden"], done.stdout + done.stderr
