"""A hub with a stream result and a stream argument, for the resume tests (in-process and under `twistd hub --hub`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from twisted_hub import Hub, method


class StreamHub(Hub):
    hub_name = "streams"
    #: (in-process only) the counts of the ticks streams whose producer stopped, and who to tell
    stopped: ClassVar[list[int]] = []
    on_stop: ClassVar[list[Callable[[], object]]] = []

    @method
    def hello(self) -> str:
        return self.connection.id

    @method
    async def ticks(self, count: int) -> AsyncIterator[int]:
        try:
            for n in range(count):
                yield n
        finally:
            StreamHub.stopped.append(count)
            for listener in StreamHub.on_stop:
                listener()

    @method
    async def collect(self, numbers: AsyncIterator[Any]) -> list[Any]:
        return [n async for n in numbers]
