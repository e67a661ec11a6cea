"""Helpers shared by the benchmark processes (servers, clients, the runner)."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

#: the repository root: benchmark processes import twisted_hub from here, not
#: from whatever copy is installed, so the suite measures the working tree.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

HOST = "127.0.0.1"
HUB_NAME = "bench"

#: ``BENCH_REFERENCES=stock`` runs the reference implementations as they ran before
#: 2026-12-07 (raw autobahn with Nagle's algorithm on, the references on asyncio's default
#: loop), to measure what reviewing them changed; anything else (the default) runs each
#: at its library's documented best (docs/performance.md, "The references").
STOCK_REFERENCES = os.environ.get("BENCH_REFERENCES", "") == "stock"


def reference_mode() -> str:
    return "stock" if STOCK_REFERENCES else "best"


def run_asyncio(main: Any) -> Any:
    """
    Run the coroutine C{main} as an asyncio reference (websockets, python-socketio) runs at
    its best: on uvloop, as websockets' performance guide advises ("You can make a
    websockets application faster by running it with uvloop").  A missing uvloop is an
    error, not a silent fall-back to a slower loop; with C{BENCH_REFERENCES=stock}, asyncio's
    own loop.
    """
    import asyncio

    if STOCK_REFERENCES:
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError as e:
        raise SystemExit(f"the asyncio references run on uvloop: pip install '.[bench]' ({e})") from e
    return uvloop.run(main)


def require_websockets_speedups() -> None:
    """websockets' C extension (frame masking) must be there: without it websockets falls back to Python."""
    try:
        import websockets.speedups  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"websockets.speedups (its C extension) is missing: {e}") from e


def library_versions() -> dict[str, object]:
    """The versions and accelerations a result depends on (recorded in every result file)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, object] = {}
    for name in ("twisted", "autobahn", "txaio", "msgpack", "websockets", "uvloop", "python-socketio", "aiohttp"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    try:
        from autobahn.websocket import USES_NVX

        found["autobahn_nvx"] = bool(USES_NVX)
    except ImportError:
        found["autobahn_nvx"] = None
    try:
        import websockets.speedups  # noqa: F401

        found["websockets_speedups"] = True
    except ImportError:
        found["websockets_speedups"] = False
    try:
        from twisted.internet import reactor

        found["twisted_reactor"] = type(reactor).__name__
    except ImportError:
        found["twisted_reactor"] = None
    found["references"] = reference_mode()
    return found


def rpc_value(size: int) -> bytes:
    """
    The argument every RPC of a C{size}-byte case sends and gets back (msgpack
    bin).  Runs before 2026-11-29 sent the 16-character string
    ``"0123456789abcdef"`` in the small cases.
    """
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


def open_file_limit() -> dict[str, int]:
    """This process's RLIMIT_NOFILE, soft and hard (-1: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


def open_file_limit_line() -> str:
    """What a bench prints first: the open-file limit it ran under (it bounds the connections a process can hold)."""
    limit = open_file_limit()
    shown = {k: "unlimited" if v == resource.RLIM_INFINITY else str(v) for k, v in limit.items()}
    return (f"open-file limit (RLIMIT_NOFILE): soft {shown['soft']}, hard {shown['hard']}; servers and load "
            f"clients raise their soft limit to the hard one (raise_nofile), so each process holds at most "
            f"{shown['hard'] if limit['hard'] != resource.RLIM_INFINITY else 2 ** 20} files")


def emit(event: str, **fields: object) -> None:
    """One JSON line on stdout: how child processes report to the runner."""
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def rss_bytes(pid: int | None = None) -> int:
    import psutil

    return int(psutil.Process(pid or os.getpid()).memory_info().rss)


def now() -> float:
    """Monotonic seconds; CLOCK_MONOTONIC is system-wide on Linux, so processes can compare."""
    return time.monotonic()


def apply_hub_ablation() -> None:
    """
    Ablation of the issue-13 changes, from ``BENCH_HUB_ABLATE`` (comma-separated):
    ``no-write-through`` (every write through Twisted's buffer),
    ``every-write-through`` (no one-direct-write-per-turn rule), ``batch-1m``
    (batches up to the peer's 1 MiB limit, as before), ``no-native-mask``
    (every fast-path frame unmasked by the big-integer XOR), ``no-fast-send``
    (every message through autobahn's own sendMessage/sendFrame),
    ``no-quiet-options`` (autobahn copies and pretty-prints its options for
    each new connection).  Empty: nothing changes.
    """
    wanted = set(filter(None, os.environ.get("BENCH_HUB_ABLATE", "").split(",")))
    if not wanted:
        return
    from twisted_hub._core import connection as _connection
    from twisted_hub._twisted import fastpath as _autobahn

    if "no-write-through" in wanted:
        _autobahn.write_through = lambda transport, data: transport.write(data)  # type: ignore[assignment]
    if "batch-1m" in wanted:
        _connection.BATCH_BYTES = 1024 * 1024
    if "no-native-mask" in wanted:
        _autobahn.NATIVE_MASKER = None
    if "no-fast-send" in wanted:
        from autobahn.websocket.protocol import WebSocketProtocol

        _autobahn.FastPathMixin.sendMessage = WebSocketProtocol.sendMessage  # type: ignore[method-assign]
    if "no-quiet-options" in wanted:
        def connection_made(self: _autobahn.FastPathMixin) -> None:
            self._fast_path = _autobahn.FAST_PATH_AVAILABLE and bool(getattr(self.factory, "fast_path", True))
            super(_autobahn.FastPathMixin, self).connectionMade()  # type: ignore[misc]

        _autobahn.FastPathMixin.connectionMade = connection_made  # type: ignore[method-assign]
    if "every-write-through" in wanted:  # no one-direct-write-per-turn rule
        import itertools

        numbers = itertools.count()
        _autobahn.WriteTurns.current = lambda self: next(numbers)  # type: ignore[method-assign]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes (Linux /proc)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
