"""
scripts/test, the README's test command, on a machine made of stubs: it
installs exactly the missing tools (apt-get update first, one install), then
pip-installs '.[test]', runs `npm ci` when js/node_modules is stale, and runs
pytest with the arguments given; a failed or impossible install stops it
before pytest.  Nothing real is installed: every command it may run is a
stub in a temporary PATH that records its arguments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test"

#: apt package -> the command it provides (what the apt-get stub "installs")
PROVIDES = {
    "nodejs": "node", "npm": "npm", "chromium": "chromium", "redis-server": "redis-server",
    "nginx": "nginx", "nginx-light": "nginx", "haproxy": "haproxy", "curl": "curl", "prometheus": "promtool",
}
TOOLS = ("node", "npm", "chromium", "redis-server", "nginx", "haproxy", "curl", "promtool")
CP = shutil.which("cp") or "/bin/cp"  # the stubs' PATH has no coreutils

STUB = """#!/bin/bash
echo "{name} $* [in ${{PWD##*/}}]" >> "$STUB_LOG"
case "$1" in --version|-v) echo "{name} 1.0";; esac
exit 0
"""

APT_GET = """#!/bin/bash
echo "apt-get $*" >> "$STUB_LOG"
[ "$1" = install ] || exit 0
[ -n "${APT_FAIL:-}" ] && { echo "E: Unable to locate package" >&2; exit 100; }
for package in "$@"; do
  case "$package" in
""" + "".join(
    f'    {package}) [ -z "${{APT_LEAVE_OUT:-}}" ] && {CP} -p "$STUB_DIR/.tool" "$STUB_DIR/{tool}";;\n'
    for package, tool in PROVIDES.items()
) + """  esac
done
exit 0
"""


class Machine:
    """A checkout holding scripts/test, and a PATH of stubs for every command it may run."""

    def __init__(self, test: SynchronousTestCase, tools: tuple[str, ...] = TOOLS, apt: bool = True) -> None:
        directory = tempfile.TemporaryDirectory(prefix="twisted-hub-scripts-test-")
        test.addCleanup(directory.cleanup)
        base = self.base = Path(directory.name)
        self.checkout = base / "checkout"
        (self.checkout / "scripts").mkdir(parents=True)
        (self.checkout / "js").mkdir()
        shutil.copy2(SCRIPT, self.checkout / "scripts" / "test")
        (self.checkout / "js" / "package-lock.json").write_text("{}\n")
        self.bin = base / "bin"
        self.bin.mkdir()
        self.log = base / "log"
        self.log.write_text("")
        bash = shutil.which("bash")
        assert bash is not None
        (self.bin / "bash").symlink_to(bash)  # for the #!/usr/bin/env bash line
        self.stub(".tool", STUB.format(name="tool"))
        for tool in tools:
            self.stub(tool, STUB.format(name=tool))
        editable = '[ "$3" = show ] && [ -n "${STUB_EDITABLE:-}" ] && echo "Editable project location: $STUB_EDITABLE"'
        self.stub("python3", STUB.format(name="python3").replace("exit 0", editable + "\nexit 0"))
        self.stub("sudo", '#!/bin/bash\necho "sudo $*" >> "$STUB_LOG"\nexec "$@"\n')
        if apt:
            self.stub("apt-get", APT_GET)
            self.stub("apt-cache", '#!/bin/bash\n[ "$2" = nginx-light ]\n')

    def stub(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)

    def run(self, *args: str, as_other_user: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
        """Run scripts/test as the README says; C{as_other_user}: as a user who is not root."""
        environment = {"PATH": str(self.bin), "STUB_LOG": str(self.log), "STUB_DIR": str(self.bin), **env}
        prefix: list[str] = []
        if as_other_user and os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise AssertionError("setpriv (util-linux) is needed to run scripts/test as another user")
            for path in (self.base, self.checkout, self.checkout / "scripts", self.checkout / "js", self.bin):
                path.chmod(0o777)
            self.log.chmod(0o666)
            prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        return subprocess.run(
            [*prefix, "scripts/test", *args], cwd=self.checkout, env=environment, capture_output=True, text=True,
            timeout=60,
        )

    def calls(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.split()[1:2] not in (["--version"], ["-v"])]


class ScriptsTestTests(SynchronousTestCase):
    def test_nothing_missing(self) -> None:
        """Every tool present: no apt-get; pip install .[test], npm ci in js/ (no node_modules yet), pytest with the args."""
        machine = Machine(self)
        done = machine.run("-q", "tests/test_hub.py")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(machine.calls(), [
            "python3 -m pip show twisted-hub [in checkout]",
            "python3 -m pip install -q .[test] [in checkout]",
            "npm ci --no-audit --no-fund [in js]",
            "python3 -m pytest -q tests/test_hub.py [in checkout]",
        ])
        self.assertIn("scripts/test: node node 1.0, npm npm 1.0", done.stdout)

    def test_editable_install_stays_editable(self) -> None:
        """When pip says this checkout is installed editable, it is installed again with -e (not replaced by a copy)."""
        machine = Machine(self)
        self.assertEqual(machine.run(STUB_EDITABLE=str(machine.checkout.resolve())).returncode, 0)
        self.assertIn("python3 -m pip install -q -e .[test] [in checkout]", machine.calls())
        other = Machine(self)
        self.assertEqual(other.run(STUB_EDITABLE="/somewhere/else").returncode, 0)
        self.assertIn("python3 -m pip install -q .[test] [in checkout]", other.calls())

    def test_npm_ci_only_when_stale(self) -> None:
        """npm ci runs again only when js/package-lock.json is newer than what npm last installed."""
        machine = Machine(self)
        modules = machine.checkout / "js" / "node_modules"
        modules.mkdir()
        (modules / ".package-lock.json").write_text("{}\n")
        self.assertEqual(machine.run().returncode, 0)
        self.assertNotIn("npm ci --no-audit --no-fund [in js]", machine.calls())
        later = time.time() + 10
        os.utime(machine.checkout / "js" / "package-lock.json", (later, later))
        self.assertEqual(machine.run().returncode, 0)
        self.assertIn("npm ci --no-audit --no-fund [in js]", machine.calls())

    def test_installs_exactly_what_is_missing(self) -> None:
        """Missing Chromium, redis-server, nginx, haproxy and promtool: apt-get update, one install of them, then the tests."""
        machine = Machine(self, tools=("node", "npm", "curl"))
        done = machine.run()
        self.assertEqual(done.returncode, 0, done.stderr)
        calls = machine.calls()
        self.assertEqual(calls[:2], [
            "apt-get update -qq",
            "apt-get install -y -qq chromium redis-server nginx-light haproxy prometheus",
        ])
        self.assertEqual(calls[-1], "python3 -m pytest [in checkout]")
        self.assertIn("missing: chromium redis-server nginx haproxy promtool", done.stdout)

    def test_failed_install_stops_before_the_tests(self) -> None:
        """An apt-get install that fails ends the script non-zero with one line naming the packages; pip and pytest never run."""
        machine = Machine(self, tools=("node", "npm", "curl", "nginx", "haproxy", "promtool"))
        done = machine.run(APT_FAIL="1")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("scripts/test: apt-get install chromium redis-server failed", done.stderr)
        self.assertFalse([c for c in machine.calls() if c.startswith("python3")])

    def test_install_that_does_not_provide_the_tool(self) -> None:
        """A package that installs but leaves its command missing fails the run, naming the command."""
        machine = Machine(self, tools=("node", "npm", "chromium", "nginx", "haproxy", "curl", "promtool"))
        done = machine.run(APT_LEAVE_OUT="1")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("redis-server is still missing after apt-get install redis-server", done.stderr)
        self.assertFalse([c for c in machine.calls() if c.startswith("python3")])

    def test_no_apt_get(self) -> None:
        """Without apt-get a missing tool is an error naming it and its package; nothing runs."""
        machine = Machine(self, tools=("node", "npm", "redis-server", "nginx", "haproxy", "curl", "promtool"), apt=False)
        done = machine.run()
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("apt-get is not available: install chromium (the tools chromium) another way", done.stderr)
        self.assertEqual(machine.calls(), [])

    def test_not_root_uses_sudo(self) -> None:
        """Run by a user other than root, the installs go through sudo."""
        machine = Machine(self, tools=("node", "npm", "redis-server", "nginx", "haproxy", "curl", "promtool"))
        done = machine.run(as_other_user=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(
            machine.calls()[:3], ["sudo apt-get update -qq", "apt-get update -qq", "sudo apt-get install -y -qq chromium"],
        )

    def test_missing_haproxy_is_installed_and_its_version_printed(self) -> None:
        """Only haproxy missing (the chaos test's balancer): one apt-get install haproxy; its version's first line is printed."""
        machine = Machine(self, tools=tuple(tool for tool in TOOLS if tool != "haproxy"))
        done = machine.run()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(machine.calls()[:2], ["apt-get update -qq", "apt-get install -y -qq haproxy"])
        self.assertIn("scripts/test: missing: haproxy; installing haproxy with apt-get", done.stdout)
        many_lines = Machine(self)
        many_lines.stub("haproxy", '#!/bin/bash\necho "HAProxy version 2.6.12"\necho "Status: long-term supported"\n')
        done = many_lines.run()
        self.assertIn("scripts/test: HAProxy version 2.6.12\n", done.stdout)
        self.assertNotIn("Status", done.stdout)
