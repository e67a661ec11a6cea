"""twistd hub options (and TOML keys) for connection limits, allowed hosts and the status page."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import HubService
from twisted_hub.tap import makeService

from .test_tap import parse


class LimitOptionTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text(text)
        return str(path)

    def hub_service(self, *argv: str) -> HubService:
        (service,) = [s for s in makeService(parse(*argv)) if isinstance(s, HubService)]  # type: ignore[attr-defined]
        return service

    def test_defaults(self) -> None:
        """Without options: 10 s handshake, 10,000 connections, 256 per address, any host, page at /."""
        options = parse()
        self.assertEqual(
            (options["handshake-timeout"], options["max-connections"], options["max-connections-per-ip"]),
            (10.0, 10_000, 256),
        )
        self.assertEqual((options["host-policy"], options["status-path"], options["no-status"]), (None, "/", 0))

    def test_options_reach_the_factory(self) -> None:
        """The command-line options end up in the factory's limits and host list and the site's layout."""
        service = self.hub_service(
            "--handshake-timeout", "3", "--max-connections", "500", "--max-connections-per-ip", "0",
            "--allowed-host", "hub.example.com", "--allowed-host", ".example.org", "--status-path", "/status",
        )
        limits = service.factory.limits
        self.assertEqual((limits.handshake_timeout, limits.max_connections, limits.max_connections_per_ip),
                         (3.0, 500, None))
        assert service.factory.allowed_hosts is not None
        self.assertTrue(service.factory.allowed_hosts.allows("a.example.org"))
        self.assertFalse(service.factory.allowed_hosts.allows("evil.example"))
        assert service.root is not None
        self.assertEqual(sorted(service.root.children), [b"client", b"demo", b"health", b"hub", b"status", b"status.json"])

    def test_no_status(self) -> None:
        """--no-status leaves no status page on the site (the hub, the client script and the demo stay)."""
        service = self.hub_service("--no-status")
        assert service.root is not None
        self.assertEqual(sorted(service.root.children), [b"client", b"demo", b"health", b"hub"])
        self.assertNotIn(b"", service.root.children)

    def test_file_keys(self) -> None:
        """The same settings come from the TOML file (allowed-hosts as a list, no-status as a boolean)."""
        path = self.write(
            "handshake-timeout = 4\nmax-connections = 100\nmax_connections_per_ip = 10\n"
            'allowed-hosts = ["hub.example.com"]\nno-status = true\nstatus-path = "/s"\n'
        )
        options = parse("--config", path)
        self.assertEqual(
            (options["handshake-timeout"], options["max-connections"], options["max-connections-per-ip"]),
            (4.0, 100, 10),
        )
        self.assertEqual((options["allowed-hosts"], options["no-status"], options["status-path"]),
                         (["hub.example.com"], True, "/s"))

    def test_bad_values_name_the_option(self) -> None:
        """Bad values are usage errors naming the option, on the command line and in the file."""
        for argv, expected in [
            (["--handshake-timeout", "0"], "--handshake-timeout"),
            (["--max-connections", "-5"], "--max-connections"),
            (["--max-connections-per-ip", "many"], "--max-connections-per-ip"),
            (["--allowed-host", "https://hub.example.com"], "--allowed-host"),
            (["--status-path", "/hub"], "--status-path"),
            (["--config", self.write('no-status = "yes"\n')], "no-status must be true or false"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertIn(expected, str(caught.exception))
