"""Configuring the Redis backplane: twistd hub options, the TOML file, HubService, the status page."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_hub import HubServerFactory, HubService
from twisted_hub._resource import HubStatusPage
from twisted_hub.redis import DEFAULT_LEASE, RedisBackplane
from twisted_hub.tap import Options, makeService
from twisted_hub.types import LocalBackplane

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
            (("--redis-secret-env", "X"), "--redis-secret-env needs --redis"),
            (("--redis", "rediss://x/0?ssl_ca_certs=/nonexistent/ca.pem"), "--redis: cannot read the Redis TLS CA file"),
            (("--redis", "redis://x", "--redis-secret-file", "/nonexistent/secret"), "cannot read the backplane secret"),
            (("--redis", "redis://x", "--redis-secret-env", "TWISTED_HUB_TEST_UNSET_VARIABLE"), "is not set"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertIn(expected, str(caught.exception))


class SecretOptionTests(SynchronousTestCase):
    """The backplane secret comes from a file or an environment variable, and never shows."""

    def secret_file(self, text: str) -> str:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "secret"
        path.write_text(text)
        return str(path)

    def test_secret_file(self) -> None:
        """--redis-secret-file (or TOML redis-secret-file) makes the backplane sign; the status page names the file only."""
        path = self.secret_file("0123456789abcdef0123456789abcdef\nold-secret-still-accepted\n")
        options = parse("--port", "0", "--redis", "redis://127.0.0.1:6390/0", "--redis-secret-file", path)
        backplane = hub_service(makeService(options)).factory.backplane
        assert isinstance(backplane, RedisBackplane)
        signer = backplane._codec.signer
        assert signer is not None
        self.assertEqual(signer.key_count, 2)
        rows = dict(backplane.status())
        self.assertEqual(rows["backplane messages"], f"signed (HMAC-SHA256; 2 secret(s) from file {path})")
        self.assertNotIn("0123456789abcdef", repr(backplane.status()))
        toml = Path(self.secret_file("")).with_name("hub.toml")
        toml.write_text(f'redis = "redis://127.0.0.1:6390/0"\nredis-secret-file = "{path}"\n')
        self.assertEqual(parse("--config", str(toml))["redis-secret-file"], path)

    def test_secret_env(self) -> None:
        """--redis-secret-env NAME reads the secret from that variable; the status page names the variable only."""
        import os

        os.environ["TWISTED_HUB_TEST_SECRET"] = "s" * 32
        self.addCleanup(os.environ.pop, "TWISTED_HUB_TEST_SECRET")
        options = parse("--port", "0", "--redis", "redis://127.0.0.1:6390/0", "--redis-secret-env", "TWISTED_HUB_TEST_SECRET")
        backplane = hub_service(makeService(options)).factory.backplane
        assert isinstance(backplane, RedisBackplane)
        self.assertIn("from $TWISTED_HUB_TEST_SECRET", dict(backplane.status())["backplane messages"])
        self.assertNotIn("s" * 32, repr(backplane.status()))

    def test_bad_secrets(self) -> None:
        """A short or empty secret, or both sources, are refused with the reason."""
        for text, expected in [("", "holds no backplane secret"), ("short", "at least 16 are needed")]:
            with self.assertRaises(usage.UsageError) as caught:
                parse("--redis", "redis://x", "--redis-secret-file", self.secret_file(text))
            self.assertIn(expected, str(caught.exception))
        with self.assertRaises(usage.UsageError) as caught:
            parse("--redis", "redis://x", "--redis-secret-file", "f", "--redis-secret-env", "E")
        self.assertIn("either", str(caught.exception))

    def test_unsigned_says_so(self) -> None:
        """Without a secret the status page says that whoever can publish on Redis reaches every client."""
        backplane = RedisBackplane()
        self.assertIn("not signed", dict(backplane.status())["backplane messages"])


class ServiceTests(SynchronousTestCase):
    def test_hub_service_backplane(self) -> None:
        """HubService(backplane=RedisBackplane(URL)) builds its factory with that backplane, without a warning."""
        backplane = RedisBackplane("redis://127.0.0.1:6399/1")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            service = HubService([work_hub(WorkLog())], backplane=backplane, clock=Clock())
        self.assertIs(service.factory.backplane, backplane)

    def test_hub_service_redis_is_deprecated(self) -> None:
        """HubService(redis=URL) still builds a RedisBackplane, warning to give backplane=; redis= with backplane= is refused."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            service = HubService([work_hub(WorkLog())], redis="redis://127.0.0.1:6399/1", clock=Clock())
        backplane = service.factory.backplane
        assert isinstance(backplane, RedisBackplane)
        self.assertEqual(backplane.settings.port, 6399)
        self.assertEqual([w.category for w in caught], [DeprecationWarning])
        self.assertIn("use backplane=twisted_hub.redis.RedisBackplane(URL)", str(caught[0].message))
        self.assertEqual(caught[0].filename, __file__)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
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
