"""
The live status page in real headless Chromium: after a session over a
real socket, its script has filled in what a person reads (connections,
heartbeat success rate and latency, calls/s, the last disconnect); on a
given C{/status.json}, what it makes of the numbers and the disconnects.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from twisted_hub import HeartbeatPolicy, HubService, connect
from twisted_hub.demo import EchoHub

from .test_loopback import bounded

CHROMIUM_SECONDS = 60.0


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def processEnded(self, reason: Failure) -> None:
        self.done.callback(b"".join(self.out))


def dump_dom(url: str) -> Deferred[bytes]:
    """The page's DOM after its scripts ran (chromium --dump-dom), killed by PID if it takes over a minute."""
    from twisted.internet import reactor

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (apt-get install chromium; see .ci/run)")
    collect = _Collect()
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--virtual-time-budget=4000", "--dump-dom", url]
    process: Any = reactor.spawnProcess(collect, chromium, args, env=None)  # type: ignore[attr-defined]
    deadline = reactor.callLater(CHROMIUM_SECONDS, process.signalProcess, "KILL")  # type: ignore[attr-defined]
    return collect.done.addBoth(lambda result: (deadline.cancel() if deadline.active() else None, result)[1])


def text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)<', dom, re.S)
    assert match is not None, f"no #{element_id} in the page"
    return match.group(1)


async def until(condition: Any, seconds: float = 10.0) -> None:
    """Wait (bounded) until condition() holds, checking every 50 ms."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
    raise AssertionError("condition never held")


@pytest_twisted.ensureDeferred
async def test_status_page_in_chromium() -> None:
    """Chromium shows 1 connection, 100 % heartbeats answered, a latency, calls/s and the normal disconnect."""
    from twisted.internet import reactor

    service = HubService(
        [EchoHub], ["tcp:0:interface=127.0.0.1"], heartbeat=HeartbeatPolicy(enabled=True, interval=0.2, timeout=2.0)
    )
    service.startService()
    try:
        [port] = await bounded(service.listening_ports())
        base = f"127.0.0.1:{port.getHost().port}"
        stays = await bounded(connect(f"ws://{base}/hub/echo", clock=reactor, timeout=10.0))
        leaves = await bounded(connect(f"ws://{base}/hub/echo", clock=reactor, timeout=10.0))
        for n in range(5):
            assert await bounded(stays.call("echo", n)) == n
        await bounded(leaves.disconnect())
        window = service.factory.heartbeat_window
        await until(lambda: window.summary(service.factory.clock.seconds())["answered"] >= 2)
        dom = (await dump_dom(f"http://{base}/")).decode("utf-8")
        assert text_of(dom, "connections") == "1"
        assert text_of(dom, "hb-rate") == "100.0 %"
        assert re.fullmatch(r"\d+\.\d ms / \d+\.\d ms", text_of(dom, "hb-latency")), text_of(dom, "hb-latency")
        assert float(text_of(dom, "calls")) > 0
        assert text_of(dom, "errors") == "0.0"
        errors = re.search(r'<b id="errors"([^>]*)>', dom)
        assert errors is not None and "bad" not in errors.group(1)
        assert "normal (1000)" in dom
        assert re.search(r"<th>connections</th><th>heartbeat</th>", dom), "the Hubs table lost its headers"
        assert text_of(dom, "updated").startswith("updated ")
        await bounded(stays.disconnect())
    finally:
        await bounded(service.stopService())


def live_status(**changes: Any) -> dict[str, Any]:
    """A /status.json document as the server writes it, with C{changes}."""
    normal = {"time": 1_800_000_000.0, "hub": "echo", "id": "n1-2", "kind": "normal", "code": 1000, "reason": ""}
    timed_out = {"time": 1_799_999_990.0, "hub": "echo", "id": "n1-1", "kind": "timed-out", "code": 4001,
                 "reason": "heartbeat timeout"}
    status = {
        "schema": 1, "version": "0", "server_time": 1_800_000_000.0, "uptime": 3600.0, "draining": False,
        "connections": 7, "hubs": {"echo": {"connections": 7, "calls": 60, "errors": 1}},
        "heartbeat": {"window": 60.0, "sent": 70, "answered": 70, "success_rate": 1.0, "latency_p50": 0.001,
                      "latency_p99": 0.002},
        "calls_per_s": 1.0, "errors_per_s": 1 / 60,
        "recent_disconnects": [normal] * 20, "recent_abnormal_disconnects": [timed_out],
    }
    status.update(changes)
    return status


@pytest_twisted.ensureDeferred
async def test_status_page_script_in_chromium() -> None:
    """
    The page's script, on a given /status.json: the Hubs table keeps its
    headers, the abnormal disconnects stay visible under 20 normal ones, and a
    small error rate reads as a number, not a red 0.0.
    """
    import json

    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import Data

    from twisted_hub import HubServerFactory
    from twisted_hub._twisted.resource import HubStatusPage

    page = HubStatusPage(HubServerFactory([EchoHub]), "/hub", ["tcp:8080"])
    page.json_url = "/live.json"
    root = Resource()
    root.putChild(b"", page)
    root.putChild(b"live.json", Data(json.dumps(live_status()).encode(), "application/json"))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
    try:
        dom = (await dump_dom(f"http://127.0.0.1:{port.getHost().port}/")).decode("utf-8")
    finally:
        await port.stopListening()
    assert text_of(dom, "updated").startswith("updated "), "the script never ran"
    hubs = re.search(r'<table id="hubs">(.*?)</table>', dom, re.S)
    assert hubs is not None
    headers = re.findall(r"<th>(.*?)</th>", hubs.group(1))
    assert headers == ["hub", "path", "connections", "heartbeat"], headers
    assert re.findall(r"<td>(.*?)</td>", hubs.group(1))[2] == "7"
    assert text_of(dom, "total-connections") == "7"
    assert text_of(dom, "errors") == "0.02"
    errors = re.search(r'<b id="errors"([^>]*)>', dom)
    assert errors is not None and 'class="bad"' in errors.group(1)
    assert text_of(dom, "calls") == "1.0"
    abnormal = re.search(r'<table id="abnormal-disconnects">(.*?)</table>', dom, re.S)
    assert abnormal is not None
    assert "timed-out (4001): heartbeat timeout" in abnormal.group(1)
    recent = re.search(r'<table id="disconnects">(.*?)</table>', dom, re.S)
    assert recent is not None and recent.group(1).count("normal (1000)") == 20
