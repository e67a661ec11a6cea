"""
The JavaScript client's streams survive a resume over real sockets: a hub
server with C{resume} on 127.0.0.1, a proxy in front of it that resets
connections (L{CuttingProxy}, RST both ways), and
C{js/test/resume-stream-client.mjs} (Node, the C{ws} package) as a
C{ReconnectingHubClient} with C{resume: true}.

The hub cuts the client's connection in the middle of a result stream, of an
argument stream, and of a result stream the client cancels while it is
disconnected: every item arrives once and in order, the cancel stops the
producer after the resume, and the hub sees one session that resumed three
times, never a disconnect.

Needs the server to keep its streams over a resume (issue 22, section 3).
Fails, never skips, when node or js/node_modules is missing (the
C{node_modules} fixture of tests/test_javascript.py installs and builds).
Bounded: the script gives up after 60 s, the test kills it after 90 s.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
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

COUNT = 40
CUT_AT = 10


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


class Seen:
    """What the server's hub saw."""

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.resumed: list[str] = []
        self.disconnected: list[tuple[str, str]] = []
        self.finished: list[str] = []
        self.proxy: CuttingProxy | None = None

    def cut(self) -> None:
        assert self.proxy is not None and self.proxy.cut_all() == 1


SEEN = Seen()


class FlowHub(Hub):
    hub_name = "flow"

    def on_connected(self) -> None:
        SEEN.connected.append(self.connection.id)

    def on_resumed(self) -> None:
        SEEN.resumed.append(self.connection.id)

    def on_disconnected(self, reason: DisconnectReason) -> None:
        SEEN.disconnected.append((self.connection.id, reason.kind.value))

    @method
    async def ticks(self, count: int, cut_at: int) -> AsyncIterator[int]:
        """Items 0 .. count - 1; the caller's connection is cut before item C{cut_at}."""
        try:
            for n in range(count):
                if n == cut_at:
                    SEEN.cut()
                yield n
        finally:
            SEEN.finished.append("ticks")

    @method
    async def total(self, numbers: AsyncIterator[int], cut_at: int) -> list[int]:
        """The items of an argument stream, in the order they came; the connection is cut after C{cut_at}."""
        received: list[int] = []
        async for n in numbers:
            received.append(n)
            if len(received) == cut_at:
                SEEN.cut()
        return received

    @method
    async def endless(self, cut_at: int) -> AsyncIterator[int]:
        """Items until cancelled; the connection is cut before item C{cut_at}."""
        n = 0
        try:
            while True:
                if n == cut_at:
                    SEEN.cut()
                yield n
                n += 1
        finally:
            SEEN.finished.append("endless")

    @method
    async def producer_stopped(self) -> list[str]:
        """The producers whose C{finally} ran, once C{endless}'s has (at most 10 s)."""
        for _ in range(1000):
            if "endless" in SEEN.finished:
                break
            await task.deferLater(reactor(), 0.01, lambda: None)
        return SEEN.finished


@pytest_twisted.ensureDeferred
async def test_javascript_streams_survive_resumes(node_modules: Any) -> None:  # noqa: F811
    """Result and argument streams cut mid-way go on after the resume: every item once, in order; a cancel in the gap lands."""
    global SEEN
    SEEN = Seen()
    factory = HubServerFactory([FlowHub], resume=ResumePolicy(window=10.0), allowed_origins=["*"])
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    SEEN.proxy = proxy = CuttingProxy(reactor(), port.getHost().port)
    listening = reactor().listenTCP(0, proxy, interface="127.0.0.1")
    node = _tool("node")
    process = ScriptProcess()
    process.started.addErrback(lambda _: None)  # it prints no port
    reactor().spawnProcess(
        process, node, [node, "test/resume-stream-client.mjs", str(listening.getHost().port)],
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
    assert seen["ticks"] == list(range(COUNT)), "every item of the result stream once, in order"
    assert seen["received"] == list(range(COUNT)), "every item of the argument stream once, in order"
    assert seen["sent"] == list(range(COUNT)), "the source was read once"
    assert seen["endless"] == list(range(len(seen["endless"]))) and len(seen["endless"]) <= CUT_AT
    assert seen["stopped"] == ["ticks", "endless"], "the cancel made in the gap stopped the producer"
    assert seen["resumes"] == 3 and sum(seen["refusals"].values()) == 0
    assert seen["hooks"] == [["connected", session_id]] + [["resumed", session_id]] * 3
    assert proxy.cuts == 3
    assert SEEN.connected == [session_id]
    assert SEEN.resumed == [session_id] * 3
