"""
The JavaScript client's own suites (js/), run from pytest so the README's test
command covers them: the unit tests, the integration tests against a real
twistd hub, the headless-Chromium tests, the codegen compile check, and the
check that the bundle shipped in the wheel is the one js/ builds.

These fail, never skip, when node, npm or chromium is missing: .ci/run
installs them (apt-get) and runs `npm ci`.  When js/node_modules is missing
(a fresh checkout), `npm ci` is run first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
SHIPPED = ROOT / "twisted_hub" / "static" / "twisted-hub.js"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the JavaScript client's tests need it (apt-get install {name}; see .ci/run)")
    return path


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """js/node_modules, installed with `npm ci` from the committed lock file if absent."""
    _tool("node")
    npm = _tool("npm")
    modules = JS / "node_modules"
    if not (modules / "@msgpack" / "msgpack").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=600)
    return modules


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(args, cwd=JS, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    return result


def _passed(result: subprocess.CompletedProcess[str]) -> int:
    """How many tests node --test ran, after checking none failed."""
    fails = re.findall(r"^# fail (\d+)$", result.stdout, re.MULTILINE)
    passes = re.findall(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    assert fails == ["0"] and passes, result.stdout[-4000:]
    return int(passes[0])


def test_bundle_in_the_wheel_is_built_from_js_sources(node_modules: Path) -> None:
    """twisted_hub/static/twisted-hub.js is byte for byte what `npm run build` makes from js/src (run `npm run vendor` after a change)."""
    _run(_tool("node"), "build.mjs", timeout=180)
    built = (JS / "dist" / "twisted-hub.min.js").read_bytes()
    assert built == SHIPPED.read_bytes(), "the shipped bundle is stale: run `npm run vendor` in js/ and commit it"


def test_unit(node_modules: Path) -> None:
    """The node --test unit suite passes (protocol.md vectors, client on a fake clock and socket)."""
    assert _passed(_run(_tool("npm"), "test", timeout=300)) >= 100


def test_integration(node_modules: Path) -> None:
    """The Node client against a real `twistd -n hub`: calls, receivers, heartbeats, 4001, reconnect."""
    assert _passed(_run(_tool("npm"), "run", "test:integration", timeout=300)) >= 9


def test_generated_typescript_compiles_against_the_client(node_modules: Path) -> None:
    """The interfaces `python3 -m twisted_hub typescript` writes for the demo hubs type-check with the client under tsc --strict (js/test/typed/usage.ts, whose @ts-expect-error lines must each be errors)."""
    from twisted_hub.__main__ import main

    _run(_tool("node"), "build.mjs", timeout=180)
    generated = JS / "test" / "typed" / "generated"
    generated.mkdir(exist_ok=True)
    target = generated / "demo-hubs.ts"
    assert main(["typescript", "twisted_hub.demo:EchoHub", "twisted_hub.demo:ChatHub", "-o", str(target)]) == 0
    _run(_tool("node"), str(node_modules / "typescript" / "bin" / "tsc"), "-p", "test/typed/tsconfig.json", timeout=180)


def test_browser(node_modules: Path) -> None:
    """The demo page served by twistd hub in real headless Chromium: calls, broadcast, heartbeats, busy/frozen page, background tab (20 s)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: the browser tests need it (apt-get install chromium; see .ci/run)")
    result = subprocess.run(
        [_tool("npm"), "run", "test:browser"], cwd=JS, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHON": sys.executable, "CHROMIUM": chromium},
    )
    assert result.returncode == 0, f"browser tests failed:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    assert _passed(result) >= 5
