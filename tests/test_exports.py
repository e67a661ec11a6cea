"""The public API is what the package says it is."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import twisted_hub

EXPECTED = {
    "Hub", "hub", "method", "heartbeat", "HubServerFactory", "HubServerProtocol", "HubClientProtocol",
    "HubClientFactory", "HubClientOptions", "connect", "HubError", "DisconnectKind", "DisconnectReason",
    "HeartbeatPolicy", "ReconnectingHubClient", "full_jitter_policy", "HubService", "HubResource",
    "HubProxy", "LocalBackplane", "ServerHeartbeatEvent", "ClientHeartbeatEvent", "CloseCode", "ErrorCode", "SUBPROTOCOL",
}


class ExportTests(SynchronousTestCase):
    def test_all_names_exist(self) -> None:
        """Every name in twisted_hub.__all__ is importable from the package."""
        missing = [name for name in twisted_hub.__all__ if not hasattr(twisted_hub, name)]
        self.assertEqual(missing, [])

    def test_core_api_is_exported(self) -> None:
        """The names the README and docs use are all in __all__."""
        self.assertEqual(EXPECTED - set(twisted_hub.__all__), set())

    def test_public_modules_import(self) -> None:
        """The public modules (testing, tap, demo, the CLI) import."""
        for name in ("twisted_hub.testing", "twisted_hub.tap", "twisted_hub.demo", "twisted_hub.__main__", "twisted_hub.redis"):
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
