"""
Run C{twistd} (or another command of this interpreter) as a child process
from reactor-driven tests, with the repository's code: C{PYTHONPATH} is the
repo root and the working directory is the repo root, so C{twisted/plugins}
is found there and not in a possibly stale installed copy.

Only the process started here is ever signalled; every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

ROOT = Path(__file__).resolve().parent.parent
#: twistd's log line when the site's port is bound (the real port for tcp:0).
SITE_STARTED = re.compile(r"Site(?: \(TLS\))? starting on (\d+)")
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]


class Child(ProcessProtocol):
    """A child process whose output lines we can wait for."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended: Deferred[int | None] = Deferred()
        self.exit_code: int | None = None
        #: the signal that ended the process (twistd re-raises SIGTERM to exit with it)
        self.exit_signal: int | None = None
        self.pid: int | None = None
        self._waiters: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self._buffers: dict[str, bytes] = {}
        #: lines the process wrote to stderr (L{lines} holds stdout)
        self.err_lines: list[str] = []

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def _data(self, data: bytes, stream: str) -> None:
        buffered = self._buffers.get(stream, b"") + data
        while b"\n" in buffered:
            raw, buffered = buffered.split(b"\n", 1)
            line = raw.decode("utf-8", "replace")
            (self.lines if stream == "out" else self.err_lines).append(line)
            for pattern, waiter in list(self._waiters):
                match = pattern.search(line)
                if match:
                    self._waiters.remove((pattern, waiter))
                    waiter.callback(match)
        self._buffers[stream] = buffered

    def outReceived(self, data: bytes) -> None:
        self._data(data, "out")

    def errReceived(self, data: bytes) -> None:
        self._data(data, "err")

    def output(self) -> str:
        """Everything the process wrote: stdout, then stderr."""
        return "\n".join(self.lines + self.err_lines)

    def wait_for(self, pattern: str | re.Pattern[str], reactor: Any, timeout: float = 20.0) -> Deferred[Any]:
        """Fires with the first match of C{pattern} in an output line (past or future)."""
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        waiter: Deferred[re.Match[str]] = Deferred()
        for line in self.lines + self.err_lines:
            match = compiled.search(line)
            if match:
                waiter.callback(match)
                return waiter
        self._waiters.append((compiled, waiter))
        if not self.ended.called:
            self.ended.addBoth(lambda r: (None if waiter.called else waiter.errback(
                RuntimeError(f"process ended before printing {compiled.pattern!r}:\n{self.output()}")), r)[1])
        return waiter.addTimeout(timeout, reactor)

    def processEnded(self, reason: Any) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.exit_signal = getattr(reason.value, "signal", None)
        if not self.ended.called:
            self.ended.callback(self.exit_code)

    @property
    def ended_cleanly(self) -> bool:
        """Exit status 0, or ended by the SIGTERM twistd re-raises after a clean shutdown."""
        return self.exit_code == 0 or self.exit_signal == signal.SIGTERM

    def signal(self, signum: int) -> None:
        if self.pid is not None and not self.ended.called:
            os.kill(self.pid, signum)

    def stop(self, reactor: Any, timeout: float = 10.0) -> Deferred[int | None]:
        """SIGTERM the process we started; SIGKILL it if it is still there after C{timeout}."""
        if self.ended.called:
            return self.ended
        self.signal(signal.SIGTERM)
        killer = reactor.callLater(timeout, self.signal, signal.SIGKILL)
        self.ended.addBoth(lambda r: (killer.cancel() if killer.active() else None, r)[1])
        return self.ended


def spawn_python(reactor: Any, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Child:
    """Run C{python3 ARGS...} with the repository first on C{PYTHONPATH}."""
    child = Child()
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(env or {})
    argv = [sys.executable, *args]
    reactor.spawnProcess(child, sys.executable, argv, env=environment, path=str(cwd))
    return child


def spawn_twistd(reactor: Any, *args: str, cwd: Path = ROOT) -> Child:
    """Run C{twistd ARGS...} (add C{-n --pidfile= --logfile=-} yourself or use L{twistd_hub})."""
    return spawn_python(reactor, *TWISTD, *args, cwd=cwd)


def twistd_hub(reactor: Any, *hub_args: str, twistd_args: tuple[str, ...] = ()) -> Child:
    """C{twistd -n hub HUB_ARGS...} in the foreground, logging to stdout, no pid file."""
    return spawn_twistd(reactor, "--nodaemon", "--pidfile=", "--logfile=-", *twistd_args, "hub", *hub_args)


async def started_port(child: Child, reactor: Any, timeout: float = 20.0) -> int:
    """The TCP port twistd's site is listening on (from its log)."""
    match = await child.wait_for(SITE_STARTED, reactor, timeout)
    return int(match.group(1))
