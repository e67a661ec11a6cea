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

from ._docs import named_blocks

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
    generated = JS / "test" / "generated"
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


def test_docs_typescript_examples(node_modules: Path) -> None:
    """docs/javascript.md: the codegen command runs as written and the typed-proxy example compiles against its output (tsc --strict)."""
    blocks = named_blocks("docs/javascript.md")
    assert set(blocks) == {"mount", "pack", "browser-example", "node-example", "typed-proxy", "codegen"}
    _run(_tool("node"), "build.mjs", timeout=180)
    generated = JS / "test" / "generated"
    generated.mkdir(exist_ok=True)
    (generated / "chat-hub.ts").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = blocks["codegen"][1].replace("python3 ", f"{sys.executable} ", 1)
    subprocess.run(["bash", "-euc", command], cwd=generated, check=True, timeout=60, env=env)
    assert "export interface ChatHub {" in (generated / "chat-hub.ts").read_text()
    (generated / "typed-proxy.ts").write_text(blocks["typed-proxy"][1])
    (generated / "tsconfig.json").write_text(
        '{"extends": "../typed/tsconfig.json", "files": ["typed-proxy.ts"]}\n'
    )
    _run(_tool("node"), str(node_modules / "typescript" / "bin" / "tsc"), "-p", "test/generated/tsconfig.json", timeout=180)


def test_npm_package_contents(node_modules: Path) -> None:
    """`npm pack` (docs/javascript.md) packs the ES module, its .d.ts and the bundle as twisted-hub-<version>.tgz."""
    result = _run(_tool("npm"), "pack", "--dry-run", "--json", timeout=180)
    import json

    (package,) = json.loads(result.stdout)
    files = {entry["path"] for entry in package["files"]}
    assert {"dist/index.js", "dist/index.d.ts", "dist/client.d.ts", "dist/twisted-hub.min.js", "package.json"} <= files
    version = json.loads((JS / "package.json").read_text())["version"]
    assert package["filename"] == f"twisted-hub-{version}.tgz"
    assert f"twisted-hub-{version}.tgz" in named_blocks("docs/javascript.md")["pack"][1]
