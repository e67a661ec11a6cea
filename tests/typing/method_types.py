"""Checked by mypy (tests/test_typing.py), not run: @method keeps the decorated function's type."""

from typing import assert_type

from twisted_hub import Hub, method
from twisted_hub.filters import RateLimit


class Typed(Hub):
    @method
    def add(self, a: int, b: int) -> int:
        return a + b

    @method("sum")
    def total(self, *numbers: int) -> int:
        return sum(numbers)

    @method(filters=[RateLimit(1)], call_timeout=5)
    def limited(self, text: str) -> str:
        return text


def check(hub: Typed) -> None:
    assert_type(hub.add(1, 2), int)
    assert_type(hub.total(1, 2, 3), int)
    assert_type(hub.limited("x"), str)
    hub.add("one", 2)  # type: ignore[arg-type]  # the checker must reject this (warn_unused_ignores proves it does)
