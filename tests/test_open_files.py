"""
The open-file limit: a warning at start-up (HubService, and so C{twistd hub};
a bare HubServerFactory on its first port; a ConnectionGuard in front of a
site) when RLIMIT_NOFILE's soft limit is below the connection cap plus
headroom, once per server.
"""

from __future__ import annotations

import resource
from typing import Any

import pytest_twisted
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from twisted_hub import ConnectionGuard, HubResource, HubServerFactory, HubService
from twisted_hub._twisted import limits as limits_module
from twisted_hub._twisted.limits import OPEN_FILE_HEADROOM, open_file_limit, open_file_limit_warning
from twisted_hub.demo import DEMO_HUBS

from ._twistd import ROOT, spawn_python


class WarningTextTests(SynchronousTestCase):
    def test_enough(self) -> None:
        """A soft limit of at least the cap + headroom, an unlimited one, or no cap at all: nothing to say."""
        self.assertIsNone(open_file_limit_warning(10_000, (10_000 + OPEN_FILE_HEADROOM, 20_000)))
        self.assertIsNone(open_file_limit_warning(10_000, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)))
        self.assertIsNone(open_file_limit_warning(None, (1024, 1024)))
        self.assertIsNone(open_file_limit_warning(10_000, None))

    def test_too_low(self) -> None:
        """Below it: the limit, the cap, how many connections fit, and the three ways out are named."""
        text = open_file_limit_warning(10_000, (1024, 524_288))
        assert text is not None
        for part in ("1024", "max_connections 10000", "about 924 connections", "LimitNOFILE=10100",
                     "ulimit -n 10100", "docs/deploying.md"):
            self.assertIn(part, text)
        self.assertNotIn("hard limit", text)

    def test_hard_limit_too_low_too(self) -> None:
        """When the hard limit is below it as well, the warning says only root can raise it."""
        text = open_file_limit_warning(10_000, (1024, 4096))
        assert text is not None
        self.assertIn("hard limit (4096)", text)

    def test_reads_this_process(self) -> None:
        """open_file_limit() is getrlimit(RLIMIT_NOFILE) of this process."""
        self.assertEqual(open_file_limit(), tuple(resource.getrlimit(resource.RLIMIT_NOFILE)))


def _warnings(logs: list[Any]) -> list[Any]:
    return [e for e in logs if "open-file limit" in e.get("open_files", "")]


class ServiceStartTests(SynchronousTestCase):
    def start(self, limit: tuple[int, int], max_connections: int | None) -> list[Any]:
        self.patch(limits_module, "open_file_limit", lambda: limit)
        logs: list[Any] = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[assignment]
        service = HubService(DEMO_HUBS, clock=MemoryReactorClock(), max_connections=max_connections)
        service.startService()
        self.addCleanup(service.stopService)
        return _warnings(logs)

    def test_warns_when_below_the_cap(self) -> None:
        """HubService.startService logs one warning when the soft limit is below max_connections + headroom."""
        [event] = self.start((1024, 1024), 5000)
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["max_connections"], 5000)

    def test_silent_when_enough(self) -> None:
        """Enough files for the cap, or no cap: no warning."""
        self.assertEqual(self.start((65536, 65536), 5000), [])
        self.assertEqual(self.start((1024, 1024), None), [])


class OtherWaysOfServingTests(SynchronousTestCase):
    """Without HubService: a factory on its own port, or a guarded site, warns as it starts, once per server."""

    def setUp(self) -> None:
        self.patch(limits_module, "open_file_limit", lambda: (1024, 1024))
        self.logs: list[Any] = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[assignment]

    def test_bare_factory(self) -> None:
        """listenTCP(port, factory) starts the factory: one warning, however many ports start it."""
        factory = HubServerFactory(DEMO_HUBS, clock=MemoryReactorClock(), max_connections=5000)
        factory.doStart()  # type: ignore[no-untyped-call]
        factory.doStart()  # type: ignore[no-untyped-call]  # a second port
        self.addCleanup(factory.doStop)
        self.addCleanup(factory.doStop)
        [event] = _warnings(self.logs)
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["max_connections"], 5000)

    def test_guarded_site(self) -> None:
        """A ConnectionGuard in front of a Site with a HubResource warns for the factory's caps."""
        factory = HubServerFactory(DEMO_HUBS, clock=MemoryReactorClock(), max_connections=3000)
        root = Resource()
        root.putChild(b"hub", HubResource(factory))
        guard = ConnectionGuard(Site(root), factory.limits)
        guard.doStart()  # type: ignore[no-untyped-call]
        self.addCleanup(guard.doStop)
        [event] = _warnings(self.logs)
        self.assertIn("below max_connections 3000", event["open_files"])

    def test_once_per_server(self) -> None:
        """HubService, its factory and a guard sharing its limits: one warning in all."""
        service = HubService(DEMO_HUBS, clock=MemoryReactorClock(), max_connections=5000)
        service.startService()
        self.addCleanup(service.stopService)
        guard = ConnectionGuard(Site(Resource()), service.factory.limits)
        guard.doStart()  # type: ignore[no-untyped-call]
        self.addCleanup(guard.doStop)
        self.assertEqual(len(_warnings(self.logs)), 1)

    def test_enough_files(self) -> None:
        """Enough files for the cap: a starting factory says nothing."""
        self.patch(limits_module, "open_file_limit", lambda: (65536, 65536))
        factory = HubServerFactory(DEMO_HUBS, clock=MemoryReactorClock(), max_connections=5000)
        factory.doStart()  # type: ignore[no-untyped-call]
        self.addCleanup(factory.doStop)
        self.assertEqual(_warnings(self.logs), [])


@pytest_twisted.ensureDeferred
async def test_twistd_warns_at_start_up() -> None:
    """twistd hub with a soft limit of 256 and --max-connections 1000 logs the warning; with 100 it does not."""
    from twisted.internet import reactor

    lower = (
        "import resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); "
        "from twisted.scripts.twistd import run; run()"
    )
    outputs = {}
    for cap in ("1000", "100"):
        child = spawn_python(
            reactor, "-c", lower, "--nodaemon", "--pidfile=", "--logfile=-", "hub",
            "--listen", "tcp:0:interface=127.0.0.1", "--max-connections", cap, cwd=ROOT,
        )
        try:
            await child.wait_for(r"listening on", reactor, 30)
        finally:
            await child.stop(reactor)
        outputs[cap] = child.output()
    assert "the open-file limit (RLIMIT_NOFILE, soft) is 256, below max_connections 1000" in outputs["1000"]
    assert "open-file limit" not in outputs["100"], outputs["100"]
