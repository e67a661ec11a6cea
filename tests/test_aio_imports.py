"""
The asyncio client imports neither Twisted nor autobahn (docs/asyncio.md):
measured in a fresh interpreter, on sys.modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
#: top-level packages the asyncio client must not load
FORBIDDEN = ("twisted", "autobahn", "zope", "txaio")

_REPORT = (
    "import json, sys\n"
    "forbidden = {forbidden!r}\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in forbidden)))\n"
)


def loaded_after(code: str) -> list[str]:
    """The forbidden modules in sys.modules after running C{code} in a new interpreter with this checkout first on its path."""
    script = code + "\n" + _REPORT.format(forbidden=FORBIDDEN)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        raise AssertionError(f"the import failed:\n{result.stderr}")
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


class AsyncioClientImportTests(SynchronousTestCase):
    def test_importing_the_asyncio_client_loads_no_twisted(self) -> None:
        """`import twisted_hub.aio` leaves no twisted*, autobahn*, zope* or txaio* module in sys.modules."""
        self.assertEqual(loaded_after("import twisted_hub.aio"), [])

    def test_the_documented_example_loads_no_twisted(self) -> None:
        """docs/asyncio.md's imports (the options and policy types from the package, then aio) load no Twisted either."""
        code = (
            "from twisted_hub import CompressionPolicy, DisconnectKind, HeartbeatPolicy, HubClientOptions, HubError\n"
            "import twisted_hub.aio\n"
        )
        self.assertEqual(loaded_after(code), [])

    def test_the_types_and_metrics_it_uses_load_no_twisted(self) -> None:
        """
        What an asyncio program compares, filters on or counts with --
        C{twisted_hub.types}' core types (C{CloseCode}, C{DisconnectReason},
        C{OriginPolicy}, C{HeartbeatConfigurationWarning}) and
        C{twisted_hub.metrics.ClientMetrics} -- loads no Twisted, nor do
        their deprecated spellings in C{twisted_hub}.
        """
        code = (
            "import warnings\n"
            "from twisted_hub.types import CloseCode, DisconnectReason, HeartbeatConfigurationWarning, OriginPolicy\n"
            "from twisted_hub.metrics import ClientMetrics\n"
            "import twisted_hub.aio\n"
            "with warnings.catch_warnings():\n"
            "    warnings.simplefilter('ignore', DeprecationWarning)\n"
            "    from twisted_hub import ClientMetrics as old_metrics, CloseCode as old_code\n"
            "assert (old_metrics, old_code) == (ClientMetrics, CloseCode)\n"
        )
        self.assertEqual(loaded_after(code), [])

    def test_the_modules_of_the_asyncio_client_import_no_twisted(self) -> None:
        """Every module twisted_hub.aio reaches (the package's __init__ set aside) imports no Twisted or autobahn."""
        code = (
            "import sys, types\n"
            "package = types.ModuleType('twisted_hub')\n"
            f"package.__path__ = [{str(ROOT / 'twisted_hub')!r}]\n"
            "sys.modules['twisted_hub'] = package\n"
            "import twisted_hub.aio\n"
            "assert 'twisted_hub._core.client_session' in sys.modules, sorted(sys.modules)\n"
        )
        self.assertEqual(loaded_after(code), [])

    def test_the_check_sees_twisted(self) -> None:
        """The measurement is live: importing the Twisted client does show Twisted and autobahn."""
        loaded = loaded_after("import twisted_hub._twisted.client")
        self.assertIn("twisted.internet.defer", loaded)
        self.assertIn("autobahn.twisted.websocket", loaded)
