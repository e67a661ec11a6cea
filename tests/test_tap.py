"""The twistd plugin: option parsing, the TOML config, plugin discovery and the service tree."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.app import ApplicationRunner
from twisted.application.service import IServiceMaker
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import HeartbeatPolicy, HubService
from twisted_hub._support.logging import HUB_LOG_OBSERVER, LogLevelService, get_log_level, set_log_level
from twisted_hub.demo import ChatHub, EchoHub
from twisted_hub.tap import (
    TLS_HINT,
    HintedUsageError,
    Options,
    json_log_observer,
    load_hub,
    makeService,
)
from twisted_hub.types import OriginPolicy

from ._certs import write_self_signed


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class DefaultsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """With no arguments: port 8080 on 127.0.0.1 only, /hub, the demo hubs, heartbeats off, same-host origins."""
        options = parse()
        self.assertEqual(options["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(options["path"], "/hub")
        self.assertEqual(options["hubs"], [EchoHub, ChatHub])
        self.assertFalse(options["heartbeat"].enabled)
        self.assertEqual(options["log-level"], "info")
        self.assertEqual(options["shutdown-timeout"], 10.0)
        self.assertEqual(options["max-message-size"], 1024 * 1024)
        policy = options["origin-policy"]
        self.assertTrue(policy.same_host)
        self.assertFalse(policy.allow_any)

    def test_documented_defaults_are_the_defaults(self) -> None:
        """
        Each default docs/deploying.md's options table gives in backquotes,
        passed explicitly, changes nothing: the documented default is the real
        one (read from the doc, not copied from the code).  A raw value left
        unset (None, []) may differ only where a value built from it (the
        origin policy, the compression policy) is compared equal.
        """
        import re

        needs = {
            "--authenticator": ["--authenticator", "tests.test_auth:ClaimsAuthenticator"],
            "--redis": ["--redis", "redis://127.0.0.1:6379/0"],
            "--compression": ["--compression"],
        }

        def comparable(value: Any) -> Any:
            if type(value).__eq__ is not object.__eq__:
                return value
            return re.sub(r" at 0x[0-9a-f]+", "", repr(value))  # no __eq__: its repr, without its address

        doc = (Path(__file__).resolve().parent.parent / "docs" / "deploying.md").read_text(encoding="utf-8")
        rows = doc.split("Options (`twistd hub --help`):", 1)[1].strip().splitlines()
        checked = []
        for line in rows[2:]:
            if not line.startswith("|"):
                break
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            option, default = re.match(r"`--([\w-]+)", cells[0]), re.match(r"`([^`]+)`", cells[1])
            if option is None or default is None:
                continue  # no default in backquotes: "off", "none", "3 × interval", a flag
            before = [arg for needed in re.findall(r"(?:needs|with) `(--[\w-]+)`", cells[2]) for arg in needs[needed]]
            base, given = parse(*before), parse(*before, f"--{option.group(1)}", default.group(1))
            changed = {
                key: (base[key], given[key]) for key in base.keys()
                if comparable(base[key]) != comparable(given[key]) and base[key] not in (None, [])
            }
            self.assertEqual(changed, {}, f"--{option.group(1)} {default.group(1)}")
            checked.append(option.group(1))
        self.assertGreaterEqual(len(checked), 15, checked)

    def test_port_shorthand(self) -> None:
        """--port N means --listen tcp:N:interface=127.0.0.1 (this machine only) and may be combined with --listen."""
        options = parse("--port", "9000", "--listen", "tcp:9001")
        self.assertEqual(options["listen"], ["tcp:9001", "tcp:9000:interface=127.0.0.1"])

    def test_listen_repeatable_tcp_ssl_unix(self) -> None:
        """--listen takes tcp, ssl (with key and certificate) and unix descriptions, in order."""
        key, cert = write_self_signed(self.temp_dir())
        ssl = f"ssl:8443:privateKey={key}:certKey={cert}:interface=127.0.0.1"
        options = parse("--listen", "tcp:8080", "--listen", ssl, "--listen", "unix:/tmp/hub-test.sock")
        self.assertEqual(options["listen"], ["tcp:8080", ssl, "unix:/tmp/hub-test.sock"])

    def temp_dir(self) -> Path:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        return Path(directory.name)

    def test_hubs_and_path(self) -> None:
        """--hub is repeatable and --path is normalised (trailing slash dropped)."""
        options = parse("--hub", "twisted_hub.demo:ChatHub", "--path", "/api/hubs/")
        self.assertEqual(options["hubs"], [ChatHub])
        self.assertEqual(options["path"], "/api/hubs")

    def test_heartbeat_timeout_defaults_to_three_intervals(self) -> None:
        """--heartbeat-interval alone gives a timeout of 3 x interval."""
        self.assertEqual(parse("--heartbeat-interval", "5")["heartbeat"], HeartbeatPolicy.every(5, 15))

    def test_heartbeat_timeout_none(self) -> None:
        """--heartbeat-timeout none keeps heartbeats but never disconnects."""
        policy = parse("--heartbeat-interval", "2", "--heartbeat-timeout", "none")["heartbeat"]
        self.assertTrue(policy.enabled)
        self.assertIsNone(policy.timeout)

    def test_sizes_levels_and_timeouts(self) -> None:
        """--max-message-size takes suffixes, --log-level any case, --shutdown-timeout fractions."""
        options = parse("--max-message-size", "4MiB", "--log-level", "DEBUG", "--shutdown-timeout", "2.5")
        self.assertEqual(options["max-message-size"], 4 * 1024 * 1024)
        self.assertEqual(options["log-level"], "debug")
        self.assertEqual(options["shutdown-timeout"], 2.5)
        self.assertEqual(parse("--max-message-size", "512k")["max-message-size"], 512 * 1024)

    def test_allowed_origins(self) -> None:
        """--allowed-origin replaces the same-host default; 'same-host' and '*' are keywords."""
        policy = parse("--allowed-origin", "https://App.Example.com:443", "--allowed-origin", "same-host")[
            "origin-policy"
        ]
        self.assertEqual(policy.origins, frozenset({"https://app.example.com"}))
        self.assertTrue(policy.same_host)
        self.assertTrue(parse("--allowed-origin", "*")["origin-policy"].allow_any)
        only = parse("--allowed-origin", "https://a.example")["origin-policy"]
        self.assertFalse(only.same_host)


class BadValueTests(SynchronousTestCase):
    def assertUsageError(self, option: str, *argv: str) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            parse(*argv)
        self.assertIn(option, str(caught.exception), f"{argv}: {caught.exception}")

    def test_every_bad_value_names_its_option(self) -> None:
        """Each bad value gives a usage error that names the option."""
        cases: list[tuple[str, list[str]]] = [
            ("--port", ["--port", "http"]),
            ("--port", ["--port", "70000"]),
            ("--port", ["--port", "-1"]),
            ("--listen", ["--listen", "tcp:notaport"]),
            ("--listen", ["--listen", "nosuchendpoint:1"]),
            ("--listen", ["--listen", "ssl:8443:privateKey=/nonexistent/key.pem"]),
            ("--path", ["--path", "hub"]),
            ("--path", ["--path", "/"]),
            ("--path", ["--path", "/a b"]),
            ("--hub", ["--hub", "no_colon"]),
            ("--hub", ["--hub", "no_such_module_xyz:Hub"]),
            ("--hub", ["--hub", "twisted_hub.demo:DEMO_HUBS"]),
            ("--hub", ["--hub", "twisted_hub.demo:EchoHub", "--hub", "twisted_hub.demo:EchoHub"]),
            ("--heartbeat-interval", ["--heartbeat-interval", "fast"]),
            ("--heartbeat-interval", ["--heartbeat-interval", "0"]),
            ("--heartbeat-interval", ["--heartbeat-interval", "-3"]),
            ("--heartbeat-interval", ["--heartbeat-interval", "inf"]),
            ("--heartbeat-timeout", ["--heartbeat-interval", "5", "--heartbeat-timeout", "soon"]),
            ("--heartbeat-timeout", ["--heartbeat-interval", "5", "--heartbeat-timeout", "0"]),
            ("--heartbeat-timeout", ["--heartbeat-timeout", "5"]),
            ("--max-message-size", ["--max-message-size", "big"]),
            ("--max-message-size", ["--max-message-size", "0"]),
            ("--max-message-size", ["--max-message-size", "1GB"]),
            ("--log-level", ["--log-level", "chatty"]),
            ("--shutdown-timeout", ["--shutdown-timeout", "0"]),
            ("--shutdown-timeout", ["--shutdown-timeout", "later"]),
            ("--allowed-origin", ["--allowed-origin", "example.com"]),
            ("--allowed-origin", ["--allowed-origin", "https://example.com/path"]),
            ("--allowed-origin", ["--allowed-origin", "ftp://example.com"]),
            ("--config", ["--config", "/nonexistent/hub.toml"]),
        ]
        for option, argv in cases:
            self.assertUsageError(option, *argv)

    def test_unknown_option(self) -> None:
        """An unknown option is a usage error too."""
        with self.assertRaises(usage.UsageError):
            parse("--bogus")


class ConfigFileTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text(text)
        return str(path)

    def test_file_settings(self) -> None:
        """Every setting can come from the TOML file, numbers as numbers."""
        path = self.write(
            'listen = ["tcp:9100:interface=127.0.0.1", "unix:/tmp/hub-cfg.sock"]\n'
            'path = "/rpc"\n'
            'hubs = ["twisted_hub.demo:EchoHub"]\n'
            "heartbeat-interval = 5\n"
            'heartbeat_timeout = "none"\n'
            'max-message-size = "64KiB"\n'
            'allowed-origins = ["https://app.example.com"]\n'
            'log-level = "warn"\n'
            "shutdown-timeout = 3\n"
        )
        options = parse("--config", path)
        self.assertEqual(options["listen"], ["tcp:9100:interface=127.0.0.1", "unix:/tmp/hub-cfg.sock"])
        self.assertEqual(options["path"], "/rpc")
        self.assertEqual(options["hubs"], [EchoHub])
        self.assertEqual(options["heartbeat"], HeartbeatPolicy.every(5, None))
        self.assertEqual(options["max-message-size"], 64 * 1024)
        self.assertEqual(options["origin-policy"].origins, frozenset({"https://app.example.com"}))
        self.assertEqual(options["log-level"], "warn")
        self.assertEqual(options["shutdown-timeout"], 3.0)

    def test_command_line_overrides_file(self) -> None:
        """Options on the command line win; --port replaces the file's listen list."""
        path = self.write(
            'listen = ["tcp:9100"]\nheartbeat-interval = 5\nhub = ["twisted_hub.demo:EchoHub"]\nlog-level = "warn"\n'
        )
        options = parse("--config", path, "--port", "9200", "--heartbeat-interval", "1", "--hub",
                        "twisted_hub.demo:ChatHub")
        self.assertEqual(options["listen"], ["tcp:9200:interface=127.0.0.1"])
        self.assertEqual(options["heartbeat"], HeartbeatPolicy.every(1))
        self.assertEqual(options["hubs"], [ChatHub])
        self.assertEqual(options["log-level"], "warn")

    def test_bad_file_values_name_the_option(self) -> None:
        """A bad value in the file is reported with the file and the key as written there."""
        for text, expected in [
            ("heartbeat-interval = -1\n", "hub.toml: heartbeat-interval: must be a finite number > 0, got '-1'"),
            ("heartbeat_interval = 'soon'\n", "hub.toml: heartbeat_interval: must be a number, got 'soon'"),
            ('listen = ["tcp:nope"]\n', "hub.toml: listen: 'tcp:nope': ValueError"),
            ("colour = 'blue'\n", "unknown setting 'colour'"),
            ("path = [1, 2]\n", "path must be a string or a number"),
            ("listen = [\n", "not valid TOML"),
            ("log-level = true\n", "log-level must be a string or a number"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse("--config", self.write(text))
            self.assertIn(expected, str(caught.exception))


class DrainDelayOptionTests(SynchronousTestCase):
    def test_drain_delay(self) -> None:
        """--drain-delay reaches the service; it defaults to 0 and rejects nonsense."""
        self.assertEqual(parse()["drain-delay"], 0.0)
        self.assertEqual(parse("--drain-delay", "7.5")["drain-delay"], 7.5)
        with self.assertRaises(usage.UsageError):
            parse("--drain-delay", "soon")


class FriendlyFailureTests(SynchronousTestCase):
    def test_missing_hub_class_says_it_does_not_exist(self) -> None:
        """--hub module:Missing names the missing attribute instead of calling it 'not a Hub subclass'."""
        with self.assertRaises(usage.UsageError) as raised:
            parse("--hub", "twisted_hub.demo:NoSuchHub")
        self.assertEqual(str(raised.exception), "--hub twisted_hub.demo:NoSuchHub: module 'twisted_hub.demo' has no 'NoSuchHub'")
        with self.assertRaises(usage.UsageError) as wrong:
            parse("--hub", "twisted_hub.demo:DEMO_HUBS")
        self.assertIn("is not a Hub subclass", str(wrong.exception))


class PingFallbackOptionTests(SynchronousTestCase):
    def test_ping_fallback_on_by_default_and_off_by_flag(self) -> None:
        """--no-ping-fallback (or TOML no-ping-fallback = true) turns the WebSocket-ping check off."""
        self.assertTrue(parse("--heartbeat-interval", "5")["heartbeat"].ping_fallback)
        options = parse("--heartbeat-interval", "5", "--no-ping-fallback")
        self.assertEqual((options["heartbeat"].ping_fallback, options["heartbeat"].interval), (False, 5.0))
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text("heartbeat-interval = 2\nno-ping-fallback = true\n")
        self.assertFalse(parse("--config", str(path))["heartbeat"].ping_fallback)


class PluginTests(SynchronousTestCase):
    def test_plugin_found(self) -> None:
        """getPlugins(IServiceMaker) finds the 'hub' plugin, whose options parse."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("hub", makers)
        maker: Any = makers["hub"]
        options = maker.options()
        options.parseOptions(["--port", "0", "--heartbeat-interval", "5"])
        self.assertEqual(options["listen"], ["tcp:0:interface=127.0.0.1"])
        self.assertTrue(options["heartbeat"].enabled)


class MakeServiceTests(SynchronousTestCase):
    def test_listeners_per_description(self) -> None:
        """makeService builds one server endpoint per --listen, all serving the same guarded Site."""
        options = parse("--port", "0", "--listen", "tcp:0:interface=127.0.0.1", "--max-message-size", "1000")
        root = makeService(options)
        hub_services = [s for s in root if isinstance(s, HubService)]  # type: ignore[attr-defined]
        self.assertEqual(len(hub_services), 1)
        service = hub_services[0]
        self.assertEqual(len(service.endpoints), 2)
        self.assertTrue(all(IStreamServerEndpoint.providedBy(endpoint) for endpoint in service.endpoints))
        self.assertIs(service.listening_factory.wrappedFactory, service.site)
        self.assertEqual(service.factory.max_message_size, 1000)
        self.assertIsInstance(service.factory.allowed_origins, OriginPolicy)
        self.assertEqual(set(service.factory.runtimes), {"echo", "chat"})

    def test_listeners_listen_when_started(self) -> None:
        """Starting the service listens on each endpoint (here a MemoryReactor)."""
        reactor = MemoryReactorClock()
        service = HubService([EchoHub], ["tcp:8123:interface=127.0.0.1", "unix:/tmp/hub-x.sock"], clock=reactor)
        service.privilegedStartService()
        service.startService()
        self.assertEqual([(port, iface) for port, _, _, iface in reactor.tcpServers], [(8123, "127.0.0.1")])
        self.assertEqual([address for address, *_ in reactor.unixServers], ["/tmp/hub-x.sock"])
        factories = [factory for _, factory, *_ in reactor.tcpServers] + [factory for _, factory, *_ in reactor.unixServers]
        self.assertEqual([id(factory) for factory in factories], [id(service.listening_factory)] * 2)


class LogLevelTests(SynchronousTestCase):
    """--log-level sets the level where twisted-hub's and autobahn's lines are emitted; where the log goes is twistd's."""

    def setUp(self) -> None:
        import txaio

        before = txaio.get_global_log_level()
        self.addCleanup(txaio.set_global_log_level, before)
        self.addCleanup(set_log_level, get_log_level())

    def published(self, level: str) -> list[str]:
        """The formats of twisted-hub's lines, one of each level, that reach the global log publisher under --log-level LEVEL."""
        service = makeService(parse("--log-level", level, "--port", "0"))
        assert isinstance(service, LogLevelService)
        seen: list[dict[str, Any]] = []
        # the level passed down, started on a service of its own (nothing under it listens)
        LogLevelService(service.level).startService()
        globalLogPublisher.addObserver(seen.append)
        try:
            log = Logger(namespace="twisted_hub._twisted.liveness", observer=HUB_LOG_OBSERVER)
            for name in ("debug", "info", "warn", "error", "critical"):
                log.emit(LogLevel.levelWithName(name), name)
        finally:
            globalLogPublisher.removeObserver(seen.append)
        return [event["log_format"] for event in seen if event.get("log_namespace") == "twisted_hub._twisted.liveness"]

    def test_level_of_twisted_hubs_own_lines(self) -> None:
        """twistd hub --log-level LEVEL: twisted-hub's lines below LEVEL never reach the log, the others do."""
        self.assertEqual(self.published("warn"), ["warn", "error", "critical"])
        self.assertEqual(self.published("debug"), ["debug", "info", "warn", "error", "critical"])

    def test_level_put_back_at_the_stop(self) -> None:
        """Running, the service sets the level twisted-hub emits its lines at; stopped, it puts the old one back."""
        service = LogLevelService(LogLevel.debug)
        self.assertEqual(get_log_level(), LogLevel.info)
        service.startService()
        self.assertEqual(get_log_level("twisted_hub._twisted.liveness"), LogLevel.debug)
        self.successResultOf(service.stopService())
        self.assertEqual(get_log_level("twisted_hub._twisted.liveness"), LogLevel.info)

    def test_debug_is_our_story_not_autobahns_flood(self) -> None:
        """At --log-level debug autobahn (txaio) stays at info; at error it follows."""
        import txaio

        LogLevelService(LogLevel.debug).startService()
        self.assertEqual(txaio.get_global_log_level(), "info")
        LogLevelService(LogLevel.error).startService()
        self.assertEqual(txaio.get_global_log_level(), "error")

    def test_destination_left_to_twistd(self) -> None:
        """Under twistd (--logfile, --log-level warn) twisted-hub gives the application no log observer: twistd's own applies."""
        config = ServerOptions()
        config.parseOptions(["--nodaemon", "--pidfile=", "--logfile=hub.log", "hub", "--log-level", "warn", "--port", "0"])
        application = ApplicationRunner(config).createOrGetApplication()  # type: ignore[no-untyped-call]
        self.assertIsNone(application.getComponent(ILogObserver))

    def test_json_logger(self) -> None:
        """json_log_observer (for twistd --logger) writes each event it gets as one JSON record, every field kept."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        observer = json_log_observer()
        observer({"log_level": LogLevel.warn, "log_namespace": "x", "log_format": "one {n}", "n": 1, "log_time": 0.0})
        observer({"log_level": LogLevel.error, "log_namespace": "x", "log_format": "two", "log_time": 0.0})
        records = [json.loads(record) for record in out.getvalue().split("\x1e") if record.strip()]
        self.assertEqual([(record["log_format"], record.get("n")) for record in records], [("one {n}", 1), ("two", None)])


_COUNTER_HUB = '''
from twisted_hub import Hub, hub, method


@hub("{name}")
class CounterHub(Hub):
    @method
    def get(self) -> int:
        return 0
'''


class HubLookupTests(SynchronousTestCase):
    """--hub finds a module in the directory twistd was started in, or a file by its path."""

    def folder(self, module: str, text: str | None = None) -> Path:
        """A temporary folder holding C{module}.py (a counter hub named C{module}); sys.path and sys.modules restored after."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        saved_path = list(sys.path)
        self.addCleanup(lambda: sys.path.__setitem__(slice(None), saved_path))
        self.addCleanup(sys.modules.pop, module, None)
        folder = Path(directory.name)
        (folder / f"{module}.py").write_text(_COUNTER_HUB.format(name=module) if text is None else text)
        return folder

    def test_module_in_the_current_directory(self) -> None:
        """--hub counterhub:CounterHub imports counterhub.py from the current directory, with no PYTHONPATH."""
        folder = self.folder("lookup_cwd_hub")
        self.patch(sys, "path", [p for p in sys.path if p not in ("", ".")])
        previous = os.getcwd()
        os.chdir(folder)
        self.addCleanup(os.chdir, previous)
        hub_class = parse("--hub", "lookup_cwd_hub:CounterHub")["hubs"][0]
        self.assertEqual(hub_class.hub_name, "lookup_cwd_hub")
        self.assertEqual(Path(sys.modules["lookup_cwd_hub"].__file__ or "").parent, folder)

    def test_file_path(self) -> None:
        """--hub path/to/file.py:Class imports that file, relative to the current directory or absolute."""
        folder = self.folder("lookup_file_hub")
        self.assertEqual(load_hub(f"{folder}/lookup_file_hub.py:CounterHub").hub_name, "lookup_file_hub")
        relative = load_hub("./lookup_file_hub.py:CounterHub", directory=str(folder))
        self.assertEqual(relative.hub_name, "lookup_file_hub")

    def assertHinted(self, spec: str, message: str, hint: str, directory: str | None = None) -> None:
        with self.assertRaises(HintedUsageError) as caught:
            load_hub(spec, directory)
        self.assertEqual((str(caught.exception), caught.exception.hint), (message, hint))

    def test_not_found_says_where_it_looked(self) -> None:
        """A module found nowhere names the directory searched, and the hint says how to name a file."""
        folder = self.folder("lookup_other")
        self.assertHinted(
            "lookup_absent:CounterHub",
            f"--hub lookup_absent:CounterHub: no module 'lookup_absent' in {folder} or on sys.path",
            f"--hub MODULE:CLASS imports MODULE from the directory twistd was started in ({folder}), then from "
            "sys.path; or name the file: --hub path/to/lookup_absent.py:CounterHub",
            str(folder),
        )
        self.assertHinted(
            "./absent.py:CounterHub", f"--hub ./absent.py:CounterHub: no file {folder}/absent.py",
            "give the .py file that defines CounterHub, or module:Class to import a module", str(folder),
        )

    def test_wrong_names(self) -> None:
        """A missing class lists the module's hub classes; the base class Hub itself is refused."""
        folder = self.folder("lookup_names")
        self.assertHinted(
            "lookup_names:Counter", "--hub lookup_names:Counter: module 'lookup_names' has no 'Counter'",
            "its hub classes: CounterHub", str(folder),
        )
        self.assertHinted(
            "lookup_names:Hub", "--hub lookup_names:Hub: 'Hub' is not a Hub subclass in 'lookup_names'",
            "its hub classes: CounterHub; a hub is a class that derives from twisted_hub.Hub (docs/tutorial.md)",
            str(folder),
        )

    def test_a_module_that_fails_says_where(self) -> None:
        """A module that raises or does not parse is one line naming the file and line; a missing dependency is named."""
        folder = self.folder("lookup_raises", "x = 1\nraise RuntimeError('no database')\n")
        with self.assertRaises(HintedUsageError) as raised:
            load_hub("lookup_raises:CounterHub", str(folder))
        self.assertEqual(
            str(raised.exception),
            "--hub lookup_raises:CounterHub: importing 'lookup_raises' raised RuntimeError: no database "
            f"({folder}/lookup_raises.py, line 2)",
        )
        broken = self.folder("lookup_syntax", "def f(:\n")
        with self.assertRaises(HintedUsageError) as syntax:
            load_hub("lookup_syntax:CounterHub", str(broken))
        self.assertRegex(
            str(syntax.exception), rf"^--hub lookup_syntax:CounterHub: {broken}/lookup_syntax.py, line 1: SyntaxError: "
        )
        needs = self.folder("lookup_needs", "import lookup_not_installed_xyz\n")
        with self.assertRaises(HintedUsageError) as dependency:
            load_hub("lookup_needs:CounterHub", str(needs))
        self.assertEqual(
            dependency.exception.hint,
            "lookup_needs imports 'lookup_not_installed_xyz', which is not installed (or not on sys.path)",
        )


class UnderTwistdTests(SynchronousTestCase):
    """Under twistd, a bad option is two lines (the error and a hint), not the help text."""

    def twistd_error(self, *argv: str) -> str:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as caught:
            ServerOptions().parseOptions(["--nodaemon", "--pidfile=", "hub", *argv])
        self.assertEqual(out.getvalue(), "")  # no help text
        text = str(caught.exception.code)
        self.assertEqual(len(text.splitlines()), 2, text)
        return text

    def test_bad_hub(self) -> None:
        """A hub that cannot be imported: the error, then where --hub looks."""
        text = self.twistd_error("--hub", "nowhere_xyz:CounterHub")
        first, hint = text.splitlines()
        self.assertEqual(
            first, f"twistd hub: --hub nowhere_xyz:CounterHub: no module 'nowhere_xyz' in {os.getcwd()} or on sys.path"
        )
        self.assertTrue(hint.startswith("hint: --hub MODULE:CLASS imports MODULE from the directory twistd was started in"))

    def test_unknown_option(self) -> None:
        """An unknown option gets the generic hint."""
        self.assertEqual(
            self.twistd_error("--prot", "8080"),
            "twistd hub: option --prot not recognized\n"
            "hint: 'twistd hub --help' lists the options; docs/deploying.md explains them",
        )

    def test_tls_files(self) -> None:
        """A missing key, a key of another certificate, a missing certKey: each says which file is wrong."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        folder = Path(directory.name)
        key, cert = write_self_signed(folder)
        (folder / "other").mkdir()
        other_key, _ = write_self_signed(folder / "other")
        for listen, problem in [
            (f"ssl:0:privateKey={folder}/none.pem:certKey={cert}", f"the private key file {folder}/none.pem does not exist"),
            (f"ssl:0:privateKey={key}:certKey={folder}/none.pem", f"the certificate file {folder}/none.pem does not exist"),
            (
                f"ssl:0:privateKey={other_key}:certKey={cert}",
                f"the private key {other_key} does not belong to the certificate {cert}",
            ),
            (f"ssl:0:privateKey={key}", f"{key} holds no PEM certificate (give certKey=CERT.pem)"),
            (f"ssl:0:privateKey={cert}:certKey={cert}", f"{cert} holds no PEM private key"),
        ]:
            self.assertEqual(
                self.twistd_error("--listen", listen),
                f"twistd hub: --listen {listen!r}: {problem}\nhint: {TLS_HINT}",
            )

    def test_toml_value(self) -> None:
        """A bad value in the TOML file names the file and the key as written there."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text('heartbeat_interval = "soon"\n')
        self.assertEqual(
            self.twistd_error("--config", str(path)).splitlines()[0],
            f"twistd hub: {path}: heartbeat_interval: must be a number, got 'soon'",
        )

    def test_library_use_still_raises(self) -> None:
        """Options used directly (not under twistd) raise the usage error itself, hint attached."""
        with self.assertRaises(HintedUsageError) as caught:
            parse("--hub", "nowhere_xyz:CounterHub")
        self.assertIn("twistd was started in", caught.exception.hint)


class FilterOptionTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text(text)
        return str(path)

    def test_no_filters_by_default(self) -> None:
        """Without the options the server has no filters."""
        self.assertEqual(parse()["filters"], [])

    def test_options_make_filters_in_order(self) -> None:
        """Rate limit, call log, call timeout, then each --filter (an object, a class, a factory) in order."""
        from twisted_hub.filters import CallLog, CallTimeout, RateLimit

        from .helpers.filters import Tagged

        options = parse(
            "--filter", "tests.helpers.filters:Tagged", "--call-timeout", "30", "--log-calls",
            "--filter", "tests.helpers.filters:TAGGED", "--call-rate", "5", "--call-burst", "10",
            "--filter", "tests.helpers.filters:make_tagged",
        )
        filters = options["filters"]
        self.assertEqual(
            [type(f) for f in filters], [RateLimit, CallLog, CallTimeout, Tagged, Tagged, Tagged]
        )
        self.assertEqual((filters[0].rate, filters[0].burst, filters[2].seconds), (5.0, 10.0, 30.0))
        self.assertEqual([f.tag for f in filters[3:]], ["filtered", "object", "made"])
        self.assertEqual(parse("--call-rate", "0.5")["filters"][0].burst, 1.0)
        service = makeService(options)
        hub_service = next(iter(service))  # type: ignore[call-overload]
        self.assertEqual(list(hub_service.factory.filters), filters)

    def test_config_file(self) -> None:
        """call-rate, call-burst, call-timeout, log-calls and filters come from the TOML file; --filter replaces its list."""
        from twisted_hub.filters import CallLog, CallTimeout, RateLimit

        path = self.write(
            "call-rate = 2\ncall-burst = 4\ncall-timeout = 1.5\nlog-calls = true\n"
            'filters = ["tests.helpers.filters:Tagged", "tests.helpers.filters:TAGGED"]\n'
        )
        filters = parse("--config", path)["filters"]
        self.assertEqual([type(f).__name__ for f in filters], ["RateLimit", "CallLog", "CallTimeout", "Tagged", "Tagged"])
        self.assertIsInstance(filters[0], RateLimit)
        self.assertIsInstance(filters[1], CallLog)
        self.assertIsInstance(filters[2], CallTimeout)
        self.assertEqual((filters[0].rate, filters[0].burst, filters[2].seconds), (2.0, 4.0, 1.5))
        replaced = parse("--config", path, "--filter", "tests.helpers.filters:make_tagged")["filters"]
        self.assertEqual([getattr(f, "tag", None) for f in replaced], [None, None, None, "made"])

    def test_bad_values_name_the_option(self) -> None:
        """Each bad filter setting stops twistd with a usage error naming it."""
        for argv, expected in [
            (["--call-burst", "5"], "--call-burst needs --call-rate"),
            (["--call-rate", "0"], "--call-rate must be a finite number > 0"),
            (["--call-rate", "fast"], "--call-rate must be a number"),
            (["--call-rate", "5", "--call-burst", "0.5"], "--call-rate/--call-burst: RateLimit burst must be"),
            (["--call-timeout", "-1"], "--call-timeout must be a finite number > 0"),
            (["--filter", "nomodule"], "--filter wants module:name"),
            (["--filter", "no_such_module_here:X"], "--filter no_such_module_here:X: cannot import"),
            (["--filter", "tests.helpers.filters:Missing"], "module 'tests.helpers.filters' has no 'Missing'"),
            (["--filter", "tests.helpers.filters:NOT_A_FILTER"], "42 is not a filter"),
            (["--filter", "twisted_hub.demo:EchoHub"], "is a hub, not a filter"),
            (["--filter", "twisted_hub.filters:RateLimit"], "calling RateLimit failed: TypeError"),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                parse(*argv)
            self.assertIn(expected, str(raised.exception), argv)
