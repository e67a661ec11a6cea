"""
The hub the conformance suite's live scenarios meet in a real
C{twistd -n hub} (with the demo's C{EchoHub} beside it, so that an unknown
hub name is a 404 and not routed to the only hub):

    twistd -n hub --hub tests.conformance.hub:ConformanceHub --hub twisted_hub.demo:EchoHub
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from twisted_hub import Hub, HubError, RefuseConnection, heartbeat, hub, method


@heartbeat(interval=0.25, timeout=30)
@hub("conformance")
class ConformanceHub(Hub):
    """What a client must report as the real server does it; it beats every 0.25 s."""

    def on_connecting(self, request: Any) -> None:
        if request.params.get("refuse"):
            raise RefuseConnection(403, "refused by on_connecting")

    @method
    def echo(self, value: Any) -> Any:
        return value

    @method
    def fail(self, code: str, message: str, detail: Any = None) -> None:
        """Answer with this hub error."""
        raise HubError(code, message, detail)

    @method
    def count(self, n: int) -> int:
        """Declares an int: anything else is invalid-arguments."""
        return n + 1

    @method
    def ask(self, receiver_method: str, *args: Any) -> Any:
        """The caller's client result of C{receiver_method(*args)} (or its error)."""
        return self.connection.invoke(receiver_method, *args)

    @method
    def hear(self, *args: Any) -> None:
        """Call the caller's receiver method C{said(*args)}."""
        self.clients.caller.said(*args)

    # -- streams (docs/streams.md); this connection's producers count in stream_stats

    @method
    async def numbers(self, n: int, fail_after: int = -1) -> AsyncIterator[int]:
        """0 .. n-1 (forever when n < 0); fails with HubError "gave-up" after C{fail_after} items."""
        stats = self._stream_stats()
        try:
            i = 0
            while n < 0 or i < n:
                if i == fail_after:
                    raise HubError("gave-up", f"after {i} items", {"at": i})
                stats["generated"] += 1
                yield i
                i += 1
        finally:
            stats["finally"] += 1

    @method
    def stream_stats(self) -> dict[str, int]:
        """How many items this connection's streams generated, and how many producers' finally ran."""
        return dict(self._stream_stats())

    @method
    async def total(self, numbers: AsyncIterator[int]) -> int:
        """The sum of the caller's stream argument."""
        result = 0
        async for n in numbers:
            result += n
        return result

    @method
    async def first(self, numbers: AsyncIterator[int]) -> int:
        """The first item of the caller's stream argument; the rest is not read (the server cancels it)."""
        async for n in numbers:
            return n
        return -1

    def _stream_stats(self) -> dict[str, int]:
        stats: dict[str, int] | None = getattr(self, "_stats", None)
        if stats is None:
            stats = self._stats = {"generated": 0, "finally": 0}
        return stats

    @method
    def latency(self) -> float:
        """The server's heartbeat latency of this connection (0.0 until the client answered one)."""
        return self.connection.heartbeat.latency
