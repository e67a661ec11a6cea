"""
The npm package `twisted-hub` (js/) as a user meets it: packed with
docs/javascript.md's commands in a copy of the checkout that has no dist/ and
no node_modules/, installed from the tarball into an empty app folder, then
run (the docs' and the package README's Node examples, against a real
`twistd -n hub`) and type-checked (the docs' typed example, `tsc --strict`).

Like tests/test_javascript.py these fail, never skip, when node or npm is
missing.  npm installs from its cache where it can (`prefer-offline`) and
from the registry otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import Deferred

import twisted_hub

from ._docs import named_blocks
from ._twistd import Child, started_port, twistd_hub
from .test_javascript import JS, ROOT, SHIPPED, _run, _tool

#: Packing runs `npm ci` and a build in a fresh copy: longer than pytest's default 120 s.
pytestmark = pytest.mark.timeout(600)

#: What every npm command here may use: the cache first, no audit, no funding or update notices.
NPM_ENV = {
    "npm_config_prefer_offline": "true",
    "npm_config_audit": "false",
    "npm_config_fund": "false",
    "npm_config_update_notifier": "false",
}
PACKAGE = json.loads((JS / "package.json").read_text())
TARBALL = f"{PACKAGE['name']}-{PACKAGE['version']}.tgz"
DOCS = named_blocks("docs/javascript.md")
README = named_blocks("js/README.md")


def _command(block: str) -> str:
    """A one-line shell block's command, without its comment."""
    (line,) = block.strip().splitlines()
    return line.split("#", 1)[0].strip()


def _clean_copy_of_js(destination: Path) -> Path:
    """
    Copy js/ to DESTINATION/js as a checkout of this working tree has it:
    with git, the files git tracks or would track (not dist/, node_modules/
    or anything else ignored); without a git checkout (an unpacked source
    archive) js/ without its build outputs.
    """
    target = destination / "js"
    git = shutil.which("git")
    listed = None
    if git is not None and (ROOT / ".git").exists():
        listed = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "js"],
            cwd=ROOT, check=True, capture_output=True, timeout=60,
        ).stdout.decode().split("\0")
    if listed is None:
        shutil.copytree(JS, target, ignore=shutil.ignore_patterns("node_modules", "dist", "generated", "*.tgz"))
    else:
        for name in filter(None, listed):
            source = ROOT / name
            if source.is_file():  # not deleted in the working tree
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / name)
    assert not (target / "dist").exists() and not (target / "node_modules").exists()
    return target


@dataclass(frozen=True)
class Installed:
    """The clean copy's js/ (after `npm ci`), the tarball `npm pack` wrote there, an app folder it is installed in."""

    js: Path
    tarball: Path
    app: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """
    docs/javascript.md's `pack` block run as written at the root of a clean
    copy of the checkout, then its `install` block (the tarball's real path
    for `path/to/`) in an empty folder, which then becomes an ES module app
    (`npm pkg set type=module`, as a TypeScript app using node16 needs).
    """
    _tool("node")
    npm = _tool("npm")
    checkout = tmp_path_factory.mktemp("checkout")
    js = _clean_copy_of_js(checkout)
    _run("bash", "-euc", DOCS["pack"][1], cwd=checkout, env=NPM_ENV, timeout=420)
    tarball = js / TARBALL
    assert tarball.is_file(), f"npm pack wrote no {TARBALL}: {sorted(p.name for p in js.iterdir())}"
    app = tmp_path_factory.mktemp("app")
    install = DOCS["install"][1]
    assert "path/to/" in install
    _run("bash", "-euc", install.replace("path/to/", f"{js}/"), cwd=app, env=NPM_ENV, timeout=120)
    _run(npm, "pkg", "set", "type=module", cwd=app, timeout=60)
    return Installed(js, tarball, app)


def test_npm_pack_in_a_clean_checkout_packs_the_built_client(installed: Installed) -> None:
    """The tarball holds dist/ built by prepack (module, bundle, a .d.ts per source), README, LICENSE; nothing else."""
    with tarfile.open(installed.tarball) as tar:
        contents = {}
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert extracted is not None, f"{member.name} is not a file"
            contents[member.name.removeprefix("package/")] = extracted.read()
    declarations = {f"dist/{p.stem}.d.ts" for p in (JS / "src").glob("*.ts")}
    assert set(contents) == {
        "package.json", "README.md", "LICENSE", "dist/index.js", "dist/twisted-hub.min.js", *declarations,
    }
    # Built from the same sources, the clean copy's bundle is the one the Python wheel ships.
    assert contents["dist/twisted-hub.min.js"] == SHIPPED.read_bytes()
    assert json.loads(contents["package.json"])["version"] == twisted_hub.__version__
    assert contents["LICENSE"] == (JS / "LICENSE").read_bytes()
    assert (installed.app / "node_modules" / "twisted-hub" / "dist" / "index.js").is_file()
    assert (installed.app / "node_modules" / "@msgpack" / "msgpack" / "package.json").is_file()


async def _node(reactor: Any, script: Path, timeout: float = 30.0) -> str:
    """Run `node SCRIPT` in the script's folder; its stdout once it exits with 0 (killed after TIMEOUT s)."""
    node = _tool("node")
    child = Child()
    reactor.spawnProcess(child, node, [node, str(script)], env=dict(os.environ), path=str(script.parent))
    # A Deferred of our own to time out: child.ended stays uncalled, so child.signal still reaches it.
    exited: Deferred[int | None] = Deferred()
    child.ended.addBoth(lambda result: (exited.called or exited.callback(result), result)[1])
    try:
        code = await exited.addTimeout(timeout, reactor)
    except defer.TimeoutError:
        child.signal(signal.SIGKILL)  # the node we started, by pid
        raise AssertionError(f"node {script.name} did not exit within {timeout} s:\n{child.output()}") from None
    assert code == 0, f"node {script.name} failed ({code}):\n{child.output()}"
    return "\n".join(child.lines)


@pytest_twisted.ensureDeferred
async def test_the_installed_package_runs_the_node_examples(installed: Installed) -> None:
    """From the app folder, against `twistd -n hub`: the docs' Node example (also on twisted-hub/bundle) and the README's."""
    from twisted.internet import reactor

    hub = twistd_hub(reactor, "--listen", "tcp:0:interface=127.0.0.1")
    try:
        url = f"ws://127.0.0.1:{await started_port(hub, reactor)}/hub"
        language, code = DOCS["node-example"]
        assert language == "js" and 'from "twisted-hub";' in code
        code = code.replace("ws://127.0.0.1:8080/hub", url)
        script = installed.app / "node-example.mjs"
        for module in ("twisted-hub", "twisted-hub/bundle"):
            script.write_text(code.replace('from "twisted-hub";', f'from "{module}";'))
            assert (await _node(reactor, script)).split("\n") == ["5", "out-of-stock none left", "normal"], module
        language, code = README["example"]
        assert language == "js"
        script = installed.app / "readme-example.mjs"
        script.write_text(code.replace("ws://127.0.0.1:8080/hub", url))
        assert (await _node(reactor, script)).split("\n") == ["1", "ann: hello"]
    finally:
        await hub.stop(reactor)


#: Appended to the docs' typed-proxy example: lines the installed types must refuse (were
#: they missing or `any`, tsc would report each @ts-expect-error as unused), and the bundle's types.
TYPE_CHECKS = """
import type { HubClient as BundleClient } from "twisted-hub/bundle";
const same: BundleClient = client;
// @ts-expect-error: connect's first parameter is the URL, a string
await connect(8080, ChatHubName);
// @ts-expect-error: a DisconnectReason has no `status`
console.log((await same.disconnect()).status);
"""


def test_the_installed_package_types_check_a_typescript_consumer(installed: Installed) -> None:
    """The docs' typed-proxy example and its generated chat-hub.ts type-check in the app (tsc --strict; node16, bundler)."""
    node = _tool("node")
    lock = json.loads((JS / "package-lock.json").read_text())["packages"]
    # A Node app's own types (the example uses console); the version the client is developed with.
    types_node = lock["node_modules/@types/node"]["version"]
    _run(_tool("npm"), "install", "--save-dev", f"@types/node@{types_node}", cwd=installed.app, env=NPM_ENV, timeout=300)
    codegen = DOCS["codegen"][1].replace("python3 ", f"{sys.executable} ", 1)
    env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    _run("bash", "-euc", codegen, cwd=installed.app, env=env, timeout=60)
    (installed.app / "consumer.ts").write_text(DOCS["typed-proxy"][1] + TYPE_CHECKS)
    # The tsc the client is developed with (js/'s devDependencies, installed in the clean copy).
    tsc = installed.js / "node_modules" / "typescript" / "bin" / "tsc"
    common = ("--strict", "--noEmit", "--target", "es2022", "--skipLibCheck", "false", "consumer.ts")
    _run(node, str(tsc), "--module", "node16", "--moduleResolution", "node16", "--lib", "es2022", "--types", "node",
         *common, cwd=installed.app, timeout=180)
    _run(node, str(tsc), "--module", "esnext", "--moduleResolution", "bundler", *common, cwd=installed.app, timeout=180)


def test_npm_package_version_is_the_python_version() -> None:
    """js/package.json, its lock file and every tarball name in the docs carry twisted_hub.__version__."""
    version = twisted_hub.__version__
    assert PACKAGE["version"] == version, (
        f"js/package.json is {PACKAGE['version']}, twisted_hub.__version__ is {version}: "
        f"run `npm version --no-git-tag-version {version}` in js/"
    )
    lock = json.loads((JS / "package-lock.json").read_text())
    assert lock["version"] == lock["packages"][""]["version"] == version
    tarball = f"twisted-hub-{version}.tgz"
    for block in (DOCS["pack"], DOCS["install"], README["install"]):
        assert tarball in block[1]


def test_npm_package_is_ready_to_publish() -> None:
    """Name, ES module exports with types, files, MIT license file, engines; the README installs as the docs do."""
    assert PACKAGE["name"] == "twisted-hub" and PACKAGE["type"] == "module"
    assert PACKAGE["license"] == "MIT"
    assert (JS / "LICENSE").read_text().startswith("MIT License\n")
    assert PACKAGE["exports"]["."] == {
        "types": "./dist/index.d.ts", "import": "./dist/index.js", "default": "./dist/index.js",
    }
    assert PACKAGE["exports"]["./bundle"] == {"types": "./dist/index.d.ts", "default": "./dist/twisted-hub.min.js"}
    assert PACKAGE["types"] == "./dist/index.d.ts" and PACKAGE["main"] == "./dist/index.js"
    assert PACKAGE["files"] == ["dist", "LICENSE"]
    assert PACKAGE["scripts"]["prepack"] == "node build.mjs"
    assert PACKAGE["engines"]["node"] == ">=18" and PACKAGE["keywords"]
    assert list(PACKAGE["dependencies"]) == ["@msgpack/msgpack"]
    # The package README's install commands are the docs' (which the test above runs).
    pack, install = (line.split("#", 1)[0].strip() for line in README["install"][1].strip().splitlines())
    assert (pack, install) == (_command(DOCS["pack"][1]), _command(DOCS["install"][1]))
