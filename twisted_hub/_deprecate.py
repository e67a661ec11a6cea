"""
The deprecations of the public API, in one place (each kept for one release,
then removed; see CHANGELOG.md).

C{reactor=}: the time source and timer host is C{clock=} everywhere (as
Twisted's C{ClientService(clock=)}); the object given there is also the
reactor the default endpoint connects through and C{HubService}'s listeners
bind on.  Where that reactor should differ, give an C{endpoint=} (clients) or
your own C{Site}/port (servers).

L{MOVED_NAMES}: the names that left C{twisted_hub}'s top level (types users
receive but never build, the heartbeat presets, authentication and filters),
still importable from there with a C{DeprecationWarning} naming the new
spelling.

This module imports no Twisted at import time: C{twisted_hub/__init__.py}
reads L{MOVED_NAMES} before anything else is loaded.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from incremental import Version

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

_F = TypeVar("_F", bound=Callable[..., object])

#: the release that deprecates C{reactor=}; the next one removes it
REACTOR_KEYWORD_DEPRECATED = Version("twisted_hub", 0, 1, 0)
#: the release that deprecates the names and keywords below; the next one removes them
API_DEPRECATED = Version("twisted_hub", 0, 1, 0)


def reactor_keyword_deprecated(function: _F) -> _F:
    """Warn (C{DeprecationWarning}) when C{function} is given C{reactor=}: C{clock=} replaces it."""
    from twisted.python.deprecate import deprecatedKeywordParameter

    return deprecatedKeywordParameter(REACTOR_KEYWORD_DEPRECATED, "reactor", "clock")(function)


def clock_or_global_reactor(clock: IReactorTime | None, reactor: IReactorTime | None) -> IReactorTime:
    """
    The clock a client keeps time (and connects) on: C{clock}, else the
    deprecated C{reactor=} (which warned), else the global reactor, imported
    only now.
    """
    if clock is None:
        clock = reactor
    if clock is None:
        from twisted.internet import reactor as global_reactor

        clock = cast("IReactorTime", global_reactor)
    return clock


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


#: C{twisted_hub.NAME} that moved: NAME -> (module, attribute there).  The
#: value is the very object the new spelling names.
MOVED_NAMES: dict[str, tuple[str, str]] = {
    # the heartbeat presets are HeartbeatPolicy's own attributes
    "PROXY_SAFE": ("twisted_hub", "HeartbeatPolicy.PROXY_SAFE"),
    "FAST_DETECTION": ("twisted_hub", "HeartbeatPolicy.FAST_DETECTION"),
    "MOBILE": ("twisted_hub", "HeartbeatPolicy.MOBILE"),
    # types users receive or annotate with, but never build
    **{
        name: _types(name)
        for name in (
            "AllowedHosts", "Backplane", "ClientHeartbeatEvent", "ClockOffset", "ConnectionContext",
            "ConnectionLimits", "DisconnectReason", "HeartbeatFeature", "HubClientFactory", "HubClientProtocol",
            "HubProxy", "HubServerProtocol", "LocalBackplane", "MetadataProvider", "SUBPROTOCOL",
            "ServerHeartbeatEvent",
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
