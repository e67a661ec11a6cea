"""The README's example runs as written and prints what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

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

    def test_commands(self) -> None:
        """The README gives the server command and the test command that CI runs."""
        text = README.read_text()
        self.assertIn("twistd -n hub --port 8080", text)
        self.assertIn("python3 -m pytest", text)
        ci = (README.parent / ".ci" / "run").read_text()
        self.assertIn("python3 -m pytest", ci)
