"""Every example in docs/heartbeat.md runs as written and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re

from twisted.trial.unittest import SynchronousTestCase

from ._docs import ROOT, python_blocks

DOC = "docs/heartbeat.md"
#: The page's examples, in order.
EXAMPLES = (
    "quick-start", "magiconion-features", "tank-reconnect", "slow-link", "clock-sync", "per-connection-override",
)


def run_block(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(ROOT / DOC), "exec"), {"__name__": "docs_example"})
    return out.getvalue()


def promised_output(source: str) -> list[str]:
    """The '# expected' comments on print lines, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.+)$", source, re.M)]


class HeartbeatDocTests(SynchronousTestCase):
    def test_examples_run_and_print_what_they_say(self) -> None:
        """Each python block runs; each commented print line prints exactly its comment."""
        blocks = python_blocks(DOC)
        self.assertEqual(tuple(blocks), EXAMPLES)
        for name in EXAMPLES:
            block = blocks[name]
            printed = run_block(block).splitlines()
            for expected in promised_output(block):
                self.assertIn(expected, printed, f"in block {name}:\n{block}")
