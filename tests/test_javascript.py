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

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ._docs import named_blocks
from ._js_build import build_once

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
SHIPPED = ROOT / "twisted_hub" / "static" / "twisted-hub.js"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the JavaScript client's tests need it (apt-get install {name}, .ci/run)")
    return path


#: Each test here runs a whole suite in a child process: longer than pytest's default 120 s.
pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """
    js/node_modules, installed with `npm ci` from the committed lock file if
    absent; and js/dist built from js/src (what the suites import).
    """
    node = _tool("node")
    npm = _tool("npm")
    modules = JS / "node_modules"

    def build() -> None:
        if not (modules / "@msgpack" / "msgpack").is_dir():
            _run(npm, "ci", "--no-audit", "--no-fund", timeout=600)
        _run(node, "build.mjs", timeout=180)

    build_once(build)  # (the modules that import this fixture share the build)
    return modules


def _run(
    *args: str, timeout: float, env: dict[str, str] | None = None, cwd: Path = JS,
) -> subprocess.CompletedProcess[str]:
    """
    Run a command in js/ (or CWD) in its own process group; on timeout the
    whole group (node, and the twistd and chromium it started) is killed.
    """
    environment = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    process = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(args)} did not finish within {timeout} s:\n{stdout[-8000:]}\n{stderr[-4000:]}")
    result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    output = f"{stdout[-8000:]}\n{stderr[-4000:]}"
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output}"
    return result


def _node_test(directory: str, env: dict[str, str] | None = None, concurrency: int | None = None) -> int:
    """
    Run node --test on the test files of js/test/DIRECTORY (CONCURRENCY files at a time, else
    node's default); return how many passed (none may fail).
    """
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test" / directory).glob("*.test.mjs"))
    assert files, f"no tests in js/test/{directory}"
    options = [] if concurrency is None else [f"--test-concurrency={concurrency}"]
    result = _run(_tool("node"), "--test", *options, *files, timeout=300, env=env)
    fails = re.findall(r"^# fail (\d+)$", result.stdout, re.MULTILINE)
    passes = re.findall(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    assert fails == ["0"] and passes, result.stdout[-4000:]
    return int(passes[0])


def test_bundle_in_the_wheel_is_built_from_js_sources(node_modules: Path) -> None:
    """twisted_hub/static/twisted-hub.js is byte for byte what `npm run build` makes from js/src (`npm run vendor`)."""
    built = (JS / "dist" / "twisted-hub.min.js").read_bytes()
    assert built == SHIPPED.read_bytes(), "the shipped bundle is stale: run `npm run vendor` in js/ and commit it"


def test_unit(node_modules: Path) -> None:
    """The node --test unit suite passes (protocol.md vectors, client on a fake clock and socket)."""
    assert _node_test("unit") >= 100


def test_unit_kind_for_close_is_pythons_for_every_close_code(node_modules: Path) -> None:
    """The JS kindForClose gives Python's kind_for_close for every close code Python knows (and those around them)."""
    from twisted_hub._core.errors import _CLOSE_KINDS, DisconnectKind, kind_for_close
    from twisted_hub._core.wire import CloseCode

    known = {value for name, value in vars(CloseCode).items() if name.isupper()} | set(_CLOSE_KINDS)
    codes: list[int | None] = [None, *sorted(known | set(range(1000, 1016)) | set(range(4000, 4010)) | {3000, 4999})]
    script = (
        "import { kindForClose, DisconnectKind } from './dist/index.js';"
        "const codes = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify({"
        " kinds: Object.values(DisconnectKind).sort(),"
        " mapped: codes.map((c) => [kindForClose(c, true), kindForClose(c, false)]) }));"
    )
    result = _run(_tool("node"), "--input-type=module", "-e", script, json.dumps(codes), timeout=60)
    js = json.loads(result.stdout)
    assert js["kinds"] == sorted(kind.value for kind in DisconnectKind)
    python = [[kind_for_close(code, True).value, kind_for_close(code, False).value] for code in codes]
    assert dict(zip(map(str, codes), js["mapped"])) == dict(zip(map(str, codes), python))
    assert js["mapped"][codes.index(CloseCode.POLICY_VIOLATION)] == ["protocol-error", "protocol-error"]


def test_integration(node_modules: Path) -> None:
    """The Node client against a real `twistd -n hub`: calls, receivers, heartbeats, 4001, reconnect."""
    assert _node_test("integration") >= 11


def test_generated_typescript_compiles_against_the_client(node_modules: Path) -> None:
    """Generated interfaces of the demo hubs type-check with the client (tsc --strict, js/test/typed/usage.ts)."""
    from twisted_hub.__main__ import main

    generated = JS / "test" / "generated"
    generated.mkdir(exist_ok=True)
    target = generated / "demo-hubs.ts"
    assert main(["typescript", "twisted_hub.demo:EchoHub", "twisted_hub.demo:ChatHub", "-o", str(target)]) == 0
    _run(_tool("node"), str(node_modules / "typescript" / "bin" / "tsc"), "-p", "test/typed/tsconfig.json", timeout=180)


@pytest.mark.long_process
def test_browser(node_modules: Path) -> None:
    """
    Headless Chromium: the demo page of twistd hub (chat, members, server down, heartbeats,
    busy/frozen page; a hidden one for a minute, background.test.mjs), the --static doc page,
    compression, and the JS client over wss:// straight to `twistd hub --listen ssl:` (tls.test.mjs).
    Two files at a time: the background tab's minute of waiting runs beside the others.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: the browser tests need it (apt-get install chromium; see .ci/run)")
    assert _node_test("browser", env={"CHROMIUM": chromium}, concurrency=2) >= 14


def test_docs_typescript_examples(node_modules: Path) -> None:
    """docs/javascript.md: the codegen command runs; the typed-proxy and resume examples compile against the client."""
    blocks = named_blocks("docs/javascript.md")
    assert set(blocks) == {
        "mount", "pack", "install", "browser-serve", "browser-example", "node-example", "typed-proxy", "codegen",
        "bench-js-results", "resume-example",
    }
    generated = JS / "test" / "generated"
    generated.mkdir(exist_ok=True)
    (generated / "chat-hub.ts").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = blocks["codegen"][1].replace("python3 ", f"{sys.executable} ", 1)
    subprocess.run(["bash", "-euc", command], cwd=generated, check=True, timeout=60, env=env)
    assert "export interface ChatHub {" in (generated / "chat-hub.ts").read_text()
    (generated / "typed-proxy.ts").write_text(blocks["typed-proxy"][1])
    (generated / "resume-example.ts").write_text(blocks["resume-example"][1])
    (generated / "tsconfig.json").write_text(
        '{"extends": "../typed/tsconfig.json", "files": ["typed-proxy.ts", "resume-example.ts"]}\n'
    )
    _run(_tool("node"), str(node_modules / "typescript" / "bin" / "tsc"), "-p", "test/generated/tsconfig.json", timeout=180)


def test_docs_bench_results_are_what_the_bench_prints() -> None:
    """docs/javascript.md's recorded bench results have exactly the cases and metrics bench/js.py reports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_js", ROOT / "bench" / "js.py")
    assert spec is not None and spec.loader is not None
    bench_js = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_js)
    recorded = named_blocks("docs/javascript.md")["bench-js-results"][1]
    cases = re.findall(r"^== (\w+)$", recorded, re.MULTILINE)
    metrics = re.findall(r"^  (\w+) +python=", recorded, re.MULTILINE)
    assert cases == list(bench_js.CASES)
    assert metrics == [m for case in bench_js.CASES for m in bench_js.METRICS[case]]


def _mapping_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "javascript.md").read_text()
    table = text[text.index("| JavaScript (`HubClientOptions`)"):]
    table = table[: table.index("\n\n")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_docs_heartbeat_mapping_names_real_options() -> None:
    """Every name in docs/javascript.md's heartbeat table exists: in the JS client's sources and in the Python API."""
    import inspect

    import twisted_hub
    import twisted_hub.types
    from twisted_hub import HeartbeatPolicy, HubClientOptions, full_jitter_policy
    from twisted_hub.types import HubClientProtocol

    # Code only: a name that appears only in a comment is not in the client.
    js_sources = "\n".join(_strip_comments(p.read_text()) for p in (JS / "src").glob("*.ts"))
    python_names = (
        {f for f in HubClientOptions.__dataclass_fields__}
        | set(dir(HubClientOptions)) | set(dir(HubClientProtocol)) | set(twisted_hub.__all__)
        | set(twisted_hub.types.__all__) | set(HeartbeatPolicy.__dataclass_fields__)
        | set(inspect.signature(full_jitter_policy).parameters)
        | set(inspect.signature(twisted_hub.ReconnectingHubClient).parameters)
    )
    rows = _mapping_rows()
    assert len(rows) == 11
    checked = 0
    for js_cell, python_cell, _tank in rows:
        for name in re.findall(r"`(?:client\.)?([A-Za-z]\w*)", js_cell):
            if name not in ("true", "false", "null", "Date"):
                assert re.search(rf"\b{name}\b", js_sources), f"JS name {name!r} is not in js/src"
                checked += 1
        for name in re.findall(r"`(?:client\.)?([A-Za-z]\w*)", python_cell) + re.findall(r"(\w+)=", python_cell):
            if name not in ("True", "False"):
                assert name in python_names, f"Python name {name!r} is not in the Python API"
                checked += 1
    assert checked >= 30


def _strip_comments(source: str) -> str:
    """TypeScript source without its // and /* */ comments (string literals are left alone)."""
    return re.sub(r'("(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`(?:\\.|[^`\\])*`)|/\*.*?\*/|//[^\n]*',
                  lambda m: m.group(1) or "", source, flags=re.S)


def test_strip_comments() -> None:
    """The comment stripper keeps code and strings and drops both comment forms."""
    source = 'const a = "x // y"; // onRetry\n/* nextRetryAt */ let b = 1; // end'
    assert _strip_comments(source) == 'const a = "x // y"; \n let b = 1; '
