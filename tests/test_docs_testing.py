"""docs/testing.md's examples run as written: the trial file under trial, the pytest file under pytest."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ._docs import ROOT, named_blocks

DOC = "docs/testing.md"
FILES = ("chat.py", "test_chat.py", "test_chat_pytest.py")


def documented_command(code: str) -> list[str]:
    """The command a test file's first line gives ("run with  python3 -m ..."), on this interpreter."""
    match = re.match(r"# \S+, next to chat\.py: run with  (python3 .+)\n", code)
    assert match is not None, code.splitlines()[0]
    argv = shlex.split(match.group(1))
    return [sys.executable, *argv[1:]]


class TestingDocTests(SynchronousTestCase):
    def setUp(self) -> None:
        blocks = named_blocks(DOC)
        self.assertEqual(set(blocks), set(FILES))
        directory = tempfile.TemporaryDirectory(prefix="twisted-hub-testing-doc-")
        self.addCleanup(directory.cleanup)
        self.folder = Path(directory.name)
        for name in FILES:
            (self.folder / name).write_text(blocks[name][1])
        self.blocks = blocks

    def run_documented(self, name: str) -> str:
        environment = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run(
            documented_command(self.blocks[name][1]), cwd=self.folder, env=environment,
            capture_output=True, text=True, timeout=180,
        )
        output = done.stdout + done.stderr
        self.assertEqual(done.returncode, 0, output)
        return output

    def test_trial_example(self) -> None:
        """test_chat.py passes under the trial command of its first line: all five tests (Clock, timeout, receivers...)."""
        output = self.run_documented("test_chat.py")
        self.assertIn("PASSED (successes=5)", output)

    def test_pytest_example(self) -> None:
        """test_chat_pytest.py passes under the pytest command of its first line, pytest-twisted's socket test included."""
        output = self.run_documented("test_chat_pytest.py")
        self.assertRegex(output, r"\b5 passed\b")
