"""The command-line client: `python3 -m twisted_hub call` and `watch`."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import HeartbeatPolicy, HubServerFactory, HubServerProtocol, HubService
from twisted_hub.__main__ import parse_args, parse_argument, run, to_json
from twisted_hub.demo import DEMO_HUBS

from ._twistd import spawn_python


class ArgumentTests(SynchronousTestCase):
    def test_arguments_are_json_or_strings(self) -> None:
        """Arguments parse as JSON when they can, else stay strings; {"$base64": ...} is bytes."""
        self.assertEqual(parse_argument("1"), 1)
        self.assertEqual(parse_argument("[1, true, null]"), [1, True, None])
        self.assertEqual(parse_argument('"quoted"'), "quoted")
        self.assertEqual(parse_argument("hello world"), "hello world")
        self.assertEqual(parse_argument('{"$base64": "AAE="}'), b"\x00\x01")
        self.assertEqual(parse_argument('{"k": [{"$base64": "AA=="}]}'), {"k": [b"\x00"]})

    def test_results_print_as_json(self) -> None:
        """Results print as one JSON line; bytes as {"$base64": ...}; other keys as strings."""
        printed = to_json({"b": b"\xff", "n": [1, 2.5, None]})
        self.assertEqual(printed, '{"b": {"$base64": "/w=="}, "n": [1, 2.5, null]}')
        self.assertEqual(to_json({1: "x"}), '{"1": "x"}')

    def test_bad_options(self) -> None:
        """Bad counts, durations and missing commands are argparse errors (exit status 2)."""
        for argv in (["watch", "ws://x/hub", "--count", "0"], ["watch", "ws://x/hub", "--duration", "-1"], []):
            with self.assertRaises(SystemExit) as caught:
                parse_args(argv)
            self.assertEqual(caught.exception.code, 2)


async def serve(reactor: Any, **options: Any) -> tuple[HubService, str]:
    service = HubService(list(DEMO_HUBS), ["tcp:0:interface=127.0.0.1"], clock=reactor, **options)
    service.privilegedStartService()
    service.startService()
    (port,) = await service.listening_ports()
    return service, f"ws://127.0.0.1:{port.getHost().port}/hub"


async def run_cli(reactor: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run(reactor, parse_args(list(argv)), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest_twisted.ensureDeferred
async def test_call_prints_json_and_fails_on_hub_error() -> None:
    """call prints the result as JSON, and a hub error goes to stderr with exit status 1."""
    from twisted.internet import reactor

    service, url = await serve(reactor)
    try:
        result = await run_cli(reactor, "call", url, "echo.echo", '{"a": [1, "two"]}')
        assert result == (0, '{"a": [1, "two"]}\n', "")
        result = await run_cli(reactor, "call", url, "echo.echo", '{"$base64": "AAE="}')
        assert result == (0, '{"$base64": "AAE="}\n', "")
        assert (await run_cli(reactor, "call", url, "echo.add", "1", "2.5"))[1] == "3.5\n"
        code, out, err = await run_cli(reactor, "call", url, "echo.fail", "not-found", "no such thing")
        assert (code, out, err) == (1, "", "error: [not-found] no such thing\n")
        code, _, err = await run_cli(reactor, "call", url, "nohub.method")
        assert code == 3 and "404" in err
        code, _, err = await run_cli(reactor, "call", url, "echo.")
        assert code == 2 and "HUB.METHOD" in err
        # Without a dot the URL names the hub.
        assert (await run_cli(reactor, "call", url + "/echo", "add", "1", "2"))[:2] == (0, "3\n")
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_watch_prints_heartbeats_and_reason() -> None:
    """watch prints server heartbeats, our heartbeats' RTT and clock offset, then the disconnect reason."""
    from twisted.internet import reactor

    service, url = await serve(reactor, heartbeat=HeartbeatPolicy.every(0.1))
    try:
        code, out, err = await run_cli(reactor, "watch", url, "echo", "--interval", "0.1", "--count", "6")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("connected: connection ")
        assert any(re.fullmatch(r"server heartbeat #\d+ at \d{4}-\d\d-\d\dT\S+", line) for line in lines), out
        assert any(
            re.fullmatch(r"heartbeat #\d+ answered: rtt [\d.]+ ms, clock offset [+-][\d.]+ ms ± [\d.]+ ms", line)
            for line in lines
        ), out
        assert len([line for line in lines if "heartbeat #" in line]) == 6
        assert lines[-1] == "disconnected: normal: watch finished"
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_watch_sees_going_away() -> None:
    """watch ends by itself when the server shuts down, printing the going-away reason."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    service, url = await serve(reactor)
    watching = run_cli(reactor, "watch", url, "echo", "--interval", "0.1", "--duration", "30")
    from twisted.internet.defer import ensureDeferred

    watched = ensureDeferred(watching)
    for _ in range(100):
        if service.factory.connection_count:
            break
        await deferLater(reactor, 0.05)
    assert service.factory.connection_count == 1, "watch did not connect within 5 s"
    await service.stopService()
    code, out, _ = await watched.addTimeout(10, reactor)
    assert code == 0
    assert out.splitlines()[-1] == "disconnected: going-away: server shutting down"


@pytest_twisted.ensureDeferred
async def test_module_entry_point() -> None:
    """`python3 -m twisted_hub call` runs as a process and exits with the documented statuses."""
    from twisted.internet import reactor

    service, url = await serve(reactor)
    try:
        child = spawn_python(reactor, "-m", "twisted_hub", "call", url, "echo.echo", "plain words")
        await child.ended.addTimeout(30, reactor)
        assert child.exit_code == 0, child.output()
        assert json.loads(child.lines[-1]) == "plain words"
        child = spawn_python(reactor, "-m", "twisted_hub", "call", url, "echo.fail", "bad")
        await child.ended.addTimeout(30, reactor)
        assert child.exit_code == 1
        assert (child.lines, child.err_lines) == ([], ["error: bad"])
    finally:
        await service.stopService()


@pytest.mark.parametrize("argv", [["--help"], ["call", "--help"], ["watch", "--help"]])
def test_help(argv: list[str]) -> None:
    """Every command has help text and exits 0."""
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == 0


class _MuteHubProtocol(HubServerProtocol):
    """Completes the WebSocket upgrade, then never sends WELCOME."""

    def onOpen(self) -> None:
        pass

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("silent-tcp", "the server did not answer the WebSocket upgrade within 1s"),
        ("no-welcome", "the hub sent no WELCOME within 1s"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_call_against_a_silent_server_exits_3_after_the_timeout(server: str, message: str) -> None:
    """`call --timeout 1` against a server that stops answering mid-handshake exits 3 ("timed out"), promptly."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    if server == "silent-tcp":
        factory: Any = Factory.forProtocol(Protocol)
    else:
        factory = HubServerFactory(list(DEMO_HUBS), clock=reactor)
        factory.protocol = _MuteHubProtocol
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        url = f"ws://127.0.0.1:{listening.getHost().port}/hub"
        started = reactor.seconds()
        child = spawn_python(reactor, "-m", "twisted_hub", "call", url, "echo.echo", "1", "--timeout", "1")
        await child.ended.addTimeout(30, reactor)
        assert child.exit_code == 3, child.output()
        assert child.err_lines == [f"error: connect timed out: {message}"], child.output()
        assert reactor.seconds() - started < 15  # process start-up plus the 1 s timeout
    finally:
        await listening.stopListening()


class ConnectHintTests(SynchronousTestCase):
    def test_hints_say_what_to_do(self) -> None:
        """Wrong scheme, untrusted certificate, plain ws:// to a TLS port and a refused port each get advice."""
        from twisted.internet.error import ConnectionRefusedError

        from twisted_hub.__main__ import connect_hint

        self.assertIn("ws://", connect_hint("http://h/hub", ValueError("x")))
        self.assertIn("wss://", connect_hint("https://h/hub", ValueError("x")))
        self.assertIn("--cafile", connect_hint("wss://h/hub", Exception("SSL routines: certificate verify failed")))
        self.assertIn("wss://", connect_hint("ws://h/hub", Exception("BadStatusLine: \\x15\\x03")))
        self.assertIn("is the server running", connect_hint("ws://h:9/hub", ConnectionRefusedError("Connection refused")))
        self.assertEqual(connect_hint("ws://h/hub", KeyError("other")), "")


@pytest_twisted.ensureDeferred
async def test_wrong_scheme_exits_3_with_advice() -> None:
    """`call http://...` exits 3 and tells the user hub URLs are ws://."""
    from twisted.internet import reactor

    child = spawn_python(reactor, "-m", "twisted_hub", "call", "http://127.0.0.1:9/hub", "echo.add", "1", "2")
    code = await child.ended.addTimeout(30, reactor)
    assert code == 3, child.output()
    assert "hub URLs are ws://..., not http://..." in child.output()


@pytest_twisted.ensureDeferred
async def test_chat_from_two_terminals_with_listen() -> None:
    """`listen ... chat --call 'join lobby ann' --stdin` prints what the room hears as JSON and says what is typed."""
    from twisted.internet import reactor

    from twisted_hub import connect

    listening = reactor.listenTCP(0, HubServerFactory(list(DEMO_HUBS)), interface="127.0.0.1")
    url = f"ws://127.0.0.1:{listening.getHost().port}/hub"
    heard: list[tuple[str, str, str]] = []

    class Bob:
        def joined(self, room: str, user: str) -> None:
            pass

        def said(self, room: str, user: str, text: str) -> None:
            heard.append((room, user, text))

    child = spawn_python(
        reactor, "-m", "twisted_hub", "listen", url, "chat", "--call", "join lobby ann", "--stdin", "--count", "4",
    )
    try:
        await child.wait_for(r"^join: 1$", reactor, 30)
        bob = await connect(url, "chat", receiver=Bob(), clock=reactor, timeout=10)
        assert await bob.call("join", "lobby", "bob") == 2
        child.transport.write(b'say lobby "hello bob"\n')  # type: ignore[union-attr]
        await child.wait_for(r"^say: 2$", reactor, 30)
        said_to = await bob.call("say", "lobby", "hi ann")
        assert said_to == 2, child.output()
        code = await child.ended.addTimeout(30, reactor)
        assert code == 0, child.output()
        printed = [json.loads(line) for line in child.lines]
        assert printed == [
            {"receiver": "joined", "args": ["lobby", "ann"]},
            {"receiver": "joined", "args": ["lobby", "bob"]},
            {"receiver": "said", "args": ["lobby", "ann", "hello bob"]},
            {"receiver": "said", "args": ["lobby", "bob", "hi ann"]},
        ], child.output()
        assert ("lobby", "ann", "hello bob") in heard
        await bob.disconnect()
    finally:
        await child.stop(reactor)
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_call_takes_the_hub_from_the_url() -> None:
    """`call ws://.../hub/echo add 2 3` works like `call ws://.../hub echo.add 2 3`."""
    from twisted.internet import reactor

    listening = reactor.listenTCP(0, HubServerFactory(list(DEMO_HUBS)), interface="127.0.0.1")
    url = f"ws://127.0.0.1:{listening.getHost().port}/hub/echo"
    child = spawn_python(reactor, "-m", "twisted_hub", "call", url, "add", "2", "3")
    try:
        code = await child.ended.addTimeout(30, reactor)
        assert (code, child.lines) == (0, ["5"]), child.output()
    finally:
        await listening.stopListening()
