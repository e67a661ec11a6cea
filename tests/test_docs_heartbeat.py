"""Every example in docs/heartbeat.md runs as written and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

DOC = Path(__file__).resolve().parent.parent / "docs" / "heartbeat.md"


def run_block(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(DOC), "exec"), {"__name__": "docs_example"})
    return out.getvalue()


def promised_output(source: str) -> list[str]:
    """The '# expected' comments on print lines, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.+)$", source, re.M)]


class HeartbeatDocTests(SynchronousTestCase):
    def test_examples_run_and_print_what_they_say(self) -> None:
        """Each python block runs; each commented print line prints exactly its comment."""
        blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
        self.assertGreaterEqual(len(blocks), 5)
        for block in blocks:
            printed = run_block(block).splitlines()
            for expected in promised_output(block):
                self.assertIn(expected, printed, f"in block:\n{block}")
