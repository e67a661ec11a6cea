"""
What operators see: /health (200, then 503 while shutting down),
/status.json after a scripted session, the live status page, the connect
and disconnect log lines, the startup banner, and /metrics over a real socket.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_hub import HeartbeatPolicy, HubError, HubService
from twisted_hub._ops import STATUS_SCHEMA, StatusJsonPage
from twisted_hub._ratelimit import peer_text
from twisted_hub._service import listen_url, shutdown_connections
from twisted_hub.demo import EchoHub
from twisted_hub.testing import HubTestServer

from .helpers.hubs import CONNECTION_LOG, WorkLog, work_hub
from .test_status_page import get

BEAT = HeartbeatPolicy(enabled=True, interval=1.0, timeout=3.0)


class HealthTests(SynchronousTestCase):
    def test_ok_then_draining(self) -> None:
        """GET /health answers 200 while serving and 503 once stopService began the graceful shutdown."""
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock())
        service.startService()
        self.assertEqual(get(service, "/health"), (200, "ok\n"))
        service.stopService()
        self.assertEqual(get(service, "/health"), (503, "draining\n"))

    def test_shutdown_alone_drains(self) -> None:
        """shutdown_connections (for embedders with their own site) also turns /health to 503."""
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock())
        shutdown_connections(service.factory, 1.0, MemoryReactorClock())
        self.assertEqual(get(service, "/health")[0], 503)

    def test_metrics_only_when_enabled(self) -> None:
        """/metrics is 404 by default and the Prometheus text format with metrics=True."""
        plain = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock())
        self.assertEqual(get(plain, "/metrics")[0], 404)
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock(), metrics=True)
        status, text = get(service, "/metrics")
        self.assertEqual(status, 200)
        self.assertIn('twisted_hub_connections{hub="echo"} 0.0', text)


class StatusJsonTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = WorkLog()

    def read(self, page: StatusJsonPage) -> dict[str, Any]:
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"host", [b"hub.example.com"])
        body = page.render(request)  # type: ignore[no-untyped-call]
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])
        return json.loads(body)  # type: ignore[no-any-return]

    def test_after_a_session(self) -> None:
        """Connections, heartbeat success and p50/p99, calls/s, errors/s and disconnects reflect what happened."""
        server = HubTestServer([work_hub(self.log)], heartbeat=BEAT)
        server.factory.doStart()
        page = StatusJsonPage(server.factory)
        slow, fast, leaving = (server.connect("work") for _ in range(3))
        for _ in range(6):
            fast.client.call("plain", 1)
        failed = [fast.client.call("no_such_method"), fast.client.call("fail", "teapot", "short")]
        server.flush()
        for d in failed:
            self.failureResultOf(d, HubError)
        slow.set_latency(0.1)
        fast.set_latency(0.005)
        leaving.client.sendClose(1000, "bye")
        server.flush()
        server.advance(10.0)
        status = self.read(page)
        self.assertEqual(status["schema"], STATUS_SCHEMA)
        self.assertEqual(status["uptime"], 10.0)
        self.assertEqual(status["connections"], 2)
        self.assertEqual(status["hubs"]["work"], {"connections": 2, "calls": 8, "errors": 2})
        self.assertAlmostEqual(status["calls_per_s"], 0.8)
        self.assertAlmostEqual(status["errors_per_s"], 0.2)
        heartbeat = status["heartbeat"]
        self.assertEqual(heartbeat["success_rate"], 1.0)
        # 10 beats to 2 clients; one answers in 10 ms, one in 200 ms
        self.assertAlmostEqual(heartbeat["latency_p50"], 0.01)
        self.assertAlmostEqual(heartbeat["latency_p99"], 0.2)
        [disconnect] = status["recent_disconnects"]
        self.assertEqual((disconnect["hub"], disconnect["kind"], disconnect["code"], disconnect["reason"]),
                         ("work", "normal", 1000, "bye"))
        for key in ("version", "server_time", "draining"):
            self.assertIn(key, status)
        # within the minute, the next reading still averages from the start ...
        server.advance(5.0)
        self.assertAlmostEqual(self.read(page)["calls_per_s"], 8 / 15)
        # ... a minute later, from the readings of the last minute
        server.advance(65.0)
        self.assertEqual(self.read(page)["calls_per_s"], 0.0)

    def test_heartbeat_failures_lower_the_success_rate(self) -> None:
        """A frozen client's unanswered beats show in the success rate of the last minute."""
        server = HubTestServer([work_hub(self.log)], heartbeat=HeartbeatPolicy(enabled=True, interval=1.0, timeout=None))
        page = StatusJsonPage(server.factory)
        server.connect("work")
        frozen = server.connect("work")
        frozen.freeze_client()
        server.advance(4.5)
        heartbeat = self.read(page)["heartbeat"]
        self.assertEqual((heartbeat["sent"], heartbeat["answered"]), (6, 3))  # the 4th beat is not due an answer yet
        server.advance(120.0)  # the window forgets what is older than a minute
        self.assertLess(self.read(page)["heartbeat"]["sent"], 122)


class StatusPageTests(SynchronousTestCase):
    def test_live_page(self) -> None:
        """The page carries its stylesheet and script inline, reads /status.json and loads nothing from elsewhere."""
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock())
        status, page = get(service, "/")
        self.assertEqual(status, 200)
        self.assertIn("<style>", page)
        self.assertIn('<script data-status-url="/status.json">', page)
        for element in ('id="hb-rate"', 'id="hb-latency"', 'id="calls"', 'id="errors"', 'id="disconnects"'):
            self.assertIn(element, page)
        self.assertNotIn("src=", page)
        self.assertNotIn("https://", page)
        self.assertEqual(get(service, "/status.json")[0], 200)

    def test_moved_page_reads_its_own_json(self) -> None:
        """With --status-path /ops the page is at /ops and reads /ops.json."""
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock(), status_path="/ops")
        self.assertIn('data-status-url="/ops.json"', get(service, "/ops")[1])
        self.assertEqual(json.loads(get(service, "/ops.json")[1])["hubs"], {"echo": {"connections": 0, "calls": 0,
                                                                                   "errors": 0}})

    def test_no_status_no_json(self) -> None:
        """--no-status removes the JSON too; /health stays."""
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock(), status_page=False)
        self.assertEqual(get(service, "/status.json")[0], 404)
        self.assertEqual(get(service, "/health")[0], 200)


class LogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.logs: list[LogEvent] = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[assignment]

    def connection_lines(self) -> list[LogEvent]:
        return [e for e in self.logs if e.get("log_namespace") == CONNECTION_LOG]

    def test_one_line_per_connect_and_disconnect(self) -> None:
        """Connect and disconnect each log one info line with hub, id, peer, duration and reason as fields."""
        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work")
        protocol = conn.server_protocol.session
        server.clock.advance(2.5)
        conn.client.sendClose(1000, "done here")
        server.flush()
        opened, closed = self.connection_lines()
        self.assertEqual({e["log_level"].name for e in (opened, closed)}, {"info"})
        self.assertEqual((opened["hub"], opened["id"], opened["peer"]),
                         ("work", protocol.connection_id, peer_text(conn.server_protocol.peer)))
        self.assertEqual((closed["hub"], closed["id"], closed["duration"], closed["kind"], closed["code"],
                          closed["reason"]), ("work", protocol.connection_id, 2.5, "normal", 1000, "done here"))
        self.assertEqual(formatEvent(closed), f"work connection {protocol.connection_id} closed: normal (1000) done here; "
                                              f"from {peer_text(conn.server_protocol.peer)} after 2.5s")

    def test_peer_chosen_reason_is_bounded(self) -> None:
        """A long close reason from the peer is cut in the log line."""
        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work")
        conn.client.sendClose(1000, "x" * 120)
        server.flush()
        closed = self.connection_lines()[-1]
        self.assertLessEqual(len(closed["reason"]), 130)

    def test_startup_banner(self) -> None:
        """Starting a listening service logs the version, URLs, hubs with their paths and the heartbeat policy."""
        from twisted_hub import __version__

        service = HubService([EchoHub], ["tcp:8080:interface=127.0.0.1"], clock=MemoryReactorClock(),
                             heartbeat=HeartbeatPolicy(enabled=True, interval=5.0, timeout=15.0))
        service.startService()
        self.addCleanup(service.stopService)
        [banner] = [e for e in self.logs if "version" in e and "urls" in e]
        self.assertEqual(banner["version"], __version__)
        self.assertEqual(banner["urls"], "ws://127.0.0.1:8080/hub")
        self.assertEqual(banner["hubs"], {"echo": "/hub/echo"})
        self.assertEqual(banner["heartbeat_policies"], {"echo": "every 5 s, timeout 15 s"})

    def test_listen_urls(self) -> None:
        """Listen descriptions become URLs without file names or options."""
        self.assertEqual(listen_url("tcp:8080", "/hub"), "ws://0.0.0.0:8080/hub")
        self.assertEqual(listen_url(r"ssl:8443:privateKey=/k.pem:certKey=/c.pem:interface=\:\:1", "/h"),
                         "wss://[::1]:8443/h")
        self.assertEqual(listen_url("8080", "/hub"), "ws://0.0.0.0:8080/hub")


@pytest_twisted.ensureDeferred
async def test_metrics_over_a_real_socket() -> None:
    """A real client's call shows up in /metrics fetched over 127.0.0.1."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    from twisted_hub import connect

    from .test_loopback import bounded

    service = HubService([EchoHub], ["tcp:0:interface=127.0.0.1"], metrics=True)
    service.startService()
    try:
        [port] = await bounded(service.listening_ports())
        number = port.getHost().port
        client = await bounded(connect(f"ws://127.0.0.1:{number}/hub/echo", clock=reactor, timeout=10.0))
        assert await bounded(client.call("echo", "hi")) == "hi"
        response = await bounded(Agent(reactor).request(b"GET", f"http://127.0.0.1:{number}/metrics".encode()))
        text = (await bounded(readBody(response))).decode()
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
        assert 'twisted_hub_connections{hub="echo"} 1.0' in text
        assert 'twisted_hub_calls_total{hub="echo",method="echo",outcome="ok"} 1.0' in text
        await bounded(client.disconnect())
    finally:
        await bounded(service.stopService())


class MetricsOptionTests(SynchronousTestCase):
    def test_flag_and_toml(self) -> None:
        """twistd hub --metrics and TOML metrics = true build a factory with metrics; without, none."""
        import tempfile
        from pathlib import Path

        from twisted_hub.tap import makeService

        from .test_tap import parse

        def factory_of(*argv: str) -> Any:
            [service] = [s for s in makeService(parse(*argv)) if isinstance(s, HubService)]  # type: ignore[attr-defined]
            return service.factory

        self.assertIsNone(factory_of().metrics)
        self.assertIsNotNone(factory_of("--metrics").metrics)
        with tempfile.TemporaryDirectory() as directory:
            config = Path(directory) / "hub.toml"
            config.write_text("metrics = true\n")
            self.assertIsNotNone(factory_of("--config", str(config)).metrics)


class VersionTests(SynchronousTestCase):
    def test_twistd_hub_version(self) -> None:
        """twistd hub --version prints our version (with Twisted's and autobahn's) and exits 0."""
        import io
        from contextlib import redirect_stdout

        from twisted_hub import __version__

        from .test_tap import parse

        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            parse("--version")
        self.assertEqual(caught.exception.code, 0)
        self.assertTrue(out.getvalue().startswith(f"twisted-hub {__version__} (Twisted "), out.getvalue())

    def test_module_version(self) -> None:
        """python3 -m twisted_hub --version prints our version and exits 0."""
        import io
        from contextlib import redirect_stdout

        from twisted_hub import __version__
        from twisted_hub.__main__ import parse_args

        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            parse_args(["--version"])
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(out.getvalue(), f"twisted-hub {__version__}\n")


class HeartbeatLogTests(SynchronousTestCase):
    def test_no_timeout_reads_never(self) -> None:
        """The heartbeat timer's debug line says 'timeout never', not 'timeout=Nones'."""
        logs: list[LogEvent] = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[assignment]
        server = HubTestServer([work_hub(WorkLog())], heartbeat=HeartbeatPolicy(enabled=True, interval=1.0, timeout=None))
        server.connect("work")
        [started] = [formatEvent(e) for e in logs if "heartbeat timer started" in e.get("log_format", "")]
        self.assertEqual(started, "heartbeat timer started: interval 1.0s, timeout never")
