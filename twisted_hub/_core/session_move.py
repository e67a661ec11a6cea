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
from typing import TYPE_CHECKING, Any, Final

import msgpack

from .errors import DisconnectKind
from .resume import MoveError
from .resume_link import SEQUENCED_KINDS, ResumeLink
from .wire import CloseCode

if TYPE_CHECKING:
    from .connection import ServerConnection
    from .session_output import SessionOutput
    from .wire import Resume

__all__ = ["MAX_HELD_FRAMES", "MOVED_SESSION_VERSION", "ForwardLink", "MovableSession", "MovedSession", "MoveError"]

#: frames a connection may send while another node answers its RESUME (it should send none)
MAX_HELD_FRAMES: Final = 16

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


class MovableSession:
    """
    What a L{twisted_hub._core.server_session.ServerSession} does to carry
    a session another node held: wait for the claim (frames that arrive
    meanwhile are held), go by the session's connection id, and take the
    hub layer's part (adapters override L{carried} and L{carry}).
    """

    connection_id: str
    core: ServerConnection[Any]
    out: SessionOutput
    #: the RESUME whose session is being claimed from another node; frames wait meanwhile
    claiming: Resume | None = None
    #: frames that arrived while claiming, handled once the claim is answered
    held_frames: list[tuple[bytes, bool]] | None = None

    def receive(self, payload: bytes, is_binary: bool) -> None:
        """One WebSocket message arrived (L{twisted_hub._core.server_session.ServerSession.receive})."""

    def close_with(self, code: int, reason: str, kind: DisconnectKind) -> None:
        """Close with a close code the client understands (the session's)."""

    def hold(self, payload: bytes, is_binary: bool) -> None:
        """
        A frame arrived while the claim is answered: it waits (a client sends
        nothing between RESUME and the answer, docs/protocol.md 10.5; more
        than L{MAX_HELD_FRAMES} is a protocol error).
        """
        held = self.held_frames
        if held is None:
            held = self.held_frames = []
        if len(held) >= MAX_HELD_FRAMES:
            self.close_with(CloseCode.PROTOCOL_ERROR, "messages after RESUME before its answer", DisconnectKind.PROTOCOL_ERROR)
            return
        held.append((payload, is_binary))

    def release_held(self) -> None:
        """The claim was answered: handle the frames that arrived meanwhile, in order."""
        held, self.held_frames = self.held_frames, None
        for payload, is_binary in held or ():
            self.receive(payload, is_binary)

    def rename(self, connection_id: str) -> None:
        """This connection carries a session another node handed over: it goes by the session's id."""
        self.connection_id = self.core.connection_id = self.out.connection_id = connection_id

    def carried(self) -> tuple[dict[str, Any], list[str]]:
        """What the hub layer carries to another node: C{connection.items} and the groups (the adapter's)."""
        return {}, []

    def carry(self, items: dict[str, Any], groups: list[str]) -> None:
        """Take over what L{carried} gave on the other node (the adapter's)."""
