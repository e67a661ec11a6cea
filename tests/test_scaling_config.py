"""Configuring the Redis backplane: twistd hub options, the TOML file, HubService, the status page."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_hub import HubServerFactory, HubService, LocalBackplane
from twisted_hub._resource import HubStatusPage
from twisted_hub.redis import DEFAULT_LEASE, RedisBackplane
from twisted_hub.tap import Options, makeService

from ._fakeredis import FakeRedis
from .helpers.hubs import WorkLog, work_hub


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def hub_service(root: Any) -> HubService:
    return next(s for s in root if isinstance(s, HubService))


class TwistdOptionTests(SynchronousTestCase):
    def test_redis_option_builds_a_redis_backplane(self) -> None:
        """--redis URL (and --redis-lease) make twistd hub's factory use a RedisBackplane on that Redis."""
        options = parse("--port", "0", "--redis", "redis://127.0.0.1:6390/3", "--redis-lease", "6")
        factory = hub_service(makeService(options)).factory
        backplane = factory.backplane
        assert isinstance(backplane, RedisBackplane)
        self.assertEqual((backplane.settings.port, backplane.settings.db, backplane.lease), (6390, 3, 6.0))

    def test_without_redis_the_node_is_alone(self) -> None:
        """Without --redis the factory has the local backplane."""
        factory = hub_service(makeService(parse("--port", "0"))).factory
        self.assertIsInstance(factory.backplane, LocalBackplane)

    def test_toml_keys(self) -> None:
        """redis and redis-lease can come from the TOML file; the lease defaults to 15 s."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hub.toml"
        path.write_text('redis = "redis://10.0.0.5:6379/0"\n')
        options = parse("--config", str(path))
        self.assertEqual((options["redis"], options["redis-lease"]), ("redis://10.0.0.5:6379/0", DEFAULT_LEASE))
        path.write_text('redis = "redis://10.0.0.5:6379/0"\nredis_lease = 4\n')
        self.assertEqual(parse("--config", str(path))["redis-lease"], 4.0)

    def test_bad_values_name_the_option(self) -> None:
        """A bad URL or lease, or a lease without --redis, is a usage error naming the option."""
        for argv, expected in [
            (("--redis", "http://x"), "--redis: a Redis URL starts with redis://"),
            (("--redis", "redis://x/zero"), "--redis: the Redis database"),
            (("--redis", "redis://x", "--redis-lease", "0"), "--redis-lease must be"),
            (("--redis-lease", "5"), "--redis-lease needs --redis"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertIn(expected, str(caught.exception))


class ServiceTests(SynchronousTestCase):
    def test_hub_service_redis(self) -> None:
        """HubService(redis=URL) builds its factory with a RedisBackplane; redis= with backplane= is refused."""
        service = HubService([work_hub(WorkLog())], redis="redis://127.0.0.1:6399/1", clock=Clock())
        backplane = service.factory.backplane
        assert isinstance(backplane, RedisBackplane)
        self.assertEqual(backplane.settings.port, 6399)
        self.assertRaises(
            TypeError, HubService, [work_hub(WorkLog())], redis="redis://x", backplane=RedisBackplane(), clock=Clock()
        )


class StatusPageTests(SynchronousTestCase):
    def render(self, factory: HubServerFactory) -> str:
        request = DummyRequest([b""])
        return HubStatusPage(factory).render_GET(request).decode()  # type: ignore[arg-type]

    def test_status_page_shows_node_and_redis_state(self) -> None:
        """The status page names the node and says whether Redis is connected, then that it is."""
        clock = Clock()
        redis = FakeRedis(clock)
        redis.running = False
        backplane = RedisBackplane(clock=clock, connector=redis.connector())
        factory = HubServerFactory([work_hub(WorkLog())], clock=clock, backplane=backplane)
        factory.doStart()
        self.addCleanup(factory.doStop)
        page = self.render(factory)
        self.assertIn(backplane.node_id, page)
        self.assertIn("NOT connected to redis://127.0.0.1:6379/0 (retrying)", page)
        redis.start()
        self.assertIn("connected to redis://127.0.0.1:6379/0, 0 other node(s)", self.render(factory))

    def test_local_node_on_status_page(self) -> None:
        """Without a backplane the status page still names this node."""
        factory = HubServerFactory([work_hub(WorkLog())], clock=Clock())
        self.assertIn(factory.backplane.node_id, self.render(factory))
