"""
What does one maximal frame from a hostile client cost the server?  (docs/performance.md)

    python3 bench/hostile_frame.py                 # every case, 5 repeats
    python3 bench/hostile_frame.py --only notify-unknown --repeats 3

For each worst-case content, builds one masked WebSocket frame whose payload
is as close to the server's message-size limit (1 MiB by default) as the
content allows, hands it to a connected L{HubServerProtocol} (in memory, on a
Clock, through the autobahn framing layer, with the library's log events
formatted to /dev/null at the level C{twistd hub} logs at) and measures the
server's CPU time (C{time.process_time}) until the frame is handled and the
answer written.  Prints, per case: messages in the frame, CPU ms (median and
max), log lines written, and how the connection ended (still open, or the
close code).  The target (issue 9) is at most 100 ms for any content.

No sockets, no other process, no timing assertion: numbers only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    textFileLogObserver,
)

from twisted_hub import Hub, hub, method  # noqa: E402
from twisted_hub._twisted.server import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_MESSAGES_PER_FRAME  # noqa: E402
from twisted_hub.testing import HubTestServer, TestConnection  # noqa: E402


@hub("bench")
class BenchHub(Hub):
    @method
    def echo(self, value: Any) -> Any:
        return value


def masked_frame(payload: bytes) -> bytes:
    """One client-to-server binary WebSocket frame (RFC 6455 §5.2), masked."""
    mask = b"\x11\x22\x33\x44"
    n = len(payload)
    if n < 126:
        header = bytes([0x82, 0x80 | n])
    elif n < 65536:
        header = bytes([0x82, 0x80 | 126]) + struct.pack("!H", n)
    else:
        header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", n)
    # XOR the payload with the repeated mask in one big-integer operation.
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


def repeat_to_fill(one: Callable[[int], bytes], limit: int, count: int | None = None) -> tuple[bytes, int]:
    """Messages C{one(i)} back to back, as many as fit in C{limit} bytes (at most C{count})."""
    parts: list[bytes] = []
    size = 0
    i = 1
    while count is None or len(parts) < count:
        message = one(i)
        if size + len(message) > limit:
            break
        parts.append(message)
        size += len(message)
        i += 1
    return b"".join(parts), len(parts)


def _deep(limit: int) -> tuple[bytes, int]:
    # [2, 1, "echo", [[[[...]]]]]: arrays nested as deep as the bytes allow.
    prefix = b"\x94" + msgpack.packb([2, 1, "echo"])[1:]  # a 4-element array: kind, id, method, args
    depth = limit - len(prefix) - 1
    return prefix + b"\x91" * depth + b"\xc0", 1


def _wide_array(limit: int) -> tuple[bytes, int]:
    # [3, "nope", [nil, nil, ... ]]: one notify with ~1M nil arguments.
    n = limit - 32
    return msgpack.packb([3, "nope", [None] * n]), 1


def _wide_map(limit: int) -> tuple[bytes, int]:
    # [3, "nope", [{0: nil, 1: nil, ...}]]: one argument, a map with as many int keys as fit.
    n = (limit - 32) // 6
    return msgpack.packb([3, "nope", [{i: None for i in range(n)}]]), 1


def cases(limit: int, per_frame: int) -> dict[str, Callable[[], tuple[bytes, int]]]:
    """Worst-case frame contents: filling the whole frame, and exactly at the per-frame message limit."""
    pack = msgpack.packb
    repeated: dict[str, Callable[[int], bytes]] = {
        "notify-unknown": lambda i: pack([3, "x", []]),
        "notify-unknown-1k-name": lambda i: pack([3, "n" * 1000, []]),
        "notify-bad-kwargs": lambda i: pack([3, "echo", [1], {"k" * 900: 1}]),
        "invoke-unknown": lambda i: pack([2, i, "x", []]),
        "invoke-unknown-1k-name": lambda i: pack([2, i, "n" * 1000, []]),
        "invoke-echo": lambda i: pack([2, i, "echo", [1]]),
        "invoke-echo-1k": lambda i: pack([2, i, "echo", ["x" * 1000]]),
        "invoke-bad-args": lambda i: pack([2, i, "echo", []]),
        "late-results": lambda i: pack([4, i, None]),
        "heartbeat-acks": lambda i: pack([10, i]),
        "client-heartbeats": lambda i: pack([11, i, i]),
    }
    built: dict[str, Callable[[], tuple[bytes, int]]] = {}
    for name, one in repeated.items():
        built[name] = lambda one=one: repeat_to_fill(one, limit)  # type: ignore[misc]
        built[f"{name}@{per_frame}"] = lambda one=one: repeat_to_fill(one, limit, per_frame)  # type: ignore[misc]
    built["nested-deep"] = lambda: _deep(limit)
    built["nested-wide-array"] = lambda: _wide_array(limit)
    built["nested-wide-map"] = lambda: _wide_map(limit)
    built["echo-wide-array"] = lambda: (msgpack.packb([2, 1, "echo", [[None] * (limit - 32)]]), 1)
    return built


class LineCounter:
    """Counts the log lines the observer chain writes."""

    def __init__(self) -> None:
        self.lines = 0
        self.bytes = 0
        self._null = open(os.devnull, "w")

    def write(self, text: str) -> None:
        self.lines += text.count("\n")
        self.bytes += len(text)
        self._null.write(text)

    def flush(self) -> None:
        pass


def run_one(payload: bytes, counter: LineCounter) -> tuple[float, str]:
    server = HubTestServer([BenchHub])
    conn: TestConnection = server.connect("bench")
    assert conn.client.ready.called, "handshake did not complete"
    frame = masked_frame(payload)
    protocol = conn.server_protocol
    start = time.process_time()
    protocol.dataReceived(frame)
    elapsed = time.process_time() - start
    server.flush()
    session = conn.server_protocol.session
    reason = session.lifecycle.decided if session is not None else None
    outcome = "open" if reason is None else f"closed {reason.code}"
    conn.drop()
    return elapsed, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()

    counter = LineCounter()
    observer = FilteringLogObserver(
        textFileLogObserver(counter),  # type: ignore[arg-type]
        [LogLevelFilterPredicate(LogLevel.info)],
    )
    globalLogPublisher.addObserver(observer)

    limit = DEFAULT_MAX_MESSAGE_SIZE
    print(f"{'case':<28} {'messages':>9} {'payload':>9} {'cpu ms med':>10} {'cpu ms max':>10} "
          f"{'log lines':>9} {'log KB':>8}  outcome")
    for name, build in cases(limit, DEFAULT_MAX_MESSAGES_PER_FRAME).items():
        if args.only and name not in args.only:
            continue
        payload, count = build()
        assert len(payload) <= limit, (name, len(payload))
        timings: list[float] = []
        outcome = ""
        lines_before, bytes_before = counter.lines, counter.bytes
        for _ in range(args.repeats):
            elapsed, outcome = run_one(payload, counter)
            timings.append(elapsed * 1000)
        lines = (counter.lines - lines_before) // args.repeats
        kbytes = (counter.bytes - bytes_before) / args.repeats / 1024
        print(f"{name:<28} {count:>9} {len(payload):>9} {statistics.median(timings):>10.1f} "
              f"{max(timings):>10.1f} {lines:>9} {kbytes:>8.0f}  {outcome}", flush=True)
    globalLogPublisher.removeObserver(observer)


if __name__ == "__main__":
    main()
