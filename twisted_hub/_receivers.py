"""
Which method of a client's receiver object the server may call: the one rule
both clients (Twisted and asyncio) apply, written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
