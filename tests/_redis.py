"""
A real C{redis-server} for the scale-out tests: on a free 127.0.0.1 port,
persistence off, started and stopped by PID (only the process started
here is ever signalled).  A missing C{redis-server} fails the test, with
the command that installs it: CI must never skip these silently.
"""

from __future__ import annotations

import shutil
import socket
from typing import Any

import pytest

from ._twistd import Child

READY = "Ready to accept connections"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server (.ci/run does it)")
    return path


class RedisServer:
    """One redis-server process on C{port}; L{stop} and L{start} again for a restart."""

    def __init__(self, reactor: Any, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.reactor = reactor
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.child: Child | None = None
        #: more redis-server arguments (C{--option value} pairs)
        self.extra = extra

    async def start(self, timeout: float = 10.0) -> None:
        path = redis_server_path()
        child = Child()
        argv = [
            path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "notice", *self.extra,
        ]
        self.reactor.spawnProcess(child, path, argv, env={})
        self.child = child
        await child.wait_for(READY, self.reactor, timeout)

    async def stop(self) -> None:
        if self.child is not None:
            child, self.child = self.child, None
            await child.stop(self.reactor)


class SentinelServer:
    """A redis-server in Sentinel mode watching the master C{service} at C{master_port} (quorum 1)."""

    def __init__(self, reactor: Any, directory: Any, master_port: int, service: str = "mymaster") -> None:
        self.reactor = reactor
        self.port = free_port()
        self.service = service
        self.config = directory / f"sentinel-{self.port}.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 5000\n"
        )
        self.child: Child | None = None

    async def start(self, timeout: float = 10.0) -> None:
        path = redis_server_path()
        child = Child()
        self.reactor.spawnProcess(child, path, [path, str(self.config), "--sentinel"], env={})
        self.child = child
        await child.wait_for(r"\+monitor master", self.reactor, timeout)

    async def stop(self) -> None:
        if self.child is not None:
            child, self.child = self.child, None
            await child.stop(self.reactor)
