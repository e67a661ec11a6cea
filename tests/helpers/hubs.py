"""Hubs, receivers and log helpers shared by the server/client/hub tests."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogEvent

from twisted_hub import Hub, HubError, RefuseConnection, hub, method
from twisted_hub.types import DisconnectReason


class Recorder:
    """A client receiver that records every call made to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def said(self, *args: Any) -> None:
        self.calls.append(("said", args))

    def ping(self, *args: Any) -> None:
        self.calls.append(("ping", args))


class Answers:
    """A client receiver for client results."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def double(self, value: int) -> int:
        return value * 2

    def refuse(self) -> None:
        raise HubError("nope", "the client says no", {"why": 1})

    def crash(self) -> None:
        raise ZeroDivisionError("secret client text")

    def later(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


@dataclass
class WorkLog:
    """
    What the WorkHub instances of one test share: the lifecycle and
    C{record()} events, and the Deferreds their slow methods wait on (the
    test fires them).  Each test makes its own and serves C{work_hub(log)}.
    """

    events: list[tuple[Any, ...]] = field(default_factory=list)
    pending: list[Deferred[Any]] = field(default_factory=list)


@hub("work")
class WorkHub(Hub):
    """Every kind of method, plus hooks that record what happened in the log it is given."""

    def __init__(self, log: WorkLog) -> None:
        self.log = log

    def on_connected(self) -> None:
        self.log.events.append(("connected", self.connection.id))

    def on_disconnected(self, reason: DisconnectReason) -> None:
        self.log.events.append(("disconnected", reason, self.groups.joined()))

    @method
    def plain(self, value: Any) -> Any:
        return value

    @method
    def deferred(self, value: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.log.pending.append(d)
        return d.addCallback(lambda _: value)

    @method
    async def coroutine(self, value: Any) -> Any:
        d: Deferred[Any] = Deferred()
        self.log.pending.append(d)
        extra = await d
        return [value, extra]

    @method
    def add(self, a: int, b: int = 0, *, scale: int = 1) -> int:
        return (a + b) * scale

    @method("renamed")
    def some_python_name(self) -> str:
        return "renamed"

    @method
    def fail(self, code: str, message: str, detail: Any = None) -> None:
        raise HubError(code, message, detail)

    @method
    def fail_later(self, code: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.errback(HubError(code, "later", [1, 2]))
        return d

    @method
    async def fail_async(self, code: str) -> None:
        raise HubError(code, "async", {"k": "v"})

    @method
    def crash(self) -> None:
        raise ZeroDivisionError("secret server text")

    @method
    async def crash_async(self) -> None:
        raise KeyError("secret async text")

    @method
    def type_error_inside(self) -> None:
        len(5)  # type: ignore[arg-type]

    @method
    def unencodable(self) -> object:
        return object()

    @method
    def big(self, size: int) -> bytes:
        return b"x" * size

    @method
    def push_many(self, size: int, count: int) -> int:
        for _ in range(count):
            self.clients.caller.said(b"x" * size)
        return count

    @method
    def record(self, value: Any) -> None:
        self.log.events.append(("record", value))

    # -- receivers ----------------------------------------------------------
    @method
    def to_caller(self, text: str) -> None:
        self.clients.caller.said(text)

    @method
    def to_all(self, text: str) -> None:
        self.clients.all.said(text)

    @method
    def to_others(self, text: str) -> None:
        self.clients.others.said(text)

    @method
    def to_all_except(self, ids: list, text: str) -> None:
        self.clients.all_except(ids).said(text)

    @method
    def to_only(self, ids: list, text: str) -> None:
        self.clients.only(ids).said(text)

    @method
    def to_client(self, connection_id: str, text: str) -> None:
        self.clients.client(connection_id).said(text)

    @method
    def to_group(self, group: str, text: str) -> None:
        self.clients.group(group).said(text)

    @method
    def to_group_except(self, group: str, ids: list, text: str) -> None:
        self.clients.group_except(group, ids).said(text)

    # -- groups -------------------------------------------------------------
    @method
    def join(self, group: str) -> int:
        self.groups.add(group)
        return self.groups.count(group)

    @method
    async def join_later(self, group: str) -> int:
        """Joins a group once the test fires the pending Deferred (the client may be gone by then)."""
        d: Deferred[None] = Deferred()
        self.log.pending.append(d)
        await d
        self.groups.add(group)
        return self.groups.count(group)

    @method
    def leave(self, group: str) -> int:
        self.groups.remove(group)
        return self.groups.count(group)

    @method
    def members(self, group: str) -> list[str]:
        return self.groups.members(group)

    @method
    def joined(self) -> list[str]:
        return sorted(self.groups.joined())

    @method
    def call_receiver(self, receiver_method: str, *args: Any) -> None:
        """Sends the caller a receiver call of any name (this hub declares no receiver interface)."""
        getattr(self.clients.caller, receiver_method)(*args)

    # -- client results and kicks -------------------------------------------
    @method
    def ask(self, receiver_method: str, *args: Any) -> Deferred[Any]:
        return self.connection.invoke(receiver_method, *args)

    @method
    def ask_with_timeout(self, receiver_method: str, timeout: float) -> Deferred[Any]:
        return self.connection.invoke(receiver_method, timeout=timeout)

    @method
    def kick_me(self, reason: str) -> None:
        self.connection.kick(reason)

    @method
    def kick(self, connection_id: Any, reason: str) -> None:
        """Kicks another connection (or this one) by id."""
        self.clients.kick(connection_id, reason)


@hub("parallel", concurrent=True)
class ParallelHub(WorkHub):
    """WorkHub with concurrent calls."""


def work_hub(log: WorkLog, hub_class: type[WorkHub] = WorkHub) -> partial[WorkHub]:
    """What a test serves: WorkHub (or a subclass) whose every instance records into C{log}."""
    return partial(hub_class, log)


@hub("work")
class ProcessWorkHub(WorkHub):
    """
    WorkHub for C{twistd hub --hub tests.helpers.hubs:ProcessWorkHub}, which
    makes hubs with no arguments.  Each instance records into a log of its
    own that nothing reads: the process tests watch the wire and Redis.
    """

    def __init__(self) -> None:
        super().__init__(WorkLog())


@dataclass
class GuardLog:
    """
    What the GuardedHub instances of one test share: the Deferred a "later"
    handshake waits on (the test fires it) and how many times C{hello} ran.
    """

    gate: Deferred[None] | None = None
    calls: int = 0


@hub("guarded")
class GuardedHub(Hub):
    """Refuses connections according to the request's query string."""

    def __init__(self, log: GuardLog) -> None:
        self.log = log

    def on_connecting(self, request: Any) -> Awaitable[None] | None:
        mode = request.params.get("mode", [""])[0]
        if mode == "refuse":
            raise RefuseConnection(401, "who are you")
        if mode == "crash":
            raise RuntimeError("hook bug")
        if mode == "later":
            d: Deferred[None] = Deferred()
            self.log.gate = d
            return d
        return None

    @method
    def hello(self) -> str:
        self.log.calls += 1
        return "hi"


@hub("async-guarded")
class AsyncGuardedHub(GuardedHub):
    """GuardedHub with an C{async def on_connecting}; "wait-*" modes await the gate first."""

    async def on_connecting(self, request: Any) -> None:
        mode = request.params.get("mode", [""])[0]
        if mode.startswith("wait-"):
            d: Deferred[None] = Deferred()
            self.log.gate = d
            await d
        if mode.endswith("refuse"):
            raise RefuseConnection(401, "async: who are you")
        if mode.endswith("crash"):
            raise RuntimeError("async hook bug")


def guarded_hub(log: GuardLog, hub_class: type[GuardedHub] = GuardedHub) -> partial[GuardedHub]:
    """What a test serves: GuardedHub (or a subclass) whose every instance shares C{log}."""
    return partial(hub_class, log)


CONNECTION_LOG = "twisted_hub.connections"


def hub_events(events: list[LogEvent], level: str | None = None) -> list[LogEvent]:
    """
    The log events emitted by twisted_hub itself (optionally of one level),
    without the one-line-per-connect/disconnect lines (twisted_hub.connections).
    """
    found = [
        e for e in events
        if str(e.get("log_namespace", "")).startswith("twisted_hub") and e.get("log_namespace") != CONNECTION_LOG
    ]
    if level is not None:
        found = [e for e in found if e["log_level"].name == level]
    return found


@hub("blobstream")
class BlobStreamHub(Hub):
    """
    A stream of large items, forever, and the server process's own memory
    (tests/test_streams_network.py, served by `twistd hub`): how much a
    producer holds while its consumer takes nothing.
    """

    generated = 0

    @method
    def start_tracing(self) -> None:
        """Start tracemalloc in this (the server's) process: what is allocated from now on is counted."""
        import tracemalloc

        if not tracemalloc.is_tracing():
            tracemalloc.start()

    @method
    def traced(self) -> list[int]:
        """Bytes allocated since start_tracing and still alive, the peak of that, and the items generated."""
        import gc
        import tracemalloc

        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        return [current, peak, BlobStreamHub.generated]

    @method
    async def blobs(self, size: int) -> Any:
        """Items of C{size} fresh bytes, forever (each made only when the consumer's credit allows)."""
        while True:
            BlobStreamHub.generated += 1
            yield bytes([BlobStreamHub.generated % 256]) * size
