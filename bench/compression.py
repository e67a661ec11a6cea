#!/usr/bin/env python3
"""
permessage-deflate, measured: ``python3 bench/compression.py [--quick] [--repeats N] [--only SECTION ...]``.

A realistic payload set, generated from a fixed seed (the same bytes every run):

- ``chat``: one chat line, ``{"room", "from", "text", "ts", "id"}``, 3 to 30
  words of English (about 100 to 300 bytes encoded);
- ``history``: a page of 50 chat lines (about 8 KB);
- ``map``: a JSON-like room snapshot, 10 to 60 members with ids, names,
  status, avatar URLs, roles and settings (about 2 to 12 KB);
- ``delta``: a game-state delta, 20 to 120 entities as
  ``[id, x, y, vx, vy, hp, flags]`` with float coordinates (about 1 to 6 KB).

Sections:

1. ``codec``: zlib alone, as autobahn and websockets run it (raw deflate,
   ``Z_SYNC_FLUSH``, the 4-byte tail cut), on each class's encoded hub
   messages in order, for several settings (window bits, memLevel, level,
   context takeover): bytes out / bytes in, and CPU per message to compress
   and to inflate.  No sockets; CPU is ``time.process_time``.
2. ``wire``: end to end on 127.0.0.1.  One hub server process per mode
   (``off``: no compression; ``on``: ``CompressionPolicy()`` on both sides,
   no context takeover; ``takeover``: with context takeover;
   ``takeover-min128``: with context takeover and ``min_size=128``) and, per run, one
   Twisted client process that calls ``echo(payload)`` for every message of
   a class, 8 calls in flight: bytes on the wire per call in each direction
   (the client's autobahn counters, frame headers included), server and
   client CPU per call, calls per second.
3. ``fanout``: one server and M members (default 200, one client process)
   per mode (``off``, ``on``, ``takeover``); the first member asks the server
   to broadcast 50 messages of a class to the group, one prepared frame per
   message.  Per delivered message: bytes the server wrote, server CPU,
   members' CPU, deliveries per second.  Without context takeover the server
   compresses each broadcast once for every member; with it, once per member.
4. ``memory``: server RSS per connection.  A fresh server per mode, then N
   client connections in one process; each connection echoes one message
   (``small``: 150 bytes, below ``min_size``; ``large``: a 6.6 KB chat
   history, compressed both ways, so each connection holds its zlib state),
   with compression ``off``, ``on`` (the defaults: no context takeover),
   ``takeover`` and ``takeover-15-8`` (context takeover with window bits
   15 and memLevel 8, zlib's defaults).
   RSS of the server (after ``gc.collect()``) with the N connections open,
   minus before, divided by N.

Repeats are interleaved (every mode of a case, then the next repeat) and
each figure is the median of the repeats, with [min..max]; ratios are taken
within a repeat.  The machine these run on is shared and noisy: compare
within one run.  Prints tables and writes JSON to ``bench/results/``.
Every wait is bounded and only processes started here are stopped (by PID).
See docs/performance.md, "Compression".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
import zlib
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    ROOT,
    cpu_seconds,
    emit,
    memory,
    open_file_limit,
    open_file_limit_line,
    raise_nofile,
)

CLASSES = ("chat", "history", "map", "delta")
#: the fan-out section: classes broadcast, messages per broadcast run, group members
FANOUT_CLASSES = ("history", "map", "delta")
FANOUT_MESSAGES = 50
FANOUT_MODES = ("off", "on", "takeover")
WIRE_MODES = ("off", "on", "takeover", "takeover-min128")
MEMORY_MODES = ("off/small", "on/small", "on/large", "takeover/large", "takeover-15-8/large")

_WORDS = (
    "the of and to a in is you that it he was for on are as with his they I at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up other "
    "about out many then them these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who oil its now find long down day did get come "
    "made may part over new sound take only little work know place year live me back give most very after thing "
    "our just name good sentence man think say great where help through much before line right too mean old any "
    "same tell boy follow came want show also around form three small set put end does another well large must "
    "big even such because turn here why ask went men read need land different home us move try kind hand "
    "picture again change off play spell air away animal house point page letter mother answer found study still "
    "learn should lol ok thanks brb gg anyone around tonight meeting deploy server broke fixed merged review ship"
).split()
_NAMES = [f"{first}{n}" for first in ("ann", "bob", "chen", "dana", "eli", "fatima", "goran", "hana", "ivan", "jo")
          for n in (7, 42, 99, 2024, 1)]


def payloads(kind: str, count: int, seed: int = 2026) -> list[Any]:
    """C{count} messages of one class, the same for a given seed."""
    rng = random.Random(f"{kind}-{seed}")
    base_ts = 1_764_000_000.0

    def chat_line(i: int) -> dict[str, Any]:
        words = rng.randint(3, 30)
        text = " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + rng.choice(".?!")
        return {"room": "lobby", "from": rng.choice(_NAMES), "text": text, "ts": base_ts + i * 1.7, "id": 100_000 + i}

    out: list[Any] = []
    for i in range(count):
        if kind == "chat":
            out.append(chat_line(i))
        elif kind == "history":
            out.append({"room": "lobby", "before": 100_000 + i * 50, "messages": [chat_line(i * 50 + j) for j in range(50)]})
        elif kind == "map":
            members = []
            for _ in range(rng.randint(10, 60)):
                uid = f"{rng.getrandbits(128):032x}"
                members.append({
                    "id": uid, "name": rng.choice(_NAMES), "status": rng.choice(("online", "away", "busy", "offline")),
                    "joined": int(base_ts) - rng.randint(0, 10**7), "avatar": f"https://cdn.example.com/avatars/{uid}.png",
                    "roles": rng.sample(["member", "moderator", "admin", "guest", "bot"], rng.randint(1, 2)),
                    "settings": {"theme": rng.choice(("dark", "light")), "lang": rng.choice(("en", "fr", "de", "ja")),
                                 "notifications": rng.random() < 0.5},
                })
            out.append({"room": f"room-{rng.randint(1, 500)}", "topic": chat_line(i)["text"], "members": members})
        elif kind == "delta":
            entities = []
            for _ in range(rng.randint(20, 120)):
                entities.append([
                    rng.randint(1, 5000), round(rng.uniform(0, 4096), 2), round(rng.uniform(0, 4096), 2),
                    round(rng.uniform(-8, 8), 3), round(rng.uniform(-8, 8), 3), rng.choice((100, 100, 100, rng.randint(1, 99))),
                    rng.choice((0, 0, 1, 2, 4)),
                ])
            out.append({"tick": 10_000 + i, "entities": entities})
        else:
            raise ValueError(kind)
    return out


def encoded(kind: str, count: int) -> list[bytes]:
    """The hub messages a server sends for these payloads (RESULT frames, as echo answers them)."""
    from twisted_hub._core.wire import MessageKind, encode_fields

    return [encode_fields([MessageKind.RESULT, i + 1, value]) for i, value in enumerate(payloads(kind, count))]


# -- 1. codec -------------------------------------------------------------------
#: name -> (window bits, memLevel, level, context takeover); 15/8/6 with takeover is zlib's (and autobahn's) default
CODEC_SETTINGS = {
    "12/5/1 (default)": (12, 5, 1, False),
    "12/5/6": (12, 5, 6, False),
    "9/1/1": (9, 1, 1, False),
    "12/5/1 takeover": (12, 5, 1, True),
    "12/5/6 takeover": (12, 5, 6, True),
    "15/8/6 takeover": (15, 8, 6, True),
}


def codec_run(messages: list[bytes], bits: int, mem_level: int, level: int, takeover: bool) -> dict[str, float]:
    """Compress then inflate C{messages} in order, as one direction of one connection does."""
    compressed: list[bytes] = []
    started = time.process_time()
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits, mem_level)
    for message in messages:
        if not takeover:
            compressor = zlib.compressobj(level, zlib.DEFLATED, -bits, mem_level)
        compressed.append((compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4])
    compress_s = time.process_time() - started
    started = time.process_time()
    inflater = zlib.decompressobj(-bits)
    for data, message in zip(compressed, messages):
        if not takeover:
            inflater = zlib.decompressobj(-bits)
        out = inflater.decompress(data + b"\x00\x00\xff\xff")
        if len(out) != len(message):
            raise AssertionError("inflated size differs")
    inflate_s = time.process_time() - started
    raw = sum(map(len, messages))
    return {
        "raw_bytes": raw / len(messages), "deflated_bytes": sum(map(len, compressed)) / len(messages),
        "ratio": sum(map(len, compressed)) / raw,
        "compress_us": compress_s / len(messages) * 1e6, "inflate_us": inflate_s / len(messages) * 1e6,
    }


def section_codec(counts: dict[str, int], repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in CLASSES:
        messages = encoded(kind, counts[kind])
        sizes = sorted(map(len, messages))
        results[kind] = {
            "messages": len(messages), "median_bytes": sizes[len(sizes) // 2], "min_bytes": sizes[0], "max_bytes": sizes[-1],
            "settings": {},
        }
        for name, (bits, mem_level, level, takeover) in CODEC_SETTINGS.items():
            runs = [codec_run(messages, bits, mem_level, level, takeover) for _ in range(repeats)]
            results[kind]["settings"][name] = {key: median_spread([r[key] for r in runs]) for key in runs[0]}
    return results


def print_codec(results: dict[str, Any]) -> None:
    print("\n## codec: zlib on each class's encoded messages (median of repeats)")
    print(f"{'class':<8} {'settings':<22} {'bytes in':>9} {'bytes out':>9} {'ratio':>6} {'deflate us':>11} {'inflate us':>11}")
    for kind, by_kind in results.items():
        for name, r in by_kind["settings"].items():
            print(f"{kind:<8} {name:<22} {r['raw_bytes']['median']:>9.0f} {r['deflated_bytes']['median']:>9.0f} "
                  f"{r['ratio']['median']:>6.3f} {r['compress_us']['median']:>11.1f} {r['inflate_us']['median']:>11.1f}")


# -- child processes ---------------------------------------------------------------
def policy_for(mode: str) -> Any:
    from twisted_hub import CompressionPolicy

    if mode == "off":
        return None
    if mode == "on":
        return CompressionPolicy()
    if mode == "takeover":
        return CompressionPolicy(context_takeover=True)
    if mode == "takeover-min128":
        return CompressionPolicy(context_takeover=True, min_size=128)
    if mode == "takeover-15-8":  # zlib's and autobahn's defaults: the largest window, memLevel 8
        return CompressionPolicy(context_takeover=True, server_max_window_bits=15, client_max_window_bits=15, mem_level=8)
    raise ValueError(mode)


def child_server(mode: str) -> None:
    """A hub server with an echo hub; commands on stdin: stats, quit."""
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver

    from twisted_hub import Hub, HubServerFactory, hub, method

    blasts = {kind: payloads(kind, FANOUT_MESSAGES) for kind in FANOUT_CLASSES}

    @hub("bench")
    class EchoHub(Hub):
        @method
        def echo(self, value: object) -> object:
            return value

        @method
        def join(self) -> None:
            self.groups.add("g")

        @method
        def blast(self, kind: str) -> int:
            """Broadcast every prepared message of C{kind} to group g (one prepared frame per message)."""
            group = self.clients.group("g")
            for value in blasts[kind]:
                group.update(value)
            return len(blasts[kind])

    factory = HubServerFactory([EchoHub], compression=policy_for(mode), max_connections=None,
                               max_connections_per_ip=None, max_message_size=4 * 1024 * 1024)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)  # type: ignore[attr-defined]

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            command = line.decode().strip()
            if command == "stats":
                gc.collect()
                runtime = factory.hub_runtime("bench")
                transports = [s.transport for s in runtime.connections.values()]
                emit("stats", cpu=cpu_seconds(), rss=memory(os.getpid())["VmRSS"], conns=len(runtime.connections),
                     compressed=sum(1 for t in transports if getattr(t, "compressed", False)),
                     wire_out=sum(t.trafficStats.outgoingOctetsWireLevel for t in transports))
            elif command == "quit":
                reactor.stop()  # type: ignore[attr-defined]

    stdio.StandardIO(Commands())
    emit("ready", port=port.getHost().port)
    reactor.run()  # type: ignore[attr-defined]


def child_client(mode: str, port: int, kind: str, count: int, inflight: int) -> None:
    """Call echo(payload) for C{count} messages of C{kind}; report wire bytes and CPU."""
    from twisted.internet import defer, reactor
    from twisted.python.failure import Failure

    from twisted_hub import HubClientOptions, connect

    values = payloads(kind, count)

    async def run() -> None:
        options = HubClientOptions(compression=policy_for(mode), max_message_size=4 * 1024 * 1024)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "bench", options=options, clock=reactor, timeout=20)
        stats = client.trafficStats
        out0, in0 = stats.outgoingOctetsWireLevel, stats.incomingOctetsWireLevel
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        pending = iter(range(count))

        async def worker() -> None:
            for i in pending:
                if await client.call("echo", values[i]) != values[i]:
                    raise AssertionError("echo changed the value")

        await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(inflight)], consumeErrors=True)
        cpu1, wall1 = cpu_seconds(), time.monotonic()
        emit("done", calls=count, cpu=cpu1 - cpu0, wall=wall1 - wall0, compressed=client.compressed,
             wire_up=stats.outgoingOctetsWireLevel - out0, wire_down=stats.incomingOctetsWireLevel - in0)
        await client.disconnect()

    def finished(result: object) -> object:
        if isinstance(result, Failure):
            emit("error", error=result.getErrorMessage())
        reactor.stop()  # type: ignore[attr-defined]
        return None

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()).addBoth(finished))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def child_holders(mode: str, port: int, conns: int, size: str) -> None:
    """
    Open C{conns} connections, each echoing one message; hold them until
    told to quit.  With size C{fanout} each joins group g instead, and the
    command C{blast KIND} has the first one ask the server to broadcast
    KIND's messages; C{received} is reported once every member has them.
    """
    from twisted.internet import defer, reactor, stdio
    from twisted.protocols.basic import LineReceiver

    from twisted_hub import HubClientOptions, connect

    raise_nofile()
    value: Any = {"text": "x" * 150} if size in ("small", "fanout") else payloads("history", 1)[0]
    clients: list[Any] = []
    received = {"count": 0, "expected": 0}
    blast_started = [0.0, 0.0]

    class Member:
        def update(self, value: object) -> None:
            received["count"] += 1
            if received["count"] == received["expected"]:
                emit("received", count=received["count"], cpu=cpu_seconds() - blast_started[0],
                     wall=time.monotonic() - blast_started[1])

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            command, *args = line.decode().split()
            if command == "blast":
                received["count"], received["expected"] = 0, FANOUT_MESSAGES * len(clients)
                blast_started[:] = [cpu_seconds(), time.monotonic()]
                clients[0].call("blast", args[0]).addErrback(failed)
            elif command == "quit":
                for client in clients:
                    client.dropConnection(abort=True)
                reactor.stop()  # type: ignore[attr-defined]

    async def one() -> None:
        options = HubClientOptions(compression=policy_for(mode), max_message_size=4 * 1024 * 1024)
        client = await connect(f"ws://127.0.0.1:{port}/hub", "bench", receiver=Member(), options=options,
                               clock=reactor, timeout=60)
        clients.append(client)
        if await client.call("echo", value) != value:
            raise AssertionError("echo changed the value")
        if size == "fanout":
            await client.call("join")

    async def run() -> None:
        started = time.monotonic()
        for start in range(0, conns, 50):  # 50 handshakes at a time
            batch = [defer.ensureDeferred(one()) for _ in range(min(50, conns - start))]
            await defer.gatherResults(batch, consumeErrors=True)
        emit("ready", conns=len(clients), compressed=sum(1 for c in clients if c.compressed),
             seconds=time.monotonic() - started)

    def failed(failure: Any) -> None:
        emit("error", error=failure.getErrorMessage())

    stdio.StandardIO(Commands())
    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()).addErrback(failed))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


# -- the runner ----------------------------------------------------------------
def median_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(spread: dict[str, float], digits: int = 1) -> str:
    return f"{spread['median']:.{digits}f} [{spread['min']:.{digits}f}..{spread['max']:.{digits}f}]"


def section_wire(counts: dict[str, int], repeats: int, inflight: int) -> dict[str, Any]:
    from run import BenchError, Processes, server_stats

    runs: dict[str, dict[str, list[dict[str, float]]]] = {k: {m: [] for m in WIRE_MODES} for k in CLASSES}
    with Processes() as procs:
        servers = {}
        for mode in WIRE_MODES:
            server = procs.start(f"{mode} server", "compression.py", "_server", mode)
            servers[mode] = (server, int(server.expect("ready", 30)["port"]))
        for repeat in range(repeats):
            for kind in CLASSES:
                for mode in WIRE_MODES:
                    server, port = servers[mode]
                    before = server_stats(server)
                    client = procs.start(f"{mode} {kind} client", "compression.py", "_client", mode, str(port), kind,
                                         str(counts[kind]), str(inflight))
                    done = client.expect("done", 300)
                    after = server_stats(server)
                    client.stop()
                    if done["compressed"] != (mode != "off"):
                        raise BenchError(f"{mode}: compression negotiated = {done['compressed']}")
                    calls = done["calls"]
                    runs[kind][mode].append({
                        "up_bytes": done["wire_up"] / calls, "down_bytes": done["wire_down"] / calls,
                        "server_cpu_us": (after["cpu"] - before["cpu"]) / calls * 1e6,
                        "client_cpu_us": done["cpu"] / calls * 1e6, "calls_per_s": calls / done["wall"],
                    })
                    r = runs[kind][mode][-1]
                    print(f"  wire #{repeat + 1} {kind:<8} {mode:<14} up {r['up_bytes']:8.0f} B  down {r['down_bytes']:8.0f} B"
                          f"  server {r['server_cpu_us']:7.1f} us  client {r['client_cpu_us']:7.1f} us"
                          f"  {r['calls_per_s']:7.0f} calls/s", flush=True)
    summary: dict[str, Any] = {}
    for kind, by_mode in runs.items():
        summary[kind] = {}
        for mode, rs in by_mode.items():
            summary[kind][mode] = {key: median_spread([r[key] for r in rs]) for key in rs[0]}
            if mode != "off":
                off = by_mode["off"]
                summary[kind][mode]["ratios"] = {
                    key: median_spread([r[key] / o[key] if o[key] else float("nan") for r, o in zip(rs, off)])
                    for key in ("up_bytes", "down_bytes", "server_cpu_us", "client_cpu_us", "calls_per_s")
                }
    return {"runs": runs, "summary": summary}


def print_wire(result: dict[str, Any]) -> None:
    print("\n## wire: echo(payload) per call, median [min..max] of repeats; ratio = mode / off within a repeat")
    print(f"{'class':<8} {'mode':<14} {'up B':>7} {'down B':>7} {'server us':>10} {'client us':>10} {'calls/s':>8}"
          f"   {'bytes ratio':>12} {'server CPU ratio':>17} {'client CPU ratio':>17}")
    for kind, by_mode in result["summary"].items():
        for mode, r in by_mode.items():
            ratios = r.get("ratios")
            extra = ""
            if ratios:
                extra = (f"   {ratios['down_bytes']['median']:>12.3f} {fmt_spread(ratios['server_cpu_us'], 2):>17}"
                         f" {fmt_spread(ratios['client_cpu_us'], 2):>17}")
            print(f"{kind:<8} {mode:<14} {r['up_bytes']['median']:>7.0f} {r['down_bytes']['median']:>7.0f} "
                  f"{r['server_cpu_us']['median']:>10.1f} {r['client_cpu_us']['median']:>10.1f} "
                  f"{r['calls_per_s']['median']:>8.0f}{extra}")


def section_fanout(members: int, repeats: int) -> dict[str, Any]:
    from run import BenchError, Processes, server_stats

    runs: dict[str, dict[str, list[dict[str, float]]]] = {k: {m: [] for m in FANOUT_MODES} for k in FANOUT_CLASSES}
    with Processes() as procs:
        groups = {}
        for mode in FANOUT_MODES:
            server = procs.start(f"{mode} server", "compression.py", "_server", mode)
            port = int(server.expect("ready", 60)["port"])
            holders = procs.start(f"{mode} members", "compression.py", "_holders", mode, str(port), str(members), "fanout")
            ready = holders.expect("ready", 300)
            if ready["compressed"] != (members if mode != "off" else 0):
                raise BenchError(f"{mode}: {ready['compressed']} of {members} members compressed")
            groups[mode] = (server, holders)
        for repeat in range(repeats):
            for kind in FANOUT_CLASSES:
                for mode in FANOUT_MODES:
                    server, holders = groups[mode]
                    before = server_stats(server)
                    holders.send(f"blast {kind}")
                    done = holders.expect("received", 300)
                    after = server_stats(server)
                    delivered = done["count"]
                    runs[kind][mode].append({
                        "down_bytes": (after["wire_out"] - before["wire_out"]) / delivered,
                        "server_cpu_us": (after["cpu"] - before["cpu"]) / delivered * 1e6,
                        "members_cpu_us": done["cpu"] / delivered * 1e6,
                        "delivered_per_s": delivered / done["wall"],
                    })
                    r = runs[kind][mode][-1]
                    print(f"  fanout #{repeat + 1} {kind:<8} {mode:<9} {r['down_bytes']:8.0f} B  server "
                          f"{r['server_cpu_us']:7.1f} us  members {r['members_cpu_us']:7.1f} us  "
                          f"{r['delivered_per_s']:8.0f} msgs/s (per delivered message)", flush=True)
    summary: dict[str, Any] = {}
    for kind, by_mode in runs.items():
        summary[kind] = {}
        for mode, rs in by_mode.items():
            summary[kind][mode] = {key: median_spread([r[key] for r in rs]) for key in rs[0]}
            if mode != "off":
                summary[kind][mode]["ratios"] = {
                    key: median_spread([r[key] / o[key] if o[key] else float("nan") for r, o in zip(rs, by_mode["off"])])
                    for key in rs[0]
                }
    return {"members": members, "messages": FANOUT_MESSAGES, "runs": runs, "summary": summary}


def print_fanout(result: dict[str, Any]) -> None:
    print(f"\n## fan-out: {result['messages']} broadcasts of a class to {result['members']} members, per delivered "
          "message, median [min..max] of repeats; ratio = mode / off within a repeat")
    print(f"{'class':<8} {'mode':<9} {'down B':>7} {'server us':>10} {'members us':>11} {'msgs/s':>8}   "
          f"{'bytes ratio':>11} {'server CPU ratio':>17}")
    for kind, by_mode in result["summary"].items():
        for mode, r in by_mode.items():
            ratios = r.get("ratios")
            extra = (f"   {ratios['down_bytes']['median']:>11.3f} {fmt_spread(ratios['server_cpu_us'], 2):>17}"
                     if ratios else "")
            print(f"{kind:<8} {mode:<9} {r['down_bytes']['median']:>7.0f} {r['server_cpu_us']['median']:>10.1f} "
                  f"{r['members_cpu_us']['median']:>11.1f} {r['delivered_per_s']['median']:>8.0f}{extra}")


def section_memory(conns: int, repeats: int) -> dict[str, Any]:
    from run import BenchError, Processes, server_stats

    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MEMORY_MODES}
    for repeat in range(repeats):
        for spec in MEMORY_MODES:
            mode, size = spec.split("/")
            with Processes() as procs:
                server = procs.start(f"{mode} server", "compression.py", "_server", mode)
                port = int(server.expect("ready", 30)["port"])
                idle = server_stats(server)
                holders = procs.start(f"{spec} holders", "compression.py", "_holders", mode, str(port), str(conns), size)
                ready = holders.expect("ready", 300)
                held = server_stats(server)
                if held["conns"] != conns or ready["compressed"] != (conns if mode != "off" else 0):
                    raise BenchError(f"{spec}: {held['conns']} connections, {ready['compressed']} compressed")
                per_conn = (held["rss"] - idle["rss"]) / conns
                runs[spec].append({"rss_per_conn": per_conn, "rss_idle": idle["rss"], "rss_held": held["rss"]})
                print(f"  memory #{repeat + 1} {spec:<20} {conns} conns: {per_conn / 1024:6.1f} KiB per connection",
                      flush=True)
    summary = {spec: {key: median_spread([r[key] for r in rs]) for key in rs[0]} for spec, rs in runs.items()}
    for spec in MEMORY_MODES:
        if spec != "off/small":
            summary[spec]["extra_over_off"] = median_spread(
                [r["rss_per_conn"] - o["rss_per_conn"] for r, o in zip(runs[spec], runs["off/small"])]
            )
    return {"conns": conns, "runs": runs, "summary": summary}


def print_memory(result: dict[str, Any]) -> None:
    print(f"\n## memory: server RSS per connection, {result['conns']} connections, median [min..max] of repeats")
    for spec, r in result["summary"].items():
        extra = r.get("extra_over_off")
        more = f"   (+{fmt_spread({k: v / 1024 for k, v in extra.items()})} KiB over off)" if extra else ""
        print(f"{spec:<20} {fmt_spread({k: v / 1024 for k, v in r['rss_per_conn'].items()})} KiB{more}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        role, args = sys.argv[1], sys.argv[2:]
        if role == "_server":
            raise_nofile()
            child_server(args[0])
        elif role == "_client":
            child_client(args[0], int(args[1]), args[2], int(args[3]), int(args[4]))
        elif role == "_holders":
            child_holders(args[0], int(args[1]), int(args[2]), args[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke test: few messages, few connections, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=("codec", "wire", "fanout", "memory"))
    parser.add_argument("--members", type=int, default=200, help="group members in the fan-out section")
    parser.add_argument("--conns", type=int, default=1000, help="connections in the memory section")
    parser.add_argument("--inflight", type=int, default=8)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    counts = {"chat": 20000, "history": 2000, "map": 3000, "delta": 6000}
    if args.quick:
        counts = {kind: max(5, n // 400) for kind, n in counts.items()}
    conns = 20 if args.quick else args.conns
    limit = open_file_limit()
    print(open_file_limit_line(), flush=True)
    sections = args.only or ["codec", "wire", "fanout", "memory"]
    command = " ".join(["python3", "bench/compression.py", *sys.argv[1:]])
    started = time.time()
    report: dict[str, Any] = {"command": command, "quick": args.quick, "repeats": repeats, "counts": counts,
                              "open_file_limit": limit, "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    if "codec" in sections:
        report["codec"] = section_codec(counts, max(repeats, 3))
        print_codec(report["codec"])
    if "wire" in sections:
        report["wire"] = section_wire(counts, repeats, args.inflight)
        print_wire(report["wire"])
    if "fanout" in sections:
        report["fanout"] = section_fanout(10 if args.quick else args.members, repeats)
        print_fanout(report["fanout"])
    if "memory" in sections:
        report["memory"] = section_memory(conns, repeats)
        print_memory(report["memory"])
    report["duration_s"] = time.time() - started
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", time.strftime(
        f"compression-{'quick-' if args.quick else ''}%Y%m%d-%H%M%S.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nresults: {os.path.relpath(path, ROOT)}  ({report['duration_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
