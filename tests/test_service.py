"""HubService and the graceful shutdown, on a task.Clock with in-memory connections."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import (
    ConnectionClosedError,
    DisconnectKind,
    Hub,
    HubArgumentError,
    HubServerFactory,
    HubService,
    HubStateError,
    hub,
    method,
)
from twisted_hub._ops.service import shutdown_connections
from twisted_hub._twisted.server import FactoryOptions, HubTestServerOptions, ResourceFactoryOptions
from twisted_hub.testing import HubTestServer
from twisted_hub.types import OriginPolicy


@hub("slow")
class SlowHub(Hub):
    """Its calls answer when the test says so (it fires what C{wait} added to C{pending})."""

    def __init__(self, pending: list[Deferred[str]]) -> None:
        self.pending = pending

    @method
    def wait(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.pending.append(d)
        return d

    @method
    def ping(self) -> str:
        return "pong"


class GracefulShutdownTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pending: list[Deferred[str]] = []
        self.server = HubTestServer([partial(SlowHub, self.pending)])

    def test_going_away_to_every_client(self) -> None:
        """Every client gets close code 1001 (GOING_AWAY); the Deferred fires once all are closed."""
        connections = [self.server.connect("slow") for _ in range(3)]
        self.server.flush()
        reasons = [c.client.wait_for_disconnect() for c in connections]
        done = shutdown_connections(self.server.factory, 10, self.server.clock)
        self.server.advance(0.1)
        self.assertEqual(self.successResultOf(done), 0)
        for reason in reasons:
            self.assertEqual(self.successResultOf(reason).kind, DisconnectKind.GOING_AWAY)
        self.assertEqual(self.server.factory.connection_count, 0)

    def test_no_connections(self) -> None:
        """With nobody connected, the shutdown completes at once."""
        done = shutdown_connections(self.server.factory, 10, self.server.clock)
        self.assertEqual(self.successResultOf(done), 0)

    def test_pending_call_answers_before_close(self) -> None:
        """A call in progress may still answer during the drain; the close comes after it."""
        connection = self.server.connect("slow")
        self.server.flush()
        call = connection.client.call("wait")
        self.server.flush()
        self.assertEqual(len(self.pending), 1)
        done = shutdown_connections(self.server.factory, 10, self.server.clock)
        self.server.advance(1)
        self.assertNoResult(call)
        self.assertTrue(connection.client.is_connected)
        self.pending[0].callback("finished")
        self.server.flush()
        self.assertEqual(self.successResultOf(call), "finished")
        self.server.advance(0.1)
        self.assertEqual(self.successResultOf(done), 0)
        self.assertEqual(connection.client.disconnect_reason.kind, DisconnectKind.GOING_AWAY)  # type: ignore[union-attr]

    def test_driven_by_events_not_polling(self) -> None:
        """The shutdown keeps two timers (drain, timeout) and closes a busy connection the moment its call answers."""
        connection = self.server.connect("slow")
        idle = self.server.connect("slow")
        self.server.flush()
        call = connection.client.call("wait")
        self.server.flush()
        before = len(self.server.clock.getDelayedCalls())
        done = shutdown_connections(self.server.factory, 10, self.server.clock)
        self.server.flush()
        self.assertEqual(len(self.server.clock.getDelayedCalls()) - before, 2)
        self.assertEqual(idle.client.disconnect_reason.kind, DisconnectKind.GOING_AWAY)  # type: ignore[union-attr]
        self.assertTrue(connection.client.is_connected)
        self.pending[0].callback("finished")
        self.server.flush()  # no time passes: the answer itself triggers the close
        self.assertEqual(self.successResultOf(call), "finished")
        self.assertEqual(connection.client.disconnect_reason.kind, DisconnectKind.GOING_AWAY)  # type: ignore[union-attr]
        self.assertEqual(self.successResultOf(done), 0)
        self.assertEqual(self.server.clock.getDelayedCalls(), [])

    def test_call_that_never_answers_fails(self) -> None:
        """A call still running when the drain ends fails on the client with the going-away reason."""
        connection = self.server.connect("slow")
        self.server.flush()
        call = connection.client.call("wait")
        self.server.flush()
        done = shutdown_connections(self.server.factory, 4, self.server.clock)
        self.server.advance(2.1)
        failure = self.failureResultOf(call, ConnectionClosedError)
        self.assertEqual(failure.value.reason.kind, DisconnectKind.GOING_AWAY)
        self.assertEqual(self.successResultOf(done), 0)

    def test_timeout_drops_stragglers(self) -> None:
        """A client that never answers the close is dropped at the timeout, not later."""
        connection = self.server.connect("slow")
        self.server.flush()
        connection.freeze_client()
        done = shutdown_connections(self.server.factory, 3, self.server.clock)
        self.server.advance(2.9)
        self.assertNoResult(done)
        self.server.advance(0.2)
        self.assertEqual(self.successResultOf(done), 1)


class HubServiceTests(SynchronousTestCase):
    def test_is_a_service_in_a_multiservice(self) -> None:
        """HubService provides IService and can be added to an existing MultiService."""
        application = MultiService()
        service = HubService([partial(SlowHub, [])], ["tcp:0"], clock=MemoryReactorClock())
        service.setServiceParent(application)
        self.assertTrue(IService.providedBy(service))
        self.assertIn(service, list(application))
        self.assertIsInstance(service.factory.allowed_origins, OriginPolicy)

    def test_stop_service_shuts_connections_down(self) -> None:
        """stopService of a HubService wrapping an existing factory closes its connections gracefully."""
        server = HubTestServer([partial(SlowHub, [])])
        service = HubService(factory=server.factory, shutdown_timeout=5, clock=server.clock)
        service.startService()
        connection = server.connect("slow")
        server.flush()
        stopped = service.stopService()
        server.advance(0.1)
        self.successResultOf(stopped)
        self.assertEqual(connection.client.disconnect_reason.kind, DisconnectKind.GOING_AWAY)  # type: ignore[union-attr]
        self.assertFalse(service.running)

    def test_stop_service_stops_listening_first(self) -> None:
        """The listeners stop before the connections are closed, so nobody new gets in."""
        server = HubTestServer([partial(SlowHub, [])], clock=MemoryReactorClock())
        service = HubService(factory=server.factory, listen=["tcp:0"], clock=server.clock)
        service.privilegedStartService()
        service.startService()
        ports: list[Any] = []
        service.listening_ports().addCallback(ports.extend)
        self.assertEqual(len(ports), 1)
        connection = server.connect("slow")
        server.flush()
        open_when_port_stopped: list[bool] = []
        ports[0].stopListening = lambda: open_when_port_stopped.append(server.factory.connection_count == 1)
        stopped = service.stopService()
        self.assertEqual(open_when_port_stopped, [True])
        server.advance(0.1)
        self.successResultOf(stopped)
        self.assertFalse(connection.client.is_connected)

    def test_drain_delay_keeps_listening_while_health_says_503(self) -> None:
        """With drain_delay, /health's draining flag is set at once and the listeners close only after the delay."""
        server = HubTestServer([partial(SlowHub, [])], clock=MemoryReactorClock())
        service = HubService(factory=server.factory, listen=["tcp:0"], clock=server.clock, drain_delay=5.0)
        service.privilegedStartService()
        service.startService()
        ports: list[Any] = []
        service.listening_ports().addCallback(ports.extend)
        stopped_at: list[float] = []
        ports[0].stopListening = lambda: stopped_at.append(server.clock.seconds())
        stopped = service.stopService()
        self.assertTrue(server.factory.draining)
        server.advance(4.9)
        self.assertEqual(stopped_at, [])
        server.advance(0.2)
        self.assertEqual(stopped_at, [5.0])
        server.advance(0.1)
        self.successResultOf(stopped)

    def test_ports_held_from_start_to_stop(self) -> None:
        """The service binds each endpoint when started, hands out the ports, and closes them when stopped."""
        reactor = MemoryReactorClock()
        service = HubService([partial(SlowHub, [])], ["tcp:8123:interface=127.0.0.1", "tcp:8124"], clock=reactor)
        with self.assertRaises(HubStateError):
            service.listening_ports()
        service.privilegedStartService()
        service.startService()  # bound already by privilegedStartService: nothing more
        self.assertEqual([port for port, *_ in reactor.tcpServers], [8123, 8124])
        ports = self.successResultOf(service.listening_ports())
        self.assertEqual([port.getHost().port for port in ports], [8123, 8124])
        closed: list[int] = []
        for port, number in zip(ports, (8123, 8124), strict=True):
            port.stopListening = lambda number=number: closed.append(number)  # type: ignore[method-assign]
        stopped = service.stopService()
        reactor.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(closed, [8123, 8124])
        with self.assertRaises(RuntimeError):  # a HubStateError is one
            service.listening_ports()

    def test_bind_failure_raises_at_start(self) -> None:
        """A port that cannot be bound raises from privilegedStartService; the ones bound before it close at stop."""

        class Taken(MemoryReactorClock):
            def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))

        reactor = Taken()
        service = HubService([partial(SlowHub, [])], ["unix:/tmp/hub-bound.sock", "tcp:8123"], clock=reactor)
        with self.assertRaises(CannotListenError):
            service.privilegedStartService()
        (bound,) = self.successResultOf(service.listening_ports())
        closed: list[bool] = []
        bound.stopListening = lambda: closed.append(True)  # type: ignore[method-assign]
        self.successResultOf(service.stopService())
        self.assertEqual(closed, [True])

    def test_reactor_keyword_deprecated_but_kept(self) -> None:
        """reactor= warns (DeprecationWarning) and still names the listening reactor, with clock= for the timers."""
        reactor = MemoryReactor()
        server = HubTestServer([partial(SlowHub, [])])
        service = HubService(factory=server.factory, listen=["tcp:0"], reactor=reactor, clock=server.clock, drain_delay=1.0)
        warnings = self.flushWarnings([self.test_reactor_keyword_deprecated_but_kept])
        self.assertEqual([w["category"] for w in warnings], [DeprecationWarning])
        self.assertEqual(
            warnings[0]["message"],
            "The 'reactor' parameter to twisted_hub._ops.service.HubService.__init__ was deprecated in twisted_hub 0.1.0;"
            " please use clock instead",
        )
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        stopped = service.stopService()
        server.advance(1.1)
        self.successResultOf(stopped)

    def test_arguments_checked(self) -> None:
        """Hubs and a factory are exclusive, and the shutdown timeout must be positive."""
        server = HubTestServer([partial(SlowHub, [])])
        with self.assertRaises(TypeError):
            HubService([partial(SlowHub, [])], factory=server.factory)
        with self.assertRaises(TypeError):
            HubService()
        with self.assertRaises(ValueError):
            HubService([partial(SlowHub, [])], shutdown_timeout=0)
        with self.assertRaises(TypeError):
            HubService(factory=server.factory, max_message_size=10)
        for misuse in (
            lambda: HubService([partial(SlowHub, [])], factory=server.factory),
            lambda: HubService([partial(SlowHub, [])], drain_delay=-1),
            lambda: HubService([partial(SlowHub, [])], redis="redis://127.0.0.1", backplane=object()),  # warns too
        ):
            with self.assertRaises(HubArgumentError):
                misuse()


class FactoryOptionsTests(SynchronousTestCase):
    def test_factory_options_are_the_factorys_keywords(self) -> None:
        """The typed **factory_options of HubService, HubResource and HubTestServer name the factory's keywords, typed alike."""
        factory_keywords = {
            name: parameter.annotation for name, parameter in inspect.signature(HubServerFactory.__init__).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        }
        for options, own in (
            (FactoryOptions, {"clock", "reactor", "heartbeat", "allowed_origins"}),  # HubService's own parameters
            (ResourceFactoryOptions, {"reactor"}),  # deprecated
            (HubTestServerOptions, {"clock", "reactor", "url"}),  # HubTestServer sets them
        ):
            self.assertEqual(set(options.__annotations__), set(factory_keywords) - own, options.__name__)
            for name, annotation in options.__annotations__.items():
                written = annotation.__forward_arg__ if hasattr(annotation, "__forward_arg__") else str(annotation)
                self.assertEqual(written, factory_keywords[name], name)

    def test_factory_options_reach_the_factory(self) -> None:
        """A factory keyword given to HubService is the built factory's setting."""
        service = HubService([partial(SlowHub, [])], max_message_size=4096, debug=True)
        self.assertEqual((service.factory.max_message_size, service.factory.debug), (4096, True))


class OriginPolicyTests(SynchronousTestCase):
    def request(self, origin: str | None, host: str) -> Any:
        class Request:
            pass

        request = Request()
        request.origin = origin  # type: ignore[attr-defined]
        request.headers = {"host": host}  # type: ignore[attr-defined]
        return request

    def test_same_host_by_default(self) -> None:
        """The default allows non-browsers and pages from the same host name only."""
        policy = OriginPolicy()
        self.assertTrue(policy(self.request(None, "hub.example.com")))
        self.assertTrue(policy(self.request("https://hub.example.com", "hub.example.com:8080")))
        self.assertTrue(policy(self.request("http://[::1]:3000", "[::1]:8080")))
        self.assertFalse(policy(self.request("https://evil.example", "hub.example.com")))
        self.assertFalse(policy(self.request("null", "hub.example.com")))

    def test_listed_origins(self) -> None:
        """Listed origins match exactly (scheme, host, port), case-insensitively, default ports ignored."""
        policy = OriginPolicy(["https://app.example.com"])
        self.assertTrue(policy(self.request("https://APP.example.com:443", "hub.example.com")))
        self.assertFalse(policy(self.request("http://app.example.com", "hub.example.com")))
        self.assertFalse(policy(self.request("https://hub.example.com", "hub.example.com")))
        self.assertTrue(OriginPolicy(["*"])(self.request("https://anything.example", "x")))


class _Registry:
    def __init__(self, sessions: int) -> None:
        self.sessions = sessions
        self.moved_out = 0

    def __len__(self) -> int:
        return self.sessions


class _Factory:
    def __init__(self, *registries: _Registry) -> None:
        self.resume_registries = {f"hub{i}": registry for i, registry in enumerate(registries)}


def test_the_handover_wait_ends_when_every_session_moved() -> None:
    """SessionHandover (rolling restarts) fires with 0 at the first check after the last session moved away."""
    from twisted.internet.task import Clock

    from twisted_hub._ops.service import SessionHandover

    clock = Clock()
    first, second = _Registry(2), _Registry(1)
    outcome: list[int] = []
    SessionHandover(_Factory(first, second), 5.0, clock).start().addCallback(outcome.append)  # type: ignore[arg-type]
    clock.advance(1.0)
    assert outcome == []
    first.sessions, first.moved_out = 0, 2
    clock.advance(0.1)
    assert outcome == []
    second.sessions, second.moved_out = 0, 1
    clock.advance(0.1)
    assert outcome == [0]


def test_the_handover_wait_gives_up_at_its_timeout_with_the_count_left() -> None:
    from twisted.internet.task import Clock

    from twisted_hub._ops.service import SessionHandover

    clock = Clock()
    outcome: list[int] = []
    SessionHandover(_Factory(_Registry(3)), 5.0, clock).start().addCallback(outcome.append)  # type: ignore[arg-type]
    clock.pump([0.1] * 49)
    assert outcome == []
    clock.pump([0.1] * 2)
    assert outcome == [3]
    # nothing to wait for: at once
    SessionHandover(_Factory(_Registry(0)), 5.0, clock).start().addCallback(outcome.append)  # type: ignore[arg-type]
    assert outcome == [3, 0]
