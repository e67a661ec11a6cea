"""The public API is what the package says it is."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import twisted_hub

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def documented_api() -> dict[str, str]:
    """C{name: defining module} from the table in docs/api.md."""
    rows = re.findall(r"^\| `([\w]+)` \| `([\w]+)` \|", API_DOC.read_text(), re.M)
    return dict(rows)


class ExportTests(SynchronousTestCase):
    def test_all_names_exist(self) -> None:
        """Every name in twisted_hub.__all__ is importable from the package."""
        missing = [name for name in twisted_hub.__all__ if not hasattr(twisted_hub, name)]
        self.assertEqual(missing, [])

    def test_all_is_the_documented_api(self) -> None:
        """__all__ names exactly what docs/api.md documents (nothing slips in or out unnoticed), sorted."""
        self.assertEqual(sorted(twisted_hub.__all__), sorted(documented_api()))
        self.assertEqual(list(twisted_hub.__all__), sorted(twisted_hub.__all__))

    def test_exports_are_the_defining_modules_objects(self) -> None:
        """Each exported name is the very object its private module defines (no copies, no drift)."""
        for name, module_name in documented_api().items():
            if module_name == "__init__":
                continue
            module = importlib.import_module(f"twisted_hub.{module_name}")
            self.assertIs(getattr(twisted_hub, name), getattr(module, name), name)

    def test_every_exception_shares_one_base(self) -> None:
        """Every exception class twisted-hub exports derives from TwistedHubError."""
        for name in twisted_hub.__all__:
            value = getattr(twisted_hub, name)
            if isinstance(value, type) and issubclass(value, BaseException) and not issubclass(value, Warning):
                self.assertTrue(issubclass(value, twisted_hub.TwistedHubError), name)

    def test_public_modules_import(self) -> None:
        """The public modules (testing, tap, demo, the CLI) import."""
        for name in (
            "twisted_hub.testing", "twisted_hub.tap", "twisted_hub.demo", "twisted_hub.__main__", "twisted_hub.aio",
            "twisted_hub.redis",
        ):
            self.assertEqual(importlib.import_module(name).__name__, name)

    def test_no_reactor_imported_at_module_level(self) -> None:
        """Importing the package, its public modules and the twistd plugin installs no reactor."""
        code = (
            "import sys, twisted_hub, twisted_hub.testing, twisted_hub.tap, twisted_hub.demo, twisted_hub.redis\n"
            "from twisted.plugins import twisted_hub_plugin\n"
            "print('twisted.internet.reactor' in sys.modules)"
        )
        root = Path(__file__).resolve().parent.parent
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "False"), result.stderr)

    def test_ships_py_typed(self) -> None:
        """The package is marked as typed."""
        self.assertTrue((Path(twisted_hub.__file__).parent / "py.typed").exists())
