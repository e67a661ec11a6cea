"""
An in-memory Redis for the backplane's unit tests: the handful of commands
L{RedisBackplane} uses (strings, hashes, sets with expiry on a L{Clock},
publish/subscribe), and a connector per node that reports the link going
up and down as the test says.  It can also be slow: while paused, replies
and published messages are held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from twisted_hub._backplane.session_store import RENEW, TAKE
from twisted_hub.redis import RedisBackplane


class FakeRedis:
    """One Redis server, shared by every node of a test."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.running = True
        self.paused = False
        self.data: dict[bytes, Any] = {}
        self.expires: dict[bytes, float] = {}
        self.channels: dict[bytes, list[RedisBackplane]] = {}
        self.connectors: list[FakeConnector] = []
        #: every command executed: (name, args)
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self._held: list[Callable[[], None]] = []
        self._waiting: list[Deferred[Any]] = []

    def connector(self) -> FakeConnector:
        connector = FakeConnector(self)
        self.connectors.append(connector)
        return connector

    def count(self, name: str) -> int:
        """How many times a command ran."""
        return sum(1 for command, _ in self.log if command == name)

    # -- the server going away and back ----------------------------------------
    def stop(self) -> None:
        """The server process ends: every link is lost, the data with it (no persistence)."""
        self.running = False
        self.paused = False
        self.data.clear()
        self.expires.clear()
        self.channels.clear()
        for connector in self.connectors:
            connector.lose()
        waiting, self._waiting = self._waiting, []
        self._held.clear()
        for d in waiting:
            d.errback(txredisapi.ConnectionError("Lost connection"))

    def start(self) -> None:
        """The server is back: every connector reconnects (its backoff already ran)."""
        self.running = True
        for connector in self.connectors:
            connector.connect()

    def pause(self) -> None:
        """Stop answering (a slow Redis): replies and messages are held."""
        self.paused = True

    def resume(self) -> None:
        """Answer again: the held replies and messages go out, in order."""
        self.paused = False
        held, self._held = self._held, []
        for action in held:
            action()

    # -- commands ------------------------------------------------------------
    def _alive(self, key: bytes) -> bool:
        expires = self.expires.get(key)
        if expires is not None and expires <= self.clock.seconds():
            self.data.pop(key, None)
            self.expires.pop(key, None)
        return key in self.data

    def execute(self, *args: Any) -> Deferred[Any]:
        name = str(args[0]).upper()
        values = [a if isinstance(a, bytes) else str(a).encode() for a in args[1:]]
        self.log.append((name, tuple(values)))
        if self.paused:
            d: Deferred[Any] = Deferred()
            self._waiting.append(d)
            self._held.append(lambda: (self._waiting.remove(d), d.callback(self._run(name, values))))
            return d
        return succeed(self._run(name, values))

    def _run(self, name: str, args: list[bytes]) -> Any:
        key = args[0] if args else b""
        if name == "PUBLISH":
            receivers = list(self.channels.get(key, ()))
            for backplane in receivers:
                backplane.link_message(key, args[1])
            return len(receivers)
        if name == "SET":
            options = [a.upper() for a in args[2:]]
            if b"XX" in options and not self._alive(key):
                return None
            self.data[key] = args[1]
            self.expires.pop(key, None)
            if b"PX" in options:
                self.expires[key] = self.clock.seconds() + int(args[2 + options.index(b"PX") + 1]) / 1000
            return "OK"
        if name == "GET":
            return self.data[key] if self._alive(key) else None
        if name == "DEL":
            removed = 0
            for k in args:
                removed += self._alive(k)
                self.data.pop(k, None)
                self.expires.pop(k, None)
            return removed
        if name == "EVAL":
            return self._script(args[0], args[2:3], args[3:])
        if name == "PEXPIRE":
            if not self._alive(key):
                return 0
            self.expires[key] = self.clock.seconds() + int(args[1]) / 1000
            return 1
        if name == "HSET":
            table = self.data[key] if self._alive(key) else self.data.setdefault(key, {})
            for i in range(1, len(args) - 1, 2):
                table[args[i]] = args[i + 1]
            return 1
        if name == "HDEL":
            if self._alive(key):
                self.data[key].pop(args[1], None)
                if not self.data[key]:
                    del self.data[key]  # Redis deletes an empty hash
                    self.expires.pop(key, None)
            return 1
        if name == "HLEN":
            return len(self.data[key]) if self._alive(key) else 0
        if name == "HGETALL":
            table = self.data[key] if self._alive(key) else {}
            return [item for pair in table.items() for item in pair]
        if name == "SADD":
            self.data.setdefault(key, set()).update(args[1:])
            return 1
        if name == "SREM":
            if self._alive(key):
                self.data[key].difference_update(args[1:])
            return 1
        if name == "SMEMBERS":
            return sorted(self.data[key]) if self._alive(key) else []
        raise AssertionError(f"the fake Redis does not know {name}")


    def _script(self, script: bytes, keys: list[bytes], argv: list[bytes]) -> Any:
        """The Lua scripts the nodes run (twisted_hub/_backplane/session_store.py), done as Redis does them."""
        (key,) = keys
        if script == RENEW.encode():
            if not self._alive(key):
                return 0
            value = self.data[key]
            if hashlib.sha1(value).hexdigest().encode() != argv[0]:
                return value
            self.expires[key] = self.clock.seconds() + int(argv[1]) / 1000
            return 1
        if script == TAKE.encode():
            if not self._alive(key) or key not in self.expires:
                return 0
            self.data[key] = argv[0]
            return 1
        raise AssertionError(f"the fake Redis does not know the script {script!r}")


class FakeLink:
    """A command connection to the fake server."""

    def __init__(self, server: FakeRedis, connector: FakeConnector) -> None:
        self.server = server
        self.connector = connector

    def execute_command(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        if not self.server.running or self.connector.link is not self:
            raise txredisapi.ConnectionError("Not connected")
        return self.server.execute(*args)


class FakeConnector:
    """One node's two links to the fake server."""

    def __init__(self, server: FakeRedis) -> None:
        self.server = server
        self.backplane: RedisBackplane | None = None
        self.link: FakeLink | None = None
        self.failures = 0

    def start(self, backplane: RedisBackplane) -> None:
        self.backplane = backplane
        self.connect()

    def stop(self) -> None:
        self.lose()
        self.backplane = None

    def drained(self, then: Any) -> None:
        """The fake server delivers every message as it is published: nothing is ever waiting."""
        then()

    def connect(self) -> None:
        backplane = self.backplane
        if backplane is None:
            return
        if not self.server.running:
            self.failures += 1
            backplane.link_failed("Connection refused")
            return
        self.link = FakeLink(self.server, self)
        for channel in (backplane.channel_all, backplane.channel_node):
            self.server.channels.setdefault(channel, []).append(backplane)
        backplane.link_ready("subscriber")
        backplane.link_ready("commands", self.link)

    def kill(self) -> None:
        """The node's process is killed (kill -9): it goes silent without a word."""
        backplane = self.backplane
        self.link = None
        for receivers in self.server.channels.values():
            if backplane in receivers:
                receivers.remove(backplane)
        self.backplane = None

    def lose(self) -> None:
        backplane = self.backplane
        if backplane is None or self.link is None:
            return
        self.link = None
        for receivers in self.server.channels.values():
            if backplane in receivers:
                receivers.remove(backplane)
        backplane.link_lost("subscriber", "Connection lost")
        backplane.link_lost("commands", "Connection lost")
