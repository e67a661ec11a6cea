"""
Runs the conformance suite: every scenario of tests/conformance/scenarios.py
with every client, and the feature matrix of docs/clients.md made from
the results.

    python3 -m tests.conformance.run                # run, print each failure and the matrix
    python3 -m tests.conformance.run --write-docs   # ... and write the matrix into docs/clients.md
    python3 -m tests.conformance.run --only=NAME,NAME   # just these scenarios, with what each client observed

One scripted server (a thread here) and one C{twistd -n hub} serve all
clients; the three drivers (two Python processes and one node process)
run at the same time, each running its scenarios one after another.
tests/test_conformance.py runs the same and checks each scenario, and that
docs/clients.md shows the matrix these results make.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._js_build import build_once
from .expect import mismatches
from .scenarios import CLIENT_TITLES, CLIENTS, GROUPS, SCENARIOS, Scenario
from .server import running

ROOT = Path(__file__).resolve().parent.parent.parent
JS = ROOT / "js"
DOC = ROOT / "docs" / "clients.md"
BEGIN = "<!-- conformance matrix: made by `python3 -m tests.conformance.run --write-docs` from the results; do not edit -->"
END = "<!-- end of the conformance matrix -->"
#: seconds a driver may take for all its scenarios
DRIVER_BOUND = 240
_SITE_STARTED = re.compile(r"Site starting on (\d+)")


class SuiteError(Exception):
    """The suite could not run (a tool missing, a driver crashed)."""


def _environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}


def prepare_js() -> None:
    """
    js/node_modules (C{npm ci} from the lock file when absent) and js/dist
    built from js/src, which the JavaScript driver imports.  Fails when node
    or npm is missing: .ci/run installs them.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SuiteError("node and npm are needed for the JavaScript client's conformance run (.ci/run installs them)")

    def build() -> None:
        if not (JS / "node_modules" / "ws").is_dir():
            _run_in_js([npm, "ci", "--no-audit", "--no-fund"], 600)
        _run_in_js([node, "build.mjs"], 180)

    build_once(build)


def _run_in_js(command: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(command, cwd=JS, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SuiteError(f"{' '.join(command)} did not finish within {timeout} s") from None
    if done.returncode != 0:
        raise SuiteError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def driver_command(client: str) -> list[str]:
    if client == "js":
        node = shutil.which("node")
        if node is None:
            raise SuiteError("node is not installed: the JavaScript client's conformance run needs it (.ci/run installs it)")
        if not (JS / "dist" / "index.js").is_file():
            raise SuiteError("js/dist is not built: run `cd js && npm ci && node build.mjs`")
        return [node, str(JS / "test" / "conformance-driver.mjs")]
    return [sys.executable, "-m", "tests.conformance.driver", client]


@contextmanager
def live_hub() -> Iterator[int]:
    """A C{twistd -n hub} with the conformance hub on a free loopback port; stopped (by its pid) afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=", "--logfile=-",
         "hub", "--listen", "tcp:0:interface=127.0.0.1",
         "--hub", "tests.conformance.hub:ConformanceHub", "--hub", "twisted_hub.demo:EchoHub"],
        cwd=ROOT, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    found: list[int] = []
    listening = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = _SITE_STARTED.search(line)
            if match and not found:
                found.append(int(match.group(1)))
                listening.set()
        listening.set()

    reader = threading.Thread(target=read, name="twistd-output", daemon=True)
    reader.start()
    try:
        if not listening.wait(30) or not found:
            raise SuiteError("twistd hub did not start within 30 s:\n" + "".join(lines[-40:]))
        yield found[0]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        reader.join(5)


def scenario_input(scenario: Scenario, client: str, script_port: int, live_port: int) -> dict[str, Any]:
    """What a driver gets: the scenario's URL for this client, its options and steps."""
    if scenario.script is not None:
        url = f"ws://127.0.0.1:{script_port}/{scenario.name}/{client}"
    else:
        url = f"ws://127.0.0.1:{live_port}/hub/{scenario.live_path}"
    return {"name": scenario.name, "url": url, "options": scenario.options, "steps": scenario.steps}


def run_suite(clients: tuple[str, ...] = CLIENTS, only: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """
    Run every scenario a client supports (or those named in C{only}) with
    each client; return client -> scenario -> observed outcome.
    """
    commands = {client: driver_command(client) for client in clients}
    scripts = {s.name: s.script for s in SCENARIOS if s.script is not None}
    outcomes: dict[str, dict[str, Any]] = {}
    with running(scripts) as (server, wait_idle), live_hub() as live_port, tempfile.TemporaryDirectory() as folder:
        processes = {}
        for client in clients:
            inputs = [
                scenario_input(s, client, server.port, live_port) for s in SCENARIOS
                if client not in s.unsupported and (only is None or s.name in only)
            ]
            given = Path(folder, f"{client}.in.json")
            given.write_text(json.dumps(inputs))
            with given.open() as stdin, Path(folder, f"{client}.out.json").open("w") as stdout, \
                    Path(folder, f"{client}.err.txt").open("w") as stderr:
                processes[client] = subprocess.Popen(
                    commands[client], cwd=ROOT, env=_environment(), stdin=stdin, stdout=stdout, stderr=stderr,
                )
        try:
            for client, process in processes.items():
                try:
                    process.wait(DRIVER_BOUND)
                except subprocess.TimeoutExpired:
                    raise SuiteError(f"the {client} driver did not finish within {DRIVER_BOUND} s") from None
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
        for client, process in processes.items():
            errors = Path(folder, f"{client}.err.txt").read_text()
            if process.returncode != 0:
                raise SuiteError(f"the {client} driver failed ({process.returncode}):\n{errors[-4000:]}")
            try:
                outcomes[client] = json.loads(Path(folder, f"{client}.out.json").read_text())
            except ValueError as e:
                raise SuiteError(f"the {client} driver printed no JSON ({e}):\n{errors[-4000:]}") from None
        # Every client process has exited, so every connection has ended: the records are complete.
        if not wait_idle(10):
            raise SuiteError("the scripted server still serves connections 10 s after every driver exited")
        if server.errors:
            raise SuiteError("the scripted server was asked for what it has no script for: " + "; ".join(server.errors))
        for client in clients:
            for name, outcome in outcomes[client].items():
                records = server.records.get((name, client), [])
                outcome["server"] = records[0] if records else None
                outcome["servers"] = records
                outcome["server_connections"] = len(records)
    return outcomes


# -- verdicts and the matrix ---------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    #: "pass", "fail", "unsupported" or "not run"
    status: str
    problems: tuple[str, ...] = ()


def verdict(scenario: Scenario, client: str, outcomes: dict[str, dict[str, Any]]) -> Verdict:
    if client in scenario.unsupported:
        return Verdict("unsupported")
    outcome = outcomes.get(client, {}).get(scenario.name)
    if outcome is None:
        return Verdict("not run")
    problems = mismatches(scenario.expected_for(client), outcome)
    for key in ("error", "cleanup_error", "waited_in_vain"):
        if key in outcome:
            problems.append(f"{key}: {outcome[key]}")
    if "script_error" in (outcome.get("server") or {}).get("notes", {}):
        problems.append(f"the server's script failed: {outcome['server']['notes']['script_error']}")
    return Verdict("pass" if not problems else "fail", tuple(problems))


def cell(scenario: Scenario, client: str, result: Verdict) -> str:
    """The matrix cell: what the results say, and what the scenario declares about this client."""
    if result.status == "unsupported":
        return "not supported: " + scenario.unsupported[client]
    if client in scenario.known_failure:
        if result.status == "fail":
            return "known failure: " + scenario.known_failure[client]
        return f"**{result.status}** (listed as a known failure: update the scenario)"
    if result.status == "pass":
        return "pass: " + scenario.variants[client][0] if client in scenario.variants else "pass"
    return f"**{result.status.upper()}**"


def matrix(outcomes: dict[str, dict[str, Any]]) -> str:
    """The markdown of the feature matrix (between the markers of docs/clients.md)."""
    verdicts = {(s.name, c): verdict(s, c, outcomes) for s in SCENARIOS for c in CLIENTS}
    lines = []
    def count(client: str) -> str:
        passed = sum(verdicts[s.name, client].status == "pass" for s in SCENARIOS)
        unsupported = sum(client in s.unsupported for s in SCENARIOS)
        known = sum(client in s.known_failure for s in SCENARIOS)
        extra = [f"{n} {what}" for n, what in ((unsupported, "not supported"), (known, "known failures")) if n]
        return f"{CLIENT_TITLES[client]} {passed}" + (f" ({', '.join(extra)})" if extra else "")

    lines.append(f"{len(SCENARIOS)} scenarios. Passed: " + ", ".join(count(c) for c in CLIENTS) + ".")
    for group in GROUPS:
        lines += ["", f"### {group}", "", "| Scenario | " + " | ".join(CLIENT_TITLES[c] for c in CLIENTS) + " |",
                  "|---|" + "---|" * len(CLIENTS)]
        for s in SCENARIOS:
            if s.group == group:
                cells = [cell(s, c, verdicts[s.name, c]).replace("|", "\\|") for c in CLIENTS]
                lines.append(f"| `{s.name}`: {s.title.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def documented_matrix(text: str | None = None) -> str:
    """The matrix docs/clients.md shows now."""
    text = DOC.read_text() if text is None else text
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def write_matrix(outcomes: dict[str, dict[str, Any]]) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + matrix(outcomes) + text[end:])


def failures(outcomes: dict[str, dict[str, Any]]) -> list[str]:
    """One paragraph per scenario and client that did not pass (known failures included)."""
    found = []
    for s in SCENARIOS:
        for c in CLIENTS:
            result = verdict(s, c, outcomes)
            if result.status in ("fail", "not run"):
                found.append(f"{s.name} [{c}]: {result.status}\n  " + "\n  ".join(result.problems))
    return found


def main(argv: list[str]) -> int:
    only = {name for arg in argv if arg.startswith("--only=") for name in arg[len("--only="):].split(",")} or None
    prepare_js()
    outcomes = run_suite(only=only)
    if only is not None:
        # A partial run, for working on some scenarios: what each client observed.
        for name in sorted(only):
            for client in CLIENTS:
                result = verdict(next(s for s in SCENARIOS if s.name == name), client, outcomes)
                print(f"{name} [{client}]: {result.status}", *result.problems, sep="\n  ")
                print("  observed:", json.dumps(outcomes[client].get(name))[:3000])
        return 0
    for line in failures(outcomes):
        print(line)
    if "--write-docs" in argv:
        write_matrix(outcomes)
        print(f"wrote the matrix into {DOC.relative_to(ROOT)}")
    else:
        print(matrix(outcomes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
