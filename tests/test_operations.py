"""
What operators see: /health (200, then 503 while shutting down),
/status.json after a scripted session, the live status page, the connect
and disconnect log lines, the startup banner, and /metrics over a real socket.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest_twisted
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_hub import HeartbeatPolicy, Hub, HubError, HubService, hub, method, set_log_level
from twisted_hub._ops.endpoints import STATUS_SCHEMA, StatusJsonPage
from twisted_hub._ops.service import listen_url, shutdown_connections
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

    def test_backplane_down_keeps_serving(self) -> None:
        """With Redis down /health stays 200 (this node serves its clients) and says the backplane is down."""
        from twisted_hub._ops.endpoints import HealthPage

        from .test_backplane import Cluster

        cluster = Cluster(1, running=False)
        page = HealthPage(cluster.servers[0].factory)

        def health() -> tuple[int, bytes]:
            request = DummyRequest([b""])
            body = page.render(request)  # type: ignore[no-untyped-call]
            return request.responseCode or 200, body

        self.assertEqual(health(), (200, b"ok\nbackplane disconnected: serving this node's connections only\n"))
        cluster.redis.start()
        cluster.flush()
        self.assertEqual(health(), (200, b"ok\n"))

    def test_metrics_only_when_enabled(self) -> None:
        """/metrics is 404 by default and the Prometheus text format with metrics=True."""
        plain = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock())
        self.assertEqual(get(plain, "/metrics")[0], 404)
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock(), metrics=True)
        status, text = get(service, "/metrics")
        self.assertEqual(status, 200)
        self.assertIn('twisted_hub_connections{hub="echo"} 0.0', text)


def read_status(page: StatusJsonPage) -> dict[str, Any]:
    """GET /status.json from C{page}, parsed."""
    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"host", [b"hub.example.com"])
    body = page.render(request)  # type: ignore[no-untyped-call]
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    return json.loads(body)  # type: ignore[no-any-return]


class StatusJsonTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = WorkLog()

    def read(self, page: StatusJsonPage) -> dict[str, Any]:
        return read_status(page)

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
        # 4 beats to each client, the live one answered all 4; the 4th beats are not due an answer yet
        self.assertEqual((heartbeat["sent"], heartbeat["answered"], heartbeat["success_rate"]), (8, 4, 0.5))
        server.advance(120.0)  # the window forgets what is older than a minute
        self.assertLess(self.read(page)["heartbeat"]["sent"], 122)


    def test_status_and_metrics_agree_on_heartbeats(self) -> None:
        """Read at the same moment, /status.json and /metrics count the same beats and answers, during and after a session."""
        server = HubTestServer([work_hub(self.log)], heartbeat=BEAT, metrics=True)
        page = StatusJsonPage(server.factory)
        assert server.factory.metrics is not None
        registry = server.factory.metrics.registry

        def both() -> tuple[tuple[int, int], tuple[float | None, float | None]]:
            heartbeat = self.read(page)["heartbeat"]
            metrics = (registry.get_sample_value("twisted_hub_server_heartbeats_sent_total"),
                       registry.get_sample_value("twisted_hub_server_heartbeats_answered_total"))
            return (heartbeat["sent"], heartbeat["answered"]), metrics

        stays = server.connect("work")
        server.advance(2.5)
        for _ in range(3):  # short connections, as CLI calls make: a beat, its answer, a normal close
            brief = server.connect("work")
            server.advance(1.0)
            brief.client.sendClose(1000)
            server.flush()
        status, metrics = both()
        self.assertEqual(status, metrics)
        frozen = server.connect("work")
        frozen.freeze_client()
        server.advance(5.0)  # its beats go unanswered until it times out
        stays.client.sendClose(1000)  # the last connection leaves: no tick follows its last beat
        server.flush()
        status, metrics = both()
        self.assertEqual(status, metrics)
        # beats: 2 to "stays" alone, 3 x 2 with a brief one, 5 more to "stays" and 4 to the frozen one (it times
        # out at 9 s, after its 4th beat); all answered but the frozen one's
        self.assertEqual(status, (17, 13))

    def test_abnormal_disconnects_are_kept_apart(self) -> None:
        """Many normal closes after a heartbeat timeout: recent_abnormal_disconnects still holds the timeout."""
        server = HubTestServer([work_hub(self.log)], heartbeat=BEAT)
        page = StatusJsonPage(server.factory)
        frozen = server.connect("work")
        frozen.freeze_client()
        server.advance(5.0)
        for _ in range(25):
            server.connect("work").client.sendClose(1000)
            server.flush()
        status = self.read(page)
        self.assertEqual([d["kind"] for d in status["recent_disconnects"]], ["normal"] * 20)
        [abnormal] = status["recent_abnormal_disconnects"]
        self.assertEqual((abnormal["kind"], abnormal["code"], abnormal["reason"]), ("timed-out", 4001, "heartbeat timeout"))


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

    def test_cli_example_names_a_served_hub(self) -> None:
        """The page's command-line example calls echo.echo only when echo is served, else a method of a served hub."""

        @hub("counter")
        class CounterHub(Hub):
            @method
            def incr(self, by: int, note: str = "") -> int:
                return by

            @method
            def get(self) -> int:
                return 0

        @hub("adder")
        class AdderHub(Hub):
            @method
            def add(self, a: int, b: int) -> int:
                return a + b

        def example(*hubs: type[Hub]) -> str:
            page = get(HubService(list(hubs), ["tcp:8080"], clock=MemoryReactorClock()), "/")[1]
            return page.split("python3 -m twisted_hub call ws://HOST:PORT/hub ", 1)[1].split("<", 1)[0]

        self.assertEqual(example(EchoHub), "echo.echo hello")
        self.assertEqual(example(CounterHub), "counter.get")
        self.assertEqual(example(AdderHub), "adder.add A B")
        self.assertEqual(example(AdderHub, CounterHub, EchoHub), "echo.echo hello")

    def test_no_status_no_json(self) -> None:
        """--no-status removes the JSON too; /health stays."""
        service = HubService([EchoHub], ["tcp:8080"], clock=MemoryReactorClock(), status_page=False)
        self.assertEqual(get(service, "/status.json")[0], 404)
        self.assertEqual(get(service, "/health")[0], 200)


SESSION_LOG = "twisted_hub._core.server_session"


@hub("sets")
class SetHub(Hub):
    @method
    def numbers(self) -> set[int]:
        return {1, 2}


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
                         ("work", protocol.connection_id, conn.server_protocol.peer))
        self.assertEqual((closed["hub"], closed["id"], closed["duration"], closed["kind"], closed["code"],
                          closed["reason"]), ("work", protocol.connection_id, 2.5, "normal", 1000, "done here"))
        self.assertEqual(formatEvent(closed), f"work connection {protocol.connection_id} closed: normal (1000) done here; "
                                              f"from {conn.server_protocol.peer} after 2.5s")

    def test_close_without_reason_or_code(self) -> None:
        """A normal close without a reason reads 'normal (1000); from ...', a lost connection 'connection-lost; from ...'."""
        server = HubTestServer([work_hub(WorkLog())])
        left, lost = server.connect("work"), server.connect("work")
        left.client.sendClose(1000)
        lost.drop()
        server.flush()
        texts = sorted(formatEvent(e) for e in self.connection_lines() if "closed" in e["log_format"])
        peer = left.server_protocol.peer
        self.assertEqual(texts, sorted([
            f"work connection {left.server_protocol.session.connection_id} closed: normal (1000); from {peer} after 0.0s",
            f"work connection {lost.server_protocol.session.connection_id} closed: connection-lost connection was closed "
            'uncleanly ("peer dropped the TCP connection without previous WebSocket closing handshake"); '
            f"from {peer} after 0.0s",
        ]))

    def test_json_log_holds_the_peer_address_itself(self) -> None:
        """In the JSON log, peer is the address (tcp4:...), not its repr in quotes."""
        import io

        from twisted.logger import eventsFromJSONLogFile, jsonFileLogObserver

        out = io.StringIO()
        observer = jsonFileLogObserver(out)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work")
        conn.client.sendClose(1000)
        server.flush()
        out.seek(0)
        peers = [e["peer"] for e in eventsFromJSONLogFile(out) if e.get("log_namespace") == CONNECTION_LOG]
        self.assertEqual(peers, [conn.server_protocol.peer] * 2)
        self.assertTrue(peers[0].startswith("tcp4:127.0.0.1:"), peers)

    def test_a_heartbeat_timeout_is_logged_once(self) -> None:
        """A server heartbeat timeout logs our line and the disconnect, and no autobahn 'dropping connection' warning."""
        server = HubTestServer([work_hub(WorkLog())], heartbeat=BEAT)
        conn = server.connect("work")
        conn.freeze_client()
        server.advance(5.0)
        self.assertTrue(conn.server_transport.disconnected)
        self.assertEqual([formatEvent(e) for e in self.logs if "dropping connection" in e.get("log_format", "")], [])
        ours = [formatEvent(e) for e in self.logs if e["log_level"].name != "debug"]
        cid = conn.server_protocol.session.connection_id
        self.assertEqual(ours[1:], [
            f"{cid} answered no heartbeat in time; closing",
            f"work connection {cid} closed: timed-out (4001) heartbeat timeout; from {conn.server_protocol.peer} after 4.0s",
        ])

    def test_a_client_heartbeat_timeout_is_logged_once(self) -> None:
        """The client's own heartbeat timeout does not make autobahn warn 'dropping connection' either."""
        from twisted_hub import HubClientOptions

        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work", options=HubClientOptions(heartbeat=BEAT))
        conn.freeze_server()
        server.advance(5.0)
        self.assertTrue(conn.client_transport.disconnected)
        self.assertEqual([formatEvent(e) for e in self.logs if "dropping connection" in e.get("log_format", "")], [])

    def test_failed_calls_are_logged_with_a_level(self) -> None:
        """An unknown method is an info line, a HubError a debug line; each names hub and method, once a second."""
        set_log_level("debug")
        self.addCleanup(set_log_level, "info")
        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work")
        cid = conn.server_protocol.session.connection_id
        for _ in range(5):
            conn.client.call("no_such_method").addErrback(lambda f: None)
        server.flush()
        server.advance(1.0)
        conn.client.call("fail", "teapot", "short and stout").addErrback(lambda f: None)
        server.flush()
        lines = [(e["log_level"].name, formatEvent(e)) for e in self.logs if e.get("log_namespace") == SESSION_LOG]
        self.assertEqual(lines, [
            ("info", f"call of 'no_such_method' on work connection {cid} failed: "
                     "[unknown-method] hub 'work' has no method 'no_such_method'"),
            ("debug", f"call of 'fail' on work connection {cid} failed: [teapot] short and stout"),
        ])

    def test_hub_errors_are_debug_only(self) -> None:
        """At the default level (info) a HubError answered to the client is not logged at all."""
        server = HubTestServer([work_hub(WorkLog())])
        conn = server.connect("work")
        conn.client.call("fail", "teapot", "short and stout").addErrback(lambda f: None)
        server.flush()
        self.assertEqual([e for e in self.logs if e.get("log_namespace") == SESSION_LOG], [])

    def test_a_result_that_cannot_be_encoded(self) -> None:
        """The error line names the hub and the method; the call counts as an error on the status page."""
        server = HubTestServer([SetHub])
        page = StatusJsonPage(server.factory)
        conn = server.connect("sets")
        failure = self.failureResultOf(self.call(server, conn, "numbers"), HubError)
        self.assertEqual(failure.value.code, "internal")  # type: ignore[attr-defined]
        [line] = [formatEvent(e) for e in self.logs if e["log_level"].name == "error"]
        self.assertIn("result of sets.numbers (call 1 on ", line)
        # msgpack's own words, which differ between its C extension and its pure-Python
        # fallback (msgpack 1.0.5 on Python 3.12+ has no wheel and runs as the fallback).
        with self.assertRaises(TypeError) as refused:
            msgpack.packb({1, 2})
        self.assertIn(f"the result cannot be encoded: {refused.exception}; answered [internal]", line)
        self.assertEqual(read_status(page)["hubs"]["sets"], {"connections": 1, "calls": 1, "errors": 1})

    def call(self, server: HubTestServer, conn: Any, method: str, *args: Any) -> Any:
        d = conn.client.call(method, *args)
        server.flush()
        return d

    def test_debug_lines_only_when_asked(self) -> None:
        """By default no debug event of twisted-hub reaches the global log (a .tac's log); set_log_level('debug') lets them."""
        def debug_lines() -> list[str]:
            return [e["log_format"] for e in self.logs if e["log_level"].name == "debug"]

        server = HubTestServer([work_hub(WorkLog())], heartbeat=BEAT)
        server.connect("work")
        server.advance(2.0)
        self.assertEqual(debug_lines(), [])
        set_log_level("debug", "twisted_hub._twisted.liveness")
        self.addCleanup(set_log_level, "info")
        server.advance(1.0)
        [line] = debug_lines()
        self.assertTrue(line.startswith("heartbeat {sequence} sent to {count} connections"), line)

    def test_log_level_names(self) -> None:
        """set_log_level takes the --log-level names; anything else is a clear error."""
        from twisted.logger import LogLevel

        from twisted_hub._support.logging import get_log_level

        self.addCleanup(set_log_level, "info")
        set_log_level("WARNING")
        self.assertEqual(get_log_level("twisted_hub.connections"), LogLevel.warn)
        with self.assertRaises(ValueError) as caught:
            set_log_level("verbose")
        self.assertIn("debug, info, warn, error, critical, got 'verbose'", str(caught.exception))

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
        set_log_level("debug")
        self.addCleanup(set_log_level, "info")
        logs: list[LogEvent] = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[assignment]
        server = HubTestServer([work_hub(WorkLog())], heartbeat=HeartbeatPolicy(enabled=True, interval=1.0, timeout=None))
        server.connect("work")
        [started] = [formatEvent(e) for e in logs if "heartbeat timer started" in e.get("log_format", "")]
        self.assertEqual(started, "heartbeat timer started: interval 1.0s, timeout never")
