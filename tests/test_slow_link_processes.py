"""
A slow link is not a dead peer, on real processes and sockets (127.0.0.1,
bounded in time): servers and clients in their own processes -- the Twisted
client, the asyncio client, the JavaScript client in Node (`ws`) and in
headless Chromium (through nginx: uploading only, see below) -- a
rate-limiting proxy (tests/_rate_proxy.py) in this one, and, for the
"nginx" runs, a real nginx between the proxy and the server (the slow link
is the client's, as from a phone to the site's edge).  The rule itself is
tested on a Clock in test_slow_link.py.

One run puts every scenario side by side (one connection each) to keep the
wall-clock time down: about 30 s of transfer, run directly and through
nginx.  Heartbeats 1 s / 3 s on every side; each live client moves 10x the
timeout's worth of data (30 s at its link's rate) in each direction.  A
second, shorter run stops the peers the first does not: every client kind
mid-upload at 200 KB/s, and at 50 KB/s every client kind either way and a
server under clients of each kind either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.defer import TimeoutError as DeferredTimeout

from ._nginx import NginxProcess, start_nginx
from ._processes import ROOT, ScriptProcess, spawn_script
from ._rate_proxy import Direction, RateLimitingProxy

#: long real-process runs: the floors job leaves them out (.ci/floors)
pytestmark = pytest.mark.long_process

INTERVAL = 1.0
TIMEOUT = 3.0
#: (bytes/s, calls, bytes per call): 10x the timeout's worth of data each way, in messages of 5 s each
LINKS = {"200KB/s": (200_000, 6, 1_000_000), "50KB/s": (50_000, 6, 250_000)}
#: calls in flight at once: 3 MB of results queued at most, within the server's 4 MiB
#: max_outgoing_buffer (a client asking for more at once is a slow consumer, dropped)
IN_FLIGHT = 3
#: SO_RCVBUF/SO_SNDBUF of the proxy's sockets and the frozen peer's (Linux doubles it):
#: small buffers between, so a stopped peer's bytes stop moving soon
BUFFER = 32 * 1024
#: what the scheduling of some twenty processes on a shared 2-core machine may add to a drop
SLACK = 1.0
#: seconds into the transfer the frozen peers are stopped
FREEZE_AFTER = 2.0
KINDS = ("twisted", "asyncio", "js")
BEATS = ("--heartbeat", str(INTERVAL), str(TIMEOUT))


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


def node_path() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JavaScript client's tests need it (apt-get install nodejs, .ci/run)")
    built = ROOT / "js" / "dist" / "index.js"
    sources = (ROOT / "js" / "src").glob("*.ts")
    if not built.exists() or max(path.stat().st_mtime for path in sources) > built.stat().st_mtime:
        # (run alone, this test would otherwise drive a bundle older than the client's sources)
        subprocess.run([node, "build.mjs"], cwd=ROOT / "js", check=True, timeout=180)
    return node


def chromium_path() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: the browser tests need it (apt-get install chromium; see .ci/run)")
    return chromium


def client(kind: str, url: str, calls: int, size: int, *extra: str, beats: bool = True) -> ScriptProcess:
    """
    A bulk client of C{kind} (it prints READY, RESULT, DONE, CLOSED lines; see
    tests/helpers/bulk_client.py): "twisted", "asyncio", "js" (Node, js/test/bulk-client.mjs)
    or "browser" (headless Chromium, js/test/bulk-browser.mjs).
    """
    heartbeat = BEATS if beats else ()
    args = (url, "--calls", str(calls), "--size", str(size), "--in-flight", str(IN_FLIGHT), "--wait-go", *heartbeat, *extra)
    if kind in ("js", "browser"):
        process = ScriptProcess()
        node = node_path()
        script = "bulk-client.mjs" if kind == "js" else "bulk-browser.mjs"
        env = dict(os.environ)
        if kind == "browser":
            env["CHROMIUM"] = chromium_path()
        argv = [node, str(ROOT / "js" / "test" / script), *args]
        reactor().spawnProcess(process, node, argv, env=env, path=str(ROOT))
    else:
        process = spawn_script(reactor(), "bulk_client.py", *args, *(("--asyncio",) if kind == "asyncio" else ()))
    process.started.addErrback(lambda failure: None)
    return process


async def ready(process: ScriptProcess) -> tuple[str, int]:
    """The client's connection id and local port, once it is connected."""
    # Twenty-odd processes (two Chromiums among them) start at once: 60 s, for a loaded machine.
    line: str = await process.wait_for_line("READY ").addTimeout(60, reactor())
    _, connection_id, port = line.split()
    return connection_id, int(port)


def all_ok(process: ScriptProcess, calls: int) -> bool:
    """The client got every result, each equal to what it sent, and closed normally."""
    lines = [line for line in process.lines if line.startswith(("RESULT", "FAILED"))]
    return len(lines) == calls and all(" ok " in line for line in lines) and any(
        line.startswith("CLOSED normal") for line in process.lines
    )


def timed_line(process: ScriptProcess, prefix: str) -> Deferred[tuple[str, float]]:
    """The first line starting with C{prefix}, and when it came (C{time.monotonic()})."""
    return process.wait_for_line(prefix).addCallback(lambda line: (line, time.monotonic()))


def server_drop(server: ScriptProcess, connection_id: str) -> Deferred[tuple[str, float]]:
    """
    The server's DISCONNECTED line for C{connection_id}, and when the server
    dropped it: the C{time.monotonic()} of the DROPPED line it prints next
    (Linux's monotonic clock is the machine's, shared by this process), not
    when this process, busy with the proxies of some twenty clients, read it.
    """
    line = server.wait_for_line(f"DISCONNECTED {connection_id} ")
    stamp = server.wait_for_line(f"DROPPED {connection_id} ")
    return gatherResults([line, stamp]).addCallback(lambda found: (found[0], float(found[1].split()[2])))


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor(), seconds, lambda: None)


async def until_moving(scenarios: list[Scenario], seconds: float = 60.0) -> None:
    """
    Wait (at most C{seconds}) until bulk data has crossed each scenario's
    limited direction: a peer is stopped mid-transfer, never before its
    transfer began (on a loaded machine a client may take seconds to start).
    """
    deadline = time.monotonic() + seconds
    while any(s.limited().last_read_at is None for s in scenarios):
        waiting = [s.name for s in scenarios if s.limited().last_read_at is None]
        assert time.monotonic() < deadline, f"no bulk data moved for {waiting}"
        await sleep(0.1)


@dataclass
class Scenario:
    """One client process: what it does and through which proxy."""

    name: str
    kind: str
    process: ScriptProcess
    proxy: RateLimitingProxy
    calls: int
    #: the direction its data is rate-limited in: "download" (toward it) or "upload"
    direction: str
    #: its link's rate, bytes/s
    rate: float = LINKS["200KB/s"][0]
    connection_id: str = ""
    port: int = 0

    def limited(self) -> Direction:
        link = self.proxy.link_from(self.port)
        return link.to_client if self.direction == "download" else link.to_server


#: seconds the small buffers between (the proxy's 16 KiB, the stopped side's 32 KiB, doubled by
#: Linux, each way: about 150 KB) may take to fill after a SIGSTOP, with scheduling slack, per rate
FILL_LIMIT = {200_000: 3.0, 50_000: 6.0}


async def measure_drops(
    frozen: list[Scenario], waiting: list[Deferred[tuple[str, float]]], frozen_at: float,
    to_frozen_server: list[Scenario],
) -> list[tuple[Scenario, str, float, float]]:
    """
    For each stopped peer's scenario: the line that reported the drop, when
    its bytes stopped moving (seconds after the SIGSTOP) and how long the drop
    took after the side that dropped it last saw them move.  That side is
    the server for a stopped client, the client for a stopped server; when
    it receives the limited direction, its last progress is the proxy's
    last write of bulk bytes to it (the proxy holds up to 16 KiB past its
    last read), else the proxy's last read of its bytes.
    """
    measured = []
    for scenario, pending in zip(frozen, waiting, strict=True):
        line, dropped_at = await pending.addTimeout(60, reactor())
        limited = scenario.limited()
        last_read = limited.last_read_at
        assert last_read is not None, scenario.name
        dropper_receives = (scenario in to_frozen_server) == (scenario.direction == "download")
        last_progress = limited.last_forwarded_at if dropper_receives else last_read
        assert last_progress is not None, scenario.name
        # A client may drop a stopped server while a proxy in front of it still takes its
        # bytes (nginx's buffers): then it was dropped before they stopped, which is within the bound.
        stopped = min(last_read, dropped_at)
        measured.append((scenario, line, stopped - frozen_at, dropped_at - min(last_progress, dropped_at)))
    return measured


def check_drops(
    measured: list[tuple[Scenario, str, float, float]], to_frozen_server: list[Scenario], server: ScriptProcess,
    route: list[NginxProcess] | None,
) -> None:
    """Each stopped peer was dropped as timed-out within interval + timeout (+ slack) of the moment its bytes stopped."""
    for scenario, line, stopped_after, detection in measured:
        expected = "timed-out" if scenario in to_frozen_server else f"DISCONNECTED {scenario.connection_id} timed-out"
        assert line.startswith(("CLOSED " + expected, expected)), (scenario.name, line)
        # A JS client's own kernel buffer (Node cannot shrink it) still takes its bytes after the
        # proxy saw them stop: its last progress sample, one interval apart from the next, may come
        # that much later (the bound's "time to fill the buffers", on the side the proxy cannot see).
        unseen_fill = INTERVAL if scenario.kind == "js" and scenario in to_frozen_server else 0.0
        # The side that drops may find its own event loop was stalled in the wait (some twenty
        # processes, two Chromiums among them, on 2 cores): then, by design, the peer gets one
        # more exchange (docs/heartbeat.md, "Stall awareness"), and says so (STALLED / GRACE).
        dropper = scenario.process if scenario in to_frozen_server else server
        graced = [line for line in dropper.lines if line.startswith(("STALLED", "GRACE"))]
        grace = TIMEOUT if graced else 0.0
        bound = INTERVAL + TIMEOUT + SLACK + unseen_fill + grace
        assert detection <= bound, (scenario.name, detection, bound, dropper.lines[-8:])
        if route is None and (scenario.kind != "js" or scenario in to_frozen_server):
            # Small buffers between (the proxy's, the stopped side's): they fill within a few seconds.
            # (Node cannot shrink its socket's; nginx's grow to megabytes: measured, not asserted.)
            assert stopped_after <= FILL_LIMIT[int(scenario.rate)], (scenario.name, stopped_after)


def print_drops(measured: list[tuple[Scenario, str, float, float]]) -> None:
    for scenario, line, stopped_after, detection in measured:
        print(
            f"  {scenario.name}: bytes stopped {stopped_after:.2f}s after SIGSTOP, "
            f"dropped {detection:.2f}s after the side that dropped it last saw them move ({line})"
        )


@pytest.fixture(params=["direct", "nginx"])
def route(request: pytest.FixtureRequest) -> Iterator[list[NginxProcess] | None]:
    """Directly to the servers, or through a real nginx in front of each (started by the test)."""
    if request.param == "direct":
        yield None
        return
    started: list[NginxProcess] = []
    yield started
    for nginx in started:
        nginx.stop()


@pytest_twisted.ensureDeferred
async def test_slow_links_every_client_kind(route: list[NginxProcess] | None) -> None:
    """
    Heartbeats 1 s / 3 s on the servers and every client; links at 200 KB/s
    and 50 KB/s, limited toward the client (download) or toward the server
    (upload).  Every live Twisted, asyncio and JS (Node) client moving 10x
    the timeout's worth of data (6 echo calls of 5 s each, 30 s in all), and
    directly a browser client at 200 KB/s, is never timed out by either side
    and gets every result intact; a client
    of each kind SIGSTOPped 2 s into its download is dropped by the server,
    and a server SIGSTOPped 2 s into the transfers is dropped by a client
    of each kind in each direction, within interval + timeout (+ slack) of
    the moment the bytes stopped moving.
    """
    # Default policies.  Through nginx the server sees its output drain into nginx's socket
    # buffers (megabytes on a fast path), not the client taking it: there the clients' own
    # heartbeats, which come the other way, keep it (docs/heartbeat.md, "Behind a proxy").
    server_beats = ("--interval", str(INTERVAL), "--timeout", str(TIMEOUT))
    server = spawn_script(reactor(), "heartbeat_server.py", *server_beats)
    frozen_server = spawn_script(reactor(), "heartbeat_server.py", *server_beats, "--socket-buffer", str(BUFFER))
    proxies: list[RateLimitingProxy] = []
    scenarios: list[Scenario] = []
    frozen_clients: list[Scenario] = []
    to_frozen_server: list[Scenario] = []

    def proxy_to(backend: int, rate: float, direction: str) -> tuple[RateLimitingProxy, str]:
        limits = (rate, None) if direction == "download" else (None, rate)
        proxy = RateLimitingProxy(reactor(), backend, *limits, socket_buffer=BUFFER)
        proxies.append(proxy)
        return proxy, f"ws://127.0.0.1:{proxy.listen()}/hub/probe"

    try:
        backends = []
        for process in (server, frozen_server):
            port = await process.started.addTimeout(30, reactor())
            if route is not None:
                nginx = start_nginx(port)
                route.append(nginx)
                port = nginx.port
            backends.append(port)
        live_backend, frozen_backend = backends

        for direction in ("download", "upload"):
            for link, (rate, calls, size) in LINKS.items():
                proxy, url = proxy_to(live_backend, rate, direction)
                for kind in KINDS:
                    process = client(kind, url, calls, size)
                    scenarios.append(Scenario(f"{kind} {direction} {link}", kind, process, proxy, calls, direction, rate))
        for link, (rate, calls, size) in LINKS.items():
            # The browser client at each rate.  Downloading, with the server's heartbeat only: a page
            # sees no message until it is whole, so its own heartbeat's answer, behind 5 s messages,
            # would time out (docs/heartbeat.md, "What a client cannot see").  Through nginx it
            # uploads only: downloading, the server's beat waits behind what nginx holds, and a page
            # that does not beat gives it nothing to go on ("Behind a proxy").
            for direction in ("download", "upload") if route is None else ("upload",):
                proxy, url = proxy_to(live_backend, rate, direction)
                process = client("browser", url, calls, size, beats=direction == "upload")
                scenarios.append(
                    Scenario(f"browser {direction} {link}", "browser", process, proxy, calls, direction, rate)
                )
        rate, calls, size = LINKS["200KB/s"]
        proxy, url = proxy_to(live_backend, rate, "download")
        for kind in KINDS:
            # Python clients shrink their socket buffers (--socket-buffer); Node cannot set SO_RCVBUF.
            extra = ("--socket-buffer", str(BUFFER)) if kind != "js" else ()
            process = client(kind, url, calls, size, *extra)
            frozen_clients.append(Scenario(f"frozen {kind} client", kind, process, proxy, calls, "download"))
        for direction in ("download", "upload"):
            proxy, url = proxy_to(frozen_backend, rate, direction)
            for kind in KINDS:
                process = client(kind, url, calls, size)
                to_frozen_server.append(
                    Scenario(f"{kind} {direction} to a frozen server", kind, process, proxy, calls, direction)
                )
        everyone = scenarios + frozen_clients + to_frozen_server
        for scenario in everyone:
            try:
                scenario.connection_id, scenario.port = await ready(scenario.process)
            except DeferredTimeout as e:
                raise AssertionError(f"{scenario.name} never connected: {scenario.process.lines[-5:]}") from e
        # Every client is connected (the start-up of twenty processes is over): all start at once.
        for scenario in everyone:
            assert scenario.process.transport is not None
            scenario.process.transport.write(b"GO\n")

        drops = [server_drop(server, s.connection_id) for s in frozen_clients]
        closes = [timed_line(s.process, "CLOSED") for s in to_frozen_server]
        await sleep(FREEZE_AFTER)
        await until_moving(frozen_clients + to_frozen_server)
        for scenario in frozen_clients:
            scenario.process.freeze()
        frozen_server.freeze()
        frozen_at = time.monotonic()

        measured = await measure_drops(frozen_clients + to_frozen_server, drops + closes, frozen_at, to_frozen_server)
        for scenario in scenarios:
            # (the JS client's last line is AVOIDED, right after CLOSED)
            last = "AVOIDED" if scenario.kind in ("js", "browser") else "CLOSED"
            await scenario.process.wait_for_line(last).addTimeout(60, reactor())

        print(f"\n{'direct' if route is None else 'through nginx'}:")
        print("  server:", [line for line in server.lines if line.startswith("DISCONNECTED")])
        print("  frozen server:", [line for line in frozen_server.lines if line.startswith("DISCONNECTED")])
        for scenario in scenarios:
            done = next(line for line in scenario.process.lines if line.startswith(("DONE", "CLOSED")))
            print(f"  {scenario.name} ({scenario.connection_id}): {done}")
        print_drops(measured)

        for scenario in scenarios:
            assert all_ok(scenario.process, scenario.calls), (scenario.name, scenario.process.lines)
            if scenario.kind == "js" or (scenario.kind == "browser" and scenario.direction == "upload"):
                # Its beats waited behind 5 s messages: kept by the progress rule, not by luck.
                avoided = next(line for line in scenario.process.lines if line.startswith("AVOIDED"))
                assert int(avoided.split()[1]) >= 1, (scenario.name, avoided)
        server_timeouts = [line for line in server.lines if line.endswith(" timed-out")]
        live_ids = {scenario.connection_id for scenario in scenarios}
        assert not [line for line in server_timeouts if line.split()[1] in live_ids], server_timeouts
        check_drops(measured, to_frozen_server, server, route)
    finally:
        for scenario in scenarios + frozen_clients + to_frozen_server:
            await scenario.process.stop(reactor())
        for process in (server, frozen_server):
            await process.stop(reactor())
        for proxy in proxies:
            await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_frozen_peers_every_rate_and_direction(route: list[NginxProcess] | None) -> None:
    """
    The stopped peers the run above does not have, the same way: a client of
    each kind SIGSTOPped 2 s into its upload at 200 KB/s, and at 50 KB/s a
    client of each kind stopped in either direction and a server stopped
    while clients of each kind download or upload; each dropped within
    interval + timeout (+ slack) of the moment its bytes stopped moving.
    """
    server_beats = ("--interval", str(INTERVAL), "--timeout", str(TIMEOUT))
    server = spawn_script(reactor(), "heartbeat_server.py", *server_beats)
    frozen_server = spawn_script(reactor(), "heartbeat_server.py", *server_beats, "--socket-buffer", str(BUFFER))
    proxies: list[RateLimitingProxy] = []
    frozen_clients: list[Scenario] = []
    to_frozen_server: list[Scenario] = []

    def proxy_to(backend: int, rate: float, direction: str) -> tuple[RateLimitingProxy, str]:
        limits = (rate, None) if direction == "download" else (None, rate)
        proxy = RateLimitingProxy(reactor(), backend, *limits, socket_buffer=BUFFER)
        proxies.append(proxy)
        return proxy, f"ws://127.0.0.1:{proxy.listen()}/hub/probe"

    try:
        backends = []
        for process in (server, frozen_server):
            port = await process.started.addTimeout(30, reactor())
            if route is not None:
                nginx = start_nginx(port)
                route.append(nginx)
                port = nginx.port
            backends.append(port)
        live_backend, frozen_backend = backends
        for link, (rate, calls, size) in LINKS.items():
            for direction in ("download", "upload"):
                if (link, direction) == ("200KB/s", "download"):
                    continue  # in test_slow_links_every_client_kind
                proxy, url = proxy_to(live_backend, rate, direction)
                for kind in KINDS:
                    # Python clients shrink their socket buffers (--socket-buffer); Node cannot set SO_RCVBUF.
                    extra = ("--socket-buffer", str(BUFFER)) if kind != "js" else ()
                    process = client(kind, url, calls, size, *extra)
                    frozen_clients.append(
                        Scenario(f"frozen {kind} client, {direction} {link}", kind, process, proxy, calls, direction, rate)
                    )
        rate, calls, size = LINKS["50KB/s"]
        for direction in ("download", "upload"):
            proxy, url = proxy_to(frozen_backend, rate, direction)
            for kind in KINDS:
                process = client(kind, url, calls, size)
                to_frozen_server.append(
                    Scenario(f"{kind} {direction} 50KB/s to a frozen server", kind, process, proxy, calls, direction, rate)
                )
        everyone = frozen_clients + to_frozen_server
        for scenario in everyone:
            try:
                scenario.connection_id, scenario.port = await ready(scenario.process)
            except DeferredTimeout as e:
                raise AssertionError(f"{scenario.name} never connected: {scenario.process.lines[-5:]}") from e
        for scenario in everyone:
            assert scenario.process.transport is not None
            scenario.process.transport.write(b"GO\n")

        drops = [server_drop(server, s.connection_id) for s in frozen_clients]
        closes = [timed_line(s.process, "CLOSED") for s in to_frozen_server]
        await sleep(FREEZE_AFTER)
        await until_moving(frozen_clients + to_frozen_server)
        for scenario in frozen_clients:
            scenario.process.freeze()
        frozen_server.freeze()
        frozen_at = time.monotonic()
        measured = await measure_drops(frozen_clients + to_frozen_server, drops + closes, frozen_at, to_frozen_server)
        print(f"\n{'direct' if route is None else 'through nginx'}:")
        print_drops(measured)
        check_drops(measured, to_frozen_server, server, route)
    finally:
        for scenario in frozen_clients + to_frozen_server:
            await scenario.process.stop(reactor())
        for process in (server, frozen_server):
            await process.stop(reactor())
        for proxy in proxies:
            await proxy.stop()
