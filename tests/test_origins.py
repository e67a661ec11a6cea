"""
Origin and Host checks of the opening handshake, on a Clock: "Origin: null"
and invalid origins are refused with 403 (as docs/protocol.md says), and the
allowed-hosts list refuses DNS-rebinding requests with 400.
"""

from __future__ import annotations

import warnings
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import HubArgumentError, HubServerFactory, HubService
from twisted_hub.demo import EchoHub
from twisted_hub.types import AllowedHosts, OriginPolicy

from .test_limits import Accepted, peer


def request(host: str = "hub.example.com", origin: str | None = None) -> bytes:
    lines = [
        "GET /hub/echo HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: twisted-hub.v1",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}" if origin else "Origin:")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class HandshakeChecks(SynchronousTestCase):
    def answer(self, data: bytes, **options: Any) -> bytes:
        """The status line the server answers C{data} with."""
        factory = HubServerFactory([EchoHub], clock=Clock(), hello_timeout=600, **options)
        conn = Accepted(factory, peer())
        conn.send(data)
        return conn.transport.value().split(b"\r\n", 1)[0]


class OriginTests(HandshakeChecks):
    def test_null_origin_is_403(self) -> None:
        """'Origin: null' (sandboxed frames, file: pages) is refused with 403 by the same-host policy."""
        line = self.answer(request(origin="null"), allowed_origins=OriginPolicy())
        self.assertEqual(line, b"HTTP/1.1 403 origin 'null' is not allowed")

    def test_null_origin_with_a_list_is_403(self) -> None:
        """'Origin: null' is refused with 403 by a list of origins that does not hold it."""
        line = self.answer(request(origin="null"), allowed_origins=["https://app.example.com"])
        self.assertTrue(line.startswith(b"HTTP/1.1 403 "), line)

    def test_empty_origin_is_403(self) -> None:
        """An empty Origin header is refused with 403 and a reason, not autobahn's 400."""
        line = self.answer(request(origin=""), allowed_origins=OriginPolicy())
        self.assertEqual(line, b"HTTP/1.1 403 origin '' is not allowed (not a valid origin)")

    def test_origin_without_host_is_403(self) -> None:
        """An Origin header that is not an origin (no host) is refused with 403."""
        line = self.answer(request(origin="https://"), allowed_origins=OriginPolicy())
        self.assertTrue(line.startswith(b"HTTP/1.1 403 origin 'https://' is not allowed"), line)

    def test_any_origin_allows_null(self) -> None:
        """With every origin allowed (["*"], or the policy saying so), 'Origin: null' connects."""
        self.assertEqual(self.answer(request(origin="null"), allowed_origins=["*"]), b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(
            self.answer(request(origin="null"), allowed_origins=OriginPolicy(["*"])),
            b"HTTP/1.1 101 Switching Protocols",
        )

    def test_a_bare_factory_allows_the_same_host_only(self) -> None:
        """HubServerFactory's default is HubService's and twistd hub's: same host passes, another origin gets 403."""
        self.assertEqual(self.answer(request(origin="https://hub.example.com")), b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(self.answer(request(origin="null")), b"HTTP/1.1 403 origin 'null' is not allowed")
        line = self.answer(request(origin="https://evil.example"))
        self.assertTrue(line.startswith(b"HTTP/1.1 403 origin 'https://evil.example' is not allowed"), line)
        self.assertEqual(self.answer(request()), b"HTTP/1.1 101 Switching Protocols")  # no Origin: not a browser

    def test_factory_and_service_read_allowed_origins_alike(self) -> None:
        """HubServerFactory and HubService turn the default and a list of strings into the same OriginPolicy."""
        for given in ((), ["same-host", "https://app.example.com:443"], ["*"]):
            factory = HubServerFactory([EchoHub], clock=Clock(), allowed_origins=given)
            service = HubService([EchoHub], clock=Clock(), allowed_origins=given)
            policies = [factory.allowed_origins, service.factory.allowed_origins]
            for policy in policies:
                self.assertIsInstance(policy, OriginPolicy)
            self.assertEqual(
                [(p.allow_any, p.same_host, p.origins) for p in policies if isinstance(p, OriginPolicy)],
                [(OriginPolicy(given).allow_any, OriginPolicy(given).same_host, OriginPolicy(given).origins)] * 2,
            )
        self.assertEqual(OriginPolicy(["https://app.example.com:443"]).origins, frozenset({"https://app.example.com"}))

    def test_a_bad_origin_in_the_list_is_refused_at_construction(self) -> None:
        """A list entry that is not an origin is a HubArgumentError when the factory is built, not a silent mismatch."""
        with self.assertRaises(HubArgumentError) as raised:
            HubServerFactory([EchoHub], clock=Clock(), allowed_origins=["app.example.com"])
        self.assertIn("'app.example.com'", str(raised.exception))

    def test_none_is_deprecated_and_allows_any(self) -> None:
        """allowed_origins=None (once a bare factory's "any origin") still allows any, with a DeprecationWarning naming ["*"]."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = self.answer(request(origin="null"), allowed_origins=None)
        self.assertEqual(line, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual([w.category for w in caught], [DeprecationWarning])
        self.assertIn('allowed_origins=["*"]', str(caught[0].message))
        self.assertEqual(caught[0].filename, __file__)

    def test_same_host_origin_still_passes(self) -> None:
        """A browser on the same host still connects under the same-host policy."""
        line = self.answer(request(origin="https://hub.example.com"), allowed_origins=OriginPolicy())
        self.assertEqual(line, b"HTTP/1.1 101 Switching Protocols")


class AllowedHostsTests(HandshakeChecks):
    def test_rebinding_host_refused(self) -> None:
        """A DNS-rebinding request (Host and Origin both the attacker's name) is refused with 400."""
        data = request(host="evil.example:8080", origin="http://evil.example:8080")
        self.assertEqual(self.answer(data, allowed_origins=OriginPolicy()), b"HTTP/1.1 101 Switching Protocols")
        line = self.answer(data, allowed_origins=OriginPolicy(), allowed_hosts=["hub.example.com"])
        self.assertEqual(line, b"HTTP/1.1 400 host 'evil.example:8080' is not allowed")

    def test_listed_host_passes(self) -> None:
        """A request for a listed host name, any port, connects."""
        line = self.answer(request(host="HUB.example.com:8443"), allowed_hosts=["hub.example.com"])
        self.assertEqual(line, b"HTTP/1.1 101 Switching Protocols")

    def test_patterns(self) -> None:
        """Exact names, .domain for a domain and its subdomains, addresses with or without port, and *."""
        hosts = AllowedHosts(["hub.example.com", ".example.org", "127.0.0.1", "[::1]"])
        allowed = ["hub.example.com", "hub.example.com:80", "example.org", "a.b.example.org:1",
                   "127.0.0.1:8080", "[::1]:8080", "hub.example.com."]
        refused = ["example.com", "xexample.org", "evil.example", "127.0.0.2", "", None]
        self.assertEqual([h for h in allowed if not hosts.allows(h)], [])
        self.assertEqual([h for h in refused if hosts.allows(h)], [])
        self.assertTrue(AllowedHosts(["*"]).allows("anything"))

    def test_bad_values(self) -> None:
        """A value with a port, path or scheme, or an empty list, is a ValueError naming the value."""
        for bad in (["hub.example.com:8080"], ["https://hub.example.com"], ["a/b"], []):
            with self.assertRaises(ValueError):
                AllowedHosts(bad)
