"""Every example of docs/streams.md runs as written: in memory, and under twistd with the asyncio and JS clients."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ._docs import named_blocks
from .test_aio import TwistdHub
from .test_javascript import JS, _run, _tool, node_modules  # noqa: F401 - node_modules is a fixture

DOC = "docs/streams.md"


def code(name: str) -> str:
    return named_blocks(DOC)[name][1]


def test_every_block_is_known() -> None:
    """Each block of the page is one these tests run."""
    assert set(named_blocks(DOC)) == {"streams-example", "streamhub.py", "streams-twistd", "streams-asyncio", "streams-js"}


def test_example_runs() -> None:
    """The in-memory example runs (its asserts hold)."""
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code("streams-example"), DOC, "exec"), namespace)
    assert namespace["seen"] == [0, 1, 2, 0, 4950]


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """streamhub.py under `twistd hub` with the page's command line (its port made free)."""
    (tmp_path / "streamhub.py").write_text(code("streamhub.py"))
    argv = shlex.split(code("streams-twistd"))
    assert argv[:3] == ["twistd", "-n", "hub"] and argv[-2:] == ["--listen", "tcp:8080"], argv
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = TwistdHub(*argv[3:-2])
    yield server, tmp_path
    server.stop()


def test_asyncio_example(served: Any) -> None:
    """The asyncio example prints what its comments say; the server's producers stopped (their finally ran)."""
    server, tmp_path = served
    source = code("streams-asyncio")
    assert source.startswith("# streams_aio.py: run with  python3 streams_aio.py [URL]")
    script = tmp_path / "streams_aio.py"
    script.write_text(source)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run(
        [sys.executable, str(script), server.url], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1", "2", "45"]
    server.process.terminate()
    output = server.process.communicate(timeout=30)[0].decode("utf-8", "replace")
    # ticks(3) ended, and ticks(1000) was cancelled when the client left its block
    assert output.count("ticks: the producer stopped") == 2, output[-3000:]


def test_js_example(served: Any, node_modules: Path) -> None:  # noqa: F811 - the fixture
    """The JavaScript example prints what its comments say against the same server."""
    server, _ = served
    source = code("streams-js").replace('"twisted-hub"', '"../../dist/index.js"')
    source = source.replace("ws://127.0.0.1:8080/hub", server.url)
    generated = JS / "test" / "generated"
    generated.mkdir(exist_ok=True)
    script = generated / "streams-example.mjs"
    script.write_text(source)
    done = _run(_tool("node"), str(script), timeout=60)
    printed = [re.sub(r"\s+", " ", line).strip() for line in done.stdout.splitlines()]
    assert printed == ["0", "1", "2", "45"], done.stdout + done.stderr
