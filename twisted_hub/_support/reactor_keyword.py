"""
The deprecated C{reactor=} keyword of the Twisted adapters: the time source
and timer host is C{clock=} everywhere (as Twisted's C{ClientService(clock=)});
the object given there is also the reactor the default endpoint connects
through and C{HubService}'s listeners bind on.  Where that reactor should
differ, give an C{endpoint=} (clients) or your own C{Site}/port (servers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from incremental import Version

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = ["REACTOR_KEYWORD_DEPRECATED", "clock_or_global_reactor", "reactor_keyword_deprecated"]

_F = TypeVar("_F", bound=Callable[..., object])

#: the release that deprecates C{reactor=}; the next one removes it
REACTOR_KEYWORD_DEPRECATED = Version("twisted_hub", 0, 1, 0)


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
