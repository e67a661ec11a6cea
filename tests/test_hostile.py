"""
Hostile peers (issue 9): what one connection may cost the server, on every
way of serving it.

The first half runs on a Clock with in-memory transports: the accounting of
unread output (max_outgoing_buffer) and of queued calls (max_pending_bytes),
and the hand-over of the transport's producer behind twisted.web.  The second
half attacks a real server process over 127.0.0.1, once per serving path
(a bare factory on listenTCP, HubResource on a Site, twistd hub, and twistd
hub on an ssl endpoint, where TLS stands between the hub and the socket), and
measures its resident memory: a client that never reads, a ping flood whose
pongs are never read, a group member that stops reading during a broadcast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_twisted
from autobahn.twisted.resource import WebSocketResource
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_hub import DisconnectKind, ErrorCode, HubError, HubResource, HubServerFactory, HubService, connect
from twisted_hub.tap import Options, makeService
from twisted_hub.testing import HubTestServer, TestConnection
from twisted_hub.types import HubServerProtocol

from ._certs import write_self_signed
from ._twistd import Child, spawn_python, started_port, twistd_hub
from .helpers.hostile import HostileHub
from .helpers.hostile_client import masked_frame
from .helpers.hubs import ParallelHub, Recorder, WorkLog, hub_events, work_hub
from .test_tls import tls_endpoint

# -- unread output, on a Clock -------------------------------------------------


class OutgoingBufferTests(SynchronousTestCase):
    """max_outgoing_buffer counts every byte written after the transport said it is full."""

    limit = 4000

    def setUp(self) -> None:
        self.server = HubTestServer([HostileHub], max_outgoing_buffer=self.limit)
        self.logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def open(self, receiver: object | None = None) -> TestConnection:
        conn = self.server.connect("hostile", receiver=receiver)
        self.successResultOf(conn.ready)
        return conn

    def written(self, conn: TestConnection) -> int:
        """Bytes the server protocol took for the client: handed to its transport, or held while it is full."""
        return conn.server_protocol.output.bytes_sent

    def test_registered_as_the_transports_producer(self) -> None:
        """An open connection is its transport's streaming producer, so it learns when the buffer is full."""
        conn = self.open()
        self.assertIs(conn.server_transport.producer, conn.server_protocol)
        self.assertTrue(conn.server_transport.streamingProducer)

    def test_results_over_the_limit_drop_the_connection(self) -> None:
        """Results written while paused count; the one that would pass the limit is not written; the client is dropped (4004)."""
        conn = self.open()
        protocol = conn.server_protocol
        protocol.pauseProducing()  # what the transport does when its buffer is full
        before = self.written(conn)
        calls = [conn.client.call("echo", b"r" * 900) for _ in range(10)]
        self.server.flush()
        self.assertLessEqual(self.written(conn) - before, self.limit)
        self.assertGreater(self.written(conn) - before, self.limit - 1000)  # it did write up to the limit
        reason = protocol.session.lifecycle.decided
        assert reason is not None
        self.assertEqual((reason.kind, reason.code), (DisconnectKind.SLOW_CONSUMER, 4004))
        self.assertTrue(conn.closed)
        for d in calls:  # every call resolves: answered before the drop, or failed by it
            self.assertTrue(d.called)
            d.addErrback(lambda f: None)
        [warning] = hub_events(self.logs, "warn")
        self.assertEqual(warning["limit"], self.limit)

    def test_resume_starts_the_count_again(self) -> None:
        """Output written before the transport drained (resumeProducing) is not counted after it."""
        conn = self.open()
        protocol = conn.server_protocol
        for _ in range(3):
            protocol.pauseProducing()
            calls = [conn.client.call("echo", b"r" * 900) for _ in range(3)]
            self.server.flush()
            protocol.resumeProducing()  # the results held while it was full leave now
            self.server.flush()
            for d in calls:
                self.assertEqual(self.successResultOf(d), b"r" * 900)
        self.assertFalse(conn.closed)
        self.assertIsNone(protocol.session.lifecycle.decided)

    def test_repeated_pause_does_not_restart_the_count(self) -> None:
        """Twisted calls pauseProducing on every write while the buffer is full: the count goes on."""
        conn = self.open()
        protocol = conn.server_protocol
        protocol.pauseProducing()
        for _ in range(10):
            conn.client.call("echo", b"r" * 900).addErrback(lambda f: None)
            self.server.flush()
            protocol.pauseProducing()
        self.assertTrue(conn.closed)

    def test_the_write_that_fills_the_buffer_counts(self) -> None:
        """The write during which the transport pauses us is unread output too."""
        conn = self.open()
        protocol = conn.server_protocol
        transport = conn.server_transport
        original_write = transport.write

        def write(data: bytes) -> None:  # FileDescriptor.write: buffer, then pause the producer when full
            original_write(data)
            if len(data) > 3000:
                protocol.pauseProducing()

        transport.write = write  # type: ignore[method-assign]
        conn.client.call("echo", b"f" * 3000).addErrback(lambda f: None)
        self.server.flush()
        self.assertFalse(conn.closed)
        self.assertGreater(protocol.output.written_while_paused, 3000)
        conn.client.call("echo", b"s" * 1000).addErrback(lambda f: None)  # 3000 + 1000 > 4000
        self.server.flush()
        self.assertTrue(conn.closed)

    def test_pongs_count(self) -> None:
        """Pongs autobahn writes for the client's pings count: a ping flood with pongs unread is dropped."""
        conn = self.open()
        protocol = conn.server_protocol
        protocol.pauseProducing()
        before = self.written(conn)
        for _ in range(100):  # 100 pongs of 127 bytes, over the 4000-byte limit
            conn.client.sendPing(b"p" * 125)
        self.server.flush()
        self.assertLessEqual(self.written(conn) - before, self.limit)
        reason = protocol.session.lifecycle.decided
        assert reason is not None
        self.assertIs(reason.kind, DisconnectKind.SLOW_CONSUMER)

    def test_small_writes_count_their_overhead(self) -> None:
        """Each buffered write is charged its bookkeeping too, so many small frames cannot hold more memory than the limit."""
        conn = self.open()
        protocol = conn.server_protocol
        protocol.pauseProducing()
        pings = 0
        while not conn.closed and pings < 100:
            conn.client.sendPing(b"")  # a 2-byte pong each
            self.server.flush()
            pings += 1
        self.assertTrue(conn.closed)
        self.assertLess(pings, 100)  # 2 bytes each would take 2,000 pongs without the overhead

    def test_slow_group_member_leaves_the_group(self) -> None:
        """A member that stops reading during a broadcast is dropped (4004) and leaves the group; the others get everything."""
        healthy_receiver = Recorder()
        healthy, slow = self.open(healthy_receiver), self.open(Recorder())
        for conn in (healthy, slow):
            joined = conn.client.call("join", "room")
            self.server.flush()
            self.assertEqual(self.successResultOf(joined), conn.client.connection_id)
        runtime = self.server.factory.hub_runtime("hostile")
        self.assertEqual(runtime.groups.count("room"), 2)
        slow.server_protocol.pauseProducing()
        d = healthy.client.call("blast", "room", 1000, 10)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 10)
        self.assertTrue(slow.closed)
        self.assertEqual(runtime.groups.count("room"), 1)
        members = healthy.client.call("members", "room")
        self.server.flush()
        self.assertEqual(self.successResultOf(members), 1)
        self.assertEqual(len(healthy_receiver.calls), 10)
        reason = slow.server_protocol.session.lifecycle.decided
        assert reason is not None
        self.assertEqual(reason.code, 4004)


# -- the hand-over behind twisted.web -----------------------------------------

UPGRADE = (
    b"GET /hub/hostile HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: twisted-hub.v1\r\n\r\n"
)


class SocketLikeTransport(StringTransport):
    """A StringTransport that knows its protocol, as a TCP transport does (autobahn takes it over)."""

    protocol: Any = None


class SiteHandOverTests(SynchronousTestCase):
    """Behind twisted.web the hub connection, not the HTTP channel, is the transport's producer."""

    def connect_through_site(
        self, limit: int = 4000, resource: type[WebSocketResource] = HubResource
    ) -> tuple[SocketLikeTransport, Any]:
        clock = Clock()
        factory = HubServerFactory([HostileHub], clock=clock, max_outgoing_buffer=limit)
        root = Resource()  # type: ignore[no-untyped-call]
        root.putChild(b"hub", resource(factory))
        site = Site(root, reactor=clock)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = SocketLikeTransport()
        assert channel is not None
        transport.protocol = channel
        channel.makeConnection(transport)
        self.assertIsNotNone(transport.producer)  # the HTTP channel registered itself
        channel.dataReceived(UPGRADE)
        self.assertIn(b"101 Switching Protocols", transport.value())
        return transport, factory

    def test_hub_connection_is_the_producer(self) -> None:
        """After the upgrade the transport's producer is the hub connection."""
        transport, _ = self.connect_through_site()
        self.assertIsInstance(transport.producer, HubServerProtocol)
        self.assertTrue(transport.streaming)

    def test_also_behind_autobahns_resource(self) -> None:
        """Mounted with autobahn's own WebSocketResource, the hub connection becomes the producer too."""
        transport, factory = self.connect_through_site(resource=WebSocketResource)
        self.assertIsInstance(transport.producer, HubServerProtocol)
        self.assertEqual(factory.connection_count, 1)

    def test_slow_client_dropped_behind_the_site(self) -> None:
        """Paused by the transport behind a Site, the connection is dropped with 4004 at the limit."""
        transport, factory = self.connect_through_site()
        protocol = transport.producer
        protocol.dataReceived(masked_frame(0x2, msgpack.packb([0, {"caps": []}])))
        transport.clear()
        protocol.pauseProducing()
        for call_id in range(1, 11):
            protocol.dataReceived(masked_frame(0x2, msgpack.packb([2, call_id, "echo", [b"r" * 900]])))
        self.assertLessEqual(len(transport.value()), 4000)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.session.lifecycle.decided.code, 4004)


# -- queued calls: max_pending_bytes ------------------------------------------


class PendingBytesTests(SynchronousTestCase):
    """max_pending_bytes bounds the encoded size of the calls running or queued on one connection."""

    def setUp(self) -> None:
        self.log = WorkLog()

    def connect(self, hub_name: str, limit: int) -> TestConnection:
        self.server = HubTestServer([work_hub(self.log), work_hub(self.log, ParallelHub)], max_pending_bytes=limit)
        conn = self.server.connect(hub_name)
        self.successResultOf(conn.ready)
        return conn

    def test_queued_bytes_are_bounded(self) -> None:
        """Behind a blocked call, calls are queued until their bytes pass the limit; then too-many-pending."""
        conn = self.connect("work", 3000)
        calls = [conn.client.call("deferred", b"x" * 1000) for _ in range(4)]
        self.server.flush()
        for d in calls[:2]:
            self.assertNoResult(d)  # one running, one queued: about 2 x 1,020 bytes
        for d in calls[2:]:
            error = self.failureResultOf(d, HubError).value
            self.assertEqual(error.code, ErrorCode.TOO_MANY_PENDING)  # type: ignore[attr-defined]
            self.assertIn("3000 bytes", error.message)  # type: ignore[attr-defined]
        protocol = conn.server_protocol
        self.assertEqual(protocol.session.calls_in_progress, 2)
        small = conn.client.call("deferred", 1)  # a small one still fits
        self.server.flush()
        self.assertNoResult(small)
        while self.log.pending:
            self.log.pending.pop(0).callback(None)
            self.server.flush()
        self.assertEqual(self.successResultOf(calls[0]), b"x" * 1000)
        self.assertEqual(self.successResultOf(calls[1]), b"x" * 1000)
        self.assertEqual(self.successResultOf(small), 1)
        self.assertEqual((protocol.session.calls_in_progress, protocol.session.bytes_in_progress), (0, 0))
        again = [conn.client.call("deferred", b"x" * 1000) for _ in range(2)]  # room again
        self.server.flush()
        for d in again:
            self.assertNoResult(d)

    def test_notifications_over_the_limit_are_dropped(self) -> None:
        """A fire-and-forget call that would pass the byte limit is not run (it has no answer to carry an error)."""
        conn = self.connect("work", 3000)
        blocked = conn.client.call("deferred", b"x" * 2000)
        self.server.flush()
        conn.client.notify("record", b"n" * 2000)
        conn.client.notify("record", "small")
        self.server.flush()
        self.log.pending.pop(0).callback(None)
        self.server.flush()
        self.successResultOf(blocked)
        self.assertEqual([e for e in self.log.events if e[0] == "record"], [("record", "small")])

    def test_notifications_over_the_call_limit_are_dropped(self) -> None:
        """The same holds for max_pending_calls: a notification over it is not run."""
        self.server = HubTestServer([work_hub(self.log)], max_pending_calls=2)
        conn = self.server.connect("work")
        self.successResultOf(conn.ready)
        blocked = conn.client.call("deferred", 1)
        self.server.flush()
        for value in ("queued", "dropped"):
            conn.client.notify("record", value)
            self.server.flush()
        self.log.pending.pop(0).callback(None)
        self.server.flush()
        self.successResultOf(blocked)
        self.assertEqual([e for e in self.log.events if e[0] == "record"], [("record", "queued")])

    def test_running_concurrent_calls_count(self) -> None:
        """On a concurrent hub the calls still running count too."""
        conn = self.connect("parallel", 3000)
        calls = [conn.client.call("deferred", b"x" * 1000) for _ in range(3)]
        self.server.flush()
        self.assertEqual(len(self.log.pending), 2)
        self.assertEqual(self.failureResultOf(calls[2], HubError).value.code, ErrorCode.TOO_MANY_PENDING)  # type: ignore[attr-defined]
        self.log.pending.pop(0).errback(HubError("nope", "failed"))  # failed calls release their bytes too
        self.server.flush()
        self.failureResultOf(calls[0], HubError)
        late = conn.client.call("deferred", b"x" * 1000)
        self.server.flush()
        self.assertNoResult(late)

    def test_one_call_over_the_limit_runs_when_nothing_is_pending(self) -> None:
        """A call larger than the limit is not refused when nothing else is pending (it could never run otherwise)."""
        conn = self.connect("work", 100)
        d = conn.client.call("plain", b"y" * 500)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), b"y" * 500)
        blocked = conn.client.call("deferred", b"y" * 500)
        refused = conn.client.call("plain", b"y" * 10)
        self.server.flush()
        self.assertNoResult(blocked)
        self.assertEqual(self.failureResultOf(refused, HubError).value.code, ErrorCode.TOO_MANY_PENDING)  # type: ignore[attr-defined]

    def test_closing_releases_the_queue(self) -> None:
        """Calls queued when the connection closes are dropped with their bytes."""
        conn = self.connect("work", 10_000)
        for _ in range(3):
            conn.client.call("deferred", b"x" * 1000).addErrback(lambda f: None)
        self.server.flush()
        protocol = conn.server_protocol
        self.assertGreater(protocol.session.bytes_in_progress, 3000)
        conn.drop()
        self.server.flush()
        self.log.pending.pop(0).callback(None)  # the running call ends after the close
        self.assertEqual((protocol.session.calls_in_progress, protocol.session.bytes_in_progress), (0, 0))

    def test_limit_must_be_positive(self) -> None:
        """A zero limit is refused when the factory is built."""
        self.assertRaises(ValueError, HubServerFactory, [work_hub(self.log)], max_pending_bytes=0)


# -- configuration -------------------------------------------------------------


class LimitOptionTests(SynchronousTestCase):
    """The limits are options of twistd hub, of its TOML file and of HubService."""

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """Without options: 4 MiB of unread output, 256 calls and 8 MiB of calls pending."""
        options = self.parse()
        self.assertEqual(
            (options["max-outgoing-buffer"], options["max-pending-calls"], options["max-pending-bytes"]),
            (4 * 1024 * 1024, 256, 8 * 1024 * 1024),
        )
        factory = HubServerFactory([work_hub(WorkLog())], clock=Clock())
        self.assertEqual(
            (factory.max_outgoing_buffer, factory.max_pending_calls, factory.max_pending_bytes),
            (4 * 1024 * 1024, 256, 8 * 1024 * 1024),
        )

    def test_command_line_reaches_the_factory(self) -> None:
        """--max-outgoing-buffer, --max-pending-calls and --max-pending-bytes reach the factory twistd builds."""
        options = self.parse(
            "--port", "0", "--max-outgoing-buffer", "1MiB", "--max-pending-calls", "16", "--max-pending-bytes", "512KiB"
        )
        root = makeService(options)
        [service] = [s for s in root if isinstance(s, HubService)]  # type: ignore[attr-defined]
        factory = service.factory
        self.assertEqual(
            (factory.max_outgoing_buffer, factory.max_pending_calls, factory.max_pending_bytes),
            (1024 * 1024, 16, 512 * 1024),
        )

    def test_toml(self) -> None:
        """The same settings in the TOML file."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "hub.toml"
            path.write_text('max-outgoing-buffer = "2MiB"\nmax_pending_calls = 8\nmax-pending-bytes = 65536\n')
            options = self.parse("--config", str(path))
        self.assertEqual(
            (options["max-outgoing-buffer"], options["max-pending-calls"], options["max-pending-bytes"]),
            (2 * 1024 * 1024, 8, 65536),
        )

    def test_bad_values_are_usage_errors(self) -> None:
        """A bad limit stops twistd with a usage error naming the option."""
        for argv in (
            ["--max-outgoing-buffer", "0"],
            ["--max-outgoing-buffer", "lots"],
            ["--max-pending-bytes", "1GB"],
            ["--max-pending-calls", "0"],
            ["--max-pending-calls", "2.5"],
        ):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*argv)
            self.assertIn(argv[0], str(caught.exception))

    def test_hub_service_passes_them_on(self) -> None:
        """HubService builds its factory with the limits it is given."""
        service = HubService([work_hub(WorkLog())], max_outgoing_buffer=1000, max_pending_bytes=2000, clock=Clock())
        self.assertEqual((service.factory.max_outgoing_buffer, service.factory.max_pending_bytes), (1000, 2000))


# -- real processes over 127.0.0.1 ---------------------------------------------

#: The buffer limit the attacked servers run with.
LIMIT = 1024 * 1024
#: What the attack may cost the server: the limit + 10 %.
ALLOWED = LIMIT + LIMIT // 10
WAIT = 15.0  # seconds: the bound on every single wait
SERVING = ["listenTCP", "site", "twistd", "twistd-tls"]
#: RSS is read from /proc/PID/status, its peak reset through /proc/PID/clear_refs.
@pytest.fixture
def linux_proc() -> None:
    """These tests read RSS from Linux's /proc: without it they fail (never skip)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.fail("these tests read a process's RSS from /proc (Linux only)")


needs_proc = pytest.mark.usefixtures("linux_proc")


def _bench_common() -> Any:
    """bench/_common.py (not a package): where the bench and these tests read a process's memory."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "bench" / "_common.py"
    spec = importlib.util.spec_from_file_location("bench_common", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BENCH_COMMON = _bench_common()
memory = _BENCH_COMMON.memory
reset_peak = _BENCH_COMMON.reset_peak

class AttackedServer:
    """A server process serving HostileHub one way, with max_outgoing_buffer=LIMIT."""

    def __init__(self, serving: str) -> None:
        self.serving = serving
        self.child: Child | None = None
        self.port = 0
        self.attackers: list[Child] = []
        self.certificate: Path | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    async def start(self, reactor: Any) -> None:
        if self.serving.startswith("twistd"):
            listen = "tcp:0:interface=127.0.0.1"
            if self.serving == "twistd-tls":
                self._directory = tempfile.TemporaryDirectory()
                key, self.certificate = write_self_signed(Path(self._directory.name))
                listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={self.certificate}"
            self.child = twistd_hub(
                reactor, "--listen", listen, "--hub", "tests.helpers.hostile:HostileHub",
                "--max-outgoing-buffer", str(LIMIT),
            )
            self.port = await started_port(self.child, reactor, WAIT)
        else:
            mode = "tcp" if self.serving == "listenTCP" else "site"
            self.child = spawn_python(reactor, "-m", "tests.helpers.hostile", mode, str(LIMIT))
            self.port = int((await self.child.wait_for(r"^PORT (\d+)", reactor, WAIT)).group(1))

    @property
    def pid(self) -> int:
        assert self.child is not None and self.child.pid is not None
        return self.child.pid

    async def connect(self, receiver: object | None = None) -> Any:
        """A twisted-hub client (that reads)."""
        from twisted.internet import reactor

        if self.certificate is None:
            url, endpoint = f"ws://127.0.0.1:{self.port}/hub", None
        else:
            url, endpoint = f"wss://localhost:{self.port}/hub", tls_endpoint(reactor, self.port, self.certificate)
        return await connect(url, "hostile", receiver=receiver, clock=reactor, endpoint=endpoint, timeout=WAIT)  # type: ignore[arg-type]

    async def attack(self, reactor: Any, *mode: str) -> Child:
        """Start a client process that opens a connection and then never reads."""
        tls = ("--tls", str(self.certificate)) if self.certificate is not None else ()
        attacker = spawn_python(reactor, "-m", "tests.helpers.hostile_client", *tls, str(self.port), *mode)
        self.attackers.append(attacker)
        await attacker.wait_for(r"^ready$", reactor, WAIT)
        return attacker

    async def gone(self, reactor: Any, connection_id: str | None = None) -> tuple[str, int, str]:
        """The server's disconnect reason of the next (or the given) connection to close."""
        pattern = rf"GONE ({connection_id or '[-0-9a-f]+'}) (\d+) (\S+)"
        match = await self.child.wait_for(pattern, reactor, WAIT)  # type: ignore[union-attr]
        return match.group(1), int(match.group(2)), match.group(3)

    async def stop(self, reactor: Any) -> None:
        for attacker in self.attackers:
            await attacker.stop(reactor, 5.0)
        if self.child is not None:
            await self.child.stop(reactor, 10.0)
        if self._directory is not None:
            self._directory.cleanup()


async def running_server(serving: str) -> AttackedServer:
    from twisted.internet import reactor

    server = AttackedServer(serving)
    await server.start(reactor)
    return server


async def warm_up(server: AttackedServer, size: int, pings: int, receiver: object | None = None) -> Any:
    """A client that reads: the same kind of traffic once, so first-use allocations are in the baseline."""
    from twisted.internet import reactor

    client = await server.connect(receiver)
    for _ in range(8):
        assert await client.call("echo", b"w" * size).addTimeout(WAIT, reactor) == b"w" * size
    for _ in range(pings):
        client.sendPing(b"w" * 125)
    await client.call("members", "none").addTimeout(WAIT, reactor)
    return client


async def check_attack(server: AttackedServer, *mode: str, size: int = 64 * 1024, pings: int = 100) -> None:
    from twisted.internet import reactor

    healthy = await warm_up(server, size, pings)
    before = memory(server.pid)["VmRSS"]
    reset_peak(server.pid)
    await server.attack(reactor, *mode)
    connection_id, code, kind = await server.gone(reactor)
    peak = memory(server.pid)["VmHWM"]
    assert connection_id != healthy.connection_id
    assert (code, kind) == (4004, DisconnectKind.SLOW_CONSUMER.value)
    cost = peak - before
    assert cost <= ALLOWED, f"{server.serving}: the attack cost {cost} bytes of RSS, more than {ALLOWED}"
    # the server still serves everybody else
    assert await healthy.call("echo", b"after").addTimeout(WAIT, reactor) == b"after"
    await healthy.disconnect().addTimeout(WAIT, reactor)


@needs_proc
@pytest.mark.parametrize("serving", SERVING)
@pytest_twisted.ensureDeferred
async def test_client_that_never_reads(serving: str) -> None:
    """A client that never reads 400 echo results of 64 KiB costs at most the limit + 10 % and is dropped with 4004."""
    from twisted.internet import reactor

    server = await running_server(serving)
    try:
        await check_attack(server, "echo", "400", str(64 * 1024))
    finally:
        await server.stop(reactor)


@needs_proc
@pytest.mark.parametrize("serving", SERVING)
@pytest_twisted.ensureDeferred
async def test_ping_flood_with_pongs_unread(serving: str) -> None:
    """100,000 pings whose pongs are never read (12 MiB) cost at most the limit + 10 % and end in 4004."""
    from twisted.internet import reactor

    server = await running_server(serving)
    try:
        await check_attack(server, "ping", "100000", pings=1000)
    finally:
        await server.stop(reactor)


@needs_proc
@pytest.mark.parametrize("serving", SERVING)
@pytest_twisted.ensureDeferred
async def test_slow_group_member_during_broadcast(serving: str) -> None:
    """A member that stops reading during a broadcast is dropped (4004), leaves the group, costs at most the limit + 10 %."""
    from twisted.internet import reactor

    server = await running_server(serving)
    try:
        receiver = Recorder()
        healthy = await warm_up(server, 64 * 1024, 0, receiver)
        healthy_id = await healthy.call("join", "room").addTimeout(WAIT, reactor)
        await server.child.wait_for(rf"JOINED {healthy_id} room", reactor, WAIT)  # type: ignore[union-attr]
        for _ in range(4):  # warm the broadcast path up too
            await healthy.call("blast", "room", 64 * 1024, 4).addTimeout(WAIT, reactor)
        receiver.calls.clear()
        await server.attack(reactor, "join", "room")
        slow_id = (await server.child.wait_for(rf"JOINED (?!{healthy_id})(\S+) room", reactor, WAIT)).group(1)  # type: ignore[union-attr]
        assert await healthy.call("members", "room").addTimeout(WAIT, reactor) == 2
        before = memory(server.pid)["VmRSS"]
        reset_peak(server.pid)
        gone: Deferred[Any] = Deferred.fromCoroutine(server.gone(reactor, slow_id))
        sent = 0
        # Messages of 16 KiB: what one broadcast call allocates while it runs
        # (encoding, and over TLS the records for each member) is no unread
        # output, and stays small next to the limit.
        while not gone.called and sent < 1024:  # at most 1,024 x 16 KiB = 16 MiB
            await healthy.call("blast", "room", 16 * 1024, 4).addTimeout(WAIT, reactor)
            sent += 4
        _, code, kind = await gone
        peak = memory(server.pid)["VmHWM"]
        assert (code, kind) == (4004, DisconnectKind.SLOW_CONSUMER.value)
        assert await healthy.call("members", "room").addTimeout(WAIT, reactor) == 1
        assert peak - before <= ALLOWED, f"{serving}: the broadcast cost {peak - before} bytes of RSS"
        assert len(receiver.calls) == sent  # the member that reads got everything
        await healthy.disconnect().addTimeout(WAIT, reactor)
    finally:
        await server.stop(reactor)

