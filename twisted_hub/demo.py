"""
The built-in demo hubs that C{twistd hub} serves when given no C{--hub}.

C{echo}: C{echo(value)} returns its argument, C{add(a, b)} adds numbers,
C{fail(code, message)} answers with a hub error, C{ask(method, *args)} asks
the calling client for a result.  C{chat}: rooms with broadcast, and who
is in them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._core.errors import DisconnectReason, HubError
from ._hubs.hub import Hub, hub, method


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

    #: The rooms (room -> name) of every open chat connection of this process,
    #: by connection id: how L{members} names the ids of a group.  Connection
    #: ids are unique in a process, so servers sharing it do not mix.
    _rooms_by_connection: ClassVar[dict[str, dict[str, str]]] = {}

    @method
    def join(self, room: str, user: str) -> int:
        """Join a room as C{user}; returns how many are in it now."""
        rooms: dict[str, str] = self.connection.items.setdefault("rooms", {})
        before = rooms.get(room)
        if before == user:  # joined already: the others heard it then
            return self.groups.count(room)
        rooms[room] = user
        if before is not None:  # a new name in the same room: the old one leaves
            self.clients.group(room).left(room, before)
        self.groups.add(room)
        if self.connection.open:  # (a closed connection joins nothing, and is not indexed)
            ChatHub._rooms_by_connection[self.connection.id] = rooms
        self.clients.group(room).joined(room, user)
        return self.groups.count(room)

    @method
    def members(self, room: str) -> list[str]:
        """
        The names in a room, in joining order (a name twice if two
        connections use it).  With a backplane, members held by other
        processes are listed as C{"(elsewhere)"}: their names stay there.
        """
        index = ChatHub._rooms_by_connection
        return [index.get(member, {}).get(room, "(elsewhere)") for member in self.groups.members(room)]

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
        """Leave a room; the others hear C{left(room, user)}."""
        rooms: dict[str, str] = self.connection.items.get("rooms", {})
        user = rooms.pop(room, None)
        if not rooms:
            ChatHub._rooms_by_connection.pop(self.connection.id, None)
        if user is not None:
            self.groups.remove(room)
            self.clients.group(room).left(room, user)

    @method
    def rooms(self) -> list[str]:
        return sorted(self.groups.joined())

    def on_disconnected(self, reason: DisconnectReason) -> None:
        ChatHub._rooms_by_connection.pop(self.connection.id, None)
        for room, user in self.connection.items.get("rooms", {}).items():
            self.clients.group(room).left(room, user)


DEMO_HUBS: tuple[type[Hub], ...] = (EchoHub, ChatHub)
