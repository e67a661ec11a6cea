"""A hub with a stream result and a stream argument, for the resume tests (in-process and under `twistd hub --hub`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from twisted_hub import Hub, method


class StreamHub(Hub):
    hub_name = "streams"

    @method
    def hello(self) -> str:
        return self.connection.id

    @method
    async def ticks(self, count: int) -> AsyncIterator[int]:
        for n in range(count):
            yield n

    @method
    async def collect(self, numbers: AsyncIterator[Any]) -> list[Any]:
        return [n async for n in numbers]
