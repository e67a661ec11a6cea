"""
Which browser origins may open a hub connection.

Browsers send an C{Origin} header with every WebSocket handshake and, unlike
for C{fetch}, do not enforce the same-origin policy on WebSockets: any page
the user visits could open a connection to our hub carrying the user's
cookies (cross-site WebSocket hijacking).  The server has to check the
header itself.

L{OriginPolicy} is the check C{twistd hub} and L{HubService} install by
default: a request without an C{Origin} header (a non-browser client) always
passes; a browser request passes when its origin's host name equals the host
name of the request's C{Host} header ("same host"; ports are not compared,
so a TLS-terminating proxy on another port needs no configuration), or when
the origin is listed explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from .base_error import HubArgumentError

#: The C{--allowed-origin} value that allows every origin.
ANY_ORIGIN = "*"
#: The C{--allowed-origin} value that allows pages served from the same host.
SAME_HOST = "same-host"


def _normalise(origin: str) -> str:
    """C{scheme://host[:port]} in lower case, default ports dropped."""
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()
    try:
        port = parts.port
    except ValueError:
        return origin.strip().lower()
    default = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(parts.scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == default:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def check_origin(value: str) -> str:
    """
    Validate one C{--allowed-origin} value and return it normalised; raise
    C{ValueError} saying what is wrong.
    """
    value = value.strip()
    if value in (ANY_ORIGIN, SAME_HOST):
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubArgumentError(f"an origin looks like https://example.com[:port], got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise HubArgumentError(f"an origin has no path, query or fragment, got {value!r}")
    try:
        _ = parts.port
    except ValueError:
        raise HubArgumentError(f"bad port in origin {value!r}") from None
    return _normalise(value)


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class OriginPolicy:
    """
    A callable C{(request) -> bool} for C{HubServerFactory(allowed_origins=...)}.

    @param origins: exact origins (C{https://app.example.com}), L{SAME_HOST}
        or L{ANY_ORIGIN}.  Empty: same host only.
    """

    def __init__(self, origins: Iterable[str] = ()) -> None:
        values = [check_origin(origin) for origin in origins] or [SAME_HOST]
        self.allow_any = ANY_ORIGIN in values
        self.same_host = SAME_HOST in values
        self.origins = frozenset(v for v in values if v not in (ANY_ORIGIN, SAME_HOST))

    def allows(self, origin: str | None, host_header: str | None) -> bool:
        """True when a request from C{origin} with C{Host: host_header} may connect."""
        if not origin or self.allow_any:
            return True
        if _normalise(origin) in self.origins:
            return True
        if self.same_host and host_header:
            origin_host = urlsplit(origin.strip().lower()).hostname
            return origin_host is not None and origin_host == _host_name(host_header)
        return False

    def __call__(self, request: Any) -> bool:
        headers = getattr(request, "headers", None) or {}
        return self.allows(request.origin, headers.get("host"))

    def describe(self) -> str:
        """One line for the status page and logs."""
        if self.allow_any:
            return "any origin"
        parts = (["same host"] if self.same_host else []) + sorted(self.origins)
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"OriginPolicy({self.describe()!r})"


def check_host(value: str) -> str:
    """
    Validate one C{--allowed-host} value and return it normalised (lower
    case); raise C{ValueError} saying what is wrong.
    """
    host = value.strip().lower()
    if host == ANY_ORIGIN:
        return host
    name = host[1:] if host.startswith(".") else host
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name or any(c in name for c in "/?#@ ") or (":" in name and not _is_ipv6(name)):
        raise HubArgumentError(f"an allowed host is a host name or address without port (app.example.com, "
                         f".example.com, 127.0.0.1, [::1]) or *, got {value!r}")
    return f"[{name}]" if _is_ipv6(name) else host


def _is_ipv6(name: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(name).version == 6
    except ValueError:
        return False


class AllowedHosts:
    """
    The host names a server answers to: a check of the request's C{Host}
    header against a list, as a defence against DNS rebinding.

    A page on C{evil.example} whose name the attacker re-points to your
    server's address is, for the browser, same-origin with a request to
    C{evil.example}: its Origin and Host headers agree, so the same-host
    origin check passes.  Only the Host header (C{evil.example}) tells the
    request apart from one for your own name.

    @param hosts: exact names or addresses (ports are ignored), C{.example.com}
        for C{example.com} and every subdomain, or C{*} for any host.
    """

    def __init__(self, hosts: Iterable[str]) -> None:
        values = [check_host(host) for host in hosts]
        if not values:
            raise HubArgumentError("list at least one allowed host (or '*')")
        self.allow_any = ANY_ORIGIN in values
        self.exact = frozenset(v for v in values if not v.startswith(".") and v != ANY_ORIGIN)
        self.suffixes = tuple(v for v in values if v.startswith("."))

    def allows(self, host_header: str | None) -> bool:
        """True when a request with C{Host: host_header} may be served."""
        if self.allow_any:
            return True
        if not host_header:
            return False
        name = _host_name(host_header).rstrip(".")
        if _is_ipv6(name):
            name = f"[{name}]"
        if name in self.exact:
            return True
        return any(name == suffix[1:] or name.endswith(suffix) for suffix in self.suffixes)

    def describe(self) -> str:
        """One line for logs."""
        return "any host" if self.allow_any else ", ".join(sorted(self.exact) + sorted(self.suffixes))

    def __repr__(self) -> str:
        return f"AllowedHosts({self.describe()!r})"
