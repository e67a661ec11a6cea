"""
What the real-socket resume tests share (tests/test_resume_sessions.py on
one node, tests/test_resume_nodes.py on two nodes and a real Redis): a hub
that records what it saw (L{SEEN}), a receiver, reconnecting clients with
resume, a server behind a proxy that resets connections, and L{until},
which waits for a condition by waking on the event that makes it true (a
hub hook, a receiver call, a client's C{on_connected} or C{on_resumed}, a
node heard by another), never by polling, and fails after a bounded time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred

from twisted_hub import Hub, HubClientOptions, HubServerFactory, ReconnectingHubClient, method
from twisted_hub.types import DisconnectReason

from ._cutting_proxy import CuttingProxy

__all__ = [
    "SEEN", "Changes", "Receiver", "RecordingHub", "Seen", "behind_proxy", "changed", "reactor", "resuming_client",
    "running", "sleep", "until",
]


def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


def sleep(seconds: float) -> Deferred[None]:
    """What a hub method's work takes (never a test's wait: see L{until}); L{Seen.stop_work} ends it early."""
    work = task.deferLater(reactor(), seconds, lambda: None)
    SEEN.work.append(work)
    return work


class Changes:
    """Wakes the tests waiting in L{until} whenever something they watch happened (no polling)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], object], Deferred[None]]] = []

    def changed(self) -> None:
        """Something happened: fire the waits whose condition holds now."""
        waiting, self._waiting = self._waiting, []
        ready = []
        for condition, waiter in waiting:
            if condition():
                ready.append(waiter)
            else:
                self._waiting.append((condition, waiter))
        for waiter in ready:  # (a test going on from here may wait again, or cause another change)
            waiter.callback(None)

    async def until(self, condition: Callable[[], object], seconds: float = 10.0, what: object = None) -> None:
        """
        Wait until C{condition()} holds, at most C{seconds}; C{what} (or what
        it returns, if callable) says what did not happen.
        """
        if condition():
            return
        waiter: Deferred[None] = Deferred()
        self._waiting.append((condition, waiter))
        try:
            await waiter.addTimeout(seconds, reactor())
        except defer.TimeoutError:
            self._waiting = [entry for entry in self._waiting if entry[1] is not waiter]
            described = what() if callable(what) else what
            raise AssertionError(f"not within {seconds:g} s: {described or 'the condition'}") from None


CHANGES = Changes()
changed = CHANGES.changed
until = CHANGES.until


class Seen:
    """What the server hubs (of every node) saw; L{reset} before each test."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connected: list[str] = []
        self.resumed: list[str] = []
        self.disconnected: list[tuple[str, str]] = []
        #: the hub instance of each connection id (the latest, on whichever node)
        self.hubs: dict[str, RecordingHub] = {}
        #: the values of the slow calls that started running
        self.running: list[int] = []
        #: the hub methods' work (L{sleep}) not done yet
        self.work: list[Deferred[None]] = []

    def stop_work(self) -> None:
        """The test is over: the hub work still pending is cancelled (no timer outlives its test)."""
        work, self.work = self.work, []
        for pending in work:
            if not pending.called:
                pending.cancel()


SEEN = Seen()


class RecordingHub(Hub):
    """Records its connections' lives in L{SEEN}; subclasses name the hub."""

    def on_connected(self) -> None:
        SEEN.connected.append(self.connection.id)
        SEEN.hubs[self.connection.id] = self
        changed()

    def on_resumed(self) -> None:
        SEEN.resumed.append(self.connection.id)
        SEEN.hubs[self.connection.id] = self
        changed()

    def on_disconnected(self, reason: DisconnectReason) -> None:
        SEEN.disconnected.append((self.connection.id, reason.kind.value))
        changed()

    @method
    def subscribe(self, topic: str) -> str:
        self.groups.add(topic)
        self.connection.items["topic"] = topic
        return self.connection.id

    @method
    def topic(self) -> list[Any]:
        return [self.connection.items.get("topic"), sorted(self.groups.joined())]

    @method
    async def slow(self, value: int, seconds: float) -> int:
        SEEN.running.append(value)
        changed()
        await sleep(seconds)  # (the hub's work: it takes this long)
        return value


class Receiver:
    """A client's receiver: the numbers the hub sent it, in order."""

    def __init__(self) -> None:
        self.items: list[int] = []

    def item(self, number: int) -> None:
        self.items.append(number)
        changed()


def resuming_client(
    port: int, hub: str, receiver: object, retry: float = 0.05,
    on_resumed: Callable[[Any], object] | None = None, **options: Any,
) -> ReconnectingHubClient:
    """
    A reconnecting client with resume on 127.0.0.1:C{port}, retrying after
    C{retry} s; each connection it makes (C{on_connected}: a fresh session,
    as after a refusal) and each resume (C{on_resumed}, then the given one)
    wakes L{until}.
    """

    def resumed(client: Any) -> None:
        if on_resumed is not None:
            on_resumed(client)
        changed()

    return ReconnectingHubClient(
        f"ws://127.0.0.1:{port}", hub, receiver, HubClientOptions(resume=True), retry_policy=lambda attempt: retry,
        on_connected=lambda client: changed(), on_resumed=resumed, **options,
    )


@asynccontextmanager
async def running(*clients: Any) -> AsyncIterator[None]:
    """Reconnecting clients (Twisted or asyncio) started for the block, stopped after it, whatever happened."""
    for client in clients:
        client.start()
    try:
        yield
    finally:
        for client in clients:
            await client.stop()


def behind_proxy(factory: HubServerFactory) -> tuple[Any, CuttingProxy, Any]:
    """
    C{factory} listening on 127.0.0.1, and a L{CuttingProxy} in front of it:
    C{(its port, the proxy, the proxy's port)} (stop both ports when done).
    """
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    proxy = CuttingProxy(reactor(), port.getHost().port)
    listening = reactor().listenTCP(0, proxy, interface="127.0.0.1")
    return port, proxy, listening
