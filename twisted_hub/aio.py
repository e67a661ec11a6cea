"""
An asyncio client for twisted-hub servers, on the same sans-IO core as the
Twisted client, over the C{websockets} library (C{pip install
'twisted-hub[asyncio]'}):

    from twisted_hub.aio import connect

    async with connect("ws://127.0.0.1:8080/hub", "echo") as client:
        print(await client.call("add", 2, 3))

Every protocol decision (message encoding, the handshake, call ids, answers
to server heartbeats, the heartbeat timeout verdict, the clock offset, close
reasons) is made by L{twisted_hub._core.connection.ClientConnection} and
L{twisted_hub._core.heartbeat.HeartbeatTracker}; this module only moves bytes and
owns the timers, as L{twisted_hub._twisted.client} does for Twisted.  It imports
neither Twisted nor autobahn (C{tests/test_aio_imports.py} checks).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from websockets.asyncio.client import ClientConnection as WebSocket
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol

from ._asyncio.streams import AsyncHubStream, run_pump
from ._core.base_error import HubArgumentError
from ._core.client_common import HubClientOptions, full_jitter_policy, hub_url, make_proxy
from ._core.client_resume import ClientResumption
from ._core.client_session import ClientConnectionViews, ClientSession
from ._core.compression_policy import CompressionPolicy
from ._core.errors import (
    CallTimeoutError,
    ConnectionClosedError,
    ConnectTimeoutError,
    DisconnectKind,
    DisconnectReason,
    HandshakeError,
    HubError,
)
from ._core.heartbeat import Traffic
from ._core.log import StdlibCoreLog
from ._core.receivers import receiver_methods
from ._core.resume import ResumePolicy
from ._core.sentinel import UNSET, Unset
from ._core.session import ended_reason
from ._core.streams import DEFAULT_STREAM_WINDOW, InboundStream, OutboundStream, is_stream_source, refused_stream
from ._core.wire import SUBPROTOCOL, CloseCode, close_reason_bytes
from ._sendqueue import asyncio_queued

__all__ = ["AsyncHubClient", "ReconnectingAsyncHubClient", "connect"]

_log = logging.getLogger("twisted_hub.aio")
#: the shared session's log lines, on the standard logging module (logger "twisted_hub.aio")
_session_log = StdlibCoreLog("twisted_hub.aio")
InterfaceT = TypeVar("InterfaceT")
#: the closing-handshake deadline, seconds: how long a close may wait for the
#: server (its answer to our close frame, or the end of TCP after we answered
#: its close frame), and our close frame for the socket to take it, before the
#: socket is aborted (autobahn's closeHandshakeTimeout, as the Twisted client)
_CLOSE_WAIT = 1.0
#: websockets 15 and newer connect through the proxy the environment names
#: (HTTP_PROXY and the like) unless told C{proxy=None}; a hub client connects
#: directly, as the Twisted client does.  Older releases have no proxy
#: support and no such argument.
_NO_PROXY: dict[str, Any] = {"proxy": None} if "proxy" in inspect.signature(websocket_connect).parameters else {}


class _HubWebSocket(WebSocket):
    """
    websockets' client connection, with the closing-handshake deadline it
    sets but does not keep, and a word to the hub client when it fails the
    connection on its own.

    When a close begins on received bytes (the server's close frame, which
    websockets answers, or a frame it refuses: a message over C{max_size},
    bad framing) websockets computes a close deadline but enforces it only
    in a coroutine that sends or closes; C{recv()} waits for the server to
    end TCP, without limit (python-websockets/websockets#1651 is the same
    shape).  A server that holds the connection open would hold the client
    forever.  Here the deadline (C{close_timeout}) aborts the transport.

    It also counts the bytes it receives, for the heartbeat's progress samples.
    """

    #: bytes received (for the heartbeat's progress samples, docs/heartbeat.md "Slow links")
    bytes_in = 0
    #: (code, reason) of the close frame websockets sent on its own, failing
    #: the connection over bytes it refused (not in answer to a close frame)
    refused: tuple[int, str] | None = None
    #: called with L{refused} when it happens
    on_refused: Callable[[int, str], object] | None = None
    _deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        protocol = self.protocol
        sent_before = protocol.close_sent
        super().data_received(data)
        sent = protocol.close_sent
        if sent_before is None and sent is not None and not protocol.close_rcvd_then_sent:
            self.refused = (int(sent.code), sent.reason)
            if self.on_refused is not None:
                self.on_refused(*self.refused)
        if self._deadline is None and self.close_timeout is not None and protocol.close_expected():
            self._deadline = self.loop.call_later(self.close_timeout, self._close_deadline_passed)

    def _close_deadline_passed(self) -> None:
        self._deadline = None
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


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
        receiver_interface: type | None = None, resumption: ClientResumption[asyncio.Future[Any]] | None = None,
    ) -> None:
        self._websocket = websocket
        self.options = options
        self.session: ClientSession[asyncio.Future[Any]] = ClientSession(self, _session_log)
        self.session.configure(options, receiver, receiver_methods(receiver_interface), resumption)
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._urgent: deque[bytes] = deque()
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        #: run when the connection has ended (cancelling timers)
        self._closed_callbacks: list[Callable[[], object]] = []
        if isinstance(websocket, _HubWebSocket):
            websocket.on_refused = self._websocket_failed
            if websocket.refused is not None:  # in the bytes that came with the upgrade's answer
                self._websocket_failed(*websocket.refused)
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
        if args and any(map(is_stream_source, args)) or kwargs and any(map(is_stream_source, kwargs.values())):
            call_id = self._invoke_streaming(future, method, args or [], kwargs, None)[0]
        else:
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

    def stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncHubStream:
        """
        Call a hub method that answers with a stream; iterate the result
        (C{async for item in client.stream("ticks", 10)}) as items arrive,
        with the default window (docs/streams.md).  Arguments that are async
        iterables are streamed to the server, as with L{call}.
        """
        return self.open_stream(method, list(args), kwargs or None)

    def open_stream(
        self, method: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
        window: int = DEFAULT_STREAM_WINDOW,
    ) -> AsyncHubStream:
        """L{stream} with explicit argument containers and the credit window, in items."""
        session = self.session
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            _, inbound, _ = self._invoke_streaming(done, method, args or [], kwargs, window)
        except HubError as e:
            return AsyncHubStream(*refused_stream(e, window), lambda: None)
        assert inbound is not None
        # (the streams, not this connection's session: with resume they carry over to the next connection)
        streams = session.streams

        def settled(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is not None:
                streams.failed(inbound, cast(Exception, future.exception()))

        done.add_done_callback(settled)
        return AsyncHubStream(streams.table, inbound, streams.flush, on_cancel=lambda: streams.cancel(inbound))

    def _invoke_streaming(
        self, token: asyncio.Future[Any], method: str, args: list[Any], kwargs: dict[str, Any] | None,
        window: int | None,
    ) -> tuple[int, InboundStream | None, list[tuple[OutboundStream, Any]]]:
        session = self.session
        call_id, inbound, outbound = session.streams.invoke(token, method, args, kwargs, window, is_stream_source)
        limit = session.core.send_limit(session.options.max_message_size)
        streams = session.streams
        for stream, source in outbound:
            self._spawn(run_pump(streams.table, stream, source, streams.flush, limit, _session_log))
        return call_id, inbound, outbound

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
        self, result: Awaitable[Any], on_result: Callable[[Any], object], on_error: Callable[[BaseException], object],
    ) -> None:
        async def wait() -> None:
            try:
                value = await result
            except Exception as e:
                on_error(e)
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

    def seconds(self) -> float:
        return time.time()

    def call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        return asyncio.get_running_loop().call_later(delay, function).cancel

    def refresh_token(self) -> None:
        """
        Ask the C{access_token} provider for a fresh token now and hand it
        to the server over this connection (done by itself before the token
        expires; C{docs/auth.md}).
        """
        self.session.tokens.refresh()

    def disconnected(self, reason: DisconnectReason) -> None:
        callbacks, self._closed_callbacks = self._closed_callbacks, []
        for callback in callbacks:
            callback()
        self._outgoing.put_nowait(None)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._closed.set()

    # -- heartbeat timer --------------------------------------------------------
    def start_heartbeat(self, interval: float) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._heartbeats()))

    def stop_heartbeat(self) -> None:
        """The heartbeat task ends by itself: the session says so (heartbeat.check is False)."""

    async def _heartbeats(self) -> None:
        """Beat when due; check the deadline the session gives (one sleep at a time, no per-answer work)."""
        session = self.session
        while True:
            deadline = session.heartbeat.deadline()
            next_beat = session.heartbeat.next_beat_due
            wake = next_beat if deadline is None else min(next_beat, deadline)
            await asyncio.sleep(max(wake - time.time(), 0.0))
            now = time.time()
            due: float | None = wake
            if now >= next_beat:
                session.heartbeat.beat(now)
                due = None  # beat() saw how late this wake-up was
            if not session.heartbeat.check(now, due):
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

    def _websocket_failed(self, code: int, reason: str) -> None:
        """
        websockets refused what the server sent and sent close C{code} (1009,
        1002, 1007): this side's decision.  Close TCP once that close frame
        is written, aborting it after L{_CLOSE_WAIT}; the server's answer is
        not waited for (it could not be read past the refused frame).
        """
        if not self.session.websocket_failed(code, reason):
            return
        transport = self._websocket.transport
        transport.close()
        abort = asyncio.get_running_loop().call_later(_CLOSE_WAIT, transport.abort)
        self._closed_callbacks.append(abort.cancel)

    async def _abort(self) -> None:
        transport = self._websocket.transport
        if transport is not None:
            transport.abort()
        if self._tasks:
            await self._closed.wait()

    def _finish(self) -> None:
        protocol = self._websocket.protocol
        sent, received = protocol.close_sent, protocol.close_rcvd
        if sent is not None and protocol.close_rcvd_then_sent:
            sent = None  # our close frame only answered the server's
        observed = ended_reason(
            int(sent.code) if sent is not None else None, sent.reason if sent is not None else "",
            int(received.code) if received is not None else None, received.reason if received is not None else "",
            "connection lost",
        )
        self.session.connection_lost(observed)


class _SmallStaysPlain(PerMessageDeflate):
    """
    websockets' deflate, except that a whole message shorter than
    C{min_size} bytes is sent uncompressed (RSV1 clear), as RFC 7692 allows:
    websockets would compress every message.  The compressor is not touched
    for it, so context takeover goes on across it.
    """

    def __init__(self, min_size: int, *args: Any) -> None:
        super().__init__(*args)
        self.min_size = min_size

    def encode(self, frame: Frame) -> Frame:
        if frame.fin and frame.opcode is not Opcode.CONT and frame.opcode not in CTRL_OPCODES and len(frame.data) < self.min_size:
            return frame
        return super().encode(frame)


class _HubDeflateFactory(ClientPerMessageDeflateFactory):
    """The client's permessage-deflate offer from a L{CompressionPolicy}, as the Twisted client makes it."""

    def __init__(self, policy: CompressionPolicy) -> None:
        no_takeover = not policy.context_takeover
        super().__init__(
            server_no_context_takeover=no_takeover,
            client_no_context_takeover=no_takeover,
            server_max_window_bits=policy.server_max_window_bits,
            client_max_window_bits=policy.client_max_window_bits,
            compress_settings={"memLevel": policy.mem_level, "level": policy.level},
        )
        self.min_size = policy.min_size

    def process_response_params(self, params: Any, accepted_extensions: Any) -> PerMessageDeflate:
        agreed = super().process_response_params(params, accepted_extensions)
        return _SmallStaysPlain(
            self.min_size, agreed.remote_no_context_takeover, agreed.local_no_context_takeover,
            agreed.remote_max_window_bits, agreed.local_max_window_bits, agreed.compress_settings,
        )


async def open_client(
    url: str,
    hub: str | None = None,
    receiver: object | None = None,
    options: HubClientOptions | None = None,
    *,
    timeout: float = 30.0,
    receiver_interface: type | None = None,
    _resumption: ClientResumption[asyncio.Future[Any]] | None = None,
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
    headers = dict(options.extra_headers)
    try:
        token = await asyncio.wait_for(_access_token(options), timeout)
    except TimeoutError:
        raise ConnectTimeoutError("connection", timeout) from None
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        websocket = await websocket_connect(
            full_url,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=headers or None,
            compression=None,  # websockets' own default offer; ours, from options.compression:
            extensions=None if options.compression is None else [_HubDeflateFactory(options.compression)],
            max_size=options.max_message_size,
            ping_interval=None,  # liveness is the hub heartbeat; pings from the server are still answered
            open_timeout=timeout,
            close_timeout=_CLOSE_WAIT,
            create_connection=_HubWebSocket,
            **_NO_PROXY,
        )
    except InvalidStatus as e:
        raise _handshake_failed(options, HandshakeError(e.response.status_code, e.response.reason_phrase)) from None
    except InvalidHandshake as e:  # a 101 websockets refused: a subprotocol we did not offer, a bad header
        raise _handshake_failed(options, HandshakeError(None, str(e))) from None
    except TimeoutError:
        raise _handshake_failed(options, ConnectTimeoutError("upgrade", timeout), locally=True) from None
    if websocket.subprotocol != SUBPROTOCOL:
        await websocket.close()
        raise _handshake_failed(
            options, HandshakeError(None, f"server chose subprotocol {websocket.subprotocol!r}, not {SUBPROTOCOL}"),
        )
    client = AsyncHubClient(websocket, receiver, options, receiver_interface, _resumption)
    await client._start(max(timeout - (time.monotonic() - started), 0.001))
    return client


def _handshake_failed(options: HubClientOptions, error: HandshakeError, locally: bool = False) -> HandshakeError:
    """
    The upgrade failed before there was a client (and its session): report
    it as the session reports a later handshake failure (and the Twisted
    client this one), to C{on_disconnected} and the metrics; C{locally}
    when we gave up waiting.  Returns C{error}.
    """
    reason = DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, None, error.reason, locally)
    if options.metrics is not None:
        options.metrics.disconnected(reason.kind.value)
    if options.on_disconnected is not None:
        try:
            options.on_disconnected(reason)
        except Exception:
            _log.exception("client callback on_disconnected raised")
    return error


async def _access_token(options: HubClientOptions) -> str | None:
    """The token a connection starts with: C{options.access_token}, the provider asked (and awaited) now."""
    provider = options.access_token
    if provider is None or isinstance(provider, str):
        return provider
    token = provider()
    if inspect.isawaitable(token):
        token = await token
    if token is not None and (not isinstance(token, str) or not token or "\n" in token or "\r" in token):
        raise HubArgumentError(f"the access token provider must return a non-empty string or None, not {type(token).__name__}")
    return token


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


async def _until_done_or_lost(hook: Awaitable[object], client: AsyncHubClient) -> None:
    """
    Wait for C{on_connected}'s awaitable, or only until C{client}'s
    connection ends: with resume, the calls it waits for outlive the
    connection (they go on with the session over the next one), so waiting
    for them would keep the next connection from ever being made.  Then it
    runs on by itself (what it raises is logged); the caller sees the
    connection ended.  Cancelled (the client stops): it is cancelled too.
    """
    running = asyncio.ensure_future(hook)
    lost = asyncio.ensure_future(client.wait_for_disconnect())
    try:
        await asyncio.wait({running, lost}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        running.cancel()
        raise
    finally:
        lost.cancel()
    if running.done():
        running.result()  # (what it raised, for the caller)
        return
    running.add_done_callback(_ended_after_its_connection)


def _ended_after_its_connection(running: asyncio.Future[object]) -> None:
    if not running.cancelled() and running.exception() is not None:
        _log.info("on_connected of a connection that ended meanwhile failed: %s", running.exception())


class ReconnectingAsyncHubClient:
    """
    A client that stays connected: after a lost connection or a heartbeat
    timeout it reconnects, waiting C{retry_policy(attempt)} seconds (full
    jitter by default, as L{twisted_hub.ReconnectingHubClient}), and calls
    C{on_connected(client)} after every connection to restore state (if it
    raises, the error is logged, that connection is closed and the attempt
    counts as failed; if the connection ends while it runs, the attempt fails
    at once, without waiting for it: with resume its calls go on over the
    next connection).  With C{HubClientOptions(resume=...)} a connection
    that resumed the session runs C{on_resumed(client)} instead: the server
    kept its groups and items (docs/resumption.md).

    The same outage rule as L{twisted_hub.ReconnectingHubClient}: a L{call}
    made while there is no connection waits for the next one at most
    C{wait_for_connection} seconds (0: fail at once; None: no limit), then
    raises L{ConnectionClosedError} with C{may_have_run} False; a call sent
    when its connection ends raises it with C{may_have_run} True.
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
        wait_for_connection: float | None = 10.0,
        on_resumed: Callable[[AsyncHubClient], Awaitable[object] | object] | None = None,
    ) -> None:
        if wait_for_connection is not None and wait_for_connection < 0:
            raise HubArgumentError(f"wait_for_connection must be >= 0 or None, got {wait_for_connection!r}")
        self.url, self.hub, self.receiver, self.options = url, hub, receiver, options
        self.on_connected = on_connected
        self.on_resumed = on_resumed
        resume = options.resume if options is not None else None
        #: the session its connections resume (C{HubClientOptions(resume=...)}; None: off)
        self.resumption: ClientResumption[asyncio.Future[Any]] | None = (
            ClientResumption(resume if isinstance(resume, ResumePolicy) else None) if resume else None
        )
        self.retry_policy = retry_policy or full_jitter_policy()
        self.timeout = timeout
        self.wait_for_connection = wait_for_connection
        self.client: AsyncHubClient | None = None
        #: reasons of the last disconnects (bounded)
        self.disconnects: list[DisconnectReason] = []
        self.connections = 0
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Close the current connection normally and stop reconnecting; waiting calls fail."""
        self._stopping = True
        self._stopped.set()
        if self.client is not None and self.client.disconnect_reason is None:
            await self.client.disconnect()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        resumption = self.resumption
        if resumption is not None and resumption.resumable:
            # stopped while the session waits for a resume: it ends here (its calls and streams fail)
            error = ConnectionClosedError(DisconnectReason(DisconnectKind.NORMAL, None, "the client was stopped", locally=True))
            for token in resumption.end(error):
                if not token.done():
                    token.set_exception(error)

    async def connected(self) -> AsyncHubClient:
        """The current connection, once there is one (no time limit)."""
        await self._connected.wait()
        assert self.client is not None
        return self.client

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call on the current connection, or the next one (waiting at most C{wait_for_connection} s)."""
        return await (await self._next_connection()).call(method, *args, **kwargs)

    async def _next_connection(self) -> AsyncHubClient:
        client = self.client
        if client is not None and self._connected.is_set() and client.is_connected:
            return client
        if self._task is None or self._stopping or self.wait_for_connection == 0:
            raise self._not_connected(None)
        loop = asyncio.get_running_loop()
        wait = self.wait_for_connection
        deadline = None if wait is None else loop.time() + wait
        while True:
            client = self.client
            if client is not None and self._connected.is_set() and client.is_connected:
                return client
            if self._connected.is_set():
                # the connection just ended and _run has not noticed yet: wait for the next one,
                # not for this stale "connected" (a call on it would fail at once)
                self._connected.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if self._stopping or (remaining is not None and remaining <= 0):
                raise self._not_connected(wait)
            connected = asyncio.ensure_future(self._connected.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({connected, stopped}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                connected.cancel()
                stopped.cancel()

    def _not_connected(self, waited: float | None) -> ConnectionClosedError:
        if self._task is None or self._stopping:
            text = "the client is not running" if self._task is None else "the client was stopped"
        elif waited is not None:
            text = f"no connection within {waited}s"
        else:
            text = "not connected"
        if self.disconnects:
            text += f"; the last connection ended: {self.disconnects[-1]}"
        return ConnectionClosedError(DisconnectReason(DisconnectKind.CONNECTION_LOST, None, text, locally=True))

    @property
    def resumes(self) -> int:
        """Sessions resumed so far (C{HubClientOptions(resume=...)}; docs/resumption.md)."""
        return 0 if self.resumption is None else self.resumption.resumes

    @property
    def resume_refusals(self) -> dict[str, int]:
        """Resumes that failed, by reason (C{window-expired}, C{session-unknown}, ...)."""
        return {} if self.resumption is None else dict(self.resumption.refusals)

    async def __aenter__(self) -> ReconnectingAsyncHubClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                client = await open_client(
                    self.url, self.hub, self.receiver, self.options, timeout=self.timeout, _resumption=self.resumption,
                )
            except (OSError, HandshakeError, ConnectionClosed) as e:
                attempt += 1
                delay = self.retry_policy(attempt)
                _log.info("connecting to %s failed (%s); retrying in %.2fs", self.url, e, delay)
                await asyncio.sleep(delay)
                continue
            except Exception:
                # (the access token provider failed: a failed attempt too, with its traceback)
                attempt += 1
                delay = self.retry_policy(attempt)
                _log.warning("connecting to %s failed; retrying in %.2fs", self.url, delay, exc_info=True)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.client = client
            self.connections += 1
            if self.connections > 1 and self.options is not None and self.options.metrics is not None:
                self.options.metrics.reconnected()
            resumption = self.resumption
            hook = self.on_resumed if resumption is not None and resumption.resumed_last else self.on_connected
            if resumption is not None:
                resumption.resumed_last = False
            if hook is not None:
                try:
                    result = hook(client)
                    if inspect.isawaitable(result):
                        await _until_done_or_lost(result, client)
                except Exception:
                    _log.exception("on_connected failed; closing this connection and retrying")
                    if client.disconnect_reason is None:
                        await client.disconnect()
                    self.client = None
                    attempt += 1
                    await asyncio.sleep(self.retry_policy(attempt))
                    continue
            if client.disconnect_reason is not None:  # ended while on_connected ran
                self.client = None
                self.disconnects = [*self.disconnects[-99:], client.disconnect_reason]
                attempt += 1
                await asyncio.sleep(self.retry_policy(attempt))
                continue
            self._connected.set()
            reason = await client.wait_for_disconnect()
            self._connected.clear()
            self.disconnects = [*self.disconnects[-99:], reason]
            if reason.code == CloseCode.SESSION_MOVED and not reason.locally:
                # our session was resumed on another connection (docs/protocol.md section 6)
                _log.warning("%s: the session lives on elsewhere (4006); not reconnecting", self.url)
                self._stopping = True
                self._stopped.set()
            if self._stopping:
                return
            attempt += 1
            await asyncio.sleep(self.retry_policy(attempt))
