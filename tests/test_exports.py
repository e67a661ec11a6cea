"""The public API is what the package says it is."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

import twisted_hub
import twisted_hub.auth
import twisted_hub.filters
import twisted_hub.metrics
import twisted_hub.types
from twisted_hub._core.deprecate import MOVED_NAMES

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
HEARTBEAT_DOC = ROOT / "docs" / "heartbeat.md"

#: twisted_hub.__all__ before the API shrank (0.1.0): every name that left must still work
ALL_BEFORE_SHRINKING = (
    "AllowedHosts AuthenticationFailed Backplane CallLog CallTimeout CallTimeoutError ClientHeartbeatEvent "
    "ClientMetrics ClientScriptResource ClockOffset CloseCode CompressionPolicy ConnectTimeoutError "
    "ConnectionClosedError ConnectionContext ConnectionEvent ConnectionGuard ConnectionLimits Credentials "
    "DisconnectKind DisconnectReason ErrorCode FAST_DETECTION Forbidden HandshakeError HeartbeatConfigurationError "
    "HeartbeatConfigurationWarning HeartbeatFeature HeartbeatPolicy Hub HubArgumentError HubCall HubClientFactory "
    "HubClientOptions HubClientProtocol HubError HubFilter HubMetrics HubProxy HubResource HubServerFactory "
    "HubServerProtocol HubService HubStateError HubUsageError InvalidArguments JWTAuthenticator LocalBackplane "
    "MOBILE MetadataProvider OriginPolicy PROXY_SAFE ProtocolError RateLimit ReconnectingHubClient RefuseConnection "
    "SUBPROTOCOL ServerHeartbeatEvent TwistedHubError User __version__ anyone authenticated connect "
    "full_jitter_policy has_claim heartbeat hub method redacting_log_formatter set_log_level"
).split()

PUBLIC_MODULES: dict[str, ModuleType] = {
    "twisted_hub": twisted_hub,
    "twisted_hub.auth": twisted_hub.auth,
    "twisted_hub.filters": twisted_hub.filters,
    "twisted_hub.metrics": twisted_hub.metrics,
    "twisted_hub.types": twisted_hub.types,
}


def doc_section(title: str) -> str:
    """The text of the docs/api.md section headed C{## title}."""
    text = API_DOC.read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def documented_api(module: str = "twisted_hub") -> dict[str, str]:
    """C{name: defining module} from the table of C{module} in docs/api.md."""
    rows = re.findall(r"^\| `([\w]+)` \| `([\w.]+)` \|", doc_section(f"`{module}`"), re.M)
    return dict(rows)


def run_python(code: str) -> str:
    """Run C{code} in a fresh interpreter on this checkout; its stdout, stripped."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout.strip()


class ExportTests(SynchronousTestCase):
    def test_all_names_exist(self) -> None:
        """Every name in each public module's __all__ is importable from it."""
        for module_name, module in PUBLIC_MODULES.items():
            missing = [name for name in module.__all__ if not hasattr(module, name)]
            self.assertEqual(missing, [], module_name)

    def test_all_is_the_documented_api(self) -> None:
        """Each public module's __all__ names exactly what docs/api.md documents for it, sorted."""
        for module_name, module in PUBLIC_MODULES.items():
            self.assertEqual(sorted(module.__all__), sorted(documented_api(module_name)), module_name)
            self.assertEqual(list(module.__all__), sorted(module.__all__), module_name)

    def test_the_package_is_about_thirty_names(self) -> None:
        """twisted_hub.__all__ stays small: 33 names (__version__ included), of the 71 it had, only names users build or catch."""
        self.assertEqual(len(twisted_hub.__all__), 33)
        self.assertEqual(set(twisted_hub.__all__), set(twisted_hub._EXPORTS) | {"__version__"})

    def test_exports_are_the_defining_modules_objects(self) -> None:
        """Each exported name is the very object its private module defines (no copies, no drift)."""
        for public_name in PUBLIC_MODULES:
            for name, module_name in documented_api(public_name).items():
                if module_name == "__init__":
                    continue
                module = importlib.import_module(f"twisted_hub.{module_name}")
                self.assertIs(getattr(PUBLIC_MODULES[public_name], name), getattr(module, name), name)

    def test_every_exception_shares_one_base(self) -> None:
        """Every exception class any public module exports (the Redis and asyncio modules too) derives from TwistedHubError."""
        checked = []
        more = [importlib.import_module(name) for name in ("twisted_hub.redis", "twisted_hub.aio", "twisted_hub.testing")]
        for module in [*PUBLIC_MODULES.values(), *more]:
            for name in getattr(module, "__all__", []):
                value = getattr(module, name)
                if isinstance(value, type) and issubclass(value, BaseException) and not issubclass(value, Warning):
                    self.assertTrue(issubclass(value, twisted_hub.TwistedHubError), name)
                    checked.append(name)
        self.assertIn("AuthenticationFailed", checked)
        self.assertIn("RedisLinkError", checked)
        self.assertIn("ConnectionClosedError", checked)

    def test_dir_lists_the_public_names_and_not_the_moved_ones(self) -> None:
        """dir(twisted_hub) offers every public name (loaded or not) and none of the deprecated ones."""
        listed = set(dir(twisted_hub))
        self.assertLessEqual(set(twisted_hub.__all__), listed)
        self.assertEqual(listed & set(MOVED_NAMES), set())

    def test_an_unknown_name_is_an_attribute_error(self) -> None:
        """A name twisted_hub never had raises AttributeError naming it, without a warning."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with self.assertRaises(AttributeError) as raised:
                twisted_hub.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
        self.assertIn("NoSuchThing", str(raised.exception))
        self.assertEqual(caught, [])


class MovedNameTests(SynchronousTestCase):
    def test_every_name_that_left_is_deprecated_not_gone(self) -> None:
        """Each name of the old __all__ is either still exported or in the table of moved names, not both."""
        still = set(twisted_hub.__all__)
        self.assertEqual(set(ALL_BEFORE_SHRINKING) - still, set(MOVED_NAMES))
        self.assertEqual(still & set(MOVED_NAMES), set())

    def test_moved_names_are_documented(self) -> None:
        """docs/api.md lists each moved name with its new spelling, exactly as the code resolves it."""
        rows = re.findall(r"^\| `twisted_hub\.(\w+)` \| `([\w.]+)` \|", doc_section("Moved names (deprecated)"), re.M)
        self.assertEqual(dict(rows), {name: f"{module}.{attribute}" for name, (module, attribute) in MOVED_NAMES.items()})

    def test_each_moved_name_warns_and_is_the_new_object(self) -> None:
        """twisted_hub.NAME for each moved name: one DeprecationWarning naming the new spelling, and the very object it names."""
        for name, (module_name, attribute) in sorted(MOVED_NAMES.items()):
            expected: object = importlib.import_module(module_name)
            for part in attribute.split("."):
                expected = getattr(expected, part)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = getattr(twisted_hub, name)
            self.assertIs(value, expected, name)
            self.assertEqual([w.category for w in caught], [DeprecationWarning], name)
            self.assertEqual(
                str(caught[0].message),
                f"twisted_hub.{name} is deprecated since twisted-hub 0.1.0; use {module_name}.{attribute}",
            )

    def test_from_import_still_works_and_warns_at_the_importing_line(self) -> None:
        """C{from twisted_hub import PROXY_SAFE, HubServerProtocol} works; each warning points at the import line."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from twisted_hub import PROXY_SAFE, HubServerProtocol
        self.assertIs(PROXY_SAFE, twisted_hub.HeartbeatPolicy.PROXY_SAFE)
        self.assertIs(HubServerProtocol, twisted_hub.types.HubServerProtocol)
        self.assertEqual([Path(w.filename).name for w in caught], ["test_exports.py", "test_exports.py"])

    def test_moved_names_are_not_cached(self) -> None:
        """A second use of a moved name warns again (it never becomes a plain attribute of the package)."""
        for _ in range(2):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                twisted_hub.MOBILE  # noqa: B018
            self.assertEqual(len(caught), 1)

    def test_presets_are_heartbeat_policy_attributes_as_documented(self) -> None:
        """HeartbeatPolicy.PROXY_SAFE / FAST_DETECTION / MOBILE have the interval and timeout docs/heartbeat.md gives."""
        preset = r"`HeartbeatPolicy\.(PROXY_SAFE|FAST_DETECTION|MOBILE)`\W+(?:is )?\(?(\d+) s / (\d+) s"
        documented = {
            name: (float(interval), float(timeout))
            for name, interval, timeout in re.findall(preset, HEARTBEAT_DOC.read_text())
        }
        self.assertEqual(set(documented), {"PROXY_SAFE", "FAST_DETECTION", "MOBILE"})
        for name, (interval, timeout) in documented.items():
            policy = getattr(twisted_hub.HeartbeatPolicy, name)
            self.assertEqual((policy.enabled, policy.interval, policy.timeout), (True, interval, timeout), name)


class LazyImportTests(SynchronousTestCase):
    def test_importing_the_package_loads_no_twisted(self) -> None:
        """C{import twisted_hub} alone loads no twisted, autobahn or private twisted_hub module; using a name does."""
        code = (
            "import sys, twisted_hub\n"
            "def loaded(): return sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'autobahn')"
            " or m.startswith('twisted_hub.'))\n"
            "print(loaded())\n"
            "twisted_hub.HubServerFactory\n"
            "print('twisted.internet.defer' in loaded(), 'twisted_hub._twisted.server' in loaded())\n"
        )
        before, after = run_python(code).splitlines()
        self.assertEqual(before, "[]")
        self.assertEqual(after, "True True")

    def test_the_asyncio_client_does_not_load_the_server_side(self) -> None:
        """C{import twisted_hub.aio} goes through the package without loading the Twisted server side (or twisted.web)."""
        code = (
            "import sys, twisted_hub.aio\n"
            "print([m for m in ('twisted_hub._twisted.server', 'twisted_hub._ops.service',"
            " 'twisted_hub._twisted.resource', 'twisted.web')"
            " if m in sys.modules])"
        )
        self.assertEqual(run_python(code), "[]")

    def test_the_types_module_loads_each_name_on_first_use(self) -> None:
        """C{import twisted_hub.types} loads no private module; a core type loads its own, a connection type the Twisted side."""
        code = (
            "import sys, twisted_hub.types\n"
            "def loaded(): return sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'autobahn')"
            " or m.startswith('twisted_hub.'))\n"
            "print(loaded())\n"
            "from twisted_hub.types import CloseCode, DisconnectReason, HeartbeatConfigurationWarning, OriginPolicy\n"
            "print('twisted_hub._core.wire' in loaded(), 'twisted' in sys.modules, 'twisted_hub._twisted.server' in loaded())\n"
            "from twisted_hub.types import HubServerProtocol\n"
            "print('twisted' in sys.modules, 'twisted_hub._twisted.server' in loaded())\n"
        )
        before, core, server = run_python(code).splitlines()
        self.assertEqual(before, "['twisted_hub.types']")
        self.assertEqual(core, "True False False")
        self.assertEqual(server, "True True")

    def test_the_metrics_module_loads_no_twisted_nor_prometheus(self) -> None:
        """C{import twisted_hub.metrics} loads neither Twisted nor prometheus_client, as docs/api.md says."""
        code = (
            "import sys, twisted_hub.metrics\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'autobahn', 'prometheus_client'}))\n"
        )
        self.assertEqual(run_python(code), "[]")

    def test_an_unknown_type_is_an_attribute_error(self) -> None:
        """A name twisted_hub.types does not have raises AttributeError naming it (and dir() lists the names unloaded)."""
        with self.assertRaises(AttributeError) as raised:
            twisted_hub.types.NoSuchType  # type: ignore[attr-defined]  # noqa: B018
        self.assertIn("NoSuchType", str(raised.exception))
        self.assertLessEqual(set(twisted_hub.types.__all__), set(dir(twisted_hub.types)))

    def test_dir_loads_nothing(self) -> None:
        """dir(twisted_hub) lists the names without importing their modules."""
        code = "import sys, twisted_hub\nnames = dir(twisted_hub)\nprint('Hub' in names, 'twisted' in sys.modules)"
        self.assertEqual(run_python(code), "True False")


class PublicModuleTests(SynchronousTestCase):
    def test_public_modules_import(self) -> None:
        """The public modules (testing, tap, demo, the CLI) import."""
        for name in (
            "twisted_hub.testing", "twisted_hub.tap", "twisted_hub.demo", "twisted_hub.__main__", "twisted_hub.aio",
            "twisted_hub.redis", "twisted_hub.auth", "twisted_hub.filters", "twisted_hub.metrics", "twisted_hub.types",
        ):
            self.assertEqual(importlib.import_module(name).__name__, name)

    def test_no_reactor_imported_at_module_level(self) -> None:
        """Importing the package, its public modules and the twistd plugin installs no reactor."""
        code = (
            "import sys, twisted_hub, twisted_hub.testing, twisted_hub.tap, twisted_hub.demo, twisted_hub.redis\n"
            "from twisted.plugins import twisted_hub_plugin\n"
            "print('twisted.internet.reactor' in sys.modules)"
        )
        self.assertEqual(run_python(code), "False")

    def test_ships_py_typed(self) -> None:
        """The package is marked as typed."""
        self.assertTrue((Path(twisted_hub.__file__).parent / "py.typed").exists())
