"""docs/architecture.md names every module of the package, and only modules that exist."""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "architecture.md")
PACKAGE = os.path.join(ROOT, "twisted_hub")


def documented_modules() -> set[str]:
    """The module names in the first column of the module table."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([A-Za-z_]+\.py)`", first))
    return names


class ModuleMapTests(SynchronousTestCase):
    def test_every_module_has_a_row(self) -> None:
        """Each twisted_hub/*.py file is in the module table, and each row names a file that exists."""
        present = {name for name in os.listdir(PACKAGE) if name.endswith(".py")}
        documented = documented_modules()
        self.assertEqual(sorted(present - documented), [], "modules without a row in docs/architecture.md")
        self.assertEqual(sorted(documented - present), [], "rows for modules that do not exist")
