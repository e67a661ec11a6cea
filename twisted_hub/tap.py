"""
C{twistd hub}: serve hubs over WebSocket.

    twistd -n hub --port 8080
    twistd -n hub --listen tcp:8080:interface=127.0.0.1 --hub myapp.hubs:ChatHub
    twistd -n hub --config /etc/twisted-hub/hub.toml --log-level debug
    twistd -n hub --port 8080 --static ./site          # your page at /, the hub at /hub
    twistd -n hub --hub myapp.hubs:ChatHub --call-rate 20 --call-timeout 30 --log-calls

Every option can also be given in a TOML file (C{--config}), under the same
name (C{heartbeat-interval = 5}, C{listen = ["tcp:8080"]}); options on the
command line override the file, and a repeatable option given on the command
line replaces the file's list.  Every value is checked while the options are
parsed, so a bad one stops C{twistd} with a usage error naming the option
before anything listens.  See C{docs/deploying.md}.

Where it listens by default is this machine only: C{--port N} (and no
listening option at all, port 8080) listens on 127.0.0.1, so a first
C{twistd hub} is not open to the network; C{--listen tcp:N} listens on
every interface, as Twisted's strports do.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from twisted.application.service import IService
from twisted.internet.error import CannotListenError
from twisted.python import usage

from ._core.heartbeat import HeartbeatConfigurationError, HeartbeatPolicy
from ._ops.loading import DEFAULT_HINT, HintedUsageError, load_hub
from ._support.logging import json_log_observer as json_log_observer  # documented here: twistd --logger twisted_hub.tap...

#: Defaults of the settings that have one.
DEFAULT_PATH = "/hub"
#: The interface C{--port} (and the default listener) binds: this machine only.
DEFAULT_INTERFACE = "127.0.0.1"
DEFAULT_LISTEN = f"tcp:8080:interface={DEFAULT_INTERFACE}"
DEFAULT_LOG_LEVEL = "info"

_REPEATABLE = {
    "listen": "listen", "hub": "hubs", "allowed-origin": "allowed-origins", "allowed-host": "allowed-hosts",
    "static": "static", "filter": "filters",
}
_SINGLE = (
    "port", "path", "heartbeat-interval", "heartbeat-timeout", "max-message-size",
    "log-level", "shutdown-timeout", "drain-delay",
    "max-outgoing-buffer", "max-pending-calls", "max-pending-bytes",
    "handshake-timeout", "max-connections", "max-connections-per-ip", "status-path",
    "redis", "redis-lease", "redis-secret-file", "redis-secret-env", "call-rate", "call-burst", "call-timeout",
    "authenticator", "auth-timeout", "compression-min-size", "compression-window-bits", "workers",
    "resume-window",
)
_FLAGS = ("no-status", "no-ping-fallback", "metrics", "static-listing", "log-calls", "deny-by-default", "compression")


def load_filter(spec: str) -> object:
    """
    Import C{module:name}: a filter object, or a class or function that
    makes one when called without arguments; check it is a filter.
    """
    from ._hubs.filters import FILTER_HOOKS, check_filters

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise usage.UsageError(f"--filter wants module:name, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise usage.UsageError(f"--filter {spec}: cannot import {module_name!r}: {e}") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise usage.UsageError(f"--filter {spec}: module {module_name!r} has no {attribute!r}")
    if isinstance(found, type) or (callable(found) and not any(hasattr(found, hook) for hook in FILTER_HOOKS)):
        try:
            found = found()
        except Exception as e:
            raise usage.UsageError(f"--filter {spec}: calling {attribute} failed: {type(e).__name__}: {e}") from None
    try:
        check_filters([found], f"--filter {spec}")
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    return found


def load_authenticator(spec: str) -> Callable[..., Any]:
    """
    Import C{module:name}: an authenticator (a function or object called
    with L{Credentials<twisted_hub.auth.Credentials>}), or a class, made with no
    arguments (C{JWTAuthenticator} subclasses configured in their C{__init__}).
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise usage.UsageError(f"--authenticator wants module:name, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise usage.UsageError(f"--authenticator {spec}: cannot import {module_name!r}: {e}") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise usage.UsageError(f"--authenticator {spec}: module {module_name!r} has no {attribute!r}")
    if isinstance(found, type):
        try:
            found = found()
        except Exception as e:
            raise usage.UsageError(
                f"--authenticator {spec}: making a {attribute} failed: {type(e).__name__}: {e}"
            ) from None
    if not callable(found):
        raise usage.UsageError(f"--authenticator {spec}: {attribute} is not callable (an authenticator takes Credentials)")
    return cast(Callable[..., Any], found)


def _positive(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise usage.UsageError(f"--{name} must be a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise usage.UsageError(f"--{name} must be a finite number > 0, got {value!r}")
    return number


_SIZE_SUFFIXES = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}


def _size(name: str, value: str) -> int:
    text = value.strip().lower()
    digits = text.rstrip("kmib")
    suffix = text[len(digits):]
    if not digits.isdigit() or suffix not in _SIZE_SUFFIXES:
        raise usage.UsageError(f"--{name} must be a number of bytes (e.g. 1048576, 512KiB, 4MiB), got {value!r}")
    size = int(digits) * _SIZE_SUFFIXES[suffix]
    if size <= 0:
        raise usage.UsageError(f"--{name} must be > 0, got {value!r}")
    return size


def check_listen(description: str) -> str:
    """Parse a strports description without listening; raise a usage error naming C{--listen}."""
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        serverFromString(MemoryReactor(), description)
    except Exception as e:  # ValueError, KeyError, OSError (ssl files), SSL errors...
        if description.split(":", 1)[0].strip().lower() == "ssl":
            problem = _tls_problem(description, e)
            raise HintedUsageError(f"--listen {description!r}: {problem}", TLS_HINT) from None
        raise HintedUsageError(
            f"--listen {description!r}: {e.__class__.__name__}: {e}",
            "e.g. --listen tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/hub.sock",
        ) from None
    return description


#: The hint of a bad C{ssl:} listen description.
TLS_HINT = (
    "ssl: wants privateKey=KEY.pem:certKey=CERT.pem, PEM files (relative paths are from the directory "
    "twistd was started in); see docs/deploying.md, 'TLS without a proxy'"
)


def _tls_problem(description: str, error: Exception) -> str:
    """What is wrong with the key and certificate files of an C{ssl:} description, in words."""
    fields = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", description)[1:]]
    settings = dict(field.split("=", 1) for field in fields if "=" in field)
    key = settings.get("privateKey")
    certificate = settings.get("certKey") or key or "server.pem"
    if key is None:
        if not os.path.exists("server.pem"):
            return "no privateKey= given (and no server.pem in the current directory)"
        key = "server.pem"
    for what, name in (("private key", key), ("certificate", certificate)):
        if not os.path.isfile(name):
            return f"the {what} file {name} does not exist"
        try:
            with open(name, "rb") as f:
                text = f.read()
        except OSError as e:
            return f"cannot read the {what} file {name}: {e.strerror or e}"
        marker = b"PRIVATE KEY-----" if what == "private key" else b"-----BEGIN CERTIFICATE-----"
        if marker not in text:
            missing = "" if "certKey" in settings or what == "private key" else " (give certKey=CERT.pem)"
            return f"{name} holds no PEM {what}{missing}"
    if "not match" in str(error).lower():
        return f"the private key {key} does not belong to the certificate {certificate}"
    return f"{error.__class__.__name__}: {error}"


def _count(name: str, value: str) -> int | None:
    """A whole number >= 0; 0 means no limit (None)."""
    text = str(value).strip()
    if not text.isdigit():
        raise usage.UsageError(f"--{name} must be a whole number >= 0 (0: no limit), got {value!r}")
    return int(text) or None


def _toml_scalar(key: str, value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise usage.UsageError(f"--config {path}: {key} must be a string or a number, got {value!r}")
    return str(value)


def read_config(path: str) -> dict[str, Any]:
    """
    Read a TOML config file into option values (strings, or lists of
    strings for the repeatable options).  Keys are the long option names;
    C{hubs} and C{allowed-origins} are accepted for the lists, and
    underscores for dashes.
    """
    return _read_config(path)[0]


def _read_config(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """L{read_config}, and the key each option was written as in the file (C{hubs}, C{heartbeat_interval})."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"--config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"--config {path}: not valid TOML: {e}") from None
    settings: dict[str, Any] = {}
    written_as: dict[str, str] = {}
    aliases = {
        "hubs": "hub", "allowed-origins": "allowed-origin", "allowed-hosts": "allowed-host", "filters": "filter",
    }
    for raw_key, value in data.items():
        key = raw_key.replace("_", "-")
        key = aliases.get(key, key)
        written_as[key] = raw_key
        if key in _REPEATABLE:
            values = value if isinstance(value, list) else [value]
            settings[key] = [_toml_scalar(raw_key, v, path) for v in values]
        elif key in _SINGLE:
            settings[key] = _toml_scalar(raw_key, value, path)
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise usage.UsageError(f"--config {path}: {raw_key} must be true or false, got {value!r}")
            settings[key] = value
        else:
            known = ", ".join(sorted([*_SINGLE, *_REPEATABLE, *_FLAGS]))
            raise HintedUsageError(f"--config {path}: unknown setting {raw_key!r}", f"the settings: {known}")
    return settings, written_as


class Options(usage.Options):
    """Command-line options of C{twistd hub}."""

    synopsis = "[options]"
    longdesc = (
        "Serve twisted-hub hubs over WebSocket (subprotocol twisted-hub.v1), with a status page on GET / "
        "(--status-path, --no-status). "
        "Options may also come from a TOML file (--config); the command line overrides it."
    )

    optParameters = [
        ["config", "c", None, "TOML file with the same settings (command-line options override it)."],
        ["port", "p", None,
         f"TCP port to listen on, on {DEFAULT_INTERFACE} only (shorthand for --listen tcp:PORT:interface="
         f"{DEFAULT_INTERFACE}; --listen tcp:PORT listens on every interface) [8080]."],
        ["path", None, None, f"URL path of the WebSocket endpoint; hubs are at PATH/<hub name> [{DEFAULT_PATH}]."],
        ["heartbeat-interval", None, None, "Server heartbeat interval in seconds (turns heartbeats on)."],
        ["heartbeat-timeout", None, None, "Server heartbeat timeout in seconds (default 3 x interval; 'none' never)."],
        ["max-message-size", None, None, "Largest incoming message in bytes (suffixes KiB, MiB) [1MiB]."],
        ["max-outgoing-buffer", None, None, "Unread output a client may leave, bytes; then close 4004 [4MiB]."],
        ["max-pending-calls", None, None, "Calls one connection may have running or queued [256]."],
        ["max-pending-bytes", None, None, "Bytes of calls one connection may have running or queued [8MiB]."],
        ["log-level", None, None,
         f"Minimum level of twisted-hub's (and autobahn's) log lines: debug, info, warn, error, critical [{DEFAULT_LOG_LEVEL}]."],
        ["shutdown-timeout", None, None, "Seconds a graceful shutdown may take before connections are dropped [10]."],
        ["drain-delay", None, None,
         "Seconds /health answers 503 before the listeners close at shutdown (behind a load balancer) [0]."],
        ["handshake-timeout", None, None,
         "Seconds from accepting a connection to the end of its WebSocket opening handshake [10]."],
        ["max-connections", None, None, "Connections held at most, open or in their handshake; 0: no limit [10000]."],
        ["max-connections-per-ip", None, None,
         "Connections per IPv4 address / IPv6 /64 at most; 0: no limit (behind a proxy) [256]."],
        ["status-path", None, None, "URL path of the status page [/]."],
        ["redis", None, None, "Serve as one with the other hub processes on this Redis: redis://HOST:PORT/DB (docs/scaling.md)."],
        ["redis-lease", None, None, "Seconds a silent node stays in the others' group counts (needs --redis) [15]."],
        ["redis-secret-file", None, None,
         "File with the secret every node signs its backplane messages with; unsigned ones are refused (needs --redis)."],
        ["redis-secret-env", None, None,
         "Name of the environment variable holding that secret, instead of a file (needs --redis)."],
        ["call-rate", None, None,
         "Calls per second each connection may start; over it: error rate-limited (docs/filters.md) [no limit]."],
        ["call-burst", None, None, "Calls a connection may start at once after a quiet spell (needs --call-rate) [1 s worth]."],
        ["call-timeout", None, None,
         "Seconds a hub call may take; then it is answered with error timeout and cancelled [no limit]."],
        ["authenticator", None, None,
         "Authenticate every connection with module:name, an authenticator or a class making one (docs/auth.md)."],
        ["auth-timeout", None, None, "Seconds the authenticator may take; then 503 (needs --authenticator) [5]."],
        ["workers", None, None,
         "Run N hub worker processes on the same port(s), joined by --redis (Linux; docs/scaling.md) [1 process]."],
        ["resume-window", None, None,
         "Let clients that offer it resume their session after a dropped connection, kept this many seconds "
         "(docs/resumption.md) [off]."],
        ["compression-min-size", None, None, "With --compression: messages shorter than this go uncompressed [1KiB]."],
        ["compression-window-bits", None, None,
         "With --compression: deflate window bits, 9-15, both directions (memory per connection) [12]."],
    ]
    optFlags = [
        ["no-status", None, "Serve no status page (404 there)."],
        ["no-ping-fallback", None,
         "Do not check clients without hub heartbeats with WebSocket pings (docs/heartbeat.md)."],
        ["metrics", None, "Keep Prometheus metrics and serve them on GET /metrics (needs prometheus-client)."],
        ["static-listing", None, "List the files of a --static directory that has no index.html (default: 404)."],
        ["log-calls", None, "Log one line per hub call (namespace twisted_hub.calls): method, outcome, duration."],
        ["deny-by-default", None,
         "Refuse calls to methods that declare no authorization policy, nor their hub (error forbidden)."],
        ["compression", None, "Compress messages with permessage-deflate for clients that offer it (docs/performance.md)."],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["hubs"] = []
        self["allowed-origins"] = []
        self["allowed-hosts"] = []
        self["static"] = []
        self._hub_specs: list[str] = []
        self._filter_specs: list[str] = []

    def opt_version(self) -> None:
        """Print the twisted-hub, Twisted and autobahn versions and exit."""
        from importlib.metadata import version as installed_version

        from twisted import copyright

        from . import __version__

        print(f"twisted-hub {__version__} (Twisted {copyright.version}, autobahn {installed_version('autobahn')})")
        sys.exit(0)

    def opt_listen(self, description: str) -> None:
        """Listen on a strports endpoint (repeatable): tcp:8080, ssl:8443:privateKey=K:certKey=C, unix:PATH."""
        self["listen"].append(description)

    def opt_hub(self, spec: str) -> None:
        """Serve module:Class (module from the current directory, then sys.path) or file.py:Class; repeatable [echo, chat]."""
        self._hub_specs.append(spec)

    def opt_allowed_origin(self, origin: str) -> None:
        """Browser origin allowed to connect (repeatable): https://app.example.com, same-host or *. [same-host]"""
        self["allowed-origins"].append(origin)

    def opt_allowed_host(self, host: str) -> None:
        """Host name the Host header may carry (repeatable): hub.example.com, .example.com, 127.0.0.1 or *. [any]"""
        self["allowed-hosts"].append(host)

    def opt_filter(self, spec: str) -> None:
        """A filter around every hub call, module:name (repeatable; inside --call-rate/--log-calls/--call-timeout)."""
        self._filter_specs.append(spec)

    def opt_static(self, value: str) -> None:
        """Serve the files of a folder beside the hub (repeatable): DIR at /, or PREFIX=DIR (/app=build)."""
        self["static"].append(value)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse and check every option.  Run by C{twistd} (as its C{hub}
        command), a bad one ends twistd with two lines, the error and a hint,
        instead of the whole help text followed by the error; used directly,
        it raises L{usage.UsageError}.
        """
        #: the arguments as given (C{--workers} starts its workers with them)
        self.arguments = list(sys.argv[1:] if options is None else options)
        #: ... and the directory they are relative to
        self.directory = os.getcwd()
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            raise SystemExit(twistd_error_text(e)) from None

    def postOptions(self) -> None:
        self._from_file: dict[str, str] = {}
        try:
            self._post_options()
        except usage.UsageError as e:
            raise self._in_config_file(e) from None

    def _in_config_file(self, error: usage.UsageError) -> usage.UsageError:
        """An error about an option whose value came from the TOML file, told as the file's key and value."""
        message = str(error)
        hint = getattr(error, "hint", DEFAULT_HINT)
        named = re.match(r"--([a-z-]+)", message)
        if named is None or named.group(1) not in self._from_file:
            return error
        rest = message[named.end():]
        if rest.startswith((" ", ":")):
            rest = rest.lstrip(": ")
        else:
            rest = message
        return HintedUsageError(f"{self['config']}: {self._from_file[named.group(1)]}: {rest}", hint)

    def _post_options(self) -> None:
        file_settings, written_as = _read_config(self["config"]) if self["config"] else ({}, {})

        def from_file(name: str) -> Any:
            self._from_file[name] = written_as[name]
            return file_settings[name]
        if self["listen"] or self["port"] is not None:
            # Where to listen is one setting: the command line's replaces the file's.
            file_settings.pop("listen", None)
            file_settings.pop("port", None)
        for name in _SINGLE:
            if self[name] is None and name in file_settings:
                self[name] = from_file(name)
        if not self._hub_specs and "hub" in file_settings:
            self._hub_specs = list(from_file("hub"))
        if not self._filter_specs and "filter" in file_settings:
            self._filter_specs = list(from_file("filter"))
        if not self["allowed-origins"] and "allowed-origin" in file_settings:
            self["allowed-origins"] = list(from_file("allowed-origin"))
        if not self["allowed-hosts"] and "allowed-host" in file_settings:
            self["allowed-hosts"] = list(from_file("allowed-host"))
        if not self["static"] and "static" in file_settings:
            self["static"] = list(from_file("static"))
        for flag in _FLAGS:
            if not self[flag] and flag in file_settings:
                self[flag] = bool(from_file(flag))
        if self["metrics"]:
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                raise usage.UsageError(
                    "--metrics needs prometheus-client: pip install 'twisted-hub[metrics]'"
                ) from None
        if not self["listen"] and "listen" in file_settings:
            self["listen"] = list(from_file("listen"))
        self._check_listen()
        self._check_path()
        self._check_heartbeat()
        self._check_limits()
        self._check_origins()
        self._check_connection_limits()
        self._check_redis()
        self._check_filters()
        self._check_authentication()
        self._check_compression()
        self._check_resume()
        self._check_workers()
        self["hubs"] = [load_hub(spec) for spec in self._hub_specs]
        if not self["hubs"]:
            from .demo import DEMO_HUBS

            self["hubs"] = list(DEMO_HUBS)
        names = [hub_class.hub_name for hub_class in self["hubs"]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise usage.UsageError(f"--hub: two hubs are named {duplicates[0]!r}")
        self._check_static()

    def _check_listen(self) -> None:
        port = self["port"]
        if port is not None:
            port = str(port)
            if not port.isdigit() or not 0 <= int(port) <= 65535:
                raise usage.UsageError(f"--port must be a TCP port number, got {port!r}")
            self["listen"].append(f"tcp:{port}:interface={DEFAULT_INTERFACE}")
        if not self["listen"]:
            self["listen"].append(DEFAULT_LISTEN)
        for description in self["listen"]:
            check_listen(description)

    def _check_path(self) -> None:
        path = self["path"] or DEFAULT_PATH
        if not path.startswith("/"):
            raise usage.UsageError(f"--path must start with '/', got {path!r}")
        if not path.strip("/"):
            raise usage.UsageError("--path must not be '/': the status page is served there")
        if any(c in path for c in "?#% ") or "//" in path.rstrip("/"):
            raise usage.UsageError(f"--path must be a plain path like /hub or /api/hub, got {path!r}")
        self["path"] = "/" + path.strip("/")

    def _check_heartbeat(self) -> None:
        interval = self["heartbeat-interval"]
        timeout = self["heartbeat-timeout"]
        if interval is None and timeout is not None:
            raise usage.UsageError("--heartbeat-timeout needs --heartbeat-interval")
        policy = HeartbeatPolicy()
        if interval is not None:
            seconds = _positive("heartbeat-interval", interval)
            try:
                if timeout is None:
                    policy = HeartbeatPolicy.every(seconds)
                elif timeout.strip().lower() == "none":
                    policy = HeartbeatPolicy.every(seconds, None)
                else:
                    policy = HeartbeatPolicy.every(seconds, _positive("heartbeat-timeout", timeout))
            except HeartbeatConfigurationError as e:
                raise usage.UsageError(f"--heartbeat-interval/--heartbeat-timeout: {e}") from None
        if self["no-ping-fallback"]:
            policy = replace(policy, ping_fallback=False)
        self["heartbeat"] = policy

    def _check_limits(self) -> None:
        from ._twisted.server import (
            DEFAULT_MAX_MESSAGE_SIZE,
            DEFAULT_MAX_OUTGOING_BUFFER,
            DEFAULT_MAX_PENDING_BYTES,
            DEFAULT_MAX_PENDING_CALLS,
        )

        for name, default in (
            ("max-message-size", DEFAULT_MAX_MESSAGE_SIZE),
            ("max-outgoing-buffer", DEFAULT_MAX_OUTGOING_BUFFER),
            ("max-pending-bytes", DEFAULT_MAX_PENDING_BYTES),
        ):
            size = self[name]
            self[name] = default if size is None else _size(name, size)
        calls = self["max-pending-calls"]
        if calls is None:
            self["max-pending-calls"] = DEFAULT_MAX_PENDING_CALLS
        elif not str(calls).strip().isdigit() or int(calls) <= 0:
            raise usage.UsageError(f"--max-pending-calls must be a whole number > 0, got {calls!r}")
        else:
            self["max-pending-calls"] = int(calls)
        timeout = self["shutdown-timeout"]
        from ._ops.service import DEFAULT_SHUTDOWN_TIMEOUT
        from ._support.logging import LOG_LEVELS

        self["shutdown-timeout"] = (
            DEFAULT_SHUTDOWN_TIMEOUT if timeout is None else _positive("shutdown-timeout", timeout)
        )
        delay = self["drain-delay"]
        if delay is None or str(delay).strip() in ("0", "0.0"):
            self["drain-delay"] = 0.0
        else:
            self["drain-delay"] = _positive("drain-delay", delay)
        level = (self["log-level"] or DEFAULT_LOG_LEVEL).strip().lower()
        if level not in LOG_LEVELS:
            raise usage.UsageError(
                f"--log-level must be one of debug, info, warn, error, critical, got {self['log-level']!r}"
            )
        self["log-level"] = level

    def _check_connection_limits(self) -> None:
        from ._core.origin import AllowedHosts
        from ._twisted.limits import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP
        from ._twisted.resource import check_status_path

        timeout = self["handshake-timeout"]
        self["handshake-timeout"] = (
            DEFAULT_HANDSHAKE_TIMEOUT if timeout is None else _positive("handshake-timeout", timeout)
        )
        for name, default in (
            ("max-connections", DEFAULT_MAX_CONNECTIONS), ("max-connections-per-ip", DEFAULT_MAX_CONNECTIONS_PER_IP)
        ):
            self[name] = default if self[name] is None else _count(name, self[name])
        try:
            self["host-policy"] = AllowedHosts(self["allowed-hosts"]) if self["allowed-hosts"] else None
        except ValueError as e:
            raise usage.UsageError(f"--allowed-host: {e}") from None
        # With --static DIR at /, the folder's index.html is the front page and the status page moves to /status.
        default_status = "/status" if any(_static_prefix(v) == "/" for v in self["static"]) else "/"
        try:
            self["status-path"] = check_status_path(self["path"], self["status-path"] or default_status)
        except ValueError as e:
            raise usage.UsageError(f"--status-path: {e}") from None

    def _check_origins(self) -> None:
        from ._core.origin import OriginPolicy

        try:
            self["origin-policy"] = OriginPolicy(self["allowed-origins"])
        except ValueError as e:
            raise usage.UsageError(f"--allowed-origin: {e}") from None


    def _check_static(self) -> None:
        """C{--static}: C{self["static"]} becomes C{[(prefix, absolute folder)]}, checked against the hub's own paths."""
        if not self["static"]:
            return
        from ._ops.files import check_static_mounts, parse_static_option, reserved_paths, static_mounts

        mounts: dict[str, str] = {}
        for value in self["static"]:
            prefix, directory = parse_static_option(str(value))
            normalised = "/" + prefix.strip("/")
            if normalised in mounts:
                raise usage.UsageError(f"--static: two folders at {normalised!r} ({mounts[normalised]!r}, {directory!r})")
            mounts[normalised] = directory
        try:
            self["static"] = static_mounts(mounts)
            from .demo import ChatHub

            reserved = reserved_paths(
                self["path"], None if self["no-status"] else self["status-path"],
                metrics=bool(self["metrics"]), demo=ChatHub in self["hubs"],
            )
            check_static_mounts(self["static"], reserved)
        except ValueError as e:
            raise usage.UsageError(f"--static: {e}") from None

    def _check_filters(self) -> None:
        """
        C{self["filters"]}: the server's filters, outermost first: the rate
        limit, the call log, the call timeout, then each C{--filter} in order.
        """
        from ._hubs.filters import CallLog, CallTimeout, RateLimit

        filters: list[object] = []
        rate, burst = self["call-rate"], self["call-burst"]
        if rate is not None:
            calls_per_second = _positive("call-rate", rate)
            bucket = None if burst is None else _positive("call-burst", burst)
            try:
                filters.append(RateLimit(calls_per_second, bucket))
            except ValueError as e:
                raise usage.UsageError(f"--call-rate/--call-burst: {e}") from None
        elif burst is not None:
            raise usage.UsageError("--call-burst needs --call-rate")
        if self["log-calls"]:
            filters.append(CallLog())
        if self["call-timeout"] is not None:
            filters.append(CallTimeout(_positive("call-timeout", self["call-timeout"])))
        filters.extend(load_filter(spec) for spec in self._filter_specs)
        self["filters"] = filters

    def _check_authentication(self) -> None:
        """C{self["authenticator"]} loaded (or None), C{self["auth-timeout"]} in seconds."""
        spec = self["authenticator"]
        timeout = self["auth-timeout"]
        if spec is None:
            if timeout is not None:
                raise usage.UsageError("--auth-timeout needs --authenticator")
            return
        self["authenticator"] = load_authenticator(str(spec))
        self["auth-timeout"] = 5.0 if timeout is None else _positive("auth-timeout", timeout)
    def _check_compression(self) -> None:
        from ._core.base_error import HubArgumentError
        from ._twisted.compression import CompressionPolicy, check_autobahn_bounds_inflation

        min_size, bits = self["compression-min-size"], self["compression-window-bits"]
        if not self["compression"]:
            if min_size is not None or bits is not None:
                given = "--compression-min-size" if min_size is not None else "--compression-window-bits"
                raise usage.UsageError(f"{given} needs --compression")
            self["compression-policy"] = None
            return
        policy = CompressionPolicy()
        try:
            if min_size is not None:
                policy = replace(policy, min_size=_size("compression-min-size", min_size))
            if bits is not None:
                text = str(bits).strip()
                if not text.isdigit():
                    raise HubArgumentError(f"window bits must be a whole number from 9 to 15, got {bits!r}")
                policy = replace(policy, server_max_window_bits=int(text), client_max_window_bits=int(text))
            check_autobahn_bounds_inflation()
            self["compression-policy"] = policy
        except HubArgumentError as e:
            raise usage.UsageError(f"--compression: {e}") from None

    def _check_resume(self) -> None:
        """C{--resume-window SECONDS}: resumable sessions (docs/resumption.md), kept that long."""
        window = self["resume-window"]
        if window is None:
            self["resume-policy"] = None
            return
        from ._core.resume import ResumePolicy

        self["resume-policy"] = ResumePolicy(window=_positive("resume-window", window))

    def _check_workers(self) -> None:
        """C{--workers N}: a whole number >= 1; more than one needs C{--redis}, Linux and C{tcp:} listeners."""
        count = self["workers"]
        if count is None:
            return
        text = str(count).strip()
        if not text.isdigit() or int(text) < 1:
            raise usage.UsageError(f"--workers must be a whole number >= 1, got {count!r}")
        self["workers"] = int(text)
        from ._ops.workers import WorkersUnavailable, check_platform, tcp_address

        if self["workers"] > 1 and self["redis"] is None:
            raise HintedUsageError(
                f"--workers: {self['workers']} workers need --redis URL: without a backplane each worker would send "
                "clients.all and group messages to its own connections only",
                "start a redis-server and give --redis redis://127.0.0.1:6379/0 (docs/scaling.md, 'Every core')",
            )
        try:
            check_platform()
            for description in self["listen"]:
                tcp_address(description)
        except WorkersUnavailable as e:
            raise usage.UsageError(str(e)) from None

    def _check_redis(self) -> None:
        from ._backplane.wire import read_secret_file, secret_from_environment
        from .redis import DEFAULT_LEASE, parse_redis_url

        url = self["redis"]
        lease = self["redis-lease"]
        secret_file, secret_env = self["redis-secret-file"], self["redis-secret-env"]
        if url is None:
            for name in ("redis-lease", "redis-secret-file", "redis-secret-env"):
                if self[name] is not None:
                    raise usage.UsageError(f"--{name} needs --redis")
            return
        try:
            settings = parse_redis_url(url)
            if settings.tls:
                settings.tls_options()  # the certificate files must be readable now
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None
        self["redis-lease"] = DEFAULT_LEASE if lease is None else _positive("redis-lease", lease)
        if secret_file is not None and secret_env is not None:
            raise usage.UsageError("give either --redis-secret-file or --redis-secret-env")
        try:
            if secret_file is not None:
                read_secret_file(secret_file)
            elif secret_env is not None:
                secret_from_environment(secret_env)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def twistd_error_text(error: usage.UsageError) -> str:
    """What C{twistd hub} prints for a usage error: the error, then a one-line hint."""
    return f"twistd hub: {error}\nhint: {getattr(error, 'hint', DEFAULT_HINT)}"


def _static_prefix(value: str) -> str:
    """The URL prefix of a C{--static [PREFIX=]DIR} value, normalised (C{/} for a bare DIR)."""
    from ._ops.files import parse_static_option

    return "/" + parse_static_option(str(value))[0].strip("/")


def _friendly_listen_failure(error: CannotListenError) -> SystemExit:
    """One line for twistd's user instead of a traceback: which port, why, what to do."""
    reason = error.socketError
    text = getattr(reason, "strerror", None) or str(reason)
    where = f"port {error.port}" + (f" on {error.interface}" if error.interface else "")
    hint = "another process holds it: stop it, or choose another port with --port N / --listen tcp:N"
    if getattr(reason, "errno", None) == errno.EACCES:
        hint = "ports below 1024 need privileges: choose a port of 1024 or above with --port N"
    return SystemExit(f"twistd hub: cannot listen on {where}: {text}; {hint}")


def makeService(options: Options) -> IService:
    """
    Build the service tree for C{twistd hub}: a L{LogLevelService} (our
    lines and autobahn's at C{--log-level}) holding a L{HubService} that listens on every
    C{--listen}.  A port that cannot be
    bound ends twistd with one line that names it (embedders of
    L{HubService} get the exception itself).
    """
    from ._ops.service import HubService
    from ._support.logging import LOG_LEVELS, LogLevelService

    class TwistdHubService(HubService):
        def privilegedStartService(self) -> None:
            try:
                super().privilegedStartService()
            except CannotListenError as e:
                raise _friendly_listen_failure(e) from None

    # The level, passed down; where the log goes is twistd's (--logfile, --syslog, -n, --logger).
    root = LogLevelService(LOG_LEVELS[options["log-level"]])
    from ._ops.workers import WorkerSettings

    worker = WorkerSettings.from_environment()
    if options["workers"] is not None and worker is None:
        _supervisor(options).setServiceParent(root)
        return root
    backplane_options: dict[str, Any] = {}
    if options["redis"] is not None:
        from .redis import RedisBackplane

        backplane_options["backplane"] = RedisBackplane(
            options["redis"], lease=options["redis-lease"],
            secret_file=options["redis-secret-file"], secret_env=options["redis-secret-env"],
        )
    hubs = TwistdHubService(
        options["hubs"],
        options["listen"],
        path=options["path"],
        heartbeat=options["heartbeat"],
        allowed_origins=options["allowed-origins"],
        max_message_size=options["max-message-size"],
        max_outgoing_buffer=options["max-outgoing-buffer"],
        max_pending_calls=options["max-pending-calls"],
        max_pending_bytes=options["max-pending-bytes"],
        shutdown_timeout=options["shutdown-timeout"],
        drain_delay=options["drain-delay"],
        allowed_hosts=options["allowed-hosts"] or None,
        handshake_timeout=options["handshake-timeout"],
        max_connections=options["max-connections"],
        max_connections_per_ip=options["max-connections-per-ip"],
        status_page=not options["no-status"],
        status_path=options["status-path"],
        metrics=bool(options["metrics"]),
        static=dict(options["static"]) or None,
        static_listing=bool(options["static-listing"]),
        filters=options["filters"],
        authenticator=options["authenticator"],
        authentication_timeout=options["auth-timeout"] or 5.0,
        deny_by_default=bool(options["deny-by-default"]),
        compression=options["compression-policy"],
        resume=options["resume-policy"],
        **backplane_options,
    )
    hubs.setServiceParent(root)  # type: ignore[no-untyped-call]
    if worker is not None:
        from ._ops.workers import attach_worker

        attach_worker(worker, hubs, root)
    return root


def _supervisor(options: Options) -> IService:
    """The parent of C{--workers N}: it binds the ports and runs the workers (docs/scaling.md)."""
    from ._ops.workers import WorkerSupervisor, stop_timeout

    class TwistdSupervisor(WorkerSupervisor):
        def privilegedStartService(self) -> None:
            try:
                super().privilegedStartService()
            except CannotListenError as e:
                raise _friendly_listen_failure(e) from None

    twistd_options = options.parent
    reactor = None if twistd_options is None else twistd_options.get("reactor")
    return TwistdSupervisor(
        options["workers"], options["listen"], getattr(options, "arguments", []),
        stop_timeout=stop_timeout(options["shutdown-timeout"], options["drain-delay"]),
        directory=getattr(options, "directory", None),
        twistd_arguments=["--reactor", reactor] if reactor else [],  # workers run the reactor twistd was given
    )
