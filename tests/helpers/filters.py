"""A hub and a filter for `twistd hub --filter` (tests/test_filters_twistd.py, tests/test_tap.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from twisted_hub import Hub, method
from twisted_hub.filters import HubCall, HubFilter


class Tagged(HubFilter):
    """Wraps each result in C{{"tag": ..., "result": ...}}, and renames C{old_echo} calls to C{echo}."""

    def __init__(self, tag: str = "filtered") -> None:
        self.tag = tag

    def __repr__(self) -> str:
        return f"Tagged({self.tag!r})"

    def on_call(self, call: HubCall, proceed: Any) -> Deferred[Any]:
        if call.method == "old_echo":
            call.method = "echo"
        running: Deferred[Any] = proceed(call)
        return running.addCallback(lambda result: {"tag": self.tag, "result": result})


def make_tagged() -> Tagged:
    """A factory function, as `--filter module:function` accepts."""
    return Tagged("made")


#: a filter object, as `--filter module:name` accepts
TAGGED = Tagged("object")

#: not a filter
NOT_A_FILTER = 42


class FilteredEchoHub(Hub):
    hub_name = "echo"

    @method
    def echo(self, value: Any) -> Any:
        return value

    @method
    def never(self) -> Deferred[None]:
        """Never answers (a call timeout ends it)."""
        return Deferred()
