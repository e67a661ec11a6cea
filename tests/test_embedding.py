"""docs/embedding.md's examples, run; HubResource on a Site that serves other pages too, over loopback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import (
    DisconnectKind,
    HandshakeError,
    HubClientOptions,
    HubResource,
    HubServerFactory,
    connect,
)
from twisted_hub.demo import EchoHub
from twisted_hub.types import OriginPolicy

from ._docs import named_blocks
from ._twistd import TWISTD, spawn_python, started_port

BLOCKS = named_blocks("docs/embedding.md")


class DocumentTests(SynchronousTestCase):
    def test_every_block_is_known(self) -> None:
        """Every code block of docs/embedding.md is one this module runs."""
        self.assertEqual(set(BLOCKS), {"myapp-tac", "site-with-hub"})


@pytest_twisted.ensureDeferred
async def test_site_example_runs() -> None:
    """The Site example, as written, serves a page and the hub side by side and prints what the doc says."""
    from twisted.internet import reactor

    child = spawn_python(reactor, "-c", BLOCKS["site-with-hub"][1])
    await child.ended.addTimeout(60, reactor)
    assert child.exit_code == 0, child.output()
    assert child.lines == ["page: about this site", "echo: hello", "disconnected: going-away: server shutting down"]


async def connect_with_origin(reactor: Any, url: str, origin: str | None) -> Any:
    headers = {"Origin": origin} if origin else {}
    return await connect(url, "echo", options=HubClientOptions(extra_headers=headers), clock=reactor, timeout=10)


@pytest_twisted.ensureDeferred
async def test_tac_example_under_twistd() -> None:
    """The .tac example runs under twistd: status page, origin check, calls, going-away on SIGTERM, no debug lines."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    with tempfile.TemporaryDirectory() as directory:
        tac = Path(directory) / "myapp.tac"
        tac.write_text(BLOCKS["myapp-tac"][1].replace("tcp:8080:", "tcp:0:"))
        child = spawn_python(reactor, *TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "--python", str(tac))
        try:
            port = await started_port(child, reactor)
            url = f"ws://127.0.0.1:{port}/hub"
            response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode())
            page = (await readBody(response)).decode()
            assert "same host, https://app.example.com" in page
            assert "every 20 s, timeout 60 s" in page
            with pytest.raises(HandshakeError) as refused:
                await connect_with_origin(reactor, url, "https://evil.example")
            assert refused.value.status == 403
            listed = await connect_with_origin(reactor, url, "https://app.example.com")
            client = await connect_with_origin(reactor, url, None)
            assert await client.call("echo", [1, 2]) == [1, 2]
            disconnected = [client.wait_for_disconnect(), listed.wait_for_disconnect()]
            await child.stop(reactor)
            for waiting in disconnected:
                assert (await waiting.addTimeout(10, reactor)).kind is DisconnectKind.GOING_AWAY
            assert child.ended_cleanly, child.output()
            # twistd's default log shows info and above: twisted-hub's debug lines (heartbeat timers) stay out
            assert "heartbeat timer" not in child.output() and "#debug]" not in child.output(), child.output()
            assert "echo connection" in child.output(), child.output()
        finally:
            await child.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_hub_resource_beside_other_pages() -> None:
    """On one real Site: ordinary pages work, plain GET on the hub is 426, WebSocket clients reach the hub."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.client import Agent, readBody
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import Data

    factory = HubServerFactory([EchoHub], allowed_origins=OriginPolicy(), clock=reactor)
    root = Resource()
    root.putChild(b"page", Data(b"ordinary page", "text/plain"))
    api = Resource()
    root.putChild(b"api", api)
    api.putChild(b"hub", HubResource(factory))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
    base = f"127.0.0.1:{port.getHost().port}"
    try:
        agent = Agent(reactor)
        response = await agent.request(b"GET", f"http://{base}/page".encode())
        assert (response.code, await readBody(response)) == (200, b"ordinary page")
        response = await agent.request(b"GET", f"http://{base}/api/hub/echo".encode())
        assert response.code == 426
        assert b"twisted-hub WebSocket endpoint" in await readBody(response)
        client = await connect_with_origin(reactor, f"ws://{base}/api/hub", f"http://{base}")
        assert await client.call("add", 40, 2) == 42
        assert factory.connection_count == 1
        response = await agent.request(b"GET", f"http://{base}/page".encode())
        assert response.code == 200, "the site keeps serving pages while a hub connection is open"
        await readBody(response)
        await client.disconnect()
    finally:
        await port.stopListening()


class HubResourceTests(SynchronousTestCase):
    def test_builds_a_factory_from_hub_classes(self) -> None:
        """HubResource accepts hub classes (and factory options) as well as a factory."""
        resource = HubResource([EchoHub], max_message_size=2048)
        self.assertIsInstance(resource.factory, HubServerFactory)
        self.assertEqual(resource.factory.max_message_size, 2048)
        with self.assertRaises(TypeError):
            HubResource(resource.factory, max_message_size=10)
