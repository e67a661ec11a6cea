"""Run helper scripts as child processes from reactor-driven tests."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "helpers"


class ScriptProcess(ProcessProtocol):
    """A child Python script; fires C{started} with the port it prints ("PORT n")."""

    def __init__(self) -> None:
        self.started: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.lines: list[str] = []
        self._line_waiters: list[tuple[str, Deferred[str]]] = []
        self._buffer = b""
        self.pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if line.startswith("PORT ") and not self.started.called:
                self.started.callback(int(line.split()[1]))
            for prefix, waiter in list(self._line_waiters):
                if line.startswith(prefix):
                    self._line_waiters.remove((prefix, waiter))
                    waiter.callback(line)

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode("utf-8", "replace"))

    def wait_for_line(self, prefix: str) -> Deferred[str]:
        for line in self.lines:
            if line.startswith(prefix):
                d: Deferred[str] = Deferred()
                d.callback(line)
                return d
        waiter: Deferred[str] = Deferred()
        self._line_waiters.append((prefix, waiter))
        return waiter

    def processEnded(self, reason: Any) -> None:
        if not self.started.called:
            self.started.errback(RuntimeError(f"process ended before printing its port: {reason.value}"))
        self.ended.callback(None)

    def signal(self, signum: int) -> None:
        if self.pid is not None and not self.ended.called:
            os.kill(self.pid, signum)

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, reactor: Any, timeout: float = 10.0) -> Deferred[None]:
        """End the process we started (SIGCONT then SIGTERM; SIGKILL if it lingers)."""
        if self.ended.called:
            return self.ended
        self.thaw()
        self.signal(signal.SIGTERM)
        killer = reactor.callLater(timeout, self.signal, signal.SIGKILL)
        self.ended.addBoth(lambda r: killer.cancel() if killer.active() else None)
        return self.ended


def spawn_script(reactor: Any, script: str, *args: str) -> ScriptProcess:
    """Start C{tests/helpers/<script>} with this interpreter and the repo on PYTHONPATH."""
    process = ScriptProcess()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, str(HELPERS / script), *args]
    reactor.spawnProcess(process, sys.executable, argv, env=env, path=str(ROOT))
    return process
