"""`twistd --reactor=asyncio hub` serves and shuts down like the default reactor."""

from __future__ import annotations

import pytest_twisted

from twisted_hub import DisconnectKind, HubClientOptions, connect

from ._twistd import started_port, twistd_hub


@pytest_twisted.ensureDeferred
async def test_asyncio_reactor() -> None:
    """Under the asyncio reactor the hub answers calls and heartbeats, and SIGTERM says going-away."""
    from twisted.internet import reactor

    child = twistd_hub(
        reactor, "--port", "0", "--heartbeat-interval", "0.2", twistd_args=("--reactor=asyncio",)
    )
    try:
        port = await started_port(child, reactor)
        assert "AsyncioSelectorReactor" in child.output()
        beats: list[object] = []
        options = HubClientOptions(on_server_heartbeat=beats.append)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "echo", options=options, clock=reactor, timeout=10)
        assert await client.call("echo", "under asyncio") == "under asyncio"
        from twisted.internet.task import deferLater

        for _ in range(100):
            if beats:
                break
            await deferLater(reactor, 0.05)
        assert beats, "no server heartbeat arrived within 5 s"
        disconnected = client.wait_for_disconnect()
        await child.stop(reactor)
        reason = await disconnected.addTimeout(10, reactor)
        assert reason.kind is DisconnectKind.GOING_AWAY
        assert child.ended_cleanly, child.output()
    finally:
        await child.stop(reactor)
