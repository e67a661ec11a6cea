"""
The one list of client scenarios, run against every client (the Twisted
client, the asyncio client and the JavaScript client) by
tests/test_conformance.py; docs/clients.md shows its matrix.

Each L{Scenario} names:

- the server: a C{script} for the scripted server
  (tests/conformance/server.py: raw bytes as docs/protocol.md has them),
  or None for the live C{twistd -n hub} (tests/conformance/hub.py), reached
  at C{/hub/<live_path>};
- the client's C{steps} (JSON: each driver runs them with its client; see
  tests/conformance/driver.py for what each step does) and its C{options}
  (seconds; the JavaScript driver converts to milliseconds);
- what every client must observe (C{expect}, compared by
  tests/conformance/expect.py), where C{server} is what the scripted
  server recorded of the client's first connection (C{servers}: of each);
- where a client differs: C{unsupported} (the client lacks the feature,
  with a one-line reason: the scenario is not run with it),
  C{known_failure} (it is run and must still fail: the matrix says so
  until it is fixed) and C{variants} (a documented difference: a note and
  the expected outcome for that client).

Nothing a client lacks may be left out of this list: a scenario that does
not hold for one client says so here, and the matrix shows it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..helpers.hostile_server import frame_header
from .expect import Between, Integer, NonEmpty, OneOf, StartsWith
from .server import MIB, Script, ScriptedConnection, binary, frame, now_us

__all__ = ["CLIENTS", "CLIENT_TITLES", "GROUPS", "SCENARIOS", "Scenario"]

#: the clients, in the matrix's column order
CLIENTS = ("twisted", "asyncio", "js")
CLIENT_TITLES = {"twisted": "Twisted", "asyncio": "asyncio", "js": "JavaScript"}


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str
    #: one line: what a client must do
    title: str
    steps: list[dict[str, Any]]
    expect: dict[str, Any]
    script: Script | None = None
    live_path: str = "conformance"
    options: dict[str, Any] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    known_failure: dict[str, str] = field(default_factory=dict)
    #: client -> (note, expected outcome for that client, replacing C{expect}'s keys it names)
    variants: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def expected_for(self, client: str) -> dict[str, Any]:
        if client in self.variants:
            return {**self.expect, **self.variants[client][1]}
        return self.expect


# -- the steps ------------------------------------------------------------------------

CONNECT = {"do": "connect"}
WAIT_DISCONNECT = {"do": "wait_disconnect"}
DISCONNECT = {"do": "disconnect"}
STATE = {"do": "state"}
CLOCK = {"do": "clock"}
RECONNECTING_START = {"do": "reconnecting_start"}
RECONNECTING_STOP = {"do": "reconnecting_stop"}


def call(label: str, method: str, *args: Any, kwargs: dict[str, Any] | None = None, **timeout: float) -> dict[str, Any]:
    """Call and wait for the outcome (C{timeout=}: this call's own, seconds)."""
    return {"do": "call", "label": label, "method": method, "args": list(args), "kwargs": kwargs, **timeout}


def start_call(label: str, method: str, *args: Any) -> dict[str, Any]:
    """Call without waiting; C{await_call(label)} waits later."""
    return {"do": "start_call", "label": label, "method": method, "args": list(args)}


def await_call(label: str) -> dict[str, Any]:
    return {"do": "await_call", "label": label}


def calls(label: str, count: int) -> dict[str, Any]:
    """C{count} calls of C{echo(i)} made in one turn of the event loop, then all awaited."""
    return {"do": "calls", "label": label, "count": count}


def notify(method: str, *args: Any, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"do": "notify", "method": method, "args": list(args), "kwargs": kwargs}


def wait(event: str, count: int = 1) -> dict[str, Any]:
    """
    Wait until the client reported C{count} events of a kind: received,
    server_heartbeats, heartbeat_responses, on_disconnected, connected, source_closed, resumed
    (an upload step's source closed, with how many items it made).
    """
    return {"do": "wait", "event": event, "count": count}


def sleep(seconds: float) -> dict[str, Any]:
    """Only to see that something does *not* happen."""
    return {"do": "sleep", "seconds": seconds}


def reconnecting_call(label: str, method: str, *args: Any) -> dict[str, Any]:
    return {"do": "reconnecting_call", "label": label, "method": method, "args": list(args)}


# -- the scripts ----------------------------------------------------------------------

async def serve(conn: ScriptedConnection) -> None:
    """WELCOME, then the default answers (ScriptedConnection.serve)."""
    await conn.open()


def welcome_with(**info: Any) -> Script:
    async def script(conn: ScriptedConnection) -> None:
        await conn.open(**info)

    return script


def after_call(action: Callable[[ScriptedConnection, int], None]) -> Script:
    """WELCOME; when the client's first INVOKE arrives, C{action(conn, its call id)}; then serve."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.open()
        invoke = await conn.expect(2)
        action(conn, invoke[1])

    return script


def after_hello(action: Callable[[ScriptedConnection], None]) -> Script:
    async def script(conn: ScriptedConnection) -> None:
        await conn.open()
        action(conn)

    return script


def asks(*requests: list[Any]) -> Script:
    """Send each CLIENT_INVOKE and wait for its answer (noted as C{replies}); then say C{said("done")}."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.open()
        replies = []
        for request in requests:
            conn.send(request)
            while True:
                message = await conn.receive()
                if message[0] in (4, 5) and message[1] == request[1]:
                    replies.append(message)
                    break
        conn.note("replies", replies)
        conn.send([6, "said", ["done"]])

    return script


def per_connection(*scripts: Script) -> Script:
    """The i-th connection of a client gets the i-th script (the last one for the rest)."""

    async def script(conn: ScriptedConnection) -> None:
        await scripts[min(conn.index, len(scripts) - 1)](conn)

    return script


# -- the scenarios ---------------------------------------------------------------------

SCENARIOS: list[Scenario] = []
GROUPS: list[str] = []


def scenario(name: str, group: str, title: str, steps: list[dict[str, Any]], expect: dict[str, Any], **more: Any) -> None:
    if group not in GROUPS:
        GROUPS.append(group)
    SCENARIOS.append(Scenario(name, group, title, steps, expect, **more))


CLOSED = {"error": "disconnected"}


def disconnected(kind: str, code: int | None, locally: bool, message: Any = None) -> dict[str, Any]:
    reason: dict[str, Any] = {"kind": kind, "code": code, "locally": locally}
    if message is not None:
        reason["message"] = message
    return reason


# Handshake ------------------------------------------------------------------------------
HANDSHAKE = "Handshake"


def failed_handshake(status: int | None, code: int | None = None, locally: bool = False, **more: Any) -> dict[str, Any]:
    """connect() failed with HandshakeError(status); on_disconnected heard handshake-failed (close code, side)."""
    return {"connect": {"error": "handshake", "status": status},
            "on_disconnected": [disconnected("handshake-failed", code, locally)], **more}


scenario(
    "hello", HANDSHAKE, "offers `twisted-hub.v1`; HELLO alone in its frame with its capabilities (`heartbeat`, "
    "`batch`, `stream`) and `max` 1 MiB; connected once WELCOME came, with its connection id",
    [CONNECT, call("answer", "echo", 1)],
    {
        "connect": "ok", "connection_id": "conformance-1", "answer": {"result": 1},
        "server": {
            "subprotocols": ["twisted-hub.v1"], "hello_alone": True,
            "hello": {"caps": OneOf(*(list(p) for p in itertools.permutations(["heartbeat", "batch", "stream"]))), "max": MIB},
        },
    },
    script=serve,
)
scenario(
    "unknown-hub", HANDSHAKE, "`twistd hub`: an unknown hub name is refused with 404; HandshakeError with the status",
    [CONNECT], failed_handshake(404), live_path="nope",
)
scenario(
    "refused-by-on-connecting", HANDSHAKE,
    "`twistd hub`: a hub's `on_connecting` refuses with 403; HandshakeError with the status",
    [CONNECT], failed_handshake(403),
    live_path="conformance?refuse=1",
)
scenario(
    "other-subprotocol", HANDSHAKE, "the server selects another subprotocol: HandshakeError (no status), the socket closed",
    [CONNECT], failed_handshake(None, server={"gone": True}),
    script=lambda conn: _accept_only(conn, "other.v1"),
)
scenario(
    "no-subprotocol", HANDSHAKE, "the server selects no subprotocol: HandshakeError (no status), the socket closed",
    [CONNECT], failed_handshake(None, server={"gone": True}),
    script=lambda conn: _accept_only(conn, None),
)


scenario(
    "extra-headers", HANDSHAKE, "headers of the client's own on the upgrade request (an `Authorization`, a token)",
    [CONNECT], {"connect": "ok", "server": {"headers": {"authorization": "Bearer t0ken", "x-client": "conformance"}}},
    script=serve, options={"extra_headers": {"Authorization": "Bearer t0ken", "X-Client": "conformance"}},
    unsupported={"js": "no request headers: browsers' WebSocket API cannot set them (in Node, pass a `WebSocket` "
                       "constructor that adds them to ws's options; else put a token in the URL's query)"},
)


async def _accept_only(conn: ScriptedConnection, subprotocol: str | None) -> None:
    conn.accept(subprotocol)
    conn.welcome()


async def _silent(conn: ScriptedConnection) -> None:
    """Answers the upgrade, never sends WELCOME."""
    conn.accept()


async def _mute(conn: ScriptedConnection) -> None:
    """Never answers the upgrade."""
    try:
        await conn.reader.read(1)
    except ConnectionError:
        pass
    conn.drop()


scenario(
    "no-welcome", HANDSHAKE, "no WELCOME within the connect timeout (0.5 s): HandshakeError, the socket closed",
    [CONNECT], failed_handshake(None, locally=True, server={"gone": True, "open_seconds": Between(0.3, 2.5)}),
    script=_silent, options={"connect_timeout": 0.5},
)
scenario(
    "no-upgrade-answer", HANDSHAKE,
    "no answer to the upgrade within the connect timeout (0.5 s): HandshakeError, the socket closed",
    [CONNECT],
    failed_handshake(None, locally=True, server={"open_seconds": Between(0.3, 2.5)}),
    script=_mute, options={"connect_timeout": 0.5},
)


async def _result_first(conn: ScriptedConnection) -> None:
    conn.accept()
    conn.send([4, 1, "too early"])
    await conn.hello()


scenario(
    "first-message-not-welcome", HANDSHAKE, "a first message that is not WELCOME: HandshakeError, the client closes 4002",
    [CONNECT], failed_handshake(None, 4002, True, server={"close": 4002}),
    script=_result_first,
)


async def _big_welcome(conn: ScriptedConnection) -> None:
    conn.accept()
    conn.welcome(id="x" * (2 * MIB))
    await conn.hello()


scenario(
    "welcome-too-big", HANDSHAKE, "a WELCOME over the client's 1 MiB: HandshakeError, the client closes 1009",
    [CONNECT], failed_handshake(None, 1009, True, server={"close": 1009}),
    script=_big_welcome,
)
scenario(
    "second-welcome", HANDSHAKE, "a second WELCOME: protocol-error, the client closes 4002",
    [CONNECT, start_call("pending", "echo", 1), WAIT_DISCONNECT, await_call("pending")],
    {"disconnect": disconnected("protocol-error", 4002, True), "pending": CLOSED, "server": {"close": 4002}},
    script=after_call(lambda conn, call_id: conn.welcome()),
)

# Calls and errors -------------------------------------------------------------------------
CALLS = "Calls and errors"

scenario(
    "result", CALLS, "`twistd hub`: a call's result, every msgpack type (bin as bytes)",
    [CONNECT, call("answer", "echo", {"list": [1, -2, 2.5, "x", True, None], "bin": {"$bytes": "00ff"}})],
    {"answer": {"result": {"list": [1, -2, 2.5, "x", True, None], "bin": {"$bytes": "00ff"}}}},
)
scenario(
    "hub-error", CALLS, "`twistd hub`: a hub method's HubError arrives with its code, message and detail",
    [CONNECT, call("answer", "fail", "not-allowed", "no way", {"why": [1, 2]})],
    {"answer": {"error": "not-allowed", "message": "no way", "detail": {"why": [1, 2]}}},
)
scenario(
    "unknown-method", CALLS, "`twistd hub`: an unknown method fails with `unknown-method`; the connection lives",
    [CONNECT, call("answer", "nope"), STATE], {"answer": {"error": "unknown-method"}, "is_connected": True},
)
scenario(
    "invalid-arguments", CALLS, "`twistd hub`: arguments that do not fit the declared types fail with `invalid-arguments`",
    [CONNECT, call("answer", "count", "x"), call("fine", "count", 1)],
    {"answer": {"error": "invalid-arguments"}, "fine": {"result": 2}},
)
scenario(
    "kwargs", CALLS, "keyword arguments go as INVOKE's kwargs map; without them kwargs is left out",
    [CONNECT, call("with", "wire", 1, "a", kwargs={"flag": True}), call("without", "wire", 1)],
    {"with": {"result": {"args": [1, "a"], "kwargs": {"flag": True}}}, "without": {"result": {"args": [1], "kwargs": None}}},
    script=serve,
)
scenario(
    "call-ids", CALLS, "call ids count from 1",
    [CONNECT, call("first", "ids"), call("second", "ids")],
    {"first": {"result": [1]}, "second": {"result": [1, 2]}}, script=serve,
)


async def _swapped(conn: ScriptedConnection) -> None:
    await conn.open()
    first = await conn.expect(2)
    second = await conn.expect(2)
    conn.send([4, second[1], second[3][0]])
    conn.send([4, first[1], first[3][0]])


scenario(
    "answers-by-id", CALLS, "answers in another order than the calls: each call gets its own (matched by call id)",
    [CONNECT, start_call("first", "echo", "one"), start_call("second", "echo", "two"), await_call("first"), await_call("second")],
    {"first": {"result": "one"}, "second": {"result": "two"}}, script=_swapped,
)
scenario(
    "notify", CALLS, "notify sends NOTIFY (kwargs left out when there are none) and gets no answer",
    [CONNECT, notify("wire", 7, kwargs={"k": 1}), notify("wire", 8), call("seen", "notified")],
    {"seen": {"result": [[3, "wire", [7], {"k": 1}], [3, "wire", [8]]]}}, script=serve,
)


def _late_answers(conn: ScriptedConnection) -> Callable[[Any], Any]:
    """Never answers `slow`; before the next `echo`'s answer, sends the late answer of every `slow`."""
    slow: list[int] = []

    def answer(message: Any) -> Any:
        if message[0] == 2 and message[2] == "slow":
            slow.append(message[1])
            return []  # no answer
        if message[0] == 2 and message[2] == "echo" and slow:
            conn.send(*([4, call_id, "late"] for call_id in slow))
            slow.clear()
        return None

    return answer


async def _late(conn: ScriptedConnection) -> None:
    await conn.open()
    await conn.serve(answer=_late_answers(conn))


scenario(
    "call-timeout", CALLS, "a call with its own timeout (0.3 s) fails with `timeout`; its late answer is ignored",
    [CONNECT, call("slow", "slow", timeout=0.3), call("after", "echo", "x"), STATE],
    {"slow": {"error": "timeout"}, "after": {"result": "x"}, "is_connected": True}, script=_late,
)
scenario(
    "call-timeout-option", CALLS, "the client's default call timeout (0.3 s) applies to every call",
    [CONNECT, call("slow", "slow"), call("after", "echo", "x")],
    {"slow": {"error": "timeout"}, "after": {"result": "x"}}, script=_late, options={"call_timeout": 0.3},
)
scenario(
    "over-server-max", CALLS, "a call over the server's announced `max` fails locally with `invalid-arguments`, unsent",
    [CONNECT, call("big", "echo", "x" * 400), call("small", "echo", "ok")],
    {"big": {"error": "invalid-arguments"}, "small": {"result": "ok"}, "server": {"kinds": {"2": 1}}},
    script=welcome_with(max=300),
)
scenario(
    "unsendable-argument", CALLS, "an argument msgpack cannot carry (a set) fails locally with `invalid-arguments`, unsent",
    [CONNECT, call("bad", "echo", {"$unsendable": True}), call("good", "echo", "ok")],
    {"bad": {"error": "invalid-arguments"}, "good": {"result": "ok"}, "server": {"kinds": {"2": 1}}},
    script=serve,
)
scenario(
    "may-have-run", CALLS, "a call sent before its connection ended fails with `may_have_run` true; one made after, false",
    [CONNECT, start_call("sent", "never"), WAIT_DISCONNECT, await_call("sent"), call("after", "echo", 1)],
    {"sent": {"error": "disconnected", "may_have_run": True}, "after": {"error": "disconnected", "may_have_run": False}},
    script=after_call(lambda conn, call_id: conn.close(1001, "going")),
)
scenario(
    "call-after-disconnect", CALLS, "a call after disconnect() fails with `disconnected`",
    [CONNECT, DISCONNECT, call("after", "echo", 1)], {"after": CLOSED}, script=serve,
)

# Receiver calls and client results ------------------------------------------------------------
RECEIVERS = "Receiver calls and client results"

scenario(
    "receiver-call", RECEIVERS, "RECEIVER_CALL runs the receiver's method with its arguments",
    [CONNECT, wait("received")],
    {"received": [{"method": "said", "args": ["ann", "hi"], "kwargs": None}]},
    script=after_hello(lambda conn: conn.send([6, "said", ["ann", "hi"]])),
)
scenario(
    "receiver-call-kwargs", RECEIVERS, "RECEIVER_CALL's kwargs reach the receiver method",
    [CONNECT, wait("received")],
    {"received": [{"method": "said", "args": [1], "kwargs": {"text": "hi"}}]},
    script=after_hello(lambda conn: conn.send([6, "said", [1], {"text": "hi"}])),
    variants={"js": ("the kwargs map is a last argument (JavaScript has no keyword arguments)",
                     {"received": [{"method": "said", "args": [1, {"text": "hi"}], "kwargs": None}]})},
)
scenario(
    "receiver-call-unknown", RECEIVERS, "RECEIVER_CALL of a missing or private (`_name`) method is ignored; the connection lives",
    [CONNECT, wait("received"), STATE],
    {"received": [{"method": "said", "args": ["after"], "kwargs": None}], "is_connected": True},
    script=after_hello(lambda conn: conn.send([6, "nope", []], [6, "_secret", []], [6, "said", ["after"]])),
)
scenario(
    "receiver-call-in-a-batch", RECEIVERS, "a batched frame's messages are all handled, in order",
    [CONNECT, start_call("pending", "echo", 0), wait("received", 2), await_call("pending")],
    {"received": [{"method": "said", "args": [1], "kwargs": None}, {"method": "said", "args": [2], "kwargs": None}],
     "pending": {"result": "answered"}},
    script=after_call(lambda conn, call_id: conn.send([6, "said", [1]], [4, call_id, "answered"], [6, "said", [2]])),
)
scenario(
    "client-result", RECEIVERS, "CLIENT_INVOKE is answered with RESULT and the method's return value",
    [CONNECT, wait("received")],
    {"server": {"notes": {"replies": [[4, 5, 42]]}}}, script=asks([7, 5, "double", [21]]),
)
scenario(
    "client-result-async", RECEIVERS,
    "a receiver method's awaitable result (Deferred, coroutine, Promise) is awaited and answered",
    [CONNECT, wait("received")],
    {"server": {"notes": {"replies": [[4, 6, 2]]}}}, script=asks([7, 6, "later", [1]]),
)
scenario(
    "client-result-unknown", RECEIVERS, "CLIENT_INVOKE of a missing or private method is answered `unknown-method`",
    [CONNECT, wait("received")],
    {"server": {"notes": {"replies": [[5, 7, "unknown-method", NonEmpty(), None], [5, 8, "unknown-method", NonEmpty(), None]]}}},
    script=asks([7, 7, "nope", []], [7, 8, "_secret", []]),
)
scenario(
    "client-result-hub-error", RECEIVERS, "a receiver method's HubError is answered with its code, message and detail",
    [CONNECT, wait("received")],
    {"server": {"notes": {"replies": [[5, 9, "no", "refused", {"x": 1}]]}}},
    script=asks([7, 9, "refuse", ["no", "refused", {"x": 1}]]),
)
scenario(
    "client-result-exception", RECEIVERS, "a receiver method's other exception is answered `internal`, without its text",
    [CONNECT, wait("received")],
    {"server": {"notes": {"replies": [[5, 10, "internal", "internal error", None]]}}}, script=asks([7, 10, "boom", []]),
)
scenario(
    "receiver-interface", RECEIVERS, "with a receiver interface, a method it does not declare is answered `unknown-method`",
    [CONNECT, wait("received")],
    {"server": {"notes": {"replies": [[5, 11, "unknown-method", NonEmpty(), None], [4, 12, 4]]}}},
    script=asks([7, 11, "undeclared", []], [7, 12, "double", [2]]), options={"receiver_interface": ["said", "double"]},
    unsupported={"js": "no receiver interface: every public method of the receiver object may be called "
                       "(TypeScript types are not checked at run time)"},
)
scenario(
    "client-result-through-the-hub", RECEIVERS, "`twistd hub`: a hub method asks the caller for a client result (sync and async)",
    [CONNECT, call("sync", "ask", "double", 21), call("async", "ask", "later", 1)],
    {"sync": {"result": 42}, "async": {"result": 2}},
)
scenario(
    "client-error-through-the-hub", RECEIVERS, "`twistd hub`: the client's error answer reaches the hub method and its caller",
    [CONNECT, call("unknown", "ask", "nope"), call("refused", "ask", "refuse", "no", "refused", {"x": 1})],
    {"unknown": {"error": "unknown-method"}, "refused": {"error": "no", "message": "refused", "detail": {"x": 1}}},
)
scenario(
    "receiver-call-through-the-hub", RECEIVERS, "`twistd hub`: `self.clients.caller.said(...)` reaches the receiver",
    [CONNECT, call("answer", "hear", "a", 1), wait("received")],
    {"answer": {"result": None}, "received": [{"method": "said", "args": ["a", 1], "kwargs": None}]},
)

# Batching -------------------------------------------------------------------------------------
BATCHING = "Batching"

scenario(
    "batch-1000-calls", BATCHING, "1,000 calls made at once: no frame holds more than 256 messages, all 1,000 answered",
    [CONNECT, calls("echoes", 1000)],
    {"echoes": {"answered": 1000, "errors": []}, "server": {"max_messages_per_frame": Between(1, 256), "kinds": {"2": 1000}}},
    script=serve,
)
scenario(
    "no-batch-capability", BATCHING, "to a server that did not announce `batch`, one message per frame",
    [CONNECT, calls("echoes", 20)],
    {"echoes": {"answered": 20, "errors": []}, "server": {"max_messages_per_frame": 1, "kinds": {"2": 20}}},
    script=welcome_with(caps=["heartbeat"]),
)
scenario(
    "frame-of-1024", BATCHING, "a frame of 1,024 messages from the server is handled whole",
    [CONNECT, wait("received", 1024), STATE],
    {"received": StartsWith({"method": "said", "args": [0], "kwargs": None}), "is_connected": True},
    script=after_hello(lambda conn: conn.send(*([6, "said", [i]] for i in range(1024)))),
)
scenario(
    "frame-of-1025", BATCHING, "a frame of 1,025 messages: none handled, protocol-error, the client closes 1008",
    [CONNECT, start_call("pending", "echo", 1), WAIT_DISCONNECT, await_call("pending")],
    {"disconnect": disconnected("protocol-error", 1008, True), "pending": CLOSED, "received": [], "server": {"close": 1008}},
    script=after_call(lambda conn, call_id: conn.send(*([6, "said", [i]] for i in range(1025)))),
)

# Heartbeats and clock -------------------------------------------------------------------------
HEARTBEATS = "Heartbeats and clock"


async def _server_heartbeats(conn: ScriptedConnection) -> None:
    await conn.open()
    conn.send([9, 77, now_us(), b"\x01\x02"])
    conn.send([9, 78, now_us(), None])
    acks = [(await conn.expect(10)), (await conn.expect(10))]
    conn.note("acks", acks)
    conn.send([6, "said", ["done"]])


scenario(
    "server-heartbeat", HEARTBEATS, "each SERVER_HEARTBEAT is answered with its sequence; the event has it and the metadata",
    [CONNECT, wait("received")],
    {"server_heartbeats": [{"sequence": 77, "metadata": {"$bytes": "0102"}}, {"sequence": 78, "metadata": None}],
     "server": {"notes": {"acks": [[10, 77], [10, 78]]}}},
    script=_server_heartbeats,
)
scenario(
    "client-heartbeat", HEARTBEATS,
    "client heartbeats (every 0.1 s) are `[11, sequence from 1, time]`; the answer gives a round trip",
    [CONNECT, wait("heartbeat_responses")],
    {"heartbeat_responses": StartsWith({"sequence": 1, "round_trip": Between(0, 5)}),
     "server": {"first_client_heartbeat": [11, 1, Integer()]}},
    script=serve, options={"heartbeat_interval": 0.1, "heartbeat_timeout": 5},
)
scenario(
    "no-heartbeat-capability", HEARTBEATS, "no client heartbeat to a server that did not announce `heartbeat`",
    [CONNECT, sleep(0.3), call("answer", "echo", 1)],
    {"answer": {"result": 1}, "server": {"client_heartbeats": 0}},
    script=welcome_with(caps=["batch"]), options={"heartbeat_interval": 0.05, "heartbeat_timeout": 5},
)


async def _never_answers_heartbeats(conn: ScriptedConnection) -> None:
    await conn.open()
    await conn.serve(heartbeats=False)


scenario(
    "heartbeat-timeout", HEARTBEATS, "unanswered heartbeats (0.1 s, timeout 0.3 s): timed-out; CLOSE and close frame 4001 sent",
    [CONNECT, WAIT_DISCONNECT],
    {"disconnect": disconnected("timed-out", 4001, True), "heartbeat_timeouts": [True],
     "server": {"hub_close": [8, 4001, "heartbeat timeout"], "close": 4001}},
    script=_never_answers_heartbeats, options={"heartbeat_interval": 0.1, "heartbeat_timeout": 0.3},
)


def _heartbeats_answered_after(delay: float) -> Script:
    """Answers each client heartbeat C{delay} seconds after it arrived."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.open()
        loop = asyncio.get_running_loop()

        def answer(message: Any) -> Any:
            if message[0] == 11:
                reply = [12, message[1], message[2], now_us()]
                loop.call_later(delay, lambda: None if conn.writer.is_closing() else conn.send(reply))
                return []  # nothing now
            return None

        await conn.serve(answer=answer)

    return script


scenario(
    "slow-heartbeat-answers", HEARTBEATS, "answers slower than the interval but within the timeout keep the connection "
    "(0.1 s beats answered after 0.3 s, timeout 2 s)",
    [CONNECT, sleep(1.5), STATE],
    {"is_connected": True, "heartbeat_responses": StartsWith({"sequence": 1, "round_trip": Between(0.25, 2)})},
    script=_heartbeats_answered_after(0.3), options={"heartbeat_interval": 0.1, "heartbeat_timeout": 2.0},
)


async def _busy_never_answers_heartbeats(conn: ScriptedConnection) -> None:
    """Sends a receiver call every 0.05 s for 1.5 s, answers no heartbeat."""
    await conn.open()

    async def chatter() -> None:
        for i in range(30):
            if conn.writer.is_closing():
                return
            conn.send([6, "said", [i]])
            await asyncio.sleep(0.05)

    sender = asyncio.ensure_future(chatter())
    try:
        await conn.serve(heartbeats=False)
    finally:
        sender.cancel()


scenario(
    "any-traffic-counts", HEARTBEATS, "with `any_traffic_counts`, data from the server counts as an answer: "
    "unanswered heartbeats (0.1 s, timeout 0.4 s) during 1 s of receiver calls do not time out",
    [CONNECT, sleep(1.0), STATE],
    {"is_connected": True, "heartbeat_timeouts": [], "server": {"client_heartbeats": Between(3, 1000)}},
    script=_busy_never_answers_heartbeats,
    options={"heartbeat_interval": 0.1, "heartbeat_timeout": 0.4, "any_traffic_counts": True},
)
scenario(
    "stalled-event-loop", HEARTBEATS, "our own event loop blocked (1.5 s) past the heartbeat timeout (0.6 s) while the "
    "server's answers (each after 0.2 s) waited unread: no timeout (the stall gets one more exchange)",
    [CONNECT, wait("heartbeat_responses"), {"do": "block", "seconds": 1.5}, sleep(0.5), STATE],
    {"is_connected": True, "heartbeat_timeouts": []},
    script=_heartbeats_answered_after(0.2), options={"heartbeat_interval": 0.1, "heartbeat_timeout": 0.6},
)


def _clock_skewed(seconds: float) -> Script:
    async def script(conn: ScriptedConnection) -> None:
        await conn.open()

        def answer(message: Any) -> Any:
            if message[0] == 11:
                return [12, message[1], message[2], int((time.time() + seconds) * 1_000_000)]
            return None

        await conn.serve(answer=answer)

    return script


scenario(
    "clock-ahead", HEARTBEATS, "a server clock 1000 s ahead: clock offset +1000 s, server_now() 1000 s ahead",
    [CONNECT, wait("heartbeat_responses"), CLOCK],
    {"clock": {"offset": Between(999, 1001), "server_now_ahead": Between(999, 1001)}},
    script=_clock_skewed(1000), options={"heartbeat_interval": 0.1, "heartbeat_timeout": 5},
)
scenario(
    "clock-behind", HEARTBEATS, "a server clock 1000 s behind: clock offset -1000 s",
    [CONNECT, wait("heartbeat_responses"), CLOCK],
    {"clock": {"offset": Between(-1001, -999), "server_now_ahead": Between(-1001, -999)}},
    script=_clock_skewed(-1000), options={"heartbeat_interval": 0.1, "heartbeat_timeout": 5},
)
scenario(
    "server-heartbeats-through-the-hub", HEARTBEATS,
    "`twistd hub` (heartbeats every 0.25 s): answered, the server measures a latency",
    [CONNECT, wait("server_heartbeats", 2), call("latency", "latency")],
    {"latency": {"result": Between(1e-7, 5)}, "server_heartbeats": StartsWith({"metadata": None}, {"metadata": None})},
)

# Closing: the server's codes ------------------------------------------------------------------
SERVER_CLOSES = "Closing: the server's close codes"
#: every close code protocol.md section 6 defines (and one it does not), as the client must report it
CLOSE_KINDS = [
    (1000, "normal"), (1001, "going-away"), (1002, "protocol-error"), (1003, "protocol-error"), (1007, "protocol-error"),
    (1008, "protocol-error"), (1009, "message-too-big"), (1011, "normal"), (4000, "kicked"), (4001, "peer-timed-out"),
    (4002, "protocol-error"), (4003, "handshake-failed"), (4004, "slow-consumer"), (4005, "token-expired"),
    (4050, "normal"),
]
PENDING_THEN_DISCONNECT = [CONNECT, start_call("pending", "echo", 1), WAIT_DISCONNECT, await_call("pending")]

for _code, _kind in CLOSE_KINDS:
    unknown = " (an unknown code: a normal close)" if _code == 4050 else ""
    scenario(
        f"close-{_code}", SERVER_CLOSES, f"CLOSE `[8, {_code}, reason]` then close frame {_code}: `{_kind}`, its reason, "
        f"not locally; the pending call fails{unknown}",
        PENDING_THEN_DISCONNECT,
        {"disconnect": disconnected(_kind, _code, False, f"why {_code}"), "pending": CLOSED,
         "on_disconnected": [disconnected(_kind, _code, False)], "server": {"answered_close": True}},
        script=after_call(lambda conn, call_id, code=_code: conn.close(code, f"why {code}")),
    )
    scenario(
        f"close-frame-{_code}", SERVER_CLOSES, f"close frame {_code} alone (no CLOSE message): `{_kind}`, the frame's reason",
        PENDING_THEN_DISCONNECT,
        {"disconnect": disconnected(_kind, _code, False, f"frame {_code}"), "pending": CLOSED,
         "server": {"answered_close": True}},
        script=after_call(lambda conn, call_id, code=_code: conn.close(code, f"frame {code}", message=False)),
    )

scenario(
    "close-1006", SERVER_CLOSES, "TCP ends without a close frame (1006): `connection-lost`, no code",
    PENDING_THEN_DISCONNECT, {"disconnect": disconnected("connection-lost", None, False), "pending": CLOSED},
    script=after_call(lambda conn, call_id: conn.drop()),
)
scenario(
    "close-message-then-drop", SERVER_CLOSES,
    "CLOSE `[8, 4000, reason]`, then TCP ends without a close frame: `kicked`, its reason",
    PENDING_THEN_DISCONNECT, {"disconnect": disconnected("kicked", 4000, False, "kicked by the test"), "pending": CLOSED},
    script=after_call(lambda conn, call_id: (conn.close(4000, "kicked by the test", frame=False), conn.drop())),
)
scenario(
    "close-message-wins", SERVER_CLOSES, "CLOSE `[8, 4001, ...]` then close frame 1000: the CLOSE message's code and reason win",
    PENDING_THEN_DISCONNECT, {"disconnect": disconnected("peer-timed-out", 4001, False, "heartbeat timeout"), "pending": CLOSED},
    script=after_call(lambda conn, call_id: (conn.send([8, 4001, "heartbeat timeout"]), conn.close(1000, "", message=False))),
)
scenario(
    "page-frozen", SERVER_CLOSES, "a connection that lived through a page freeze and ends without a close frame (Chromium "
    "closes it itself): `going-away`, 1001, locally",
    [CONNECT, {"do": "freeze_page"}, start_call("pending", "echo", 1), WAIT_DISCONNECT, await_call("pending")],
    {"disconnect": disconnected("going-away", 1001, True), "pending": CLOSED},
    script=after_call(lambda conn, call_id: conn.drop()), options={"page": True},
    unsupported={client: "no page lifecycle: a browser freezes pages, not Python processes" for client in ("twisted", "asyncio")},
)
scenario(
    "close-frame-without-code", SERVER_CLOSES, "a close frame without a code: `normal`, code 1005 (RFC 6455 7.1.5)",
    PENDING_THEN_DISCONNECT, {"disconnect": disconnected("normal", 1005, False), "pending": CLOSED},
    script=after_call(lambda conn, call_id: conn.close(None, "", message=False)),
)

# Closing: the client's decisions ---------------------------------------------------------------
CLIENT_CLOSES = "Closing: the client's own decisions"

scenario(
    "disconnect", CLIENT_CLOSES, "disconnect(): `normal`, 1000, locally; close frame 1000 sent; the pending call fails",
    [CONNECT, start_call("pending", "never"), DISCONNECT, await_call("pending")],
    {"disconnect": disconnected("normal", 1000, True), "pending": CLOSED,
     "on_disconnected": [disconnected("normal", 1000, True)], "server": {"close": 1000}},
    script=serve,
)
#: what the server sends after the client's first call -> (close code the client sends, kind)
CLIENT_DECISIONS: list[tuple[str, str, bytes | Callable[[int], bytes], int, str]] = [
    ("text-frame", "a text frame", frame(0x1, b"[4, 1, 1]"), 1003, "protocol-error"),
    ("invalid-utf8", "a text frame that is not UTF-8", frame(0x1, b"\xff\xfe"), 1007, "protocol-error"),
    ("unknown-kind", "a message of an unknown kind (13)", binary([13, 1]), 4002, "protocol-error"),
    ("invalid-after-valid", "a frame whose second message is invalid: none handled",
     frame(0x2, msgpack.packb([6, "said", [1]]) + b"\xc1"), 4002, "protocol-error"),
    ("result-too-big", "a RESULT of 2 MiB (over the client's 1 MiB)", lambda call_id: binary([4, call_id, b"x" * (2 * MIB)]),
     1009, "message-too-big"),
    ("huge-header", "a frame header announcing 100 MiB, no body", frame_header(0x2, 100 * MIB), 1009, "message-too-big"),
    ("reserved-opcode", "a frame of a reserved opcode (bad framing)", frame(0x3, b"?"), 1002, "protocol-error"),
    ("rsv-bit", "a frame with RSV1 set, no extension negotiated (bad framing)", frame(0x2, b"\x93\x04\x01\x01", rsv=4),
     1002, "protocol-error"),
]
for _name, _what, _bytes, _code, _kind in CLIENT_DECISIONS:
    scenario(
        _name, CLIENT_CLOSES, f"{_what}: `{_kind}`, the client closes {_code}, locally; the pending call fails",
        PENDING_THEN_DISCONNECT,
        {"disconnect": disconnected(_kind, _code, True), "pending": CLOSED, "received": [], "server": {"close": _code}},
        script=after_call(lambda conn, call_id, data=_bytes: conn.write(data(call_id) if callable(data) else data)),
    )

# Reconnecting ---------------------------------------------------------------------------------
RECONNECTING = "Reconnecting"


def _answers_then(end: Callable[[ScriptedConnection], None]) -> Script:
    """
    Answers the client's first call, then ends the connection: only once the
    reconnecting client made a call on it (it was handed over to calls: a
    connection that ends before, while on_connected is due, is no connection
    for the Twisted client, which would make the count of connections a race).
    """

    async def script(conn: ScriptedConnection) -> None:
        await conn.open()
        invoke = await conn.expect(2)
        conn.send([4, invoke[1], invoke[3][0]])
        end(conn)

    return script


_closes_after_a_call = _answers_then(lambda conn: conn.close(1001, "restarting"))
_drops_after_a_call = _answers_then(lambda conn: conn.drop())


async def _refuses(conn: ScriptedConnection) -> None:
    conn.refuse(503, "busy")


async def _late_welcome(conn: ScriptedConnection) -> None:
    await asyncio.sleep(0.5)  # an outage: the client waits for this connection
    await conn.open()


#: the last disconnect of a reconnecting client: stop() closed it
STOPPED = disconnected("normal", 1000, True)
RECONNECT_STEPS = [
    RECONNECTING_START, wait("connected"), reconnecting_call("before", "echo", "once"), wait("connected", 2),
    reconnecting_call("after", "echo", "again"), RECONNECTING_STOP,
]

scenario(
    "reconnect-after-server-close", RECONNECTING, "the reconnecting client reconnects after the server closed (1001) "
    "the connection its first call went to; stop() closes normally (1000)",
    RECONNECT_STEPS,
    {"before": {"result": "once"}, "after": {"result": "again"}, "connections": 2,
     "disconnects": [disconnected("going-away", 1001, False, "restarting"), STOPPED],
     "server_connections": 2, "servers": [{"answered_close": True}, {"close": 1000}]},
    script=per_connection(_closes_after_a_call, serve), options={"retry_delay": 0.05},
)
scenario(
    "reconnect-after-connection-lost", RECONNECTING,
    "the reconnecting client reconnects after TCP ended without a close frame",
    RECONNECT_STEPS,
    {"before": {"result": "once"}, "after": {"result": "again"}, "connections": 2,
     "disconnects": [disconnected("connection-lost", None, False), STOPPED], "server_connections": 2},
    script=per_connection(_drops_after_a_call, serve), options={"retry_delay": 0.05},
)
scenario(
    "reconnect-after-refusal", RECONNECTING,
    "a refused attempt (503) is retried; it is no disconnect (the one disconnect is stop()'s)",
    [RECONNECTING_START, wait("connected"), reconnecting_call("after", "echo", "again"), RECONNECTING_STOP],
    {"after": {"result": "again"}, "connections": 1, "disconnects": [STOPPED], "server_connections": 2},
    script=per_connection(_refuses, serve), options={"retry_delay": 0.05},
)
scenario(
    "reconnect-call-waits", RECONNECTING, "a call made between connections waits for the next connection",
    [RECONNECTING_START, wait("connected"), reconnecting_call("before", "echo", "once"), wait("on_disconnected"),
     reconnecting_call("during", "echo", "x"), RECONNECTING_STOP],
    {"before": {"result": "once"}, "during": {"result": "x"}, "connections": 2, "server_connections": 2},
    script=per_connection(_closes_after_a_call, _late_welcome), options={"retry_delay": 0.05},
)

# Resumption (docs/protocol.md section 10) ------------------------------------------------------
RESUMPTION = "Resumption"
#: the session token the scripted server grants, and the one it rotates to on RESUMED
TOKEN = bytes(range(32))
ROTATED = bytes(range(32, 64))
RESUMING = ["heartbeat", "batch", "stream", "resume"]


async def _grants_then_drops_in_a_call(conn: ScriptedConnection) -> None:
    """WELCOME with resume; SESSION after the HELLO; the client's first call in flight, the link drops."""
    await conn.open(caps=RESUMING)
    conn.note("announced_resume", "resume" in (conn.record["hello"] or {}).get("caps", []))
    conn.send([20, TOKEN, 30.0])
    invoke = await conn.expect(2)
    conn.note("call_id", invoke[1])
    conn.drop()


def _answers_resume(accepted: bool) -> Script:
    """The next connection: HELLO + RESUME in one frame; RESUMED and the call's answer, or a refusal and SESSION."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.open(caps=RESUMING, id="conformance-9")
        resume = await conn.expect(21)
        conn.note("resume", {"token_ok": resume[1] == TOKEN, "received": resume[2], "with_hello": not conn.record["hello_alone"]})
        if accepted:
            # the server had received the call (1), and answers it now, after RESUMED
            conn.send([22, 1, ROTATED, "conformance-1"], [4, 1, "kept"])
        else:
            conn.send([23, "window-expired", "the session outlived its window"], [20, ROTATED, 30.0])
        await conn.serve()

    return script


scenario(
    "resume-after-connection-lost", RESUMPTION,
    "with resume on both sides a call in flight when TCP drops is answered after the resume: HELLO + RESUME "
    "in one frame with the granted token, no second run, on_resumed instead of on_connected",
    [RECONNECTING_START, wait("connected"), reconnecting_call("during", "echo", "x"), wait("resumed"),
     reconnecting_call("after", "echo", "again"), RECONNECTING_STOP],
    {"during": {"result": "kept"}, "after": {"result": "again"}, "resumes": 1, "resume_refusals": {},
     "server_connections": 2,
     "servers": [{"notes": {"announced_resume": True, "call_id": 1}},
                 {"notes": {"resume": {"token_ok": True, "received": 0, "with_hello": True}}}]},
    script=per_connection(_grants_then_drops_in_a_call, _answers_resume(True)),
    options={"retry_delay": 0.05, "resume": True},
)
scenario(
    "resume-refused", RESUMPTION,
    "a refused resume fails the call it kept with disconnected, counts the reason, and the fresh session serves",
    [RECONNECTING_START, wait("connected"), reconnecting_call("during", "echo", "x"), wait("connected", 2),
     reconnecting_call("after", "echo", "again"), RECONNECTING_STOP],
    {"during": CLOSED, "after": {"result": "again"}, "resumes": 0, "resume_refusals": {"window-expired": 1},
     "server_connections": 2,
     "servers": [{"notes": {"announced_resume": True}}, {"notes": {"resume": {"token_ok": True, "with_hello": True}}}]},
    script=per_connection(_grants_then_drops_in_a_call, _answers_resume(False)),
    options={"retry_delay": 0.05, "resume": True},
)



async def _moves_the_session(conn: ScriptedConnection) -> None:
    """WELCOME with resume; SESSION; the first call answered; then 4006: the session was resumed elsewhere."""
    await conn.open(caps=RESUMING)
    conn.send([20, TOKEN, 30.0])
    invoke = await conn.expect(2)
    conn.send([4, invoke[1], "one"])
    conn.close(4006, "session resumed elsewhere")
    await conn.serve()


scenario(
    "session-moved-stops", RESUMPTION,
    "4006 (the session lives on elsewhere) ends the reconnecting client: it does not connect again",
    [RECONNECTING_START, wait("connected"), reconnecting_call("first", "echo", "x"), wait("on_disconnected"),
     reconnecting_call("after", "echo", "x"), RECONNECTING_STOP],
    {"first": {"result": "one"}, "after": CLOSED, "resumes": 0, "server_connections": 1,
     "disconnects": [disconnected("normal", 4006, False, "session resumed elsewhere")]},
    script=_moves_the_session, options={"retry_delay": 0.05, "resume": True},
)

# Streams --------------------------------------------------------------------------------------
STREAMS = "Streams"


def stream(label: str, method: str, *args: Any, window: int = 16, take: int | None = None) -> dict[str, Any]:
    """Consume a stream result: every item, or C{take} of them then cancel (0: none, left open)."""
    return {"do": "stream", "label": label, "method": method, "args": list(args), "window": window, "take": take}


def upload(label: str, method: str, count: int) -> dict[str, Any]:
    """Call C{method} with one stream argument: the numbers 0 .. count-1."""
    return {"do": "upload", "label": label, "method": method, "count": count}


async def _streams_on_the_wire(conn: ScriptedConnection) -> None:
    await conn.open()
    invoke = await conn.expect(15)
    conn.note("stream_invoke", invoke)
    call_id = invoke[1]
    conn.send(*([16, call_id, item] for item in "abcd"))
    conn.note("credit", await conn.expect(18))  # two taken (half the window of 4): two more granted
    conn.send([16, call_id, "e"], [17, call_id])
    await conn.serve()


async def _argument_on_the_wire(conn: ScriptedConnection) -> None:
    await conn.open()
    invoke = await conn.expect(2)
    conn.note("invoke", invoke)
    stream_id = invoke[5][0][1]
    conn.send([18, stream_id, 2])
    first = [await conn.receive(), await conn.receive()]
    conn.send([18, stream_id, 8])
    rest = [await conn.receive()]
    while rest[-1][0] != 17:
        rest.append(await conn.receive())
    conn.note("items", [first, rest])
    conn.send([4, invoke[1], "done"])
    await conn.serve()


scenario(
    "stream-wire", STREAMS,
    "a stream result: `STREAM_INVOKE` with the window (4); items as they come; credit granted once half the "
    "window was taken; `STREAM_END` ends the iteration",
    [CONNECT, stream("items", "letters", window=4)],
    {"items": {"items": ["a", "b", "c", "d", "e"], "end": "ok"},
     "server": {"notes": {"stream_invoke": [15, 1, "letters", [], None, 4], "credit": [18, 1, 2]}}},
    script=_streams_on_the_wire,
)
scenario(
    "stream-argument-wire", STREAMS,
    "an async-iterable argument: declared in `INVOKE` as `[[0, 1]]` (nil in its place); items only as credit "
    "allows; `STREAM_END` after the last",
    [CONNECT, upload("sum", "total", 4)],
    {"sum": {"result": "done"},
     "server": {"notes": {"invoke": [2, 1, "total", [None], None, [[0, 1]]],
                          "items": [[[16, 1, 0], [16, 1, 1]], [[16, 1, 2], [16, 1, 3], [17, 1]]]}}},
    script=_argument_on_the_wire,
)
async def _stream_then_tcp_ends(conn: ScriptedConnection) -> None:
    await conn.open()
    invoke = await conn.expect(15)
    conn.send([16, invoke[1], "a"], [16, invoke[1], "b"])
    conn.end_tcp()


scenario(
    "stream-connection-lost", STREAMS,
    "two items, then TCP ends without a close frame: the iteration yields both, then fails with "
    "`ConnectionClosedError` (`connection-lost`)",
    [CONNECT, stream("items", "letters")],
    {"items": {"items": ["a", "b"], "error": "disconnected", "reason": "connection-lost", "may_have_run": True}},
    script=_stream_then_tcp_ends,
)
scenario(
    "stream-without-capability", STREAMS,
    "a server that did not announce `stream`: a stream fails at once with `stream-mismatch`, nothing is sent, "
    "the connection goes on",
    [CONNECT, stream("items", "letters"), call("after", "echo", 1)],
    {"items": {"items": [], "error": "stream-mismatch"}, "after": {"result": 1}},
    script=welcome_with(caps=["heartbeat", "batch"]),
)
scenario(
    "stream-live", STREAMS, "`twistd hub`: a hub method's async generator, consumed to its end",
    [CONNECT, stream("items", "numbers", 5)],
    {"items": {"items": [0, 1, 2, 3, 4], "end": "ok"}},
)
scenario(
    "stream-live-error", STREAMS,
    "`twistd hub`: a producer that raises `HubError` after two items: the items, then that error",
    [CONNECT, stream("items", "numbers", 5, 2)],
    {"items": {"items": [0, 1], "error": "gave-up", "message": "after 2 items", "detail": {"at": 2}}},
)
scenario(
    "stream-live-stalled", STREAMS,
    "`twistd hub`: a consumer that takes nothing (window 4): the producer generated exactly 4 items and waits",
    [CONNECT, stream("items", "numbers", -1, window=4, take=0), sleep(0.3), call("stats", "stream_stats")],
    {"items": {"items": []}, "stats": {"result": {"generated": 4, "finally": 0}}},
)
scenario(
    "stream-live-cancel", STREAMS,
    "`twistd hub`: cancelled after 2 items (window 4): the producer stops, its `finally` has run by the next call",
    [CONNECT, stream("items", "numbers", -1, window=4, take=2), call("stats", "stream_stats")],
    {"items": {"items": [0, 1], "end": "cancelled"}, "stats": {"result": {"generated": Between(4, 6), "finally": 1}}},
)
scenario(
    "stream-live-argument", STREAMS, "`twistd hub`: an async-iterable argument of 100 numbers, summed by the hub",
    [CONNECT, upload("sum", "total", 100)],
    {"sum": {"result": 4950}},
)

scenario(
    "stream-live-argument-stopped", STREAMS,
    "`twistd hub`: the hub method returns after the first item of a 1,000-item argument stream: the server "
    "cancels it and the client's source is closed (its `finally` runs) after at most the window and one more",
    [CONNECT, upload("first", "first", 1000), wait("source_closed")],
    {"first": {"result": 0}, "source_closed": [Between(1, 17)]},
)

_names = [s.name for s in SCENARIOS]
assert len(_names) == len(set(_names)), "two scenarios share a name"
