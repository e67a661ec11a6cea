"""
A hub for the JavaScript client's integration tests (js/test/integration),
served with ``twistd hub --hub tests.helpers.js_hubs:ControlHub``: it lets a
client ask to be kicked, to get a result larger than its announced ``max``,
be refused at the handshake (``?mode=refuse``), and see what Python made of
the values it sent (``describe``).
"""

from __future__ import annotations

from typing import Any

from twisted_hub import Hub, RefuseConnection, hub, method


@hub("control")
class ControlHub(Hub):
    """Server behaviours a client must report correctly."""

    def on_connecting(self, request: Any) -> None:
        if request.params.get("mode", [""])[0] == "refuse":
            raise RefuseConnection(401, "who are you")

    @method
    def kick_me(self, reason: str) -> None:
        """Close this connection with code 4000 and C{reason}."""
        self.connection.kick(reason)

    @method
    def blob(self, size: int) -> bytes:
        """C{size} bytes: over the client's announced C{max}, the server answers C{internal} instead."""
        return b"x" * size

    @method
    def describe(self, *args: Any, **kwargs: Any) -> str:
        """C{repr} of the arguments as the hub got them: which Python type each JavaScript value became."""
        return repr((args, kwargs))
