"""
Session resumption as users meet it (docs/resumption.md): a hub server with
C{resume=True} on a real 127.0.0.1 port, a proxy in front of it that resets
connections (RST both ways, L{CuttingProxy}), and reconnecting clients with
C{HubClientOptions(resume=True)}.  Across each cut:

- a call in flight when the link dropped settles once, with its result;
- receiver calls the hub sent while the client was away arrive, in order,
  none lost and none twice;
- the server's hub sees no disconnect and no new connection: the connection
  id, groups and C{connection.items} carry over, C{on_resumed} runs;
- a session whose client stays away past the window ends (C{on_disconnected}
  once) and the client's next resume is refused, with the reason counted.

Every wait is bounded and wakes on the event it waits for
(tests/_resume_support.py, L{until}); only loopback is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted

from twisted_hub import HubClientOptions, HubServerFactory, ReconnectingHubClient, ResumePolicy
from twisted_hub._ops.endpoints import resume_status

from ._resume_support import SEEN, Receiver, RecordingHub, behind_proxy, changed, reactor, resuming_client, running, until
from .helpers.stream_hubs import StreamHub

pytestmark = pytest.mark.timeout(60)


class FeedHub(RecordingHub):
    hub_name = "feed"

    def publish(self, topic: str, number: int) -> None:
        self.clients.group(topic).item(number)


@pytest.fixture
def served() -> Any:
    SEEN.reset()
    factory = HubServerFactory([FeedHub, StreamHub], resume=ResumePolicy(window=3.0), allowed_origins=["*"], metrics=True)
    port, proxy, listening = behind_proxy(factory)
    yield factory, proxy, listening.getHost().port
    SEEN.stop_work()
    listening.stopListening()
    port.stopListening()


@asynccontextmanager
async def subscribed(port: int) -> AsyncIterator[tuple[ReconnectingHubClient, Receiver, list[int], str]]:
    """
    A resuming client of the feed hub, subscribed to "news": (the client, its
    receiver, an entry per C{on_resumed}, its connection id); stopped after,
    and its session seen ending normally.
    """
    receiver, resumed = Receiver(), []
    service = resuming_client(port, "feed", receiver, on_resumed=lambda c: resumed.append(1))
    async with running(service):
        connection_id = await service.call("subscribe", "news")
        yield service, receiver, resumed, connection_id
    await until(lambda: SEEN.disconnected == [(connection_id, "normal")])


@pytest_twisted.ensureDeferred
async def test_a_cut_loses_nothing_and_doubles_nothing(served: Any) -> None:
    """Across one cut: the call in flight settles once, what was published meanwhile arrives once, in order."""
    factory, proxy, port = served
    async with subscribed(port) as (service, receiver, resumed, connection_id):
        hub = SEEN.hubs[connection_id]
        hub.publish("news", 0)
        await until(lambda: receiver.items == [0])
        # A call in flight when the link drops, and items published while the client is away.
        in_flight = service.call("slow", 42, 0.3)
        await until(lambda: SEEN.running == [42])  # it runs on the server: its answer is what the cut loses
        assert proxy.cut_all() == 1
        for number in range(1, 6):
            hub.publish("news", number)
        assert await in_flight == 42
        await until(lambda: len(receiver.items) == 6)
        assert receiver.items == [0, 1, 2, 3, 4, 5]
        assert resumed == [1] and service.resumes == 1
        # Operators see it: the metrics and the status page (never a token).
        sample = factory.metrics.registry.get_sample_value
        assert sample("twisted_hub_sessions_resumed_total", {"hub": "feed"}) == 1
        assert sample("twisted_hub_replayed_messages_total", {"hub": "feed"}) >= 5
        assert sample("twisted_hub_sessions_detached", {"hub": "feed"}) == 0
        assert sample("twisted_hub_resume_failures_total", {"hub": "feed", "reason": "window-expired"}) == 0
        status = resume_status(factory)
        assert status is not None and (status["sessions"], status["resumed"], status["window"]) == (1, 1, 3.0)
        # (one node, no backplane: nothing moved between nodes)
        assert sample("twisted_hub_session_claims_total", {"outcome": "won"}) == 0
        assert sample("twisted_hub_late_handovers_total", {}) == sample("twisted_hub_forwarded_messages_total", {}) == 0
        assert (status["claims"], status["late_handovers"], status["forwarded"], status["moved_in"]) == (
            {"won": 0, "refused": 0, "unanswered": 0, "restored": 0}, 0, 0, 0,
        )
        # The hub saw one connection, resumed once, never disconnected; its state carried over.
        assert SEEN.connected == [connection_id]
        assert SEEN.resumed == [connection_id]
        assert SEEN.disconnected == []
        assert await service.call("topic") == ["news", ["news"]]
        assert service.current is not None and service.current.connection_id == connection_id
        hub.publish("news", 6)
        await until(lambda: receiver.items[-1:] == [6])
        assert receiver.items == list(range(7))


@pytest_twisted.ensureDeferred
async def test_many_cuts_in_a_row(served: Any) -> None:
    """Twenty cuts in a row, a call and two items each time: every item once, in order, every call run once."""
    factory, proxy, port = served
    async with subscribed(port) as (service, receiver, _, connection_id):
        hub = SEEN.hubs[connection_id]
        results, cuts = [], 0
        for round_ in range(20):
            # (the previous round's answer came on a resumed connection: there is one to cut)
            call = service.call("slow", round_, 0.02)
            hub.publish("news", 2 * round_)
            cuts += proxy.cut_all()
            hub.publish("news", 2 * round_ + 1)
            results.append(await call)
        await until(lambda: len(receiver.items) == 40)
        assert receiver.items == list(range(40))
        assert results == list(range(20))
        assert SEEN.connected == [connection_id] and SEEN.disconnected == []
        assert (cuts, service.resumes, sum(service.resume_refusals.values())) == (20, 20, 0)
        assert sorted(SEEN.running) == list(range(20))  # each call ran once (a replayed INVOKE did not run again)


@pytest_twisted.ensureDeferred
async def test_away_past_the_window_ends_the_session(served: Any) -> None:
    """A client away longer than the window: the session ends on the server and the resume is refused window-expired."""
    factory, proxy, port = served
    receiver = Receiver()
    service = resuming_client(port, "feed", receiver, retry=3.5)  # (longer than the 3 s window)
    async with running(service):
        connection_id = await service.call("subscribe", "news")
        proxy.cut_all()
        await until(lambda: SEEN.disconnected == [(connection_id, "connection-lost")], 5.0)
        second = await service.call("subscribe", "sport")
        assert second != connection_id
        assert service.resume_refusals["window-expired"] == 1 and service.resumes == 0
        assert SEEN.connected == [connection_id, second]
    await until(lambda: SEEN.disconnected[-1:] == [(second, "normal")])


@pytest_twisted.ensureDeferred
async def test_a_half_open_old_connection_gets_4006(served: Any) -> None:
    """
    The path dies silently for the server (it still holds the old
    connection): the client resumes on a new one, and the server closes the
    old one with CLOSE 4006 and a 4006 close frame; the session never ended.
    """
    factory, proxy, port = served
    async with subscribed(port) as (service, _, _, connection_id):
        [old] = proxy.live
        old.cut_client_side()
        assert await service.call("topic") == ["news", ["news"]]
        assert old.upstream is not None
        upstream = old.upstream
        await upstream.when_lost().addTimeout(5.0, reactor())
        close_message = bytes([0x93, 0x08, 0xCD, 0x0F, 0xA6])  # [8, 4006, ...]
        assert close_message in upstream.after_cut
        assert bytes([0x0F, 0xA6]) + b"session resumed elsewhere" in upstream.after_cut  # the close frame
        assert SEEN.connected == [connection_id] and SEEN.resumed == [connection_id]
        assert SEEN.disconnected == []


def stream_client(port: int) -> ReconnectingHubClient:
    return resuming_client(port, "streams", None)


@pytest_twisted.ensureDeferred
async def test_a_result_stream_survives_cuts(served: Any) -> None:
    """
    A stream of 200 items with a window of 4, the link reset twice while it
    is read: every item arrives once, in order; the hub saw one connection.
    """
    factory, proxy, port = served
    service = stream_client(port)
    async with running(service):
        connection_id = await service.call("hello")
        assert service.current is not None
        stream = service.current.open_stream("ticks", [200], window=4)
        got: list[int] = []
        cuts = 0
        async for item in stream:
            got.append(item)
            if len(got) in (50, 120):
                cuts += proxy.cut_all()
        assert got == list(range(200))
        assert (cuts, service.resumes, sum(service.resume_refusals.values())) == (2, 2, 0)
        assert SEEN.disconnected == [] and await service.call("hello") == connection_id


@pytest_twisted.ensureDeferred
async def test_an_argument_stream_survives_cuts(served: Any) -> None:
    """A stream argument of 200 items, the link reset twice while it is sent: the hub method gets each once, in order."""
    factory, proxy, port = served
    service = stream_client(port)
    service.start()
    cuts = []

    async def numbers() -> Any:
        for n in range(200):
            if n in (50, 120):
                cuts.append(proxy.cut_all())
            yield n

    try:
        await service.call("hello")
        assert await service.call("collect", numbers()) == list(range(200))
        assert (cuts, service.resumes) == ([1, 1], 2)
    finally:
        await service.stop()


@pytest_twisted.ensureDeferred
async def test_a_stream_cancelled_across_a_cut(served: Any) -> None:
    """
    Two streams, the link reset, one cancelled at once (the cancel crosses
    the resume): its producer stops (its finally runs); the other goes on.
    """
    factory, proxy, port = served
    StreamHub.stopped.clear()
    StreamHub.on_stop[:] = [changed]
    service = stream_client(port)
    service.start()
    try:
        await service.call("hello")
        assert service.current is not None
        cancelled = service.current.open_stream("ticks", [1_000_000], window=4)
        going_on = service.current.open_stream("ticks", [20], window=4)
        assert [await cancelled.__anext__() for _ in range(3)] == [0, 1, 2]
        assert proxy.cut_all() == 1
        cancelled.cancel()
        assert [item async for item in going_on] == list(range(20))  # across the resume
        await until(lambda: 1_000_000 in StreamHub.stopped)
        assert sorted(StreamHub.stopped) == [20, 1_000_000]
        assert service.resumes == 1 and SEEN.disconnected == []
    finally:
        StreamHub.on_stop.clear()
        await service.stop()


class _AsyncioCuttingProxy:
    """An asyncio TCP proxy on 127.0.0.1 whose L{cut_all} resets every connection (RST both ways)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pairs: list[tuple[Any, Any]] = []
        self.cuts = 0

    async def start(self) -> int:
        import asyncio

        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pairs.append((writer, up_writer))

        async def pipe(source: Any, sink: Any) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass  # (the other half was reset: this one ends too)
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut_all(self) -> None:
        import socket
        import struct

        for pair in self.pairs:
            for writer in pair:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        self.cuts += len(self.pairs)
        self.pairs = []


def behind_asyncio_proxy(scenario: Callable[[Any, _AsyncioCuttingProxy, int], Awaitable[None]], *twistd: str) -> None:
    """
    `twistd hub --resume-window 10 TWISTD...` and an asyncio resetting proxy
    in front of it: C{scenario(the server, the proxy, the proxy's port)},
    run under asyncio for at most 40 s; the server stops after it.
    """
    import asyncio

    from .test_aio import TwistdHub

    server = TwistdHub(*twistd, "--resume-window", "10")

    async def main() -> None:
        proxy = _AsyncioCuttingProxy(server.port)
        port = await proxy.start()
        try:
            await scenario(server, proxy, port)
        finally:
            proxy.server.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 40))
    finally:
        server.stop()


def resuming_async_client(port: int, hub: str, receiver: object, **hooks: Any) -> Any:
    """An asyncio reconnecting client with resume on 127.0.0.1:C{port} (the proxy), retrying after 50 ms."""
    from twisted_hub.aio import ReconnectingAsyncHubClient

    return ReconnectingAsyncHubClient(
        f"ws://127.0.0.1:{port}/hub", hub, receiver, HubClientOptions(resume=True),
        retry_policy=lambda attempt: 0.05, timeout=5, **hooks,
    )


class ChatListener:
    """A receiver of the demo chat hub: the lines said in its rooms, until "end"."""

    def __init__(self) -> None:
        import asyncio

        self.lines: list[str] = []
        self.heard = asyncio.Event()

    def said(self, room: str, user: str, text: str) -> None:
        if text == "end":
            self.heard.set()
        else:
            self.lines.append(text)

    def joined(self, room: str, user: str) -> None:
        pass

    def left(self, room: str, user: str) -> None:
        pass


def test_the_asyncio_client_resumes_through_cuts() -> None:
    """
    `twistd hub --resume-window 10` (the demo chat hub); an asyncio
    reconnecting client with resume in a room, behind a proxy that resets
    it five times while another client speaks: it hears every line once, in
    order, keeps its connection id, and its calls in flight settle.
    """
    import asyncio

    from twisted_hub.aio import open_client

    async def scenario(server: Any, proxy: _AsyncioCuttingProxy, port: int) -> None:
        listener = ChatListener()
        resumed = asyncio.Queue[Any]()
        client = resuming_async_client(port, "chat", listener, on_resumed=resumed.put_nowait)
        client.start()
        speaker = await open_client(server.url, "chat", ChatListener())
        try:
            await client.call("join", "r", "ann")
            first_id = (await client.connected()).connection_id
            await speaker.call("join", "r", "bob")
            in_flight = []
            for line in range(30):
                await speaker.call("say", "r", str(line))
                if line % 6 == 3:
                    in_flight.append(asyncio.ensure_future(client.call("members", "r")))
                    proxy.cut_all()
                if line % 6 == 5:
                    await asyncio.wait_for(resumed.get(), 10)  # the next cut finds a connection
            # a last line: the session's messages arrive in order, so a doubled one would come before it
            await speaker.call("say", "r", "end")
            await asyncio.wait_for(listener.heard.wait(), 15)
            assert listener.lines == [str(n) for n in range(30)]
            assert [await call for call in in_flight] == [["ann", "bob"]] * 5
            assert proxy.cuts == 5 and client.resumes == 5 and sum(client.resume_refusals.values()) == 0
            assert (await client.connected()).connection_id == first_id
        finally:
            await speaker.disconnect()
            await client.stop()

    behind_asyncio_proxy(scenario)


def test_the_asyncio_client_reconnects_when_on_connected_waits_on_a_cut_call() -> None:
    """
    on_connected's call (a rejoin) is in flight when the connection is cut:
    the client does not wait for that call to make the next connection (it
    did, and never came back: issue 21's chaos test).  The next connection
    resumes, on_resumed runs, and the call settles over it, once.
    """
    import asyncio

    async def scenario(server: Any, proxy: _AsyncioCuttingProxy, port: int) -> None:
        hooks: list[Any] = []
        joined: list[Any] = []
        join_settled = asyncio.Event()
        resumed = asyncio.Queue[Any]()

        async def on_connected(connection: Any) -> None:
            hooks.append(connection)
            await connection.call("members", "r")  # (its answer comes after SESSION: the session can resume)
            joining = asyncio.ensure_future(connection.call("join", "r", "ann"))
            await asyncio.sleep(0)  # (the call goes out)
            proxy.cut_all()  # and its connection ends before its answer comes
            joined.append(await joining)
            join_settled.set()

        client = resuming_async_client(port, "chat", ChatListener(), on_connected=on_connected, on_resumed=resumed.put_nowait)
        async with running(client):
            await asyncio.wait_for(resumed.get(), 10)
            assert await asyncio.wait_for(client.call("members", "r"), 10) == ["ann"]
            # (the hook appends once its own await of the call wakes: maybe a loop turn after
            # the members call answered; seen when two suites shared the machine)
            await asyncio.wait_for(join_settled.wait(), 10)
            assert (len(hooks), joined, client.resumes, client.connections) == (1, [1], 1, 2)

    behind_asyncio_proxy(scenario)


def test_the_asyncio_client_streams_through_cuts() -> None:
    """
    `twistd hub --resume-window 10` serving L{StreamHub}; an asyncio
    reconnecting client behind a resetting proxy reads a stream of 200
    items (window 4) and sends one of 200, each cut twice midway: every
    item once, in order, on one session.
    """

    async def scenario(server: Any, proxy: _AsyncioCuttingProxy, port: int) -> None:
        client = resuming_async_client(port, "streams", None)
        async with running(client):
            first_id = await client.call("hello")
            got: list[int] = []
            async with (await client.connected()).open_stream("ticks", [200], window=4) as stream:
                async for item in stream:
                    got.append(item)
                    if len(got) in (50, 120):
                        proxy.cut_all()
            assert got == list(range(200))
            assert (proxy.cuts, client.resumes) == (2, 2)

            async def numbers() -> Any:
                for n in range(200):
                    if n in (50, 120):
                        proxy.cut_all()
                    yield n

            assert await client.call("collect", numbers()) == list(range(200))
            assert (proxy.cuts, client.resumes, sum(client.resume_refusals.values())) == (4, 4, 0)
            assert await client.call("hello") == first_id

    behind_asyncio_proxy(scenario, "--hub", "tests.helpers.stream_hubs:StreamHub")


def test_docs_example_runs(tmp_path: Any) -> None:
    """docs/resumption.md's example, run as written: every number arrives once, in order, across the drop."""
    import subprocess
    import sys
    from pathlib import Path

    from ._docs import named_blocks

    script = tmp_path / "resume_example.py"
    script.write_text(named_blocks("docs/resumption.md")["resume-example"][1])
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "server: the session resumed, no disconnect",
        "client: resumed as True",
        "client: got True after 1 resume",
    ], done.stdout
