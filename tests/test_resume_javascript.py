"""
The JavaScript client resumes its session over real sockets: a hub server
with C{resume} on 127.0.0.1, a proxy in front of it that resets connections
(L{CuttingProxy}, RST both ways), and C{js/test/resume-client.mjs} (Node, the
C{ws} package) as a C{ReconnectingHubClient} with C{resume: true}.

In each round the hub cuts the client's connection while the client's call
is in flight, publishes receiver calls and asks a client result during the
gap: after the resume every item arrives once and in order, the call gets its
one answer, the client method runs once, and the hub sees one connection
that resumed, never a disconnect.

Fails, never skips, when node or js/node_modules is missing (the
C{node_modules} fixture of tests/test_javascript.py installs and builds).
Bounded: the script gives up after 60 s, the test kills it after 90 s.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred

from twisted_hub import Hub, HubServerFactory, ResumePolicy, method
from twisted_hub.types import DisconnectReason

from ._cutting_proxy import CuttingProxy
from ._processes import ScriptProcess
from .test_javascript import JS, _tool, node_modules  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(120)

ROUNDS = 4


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


class Seen:
    """What the server's hub saw."""

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.resumed: list[str] = []
        self.disconnected: list[tuple[str, str]] = []
        self.proxy: CuttingProxy | None = None
        self.waiting: list[Deferred[None]] = []

    def disconnect(self, entry: tuple[str, str]) -> None:
        self.disconnected.append(entry)
        waiting, self.waiting = self.waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def until_disconnected(self, seconds: float) -> Deferred[None]:
        """Fires once the hub saw a disconnect (at most C{seconds})."""
        waiter: Deferred[None] = Deferred()
        if self.disconnected:
            waiter.callback(None)
        else:
            self.waiting.append(waiter)
        return waiter.addTimeout(seconds, reactor())


SEEN = Seen()


class FeedHub(Hub):
    hub_name = "feed"

    def on_connected(self) -> None:
        SEEN.connected.append(self.connection.id)

    def on_resumed(self) -> None:
        SEEN.resumed.append(self.connection.id)

    def on_disconnected(self, reason: DisconnectReason) -> None:
        SEEN.disconnect((self.connection.id, reason.kind.value))

    @method
    def subscribe(self, topic: str) -> str:
        self.groups.add(topic)
        return self.connection.id

    @method
    async def cut_during(self, round_: int) -> list[int]:
        """Publish, cut the caller's connection, publish and ask the client during the gap, answer."""
        news = self.clients.group("news")
        news.item(3 * round_)
        await task.deferLater(reactor(), 0.05, lambda: None)
        assert SEEN.proxy is not None and SEEN.proxy.cut_all() == 1
        news.item(3 * round_ + 1)
        doubled = await self.connection.invoke("double", round_)
        news.item(3 * round_ + 2)
        return [round_, doubled]


@pytest_twisted.ensureDeferred
async def test_the_javascript_client_resumes_across_cuts(node_modules: Any) -> None:  # noqa: F811
    """Calls in flight, receiver calls and client results during each gap arrive exactly once after the resume."""
    global SEEN
    SEEN = Seen()
    factory = HubServerFactory([FeedHub], resume=ResumePolicy(window=10.0), allowed_origins=["*"])
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    SEEN.proxy = proxy = CuttingProxy(reactor(), port.getHost().port)
    listening = reactor().listenTCP(0, proxy, interface="127.0.0.1")
    node = _tool("node")
    process = ScriptProcess()
    process.started.addErrback(lambda _: None)  # it prints no port
    reactor().spawnProcess(
        process, node, [node, "test/resume-client.mjs", str(listening.getHost().port), str(ROUNDS)],
        env=dict(os.environ), path=str(JS),
    )
    try:
        ended: Deferred[None] = process.ended
        await ended.addTimeout(90, reactor())
    finally:
        if not process.ended.called:
            process.signal(signal.SIGKILL)
        listening.stopListening()
        port.stopListening()
    lines = [line for line in process.lines if line.startswith("{")]
    assert lines, process.lines
    seen = json.loads(lines[-1])
    session_id = seen["id"]
    assert seen["results"] == [[round_, 2 * round_] for round_ in range(ROUNDS)]
    assert seen["items"] == list(range(3 * ROUNDS)), "every receiver call once, in order"
    assert seen["doubled"] == list(range(ROUNDS)), "every client result ran once"
    assert seen["resumes"] == ROUNDS and sum(seen["refusals"].values()) == 0
    assert seen["hooks"] == [["connected", session_id]] + [["resumed", session_id]] * ROUNDS
    assert seen["connectionId"] == session_id
    assert proxy.cuts == ROUNDS
    assert SEEN.connected == [session_id]
    assert SEEN.resumed == [session_id] * ROUNDS
    # the client's stop() ended the session: the only disconnect the hub saw
    await SEEN.until_disconnected(10)
    assert SEEN.disconnected == [(session_id, "normal")]
