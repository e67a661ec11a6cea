"""
The hub the conformance suite's live scenarios meet in a real
C{twistd -n hub} (with the demo's C{EchoHub} beside it, so that an unknown
hub name is a 404 and not routed to the only hub):

    twistd -n hub --hub tests.conformance.hub:ConformanceHub --hub twisted_hub.demo:EchoHub
"""

from __future__ import annotations

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

    @method
    def latency(self) -> float:
        """The server's heartbeat latency of this connection (0.0 until the client answered one)."""
        return self.connection.heartbeat.latency
