"""One vocabulary: clock= everywhere (reactor= deprecated but working), local misuse apart from remote errors."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import (
    ConnectTimeoutError,
    HeartbeatConfigurationError,
    HeartbeatPolicy,
    HubArgumentError,
    HubClientOptions,
    HubError,
    HubServerFactory,
    HubService,
    HubStateError,
    HubUsageError,
    OriginPolicy,
    ProtocolError,
    ReconnectingHubClient,
    TwistedHubError,
    connect,
    full_jitter_policy,
)
from twisted_hub._connection import ClientConnection, receiver_call_payload
from twisted_hub.demo import EchoHub
from twisted_hub.redis import parse_redis_url
from twisted_hub.testing import HubTestServer
from twisted_hub.types import HubClientFactory


def deprecation_message(qualified_name: str) -> str:
    return f"The 'reactor' parameter to {qualified_name} was deprecated in twisted_hub 0.1.0; please use clock instead"


class ReactorKeywordTests(SynchronousTestCase):
    """reactor= still works for one release, with a DeprecationWarning naming clock= as its replacement."""

    def assert_deprecated(self, offender: Any, qualified_name: str) -> None:
        warnings = self.flushWarnings([offender])
        self.assertEqual([(w["category"], w["message"]) for w in warnings], [
            (DeprecationWarning, deprecation_message(qualified_name)),
        ])

    def test_server_factory(self) -> None:
        """HubServerFactory(reactor=) warns and keeps time on that reactor, as clock= does."""
        clock = Clock()
        factory = HubServerFactory([EchoHub], reactor=clock)
        self.assert_deprecated(self.test_server_factory, "twisted_hub._server.HubServerFactory.__init__")
        self.assertIs(factory.clock, clock)
        self.assertIs(factory.limits.clock, clock)

    def test_client_factory(self) -> None:
        """HubClientFactory(reactor=) warns and keeps time on that reactor, as clock= does."""
        clock = Clock()
        factory = HubClientFactory("ws://127.0.0.1/hub/echo", reactor=clock)
        self.assert_deprecated(self.test_client_factory, "twisted_hub._client.HubClientFactory.__init__")
        self.assertIs(factory.clock, clock)

    def test_clock_is_not_deprecated(self) -> None:
        """clock= (the one name) raises no warning."""
        HubServerFactory([EchoHub], clock=Clock())
        HubClientFactory("ws://127.0.0.1/hub/echo", clock=Clock())
        self.assertEqual(self.flushWarnings(), [])

    def test_connect_default_endpoint_on_the_clock(self) -> None:
        """Without endpoint=, connect(clock=) connects through that reactor, and times out on it."""
        reactor = MemoryReactorClock()
        connecting = connect("ws://127.0.0.1:9123/hub", "echo", clock=reactor, timeout=5)
        self.assertEqual([(host, port) for host, port, *_ in reactor.tcpClients], [("127.0.0.1", 9123)])
        reactor.advance(5)
        self.assertEqual(self.failureResultOf(connecting, ConnectTimeoutError).value.stage, "connection")  # type: ignore[attr-defined]

    def test_connect(self) -> None:
        """connect(reactor=) warns, and the handshake timeout still runs on that reactor."""
        server = HubTestServer([EchoHub])
        connecting = connect("ws://127.0.0.1/hub", "echo", reactor=server.clock, endpoint=server.endpoint(), timeout=3)
        self.assert_deprecated(self.test_connect, "twisted_hub._client.connect")
        server.flush()
        client = self.successResultOf(connecting)
        self.assertIs(client.factory.clock, server.clock)
        answer = client.call("echo", "hi")
        server.flush()
        self.assertEqual(self.successResultOf(answer), "hi")

    def test_reconnecting_client(self) -> None:
        """ReconnectingHubClient(reactor=) warns and retries on that reactor."""
        server = HubTestServer([EchoHub])
        client = ReconnectingHubClient(
            "ws://127.0.0.1/hub", "echo", endpoint=server.endpoint(), reactor=server.clock,
            retry_policy=lambda attempt: 2.0,
        )
        self.assert_deprecated(self.test_reconnecting_client, "twisted_hub._reconnect.ReconnectingHubClient.__init__")
        client.start()
        server.flush()
        self.assertEqual(client.connections, 1)
        server.connections[-1].drop()
        server.advance(1.9)
        self.assertEqual(client.connections, 1)
        server.advance(0.1)
        server.flush()
        self.assertEqual(client.connections, 2)
        client.stop()
        server.flush()


class LocalMisuseTests(SynchronousTestCase):
    """The caller's mistakes raise HubUsageError kinds, apart from the peer's (ProtocolError, HubError)."""

    def test_hierarchy(self) -> None:
        """Usage errors share TwistedHubError with the remote ones but are neither ProtocolError nor HubError."""
        for kind in (HubArgumentError, HubStateError, HeartbeatConfigurationError):
            self.assertTrue(issubclass(kind, HubUsageError), kind)
            self.assertTrue(issubclass(kind, TwistedHubError), kind)
            self.assertFalse(issubclass(kind, (ProtocolError, HubError)), kind)
        self.assertFalse(issubclass(ProtocolError, HubUsageError))
        self.assertFalse(issubclass(HubError, HubUsageError))

    def test_bad_arguments(self) -> None:
        """Representative bad arguments raise HubArgumentError, still a ValueError / TypeError as before."""
        misuses: list[tuple[str, Any, type[Exception]]] = [
            ("no hub", lambda: HubServerFactory([]), ValueError),
            ("not a hub", lambda: HubServerFactory([object()]), TypeError),
            ("zero limit", lambda: HubServerFactory([EchoHub], max_pending_calls=0), ValueError),
            ("hubs and factory", lambda: HubService([EchoHub], factory=HubServerFactory([EchoHub], clock=Clock())), TypeError),
            ("http URL", lambda: connect("http://127.0.0.1/hub", clock=Clock()), ValueError),
            ("bad backoff", lambda: full_jitter_policy(initial_delay=0), ValueError),
            ("bad origin", lambda: OriginPolicy(["example.com/path"]), ValueError),
            ("bad Redis URL", lambda: parse_redis_url("http://127.0.0.1"), ValueError),
            ("zero heartbeat", lambda: HeartbeatPolicy(interval=0), ValueError),
            ("zero messages per frame", lambda: HubClientOptions(max_messages_per_frame=0), ValueError),
            ("oversized receiver call", lambda: receiver_call_payload("said", ["x" * 2000], None, 1000), ValueError),
            ("oversized call", lambda: ClientConnection().invoke(None, "say", ["x" * 2000], None, 1000), ValueError),
        ]
        for name, misuse, builtin in misuses:
            with self.subTest(name):
                error = self.assertRaises(HubArgumentError, misuse)
                self.assertIsInstance(error, builtin)

    def test_wrong_time(self) -> None:
        """Asking a service for its ports before it started raises HubStateError, still a RuntimeError."""
        service = HubService([EchoHub], ["tcp:0"], clock=Clock())
        error = self.assertRaises(HubStateError, service.listening_ports)
        self.assertIsInstance(error, RuntimeError)
        self.assertIn("not started", str(error))
