"""
The built-in demo hubs that C{twistd hub} serves when given no C{--hub}.

C{echo}: C{echo(value)} returns its argument, C{add(a, b)} adds numbers,
C{fail(code, message)} answers with a hub error, C{ask(method, *args)} asks
the calling client for a result.  C{chat}: rooms with broadcast.
"""

from __future__ import annotations

from typing import Any

from ._errors import DisconnectReason, HubError
from ._hub import Hub, hub, method


@hub("echo")
class EchoHub(Hub):
    """Answers what it is given; handy for trying a client."""

    @method
    def echo(self, value: Any) -> Any:
        return value

    @method
    def add(self, a: float, b: float) -> float:
        return a + b

    @method
    def fail(self, code: str, message: str = "") -> None:
        raise HubError(code, message)

    @method
    def ask(self, receiver_method: str, *args: Any) -> Any:
        """Call the caller's receiver method and return what it answered."""
        return self.connection.invoke(receiver_method, *args)

    @method
    def whoami(self) -> str:
        return self.connection.id


class ChatReceiver:
    """What chat clients implement."""

    def said(self, room: str, user: str, text: str) -> None: ...

    def joined(self, room: str, user: str) -> None: ...

    def left(self, room: str, user: str) -> None: ...


@hub("chat", receiver=ChatReceiver)
class ChatHub(Hub):
    """Rooms: join, say, leave; every member of a room hears what is said."""

    @method
    def join(self, room: str, user: str) -> int:
        """Join a room as C{user}; returns how many are in it now."""
        rooms: dict[str, str] = self.connection.items.setdefault("rooms", {})
        rooms[room] = user
        self.groups.add(room)
        self.clients.group(room).joined(room, user)
        return self.groups.count(room)

    @method
    def say(self, room: str, text: str) -> int:
        """Say something to a room you joined; returns how many heard it."""
        rooms: dict[str, str] = self.connection.items.get("rooms", {})
        if room not in rooms:
            raise HubError("not-in-room", f"join {room!r} first")
        self.clients.group(room).said(room, rooms[room], text)
        return self.groups.count(room)

    @method
    def leave(self, room: str) -> None:
        rooms: dict[str, str] = self.connection.items.get("rooms", {})
        user = rooms.pop(room, None)
        if user is not None:
            self.groups.remove(room)
            self.clients.group(room).left(room, user)

    @method
    def rooms(self) -> list[str]:
        return sorted(self.groups.joined())

    def on_disconnected(self, reason: DisconnectReason) -> None:
        for room, user in self.connection.items.get("rooms", {}).items():
            self.clients.group(room).left(room, user)


DEMO_HUBS: tuple[type[Hub], ...] = (EchoHub, ChatHub)
