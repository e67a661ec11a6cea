"""
A resumable session moving between nodes, without I/O: L{MovedSession}
(what the node that held it hands to the node the client reached) and
L{ForwardLink} (what the old node does with the output of calls still
running there).  docs/resumption.md, "Across nodes", says how the nodes
agree; the backplane carries the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from .resume import MoveError
from .resume_link import SEQUENCED_KINDS, ResumeLink

__all__ = ["MOVED_SESSION_VERSION", "ForwardLink", "MovedSession", "MoveError"]

#: the layout of L{MovedSession.encode} (a node refuses another layout: the session cannot move)
MOVED_SESSION_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class MovedSession:
    """
    Everything a node needs to go on with a resumable session another node
    held: the hub and connection id, the token record (digests, never the
    secret), both directions' ledgers (L{twisted_hub._core.resume}'s
    C{export} values), the next id of the server's own calls to the client,
    the user it belongs to, and the hub layer's part (C{connection.items},
    its groups).
    """

    hub: str
    connection_id: str
    token: list[Any]
    sent: list[Any]
    received: list[Any]
    calls: list[Any]
    next_call_id: int
    user: str | None
    items: dict[str, Any]
    groups: list[str]

    def encode(self) -> bytes:
        """
        The bytes for the other node.

        @raise MoveError: C{connection.items} holds a value msgpack cannot
            carry (docs/resumption.md: items must be msgpack values to move).
        """
        try:
            data: bytes = msgpack.packb(
                [MOVED_SESSION_VERSION, self.hub, self.connection_id, self.token, self.sent, self.received,
                 self.calls, self.next_call_id, self.user, self.items, self.groups],
                use_bin_type=True,
            )
        except (TypeError, ValueError, OverflowError) as e:
            raise MoveError(f"connection.items cannot move to another node: {e}") from None
        return data

    @classmethod
    def decode(cls, data: bytes) -> MovedSession:
        """
        The session L{encode} gave.

        @raise MoveError: not a moved session of this layout.
        """
        try:
            raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
        except Exception as e:
            raise MoveError(f"a moved session is not msgpack: {e}") from None
        if type(raw) is not list or len(raw) != 11 or raw[0] != MOVED_SESSION_VERSION:  # noqa: E721
            raise MoveError("not a moved session of a layout this node knows")
        _, hub, connection_id, token, sent, received, calls, next_call_id, user, items, groups = raw
        if type(hub) is not str or type(connection_id) is not str:  # noqa: E721
            raise MoveError("a moved session names its hub and connection id as strings")
        if not all(type(part) is list for part in (token, sent, received, calls, groups)):  # noqa: E721
            raise MoveError("a moved session's ledgers and groups are lists")
        if type(next_call_id) is not int or next_call_id < 1:  # noqa: E721
            raise MoveError("a moved session's next call id is a positive integer")
        if user is not None and type(user) is not str:  # noqa: E721
            raise MoveError("a moved session's user is a string or nil")
        if type(items) is not dict or any(type(k) is not str for k in items):  # noqa: E721
            raise MoveError("a moved session's items are a map of strings")
        if any(type(g) is not str for g in groups):  # noqa: E721
            raise MoveError("a moved session's groups are strings")
        return cls(hub, connection_id, token, sent, received, calls, next_call_id, user, items, groups)


class ForwardLink(ResumeLink):
    """
    The L{twisted_hub._core.resume_link.ResumeLink} stand-in of a session
    that moved away while calls of its were still running (or queued) on
    this node: every sequenced message they send the client (their answers,
    receiver calls for the caller) goes to C{forward}, for the node that
    holds the session now, which numbers and sends it.  Nothing is kept here.
    """

    __slots__ = ("forward",)

    def __init__(self, forward: Callable[[bytes], None]) -> None:  # (no ledger: nothing is kept)
        self.forward = forward

    def sent(self, payload: bytes) -> None:
        if payload[1] in SEQUENCED_KINDS:
            self.forward(payload)

    def sent_answer(self, call_id: int, payload: bytes) -> None:
        pass  # (the node that holds the session keeps the answer: it was forwarded by sent)

    def acknowledged(self, received: int) -> None:
        pass

    def acknowledge(self) -> int:
        return 0
