"""
The command-line client: C{python3 -m twisted_hub} (or C{twisted-hub}).

    python3 -m twisted_hub call ws://127.0.0.1:8080/hub echo.add 1 2
    python3 -m twisted_hub watch ws://127.0.0.1:8080/hub echo --count 5

C{call URL HUB.METHOD ARGS...}: each argument is parsed as JSON when it
parses (C{1}, C{true}, C{"text"}, C{[1, 2]}, C{{"a": 1}}), else taken as a
string; a JSON object C{{"$base64": "..."}} is sent as bytes.  C{NAME=VALUE}
(NAME an identifier) is a keyword argument (C{incr by=3}), after the
positional ones; quote such text as JSON to send it as a string
(C{'"by=3"'}).  The result
is printed as one line of JSON; bytes are printed in that same
C{{"$base64": "..."}} form.  Exit status: 0 on a result, 1 when the hub
answered with an error (C{[code] message} on stderr, then the method's
signature when the arguments did not fit it), 2 for bad arguments,
3 when the connection or handshake failed or did not complete within
C{--timeout} (TCP, WebSocket upgrade and the hub's WELCOME together), 4 when
no answer came in time.

C{call} also takes C{METHOD} alone when the URL names the hub
(C{call ws://127.0.0.1:8080/hub/echo add 1 2}).  A connection that fails says
what to do when it can tell (the path C{/hub}, C{ws://} not C{http://},
C{--cafile}, C{wss://} on a plain port or C{ws://} on a TLS one).

C{listen URL [HUB] [--call 'METHOD ARGS'] [--stdin]}: prints every receiver
call the server makes as one JSON line (C{{"receiver": "said", "args": [...]}}),
after making the C{--call}s; with C{--stdin} each line typed is called too
(results on stderr), so the chat demo works from two terminals:
C{listen ws://127.0.0.1:8080/hub chat --call 'join lobby ann' --stdin}, then
type C{say lobby hello world}.  A line is split into words like a shell
command line; when it has more words than the method takes positional
arguments, the last one takes the rest of the line (the server refuses the
call before running the method, and it is made again with the words joined
by spaces).  C{--count N} / C{--duration S} end it.

C{watch URL [HUB]}: connects with client heartbeats on and prints one line
per server heartbeat and per answer to our heartbeats (round trip and clock
offset), then the disconnect reason.  C{--count N} / C{--duration S} end it.
Exit status 0 when the connection ended normally (by us, or the server going
away), 1 otherwise, 3 when it could not connect.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError

from ._core.errors import CallTimeoutError, ConnectTimeoutError, DisconnectKind, HandshakeError, HubError
from ._core.wire import ErrorCode
from ._twisted.client import (
    ClientHeartbeatEvent,
    HubClientOptions,
    HubClientProtocol,
    ServerHeartbeatEvent,
    connect,
    hub_url,
)

EXIT_OK = 0
EXIT_HUB_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 4

BYTES_KEY = "$base64"


def parse_argument(text: str) -> Any:
    """A command-line argument: JSON if it parses, else the string itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return _decode_bytes(value)


#: C{NAME=VALUE} with NAME an identifier: a keyword argument.
_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def parse_arguments(texts: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """
    Command-line arguments: C{NAME=VALUE} (NAME an identifier) is a keyword
    argument, anything else positional; each value is parsed by
    L{parse_argument}.  Keyword arguments come last.  Text that looks like
    C{NAME=VALUE} is sent as a positional string when quoted as JSON
    (C{'"by=3"'}).

    @raise ValueError: a positional argument after a keyword argument, or a
        keyword given twice.
    """
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for text in texts:
        keyword = _KEYWORD.fullmatch(text)
        if keyword is not None:
            name, value = keyword.groups()
            if name in kwargs:
                raise ValueError(f"keyword argument {name!r} given twice")
            kwargs[name] = parse_argument(value)
        elif kwargs:
            raise ValueError(
                f"positional argument {text!r} after keyword arguments: put NAME=VALUE arguments last"
            )
        else:
            args.append(parse_argument(text))
    return args, kwargs


def usage_of(error: HubError) -> str | None:
    """The signature an C{invalid-arguments} answer of the server carries (C{"say(room: str, text: str)"}), if any."""
    detail = error.detail
    if error.code != ErrorCode.INVALID_ARGUMENTS or not isinstance(detail, dict):
        return None
    signature = detail.get("signature")
    return signature if isinstance(signature, str) else None


def _hub_error_lines(error: HubError, prefix: str = "", keywords: Sequence[str] = ()) -> str:
    """
    What C{call} and C{listen} print for a hub error: the error, then its
    usage (and which words were sent as keyword arguments) or its detail.
    """
    usage = usage_of(error)
    if usage is not None:
        note = ""
        if keywords:
            sent = ", ".join(f"{name}=" for name in keywords)
            quoted = f"'\"{keywords[0]}=...\"'"
            note = f"note: {sent} went as keyword arguments; quote text as JSON ({quoted}) to send it as a string\n"
        return f"error: {prefix}{error}\nusage: {usage}\n{note}"
    detail = "" if error.detail is None else to_json(error.detail) + "\n"
    return f"error: {prefix}{error}\n{detail}"


def rest_of_line(error: HubError, texts: Sequence[str], args: list[Any]) -> list[Any] | None:
    """
    C{listen --stdin}: the arguments again, when the server refused more
    positional arguments than its method takes, with the words from the
    method's last positional parameter on joined into that one string (the
    rest of the line: C{say lobby hello world} says C{"hello world"}).
    None when that is not what went wrong.
    """
    detail = error.detail
    if usage_of(error) is None or not isinstance(detail, dict):
        return None
    most = detail.get("max_positional")
    if not isinstance(most, int) or isinstance(most, bool) or most < 1 or len(args) <= most:
        return None
    return [*args[: most - 1], " ".join(texts[most - 1 : len(args)])]


def _decode_bytes(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {BYTES_KEY} and isinstance(value[BYTES_KEY], str):
            return base64.b64decode(value[BYTES_KEY])
        return {k: _decode_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_bytes(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BYTES_KEY: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def to_json(value: Any) -> str:
    """The JSON line C{call} prints for a result (bytes as C{{"$base64": ...}})."""
    return json.dumps(_jsonable(value), ensure_ascii=False, sort_keys=True)


def _endpoint(url: str, cafile: str | None, reactor: Any) -> Any:
    if cafile is None:
        return None
    from urllib.parse import urlsplit

    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    parts = urlsplit(url)
    if parts.scheme != "wss":
        raise ValueError("--cafile is for wss:// URLs")
    host = parts.hostname or "localhost"
    with open(cafile, "rb") as f:
        authority = Certificate.loadPEM(f.read())
    tls = optionsForClientTLS(host, trustRoot=authority)
    return wrapClientTLS(tls, HostnameEndpoint(reactor, host, parts.port or 443))


def connect_hint(url: str, error: BaseException, cafile: str | None = None) -> str:
    """What to do about a failed connection, when we can tell (appended to the error line)."""
    scheme = url.split(":", 1)[0].lower()
    text = f"{error.__class__.__name__} {error}".lower()
    if scheme in ("http", "https"):
        return f" (hub URLs are {'wss' if scheme == 'https' else 'ws'}://..., not {scheme}://...)"
    if scheme == "wss" and any(sign in text for sign in _NOT_TLS_SIGNS):
        return " (that port does not speak TLS: use ws:// for it)"
    if scheme == "wss" and "certificate" in text:
        if cafile:
            return f" (the server's certificate is not signed by --cafile {cafile}: give its own certificate or its CA's)"
        return " (the server's certificate is not trusted: pass --cafile with its PEM, or the CA's)"
    if scheme == "wss" and ("opening handshake timeout" in text or getattr(error, "stage", None) == "upgrade"):
        return " (no answer over TLS: if the port serves plain ws://, use ws://)"
    if scheme == "ws" and any(sign in text for sign in _TLS_PORT_SIGNS):
        return " (does that port serve TLS? then use wss://)"
    if "connection refused" in text:
        return " (nothing listens there: is the server running, on that port?)"
    return ""


#: What a TLS client's error says when the server answered in plain text.
_NOT_TLS_SIGNS = ("wrong version number", "packet length too long", "record layer failure", "unknown protocol")
#: What a plain client sees from a TLS port: no HTTP answer at all, or TLS bytes where HTTP was wanted.
_TLS_PORT_SIGNS = ("peer dropped the tcp connection", "badstatusline", "wrong version", "invalid http")


def _refusal_hint(url: str, hub: str | None, error: HandshakeError) -> str:
    """What to do about an upgrade the server answered with a refusal (404: the path)."""
    from urllib.parse import urlsplit

    if error.status != 404:
        return ""
    parts = urlsplit(url)
    if not (parts.path.strip("/") if hub else parts.path.rstrip("/").rpartition("/")[0].strip("/")):
        endpoint = f"{parts.scheme}://{parts.netloc}/hub"
        return f" (hubs are at a path: try {endpoint}, twistd hub's default --path)"
    if error.reason.startswith("no hub named"):
        return " (check the hub name: twistd hub's status page lists the hubs it serves)"
    return " (no hub endpoint at that path: twistd hub serves /hub/<hub> unless started with --path)"


def connect_failure(url: str, hub: str | None, error: BaseException, cafile: str | None = None) -> str:
    """
    The line C{call}, C{watch} and C{listen} print when they cannot connect:
    what went wrong, in words, and what to do when we can tell.
    """
    if isinstance(error, ConnectTimeoutError):
        return f"error: {error}{connect_hint(url, error, cafile)}"
    if isinstance(error, HandshakeError) and error.status is not None:
        return f"error: {error}{_refusal_hint(url, hub, error)}"
    if isinstance(error, HandshakeError):
        # autobahn's words: connection was closed uncleanly ("SSL error: ... (in )")
        quoted = re.search(r'"(.*)"', error.reason)
        what = (quoted.group(1) if quoted else error.reason).replace(" (in )", "")
        if "peer dropped the TCP connection" in what:
            what = "the server closed the connection without answering the WebSocket upgrade"
        return f"error: cannot connect to {hub_url(url, hub)}: {what}{connect_hint(url, error, cafile)}"
    return f"error: cannot connect to {url}: {error.__class__.__name__}: {error}{connect_hint(url, error, cafile)}"


async def run_call(reactor: Any, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """C{call}: connect, call, print the result as JSON; return the exit status."""
    hub, _, method = args.target.rpartition(".")
    if not method:
        err.write(f"error: HUB.METHOD (or METHOD when the URL names the hub) wanted, got {args.target!r}\n")
        return EXIT_USAGE
    try:
        arguments, keywords = parse_arguments(args.args)
    except ValueError as e:
        err.write(f"error: {e}\n")
        return EXIT_USAGE
    try:
        endpoint = _endpoint(args.url, args.cafile, reactor)
        client = await connect(
            args.url, hub or None, options=HubClientOptions(call_timeout=args.timeout),
            clock=reactor, endpoint=endpoint, timeout=args.timeout,
        )
    except Exception as e:  # any failure to connect is reported, with what to do about it
        err.write(connect_failure(args.url, hub or None, e, args.cafile) + "\n")
        return EXIT_CONNECT
    try:
        result = await client.invoke(method, arguments, keywords or None)
    except CallTimeoutError as e:
        err.write(f"error: {e}\n")
        return EXIT_TIMEOUT
    except HubError as e:
        err.write(_hub_error_lines(e, keywords=list(keywords)))
        return EXIT_HUB_ERROR
    finally:
        if client.is_connected:
            closing = client.disconnect()
            closing.addTimeout(args.timeout, reactor)
            try:
                await closing
            except DeferredTimeoutError:
                err.write("note: the server did not confirm the close in time; the connection was dropped\n")
    out.write(to_json(result) + "\n")
    out.flush()
    return EXIT_OK


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _finish_after(count: int | None) -> tuple[Deferred[None], Callable[[], None]]:
    """A Deferred that fires once C{counted()} was called C{count} times (never when None)."""
    finished: Deferred[None] = Deferred()
    seen = 0

    def counted() -> None:
        nonlocal seen
        seen += 1
        if count is not None and seen >= count and not finished.called:
            finished.callback(None)

    return finished, counted


async def _until_finished(
    reactor: Any, client: HubClientProtocol, finished: Deferred[None], duration: float | None,
    close_reason: str, close_timeout: float, err: TextIO,
) -> None:
    """Wait for C{finished} (a count reached), the duration, or the end of the connection; then close politely."""
    client.wait_for_disconnect().addBoth(lambda _: None if finished.called else finished.callback(None))
    timer = None
    if duration is not None:
        timer = reactor.callLater(duration, lambda: None if finished.called else finished.callback(None))
    await finished
    if timer is not None and timer.active():
        timer.cancel()
    if client.is_connected:
        closing = client.disconnect(close_reason)
        closing.addTimeout(close_timeout, reactor)
        try:
            await closing
        except DeferredTimeoutError:
            err.write("note: the server did not confirm the close in time; the connection was dropped\n")


def _ended_well(client: HubClientProtocol) -> bool:
    reason = client.disconnect_reason
    return reason is not None and reason.kind in (DisconnectKind.NORMAL, DisconnectKind.GOING_AWAY)


async def run_watch(reactor: Any, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """C{watch}: print heartbeats until the count, the duration or the connection ends."""
    finished, counted = _finish_after(args.count)

    def on_server_heartbeat(event: ServerHeartbeatEvent) -> None:
        metadata = "" if event.metadata is None else f", metadata {to_json(event.metadata)}"
        out.write(f"server heartbeat #{event.sequence} at {event.server_time.isoformat()}{metadata}\n")
        out.flush()
        counted()

    def on_heartbeat_response(event: ClientHeartbeatEvent) -> None:
        sample = event.clock
        out.write(
            f"heartbeat #{event.sequence} answered: rtt {_ms(event.round_trip)}, "
            f"clock offset {sample.offset * 1000:+.2f} ms ± {_ms(sample.error)}\n"
        )
        out.flush()
        counted()

    options = HubClientOptions.heartbeat_every(
        args.interval,
        args.heartbeat_timeout,
        on_server_heartbeat=on_server_heartbeat,
        on_heartbeat_response=on_heartbeat_response,
    )
    try:
        endpoint = _endpoint(args.url, args.cafile, reactor)
        client: HubClientProtocol = await connect(
            args.url, args.hub, options=options, clock=reactor, endpoint=endpoint, timeout=args.connect_timeout
        )
    except Exception as e:  # any failure to connect is reported, with what to do about it
        err.write(connect_failure(args.url, args.hub, e, args.cafile) + "\n")
        return EXIT_CONNECT
    out.write(f"connected: connection {client.connection_id}\n")
    out.flush()
    await _until_finished(reactor, client, finished, args.duration, "watch finished", args.connect_timeout, err)
    reason = client.disconnect_reason
    best = client.clock_offset
    if best is not None:
        out.write(f"best clock offset {best.offset * 1000:+.2f} ms ± {_ms(best.error)}\n")
    out.write(f"disconnected: {reason}\n")
    out.flush()
    return EXIT_OK if _ended_well(client) else EXIT_HUB_ERROR


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number > 0: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m twisted_hub", description="Call and watch twisted-hub hubs from the command line."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"twisted-hub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    call = commands.add_parser(
        "call", help="call a hub method and print the result as JSON",
        description="Arguments are JSON when they parse, else strings; {\"$base64\": ...} is bytes.",
    )
    call.add_argument("url", help="ws:// or wss:// URL of the hub endpoint, e.g. ws://127.0.0.1:8080/hub")
    call.add_argument("target", metavar="HUB.METHOD", help="hub name and method, e.g. echo.echo")
    call.add_argument(
        "args", nargs="*", metavar="ARG",
        help="arguments (JSON, or a plain string); NAME=VALUE is a keyword argument ('\"a=b\"' is the string a=b)",
    )
    call.add_argument(
        "--timeout", type=_positive_float, default=10.0,
        help="seconds to connect (the whole handshake; exit 3 past it) and to wait for the result (exit 4) [10]",
    )
    call.add_argument("--cafile", help="PEM certificate to trust for wss:// (e.g. a self-signed one)")

    watch = commands.add_parser("watch", help="print heartbeats, round trips and clock offset")
    watch.add_argument("url", help="ws:// or wss:// URL of the hub endpoint")
    watch.add_argument("hub", nargs="?", help="hub name (omit when the URL names it)")
    watch.add_argument("--interval", type=_positive_float, default=1.0, help="seconds between our heartbeats [1]")
    watch.add_argument(
        "--heartbeat-timeout", type=_positive_float, default=None,
        help="seconds without an answer before giving up [3 x interval]",
    )
    watch.add_argument("--count", type=_positive_int, help="stop after this many heartbeat lines")
    watch.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    watch.add_argument(
        "--connect-timeout", type=_positive_float, default=10.0,
        help="seconds to connect (the whole handshake; exit 3 past it) [10]",
    )
    watch.add_argument("--cafile", help="PEM certificate to trust for wss://")

    listen = commands.add_parser(
        "listen", help="print the server's receiver calls as JSON lines (and call what you type)",
    )
    listen.add_argument("url", help="ws:// or wss:// URL of the hub endpoint")
    listen.add_argument("hub", nargs="?", help="hub name (omit when the URL names it)")
    listen.add_argument(
        "--call", action="append", metavar="'METHOD ARG...'",
        help="call this first (repeatable), e.g. --call 'join lobby ann'",
    )
    listen.add_argument(
        "--stdin", action="store_true",
        help="also call each line typed on standard input (METHOD ARG...; the last parameter takes the rest of the line)",
    )
    listen.add_argument("--count", type=_positive_int, help="stop after this many receiver calls")
    listen.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    listen.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds for connecting and each call [10]")
    listen.add_argument("--cafile", help="PEM certificate to trust for wss://")

    typescript = commands.add_parser(
        "typescript", help="write the TypeScript interfaces of hub classes (for the JavaScript client)",
        description="Prints (or writes to --output) interfaces for client.proxy<Hub>() and the receivers.",
    )
    typescript.add_argument("hubs", nargs="+", metavar="MODULE:CLASS", help="hub classes, e.g. myapp.hubs:ChatHub")
    typescript.add_argument("-o", "--output", help="file to write (default: standard output)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.command == "watch" and args.heartbeat_timeout is None:
        args.heartbeat_timeout = args.interval * 3
    return args


class _Printer:
    """A receiver that prints every call the server makes as one JSON line."""

    def __init__(self, out: TextIO, seen: Callable[[], None]) -> None:
        self._out = out
        self._seen = seen

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)

        def receive(*args: Any, **kwargs: Any) -> None:
            line: dict[str, Any] = {"receiver": name, "args": list(args)}
            if kwargs:
                line["kwargs"] = kwargs
            self._out.write(to_json(line) + "\n")
            self._out.flush()
            self._seen()

        return receive


async def run_listen(reactor: Any, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    C{listen}: print the server's receiver calls as JSON lines; make the
    C{--call}s first, then call what is typed on standard input (one
    C{METHOD ARGS...} per line), results on standard error.
    """
    import shlex

    finished, counted = _finish_after(args.count)

    try:
        endpoint = _endpoint(args.url, args.cafile, reactor)
        client = await connect(
            args.url, args.hub, receiver=_Printer(out, counted),
            options=HubClientOptions(call_timeout=args.timeout), clock=reactor, endpoint=endpoint,
            timeout=args.timeout,
        )
    except Exception as e:  # any failure to connect is reported, with what to do about it
        err.write(connect_failure(args.url, args.hub, e, args.cafile) + "\n")
        return EXIT_CONNECT

    async def call_line(line: str) -> int:
        try:
            words = shlex.split(line)
        except ValueError:  # an unbalanced quote, as in "it's": plain words
            words = line.split()
        if not words:
            return EXIT_OK
        method, texts = words[0], words[1:]
        try:
            arguments, keywords = parse_arguments(texts)
        except ValueError as e:
            err.write(f"error: {method}: {e}\n")
            return EXIT_USAGE
        try:
            result = await client.invoke(method, arguments, keywords or None)
        except HubError as e:
            # More words than the method takes: the last parameter takes the
            # rest of the line.  The server refused before running the method.
            joined = rest_of_line(e, texts, arguments)
            if joined is None:
                err.write(_hub_error_lines(e, f"{method}: ", list(keywords)))
                return EXIT_HUB_ERROR
            try:
                result = await client.invoke(method, joined, keywords or None)
            except HubError as again:
                err.write(_hub_error_lines(e if usage_of(again) else again, f"{method}: ", list(keywords)))
                return EXIT_HUB_ERROR
        err.write(f"{method}: {to_json(result)}\n")
        return EXIT_OK

    for line in args.call or []:
        status = await call_line(line)
        if status != EXIT_OK:
            await client.disconnect()
            return status
    if args.stdin:
        from twisted.internet import stdio
        from twisted.protocols.basic import LineReceiver

        class Lines(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                ensureDeferred(call_line(line.decode("utf-8", "replace")))

            def connectionLost(self, reason: object = None) -> None:
                if not finished.called and args.count is None and args.duration is None:
                    finished.callback(None)  # standard input closed: we are done

        stdio.StandardIO(Lines(), reactor=reactor)  # type: ignore[no-untyped-call]
    await _until_finished(reactor, client, finished, args.duration, "listen finished", args.timeout, err)
    err.write(f"disconnected: {client.disconnect_reason}\n")
    return EXIT_OK if _ended_well(client) else EXIT_HUB_ERROR


def run(reactor: Any, args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> Deferred[int]:
    """Run one parsed command on C{reactor}; fires with the exit status."""
    commands = {"call": run_call, "watch": run_watch, "listen": run_listen}
    return ensureDeferred(commands[args.command](reactor, args, out or sys.stdout, err or sys.stderr))


def run_typescript(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """C{typescript}: write the TypeScript interfaces of the given hub classes."""
    from twisted.python.usage import UsageError

    from ._ops.loading import load_hub
    from ._ops.typescript import typescript_for_hubs

    try:
        hubs = [load_hub(spec) for spec in args.hubs]
    except UsageError as e:
        err.write(f"error: {str(e).replace('--hub ', '')}\n")
        return EXIT_USAGE
    text = typescript_for_hubs(hubs, " ".join(args.hubs))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        out.write(text)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of C{python3 -m twisted_hub} and the C{twisted-hub} script."""
    args = parse_args(argv)
    if args.command == "typescript":
        return run_typescript(args, sys.stdout, sys.stderr)
    from twisted.internet import task

    status = EXIT_OK

    def command(reactor: Any) -> Deferred[None]:
        def keep(code: int) -> None:
            nonlocal status
            status = code

        return run(reactor, args).addCallback(keep)

    try:
        task.react(command)
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
