"""
Errors and disconnect reasons shared by the server and the client.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .base_error import TwistedHubError
from .wire import CloseCode, ErrorCode


class HubError(TwistedHubError):
    """
    An error a hub method (or a client receiver) reports to its caller.

    Raise it from a hub method to send exactly this C{code}, C{message} and
    C{detail} (any msgpack-able value) to the caller; the caller's Deferred
    fails with an equal L{HubError}.  Any other exception is reported as
    C{ErrorCode.INTERNAL} without its text, unless the server runs with
    C{debug=True}.
    """

    def __init__(self, code: str, message: str = "", detail: Any = None) -> None:
        super().__init__(code, message, detail)
        self.code = code
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.message else self.code

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, HubError)
            and (self.code, self.message, self.detail)
            == (other.code, other.message, other.detail)
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))


class CallTimeoutError(HubError):
    """A call (or a client-result request) got no answer in time."""

    def __init__(self, message: str = "no answer in time") -> None:
        super().__init__(ErrorCode.TIMEOUT, message)


class DisconnectKind(enum.Enum):
    """Why a connection ended, as seen from one side."""

    #: one side closed it on purpose (close code 1000)
    NORMAL = "normal"
    #: the server is shutting down, or a browser navigated away (1001)
    GOING_AWAY = "going-away"
    #: the server closed this connection on purpose, with a reason (4000)
    KICKED = "kicked"
    #: our own heartbeat got no answer in time: the peer is gone
    TIMED_OUT = "timed-out"
    #: the *peer's* heartbeat timed us out (close code 4001): we were too
    #: slow to answer, or the path dropped our answers
    PEER_TIMED_OUT = "peer-timed-out"
    #: a side sent bytes that are not this protocol (4002, 1003)
    PROTOCOL_ERROR = "protocol-error"
    #: a message was larger than the receiver's limit (1009)
    MESSAGE_TOO_BIG = "message-too-big"
    #: the server dropped a client that did not read its data (4004)
    SLOW_CONSUMER = "slow-consumer"
    #: the opening handshake failed (HTTP refusal, no common subprotocol)
    HANDSHAKE_FAILED = "handshake-failed"
    #: the transport went away without a closing handshake
    CONNECTION_LOST = "connection-lost"
    #: the server closed the connection: its access token expired and no
    #: fresh one came in time (4005, docs/auth.md)
    TOKEN_EXPIRED = "token-expired"


@dataclass(frozen=True, slots=True)
class DisconnectReason:
    """
    How and why a connection ended.

    @ivar kind: the category, for code to branch on.
    @ivar code: the WebSocket close code, if a close frame was exchanged.
    @ivar message: human-readable detail (the kick reason, the protocol
        error, the HTTP refusal ...).
    @ivar locally: True when this side decided to close.
    """

    kind: DisconnectKind
    code: int | None = None
    message: str = ""
    locally: bool = False

    def __str__(self) -> str:
        text = self.kind.value
        if self.message:
            text += f": {self.message}"
        return text


class ConnectionClosedError(HubError):
    """
    A call cannot complete because its connection is closed.

    @ivar reason: why the connection ended (or why there was none).
    @ivar may_have_run: True when the call had been handed to the
        connection before it ended: the peer may have received it, run it,
        and its answer was lost, so the caller cannot tell "not run" from
        "ran" (retry only what is safe to run twice).  False when the call
        was never sent (the connection was not open when it was made).
    """

    def __init__(self, reason: DisconnectReason, *, may_have_run: bool = False) -> None:
        outcome = "; the call may have run" if may_have_run else ""
        super().__init__(ErrorCode.DISCONNECTED, f"connection closed ({reason}){outcome}")
        self.reason = reason
        self.may_have_run = may_have_run


class HandshakeError(TwistedHubError):
    """
    The server refused the WebSocket opening handshake.

    @ivar status: the HTTP status (404 unknown hub, 400 no common
        subprotocol, 403 refused origin or refused by C{on_connecting}).
    """

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"handshake refused ({self.status}): {self.reason}"


class ConnectTimeoutError(HandshakeError):
    """
    Connecting took longer than allowed: the TCP (or TLS) connection, the
    WebSocket upgrade or the hub's WELCOME did not come in time.  The
    connection attempt has been abandoned and its socket closed.

    @ivar stage: what was still missing: C{"connection"}, C{"upgrade"} or
        C{"welcome"}.
    """

    def __init__(self, stage: str, seconds: float) -> None:
        what = {
            "connection": "the TCP connection was not made",
            "upgrade": "the server did not answer the WebSocket upgrade",
            "welcome": "the hub sent no WELCOME",
        }.get(stage, f"the handshake stopped at {stage}")
        super().__init__(None, f"{what} within {seconds:g}s")
        self.stage = stage
        self.seconds = seconds

    def __str__(self) -> str:
        return f"connect timed out: {self.reason}"


def kind_for_close(code: int | None, locally: bool) -> DisconnectKind:
    """Map a WebSocket close code to a L{DisconnectKind} for one side."""
    if code is None:
        return DisconnectKind.CONNECTION_LOST
    if code == CloseCode.HEARTBEAT_TIMEOUT:
        return DisconnectKind.TIMED_OUT if locally else DisconnectKind.PEER_TIMED_OUT
    return _CLOSE_KINDS.get(code, DisconnectKind.NORMAL)


_CLOSE_KINDS = {
    CloseCode.NORMAL: DisconnectKind.NORMAL,
    CloseCode.GOING_AWAY: DisconnectKind.GOING_AWAY,
    CloseCode.UNSUPPORTED_DATA: DisconnectKind.PROTOCOL_ERROR,
    CloseCode.POLICY_VIOLATION: DisconnectKind.PROTOCOL_ERROR,
    CloseCode.PROTOCOL_ERROR: DisconnectKind.PROTOCOL_ERROR,
    1002: DisconnectKind.PROTOCOL_ERROR,
    1007: DisconnectKind.PROTOCOL_ERROR,
    CloseCode.MESSAGE_TOO_BIG: DisconnectKind.MESSAGE_TOO_BIG,
    CloseCode.KICKED: DisconnectKind.KICKED,
    CloseCode.SLOW_CONSUMER: DisconnectKind.SLOW_CONSUMER,
    CloseCode.HANDSHAKE_FAILED: DisconnectKind.HANDSHAKE_FAILED,
    CloseCode.TOKEN_EXPIRED: DisconnectKind.TOKEN_EXPIRED,
    1006: DisconnectKind.CONNECTION_LOST,
}
