"""The public API's types survive decoration: mypy --strict checks a user's hub (tests/typing/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class MethodTypingTests(SynchronousTestCase):
    def test_method_preserves_the_signature(self) -> None:
        """@method and @method("name") keep the method's parameter and return types for type checkers."""
        done = subprocess.run(
            # --follow-imports=silent: twisted_hub's types are read, but errors inside it are
            # not reported, as a user's checker reads an installed package.  twisted_hub itself
            # is checked by `python3 -m mypy` against the newest dependencies (.ci/run); against
            # older ones (the floors in setup.cfg, .ci/floors) their annotations differ.
            [sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores", "--no-incremental",
             "--follow-imports=silent", str(ROOT / "tests" / "typing" / "method_types.py")],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
