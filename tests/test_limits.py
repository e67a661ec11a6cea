"""
Connection limits on a Clock: the opening-handshake deadline (from accept, not
reset by trickled bytes) and the caps in total and per peer address, on a bare
HubServerFactory and behind twisted.web through a ConnectionGuard; the
rate-limited log lines.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_hub import ConnectionGuard, HubResource, HubServerFactory
from twisted_hub._twisted.limits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    ConnectionLimits,
    address_key,
)
from twisted_hub.demo import EchoHub

REQUEST = (
    b"GET /hub/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: twisted-hub.v1\r\n\r\n"
)


def peer(host: str = "192.0.2.1", port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class _Transport(StringTransport):
    """A StringTransport as lenient as TCP: unregistering no producer, resuming after an abort."""

    def unregisterProducer(self) -> None:
        self.producer = None

    def resumeProducing(self) -> None:
        """Like TCP, resuming an aborted connection does nothing."""


class Accepted:
    """One connection accepted by a server factory, on a StringTransport."""

    def __init__(self, factory: Any, address: IPv4Address | IPv6Address) -> None:
        self.protocol = factory.buildProtocol(address)
        self.transport = _Transport(peerAddress=address)
        if self.protocol is not None:
            self.transport.protocol = self.protocol  # as a TCP transport has
            self.protocol.makeConnection(self.transport)

    @property
    def refused(self) -> bool:
        return self.protocol is None or (self.transport.disconnecting and not self.transport.value())

    @property
    def closed(self) -> bool:
        return self.protocol is None or bool(self.transport.disconnecting)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def lose(self) -> None:
        """The connection ends (what the reactor does after a close)."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


class LimitsTestBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def warnings(self) -> list[str]:
        events: list[LogEvent] = [e for e in self.logs if e.get("limit_kind")]
        return [formatEvent(e) for e in events]

    def factory(self, **options: Any) -> HubServerFactory:
        options.setdefault("hello_timeout", 600)
        return HubServerFactory([EchoHub], clock=self.clock, **options)


class HandshakeDeadlineTests(LimitsTestBase):
    def test_trickled_bytes_do_not_extend_the_deadline(self) -> None:
        """A request trickled one byte every 2 s is aborted handshake_timeout after accept, mid-request."""
        factory = self.factory(handshake_timeout=10)
        conn = Accepted(factory, peer())
        for byte in REQUEST[:5]:
            self.clock.advance(2 - 0.001 if byte == REQUEST[4] else 2)
            if not conn.closed:
                conn.send(bytes([byte]))
        self.assertFalse(conn.closed)  # 9.999 s after accept, 5 bytes in
        self.clock.advance(0.001)
        self.assertTrue(conn.closed)
        self.assertNotIn(b"HTTP/1.1", conn.transport.value())
        (line,) = self.warnings()
        self.assertIn("did not finish the WebSocket opening handshake within 10 s", line)
        self.assertIn("192.0.2.1", line)

    def test_finished_handshake_stops_the_deadline(self) -> None:
        """A connection whose upgrade completed in time stays open past the deadline."""
        factory = self.factory(handshake_timeout=10)
        conn = Accepted(factory, peer())
        conn.send(REQUEST)
        self.assertTrue(conn.transport.value().startswith(b"HTTP/1.1 101"))
        self.clock.advance(60)
        self.assertFalse(conn.closed)
        self.assertEqual(self.warnings(), [])

    def test_silent_connection_is_aborted(self) -> None:
        """A connection that never sends a byte is aborted at the deadline (the default the README states)."""
        documented = _readme_limit("accept to end of the WebSocket upgrade")
        self.assertEqual(f"{DEFAULT_HANDSHAKE_TIMEOUT:g} s", documented)
        conn = Accepted(self.factory(), peer())
        self.clock.advance(9.9)
        self.assertFalse(conn.closed)
        self.clock.advance(0.1)
        self.assertTrue(conn.closed)

    def test_deadline_through_guard(self) -> None:
        """Behind a guarded Site, a trickled request is aborted at the deadline counted from accept."""
        factory = self.factory(handshake_timeout=5)
        root = Resource()
        root.putChild(b"hub", HubResource(factory))
        guard = ConnectionGuard(Site(root, reactor=self.clock), factory.limits)
        conn = Accepted(guard, peer())
        for byte in REQUEST[:20]:
            if not conn.closed:
                conn.send(bytes([byte]))
            self.clock.advance(0.5)
        self.assertTrue(conn.closed)
        self.assertEqual(len(self.warnings()), 1)
        conn.lose()
        self.assertEqual(factory.limits.open_connections, 0)

    def test_upgrade_through_guard_outlives_the_deadline(self) -> None:
        """Behind a guarded Site, a completed upgrade is a hub connection and is not aborted."""
        factory = self.factory(handshake_timeout=5)
        root = Resource()
        root.putChild(b"hub", HubResource(factory))
        guard = ConnectionGuard(Site(root, reactor=self.clock), factory.limits)
        conn = Accepted(guard, peer())
        conn.send(REQUEST)
        self.assertIn(b"101 Switching Protocols", conn.transport.value())
        self.clock.advance(30)
        self.assertFalse(conn.closed)
        self.assertEqual(factory.limits.open_connections, 1)  # counted once, by the guard
        conn.lose()
        self.assertEqual((factory.limits.open_connections, factory.limits.per_address), (0, {}))

    def test_tls_client_on_a_plain_port_is_answered_at_once(self) -> None:
        """A TLS ClientHello on a plain guarded port gets a plain 400 and a close at once (the client fails fast)."""
        factory = self.factory(handshake_timeout=5)
        root = Resource()
        root.putChild(b"hub", HubResource(factory))
        guard = ConnectionGuard(Site(root, reactor=self.clock), factory.limits)
        conn = Accepted(guard, peer())
        conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32))
        answer = conn.transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertTrue(answer.endswith(b"This port speaks plain HTTP and ws://, not TLS: use http:// or ws:// URLs.\n"))
        self.assertTrue(conn.closed)
        conn.lose()
        self.assertEqual(factory.limits.open_connections, 0)

    def test_plain_http_through_guard_ends_at_the_deadline(self) -> None:
        """Behind the guard a plain HTTP request is answered, and the idle keep-alive connection closes at the deadline."""
        from twisted.web.static import Data

        factory = self.factory(handshake_timeout=5)
        root = Resource()
        root.putChild(b"", Data(b"status", "text/plain"))
        guard = ConnectionGuard(Site(root, reactor=self.clock), factory.limits)
        conn = Accepted(guard, peer())
        conn.send(b"GET / HTTP/1.1\r\nHost: hub.example.com\r\n\r\n")
        self.assertTrue(conn.transport.value().startswith(b"HTTP/1.1 200"))
        self.clock.advance(4.9)
        self.assertFalse(conn.closed)
        self.clock.advance(0.1)
        self.assertTrue(conn.closed)

    def test_bad_timeout_refused(self) -> None:
        """A handshake timeout that is not a finite positive number is a ValueError."""
        for bad in (0, -1, float("inf")):
            with self.assertRaises(ValueError):
                self.factory(handshake_timeout=bad)


class ConnectionCapTests(LimitsTestBase):
    def test_total_cap(self) -> None:
        """Over max_connections a new connection is closed at once, unanswered; a slot frees on close."""
        factory = self.factory(max_connections=2)
        first, second = Accepted(factory, peer("192.0.2.1")), Accepted(factory, peer("192.0.2.2"))
        third = Accepted(factory, peer("192.0.2.3"))
        self.assertEqual((first.closed, second.closed, third.refused), (False, False, True))
        third.lose()  # a refused connection's end releases nothing
        self.assertEqual(factory.limits.open_connections, 2)
        first.lose()
        fourth = Accepted(factory, peer("192.0.2.4"))
        self.assertFalse(fourth.closed)
        fourth.send(REQUEST)
        self.assertTrue(fourth.transport.value().startswith(b"HTTP/1.1 101"))
        (line,) = self.warnings()
        self.assertIn("maximum of 2 connections (max_connections", line)

    def test_per_address_cap(self) -> None:
        """Over max_connections_per_ip one address is refused while another still connects."""
        factory = self.factory(max_connections_per_ip=2)
        a = [Accepted(factory, peer("192.0.2.1", 40000 + n)) for n in range(3)]
        other = Accepted(factory, peer("192.0.2.9"))
        self.assertEqual([c.closed for c in a], [False, False, True])
        self.assertFalse(other.closed)
        self.assertEqual(factory.limits.per_address, {"192.0.2.1": 2, "192.0.2.9": 1})
        self.assertIn("192.0.2.1: it holds its maximum of 2 connections", self.warnings()[0])

    def test_refused_request_is_not_served(self) -> None:
        """A refused connection's request (if it arrives) runs no hub code and gets no 101."""
        factory = self.factory(max_connections=1)
        Accepted(factory, peer())
        refused = Accepted(factory, peer("192.0.2.2"))
        refused.send(REQUEST)
        self.assertNotIn(b"101", refused.transport.value())
        self.assertEqual(len(factory.hub_runtime("echo").connections), 0)

    def test_caps_through_guard(self) -> None:
        """The guard applies the factory's caps at accept: over the cap it builds no protocol at all."""
        factory = self.factory(max_connections=3, max_connections_per_ip=1)
        guard = ConnectionGuard(Site(Resource(), reactor=self.clock), factory.limits)
        first = Accepted(guard, peer("192.0.2.1"))
        self.assertIsNone(guard.buildProtocol(peer("192.0.2.1", 40001)))
        self.assertIsNotNone(first.protocol)
        Accepted(guard, peer("192.0.2.2"))
        Accepted(guard, peer("192.0.2.3"))
        self.assertIsNone(guard.buildProtocol(peer("192.0.2.4")))
        first.lose()
        self.assertIsNotNone(guard.buildProtocol(peer("192.0.2.4")))

    def test_unguarded_site_counts_upgrades(self) -> None:
        """On a Site without a guard, upgraded connections count; one over the cap is aborted, no 101, no hub."""
        factory = self.factory(max_connections=1)
        root = Resource()
        root.putChild(b"hub", HubResource(factory))
        site = Site(root, reactor=self.clock)
        first, second = Accepted(site, peer("192.0.2.1")), Accepted(site, peer("192.0.2.2"))
        first.send(REQUEST)
        self.assertIn(b"101 Switching Protocols", first.transport.value())
        second.send(REQUEST)
        self.assertTrue(second.closed)
        self.assertNotIn(b"101", second.transport.value())
        self.assertEqual(len(factory.hub_runtime("echo").connections), 1)
        self.assertEqual(factory.limits.open_connections, 1)

    def test_ipv6_counted_per_64(self) -> None:
        """IPv6 peers count per /64 network; IPv4-mapped addresses count as their IPv4 address."""
        self.assertEqual(address_key(IPv6Address("TCP", "2001:db8::1", 1)), "2001:db8::/64")
        self.assertEqual(address_key(IPv6Address("TCP", "2001:db8::ffff:2", 1)), "2001:db8::/64")
        self.assertEqual(address_key(IPv6Address("TCP", "2001:db8:0:1::1", 1)), "2001:db8:0:1::/64")
        self.assertEqual(address_key(IPv6Address("TCP", "::ffff:192.0.2.1", 1)), "192.0.2.1")
        self.assertIsNone(address_key(UNIXAddress(b"/run/hub.sock")))

    def test_unix_peers_count_in_total_only(self) -> None:
        """Peers without an address (UNIX sockets) count against the total cap only."""
        limits = ConnectionLimits(self.clock, max_connections=2, max_connections_per_ip=1)
        self.assertTrue(limits.admit(UNIXAddress(None)))
        self.assertTrue(limits.admit(UNIXAddress(None)))
        self.assertFalse(limits.admit(UNIXAddress(None)))
        self.assertEqual(limits.per_address, {})

    def test_no_caps(self) -> None:
        """None or 0 turns a cap off."""
        limits = ConnectionLimits(self.clock, max_connections=0, max_connections_per_ip=None)
        self.assertTrue(all(limits.admit(peer()) for _ in range(1000)))
        self.assertEqual(limits.open_connections, 1000)

    def test_defaults(self) -> None:
        """A factory's caps are the defaults the README's limits table states (read from it, not copied)."""
        total, per_ip = (int(n.replace(",", "")) for n in _readme_limit("connections in total / per IP address").split(" / "))
        factory = self.factory()
        self.assertEqual((factory.limits.max_connections, factory.limits.max_connections_per_ip), (total, per_ip))
        self.assertEqual((DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP), (total, per_ip))

    def test_bad_caps_refused(self) -> None:
        """A negative or non-integer cap is a ValueError."""
        for bad in ({"max_connections": -1}, {"max_connections_per_ip": 2.5}, {"max_connections": True}):
            with self.assertRaises(ValueError):
                self.factory(**bad)


class RateLimitedLogTests(LimitsTestBase):
    def test_one_line_per_interval_with_the_count_left_out(self) -> None:
        """A flood of refusals logs one line per 10 s per kind; the next line counts those left out."""
        limits = ConnectionLimits(self.clock, max_connections=1)
        limits.admit(peer())
        for _ in range(50):
            limits.admit(peer("192.0.2.2"))
        self.assertEqual(len(self.warnings()), 1)
        self.assertIn("0 more refused", self.warnings()[0])
        self.clock.advance(9.9)
        limits.admit(peer("192.0.2.2"))
        self.assertEqual(len(self.warnings()), 1)
        self.clock.advance(0.1)
        limits.admit(peer("192.0.2.2"))
        self.assertEqual(len(self.warnings()), 2)
        self.assertIn("50 more refused since the last message", self.warnings()[1])

    def test_kinds_are_limited_separately(self) -> None:
        """A flood of one kind of refusal does not hide the first line of another kind."""
        limits = ConnectionLimits(self.clock, max_connections=3, max_connections_per_ip=1)
        limits.admit(peer("192.0.2.1"))
        limits.admit(peer("192.0.2.1"))  # per address
        limits.admit(peer("192.0.2.2"))
        limits.admit(peer("192.0.2.3"))
        limits.admit(peer("192.0.2.4"))  # total
        self.assertEqual([e["limit_kind"] for e in self.logs if e.get("limit_kind")], ["per-ip", "total"])


def _readme_limit(name: str) -> str:
    """The default the README's "Limits (defaults)" table gives for the row C{name}."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = text[text.index("## Limits (defaults)"):]
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == name:
            return cells[1]
    raise AssertionError(f"no row {name!r} in the README's limits table")
