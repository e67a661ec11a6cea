"""
How a scenario's expected outcome is compared with what a client
observed: a dict expects a subset of the keys (recursively), a list its
exact items, a L{Matcher} whatever it says, anything else equality.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Between", "Integer", "Length", "Matcher", "NonEmpty", "OneOf", "StartsWith", "mismatches"]


class Matcher:
    """A value that accepts more than one observed value."""

    def matches(self, value: Any) -> bool:
        raise NotImplementedError


class Between(Matcher):
    """A number from C{low} to C{high}, inclusive."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def matches(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def __repr__(self) -> str:
        return f"a number in [{self.low}, {self.high}]"


class Length(Matcher):
    """A list of C{count} items."""

    def __init__(self, count: int) -> None:
        self.count = count

    def matches(self, value: Any) -> bool:
        return isinstance(value, list) and len(value) == self.count

    def __repr__(self) -> str:
        return f"a list of {self.count}"


class NonEmpty(Matcher):
    """A non-empty string."""

    def matches(self, value: Any) -> bool:
        return isinstance(value, str) and value != ""

    def __repr__(self) -> str:
        return "a non-empty string"


class Integer(Matcher):
    """Any integer (not a boolean)."""

    def matches(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def __repr__(self) -> str:
        return "an integer"


class StartsWith(Matcher):
    """A list whose first items match these (more may follow)."""

    def __init__(self, *items: Any) -> None:
        self.items = list(items)

    def matches(self, value: Any) -> bool:
        return isinstance(value, list) and not mismatches(self.items, value[: len(self.items)])

    def __repr__(self) -> str:
        return f"a list starting with {self.items!r}"


class OneOf(Matcher):
    """One of these values."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def matches(self, value: Any) -> bool:
        return any(not mismatches(expected, value) for expected in self.values)

    def __repr__(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


def mismatches(expected: Any, observed: Any, path: str = "") -> list[str]:
    """Where C{observed} differs from C{expected}, one line each (empty: it matches)."""
    where = path or "outcome"
    if isinstance(expected, Matcher):
        return [] if expected.matches(observed) else [f"{where}: expected {expected!r}, got {observed!r}"]
    if isinstance(expected, dict):
        if not isinstance(observed, dict):
            return [f"{where}: expected a dict, got {observed!r}"]
        found: list[str] = []
        for key, value in expected.items():
            if key not in observed:
                found.append(f"{where}.{key}: missing (expected {value!r})")
            else:
                found.extend(mismatches(value, observed[key], f"{where}.{key}"))
        return found
    if isinstance(expected, list):
        if not isinstance(observed, list) or len(observed) != len(expected):
            return [f"{where}: expected {expected!r}, got {_short(observed)}"]
        return [line for i, (e, o) in enumerate(zip(expected, observed)) for line in mismatches(e, o, f"{where}[{i}]")]
    if type(expected) is bool or type(observed) is bool:
        same = type(expected) is type(observed) and expected == observed
    else:
        same = expected == observed
    return [] if same else [f"{where}: expected {expected!r}, got {_short(observed)}"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."
