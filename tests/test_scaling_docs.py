"""
docs/scaling.md: every code block is run or parsed; the load-balancer example serves two nodes as one;
the tables of the backplane messages match what the code encodes and accepts.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub import connect
from twisted_hub._backplane.interface import node_of
from twisted_hub.redis import RedisBackplane
from twisted_hub.tap import Options
from twisted_hub.types import HubClientProtocol

from ._docs import named_blocks
from ._nginx import start_nginx
from ._redis import RedisServer
from ._twistd import Child, started_port, twistd_hub
from .test_scaling_processes import CONNECTED, Inbox

DOC = "docs/scaling.md"
BLOCKS = named_blocks(DOC)


def code(name: str) -> str:
    return BLOCKS[name][1]


def twistd_commands() -> list[list[str]]:
    """The hub arguments of each documented twistd line (what follows 'hub')."""
    commands = []
    for line in code("scale-twistd").strip().splitlines():
        argv = shlex.split(line)
        commands.append(argv[argv.index("hub") + 1:])
    return commands


class DocumentTests(SynchronousTestCase):
    def test_every_block_is_known(self) -> None:
        """Every code block of the document is one this module runs or parses."""
        self.assertEqual(
            set(BLOCKS),
            {"scale-twistd", "scale-config", "scale-factory", "scale-nginx", "scale-tls-url", "scale-workers"},
        )

    def test_workers_line_parses(self) -> None:
        """The documented --workers line is valid: 4 workers on one port, joined by the documented Redis."""
        argv = shlex.split(code("scale-workers").strip())
        options = Options()
        options.parseOptions(argv[argv.index("hub") + 1:])
        self.assertEqual(
            (options["workers"], options["listen"], options["redis"]), (4, ["tcp:8080"], "redis://127.0.0.1:6379/0")
        )

    def test_workers_documented_numbers(self) -> None:
        """The restart delays, bounds and timeouts the document states are the code's."""
        from twisted_hub._ops import workers as _workers

        text = (Path(__file__).resolve().parent.parent / DOC).read_text()
        self.assertIn(f"after {_workers.RESTART_DELAY:g} s, then 1, 2, 4 ... up to {_workers.MAX_RESTART_DELAY:g} s", text)
        self.assertIn(f"served {_workers.HEALTHY_AFTER:g} s before it died", text)
        self.assertIn(f"does not listen within {_workers.READY_TIMEOUT:g} s", text)
        self.assertIn(f"answered within {_workers.METRICS_TIMEOUT:g} s", text)

    def test_tls_url_example(self) -> None:
        """The rediss:// example parses into TLS with the three files it names."""
        from twisted_hub.redis import parse_redis_url

        settings = parse_redis_url(code("scale-tls-url").strip())
        self.assertEqual(
            (settings.tls, settings.host, settings.port, settings.ca_file, settings.cert_file, settings.key_file),
            (True, "redis.internal", 6380, "/etc/hub/redis-ca.pem", "/etc/hub/client.pem", "/etc/hub/client-key.pem"),
        )

    def test_factory_example(self) -> None:
        """The Python example builds a factory whose backplane is a RedisBackplane on the documented Redis."""
        namespace: dict[str, Any] = {}
        exec(compile(code("scale-factory"), DOC, "exec"), namespace)
        backplane = namespace["factory"].backplane
        assert isinstance(backplane, RedisBackplane)
        self.assertEqual((backplane.settings.host, backplane.settings.port, backplane.settings.db), ("127.0.0.1", 6379, 0))

    def test_config_example(self) -> None:
        """The TOML example sets the Redis URL and the lease."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "hub.toml"
            path.write_text(code("scale-config"))
            options = Options()
            options.parseOptions(["--config", str(path)])
        self.assertEqual((options["redis"], options["redis-lease"]), ("redis://127.0.0.1:6379/0", 15.0))

    def test_twistd_lines_parse(self) -> None:
        """Both documented command lines are valid twistd hub options on one Redis, on different ports."""
        listens = []
        for argv in twistd_commands():
            options = Options()
            options.parseOptions(argv)
            self.assertEqual(options["redis"], "redis://127.0.0.1:6379/0")
            listens.append(options["listen"])
        self.assertEqual(len({tuple(x) for x in listens}), 2)

    def test_documented_defaults(self) -> None:
        """The defaults the document states are the code's."""
        text = (Path(__file__).resolve().parent.parent / DOC).read_text()
        backplane = RedisBackplane()
        self.assertIn(f"(default {backplane.lease:g})", text)
        self.assertIn(f"`max_pending_commands` ({backplane.max_pending_commands:,}".replace(",", " "), text)
        self.assertIn(f"`max_pending_bytes` ({backplane.max_pending_bytes // 1024 // 1024} MiB)", text)
        self.assertEqual(len(backplane.token), 12)
        from twisted_hub._backplane.redis_link import DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT

        self.assertIn(f"`ping_interval` seconds (default {DEFAULT_PING_INTERVAL:g})", text)
        self.assertIn(f"`ping_timeout` seconds (default {DEFAULT_PING_TIMEOUT:g})", text)


class ChatInbox(Inbox):
    """A chat client: records what is said in its rooms."""

    def said(self, room: str, user: str, text: str) -> None:  # type: ignore[override]
        super().said(f"{user}: {text}")

    def joined(self, room: str, user: str) -> None:
        super().said(f"{user} joined")

    def left(self, room: str, user: str) -> None:
        super().said(f"{user} left")


def nginx_pieces(ports: list[int]) -> tuple[str, str]:
    """The documented upstream (pointing at C{ports}) and location, for the test nginx."""
    block = code("scale-nginx")
    upstream = re.search(r"upstream hub_nodes \{.*?\n\}", block, re.S)
    location = re.search(r"    location /hub/ \{.*?\n    \}", block, re.S)
    assert upstream is not None and location is not None
    servers = iter(ports)
    upstream_text = re.sub(r"server 127\.0\.0\.1:\d+;", lambda m: f"server 127.0.0.1:{next(servers)};", upstream.group(0))
    return upstream_text, location.group(0).replace("{", "{{").replace("}", "}}")


@pytest_twisted.ensureDeferred
async def test_two_nodes_behind_the_documented_nginx() -> None:
    """The documented nodes behind the documented nginx upstream: clients land on both nodes and a group send reaches both."""
    from twisted.internet import reactor

    redis = RedisServer(reactor)
    await redis.start()
    nodes: list[Child] = []
    clients: list[HubClientProtocol] = []
    nginx = None
    try:
        ports = []
        for argv in twistd_commands():
            argv = [a.replace("redis://127.0.0.1:6379/0", redis.url) for a in argv]
            del argv[argv.index("--port"):argv.index("--port") + 2]  # loopback and a free port instead
            child = twistd_hub(reactor, *argv, "--listen", "tcp:0:interface=127.0.0.1")
            nodes.append(child)
            ports.append(await started_port(child, reactor))
            await child.wait_for(CONNECTED, reactor, 10)
        upstream, location = nginx_pieces(ports)
        nginx = start_nginx(0, location, http_extra=upstream)
        inboxes = [ChatInbox(), ChatInbox()]
        for inbox in inboxes:
            clients.append(
                await connect(f"ws://127.0.0.1:{nginx.port}/hub", "chat", receiver=inbox, clock=reactor, timeout=10)
            )
        tokens = {node_of(c.connection_id) for c in clients}
        assert len(tokens) == 2, "least_conn sent both clients to one node"
        await clients[0].call("join", "lobby", "ann")
        await clients[1].call("join", "lobby", "bob")
        await clients[1].call("say", "lobby", "hello from bob")
        for inbox in inboxes:
            await inbox.wait_for("bob: hello from bob", reactor)
        assert "bob joined" in inboxes[0].messages
    finally:
        for c in clients:
            if c.is_connected:
                await c.disconnect()
        if nginx is not None:
            nginx.stop()
        for child in nodes:
            await child.stop(reactor)
        await redis.stop()


# -- "The messages, field by field": the tables against twisted_hub/_backplane/wire.py ----------------
def message_tables() -> dict[str, list[list[str]]]:
    """Each table of the section, by the bold line above it: its rows' cells (item, field, type, meaning)."""
    text = (Path(__file__).resolve().parent.parent / DOC).read_text()
    section = text[text.index("### The messages, field by field"):text.index("\n## Failures")]
    tables: dict[str, list[list[str]]] = {}
    title = ""
    for line in section.splitlines():
        if line.startswith("**"):
            title = line[2:line.index("**", 2)]
            tables[title] = []
        elif re.match(r"\| \d+ \|", line):
            tables[title].append([cell.strip() for cell in line.strip("|").split(" | ")])
    return tables


def kinds_documented() -> dict[int, tuple[str, list[list[str]]]]:
    """Kind number -> (its name, its field rows), from the "Kind N, `NAME`" tables."""
    kinds: dict[int, tuple[str, list[list[str]]]] = {}
    for title, rows in message_tables().items():
        if title.startswith("Kind"):
            numbers = [int(n) for n in re.findall(r"\d+", title)]
            names = re.findall(r"`([A-Z]+)`", title)
            assert len(numbers) == len(names), title
            for number, name in zip(numbers, names, strict=True):
                kinds[number] = (name, rows)
    return kinds


def sample(msgpack_type: str, meaning: str) -> Any:
    """A value of a documented msgpack type (of an enumeration, its first value)."""
    values = re.match(r"one of `([^`]+)`", meaning)
    if values is not None:
        return values.group(1)
    return {
        "str": "x", "bin": b"x", "uint": 1, "int": -1, "str or nil": None, "array of str": ["a-1"],
        "map of str to uint": {"n": 3},
    }[msgpack_type]


#: a value of the wrong type for each documented one
WRONG = {"str": b"x", "bin": "x", "uint": -1, "int": "1", "str or nil": 1, "array of str": [1], "map of str to uint": {"n": -1}}


class MessageTableTests(SynchronousTestCase):
    """The message tables of docs/scaling.md are precise enough to build every message the code accepts."""

    def test_every_kind_is_documented_by_its_number_and_name(self) -> None:
        """One table (or "no fields") per kind the decoder knows, with the constant's name and its number of fields."""
        from twisted_hub._backplane import wire

        documented = kinds_documented()
        self.assertEqual(set(documented), set(wire._DECODERS))
        for number, (name, rows) in documented.items():
            self.assertEqual(getattr(wire, name), number)
            self.assertEqual([int(row[0]) for row in rows], list(range(4, 4 + wire._DECODERS[number][0])), name)

    def test_messages_built_from_the_tables_decode_and_each_wrong_type_is_refused(self) -> None:
        """
        A message built from each kind's table (envelope first) decodes as
        that kind; a value of another type in any field, envelope included,
        is refused as malformed.
        """
        import msgpack

        from twisted_hub._backplane.wire import MalformedMessage, NodeCodec

        envelope = message_tables()["The envelope"]
        self.assertEqual([row[1] for row in envelope], ["kind", "origin", "seq", "sent_ms"])
        codec = NodeCodec("me")
        for number, (name, rows) in kinds_documented().items():
            header = [number, "node", 1, 0]
            values = header + [sample(row[2], row[3]) for row in rows]
            types = [row[2] for row in envelope + rows]
            message = codec.decode(b"ch", msgpack.packb(values, use_bin_type=True), 0.0)
            self.assertEqual((message.kind, message.origin), (number, "node"), name)
            for index, msgpack_type in enumerate(types):
                wrong = list(values)
                wrong[index] = WRONG[msgpack_type]
                with self.assertRaises(MalformedMessage, msg=f"{name}: item {index} as {wrong[index]!r}"):
                    codec.decode(b"ch", msgpack.packb(wrong, use_bin_type=True), 0.0)

    def test_the_state_of_a_session_is_as_documented(self) -> None:
        """
        A session's state as a node encodes it (L{MovedSession}): the
        documented items with their types, and each nested array with the
        documented number of values and their types.
        """
        import msgpack

        from twisted_hub._core.resume import CallDeduplicator, ReceiveWindow, ReplayBuffer, SessionToken
        from twisted_hub._core.session_move import MOVED_SESSION_VERSION, MovedSession

        token, _ = SessionToken.issue(b"epoc")
        token.rotate()
        sent = ReplayBuffer(max_bytes=200, max_age=30.0)
        for n in range(6):
            sent.append(b"m%d" % n + b"." * 40, 1.0 + n)  # (over 200 bytes: the oldest are dropped)
        received = ReceiveWindow()
        received.receive(1.0)
        calls = CallDeduplicator()
        calls.begin(1, 1.0)
        calls.begin(2, 1.0)
        calls.settle(1, b"answer", 2.0)
        state = MovedSession(
            "chat", "n1-1", token.export(), sent.export(9.0), received.export(), calls.export(9.0), 3, "ann",
            {"k": 1}, ["room"],
        ).encode()
        items = msgpack.unpackb(state, raw=False, strict_map_key=False)
        rows = message_tables()["The state of a session in `HANDOVER`"]
        self.assertEqual([int(row[0]) for row in rows], list(range(len(items))))
        self.assertEqual(items[0], MOVED_SESSION_VERSION)
        python = {"uint": int, "str": str, "bin": bytes, "array": list, "float": float, "str or nil": str,
                  "map of str to any": dict, "array of str": list}
        for row, item in zip(rows, items, strict=True):
            self.assertIsInstance(item, python[row[2]], row[1])
            layout = re.search(r"`\[(.*)\]`", row[3])
            if row[2] == "array":
                assert layout is not None, f"item {row[1]} has no documented layout"
                parts = top_level(layout.group(1))
                self.assertEqual(len(parts), len(item), row[1])
                for part, value in zip(parts, item, strict=True):
                    kind = re.search(r"\((\w+)", part)
                    assert kind is not None, part
                    self.assertIsInstance(value, python[kind.group(1)], f"{row[1]}: {part}")


def top_level(layout: str) -> list[str]:
    """The comma-separated parts of C{layout} outside brackets and parentheses."""
    parts, depth, current = [], 0, ""
    for char in layout:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts
