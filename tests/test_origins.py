"""
Origin and Host checks of the opening handshake, on a Clock: "Origin: null"
and invalid origins are refused with 403 (as docs/protocol.md says), and the
allowed-hosts list refuses DNS-rebinding requests with 400.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import HubServerFactory, OriginPolicy
from twisted_hub.demo import EchoHub
from twisted_hub.types import AllowedHosts

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
        """With every origin allowed (a bare factory's default), 'Origin: null' connects."""
        self.assertEqual(self.answer(request(origin="null")), b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(
            self.answer(request(origin="null"), allowed_origins=OriginPolicy(["*"])),
            b"HTTP/1.1 101 Switching Protocols",
        )

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
