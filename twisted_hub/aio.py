"""
An asyncio client for twisted-hub servers, on the same sans-IO core as the
Twisted client, over the C{websockets} library (C{pip install
'twisted-hub[asyncio]'}):

    from twisted_hub.aio import connect

    async with connect("ws://127.0.0.1:8080/hub", "echo") as client:
        print(await client.call("add", 2, 3))

Every protocol decision (message encoding, the handshake, call ids, answers
to server heartbeats, the heartbeat timeout verdict, the clock offset, close
reasons) is made by L{twisted_hub._connection.ClientConnection} and
L{twisted_hub._heartbeat.HeartbeatTracker}; this module only moves bytes and
owns the timers, as L{twisted_hub._client} does for Twisted.  Importing it
does not import (or install) a Twisted reactor.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from twisted.logger import Logger, STDLibLogObserver
from twisted.python.failure import Failure
from websockets.asyncio.client import ClientConnection as WebSocket
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State
from websockets.typing import Subprotocol

from ._client import ClientConnectionViews, HubClientOptions, hub_url, make_proxy
from ._client_session import ClientSession
from ._errors import CallTimeoutError, ConnectTimeoutError, DisconnectReason, HandshakeError
from ._heartbeat import Traffic
from ._hub import receiver_methods
from ._reconnect import full_jitter_policy
from ._sendqueue import asyncio_queued
from ._sentinel import UNSET, Unset
from ._session import ended_reason
from ._wire import SUBPROTOCOL, close_reason_bytes

__all__ = ["AsyncHubClient", "ReconnectingAsyncHubClient", "connect"]

_log = logging.getLogger("twisted_hub.aio")
#: the shared session's log lines, forwarded to the standard logging module (logger "twisted_hub.aio")
_session_log = Logger(namespace="twisted_hub.aio", observer=STDLibLogObserver(name="twisted_hub.aio"))
InterfaceT = TypeVar("InterfaceT")
#: seconds our close frame may take before the socket is aborted (as the Twisted client)
_CLOSE_WAIT = 1.0


class _CountingConnection(WebSocket):
    """websockets' client connection, counting the bytes it receives (for the heartbeat's progress samples)."""

    bytes_in = 0

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        super().data_received(data)


#: put in the outgoing queue to wake the writer for an urgent frame (real frames are never empty)
_WAKE = b""


def _client_frame_size(payload: int) -> int:
    """The bytes a client's unfragmented, uncompressed binary frame of C{payload} bytes takes on the wire."""
    return payload + 6 + (0 if payload < 126 else 2 if payload < 0x10000 else 8)


class AsyncHubClient(ClientConnectionViews):
    """
    One connection to one hub, on asyncio.  Get one from L{connect}.

    The API mirrors L{twisted_hub.HubClientProtocol}: C{call} (a coroutine
    here), C{notify}, C{proxy}, C{disconnect}, C{wait_for_disconnect},
    C{round_trip}, C{clock_offset}, C{server_now()}.

    An adapter, as L{twisted_hub.HubClientProtocol} is: its L{ClientSession}
    decides; this class moves the bytes (websockets), sleeps for the
    heartbeat timers and turns results into futures.
    """

    def __init__(
        self, websocket: WebSocket, receiver: object | None, options: HubClientOptions,
        receiver_interface: type | None = None,
    ) -> None:
        self._websocket = websocket
        self.options = options
        self.session: ClientSession[asyncio.Future[Any]] = ClientSession(self, _session_log)
        self.session.configure(options, receiver, receiver_methods(receiver_interface))
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._urgent: deque[bytes] = deque()
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        #: bytes of our frames handed to the transport (header and mask included)
        self._bytes_out = 0

    # -- public API (connection_id, is_connected, round_trip, clock_offset,
    #    server_now come from ClientConnectionViews) ----------------------------
    def _now(self) -> float:
        return time.time()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a hub method; return its result or raise its L{HubError}."""
        return await self.invoke(method, list(args), kwargs or None)

    async def invoke(
        self, method: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
        timeout: float | None | Unset = UNSET,
    ) -> Any:
        """L{call} with explicit argument containers and an optional timeout (seconds)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        call_id = self.session.invoke(future, method, args or [], kwargs)
        seconds = self.options.call_timeout if timeout is UNSET else timeout
        try:
            if seconds is None:
                return await future
            return await asyncio.wait_for(asyncio.shield(future), seconds)
        except TimeoutError:
            self.session.core.forget_call(call_id)
            raise CallTimeoutError(f"{method!r} got no result within {seconds}s") from None

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call a hub method without waiting for (or getting) a result."""
        self.session.notify(method, list(args), kwargs or None)

    def proxy(self, interface: type[InterfaceT] | None = None) -> InterfaceT:
        """The hub as an object whose methods are awaitable calls (see L{HubClientProtocol.proxy})."""
        return make_proxy(self.call, interface)

    async def disconnect(self, reason: str = "") -> DisconnectReason:
        """Close normally; return the L{DisconnectReason} once closed."""
        self.session.disconnect(reason)
        return await self.wait_for_disconnect()

    async def wait_for_disconnect(self) -> DisconnectReason:
        """Return the L{DisconnectReason} when the connection ends."""
        await self._closed.wait()
        assert self.disconnect_reason is not None
        return self.disconnect_reason

    async def __aenter__(self) -> AsyncHubClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.disconnect_reason is None:
            await self.disconnect()

    # -- running --------------------------------------------------------------
    async def _start(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._write())]
        self.session.opened()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self.session.abandon_handshake("welcome")
            await self._abort()
            raise ConnectTimeoutError("welcome", timeout) from None

    async def _write(self) -> None:
        while True:
            frame = self._urgent.popleft() if self._urgent else await self._outgoing.get()
            if frame is None:
                return
            if not frame:  # _WAKE: an urgent frame is waiting
                continue
            # Counted before: send() writes the frame to the transport before
            # its first await (then waits for the buffer to drain), and no
            # progress sample may see the bytes queued but not yet written.
            self._bytes_out += _client_frame_size(len(frame))
            try:
                await self._websocket.send(frame)
            except ConnectionClosed:
                return

    async def _read(self) -> None:
        session = self.session
        try:
            async for data in self._websocket:
                if isinstance(data, str):
                    session.receive_frame(data.encode("utf-8"), time.time(), binary=False)
                else:
                    session.receive_frame(data, time.time())
        except ConnectionClosed:
            pass
        finally:
            self._finish()

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- what the session asks of us (ClientIO) --------------------------------
    def send_frames(self, frames: list[bytes], urgent: bool = False) -> None:
        if urgent:
            # Heartbeats and their answers overtake the frames still queued here.
            self._urgent.extend(frames)
            self._outgoing.put_nowait(_WAKE)
            return
        for frame in frames:
            self._outgoing.put_nowait(frame)

    def send_close(self, code: int, reason: str, wait_for_peer: bool) -> None:
        if wait_for_peer:
            self._spawn(self._close_websocket(code, reason))
        else:
            self._spawn(self._drop_after_close(code, reason))

    def call_succeeded(self, token: asyncio.Future[Any], value: Any) -> None:
        if not token.done():
            token.set_result(value)

    def call_failed(self, token: asyncio.Future[Any], error: Exception) -> None:
        if not token.done():
            token.set_exception(error)

    def await_result(
        self, result: Awaitable[Any], on_result: Callable[[Any], object], on_error: Callable[[Failure], object],
    ) -> None:
        async def wait() -> None:
            try:
                value = await result
            except Exception as e:
                on_error(Failure(e))
            else:
                on_result(value)

        self._spawn(wait())

    def handshake_done(self) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def handshake_failed(self, error: HandshakeError) -> None:
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved: _start reports it

    def traffic(self) -> Traffic:
        websocket = self._websocket
        reader = getattr(websocket.protocol, "reader", None)
        receiving = bool(getattr(reader, "buffer", b""))
        return Traffic(self._bytes_out, asyncio_queued(websocket.transport), getattr(websocket, "bytes_in", 0), receiving)

    def disconnected(self, reason: DisconnectReason) -> None:
        self._outgoing.put_nowait(None)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._closed.set()

    # -- heartbeat timer --------------------------------------------------------
    def start_heartbeat(self, interval: float) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._heartbeats()))

    def stop_heartbeat(self) -> None:
        """The heartbeat task ends by itself: the session says so (check_heartbeat is False)."""

    async def _heartbeats(self) -> None:
        """Beat when due; check the deadline the session gives (one sleep at a time, no per-answer work)."""
        session = self.session
        while True:
            deadline = session.heartbeat_deadline()
            next_beat = session.next_beat_due
            wake = next_beat if deadline is None else min(next_beat, deadline)
            await asyncio.sleep(max(wake - time.time(), 0.0))
            now = time.time()
            due: float | None = wake
            if now >= next_beat:
                session.beat(now)
                due = None  # beat() saw how late this wake-up was
            if not session.check_heartbeat(now, due):
                return

    # -- closing --------------------------------------------------------------
    async def _close_websocket(self, code: int, reason: str) -> None:
        self._outgoing.put_nowait(None)  # what is queued goes first, then the close frame
        writer = self._tasks[1] if len(self._tasks) > 1 else None
        if writer is not None:
            await asyncio.wait([writer], timeout=_CLOSE_WAIT)
        text = close_reason_bytes(reason).decode("utf-8")
        try:
            await asyncio.wait_for(self._websocket.close(code, text), _CLOSE_WAIT)
        except TimeoutError:
            await self._abort()

    async def _drop_after_close(self, code: int, reason: str) -> None:
        """
        Our close frame goes out after what is queued, then TCP closes once it
        is written, aborted after 1 s if it cannot be: no waiting for the
        reply of a peer we gave up on (the Twisted client does the same).
        """
        self._outgoing.put_nowait(None)
        writer = self._tasks[1] if len(self._tasks) > 1 else None
        if writer is not None:
            await asyncio.wait([writer], timeout=_CLOSE_WAIT)
        websocket = self._websocket
        transport = websocket.transport
        protocol = websocket.protocol
        if protocol.state is State.OPEN:
            protocol.send_close(code, close_reason_bytes(reason).decode("utf-8"))
            for data in protocol.data_to_send():
                if data:
                    transport.write(data)
        transport.close()
        abort = asyncio.get_running_loop().call_later(_CLOSE_WAIT, transport.abort)
        try:
            await self._closed.wait()
        finally:
            abort.cancel()

    async def _abort(self) -> None:
        transport = self._websocket.transport
        if transport is not None:
            transport.abort()
        if self._tasks:
            await self._closed.wait()

    def _finish(self) -> None:
        websocket = self._websocket
        observed = ended_reason(None, "", websocket.close_code, websocket.close_reason or "", "connection lost")
        self.session.connection_lost(observed)


async def open_client(
    url: str,
    hub: str | None = None,
    receiver: object | None = None,
    options: HubClientOptions | None = None,
    *,
    timeout: float = 30.0,
    receiver_interface: type | None = None,
) -> AsyncHubClient:
    """
    Connect and complete the hub handshake within C{timeout} seconds (TCP,
    WebSocket upgrade and WELCOME together); return the connected client.

    @raise HandshakeError: the server refused the upgrade (with its HTTP
        status) or sent no welcome in time.
    @param receiver_interface: if given, only the methods this class declares
        may be called by the server (as with the Twisted client).
    """
    options = options or HubClientOptions()
    full_url = hub_url(url, hub)
    started = time.monotonic()
    try:
        websocket = await websocket_connect(
            full_url,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=dict(options.extra_headers) or None,
            compression=None,
            max_size=options.max_message_size,
            create_connection=_CountingConnection,
            ping_interval=None,  # liveness is the hub heartbeat; pings from the server are still answered
            open_timeout=timeout,
            close_timeout=_CLOSE_WAIT,
            proxy=None,
        )
    except InvalidStatus as e:
        raise HandshakeError(e.response.status_code, e.response.reason_phrase) from None
    except TimeoutError:
        raise ConnectTimeoutError("upgrade", timeout) from None
    if websocket.subprotocol != SUBPROTOCOL:
        await websocket.close()
        raise HandshakeError(None, f"server chose subprotocol {websocket.subprotocol!r}, not {SUBPROTOCOL}")
    client = AsyncHubClient(websocket, receiver, options, receiver_interface)
    await client._start(max(timeout - (time.monotonic() - started), 0.001))
    return client


@asynccontextmanager
async def connect(
    url: str,
    hub: str | None = None,
    receiver: object | None = None,
    options: HubClientOptions | None = None,
    *,
    timeout: float = 30.0,
    receiver_interface: type | None = None,
) -> AsyncIterator[AsyncHubClient]:
    """
    C{async with connect(url, hub) as client:} — a connected L{AsyncHubClient},
    closed normally when the block ends.  See L{open_client}.
    """
    client = await open_client(url, hub, receiver, options, timeout=timeout, receiver_interface=receiver_interface)
    try:
        yield client
    finally:
        if client.disconnect_reason is None:
            await client.disconnect()


class ReconnectingAsyncHubClient:
    """
    A client that stays connected: after a lost connection or a heartbeat
    timeout it reconnects, waiting C{retry_policy(attempt)} seconds (full
    jitter by default, as L{twisted_hub.ReconnectingHubClient}), and calls
    C{on_connected(client)} after every connection to restore state.
    """

    def __init__(
        self,
        url: str,
        hub: str | None = None,
        receiver: object | None = None,
        options: HubClientOptions | None = None,
        *,
        on_connected: Callable[[AsyncHubClient], Awaitable[object] | object] | None = None,
        retry_policy: Callable[[int], float] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url, self.hub, self.receiver, self.options = url, hub, receiver, options
        self.on_connected = on_connected
        self.retry_policy = retry_policy or full_jitter_policy()
        self.timeout = timeout
        self.client: AsyncHubClient | None = None
        #: reasons of the last disconnects (bounded)
        self.disconnects: list[DisconnectReason] = []
        self.connections = 0
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Close the current connection normally and stop reconnecting."""
        self._stopping = True
        if self.client is not None and self.client.disconnect_reason is None:
            await self.client.disconnect()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def connected(self) -> AsyncHubClient:
        """The current connection, once there is one."""
        await self._connected.wait()
        assert self.client is not None
        return self.client

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call on the current connection (waiting for one)."""
        return await (await self.connected()).call(method, *args, **kwargs)

    async def __aenter__(self) -> ReconnectingAsyncHubClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                client = await open_client(self.url, self.hub, self.receiver, self.options, timeout=self.timeout)
            except (OSError, HandshakeError, ConnectionClosed) as e:
                attempt += 1
                delay = self.retry_policy(attempt)
                _log.info("connecting to %s failed (%s); retrying in %.2fs", self.url, e, delay)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.client = client
            self.connections += 1
            if self.connections > 1 and self.options is not None and self.options.metrics is not None:
                self.options.metrics.reconnects.inc()
            if self.on_connected is not None:
                result = self.on_connected(client)
                if inspect.isawaitable(result):
                    await result
            self._connected.set()
            reason = await client.wait_for_disconnect()
            self._connected.clear()
            self.disconnects = [*self.disconnects[-99:], reason]
            if self._stopping:
                return
            attempt += 1
            await asyncio.sleep(self.retry_policy(attempt))
