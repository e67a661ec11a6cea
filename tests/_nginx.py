"""
Start a real nginx (Debian package) as a WebSocket reverse proxy for tests.

Only 127.0.0.1, a generated config in a temporary directory, and only the
process this module started is ever signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest


def nginx_path() -> str:
    """The nginx binary; a test that needs it fails (never skips) without it."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        pytest.fail("nginx is not installed: the proxy tests need it (scripts/test installs it: apt-get install nginx)")
    return path

DEFAULT_LOCATION = """
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
"""

CONFIG = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
{http_extra}
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
{location}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


@dataclass
class NginxProcess:
    """A running nginx; C{stop()} ends exactly the process that was started."""

    port: int
    directory: str
    process: subprocess.Popen[bytes]
    stopped: bool = field(default=False)

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.directory, "error.log")) as log:
                return log.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_nginx(
    backend_port: int, template: str | None = None, timeout: float = 10.0, http_extra: str = ""
) -> NginxProcess:
    """
    Run nginx on a free 127.0.0.1 port, proxying WebSockets to C{backend_port}.

    @param template: the C{location} block(s), formatted with
        C{backend_port}; default: a WebSocket-upgrading proxy of C{/}.
    @param http_extra: more of the C{http} block (e.g. an C{upstream}), as is.
    """
    nginx = nginx_path()
    directory = tempfile.mkdtemp(prefix="twisted-hub-nginx-")
    port = free_port()
    location = (template or DEFAULT_LOCATION).format(backend_port=backend_port)
    user = "user root;" if os.geteuid() == 0 else ""
    config = CONFIG.format(directory=directory, port=port, location=location, user=user, http_extra=http_extra)
    path = os.path.join(directory, "nginx.conf")
    with open(path, "w") as file:
        file.write(config)
    process = subprocess.Popen(
        [nginx, "-c", path, "-p", directory, "-e", os.path.join(directory, "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running = NginxProcess(port, directory, process)
    try:
        wait_for_port(port, time.monotonic() + timeout)
    except Exception:
        log = running.error_log()
        running.stop()
        raise RuntimeError(f"nginx did not start: {log}") from None
    return running
