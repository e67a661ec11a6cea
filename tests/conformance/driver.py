"""
The Python drivers of the conformance suite: run the scenarios' client
steps with the Twisted client or the asyncio client and print what each
client observed, as JSON (js/test/conformance-driver.mjs does the same for
the JavaScript client).

    python3 -m tests.conformance.driver twisted|asyncio < scenarios.json > outcomes.json

The input is C{[{"name", "url", "options", "steps"}, ...]} (see
tests/conformance/scenarios.py for the steps); the output C{{name:
outcome}}.  One scenario runs at a time, each within its bound; whatever
connection a scenario leaves open is closed before the next one starts.
The two clients differ only in their L{Runtime}: how to connect, wait,
sleep and start things on their event loop.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from twisted_hub import ConnectionClosedError, HandshakeError, HeartbeatPolicy, HubClientOptions, HubError
from twisted_hub.types import ClientHeartbeatEvent, DisconnectReason, ServerHeartbeatEvent

#: seconds a scenario may take unless it says otherwise
SCENARIO_BOUND = 20.0
#: seconds a wait step may take
WAIT_BOUND = 10.0


class StepTimeout(Exception):
    """A step did not finish within its bound."""


class Runtime:
    """What differs between the Twisted and the asyncio client: the event loop, and the connect calls."""

    name = ""

    async def connect(self, url: str, receiver: object, options: HubClientOptions, timeout: float,
                      receiver_interface: type | None) -> Any:
        raise NotImplementedError

    def reconnecting(self, url: str, receiver: object, options: HubClientOptions, retry_delay: float,
                     timeout: float, on_connected: Callable[[Any], object], on_resumed: Callable[[Any], object]) -> Any:
        raise NotImplementedError

    def start(self, awaitable: Awaitable[Any]) -> Any:
        """Run it now, concurrently; the returned handle is awaited later."""
        raise NotImplementedError

    async def within(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        """Await it; L{StepTimeout} past C{seconds} (it is cancelled)."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def waiter(self) -> tuple[Awaitable[None], Callable[[], None]]:
        """Something to await, and the function that ends the wait."""
        raise NotImplementedError

    def later(self, value: Any) -> Awaitable[Any]:
        """An awaitable result of C{value}, ready on a later turn of the loop (an async receiver method)."""
        raise NotImplementedError

    async def stop_reconnecting(self, client: Any) -> None:
        raise NotImplementedError


class TwistedRuntime(Runtime):
    name = "twisted"

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    async def connect(self, url: str, receiver: object, options: HubClientOptions, timeout: float,
                      receiver_interface: type | None) -> Any:
        from twisted_hub import connect

        return await connect(url, receiver=receiver, options=options, clock=self.reactor, timeout=timeout,
                             receiver_interface=receiver_interface)

    def reconnecting(self, url: str, receiver: object, options: HubClientOptions, retry_delay: float,
                     timeout: float, on_connected: Callable[[Any], object], on_resumed: Callable[[Any], object]) -> Any:
        from twisted_hub import ReconnectingHubClient

        return ReconnectingHubClient(url, receiver=receiver, options=options, on_connected=on_connected,
                                     on_resumed=on_resumed, retry_policy=lambda attempt: retry_delay,
                                     clock=self.reactor, handshake_timeout=timeout)

    def start(self, awaitable: Awaitable[Any]) -> Any:
        from twisted.internet.defer import Deferred

        return awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)  # type: ignore[arg-type]

    async def within(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        from twisted.internet.defer import TimeoutError as DeferredTimeout

        try:
            return await self.start(awaitable).addTimeout(seconds, self.reactor)
        except DeferredTimeout:
            raise StepTimeout(f"not within {seconds} s") from None

    async def sleep(self, seconds: float) -> None:
        from twisted.internet.task import deferLater

        await deferLater(self.reactor, seconds)

    def waiter(self) -> tuple[Awaitable[None], Callable[[], None]]:
        from twisted.internet.defer import Deferred

        waiting: Deferred[None] = Deferred()
        return waiting, lambda: None if waiting.called else waiting.callback(None)

    def later(self, value: Any) -> Awaitable[Any]:
        from twisted.internet.task import deferLater

        return deferLater(self.reactor, 0.01, lambda: value)

    async def stop_reconnecting(self, client: Any) -> None:
        await client.stop()


class AsyncioRuntime(Runtime):
    name = "asyncio"

    async def connect(self, url: str, receiver: object, options: HubClientOptions, timeout: float,
                      receiver_interface: type | None) -> Any:
        from twisted_hub.aio import open_client

        return await open_client(url, receiver=receiver, options=options, timeout=timeout,
                                 receiver_interface=receiver_interface)

    def reconnecting(self, url: str, receiver: object, options: HubClientOptions, retry_delay: float,
                     timeout: float, on_connected: Callable[[Any], object], on_resumed: Callable[[Any], object]) -> Any:
        from twisted_hub.aio import ReconnectingAsyncHubClient

        return ReconnectingAsyncHubClient(url, receiver=receiver, options=options, on_connected=on_connected,
                                          on_resumed=on_resumed, retry_policy=lambda attempt: retry_delay,
                                          timeout=timeout)

    def start(self, awaitable: Awaitable[Any]) -> Any:
        import asyncio

        return asyncio.ensure_future(awaitable)

    async def within(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        import asyncio

        try:
            return await asyncio.wait_for(awaitable, seconds)
        except TimeoutError:
            raise StepTimeout(f"not within {seconds} s") from None

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)

    def waiter(self) -> tuple[Awaitable[None], Callable[[], None]]:
        import asyncio

        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return waiting, lambda: None if waiting.done() else waiting.set_result(None)

    def later(self, value: Any) -> Awaitable[Any]:
        import asyncio

        async def answer() -> Any:
            await asyncio.sleep(0.01)
            return value

        return answer()

    async def stop_reconnecting(self, client: Any) -> None:
        await client.stop()


# -- what a scenario observes -------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A msgpack value as JSON: bytes as C{{"$bytes": hex}}, the same in every driver."""
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def native(value: Any) -> Any:
    """A scenario's argument as a Python value: C{{"$bytes": hex}} is bytes, C{{"$unsendable": ...}} a set."""
    if isinstance(value, list):
        return [native(v) for v in value]
    if isinstance(value, dict):
        if "$bytes" in value:
            return bytes.fromhex(value["$bytes"])
        if "$unsendable" in value:
            return {1, 2}  # msgpack has no sets
        return {k: native(v) for k, v in value.items()}
    return value


def reason_json(reason: DisconnectReason) -> dict[str, Any]:
    return {"kind": reason.kind.value, "code": reason.code, "locally": reason.locally, "message": reason.message}


def error_json(error: BaseException) -> dict[str, Any]:
    if isinstance(error, ConnectionClosedError):
        return {"error": "disconnected", "reason": error.reason.kind.value, "may_have_run": error.may_have_run}
    if isinstance(error, HubError):
        return {"error": error.code, "message": error.message, "detail": jsonable(error.detail)}
    if isinstance(error, HandshakeError):
        return {"error": "handshake", "status": error.status}
    if isinstance(error, StepTimeout):
        return {"error": "no outcome within the step's bound"}
    return {"error": "exception", "type": type(error).__name__, "message": str(error)}


class Recorder:
    """The events a scenario's client reported (receiver calls, heartbeats, disconnects ...)."""

    NAMES = (
        "received", "server_heartbeats", "heartbeat_responses", "heartbeat_timeouts", "on_disconnected", "connected",
        "source_closed", "resumed",
    )

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.events: dict[str, list[Any]] = {name: [] for name in self.NAMES}
        self._wake: list[Callable[[], None]] = []

    def add(self, name: str, value: Any) -> None:
        self.events[name].append(value)
        wake, self._wake = self._wake, []
        for function in wake:
            function()

    async def wait(self, name: str, count: int) -> None:
        while len(self.events[name]) < count:
            waiting, wake = self.runtime.waiter()
            self._wake.append(wake)
            await waiting


class Receiver:
    """The receiver every driver gives its client: the same methods in Python and JavaScript."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def said(self, *args: Any, **kwargs: Any) -> None:
        self._recorder.add("received", {"method": "said", "args": jsonable(list(args)), "kwargs": jsonable(kwargs) or None})

    def double(self, x: Any) -> Any:
        return x * 2

    def later(self, x: Any) -> Awaitable[Any]:
        return self._recorder.runtime.later(x + 1)

    def refuse(self, code: str, message: str, detail: Any = None) -> None:
        raise HubError(code, message, detail)

    def boom(self) -> None:
        raise RuntimeError("boom")

    def undeclared(self) -> str:
        return "undeclared"

    def _secret(self) -> str:
        return "secret"


def client_options(options: dict[str, Any], recorder: Recorder) -> HubClientOptions:
    """The scenario's options (seconds) as L{HubClientOptions}, with every callback recording."""
    extra: dict[str, Any] = {}
    if options.get("heartbeat_interval") is not None:
        extra["heartbeat"] = HeartbeatPolicy(
            enabled=True, interval=options["heartbeat_interval"], timeout=options.get("heartbeat_timeout"),
            any_traffic_counts=options.get("any_traffic_counts", False),
        )
    if "extra_headers" in options:
        extra["extra_headers"] = options["extra_headers"]
    if "call_timeout" in options:
        extra["call_timeout"] = options["call_timeout"]
    if "max_message_size" in options:
        extra["max_message_size"] = options["max_message_size"]
    if options.get("resume"):
        extra["resume"] = True

    def server_heartbeat(event: ServerHeartbeatEvent) -> None:
        recorder.add("server_heartbeats", {"sequence": event.sequence, "metadata": jsonable(event.metadata)})

    def heartbeat_response(event: ClientHeartbeatEvent) -> None:
        recorder.add("heartbeat_responses", {"sequence": event.sequence, "round_trip": event.round_trip})

    return HubClientOptions(
        on_server_heartbeat=server_heartbeat,
        on_heartbeat_response=heartbeat_response,
        on_heartbeat_timeout=lambda: recorder.add("heartbeat_timeouts", True),
        on_disconnected=lambda reason: recorder.add("on_disconnected", reason_json(reason)),
        **extra,
    )


def interface_of(names: list[str]) -> type:
    """A receiver interface class declaring these method names."""
    return type("DeclaredReceiver", (), {name: (lambda self, *args: None) for name in names})


# -- running one scenario --------------------------------------------------------

class Run:
    """One scenario's steps on one client library."""

    def __init__(self, runtime: Runtime, scenario: dict[str, Any]) -> None:
        self.runtime = runtime
        self.scenario = scenario
        self.options: dict[str, Any] = scenario.get("options", {})
        self.recorder = Recorder(runtime)
        self.receiver = Receiver(self.recorder)
        self.out: dict[str, Any] = {}
        self.client: Any = None
        self.reconnecting: Any = None
        self.started: dict[str, Any] = {}
        #: streams a step left open (a stalled consumer)
        self.streams: list[Any] = []

    async def run(self) -> dict[str, Any]:
        runtime = self.runtime
        try:
            await runtime.within(self._steps(), self.scenario.get("bound", SCENARIO_BOUND))
        except StepTimeout as e:
            self.out["error"] = f"the scenario did not finish: {e}"
        except Exception as e:
            self.out["error"] = f"driver: {type(e).__name__}: {e}"
        try:
            if self.reconnecting is not None:
                await runtime.within(runtime.stop_reconnecting(self.reconnecting), 5)
            elif self.client is not None and self.client.disconnect_reason is None:
                await runtime.within(self.client.disconnect(), 5)
        except Exception as e:
            self.out["cleanup_error"] = f"{type(e).__name__}: {e}"
        for name, values in self.recorder.events.items():
            if name != "connected":
                self.out[name] = values
        return self.out

    async def _steps(self) -> None:
        for step in self.scenario["steps"]:
            await getattr(self, "step_" + step["do"])(step)

    # -- the steps ---------------------------------------------------------------
    async def step_connect(self, step: dict[str, Any]) -> None:
        names = self.options.get("receiver_interface")
        try:
            self.client = await self.runtime.connect(
                self.scenario["url"], self.receiver, client_options(self.options, self.recorder),
                self.options.get("connect_timeout", 5.0), interface_of(names) if names is not None else None,
            )
        except Exception as e:
            self.out["connect"] = error_json(e)
            return
        self.out["connect"] = "ok"
        self.out["connection_id"] = self.client.connection_id

    def _invoke(self, step: dict[str, Any]) -> Awaitable[Any]:
        args = native(step.get("args", []))
        kwargs = native(step.get("kwargs"))
        if "timeout" in step:
            return self.client.invoke(step["method"], args, kwargs, timeout=step["timeout"])
        return self.client.invoke(step["method"], args, kwargs)

    async def _outcome(self, awaitable: Awaitable[Any]) -> dict[str, Any]:
        try:
            return {"result": jsonable(await self.runtime.within(awaitable, WAIT_BOUND))}
        except Exception as e:
            return error_json(e)

    async def step_call(self, step: dict[str, Any]) -> None:
        self.out[step["label"]] = await self._outcome(self._invoke(step))

    async def step_start_call(self, step: dict[str, Any]) -> None:
        self.started[step["label"]] = self.runtime.start(self._invoke(step))

    async def step_await_call(self, step: dict[str, Any]) -> None:
        self.out[step["label"]] = await self._outcome(self.started.pop(step["label"]))

    async def step_calls(self, step: dict[str, Any]) -> None:
        """C{count} calls of echo(i), all made in one turn of the loop."""
        handles = [self.runtime.start(self.client.invoke("echo", [i])) for i in range(step["count"])]
        answered, errors = 0, []
        for i, handle in enumerate(handles):
            outcome = await self._outcome(handle)
            if outcome.get("result") == i:
                answered += 1
            elif len(errors) < 3:
                errors.append(outcome)
        self.out[step["label"]] = {"answered": answered, "errors": errors}

    async def step_stream(self, step: dict[str, Any]) -> None:
        """
        Consume a stream result: every item (or C{take} of them, then
        cancel); noted as C{{"items": [...], "end": "ok" | "cancelled"}} or
        the items and the error it failed with.  C{take: 0}: take nothing
        (a stalled consumer), leaving the stream open.
        """
        stream = self.client.open_stream(
            step["method"], native(step.get("args", [])), native(step.get("kwargs")), window=step.get("window", 16),
        )
        take = step.get("take")
        items: list[Any] = []
        out: dict[str, Any] = {"items": items}

        async def consume() -> None:
            while take is None or len(items) < take:
                try:
                    items.append(jsonable(await stream.__anext__()))
                except StopAsyncIteration:
                    out["end"] = "ok"
                    return
            if take:
                stream.cancel()
                out["end"] = "cancelled"
            else:
                self.streams.append(stream)

        try:
            await self.runtime.within(consume(), WAIT_BOUND)
        except Exception as e:
            out.update(error_json(e))
        self.out[step["label"]] = out

    async def step_upload(self, step: dict[str, Any]) -> None:
        """
        Call C{method} with one stream argument: C{count} numbers 0 .. count-1;
        when the source is closed (at its end, or stopped), C{source_closed}
        records how many it made.
        """

        async def numbers() -> AsyncIterator[int]:
            made = 0
            try:
                for i in range(step["count"]):
                    made += 1
                    yield i
            finally:
                self.recorder.add("source_closed", made)

        self.out[step["label"]] = await self._outcome(self.client.invoke(step["method"], [numbers()]))

    async def step_notify(self, step: dict[str, Any]) -> None:
        try:
            self.client.notify(step["method"], *native(step.get("args", [])), **native(step.get("kwargs") or {}))
        except Exception as e:
            self.out[step.get("label", "notify")] = error_json(e)

    async def step_wait(self, step: dict[str, Any]) -> None:
        try:
            await self.runtime.within(self.recorder.wait(step["event"], step.get("count", 1)), WAIT_BOUND)
        except StepTimeout:
            self.out.setdefault("waited_in_vain", []).append(step["event"])

    async def step_sleep(self, step: dict[str, Any]) -> None:
        await self.runtime.sleep(step["seconds"])

    async def step_block(self, step: dict[str, Any]) -> None:
        """Block the event loop (a stalled application): nothing runs meanwhile, on purpose."""
        time.sleep(step["seconds"])

    async def step_wait_disconnect(self, step: dict[str, Any]) -> None:
        try:
            reason = await self.runtime.within(self.client.wait_for_disconnect(), WAIT_BOUND)
        except StepTimeout as e:
            self.out["disconnect"] = error_json(e)
            return
        self.out["disconnect"] = reason_json(reason)

    async def step_disconnect(self, step: dict[str, Any]) -> None:
        reason = await self.runtime.within(self.client.disconnect(), WAIT_BOUND)
        self.out["disconnect"] = reason_json(reason)

    async def step_state(self, step: dict[str, Any]) -> None:
        self.out[step.get("label", "is_connected")] = bool(self.client.is_connected)

    async def step_clock(self, step: dict[str, Any]) -> None:
        offset = self.client.clock_offset
        ahead = (self.client.server_now() - datetime.now(UTC)).total_seconds()
        self.out["clock"] = {"offset": None if offset is None else offset.offset, "server_now_ahead": ahead}

    async def step_reconnecting_start(self, step: dict[str, Any]) -> None:
        self.reconnecting = self.runtime.reconnecting(
            self.scenario["url"], self.receiver, client_options(self.options, self.recorder),
            self.options.get("retry_delay", 0.05), self.options.get("connect_timeout", 5.0),
            lambda client: self.recorder.add("connected", client.connection_id),
            lambda client: self.recorder.add("resumed", client.connection_id),
        )
        self.reconnecting.start()

    async def step_reconnecting_call(self, step: dict[str, Any]) -> None:
        self.out[step["label"]] = await self._outcome(self.reconnecting.call(step["method"], *native(step.get("args", []))))

    async def step_reconnecting_stop(self, step: dict[str, Any]) -> None:
        client, self.reconnecting = self.reconnecting, None
        await self.runtime.within(self.runtime.stop_reconnecting(client), WAIT_BOUND)
        self.out["connections"] = client.connections
        self.out["disconnects"] = [reason_json(reason) for reason in client.disconnects]
        self.out["resumes"] = client.resumes
        self.out["resume_refusals"] = {reason: n for reason, n in client.resume_refusals.items() if n}


async def run_all(runtime: Runtime, scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    return {scenario["name"]: await Run(runtime, scenario).run() for scenario in scenarios}


def main(argv: list[str]) -> None:
    if argv != ["twisted"] and argv != ["asyncio"]:
        raise SystemExit("usage: python3 -m tests.conformance.driver twisted|asyncio < scenarios.json")
    scenarios = json.load(sys.stdin)
    if argv == ["asyncio"]:
        import asyncio

        outcomes = asyncio.run(run_all(AsyncioRuntime(), scenarios))
    else:
        from twisted.internet import task
        from twisted.internet.defer import Deferred

        outcomes = {}

        async def run(reactor: Any) -> None:
            outcomes.update(await run_all(TwistedRuntime(reactor), scenarios))

        try:
            task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
        except SystemExit as e:
            if e.code not in (0, None):
                raise
    json.dump(outcomes, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
