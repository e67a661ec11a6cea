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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from websockets.asyncio.client import ClientConnection as WebSocket
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State
from websockets.typing import Subprotocol

from ._client import (
    ClientConnectionViews,
    ClientHeartbeatEvent,
    HubClientOptions,
    ServerHeartbeatEvent,
    hub_url,
    make_proxy,
)
from ._connection import (
    CallFailed,
    CallSucceeded,
    ClientConnection,
    HandshakeCompleted,
    HeartbeatAnswered,
    ServerHeartbeatReceived,
)
from ._errors import (
    CallTimeoutError,
    ConnectionClosedError,
    ConnectTimeoutError,
    DisconnectKind,
    DisconnectReason,
    HandshakeError,
    HubError,
    kind_for_close,
)
from ._heartbeat import HeartbeatPolicy, HeartbeatVerdict, StallDetector, utc_from_us
from ._hub import receiver_methods
from ._ratelimit import peer_text
from ._receivers import find_receiver_method
from ._reconnect import full_jitter_policy
from ._sentinel import UNSET, Unset
from ._session import ended_reason
from ._wire import (
    HEARTBEAT_TIMEOUT_REASON,
    SUBPROTOCOL,
    ClientInvoke,
    Close,
    CloseCode,
    ErrorCode,
    ProtocolError,
    ReceiverCall,
    TooManyMessagesError,
    close_reason_bytes,
)

__all__ = ["AsyncHubClient", "ReconnectingAsyncHubClient", "connect"]

_log = logging.getLogger("twisted_hub.aio")
InterfaceT = TypeVar("InterfaceT")
#: seconds our close frame may take before the socket is aborted (as the Twisted client)
_CLOSE_WAIT = 1.0


class AsyncHubClient(ClientConnectionViews):
    """
    One connection to one hub, on asyncio.  Get one from L{connect}.

    The API mirrors L{twisted_hub.HubClientProtocol}: C{call} (a coroutine
    here), C{notify}, C{proxy}, C{disconnect}, C{wait_for_disconnect},
    C{round_trip}, C{clock_offset}, C{server_now()}.
    """

    def __init__(
        self, websocket: WebSocket, receiver: object | None, options: HubClientOptions,
        receiver_interface: type | None = None,
    ) -> None:
        self._websocket = websocket
        self._receiver = receiver
        self._receiver_allowed = receiver_methods(receiver_interface)
        self.options = options
        self.core: ClientConnection[asyncio.Future[Any]] = ClientConnection()
        self.core.max_messages_per_frame = options.max_messages_per_frame
        self.disconnect_reason: DisconnectReason | None = None
        self._close_reason: DisconnectReason | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.stall = StallDetector()

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
        if not self.is_connected:
            raise ConnectionClosedError(self.disconnect_reason or _not_open())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            limit = self.core.send_limit(self.options.max_message_size)
            call_id = self.core.invoke(future, method, args or [], kwargs, limit)
        except (TypeError, ValueError, OverflowError) as e:
            raise HubError(ErrorCode.INVALID_ARGUMENTS, f"{method}: {e}") from None
        self._flush()
        seconds = self.options.call_timeout if timeout is UNSET else timeout
        try:
            if seconds is None:
                return await future
            return await asyncio.wait_for(asyncio.shield(future), seconds)
        except TimeoutError:
            self.core.forget_call(call_id)
            raise CallTimeoutError(f"{method!r} got no result within {seconds}s") from None

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call a hub method without waiting for (or getting) a result."""
        if not self.is_connected:
            raise ConnectionClosedError(self.disconnect_reason or _not_open())
        self.core.notify(method, list(args), kwargs or None)
        self._flush()

    def proxy(self, interface: type[InterfaceT] | None = None) -> InterfaceT:
        """The hub as an object whose methods are awaitable calls (see L{HubClientProtocol.proxy})."""
        return make_proxy(self.call, interface)

    async def disconnect(self, reason: str = "") -> DisconnectReason:
        """Close normally; return the L{DisconnectReason} once closed."""
        if self.disconnect_reason is None and self._close_reason is None:
            self._close_reason = DisconnectReason(DisconnectKind.NORMAL, CloseCode.NORMAL, reason, True)
            self.core.closing()
            await self._close_websocket(CloseCode.NORMAL, reason)
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
        self.core.hello(self.options.max_message_size)
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self._abort()
            raise ConnectTimeoutError("welcome", timeout) from None

    def _flush(self) -> None:
        if self.disconnect_reason is not None:
            return
        for frame in self.core.frames_to_send(self.core.send_limit(self.options.max_message_size)):
            self._outgoing.put_nowait(frame)

    async def _write(self) -> None:
        while True:
            frame = await self._outgoing.get()
            if frame is None:
                return
            try:
                await self._websocket.send(frame)
            except ConnectionClosed:
                return

    async def _read(self) -> None:
        try:
            async for data in self._websocket:
                if self._close_reason is not None and self._close_reason.locally:
                    continue
                if isinstance(data, str):
                    await self._protocol_error("text frames are not supported", CloseCode.UNSUPPORTED_DATA)
                    continue
                self._receive(data)
        except ConnectionClosed:
            pass
        finally:
            self._finish()

    def _receive(self, data: bytes) -> None:
        try:
            events = self.core.receive_frame(data, time.time())
        except TooManyMessagesError as e:
            _log.info("the server sent %s; closing with %s", e, CloseCode.POLICY_VIOLATION)
            self._spawn(self._protocol_error(str(e)[:100], CloseCode.POLICY_VIOLATION))
            return
        except ProtocolError as e:
            _log.info("protocol error from the server: %s", e)
            self._spawn(self._protocol_error(str(e)[:100], CloseCode.PROTOCOL_ERROR))
            return
        for event in events:
            kind = type(event)
            if kind is CallSucceeded:
                self._settle(cast(CallSucceeded[asyncio.Future[Any]], event).token, value=cast(Any, event).value)
            elif kind is CallFailed:
                failed = cast(CallFailed[asyncio.Future[Any]], event)
                error = failed.error
                self._settle(failed.token, error=HubError(error.code, error.message, error.detail))
            elif kind is ReceiverCall:
                self._receiver_call(cast(ReceiverCall, event))
            elif kind is ClientInvoke:
                self._spawn(self._client_invoke(cast(ClientInvoke, event)))
            elif kind is ServerHeartbeatReceived:
                self._server_heartbeat(cast(ServerHeartbeatReceived, event))
            elif kind is HeartbeatAnswered:
                self._heartbeat_answered(cast(HeartbeatAnswered, event))
            elif kind is HandshakeCompleted:
                self._handshake_completed()
            elif kind is Close:
                close = cast(Close, event)
                self._close_reason = DisconnectReason(kind_for_close(close.code, False), close.code, close.reason)
        self._flush()

    @staticmethod
    def _settle(future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _handshake_completed(self) -> None:
        policy = self.options.heartbeat
        if policy is not None and policy.enabled and self.core.server_takes_heartbeats:
            self._tasks.append(asyncio.get_running_loop().create_task(self._heartbeats(policy)))
        if not self._ready.done():
            self._ready.set_result(None)

    # -- receivers ------------------------------------------------------------
    def _receiver_method(self, name: str) -> Callable[..., Any] | None:
        return find_receiver_method(self._receiver, name, self._receiver_allowed)

    def _receiver_call(self, call: ReceiverCall) -> None:
        function = self._receiver_method(call.method)
        if function is None:
            _log.warning("the server called receiver method %s, which the receiver lacks", peer_text(call.method))
            return
        try:
            result = function(*call.args, **(call.kwargs or {}))
        except Exception:
            _log.exception("receiver method %s raised", call.method)
            return
        if inspect.isawaitable(result):
            self._spawn(self._log_failure(result, call.method))

    @staticmethod
    async def _log_failure(awaitable: Awaitable[Any], method: str) -> None:
        try:
            await awaitable
        except Exception:
            _log.exception("receiver method %s failed", method)

    async def _client_invoke(self, call: ClientInvoke) -> None:
        function = self._receiver_method(call.method)
        if function is None:
            self.core.reply_error(call.call_id, ErrorCode.UNKNOWN_METHOD, f"the client has no method {peer_text(call.method)}")
        else:
            try:
                result = function(*call.args, **(call.kwargs or {}))
                if inspect.isawaitable(result):
                    result = await result
            except HubError as e:
                self.core.reply_error(call.call_id, e.code, e.message, e.detail)
            except Exception:
                _log.exception("receiver method %s raised", call.method)
                self.core.reply_error(call.call_id, ErrorCode.INTERNAL, "internal error")
            else:
                self.core.reply(call.call_id, result)
        self._flush()

    # -- heartbeats -----------------------------------------------------------
    def _server_heartbeat(self, event: ServerHeartbeatReceived) -> None:
        callback = self.options.on_server_heartbeat
        if callback is None:
            return
        message = event.message
        try:
            server_time = utc_from_us(message.server_time_us)
        except (OverflowError, ValueError, OSError):
            _log.warning("server heartbeat time %sus is out of range; callback skipped", message.server_time_us)
            return
        self._safely(callback, ServerHeartbeatEvent(message.sequence, server_time, message.metadata))

    def _heartbeat_answered(self, event: HeartbeatAnswered) -> None:
        if self.options.metrics is not None and event.clock is not None:
            self.options.metrics.answered(event.latency, event.clock.offset, event.clock.error)
        callback = self.options.on_heartbeat_response
        if callback is not None and event.clock is not None:
            self._safely(callback, ClientHeartbeatEvent(event.sequence, event.latency, event.clock))

    async def _heartbeats(self, policy: HeartbeatPolicy) -> None:
        """Beat every interval; check the deadline the tracker gives (one timer, no per-answer work)."""
        tracker = self.core.heartbeat
        next_beat = time.time() + policy.interval
        while self.is_connected:
            deadline = tracker.deadline(policy.timeout)
            wake = next_beat if deadline is None else min(next_beat, deadline)
            await asyncio.sleep(max(wake - time.time(), 0.0))
            if not self.is_connected or self._close_reason is not None:
                return
            now = time.time()
            self.stall.observe(wake, now)
            if now >= next_beat:
                self.core.send_heartbeat(now)
                self._flush()
                next_beat = now + policy.interval
            last_stall_at = self.stall.last_stall_at if policy.stall_grace else None
            verdict = tracker.check(now, policy, self.core.last_received, last_stall_at)
            if verdict is HeartbeatVerdict.TIMED_OUT:
                await self._timed_out(policy)
                return
            if verdict is HeartbeatVerdict.GRACE:
                _log.info("heartbeat timeout deferred: our event loop was stalled (%.3fs late)", self.stall.max_lag)

    async def _timed_out(self, policy: HeartbeatPolicy) -> None:
        _log.info("server heartbeat timed out after %ss: closing with 4001", policy.timeout)
        if self.options.metrics is not None:
            self.options.metrics.heartbeat_timeouts.inc()
        self._close_reason = DisconnectReason(
            DisconnectKind.TIMED_OUT, CloseCode.HEARTBEAT_TIMEOUT, "the server did not answer our heartbeat", True
        )
        if self.options.on_heartbeat_timeout is not None:
            self._safely(self.options.on_heartbeat_timeout)
        # Tell the server why (CLOSE, then the close frame 4001); don't wait long for a reply.
        self.core.send(Close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON))
        self._flush()
        self.core.closing()
        await self._drop_after_close(CloseCode.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_REASON)

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

    async def _protocol_error(self, reason: str, code: int) -> None:
        if self._close_reason is None:
            self._close_reason = DisconnectReason(DisconnectKind.PROTOCOL_ERROR, code, reason, True)
        self.core.closing()
        await self._close_websocket(code, reason)

    def _finish(self) -> None:
        if self.disconnect_reason is not None:
            return
        websocket = self._websocket
        if not self._ready.done():
            reason = DisconnectReason(DisconnectKind.HANDSHAKE_FAILED, None, "connection closed during the handshake")
            self._ready.set_exception(HandshakeError(None, reason.message))
            self._ready.exception()  # retrieved: _start reports it
        elif self._close_reason is not None:
            reason = self._close_reason
        else:
            reason = ended_reason(None, "", websocket.close_code, websocket.close_reason or "", "connection lost")
        self.disconnect_reason = reason
        for future in self.core.closed():
            self._settle(future, error=ConnectionClosedError(reason))
        self._outgoing.put_nowait(None)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._closed.set()
        if self.options.metrics is not None:
            self.options.metrics.disconnects.labels(reason.kind.value).inc()
        if self.options.on_disconnected is not None:
            self._safely(self.options.on_disconnected, reason)

    @staticmethod
    def _safely(function: Callable[..., object], *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            _log.exception("client callback %s raised", getattr(function, "__name__", repr(function)))


def _not_open() -> DisconnectReason:
    return DisconnectReason(DisconnectKind.CONNECTION_LOST, None, "not connected")


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
