"""
The deprecations of the public API, in one place (each kept for one release,
then removed; see CHANGELOG.md).

C{reactor=} (replaced by C{clock=}) is deprecated by the Twisted adapters'
L{twisted_hub._support.reactor_keyword}, which imports Twisted.

L{MOVED_NAMES}: the names that left C{twisted_hub}'s top level (types users
receive but never build, the heartbeat presets, authentication, filters and
the Prometheus metrics), still importable from there with a
C{DeprecationWarning} naming the new spelling.

This module imports no Twisted at all (it is part of the sans-IO core): C{twisted_hub/__init__.py}
reads L{MOVED_NAMES} before anything else is loaded.
"""

from __future__ import annotations

import importlib
import warnings

from incremental import Version

#: the release that deprecates the names and keywords below; the next one removes them
API_DEPRECATED = Version("twisted_hub", 0, 1, 0)


def warn_deprecated(what: str, instead: str, stacklevel: int = 3) -> None:
    """
    One C{DeprecationWarning}, worded the same everywhere: C{what} is
    deprecated since twisted-hub 0.1.0; use C{instead}.
    """
    warnings.warn(
        f"{what} is deprecated since twisted-hub {API_DEPRECATED.public()}; use {instead}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def _types(name: str) -> tuple[str, str]:
    return ("twisted_hub.types", name)


def _auth(name: str) -> tuple[str, str]:
    return ("twisted_hub.auth", name)


def _filters(name: str) -> tuple[str, str]:
    return ("twisted_hub.filters", name)


def _metrics(name: str) -> tuple[str, str]:
    return ("twisted_hub.metrics", name)


#: C{twisted_hub.NAME} that moved: NAME -> (module, attribute there).  The
#: value is the very object the new spelling names.
MOVED_NAMES: dict[str, tuple[str, str]] = {
    # the heartbeat presets are HeartbeatPolicy's own attributes
    "PROXY_SAFE": ("twisted_hub", "HeartbeatPolicy.PROXY_SAFE"),
    "FAST_DETECTION": ("twisted_hub", "HeartbeatPolicy.FAST_DETECTION"),
    "MOBILE": ("twisted_hub", "HeartbeatPolicy.MOBILE"),
    # types users receive, annotate with or filter on, but never build
    **{
        name: _types(name)
        for name in (
            "AllowedHosts", "Backplane", "ClientHeartbeatEvent", "ClockOffset", "CloseCode", "ConnectionContext",
            "ConnectionLimits", "DisconnectReason", "HeartbeatConfigurationWarning", "HeartbeatFeature",
            "HubClientFactory", "HubClientProtocol", "HubProxy", "HubServerProtocol", "LocalBackplane",
            "MetadataProvider", "OriginPolicy", "SUBPROTOCOL", "ServerHeartbeatEvent",
        )
    },
    # authentication and authorization
    **{
        name: _auth(name)
        for name in (
            "AuthenticationFailed", "Credentials", "Forbidden", "JWTAuthenticator", "User", "anyone",
            "authenticated", "has_claim", "redacting_log_formatter",
        )
    },
    # filters around hub calls
    **{
        name: _filters(name)
        for name in ("CallLog", "CallTimeout", "ConnectionEvent", "HubCall", "HubFilter", "RateLimit")
    },
    # the Prometheus metrics, the server's and the Python client's
    **{name: _metrics(name) for name in ("ClientMetrics", "HubMetrics")},
}


def moved_name(name: str, warn: bool = True) -> object:
    """
    The object a deprecated C{twisted_hub.NAME} still gives, after a
    C{DeprecationWarning} naming its new spelling (unless C{warn} is false);
    C{AttributeError} for a name that never was there.
    """
    try:
        module_name, attribute = MOVED_NAMES[name]
    except KeyError:
        raise AttributeError(f"module 'twisted_hub' has no attribute {name!r}") from None
    if warn:
        warn_deprecated(f"twisted_hub.{name}", f"{module_name}.{attribute}", stacklevel=4)
    value: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value
