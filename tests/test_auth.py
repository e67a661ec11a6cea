"""
Authentication, authorization, token expiry and refresh, in memory on a
Clock (docs/auth.md).  Real sockets and processes: tests/test_auth_serving.py.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from twisted_hub import (
    DisconnectKind,
    ErrorCode,
    HandshakeError,
    Hub,
    HubArgumentError,
    HubClientOptions,
    HubError,
    ReconnectingHubClient,
    hub,
    method,
)
from twisted_hub._core.connection import ClientConnection
from twisted_hub._core.wire import Token, TokenResult, decode_frame, encode
from twisted_hub._hubs.auth import redact_uri, token_from_request
from twisted_hub.auth import (
    AuthenticationFailed,
    Credentials,
    User,
    anyone,
    authenticated,
    has_claim,
    redacting_log_formatter,
)
from twisted_hub.testing import HubTestServer
from twisted_hub.types import CloseCode, DisconnectReason

from .helpers.auth import STATUS, ExpiringAuthenticator, MatrixAuthenticator, WhoAmIHub, matrix


def outcome(server: HubTestServer, d: Deferred[Any]) -> Any:
    """What a Deferred ended with, after the server settled: its result, or its exception."""
    server.flush()
    ended: list[Any] = []
    d.addBoth(ended.append)
    assert ended, "no outcome yet"
    return ended[0].value if isinstance(ended[0], Failure) else ended[0]


def bearer(token: str) -> HubClientOptions:
    return HubClientOptions(access_token=token)


class _Request:
    """The parts of autobahn's ConnectionRequest that token_from_request reads."""

    def __init__(self, headers: dict[str, str] | None = None, protocols: list[str] | None = None,
                 params: dict[str, list[str]] | None = None) -> None:
        self.headers = headers or {}
        self.protocols = protocols or ["twisted-hub.v1"]
        self.params = params or {}


class TokenSourceTests(SynchronousTestCase):
    """Where a client may put its token, and what wins."""

    def test_header(self) -> None:
        """Authorization: Bearer T gives T (the scheme in any case)."""
        self.assertEqual(token_from_request(_Request({"authorization": "bearer abc.def"})), ("abc.def", "header"))  # type: ignore[arg-type]

    def test_subprotocol(self) -> None:
        """A twisted-hub.bearer.T subprotocol gives T (what a browser can send)."""
        request = _Request(protocols=["twisted-hub.v1", "twisted-hub.bearer.abc.def-_"])
        self.assertEqual(token_from_request(request), ("abc.def-_", "subprotocol"))  # type: ignore[arg-type]

    def test_query(self) -> None:
        """?access_token=T gives T."""
        self.assertEqual(token_from_request(_Request(params={"access_token": ["abc"]})), ("abc", "query"))  # type: ignore[arg-type]

    def test_order_and_none(self) -> None:
        """The header wins over the subprotocol, which wins over the query; other schemes are no token."""
        request = _Request({"authorization": "Bearer h"}, ["twisted-hub.bearer.p"], {"access_token": ["q"]})
        self.assertEqual(token_from_request(request), ("h", "header"))  # type: ignore[arg-type]
        request = _Request({"authorization": "Basic xyz"}, ["twisted-hub.bearer.p"], {"access_token": ["q"]})
        self.assertEqual(token_from_request(request), ("p", "subprotocol"))  # type: ignore[arg-type]
        self.assertEqual(token_from_request(_Request({"authorization": "Basic xyz"})), (None, None))  # type: ignore[arg-type]

    def test_each_source_reaches_the_authenticator(self) -> None:
        """Through the server, each source gives the authenticator the token and says where it was."""
        authenticator = ExpiringAuthenticator()
        server = HubTestServer([WhoAmIHub], authenticator=authenticator)
        header = server.connect("whoami", options=bearer("ann:never"))
        query = server.connect(path="/hub/whoami?access_token=bob%3Anever&x=1")
        subprotocol = server.connect("whoami", protocols=["twisted-hub.v1", "twisted-hub.bearer.cy:never"])
        for connection, name, source in ((header, "ann", "header"), (query, "bob", "query"), (subprotocol, "cy", "subprotocol")):
            client = outcome(server, connection.ready)
            self.assertEqual(outcome(server, client.call("whoami")), [name, {"source": source}])
        # the server selected our subprotocol, never the one carrying the token
        self.assertEqual(subprotocol.client.websocket_protocol_in_use, "twisted-hub.v1")


class RedactionTests(SynchronousTestCase):
    """A token in a URI never reaches an access log."""

    def test_redact_uri(self) -> None:
        """Only access_token's value is replaced; everything else is kept; URIs without one are untouched."""
        self.assertEqual(redact_uri(b"/hub/chat?x=1&access_token=s3cr%2Bt&y=2"), b"/hub/chat?x=1&access_token=REDACTED&y=2")
        self.assertEqual(redact_uri(b"/hub/chat?x=1"), b"/hub/chat?x=1")
        self.assertEqual(redact_uri(b"/hub/chat"), b"/hub/chat")

    def test_log_formatter(self) -> None:
        """The access-log line has neither the URI's token nor the Referer's; the rest is Twisted's combined format."""
        request = Request(DummyChannel())
        request.uri = b"/hub/chat?access_token=SECRET1"
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        request.code = 426
        request.requestHeaders.setRawHeaders(b"referer", [b"https://app.example/?access_token=SECRET2"])
        line = redacting_log_formatter("[01/Jan/2026:00:00:00 +0000]", request)
        self.assertNotIn("SECRET", line)
        self.assertIn('"GET /hub/chat?access_token=REDACTED HTTP/1.1"', line)
        self.assertIn('"https://app.example/?access_token=REDACTED"', line)
        self.assertEqual(request.uri, b"/hub/chat?access_token=SECRET1")  # the request itself is unchanged


class AuthenticatorMatrixTests(SynchronousTestCase):
    """Each kind of authenticator (sync, Deferred, async) x each outcome, on the in-memory server."""

    def setUp(self) -> None:
        self.authenticator = MatrixAuthenticator(delay=0.5)
        self.server = HubTestServer([WhoAmIHub], authenticator=self.authenticator, authentication_timeout=3)
        self.authenticator._clock = self.server.clock

    def check(self, kind: str, result: str) -> None:
        server = self.server
        open_before = server.factory.connection_count
        connection = server.connect("whoami", options=bearer(f"{kind}-{result}"))
        status = STATUS[result]
        if kind != "sync":
            self.assertNoResult(connection.ready)  # the upgrade waits for the authenticator
            server.advance(0.5 if result != "hang" else 2.9)
            if result == "hang":
                self.assertNoResult(connection.ready)
                server.advance(0.1)
        if status is None:
            client = outcome(server, connection.ready)
            self.assertEqual(outcome(server, client.call("whoami"))[0], f"{kind}-user")
            self.assertIsNotNone(connection.hub.connection.user)
            return
        error = outcome(server, connection.ready)
        self.assertIsInstance(error, HandshakeError)
        self.assertEqual(error.status, status)
        self.assertEqual(server.factory.connection_count, open_before)
        self.assertEqual(len(server.factory.hub_runtime("whoami").connections), open_before)
        if result == "raise":
            self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        if result == "hang":
            self.assertEqual(self.authenticator.cancelled, [f"{kind}-hang"])  # cancelled: an async one's finally ran

    def test_matrix(self) -> None:
        """Accepted connections get their user; refusals get 401/403/500/503 and register nothing."""
        for kind, result in matrix():
            with self.subTest(kind=kind, outcome=result):
                self.authenticator.cancelled.clear()
                self.check(kind, result)

    def test_no_token(self) -> None:
        """A request without a token is the authenticator's to judge (here: 401)."""
        error = outcome(self.server, self.server.connect("whoami").ready)
        self.assertEqual(error.status, 401)
        self.assertIsNone(self.authenticator.seen[-1].token)

    def test_returning_none_refuses_and_expired_refuses(self) -> None:
        """An authenticator that returns None refuses with 401, as does one returning an expired user."""
        results: list[Any] = [None, User("old", expires_at=5.0)]
        server = HubTestServer([WhoAmIHub], clock=Clock(), authenticator=lambda credentials: results.pop(0))
        server.clock.advance(10)
        first = outcome(server, server.connect("whoami").ready)
        second = outcome(server, server.connect("whoami").ready)
        self.assertEqual((first.status, first.reason), (401, "authentication required"))
        self.assertEqual((second.status, second.reason), (401, "token expired"))

    def test_client_gone_while_authenticating(self) -> None:
        """A connection lost while its authenticator runs cancels it; nothing opens afterwards."""
        connection = self.server.connect("whoami", options=bearer("async-hang"))
        connection.drop()
        self.assertIsInstance(outcome(self.server, connection.ready), HandshakeError)
        self.assertEqual(self.authenticator.cancelled, ["async-hang"])
        self.server.advance(5)
        self.assertEqual(self.server.factory.connection_count, 0)

    def test_on_connecting_sees_the_user(self) -> None:
        """on_connecting runs after the authenticator, with self.connection.user set, and may still refuse."""
        seen: list[Any] = []

        class Guarded(WhoAmIHub):
            hub_name = "guarded"

            def on_connecting(self, request: Any) -> None:
                seen.append(self.connection.user)
                if self.connection.user is not None and self.connection.user.id == "deferred-user":
                    from twisted_hub import RefuseConnection

                    raise RefuseConnection(429, "come back later")

        clock = Clock()
        server = HubTestServer([Guarded], clock=clock, authenticator=MatrixAuthenticator(clock, delay=0))
        self.assertEqual(outcome(server, server.connect("guarded", options=bearer("deferred-accept")).ready).status, 429)
        outcome(server, server.connect("guarded", options=bearer("sync-accept")).ready)
        self.assertEqual([user.id for user in seen], ["deferred-user", "sync-user"])

    def test_options_checked(self) -> None:
        """A non-callable authenticator or a bad deadline is refused when the server is built."""
        with self.assertRaises(HubArgumentError):
            HubTestServer([WhoAmIHub], authenticator="module:name")
        with self.assertRaises(HubArgumentError):
            HubTestServer([WhoAmIHub], authenticator=ExpiringAuthenticator(), authentication_timeout=0)


@hub("policies", authorize=authenticated)
class PolicyHub(Hub):
    """A hub whose methods need a user, one open to anyone, one admins only, one async policy."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @method
    def plain(self) -> str:
        self.log.append("plain")
        return "plain"

    @method(authorize=anyone)
    def public(self) -> str:
        return "public"

    @method(authorize=has_claim("role", "admin"))
    def admin(self) -> str:
        self.log.append("admin")
        return "admin"

    @method(authorize=lambda user, call: succeed(call.args == [user.id] if user else False))
    def mine(self, name: str) -> str:
        return f"yours, {name}"

    @method(authorize=has_claim("scope", "notes:write"))
    async def write(self) -> str:
        return "written"


@hub("open")
class OpenHub(Hub):
    """A hub that declares no policy at all."""

    @method
    def hello(self) -> str:
        return "hi"

    @method(authorize=anyone)
    def always(self) -> str:
        return "always"


class ClaimsAuthenticator:
    """Token NAME[,CLAIM=VALUE...]: that user with those claims; 'anon' is no user at all for open hubs."""

    def __call__(self, credentials: Credentials) -> User:
        name, *pairs = (credentials.token or "").split(",")
        if not name:
            raise AuthenticationFailed()
        claims: dict[str, Any] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            claims[key] = value.split("+") if "+" in value else value
        return User(name, claims)


class AuthorizationTests(SynchronousTestCase):
    """Policies per hub and per method, checked before the method runs."""

    def setUp(self) -> None:
        self.log: list[str] = []
        self.server = HubTestServer([partial(PolicyHub, self.log), OpenHub], authenticator=ClaimsAuthenticator())

    def call(self, token: str, method_name: str, *args: Any, hub_name: str = "policies") -> Any:
        client = outcome(self.server, self.server.connect(hub_name, options=bearer(token)).ready)
        return outcome(self.server, client.call(method_name, *args))

    def test_hub_policy_applies_to_methods_without_their_own(self) -> None:
        """An authenticated user may call the hub's plain method."""
        self.assertEqual(self.call("ann", "plain"), "plain")

    def test_method_policy_replaces_the_hub_policy(self) -> None:
        """A method's own policy is the one checked: a claim the hub never asked for, or anyone."""
        error = self.call("ann,role=user", "admin")
        self.assertEqual((error.code, error.message), (ErrorCode.FORBIDDEN, "not allowed to call policies.admin"))
        self.assertEqual(self.log, [])  # the method never ran
        self.assertEqual(self.call("bob,role=admin", "admin"), "admin")
        self.assertEqual(self.call("cy,role=user+admin", "admin"), "admin")
        self.assertEqual(self.call("dee,scope=notes:read notes:write", "write"), "written")
        self.assertEqual(self.call("dee,scope=notes:read", "write").code, ErrorCode.FORBIDDEN)
        self.assertEqual(self.call("eve", "public"), "public")

    def test_policy_sees_the_call(self) -> None:
        """A Deferred policy over the call's arguments: only your own name passes."""
        self.assertEqual(self.call("ann", "mine", "ann"), "yours, ann")
        self.assertEqual(self.call("ann", "mine", "bob").code, ErrorCode.FORBIDDEN)

    def test_async_policy_and_errors(self) -> None:
        """An async def policy is awaited; a HubError it raises is the answer; anything else is internal (logged)."""
        async def slow_yes(user: User | None, call: Any) -> bool:
            return True

        def refuses(user: User | None, call: Any) -> bool:
            raise HubError("quota", "out of quota", {"left": 0})

        def crashes(user: User | None, call: Any) -> bool:
            raise ZeroDivisionError("policy bug")

        @hub("kinds")
        class KindsHub(Hub):
            @method(authorize=slow_yes)
            def a(self) -> int:
                return 1

            @method(authorize=refuses)
            def b(self) -> int:
                return 2

            @method(authorize=crashes)
            def c(self) -> int:
                return 3

        server = HubTestServer([KindsHub], authenticator=ClaimsAuthenticator())
        client = outcome(server, server.connect("kinds", options=bearer("ann")).ready)
        self.assertEqual(outcome(server, client.call("a")), 1)
        self.assertEqual(outcome(server, client.call("b")), HubError("quota", "out of quota", {"left": 0}))
        self.assertEqual(outcome(server, client.call("c")).code, ErrorCode.INTERNAL)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_without_authenticator_the_user_is_none(self) -> None:
        """With no authenticator, user is None: 'authenticated' refuses, 'anyone' and undeclared methods pass."""
        server = HubTestServer([partial(PolicyHub, self.log), OpenHub])
        policies = outcome(server, server.connect("policies").ready)
        self.assertEqual(outcome(server, policies.call("plain")).code, ErrorCode.FORBIDDEN)
        self.assertEqual(outcome(server, policies.call("public")), "public")
        plain = outcome(server, server.connect("open").ready)
        self.assertEqual(outcome(server, plain.call("hello")), "hi")

    def test_deny_by_default(self) -> None:
        """deny_by_default refuses methods that declare no policy (nor their hub); declared ones decide."""
        server = HubTestServer([partial(PolicyHub, self.log), OpenHub], authenticator=ClaimsAuthenticator(),
                               deny_by_default=True)
        client = outcome(server, server.connect("open", options=bearer("ann")).ready)
        error = outcome(server, client.call("hello"))
        expected = (ErrorCode.FORBIDDEN, "not allowed to call open.hello (no policy allows it)")
        self.assertEqual((error.code, error.message), expected)
        self.assertEqual(outcome(server, client.call("always")), "always")
        guarded = outcome(server, server.connect("policies", options=bearer("ann")).ready)
        self.assertEqual(outcome(server, guarded.call("plain")), "plain")  # the hub's policy

    def test_notification_refused_is_dropped(self) -> None:
        """A refused notification does not run (nothing is answered; a line is logged)."""
        from twisted_hub import set_log_level
        from twisted_hub._support.logging import get_log_level

        previous = get_log_level()
        set_log_level("debug")  # a call a hub refused is logged at debug (docs/operations.md)
        self.addCleanup(set_log_level, previous)
        client = outcome(self.server, self.server.connect("policies", options=bearer("ann,role=user")).ready)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            client.notify("admin")
            self.server.flush()
        finally:
            globalLogPublisher.removeObserver(events.append)
        self.assertEqual(self.log, [])
        self.assertTrue(any("forbidden" in str(e.get("code", "")) for e in events))

    def test_forbidden_counted_in_metrics(self) -> None:
        """A refused call is counted under outcome="forbidden"."""
        server = HubTestServer([partial(PolicyHub, self.log)], authenticator=ClaimsAuthenticator(), metrics=True)
        client = outcome(server, server.connect("policies", options=bearer("ann")).ready)
        outcome(server, client.call("admin"))
        value = server.factory.metrics.registry.get_sample_value(  # type: ignore[union-attr]
            "twisted_hub_calls_total", {"hub": "policies", "method": "admin", "outcome": "forbidden"}
        )
        self.assertEqual(value, 1.0)

    def test_bad_policy_is_a_usage_error(self) -> None:
        """authorize= takes a callable: anything else fails where it is declared."""
        with self.assertRaises(HubArgumentError):
            method(authorize="admin")  # type: ignore[arg-type]
        with self.assertRaises(HubArgumentError):
            hub("x", authorize=42)  # type: ignore[arg-type]


class ExpiryTests(SynchronousTestCase):
    """A connection whose token expires is closed with 4005, unless a fresh token came."""

    def setUp(self) -> None:
        self.authenticator = ExpiringAuthenticator()
        self.server = HubTestServer([WhoAmIHub], authenticator=self.authenticator)

    def test_expiry_without_refresh(self) -> None:
        """At the token's expiry, not before, the server closes with 4005; the client reports token-expired."""
        connection = self.server.connect("whoami", options=bearer("ann:100"))
        client = outcome(self.server, connection.ready)
        self.assertEqual(client.core.welcome.expires_in, 100.0)
        self.server.advance(99.9)
        self.assertTrue(client.is_connected)
        self.server.advance(0.1)
        reason = client.disconnect_reason
        expected = (DisconnectKind.TOKEN_EXPIRED, CloseCode.TOKEN_EXPIRED, "token expired")
        self.assertEqual((reason.kind, reason.code, reason.message), expected)
        server_reason = connection.server_protocol.disconnect_reason
        self.assertEqual((server_reason.kind, server_reason.locally), (DisconnectKind.TOKEN_EXPIRED, True))

    def test_refresh_keeps_the_connection(self) -> None:
        """A provider's fresh token, asked before expiry, moves the expiry; the user is the new token's."""
        tokens = iter(["ann:100", "ann:250", "ann:never"])
        connection = self.server.connect("whoami", options=HubClientOptions(access_token=lambda: next(tokens)))
        client = outcome(self.server, connection.ready)
        self.server.advance(79.9)
        self.assertEqual(self.authenticator.tokens, ["ann:100"])
        self.server.advance(0.1)  # 80 % of 100 s
        self.assertEqual(self.authenticator.tokens, ["ann:100", "ann:250"])
        self.assertEqual(connection.hub.connection.user, User("ann", {"source": "refresh"}, 250.0))
        self.assertAlmostEqual(client.session.tokens.expires_at, 250.0)
        self.server.advance(135.9)  # 170 s left at 80: asked again 136 s later (170 - min(60, 0.2 * 170))
        self.assertEqual(self.authenticator.tokens, ["ann:100", "ann:250"])
        self.server.advance(0.1)
        self.assertEqual(self.authenticator.tokens, ["ann:100", "ann:250", "ann:never"])
        self.server.advance(10_000)
        self.assertTrue(client.is_connected)
        self.assertEqual(client.session.tokens.refreshed, 2)

    def test_refresh_refused_keeps_the_old_token_then_expires(self) -> None:
        """A refused fresh token is answered with its error; the old token stands and expires with 4005."""
        tokens = iter(["ann:100", "garbage", "garbage", "garbage", "garbage", "garbage", "garbage", "garbage"])
        connection = self.server.connect("whoami", options=HubClientOptions(access_token=lambda: next(tokens)))
        client = outcome(self.server, connection.ready)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            self.server.advance(80)
        finally:
            globalLogPublisher.removeObserver(events.append)
        refused = [e for e in events if e.get("code") == ErrorCode.UNAUTHENTICATED and e["log_level"] == LogLevel.warn]
        self.assertEqual(len(refused), 1)
        self.assertEqual(connection.hub.connection.user.expires_at, 100.0)
        self.server.advance(20)  # retries at 90, 95, 97.5 ... each refused, then the expiry
        self.assertEqual(client.disconnect_reason.kind, DisconnectKind.TOKEN_EXPIRED)

    def test_refresh_for_another_user_is_forbidden(self) -> None:
        """A fresh token must name the connection's user: another one's is refused with forbidden."""
        connection = self.server.connect("whoami", options=bearer("ann:100"))
        client = outcome(self.server, connection.ready)
        answers: list[TokenResult] = []
        original = client.session.tokens.answered
        client.session.tokens.answered = lambda answer, now: (answers.append(answer), original(answer, now))  # type: ignore[method-assign]
        client.session.core.send_token("mallory:1000")
        client.session.flush()
        self.server.flush()
        self.assertEqual(answers, [TokenResult(1, 100.0, ErrorCode.FORBIDDEN, "the fresh token is for another user")])
        self.assertEqual(connection.hub.connection.user.id, "ann")

    def test_old_client_is_closed_at_expiry(self) -> None:
        """A client with a fixed token (no provider) cannot refresh: it is closed at expiry, as an old client is."""
        connection = self.server.connect("whoami", options=bearer("ann:30"))
        client = outcome(self.server, connection.ready)
        self.assertNotIn("token-refresh", connection.server_protocol.core.peer_capabilities)
        self.server.advance(30)
        self.assertEqual(client.disconnect_reason.kind, DisconnectKind.TOKEN_EXPIRED)

    def test_token_message_to_a_server_without_authenticator_is_a_protocol_error(self) -> None:
        """Kind 13 is only for a server that announced token-refresh: others close with 4002."""
        server = HubTestServer([WhoAmIHub])
        connection = server.connect("whoami", options=HubClientOptions(access_token=lambda: "x"))
        client = outcome(server, connection.ready)
        self.assertNotIn("token-refresh", client.core.peer_capabilities)
        client.session.core.send_token("x")
        client.session.flush()
        server.flush()
        self.assertEqual(client.disconnect_reason.code, CloseCode.PROTOCOL_ERROR)

    def test_refresh_capability_negotiated(self) -> None:
        """The server announces token-refresh when it authenticates; a client when it has a provider."""
        connection = self.server.connect("whoami", options=HubClientOptions(access_token=lambda: "ann:never"))
        client = outcome(self.server, connection.ready)
        self.assertIn("token-refresh", client.core.peer_capabilities)
        self.assertIn("token-refresh", connection.server_protocol.core.peer_capabilities)
        self.assertIsNone(client.core.welcome.expires_in)

    def test_expiry_timer_stops_with_the_connection(self) -> None:
        """A connection that ends before its token expires leaves no timer behind."""
        connection = self.server.connect("whoami", options=bearer("ann:100"))
        client = outcome(self.server, connection.ready)
        client.disconnect()
        self.server.flush()
        self.assertEqual(self.server.clock.getDelayedCalls(), [])


class ReconnectTokenTests(SynchronousTestCase):
    """A reconnecting client asks its token provider again for every connection (docs/auth.md)."""

    def test_every_connection_asks_the_provider(self) -> None:
        """After a dropped link and after a 4005 close, the next connection carries a fresh token from the provider."""
        authenticator = ExpiringAuthenticator()
        server = HubTestServer([WhoAmIHub], authenticator=authenticator)
        answers = iter(["ann:never", "ann:30"])

        def provider() -> str | None:
            if server.connections and not server.connections[-1].closed:
                return None  # a refresh on the open connection: no fresh token (it will expire)
            return next(answers, "ann:never")

        ended: list[DisconnectReason] = []
        client = ReconnectingHubClient(
            "ws://127.0.0.1/hub/whoami", "whoami", options=HubClientOptions(access_token=provider),
            retry_policy=lambda attempt: 1.0, endpoint=server.endpoint(), clock=server.clock,
            on_disconnected=ended.append,
        )
        client.start()
        server.flush()
        self.assertEqual(authenticator.tokens, ["ann:never"])
        server.connections[-1].drop()
        server.advance(1.0)  # the retry policy's 1 s: a new connection, a new token
        self.assertEqual(authenticator.tokens, ["ann:never", "ann:30"])
        answer = client.call("whoami")
        server.flush()
        self.assertEqual(self.successResultOf(answer)[0], "ann")
        server.advance(30)  # no fresh token came: closed 4005 at the expiry
        self.assertEqual([reason.kind for reason in ended][-1], DisconnectKind.TOKEN_EXPIRED)
        server.advance(1.0)
        self.assertEqual(authenticator.tokens, ["ann:never", "ann:30", "ann:never"])
        self.assertTrue(client.current is not None and client.current.is_connected)
        self.assertEqual(client.connections, 3)
        client.stop()
        server.flush()


class WireTests(SynchronousTestCase):
    """The two new messages, both ways through the codec and the client core."""

    def test_round_trip(self) -> None:
        """TOKEN and TOKEN_RESULT (accepted, accepted without expiry, refused) decode to what was encoded."""
        messages = (Token(1, "abc"), TokenResult(1, 3600.0), TokenResult(2, None), TokenResult(3, 12.5, "unauthenticated", "x"))
        for message in messages:
            self.assertEqual(decode_frame(encode(message)), [message])

    def test_token_repr_hides_the_token(self) -> None:
        """A Token message's repr (logs, test failures) never shows the token."""
        self.assertNotIn("s3cret", repr(Token(1, "s3cret")))
        self.assertNotIn("s3cret", repr(Credentials("s3cret", "header", "chat", None, 0.0)))  # type: ignore[arg-type]

    def test_client_core_sends_token(self) -> None:
        """The client core numbers its tokens from 1."""
        core: ClientConnection[Any] = ClientConnection()
        self.assertEqual((core.send_token("a"), core.send_token("b")), (1, 2))
        self.assertEqual([decode_frame(f) for f in core.frames_to_send()], [[Token(1, "a")], [Token(2, "b")]])


K1 = "k1-secret-k1-secret-k1-secret-xx"
K2 = "k2-secret-k2-secret-k2-secret-xx"


class JWTTests(SynchronousTestCase):
    """JWTAuthenticator: PyJWT underneath, time on the server's clock, keys by kid."""

    def setUp(self) -> None:
        import jwt

        self.jwt = jwt
        self.clock = Clock()
        self.clock.advance(1_000)

    def token(self, key: str = K1, kid: str | None = "k1", **claims: Any) -> str:
        payload = {"sub": "ann", "exp": 1_100, "role": "admin", **claims}
        headers = {"kid": kid} if kid is not None else None
        claims_given = {k: v for k, v in payload.items() if v is not None}
        encoded: str = self.jwt.encode(claims_given, key, algorithm="HS256", headers=headers)
        return encoded

    def authenticate(self, authenticator: Any, token: str | None) -> Any:
        credentials = Credentials(token, "header", "chat", None, self.clock.seconds())  # type: ignore[arg-type]
        try:
            result = authenticator(credentials)
        except AuthenticationFailed as e:
            return e
        if isinstance(result, Deferred):
            ended: list[Any] = []
            result.addBoth(ended.append)
            return ended[0].value if isinstance(ended[0], Failure) else ended[0]
        return result

    def test_valid_token(self) -> None:
        """The user is the sub claim, its claims the payload, its expiry exp plus the leeway."""
        from twisted_hub.auth import JWTAuthenticator

        authenticator = JWTAuthenticator({"k1": K1}, algorithms=["HS256"], leeway=5)
        user = self.authenticate(authenticator, self.token())
        self.assertEqual((user.id, user.claims["role"], user.expires_at), ("ann", "admin", 1_105.0))

    def test_refusals_say_why_without_the_token(self) -> None:
        """Each bad token is refused (401) with words of ours that never quote it."""
        from twisted_hub.auth import JWTAuthenticator

        authenticator = JWTAuthenticator({"k1": K1}, algorithms=["HS256"], audience="hub", issuer="me")
        good = {"aud": "hub", "iss": "me"}
        cases = {
            "an access token is required": None,
            "malformed token": "not-a-jwt",
            "invalid token signature": self.token(key="wrong-secret-wrong-secret-wrong!", **good),
            "token expired": self.token(exp=1_000, **good),
            "token not valid yet": self.token(nbf=1_050, **good),
            "the token is not for this audience": self.token(aud="other", iss="me"),
            "the token is not from the expected issuer": self.token(aud="hub", iss="them"),
            "the token lacks the exp claim": self.token(exp=None, **good),
            "the token's key is unknown (kid)": self.token(kid="k9", **good),
        }
        for reason, token in cases.items():
            with self.subTest(reason=reason):
                refusal = self.authenticate(authenticator, token)
                self.assertIsInstance(refusal, AuthenticationFailed)
                self.assertEqual((refusal.status, refusal.reason), (401, reason))
                if token is not None:
                    self.assertNotIn(token, refusal.reason)
        self.assertEqual(self.authenticate(authenticator, self.token(**good)).id, "ann")

    def test_key_rotation_by_kid(self) -> None:
        """Tokens signed with either key of the mapping pass, each checked with its own key; a swapped kid fails."""
        from twisted_hub.auth import JWTAuthenticator

        authenticator = JWTAuthenticator({"k1": K1, "k2": K2},
                                         algorithms=["HS256"])
        old = self.token(key=K1, kid="k1")
        new = self.token(key=K2, kid="k2")
        swapped = self.token(key=K2, kid="k1")
        self.assertEqual([self.authenticate(authenticator, t).id for t in (old, new)], ["ann", "ann"])
        self.assertEqual(self.authenticate(authenticator, swapped).reason, "invalid token signature")

    def test_key_provider(self) -> None:
        """A key provider (here an async def, as one fetching a JWKS would be) is asked for the token's kid."""
        from twisted_hub.auth import JWTAuthenticator

        asked: list[str | None] = []

        async def provider(kid: str | None) -> str | None:
            asked.append(kid)
            return K1 if kid == "k1" else None

        authenticator = JWTAuthenticator(provider, algorithms=["HS256"])
        self.assertEqual(self.authenticate(authenticator, self.token(key=K1)).id, "ann")
        self.assertEqual(self.authenticate(authenticator, self.token(kid="k2")).reason, "the token's key is unknown (kid)")
        self.assertEqual(asked, ["k1", "k2"])

    def test_single_key_and_arguments(self) -> None:
        """One key takes tokens with or without a kid; algorithms must be given as a list."""
        from twisted_hub.auth import JWTAuthenticator

        authenticator = JWTAuthenticator(K1, algorithms=["HS256"])
        self.assertEqual(self.authenticate(authenticator, self.token(key=K1, kid=None)).id, "ann")
        with self.assertRaises(HubArgumentError):
            JWTAuthenticator("k", algorithms="HS256")

    def test_served(self) -> None:
        """Served: a JWT connects, its user and claims are the hub's, a method's policy reads its claims."""
        from twisted_hub.auth import JWTAuthenticator

        server = HubTestServer([WhoAmIHub], clock=self.clock, authenticator=JWTAuthenticator(
            {"k1": K1}, algorithms=["HS256"]))
        client = outcome(server, server.connect("whoami", options=bearer(self.token(key=K1))).ready)
        self.assertEqual(outcome(server, client.call("admin")), "admin only")
        self.assertEqual(client.core.welcome.expires_in, 100.0)
        forged = self.token(key="nope-nope-nope-nope-nope-nope-xx")
        refused = outcome(server, server.connect("whoami", options=bearer(forged)).ready)
        self.assertEqual((refused.status, refused.reason), (401, "invalid token signature"))


class TwistdOptionsTests(SynchronousTestCase):
    """twistd hub's authentication options: checked before anything listens."""

    def parse(self, *argv: str) -> Any:
        from twisted_hub.tap import Options

        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_bad_values_are_usage_errors(self) -> None:
        """A missing module, something not callable, a deadline without an authenticator or not > 0: usage errors."""
        from twisted.python.usage import UsageError

        for argv, words in (
            (["--authenticator", "no.such.module:x"], "cannot import"),
            (["--authenticator", "tests.helpers.auth"], "module:name"),
            (["--authenticator", "tests.helpers.auth:WhoAmIHub"], "not callable"),
            (["--auth-timeout", "2"], "needs --authenticator"),
            (["--authenticator", "tests.helpers.auth:MatrixAuthenticator", "--auth-timeout", "0"], "> 0"),
        ):
            with self.subTest(argv=argv):
                with self.assertRaises(UsageError) as raised:
                    self.parse(*argv)
                self.assertIn(words, str(raised.exception))

    def test_defaults(self) -> None:
        """Without the options: no authenticator, methods open; a function is taken as the authenticator itself."""
        options = self.parse()
        self.assertEqual((options["authenticator"], options["deny-by-default"]), (None, False))
        options = self.parse("--authenticator", "tests.test_auth:ClaimsAuthenticator")
        self.assertIsInstance(options["authenticator"], ClaimsAuthenticator)
        self.assertEqual(options["auth-timeout"], 5.0)
