"""One vocabulary: clock= everywhere (reactor= deprecated but working), local misuse apart from remote errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import twisted_hub
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
    ProtocolError,
    ReconnectingHubClient,
    ResumePolicy,
    TwistedHubError,
    connect,
    full_jitter_policy,
)
from twisted_hub._core.connection import ClientConnection, receiver_call_payload
from twisted_hub.demo import EchoHub
from twisted_hub.redis import parse_redis_url
from twisted_hub.testing import HubTestServer
from twisted_hub.types import HubClientFactory, OriginPolicy


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
        self.assert_deprecated(self.test_server_factory, "twisted_hub._twisted.server.HubServerFactory.__init__")
        self.assertIs(factory.clock, clock)
        self.assertIs(factory.limits.clock, clock)

    def test_client_factory(self) -> None:
        """HubClientFactory(reactor=) warns and keeps time on that reactor, as clock= does."""
        clock = Clock()
        factory = HubClientFactory("ws://127.0.0.1/hub/echo", reactor=clock)
        self.assert_deprecated(self.test_client_factory, "twisted_hub._twisted.client.HubClientFactory.__init__")
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
        self.assert_deprecated(self.test_connect, "twisted_hub._twisted.client.connect")
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
        self.assert_deprecated(self.test_reconnecting_client, "twisted_hub._twisted.reconnect.ReconnectingHubClient.__init__")
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
            ("zero resume window", lambda: ResumePolicy(window=0), ValueError),
            ("negative resume buffer", lambda: ResumePolicy(buffer_bytes=-1), ValueError),
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


#: The raise sites of exceptions that are not TwistedHubErrors, each with its reason:
#: (file under twisted_hub/, the function raising it -- "*" for any in that file --,
#: the exception's name).  Any other raise of a class outside the TwistedHubError
#: tree fails RaiseSiteTests: docs/api.md promises every exception is one.
NOT_OURS = {
    # Python's protocols: a module's or an object's __getattr__, abstract methods, iteration.
    ("__init__.py", "__getattr__", "AttributeError"): "PEP 562: an unknown name",
    ("types.py", "__getattr__", "AttributeError"): "PEP 562: an unknown name",
    ("_core/deprecate.py", "moved_name", "AttributeError"): "PEP 562, for the package's __getattr__",
    ("__main__.py", "_Printer.__getattr__", "AttributeError"): "attribute protocol of the CLI's printer",
    ("_core/calls.py", "*", "NotImplementedError"): "abstract method",
    ("_core/client_session.py", "*", "NotImplementedError"): "abstract method",
    ("_core/connection.py", "*", "NotImplementedError"): "abstract method",
    ("_core/streams.py", "*", "StopAsyncIteration"): "the end of an async iterator",
    # Internal, caught where they are raised: never reach a caller.
    ("_backplane/wire.py", "*", "MalformedMessage"): "the backplane decoder's; the inbox counts it (bad_messages)",
    ("_backplane/wire.py", "*", "RejectedMessage"): "the backplane decoder's; the inbox counts it (rejected)",
    ("_twisted/server.py", "*", "ConnectionDeny"): "autobahn's way to refuse an opening handshake (an HTTP status)",
    ("__main__.py", "*", "ValueError"): "the CLI's argument parsing; caught and printed as a usage line",
    # Internal classes' invariants: ResumePolicy (public) refuses bad values first, with HubArgumentError.
    ("_core/resume.py", "_KeptMessages.__init__", "ValueError"): "internal; sized from a checked ResumePolicy",
    ("_core/replay_log.py", "BroadcastLog.__init__", "ValueError"): "internal; sized from a checked ResumePolicy",
    ("_core/replay_log.py", "BroadcastLog.entries", "ValueError"): "internal; a log settles its runs before it forgets entries",
    ("_core/resume.py", "ReceiveWindow.__init__", "ValueError"): "internal; sized from a checked ResumePolicy",
    ("_core/resume.py", "CallDeduplicator.__init__", "ValueError"): "internal; sized from a checked ResumePolicy",
    ("_core/resume.py", "SessionToken.__init__", "ValueError"): "internal; the decoder checks a token's size first",
    ("_core/resume.py", "ClientResumeState.request", "ValueError"): "internal; asked only once a session was granted",
    # twistd's command line: its usage errors are twistd's UsageError, its exit a SystemExit.
    ("tap.py", "*", "HintedUsageError"): "twistd's UsageError, printed by twistd",
    ("tap.py", "*", "SystemExit"): "twistd's exit with a message",
    ("_ops/loading.py", "*", "HintedUsageError"): "twistd's UsageError (twistd hub, the CLI)",
    ("_ops/workers.py", "*", "WorkersUnavailable"): "tap turns it into twistd's UsageError",
    ("_ops/workers.py", "*", "CannotListenError"): "Twisted's own, as from any listenTCP",
    ("_ops/workers.py", "WorkerSupervisor.__init__", "ValueError"): "internal; twistd hub checks --workers first",
    # A test helper's failed expectation is a test failure.
    ("testing.py", "*", "AssertionError"): "a failed expectation in the user's test",
}


def _raise_sites() -> set[tuple[str, str, str]]:
    """(file, function, exception name) of every C{raise Name(...)} / C{raise Name} in twisted_hub/."""
    import ast
    from pathlib import Path

    package = Path(twisted_hub.__file__).parent
    sites = set()

    class Visitor(ast.NodeVisitor):
        def __init__(self, file: str) -> None:
            self.file = file
            self.scope: list[str] = []

        def scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            self.scope.append(node.name)
            self.generic_visit(node)
            self.scope.pop()

        visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = scoped

        def visit_Raise(self, node: ast.Raise) -> None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(raised, ast.Name) and raised.id[:1].isupper():
                sites.add((self.file, ".".join(self.scope), raised.id))

    for path in package.rglob("*.py"):
        Visitor(path.relative_to(package).as_posix()).visit(ast.parse(path.read_text(encoding="utf-8")))
    return sites


class RaiseSiteTests(SynchronousTestCase):
    def test_every_raise_is_a_twisted_hub_error_or_listed(self) -> None:
        """
        Every class twisted-hub raises (found in the source) is a
        TwistedHubError, but for the listed sites, each with its reason
        (Python's protocols, internal exceptions caught where raised, twistd's
        command line): a new C{raise ValueError(...)} fails here.
        """
        import importlib

        from twisted_hub._core.base_error import TwistedHubError as Base

        for path in Path(twisted_hub.__file__).parent.rglob("*.py"):
            parts = path.relative_to(Path(twisted_hub.__file__).parent.parent).with_suffix("").parts
            importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        ours: set[str] = set()
        pending: list[type[BaseException]] = [Base]
        while pending:
            cls = pending.pop()
            ours.add(cls.__name__)
            pending += cls.__subclasses__()
        sites = {site for site in _raise_sites() if site[2] not in ours}
        unlisted = sorted(
            site for site in sites
            if site not in NOT_OURS and (site[0], "*", site[2]) not in NOT_OURS
        )
        self.assertEqual(unlisted, [], "raise a TwistedHubError (HubArgumentError, HubStateError...), or list the site")
        stale = sorted(
            key for key in NOT_OURS
            if not any(s[0] == key[0] and s[2] == key[2] and key[1] in ("*", s[1]) for s in sites)
        )
        self.assertEqual(stale, [], "listed sites that raise nothing any more")
