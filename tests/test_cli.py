"""The command-line client: `python3 -m twisted_hub call` and `watch`."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import ConnectTimeoutError, HandshakeError, HeartbeatPolicy, HubError, HubServerFactory, HubService
from twisted_hub.__main__ import (
    connect_failure,
    parse_args,
    parse_argument,
    parse_arguments,
    rest_of_line,
    run,
    to_json,
)
from twisted_hub.demo import DEMO_HUBS, EchoHub
from twisted_hub.types import HubServerProtocol

from ._certs import write_self_signed
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

    def test_keyword_arguments(self) -> None:
        """NAME=VALUE is a keyword argument (its value parsed like any argument); JSON-quoted, it is a string."""
        self.assertEqual(parse_arguments(["1", "by=3", "name=ann"]), ([1], {"by": 3, "name": "ann"}))
        self.assertEqual(parse_arguments(['"by=3"', "a b=c", "x==1"]), (["by=3", "a b=c"], {"x": "=1"}))
        self.assertEqual(parse_arguments(["https://h/?q=1", "{\"k\": \"a=b\"}"]), (["https://h/?q=1", {"k": "a=b"}], {}))
        for texts, problem in (
            (["by=3", "4"], "positional argument '4' after keyword arguments: put NAME=VALUE arguments last"),
            (["by=3", "by=4"], "keyword argument 'by' given twice"),
        ):
            with self.assertRaises(ValueError) as caught:
                parse_arguments(texts)
            self.assertEqual(str(caught.exception), problem)

    def test_rest_of_line(self) -> None:
        """Words past a method's positional parameters join its last one, only on the server's usage refusal."""
        usage = {"signature": "say(room: str, text: str)", "max_positional": 2}
        too_many = HubError("invalid-arguments", "say: too many positional arguments", usage)
        texts = ["lobby", "hello", "big", "42"]
        self.assertEqual(rest_of_line(too_many, texts, ["lobby", "hello", "big", 42]), ["lobby", "hello big 42"])
        self.assertIsNone(rest_of_line(too_many, ["lobby", "hi"], ["lobby", "hi"]))  # not too many
        self.assertIsNone(rest_of_line(HubError("invalid-arguments", "mine"), texts, texts))  # the hub's own refusal
        spread = HubError("invalid-arguments", "x", {"signature": "ask(m: str, *args: Any)", "max_positional": None})
        self.assertIsNone(rest_of_line(spread, texts, texts))
        self.assertIsNone(rest_of_line(HubError("not-in-room", "join first", usage), texts, texts))

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


class ConnectFailureTests(SynchronousTestCase):
    """Each way of failing to connect is one line that says what happened and what to do."""

    def test_refused_paths(self) -> None:
        """A 404 at the root suggests /hub; a wrong hub name and another path each get their hint."""
        site_404 = HandshakeError(404, "Not Found")
        self.assertEqual(
            connect_failure("ws://127.0.0.1:8080/", "echo", site_404),
            "error: handshake refused (404): Not Found (hubs are at a path: try ws://127.0.0.1:8080/hub, "
            "twistd hub's default --path)",
        )
        self.assertIn("try ws://h:1/hub,", connect_failure("ws://h:1/echo", None, site_404))
        self.assertIn("try wss://h:1/hub,", connect_failure("wss://h:1", "echo", site_404))
        self.assertEqual(
            connect_failure("ws://h:1/hub", "nosuch", HandshakeError(404, "no hub named 'nosuch' at path '/hub/nosuch'")),
            "error: handshake refused (404): no hub named 'nosuch' at path '/hub/nosuch' "
            "(check the hub name: twistd hub's status page lists the hubs it serves)",
        )
        self.assertIn("unless started with --path", connect_failure("ws://h:1/api", "echo", site_404))
        self.assertEqual(connect_failure("ws://h:1/hub", "echo", HandshakeError(403, "no")), "error: handshake refused (403): no")

    def test_tls_mixups(self) -> None:
        """wss:// to a plain port, ws:// to a TLS port, an untrusted certificate: autobahn's words cleaned, a hint added."""
        def lost(text: str) -> HandshakeError:
            return HandshakeError(None, f'connection was closed uncleanly ("{text}")')

        self.assertEqual(
            connect_failure("wss://h:1/hub", "echo", lost("SSL error: wrong version number (in )")),
            "error: cannot connect to wss://h:1/hub/echo: SSL error: wrong version number "
            "(that port does not speak TLS: use ws:// for it)",
        )
        self.assertEqual(
            connect_failure(
                "ws://h:1/hub", "echo", lost("peer dropped the TCP connection without previous WebSocket closing handshake")
            ),
            "error: cannot connect to ws://h:1/hub/echo: the server closed the connection without answering the "
            "WebSocket upgrade (does that port serve TLS? then use wss://)",
        )
        self.assertEqual(
            connect_failure("wss://h:1/hub", "echo", lost("SSL error: certificate verify failed (in )")),
            "error: cannot connect to wss://h:1/hub/echo: SSL error: certificate verify failed "
            "(the server's certificate is not trusted: pass --cafile with its PEM, or the CA's)",
        )
        self.assertIn(
            "not signed by --cafile ca.pem", connect_failure("wss://h:1/hub", None, lost("certificate verify failed"), "ca.pem")
        )
        self.assertEqual(
            connect_failure("wss://h:1/hub", "echo", ConnectTimeoutError("upgrade", 2)),
            "error: connect timed out: the server did not answer the WebSocket upgrade within 2s "
            "(no answer over TLS: if the port serves plain ws://, use ws://)",
        )


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
        reactor, "-m", "twisted_hub", "listen", url, "chat", "--call", "join lobby ann", "--stdin", "--count", "5",
    )
    try:
        await child.wait_for(r"^join: 1$", reactor, 30)
        bob = await connect(url, "chat", receiver=Bob(), clock=reactor, timeout=10)
        assert await bob.call("join", "lobby", "bob") == 2
        child.transport.write(b'say lobby "hello bob"\n')  # type: ignore[union-attr]
        await child.wait_for(r"^say: 2$", reactor, 30)
        # Unquoted: the words past the method's last parameter are the rest of its text.
        child.transport.write(b"say lobby it's me,   bob\n")  # type: ignore[union-attr]
        await child.wait_for(r"it's me, bob", reactor, 30)
        said_to = await bob.call("say", "lobby", "hi ann")
        assert said_to == 2, child.output()
        code = await child.ended.addTimeout(30, reactor)
        assert code == 0, child.output()
        printed = [json.loads(line) for line in child.lines]
        assert printed == [
            {"receiver": "joined", "args": ["lobby", "ann"]},
            {"receiver": "joined", "args": ["lobby", "bob"]},
            {"receiver": "said", "args": ["lobby", "ann", "hello bob"]},
            {"receiver": "said", "args": ["lobby", "ann", "it's me, bob"]},
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


@pytest_twisted.ensureDeferred
async def test_one_hub_server_refuses_other_names() -> None:
    """A server of one hub answers `call URL nosuch.get` with exit 3 and the missing name, and its own name with 0."""
    from twisted.internet import reactor

    service = HubService([EchoHub], ["tcp:0:interface=127.0.0.1"], clock=reactor)
    service.privilegedStartService()
    service.startService()
    try:
        (port,) = await service.listening_ports()
        url = f"ws://127.0.0.1:{port.getHost().port}/hub"
        code, out, err = await run_cli(reactor, "call", url, "nosuch.add", "1", "2")
        assert (code, out) == (3, ""), err
        assert err.startswith(
            "error: handshake refused (404): no hub named 'nosuch' at path '/hub/nosuch' (check the hub name"
        ), err
        assert await run_cli(reactor, "call", url, "echo.add", "1", "2") == (0, "3\n", "")
        assert await run_cli(reactor, "call", url, "add", "1", "2") == (0, "3\n", "")  # the endpoint's own path
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_keyword_arguments_and_usage() -> None:
    """`NAME=VALUE` reaches the hub as a keyword argument; arguments that do not fit print the method's signature."""
    from twisted.internet import reactor

    service, url = await serve(reactor)
    try:
        assert await run_cli(reactor, "call", url, "echo.fail", "message=boom", "code=x") == (1, "", "error: [x] boom\n")
        assert await run_cli(reactor, "call", url, "echo.echo", '"by=3"') == (0, '"by=3"\n', "")
        assert await run_cli(reactor, "call", url, "echo.add", "1", "2", "3") == (
            1, "", "error: [invalid-arguments] add: too many positional arguments\nusage: add(a: float, b: float)\n"
        )
        code, _, err = await run_cli(reactor, "call", url, "echo.add", "1", "c=2")
        assert code == 1
        assert err.splitlines()[1:] == [
            "usage: add(a: float, b: float)",
            "note: c= went as keyword arguments; quote text as JSON ('\"c=...\"') to send it as a string",
        ], err
        assert await run_cli(reactor, "call", url, "echo.add", "a=1", "2") == (
            2, "", "error: positional argument '2' after keyword arguments: put NAME=VALUE arguments last\n"
        )
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_the_root_path_suggests_hub() -> None:
    """`call ws://HOST:PORT/ echo.add` (no /hub) is refused with 404 and the hint of the URL to use."""
    from twisted.internet import reactor

    service, url = await serve(reactor)
    root = url.removesuffix("hub")
    try:
        code, _, err = await run_cli(reactor, "call", root, "echo.add", "1", "2")
        assert code == 3
        assert err == f"error: handshake refused (404): Not Found (hubs are at a path: try {url}, twistd hub's default --path)\n"
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_tls_and_plain_mixed_up() -> None:
    """wss:// to a plain port fails at once saying so; ws:// to a TLS port and wss:// without --cafile say what to do."""
    import tempfile
    from pathlib import Path

    from twisted.internet import reactor

    plain, plain_url = await serve(reactor)
    with tempfile.TemporaryDirectory() as directory:
        key, cert = write_self_signed(Path(directory))
        listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        tls = HubService(list(DEMO_HUBS), [listen], clock=reactor)
        tls.privilegedStartService()
        tls.startService()
        try:
            (port,) = await tls.listening_ports()
            tls_port = port.getHost().port
            started = reactor.seconds()
            code, _, err = await run_cli(reactor, "call", "wss" + plain_url.removeprefix("ws"), "echo.add", "1", "2")
            assert reactor.seconds() - started < 3, "a TLS client on a plain port waited for a timeout"
            assert (code, err) == (3, (
                f"error: cannot connect to wss{plain_url.removeprefix('ws')}/echo: SSL error: wrong version number "
                "(that port does not speak TLS: use ws:// for it)\n"
            ))
            code, _, err = await run_cli(reactor, "call", f"ws://127.0.0.1:{tls_port}/hub", "echo.add", "1", "2")
            assert code == 3
            assert err.endswith("(does that port serve TLS? then use wss://)\n"), err
            code, _, err = await run_cli(reactor, "call", f"wss://127.0.0.1:{tls_port}/hub", "echo.add", "1", "2")
            assert code == 3
            assert err == (
                f"error: cannot connect to wss://127.0.0.1:{tls_port}/hub/echo: SSL error: certificate verify failed "
                "(the server's certificate is not trusted: pass --cafile with its PEM, or the CA's)\n"
            )
            cafile = ["--cafile", str(cert)]
            assert await run_cli(reactor, "call", f"wss://127.0.0.1:{tls_port}/hub", "echo.add", "1", "2", *cafile) == (
                0, "3\n", ""
            )
        finally:
            await tls.stopService()
            await plain.stopService()
