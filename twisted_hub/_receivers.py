"""
Which method of a client's receiver object the server may call: the one rule
both clients (Twisted and asyncio) and the hub's receiver proxies apply,
written once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["find_receiver_method", "receiver_methods"]


def receiver_methods(interface: type | None) -> frozenset[str] | None:
    """The method names a receiver interface declares (None: anything goes)."""
    if interface is None:
        return None
    return frozenset(
        name
        for name, value in inspect.getmembers(interface)
        if not name.startswith("_") and callable(value)
    )



def find_receiver_method(
    receiver: object | None, name: str, allowed: frozenset[str] | None = None
) -> Callable[..., Any] | None:
    """
    The receiver's method the server's call C{name} reaches, or None: private
    names (leading underscore) never, names outside C{allowed} (the declared
    receiver interface, when there is one) never, and only callables.
    """
    if receiver is None or name.startswith("_"):
        return None
    if allowed is not None and name not in allowed:
        return None
    function = getattr(receiver, name, None)
    return function if callable(function) else None

