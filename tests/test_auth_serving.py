"""
Authentication on every serving path, over real loopback sockets: the
authenticator matrix (sync, Deferred, async x accept, refuse, forbid, raise,
hang past the deadline) through a bare HubServerFactory on listenTCP, a
HubResource on a Site, and `twistd hub` as a child process, each accepted
user then calling a method whose policy only the sync one meets; tokens kept out
of the access log, the status page and the metrics; and a token that expires
mid-session, refreshed or not, with the Twisted and the asyncio client; a
refresh and a filter on a HubResource mounted on a Site.
Every wait is bounded; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_hub import (
    DisconnectKind,
    ErrorCode,
    HandshakeError,
    HubClientOptions,
    HubError,
    HubResource,
    HubServerFactory,
    connect,
)
from twisted_hub.types import HubClientProtocol

from ._twistd import started_port, twistd_hub
from .helpers.auth import STATUS, MatrixAuthenticator, RealTimeExpiring, WhoAmIHub, matrix

WAIT = 10.0
#: the authenticator deadline on every path (the hanging cases wait this long)
AUTH_TIMEOUT = "0.5"


def bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


async def try_connect(url: str, token: str | None, options: HubClientOptions | None = None) -> HubClientProtocol | HandshakeError:
    """Connect with C{token}; the client, or the handshake's refusal."""
    from twisted.internet import reactor

    try:
        client: HubClientProtocol = await bounded(connect(
            url, options=options or HubClientOptions(access_token=token), clock=reactor, timeout=WAIT,
        ))
    except HandshakeError as e:
        return e
    return client


async def run_matrix(url: str) -> None:
    """Every case of the matrix against the hub at C{url}, all at once; each gets what its outcome says."""
    cases = matrix()
    results = await gatherResults([Deferred.fromCoroutine(try_connect(url, f"{kind}-{outcome}")) for kind, outcome in cases])
    problems = []
    for (kind, outcome), result in zip(cases, results, strict=True):
        status = STATUS[outcome]
        if status is None:
            if not isinstance(result, HubClientProtocol):
                problems.append(f"{kind}-{outcome}: {result}")
                continue
            who = await bounded(result.call("whoami"))
            if who[0] != f"{kind}-user":
                problems.append(f"{kind}-{outcome}: whoami {who}")
            # the method policy (role admin): the sync user has it, the others are refused forbidden
            try:
                admin = await bounded(result.call("admin"))
            except HubError as e:
                admin = e.code
            if admin != ("admin only" if kind == "sync" else ErrorCode.FORBIDDEN):
                problems.append(f"{kind}-{outcome}: admin {admin}")
            await bounded(result.disconnect())
        elif not (isinstance(result, HandshakeError) and result.status == status):
            problems.append(f"{kind}-{outcome}: expected {status}, got {result}")
            if isinstance(result, HubClientProtocol):
                result.transport.abortConnection()
    assert problems == []


@pytest_twisted.ensureDeferred
async def test_matrix_on_listen_tcp() -> None:
    """A bare HubServerFactory on listenTCP: every case of the matrix."""
    from twisted.internet import reactor

    factory = HubServerFactory([WhoAmIHub], authenticator=MatrixAuthenticator(), authentication_timeout=float(AUTH_TIMEOUT))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        await run_matrix(f"ws://127.0.0.1:{port.getHost().port}/whoami")
        assert factory.connection_count == 0
    finally:
        factory.close_all()
        await bounded(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_matrix_on_a_site_and_the_access_log() -> None:
    """A HubResource on a plain Site: every case of the matrix; the Site's access log never holds the token."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    directory = tempfile.TemporaryDirectory()
    log_path = Path(directory.name) / "access.log"
    factory = HubServerFactory([WhoAmIHub], authenticator=MatrixAuthenticator(), authentication_timeout=float(AUTH_TIMEOUT))
    root = Resource()
    root.putChild(b"hub", HubResource(factory))
    site = Site(root, logPath=str(log_path))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"127.0.0.1:{port.getHost().port}/hub/whoami"
    try:
        await run_matrix(f"ws://{base}")
        # the token in the query works too, and a plain GET with one (426) is logged without it
        client = await try_connect(f"ws://{base}?access_token=sync-accept&x=1", None)
        assert isinstance(client, HubClientProtocol), client
        await bounded(client.disconnect())
        response = await bounded(Agent(reactor).request(b"GET", f"http://{base}?access_token=SECRET-IN-GET".encode()))
        assert response.code == 426
        await bounded(readBody(response))
    finally:
        factory.close_all()
        await bounded(port.stopListening())
    access_log = log_path.read_text()
    directory.cleanup()
    assert "/hub/whoami?access_token=REDACTED HTTP/1.1\" 426" in access_log, access_log
    assert "SECRET" not in access_log and "sync-accept" not in access_log, access_log


@pytest_twisted.ensureDeferred
async def test_matrix_on_twistd_and_no_token_in_log_status_or_metrics() -> None:
    """twistd hub --authenticator: every case of the matrix; the token is in no log line, status page or metric."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    child = twistd_hub(
        reactor, "--listen", "tcp:0:interface=127.0.0.1", "--hub", "tests.helpers.auth:WhoAmIHub",
        "--authenticator", "tests.helpers.auth:MatrixAuthenticator", "--auth-timeout", AUTH_TIMEOUT, "--metrics",
    )
    try:
        port = await started_port(child, reactor)
        await child.wait_for(r"authentication: MatrixAuthenticator", reactor, WAIT)
        base = f"127.0.0.1:{port}"
        await run_matrix(f"ws://{base}/hub/whoami")
        secret = "SECRET-QUERY-TOKEN"
        refused = await try_connect(f"ws://{base}/hub/whoami?access_token={secret}", None)
        assert isinstance(refused, HandshakeError) and refused.status == 401, refused
        pages = {}
        for path in (f"/hub/whoami?access_token={secret}", f"/status.json?access_token={secret}", "/metrics"):
            response = await bounded(Agent(reactor).request(b"GET", f"http://{base}{path}".encode()))
            pages[path] = (await bounded(readBody(response))).decode()
        # the access log lines are written: wait for the last one, then read everything
        await child.wait_for(r'"GET /metrics HTTP/1.1" 200', reactor, WAIT)
        await child.wait_for(r"access_token=REDACTED", reactor, WAIT)
    finally:
        await child.stop(reactor)
    output = child.output()
    for token in (secret, *(f"{kind}-{outcome}" for kind, outcome in matrix())):
        assert token not in output, token
        for path, page in pages.items():
            assert token not in page, (token, path)
    assert "sync: authenticator bug" in output  # the crashing authenticator was logged (with its traceback)
    assert "did not answer in time" in output  # and the hanging ones


@pytest_twisted.ensureDeferred
async def test_expiry_and_refresh_over_sockets() -> None:
    """Twisted client, real sockets: with a provider the connection outlives its 1.5 s tokens; without, it ends token-expired."""
    from twisted.internet import reactor

    authenticator = RealTimeExpiring()
    factory = HubServerFactory([WhoAmIHub], authenticator=authenticator)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    url = f"ws://127.0.0.1:{port.getHost().port}/whoami"
    try:
        asked: list[float] = []

        def provider() -> Deferred[str]:
            asked.append(reactor.seconds())
            # a provider that takes a moment, as one asking an identity service would
            d: Deferred[str] = Deferred()
            reactor.callLater(0.05, d.callback, "ann:1.5")
            return d

        refreshed = await try_connect(url, None, HubClientOptions(access_token=provider))
        fixed = await try_connect(url, "bob:1.5")
        assert isinstance(refreshed, HubClientProtocol) and isinstance(fixed, HubClientProtocol)
        reason = await bounded(fixed.wait_for_disconnect(), 5)
        assert (reason.kind, reason.code) == (DisconnectKind.TOKEN_EXPIRED, 4005), reason
        await bounded(Deferred.fromCoroutine(_sleep(1.5)))
        assert refreshed.is_connected
        assert refreshed.session.tokens.refreshed >= 2, refreshed.session.tokens.refreshed
        assert (await bounded(refreshed.call("whoami")))[0] == "ann"
        assert len(asked) >= 3  # at connect, then before each expiry
        await bounded(refreshed.disconnect())
    finally:
        factory.close_all()
        await bounded(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_filters_and_refresh_on_a_site() -> None:
    """
    A HubResource on a plain Site with an authenticator and a filter: a Twisted
    client outlives its 1.5 s tokens (refreshed), and the rate limit answers
    its third quick call with rate-limited.
    """
    from twisted.internet import reactor

    from twisted_hub.filters import RateLimit

    root = Resource()
    root.putChild(b"hub", HubResource([WhoAmIHub], authenticator=RealTimeExpiring(), filters=[RateLimit(0.1, burst=2)]))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    client = await try_connect(f"ws://127.0.0.1:{port.getHost().port}/hub/whoami", None,
                               HubClientOptions(access_token=lambda: "ann:1.5"))
    try:
        assert isinstance(client, HubClientProtocol), client
        await bounded(Deferred.fromCoroutine(_sleep(2.0)))  # past the first token's expiry
        assert client.is_connected and client.session.tokens.refreshed >= 1
        assert (await bounded(client.call("whoami")))[0] == "ann"
        assert (await bounded(client.call("whoami")))[0] == "ann"
        with pytest.raises(HubError) as limited:
            await bounded(client.call("whoami"))
        assert limited.value.code == ErrorCode.RATE_LIMITED
        await bounded(client.disconnect())
    finally:
        await bounded(port.stopListening())


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


def test_expiry_and_refresh_asyncio_client() -> None:
    """asyncio client against twistd hub: an async provider keeps it connected; a fixed token ends token-expired."""
    from .test_aio import TwistdHub

    server = TwistdHub("--hub", "tests.helpers.auth:WhoAmIHub", "--authenticator", "tests.helpers.auth:RealTimeExpiring")
    try:
        asyncio.run(asyncio.wait_for(_asyncio_refresh(server.port), 20))
    finally:
        server.stop()


async def _asyncio_refresh(port: int) -> None:
    from twisted_hub.aio import open_client

    url = f"ws://127.0.0.1:{port}/hub/whoami"
    asked = 0

    async def provider() -> str:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.05)
        return "ann:1.5"

    refreshed = await open_client(url, options=HubClientOptions(access_token=provider), timeout=WAIT)
    fixed = await open_client(url, options=HubClientOptions(access_token="bob:1.5"), timeout=WAIT)
    reason = await asyncio.wait_for(fixed.wait_for_disconnect(), 5)
    assert (reason.kind, reason.code) == (DisconnectKind.TOKEN_EXPIRED, 4005), reason
    await asyncio.sleep(1.5)
    assert refreshed.is_connected
    assert refreshed.session.tokens.refreshed >= 2 and asked >= 3, (refreshed.session.tokens.refreshed, asked)
    assert (await refreshed.call("whoami"))[0] == "ann"
    with pytest.raises(HubError) as forbidden:  # a method policy this user fails
        await refreshed.call("admin")
    assert forbidden.value.code == ErrorCode.FORBIDDEN and refreshed.is_connected
    with pytest.raises(HandshakeError) as refusal:
        await open_client(url, options=HubClientOptions(access_token="nonsense"), timeout=WAIT)
    assert refusal.value.status == 401
    await refreshed.disconnect()
