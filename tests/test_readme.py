"""The README's example runs as written and prints what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from twisted_hub.testing import HubTestServer

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


class ReadmeExampleTests(SynchronousTestCase):
    def test_example_runs(self) -> None:
        """The first README example serves a hub, calls it and hears the broadcast."""
        example = python_blocks()[0]
        result = subprocess.run(
            [sys.executable, "-c", example], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.splitlines(),
            ["members: 1", "ann: hello, room", "disconnected: normal"],
        )

    def test_heartbeat_snippet_runs(self) -> None:
        """The README's heartbeat snippet runs on top of the first example's definitions."""
        namespace: dict[str, object] = {"__name__": "readme"}
        first, heartbeat_snippet = python_blocks()[:2]
        exec(compile(first, "README.md", "exec"), namespace)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the showcase must be a configuration we do not warn about
            exec(compile(heartbeat_snippet, "README.md", "exec"), namespace)
            HubTestServer([namespace["GameHub"]])  # type: ignore[list-item]
        factory = namespace["factory"]
        self.assertEqual(factory.heartbeat.timeout, 15.0)  # type: ignore[attr-defined]
        self.assertEqual(namespace["options"].heartbeat_timeout, 15.0)  # type: ignore[attr-defined]
        override = namespace["GameHub"].heartbeat_override  # type: ignore[attr-defined]
        self.assertEqual((override.interval, override.timeout), (2, 6))
        self.assertEqual(namespace["options"].heartbeat, factory.heartbeat)  # type: ignore[attr-defined]

    def test_commands(self) -> None:
        """The README gives the server command and the test command that CI runs."""
        text = README.read_text()
        self.assertIn("twistd -n hub --port 8080", text)
        self.assertIn("python3 -m pytest", text)
        ci = (README.parent / ".ci" / "run").read_text()
        self.assertIn("python3 -m pytest", ci)
