"""
The twisted-hub wire format, version 1: msgpack arrays in binary WebSocket frames.

Every message is one msgpack array whose first element is its kind (a small
integer).  A frame carries one or more messages back to back; a receiver reads
msgpack values until the frame is used up.  This module only turns bytes into
message objects and back: no I/O, no time, no state.  ``docs/protocol.md`` is
the normative description; ``tests/test_wire.py`` checks its hex examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import msgpack

from .base_error import TwistedHubError

#: The WebSocket subprotocol of this wire format version.
SUBPROTOCOL = "twisted-hub.v1"
#: Every subprotocol this implementation speaks, best first.
SUPPORTED_SUBPROTOCOLS = (SUBPROTOCOL,)

#: Capability: the peer sends/answers application heartbeats (kinds 9-12).
CAP_HEARTBEAT = "heartbeat"
#: Capability: the peer accepts several messages in one frame.
CAP_BATCH = "batch"
#: Capability: the peer takes fresh access tokens over the open connection
#: (kinds 13 and 14; docs/auth.md).  A server announces it when it
#: authenticates its clients; a client when it can hand over fresh tokens.
CAP_TOKEN_REFRESH = "token-refresh"
#: Capability: the peer numbers its hub messages, acknowledges the peer's and
#: can resume a session over a new connection (kinds 20-24; docs/protocol.md
#: section 10, docs/resumption.md).  Not announced yet: the sessions do not
#: implement it (the codec and the core units are built; the integration is
#: the next step).
CAP_RESUME = "resume"
#: Capability: the peer speaks streams with credit-based flow control (kinds
#: 15-19, INVOKE's trailing stream declarations; docs/streams.md).
CAP_STREAM = "stream"
OUR_CAPABILITIES = (CAP_HEARTBEAT, CAP_BATCH, CAP_STREAM)



def to_us(seconds: float) -> int:
    """Seconds to whole microseconds, as heartbeats carry time."""
    return int(seconds * 1_000_000)

class ProtocolError(TwistedHubError):
    """
    The peer sent something that is not a valid message of this protocol.

    The connection that produced it is closed with
    L{CloseCode.PROTOCOL_ERROR}; no other connection is affected.
    """


class TooManyMessagesError(ProtocolError):
    """
    A frame holds more messages than the receiver accepts in one frame.

    Detected before any message of the frame is handled (none of them run);
    the server closes the connection with L{CloseCode.POLICY_VIOLATION}.
    """


#: Senders put at most this many messages in one frame (a batch is split);
#: receivers accept at least this many (docs/protocol.md, section 1.2).
BATCH_MESSAGES = 256


class MessageKind:
    """The first element of every message array."""

    HELLO: Final = 0
    WELCOME: Final = 1
    INVOKE: Final = 2
    NOTIFY: Final = 3
    RESULT: Final = 4
    ERROR: Final = 5
    RECEIVER_CALL: Final = 6
    CLIENT_INVOKE: Final = 7
    CLOSE: Final = 8
    SERVER_HEARTBEAT: Final = 9
    SERVER_HEARTBEAT_ACK: Final = 10
    CLIENT_HEARTBEAT: Final = 11
    CLIENT_HEARTBEAT_ACK: Final = 12
    TOKEN: Final = 13
    TOKEN_RESULT: Final = 14
    STREAM_INVOKE: Final = 15
    STREAM_ITEM: Final = 16
    STREAM_END: Final = 17
    STREAM_CREDIT: Final = 18
    STREAM_CANCEL: Final = 19
    SESSION: Final = 20
    RESUME: Final = 21
    RESUMED: Final = 22
    RESUME_REFUSED: Final = 23
    ACK: Final = 24


class CloseCode:
    """
    WebSocket close codes used by twisted-hub.

    1000-1011 are RFC 6455 codes; 4000-4099 are ours (the RFC leaves
    4000-4999 to applications).

    Plain C{int} constants (C{Final}), not an C{IntEnum}: autobahn's
    C{sendClose} refuses any close code whose type is not exactly C{int}, so
    an enum member would break C{protocol.sendClose(CloseCode.KICKED)}.
    """

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    UNSUPPORTED_DATA: Final = 1003  # a text frame
    POLICY_VIOLATION: Final = 1008  # more messages in one frame than the receiver accepts
    MESSAGE_TOO_BIG: Final = 1009
    INTERNAL_ERROR: Final = 1011
    KICKED: Final = 4000
    HEARTBEAT_TIMEOUT: Final = 4001
    PROTOCOL_ERROR: Final = 4002
    HANDSHAKE_FAILED: Final = 4003
    SLOW_CONSUMER: Final = 4004
    TOKEN_EXPIRED: Final = 4005
    #: the session of this connection was resumed over another connection
    #: (capability C{resume}; docs/protocol.md section 10)
    SESSION_MOVED: Final = 4006


#: Close reasons sent with 4001: a hub heartbeat timed out (either side), or
#: the server's WebSocket pings to a client without hub heartbeats did.
HEARTBEAT_TIMEOUT_REASON = "heartbeat timeout"
PING_TIMEOUT_REASON = "websocket ping timeout"
#: Close reason sent with 4005: the connection's access token expired and no fresh one came.
TOKEN_EXPIRED_REASON = "token expired"


def close_reason_bytes(reason: str) -> bytes:
    """
    A close reason as UTF-8 that fits a WebSocket close frame (123 bytes),
    cut at a character boundary: a split character would make the peer
    reject the close frame as invalid UTF-8 and lose the reason.
    """
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")


class ErrorCode:
    """The C{code} field of error responses sent by the library itself."""

    INTERNAL: Final = "internal"
    UNKNOWN_METHOD: Final = "unknown-method"
    INVALID_ARGUMENTS: Final = "invalid-arguments"
    TOO_MANY_PENDING: Final = "too-many-pending"
    #: refused by the C{RateLimit} filter: the connection is over its call rate
    RATE_LIMITED: Final = "rate-limited"
    TIMEOUT: Final = "timeout"
    DISCONNECTED: Final = "disconnected"
    #: the caller's user may not call this method (an authorization policy said no)
    FORBIDDEN: Final = "forbidden"
    #: a fresh access token was refused: it is not valid (docs/auth.md)
    UNAUTHENTICATED: Final = "unauthenticated"
    #: capability C{resume}: a call seen before on the session whose answer
    #: is no longer kept (or was lost with a node); it ran at most once and is
    #: not run again (docs/protocol.md 10.6)
    DUPLICATE_CALL: Final = "duplicate-call"
    #: a stream was asked of a method that returned a value, or a value of one that returned a stream
    STREAM_MISMATCH: Final = "stream-mismatch"


@dataclass(slots=True)
class Hello:
    """First message from a client: what it supports."""

    kind: ClassVar[int] = MessageKind.HELLO
    capabilities: list[str] = field(default_factory=list)
    #: the largest message the client accepts, bytes (None: not announced)
    max_message_size: int | None = None

    def fields(self) -> list[Any]:
        info: dict[str, Any] = {"caps": self.capabilities}
        if self.max_message_size is not None:
            info["max"] = self.max_message_size
        return [self.kind, info]


@dataclass(slots=True)
class Welcome:
    """First message from a server: what it supports and how it beats."""

    kind: ClassVar[int] = MessageKind.WELCOME
    capabilities: list[str] = field(default_factory=list)
    connection_id: str = ""
    #: server heartbeat interval in seconds, or None when the server sends none
    heartbeat_interval: float | None = None
    #: server heartbeat timeout in seconds, or None (never disconnects)
    heartbeat_timeout: float | None = None
    #: the largest message the server accepts, bytes (None: not announced)
    max_message_size: int | None = None
    #: seconds until the connection's access token expires (None: it does not)
    expires_in: float | None = None

    def fields(self) -> list[Any]:
        info: dict[str, Any] = {"caps": self.capabilities, "id": self.connection_id}
        if self.heartbeat_interval is not None:
            info["hb"] = [self.heartbeat_interval, self.heartbeat_timeout]
        if self.max_message_size is not None:
            info["max"] = self.max_message_size
        if self.expires_in is not None:
            info["expires_in"] = self.expires_in
        return [self.kind, info]


@dataclass(slots=True)
class _Request:
    """A call that wants an answer: C{[kind, call_id, method, args(, kwargs)]}."""

    kind: ClassVar[int]
    call_id: int
    method: str
    args: list[Any]
    kwargs: dict[str, Any] | None = None

    def fields(self) -> list[Any]:
        if self.kwargs:
            return [self.kind, self.call_id, self.method, self.args, self.kwargs]
        return [self.kind, self.call_id, self.method, self.args]


@dataclass(slots=True)
class _Call:
    """A call that wants no answer: C{[kind, method, args(, kwargs)]}."""

    kind: ClassVar[int]
    method: str
    args: list[Any]
    kwargs: dict[str, Any] | None = None

    def fields(self) -> list[Any]:
        if self.kwargs:
            return [self.kind, self.method, self.args, self.kwargs]
        return [self.kind, self.method, self.args]


@dataclass(slots=True)
class Invoke(_Request):
    """
    Client calls a hub method and wants its result.  C{streams} (capability
    C{stream}): the arguments that are client-to-server streams, as
    C{[where, stream_id]} pairs (C{where}: an index into C{args} or a key of
    C{kwargs}, whose value on the wire is nil).
    """

    kind: ClassVar[int] = MessageKind.INVOKE
    streams: list[list[Any]] | None = None

    def fields(self) -> list[Any]:
        if self.streams:
            return [self.kind, self.call_id, self.method, self.args, self.kwargs or None, self.streams]
        return _Request.fields(self)


@dataclass(slots=True)
class StreamInvoke(Invoke):
    """
    Client calls a hub method that answers with a stream (capability
    C{stream}): C{credit} is the first credit the client grants, in items.
    """

    kind: ClassVar[int] = MessageKind.STREAM_INVOKE
    credit: int = 1

    def fields(self) -> list[Any]:
        fields = [self.kind, self.call_id, self.method, self.args, self.kwargs or None, self.credit]
        if self.streams:
            fields.append(self.streams)
        return fields


@dataclass(slots=True)
class StreamItem:
    """One item of a stream, from its producer."""

    kind: ClassVar[int] = MessageKind.STREAM_ITEM
    stream_id: int
    item: Any

    def fields(self) -> list[Any]:
        return [self.kind, self.stream_id, self.item]


@dataclass(slots=True)
class StreamEnd:
    """The producer's last word on a stream: done (C{code} None) or failed."""

    kind: ClassVar[int] = MessageKind.STREAM_END
    stream_id: int
    code: str | None = None
    message: str = ""
    detail: Any = None

    def fields(self) -> list[Any]:
        if self.code is None:
            return [self.kind, self.stream_id]
        return [self.kind, self.stream_id, self.code, self.message, self.detail]


@dataclass(slots=True)
class StreamCredit:
    """The consumer lets the producer send C{credit} more items."""

    kind: ClassVar[int] = MessageKind.STREAM_CREDIT
    stream_id: int
    credit: int

    def fields(self) -> list[Any]:
        return [self.kind, self.stream_id, self.credit]


@dataclass(slots=True)
class StreamCancel:
    """The consumer wants no more items: the producer stops."""

    kind: ClassVar[int] = MessageKind.STREAM_CANCEL
    stream_id: int

    def fields(self) -> list[Any]:
        return [self.kind, self.stream_id]


@dataclass(slots=True)
class Notify(_Call):
    """Client calls a hub method and wants no answer (fire-and-forget)."""

    kind: ClassVar[int] = MessageKind.NOTIFY


@dataclass(slots=True)
class Result:
    """Successful answer to an L{Invoke} or a L{ClientInvoke}."""

    kind: ClassVar[int] = MessageKind.RESULT
    call_id: int
    value: Any

    def fields(self) -> list[Any]:
        return [self.kind, self.call_id, self.value]


@dataclass(slots=True)
class Error:
    """Failed answer to an L{Invoke} or a L{ClientInvoke}."""

    kind: ClassVar[int] = MessageKind.ERROR
    call_id: int
    code: str
    message: str
    detail: Any = None

    def fields(self) -> list[Any]:
        return [self.kind, self.call_id, self.code, self.message, self.detail]


@dataclass(slots=True)
class ReceiverCall(_Call):
    """Server calls a client receiver method; no answer."""

    kind: ClassVar[int] = MessageKind.RECEIVER_CALL


@dataclass(slots=True)
class ClientInvoke(_Request):
    """Server calls a client receiver method and wants its return value."""

    kind: ClassVar[int] = MessageKind.CLIENT_INVOKE


@dataclass(slots=True)
class Close:
    """The sender is about to close the WebSocket; here is why."""

    kind: ClassVar[int] = MessageKind.CLOSE
    code: int
    reason: str

    def fields(self) -> list[Any]:
        return [self.kind, self.code, self.reason]


@dataclass(slots=True)
class ServerHeartbeat:
    """Server heartbeat: sequence, server UTC time in microseconds, metadata."""

    kind: ClassVar[int] = MessageKind.SERVER_HEARTBEAT
    sequence: int
    server_time_us: int
    metadata: bytes | None = None

    def fields(self) -> list[Any]:
        return [self.kind, self.sequence, self.server_time_us, self.metadata]


@dataclass(slots=True)
class ServerHeartbeatAck:
    """Client's answer to a server heartbeat."""

    kind: ClassVar[int] = MessageKind.SERVER_HEARTBEAT_ACK
    sequence: int
    #: capability C{resume}: the last sequenced message the client received
    ack: int | None = None

    def fields(self) -> list[Any]:
        if self.ack is not None:
            return [self.kind, self.sequence, self.ack]
        return [self.kind, self.sequence]


@dataclass(slots=True)
class ClientHeartbeat:
    """Client heartbeat: sequence and the client's own send time (opaque)."""

    kind: ClassVar[int] = MessageKind.CLIENT_HEARTBEAT
    sequence: int
    client_time: int
    #: capability C{resume}: the last sequenced message the client received
    ack: int | None = None

    def fields(self) -> list[Any]:
        if self.ack is not None:
            return [self.kind, self.sequence, self.client_time, self.ack]
        return [self.kind, self.sequence, self.client_time]


@dataclass(slots=True)
class ClientHeartbeatAck:
    """Server's echo of a client heartbeat, plus the server's UTC time (us)."""

    kind: ClassVar[int] = MessageKind.CLIENT_HEARTBEAT_ACK
    sequence: int
    client_time: int
    server_time_us: int
    #: capability C{resume}: the last sequenced message the server received
    ack: int | None = None

    def fields(self) -> list[Any]:
        if self.ack is not None:
            return [self.kind, self.sequence, self.client_time, self.server_time_us, self.ack]
        return [self.kind, self.sequence, self.client_time, self.server_time_us]


@dataclass(slots=True)
class Token:
    """The client hands over a fresh access token for this connection (capability C{token-refresh})."""

    kind: ClassVar[int] = MessageKind.TOKEN
    sequence: int
    token: str

    def fields(self) -> list[Any]:
        return [self.kind, self.sequence, self.token]

    def __repr__(self) -> str:
        return f"Token(sequence={self.sequence}, token=<{len(self.token)} characters>)"


@dataclass(slots=True)
class TokenResult:
    """
    The server's answer to a L{Token}: accepted (C{error} None; C{expires_in}
    seconds left on the new token, None: it does not expire), or refused
    with an error code and message (the connection keeps its old token).
    """

    kind: ClassVar[int] = MessageKind.TOKEN_RESULT
    sequence: int
    expires_in: float | None = None
    error: str | None = None
    message: str = ""

    def fields(self) -> list[Any]:
        if self.error is None:
            return [self.kind, self.sequence, self.expires_in]
        return [self.kind, self.sequence, self.expires_in, self.error, self.message]


#: Session tokens are opaque bin of this many bytes (docs/protocol.md section 10).
SESSION_TOKEN_MIN_BYTES = 16
SESSION_TOKEN_MAX_BYTES = 64


class ResumeReason:
    """
    Why a session could not be resumed: the C{reason} of L{ResumeRefused}.

    Receivers MUST accept reasons they do not know (a newer server may add
    some) and treat them like L{SESSION_UNKNOWN}.
    """

    #: the session ended: the peer stayed away longer than its window
    WINDOW_EXPIRED: Final = "window-expired"
    #: a message the client had not received was dropped from the bounded buffer
    BUFFER_OVERFLOWED: Final = "buffer-overflowed"
    #: no such session (the node that held it is gone and there is no backplane)
    SESSION_UNKNOWN: Final = "session-unknown"
    #: the shared state was lost (the backplane's epoch changed, e.g. Redis flushed)
    BACKPLANE_STATE_LOST: Final = "backplane-state-lost"
    #: the token does not match the session (forged, or an old one after a rotation)
    TOKEN_INVALID: Final = "token-invalid"

    ALL: Final = (WINDOW_EXPIRED, BUFFER_OVERFLOWED, SESSION_UNKNOWN, BACKPLANE_STATE_LOST, TOKEN_INVALID)


def _token_repr(token: bytes) -> str:
    return f"<{len(token)} bytes>"


@dataclass(slots=True)
class SessionGrant:
    """
    SESSION (20): the server opened a resumable session for this connection
    and hands the client its token and the resume window in seconds.
    """

    kind: ClassVar[int] = MessageKind.SESSION
    token: bytes
    window: float

    def fields(self) -> list[Any]:
        return [self.kind, self.token, self.window]

    def __repr__(self) -> str:
        return f"SessionGrant(token={_token_repr(self.token)}, window={self.window!r})"


@dataclass(slots=True)
class Resume:
    """
    RESUME (21): the client asks to resume the session of C{token}; it has
    received the server's sequenced messages up to C{received}, and sent
    its own up to C{sent} (optional: None when the client does not say; a
    node restoring a session from its snapshot needs it, docs/resumption.md).
    """

    kind: ClassVar[int] = MessageKind.RESUME
    token: bytes
    received: int
    sent: int | None = None

    def fields(self) -> list[Any]:
        if self.sent is None:
            return [self.kind, self.token, self.received]
        return [self.kind, self.token, self.received, self.sent]

    def __repr__(self) -> str:
        return f"Resume(token={_token_repr(self.token)}, received={self.received}, sent={self.sent})"


@dataclass(slots=True)
class Resumed:
    """
    RESUMED (22): the session is resumed.  The server has received the
    client's sequenced messages up to C{received}; C{token} replaces the
    client's token (the old one is refused from now on); C{connection_id}
    is the session's connection id, in force again (not the one of this
    connection's WELCOME).
    """

    kind: ClassVar[int] = MessageKind.RESUMED
    received: int
    token: bytes
    connection_id: str

    def fields(self) -> list[Any]:
        return [self.kind, self.received, self.token, self.connection_id]

    def __repr__(self) -> str:
        return f"Resumed(received={self.received}, token={_token_repr(self.token)}, connection_id={self.connection_id!r})"


@dataclass(slots=True)
class ResumeRefused:
    """
    RESUME_REFUSED (23): the session cannot be resumed, for C{reason} (one
    of L{ResumeReason}); C{message} says more for humans.
    """

    kind: ClassVar[int] = MessageKind.RESUME_REFUSED
    reason: str
    message: str = ""

    def fields(self) -> list[Any]:
        return [self.kind, self.reason, self.message]


@dataclass(slots=True)
class Ack:
    """ACK (24): the sender has received the peer's sequenced messages up to C{received}."""

    kind: ClassVar[int] = MessageKind.ACK
    received: int

    def fields(self) -> list[Any]:
        return [self.kind, self.received]


Message = (
    Hello
    | Welcome
    | Invoke
    | Notify
    | Result
    | Error
    | ReceiverCall
    | ClientInvoke
    | Close
    | ServerHeartbeat
    | ServerHeartbeatAck
    | ClientHeartbeat
    | ClientHeartbeatAck
    | Token
    | TokenResult
    | SessionGrant
    | Resume
    | Resumed
    | ResumeRefused
    | Ack
    | StreamInvoke
    | StreamItem
    | StreamEnd
    | StreamCredit
    | StreamCancel
)

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode(message: Message) -> bytes:
    """Encode one message as msgpack bytes (one message = one array)."""
    data: bytes = _packer.pack(message.fields())
    return data


def encode_fields(fields: list[Any]) -> bytes:
    """
    Encode an already-built message array.

    The hot paths (results, receiver calls) build the array directly instead
    of a message object; the bytes are the same as L{encode}'s.
    """
    data: bytes = _packer.pack(fields)
    return data


def _is_uint(value: object) -> bool:
    return type(value) is int and value >= 0  # noqa: E721 - bool is not an id


def _args(value: object, what: str) -> list[Any]:
    if type(value) is not list:  # noqa: E721
        raise ProtocolError(f"{what}: arguments must be an array")
    return value


def _kwargs(raw: list[Any], index: int, what: str) -> dict[str, Any] | None:
    if len(raw) <= index:
        return None
    value = raw[index]
    if value is None:
        return None
    if type(value) is not dict or not all(type(k) is str for k in value):  # noqa: E721
        raise ProtocolError(f"{what}: keyword arguments must be a map with string keys")
    return value or None


def _text(value: object, what: str) -> str:
    if type(value) is not str:  # noqa: E721
        raise ProtocolError(f"{what} must be a string")
    return value


def _length(raw: list[Any], low: int, high: int, what: str) -> None:
    if not low <= len(raw) <= high:
        raise ProtocolError(f"{what}: expected {low}..{high} elements, got {len(raw)}")


def _caps(info: object, what: str) -> list[str]:
    if type(info) is not dict:  # noqa: E721
        raise ProtocolError(f"{what}: second element must be a map")
    caps = info.get("caps", [])
    if type(caps) is not list or not all(type(c) is str for c in caps):  # noqa: E721
        raise ProtocolError(f"{what}: caps must be an array of strings")
    return caps


def _max_size(info: dict[str, Any], what: str) -> int | None:
    value = info.get("max")
    if value is not None and not (_is_uint(value) and value > 0):
        raise ProtocolError(f"{what}: max must be a positive integer")
    return value


def _ack(raw: list[Any], index: int, what: str) -> int | None:
    """The optional trailing acknowledgement of a heartbeat message (capability C{resume})."""
    if len(raw) <= index:
        return None
    if not _is_uint(raw[index]):
        raise ProtocolError(f"{what}: ack must be an unsigned integer")
    value: int = raw[index]
    return value


def _session_token(value: object, what: str) -> bytes:
    if type(value) is not bytes:  # noqa: E721
        raise ProtocolError(f"{what}: token must be binary")
    if not SESSION_TOKEN_MIN_BYTES <= len(value) <= SESSION_TOKEN_MAX_BYTES:
        raise ProtocolError(
            f"{what}: token must be {SESSION_TOKEN_MIN_BYTES}..{SESSION_TOKEN_MAX_BYTES} bytes, got {len(value)}"
        )
    return value


def _received(value: object, what: str) -> int:
    if not _is_uint(value):
        raise ProtocolError(f"{what}: received must be an unsigned integer")
    assert isinstance(value, int)
    return value


def _stream_id(value: object, what: str) -> int:
    if not _is_uint(value):
        raise ProtocolError(f"{what}: stream id must be an unsigned integer")
    assert isinstance(value, int)
    return value


def _decode_resume(kind: int, raw: list[Any]) -> Message:
    """Kinds 20-24 (capability C{resume}; docs/protocol.md section 10)."""
    if kind == MessageKind.SESSION:
        _length(raw, 3, 3, "session")
        window = raw[2]
        if type(window) not in (int, float) or not window > 0:
            raise ProtocolError("session: window must be a number of seconds > 0")
        return SessionGrant(_session_token(raw[1], "session"), window)
    if kind == MessageKind.RESUME:
        _length(raw, 3, 4, "resume")
        sent = raw[3] if len(raw) > 3 else None
        if len(raw) > 3 and not _is_uint(sent):
            raise ProtocolError("resume: sent must be an unsigned integer")
        return Resume(_session_token(raw[1], "resume"), _received(raw[2], "resume"), sent)
    if kind == MessageKind.RESUMED:
        _length(raw, 4, 4, "resumed")
        return Resumed(
            _received(raw[1], "resumed"), _session_token(raw[2], "resumed"), _text(raw[3], "resumed: id")
        )
    if kind == MessageKind.RESUME_REFUSED:
        _length(raw, 3, 3, "resume refused")
        return ResumeRefused(_text(raw[1], "resume refused: reason"), _text(raw[2], "resume refused: message"))
    _length(raw, 2, 2, "ack")
    return Ack(_received(raw[1], "ack"))


def _streams(value: object, args: list[Any], kwargs: dict[str, Any] | None, what: str) -> list[list[Any]]:
    """Check an INVOKE's stream declarations: C{[[where, stream_id], ...]}, each place nil, ids distinct."""
    if type(value) is not list or not value:  # noqa: E721
        raise ProtocolError(f"{what}: streams must be a non-empty array")
    ids: set[int] = set()
    for entry in value:
        if type(entry) is not list or len(entry) != 2:  # noqa: E721
            raise ProtocolError(f"{what}: each stream must be [where, stream_id]")
        where, stream_id = entry
        stream_id = _stream_id(stream_id, what)
        if stream_id in ids:
            raise ProtocolError(f"{what}: stream id {stream_id} declared twice")
        ids.add(stream_id)
        if type(where) is int:  # noqa: E721
            if not 0 <= where < len(args) or args[where] is not None:
                raise ProtocolError(f"{what}: stream position {where} is not a nil argument")
        elif type(where) is str:  # noqa: E721
            if kwargs is None or where not in kwargs or kwargs[where] is not None:
                raise ProtocolError(f"{what}: stream keyword {where!r} is not a nil argument")
        else:
            raise ProtocolError(f"{what}: a stream's place must be an index or a keyword")
    return value


def _decode_one(raw: object) -> Message:
    """Turn one decoded msgpack value into a message, or raise ProtocolError."""
    if type(raw) is not list or not raw:  # noqa: E721
        raise ProtocolError("a message must be a non-empty array")
    kind = raw[0]
    if type(kind) is not int:  # noqa: E721 - True == 1 and 2.0 == 2 are not kinds
        raise ProtocolError(f"message kind must be an integer, got {type(kind).__name__}")
    if kind == MessageKind.INVOKE:
        _length(raw, 4, 6, "invoke")
        call_id, method = raw[1], raw[2]
        if not _is_uint(call_id):
            raise ProtocolError("invoke: call id must be an unsigned integer")
        args = _args(raw[3], "invoke")
        kwargs = _kwargs(raw, 4, "invoke")
        return Invoke(
            call_id, _text(method, "invoke: method"), args, kwargs,
            _streams(raw[5], args, kwargs, "invoke") if len(raw) > 5 else None,
        )
    if kind == MessageKind.STREAM_ITEM:
        _length(raw, 3, 3, "stream item")
        return StreamItem(_stream_id(raw[1], "stream item"), raw[2])
    if kind == MessageKind.STREAM_CREDIT:
        _length(raw, 3, 3, "stream credit")
        credit = raw[2]
        if not (_is_uint(credit) and credit > 0):
            raise ProtocolError("stream credit: credit must be a positive integer")
        return StreamCredit(_stream_id(raw[1], "stream credit"), credit)
    if kind == MessageKind.STREAM_END:
        _length(raw, 2, 5, "stream end")
        stream_id = _stream_id(raw[1], "stream end")
        if len(raw) == 2:
            return StreamEnd(stream_id)
        _length(raw, 4, 5, "stream end")
        return StreamEnd(
            stream_id, _text(raw[2], "stream end: code"), _text(raw[3], "stream end: message"),
            raw[4] if len(raw) > 4 else None,
        )
    if kind == MessageKind.STREAM_CANCEL:
        _length(raw, 2, 2, "stream cancel")
        return StreamCancel(_stream_id(raw[1], "stream cancel"))
    if kind == MessageKind.STREAM_INVOKE:
        _length(raw, 6, 7, "stream invoke")
        call_id, method = raw[1], raw[2]
        if not _is_uint(call_id):
            raise ProtocolError("stream invoke: call id must be an unsigned integer")
        args = _args(raw[3], "stream invoke")
        kwargs = _kwargs(raw, 4, "stream invoke")
        credit = raw[5]
        if not (_is_uint(credit) and credit > 0):
            raise ProtocolError("stream invoke: credit must be a positive integer")
        return StreamInvoke(
            call_id, _text(method, "stream invoke: method"), args, kwargs,
            _streams(raw[6], args, kwargs, "stream invoke") if len(raw) > 6 else None, credit,
        )
    if kind == MessageKind.RESULT:
        _length(raw, 3, 3, "result")
        if not _is_uint(raw[1]):
            raise ProtocolError("result: call id must be an unsigned integer")
        return Result(raw[1], raw[2])
    if kind == MessageKind.NOTIFY or kind == MessageKind.RECEIVER_CALL:
        _length(raw, 3, 4, "call")
        cls = Notify if kind == MessageKind.NOTIFY else ReceiverCall
        return cls(_text(raw[1], "call: method"), _args(raw[2], "call"), _kwargs(raw, 3, "call"))
    if kind == MessageKind.ERROR:
        _length(raw, 4, 5, "error")
        if not _is_uint(raw[1]):
            raise ProtocolError("error: call id must be an unsigned integer")
        return Error(
            raw[1],
            _text(raw[2], "error: code"),
            _text(raw[3], "error: message"),
            raw[4] if len(raw) > 4 else None,
        )
    if kind == MessageKind.CLIENT_INVOKE:
        _length(raw, 4, 5, "client invoke")
        if not _is_uint(raw[1]):
            raise ProtocolError("client invoke: call id must be an unsigned integer")
        return ClientInvoke(
            raw[1],
            _text(raw[2], "client invoke: method"),
            _args(raw[3], "client invoke"),
            _kwargs(raw, 4, "client invoke"),
        )
    if kind == MessageKind.SERVER_HEARTBEAT:
        _length(raw, 3, 4, "server heartbeat")
        metadata = raw[3] if len(raw) > 3 else None
        if not (_is_uint(raw[1]) and _is_uint(raw[2])):
            raise ProtocolError("server heartbeat: sequence and time must be unsigned")
        if metadata is not None and type(metadata) is not bytes:  # noqa: E721
            raise ProtocolError("server heartbeat: metadata must be binary or nil")
        return ServerHeartbeat(raw[1], raw[2], metadata)
    if kind == MessageKind.SERVER_HEARTBEAT_ACK:
        _length(raw, 2, 3, "server heartbeat ack")
        if not _is_uint(raw[1]):
            raise ProtocolError("server heartbeat ack: sequence must be unsigned")
        return ServerHeartbeatAck(raw[1], _ack(raw, 2, "server heartbeat ack"))
    if kind == MessageKind.CLIENT_HEARTBEAT:
        _length(raw, 3, 4, "client heartbeat")
        if not (_is_uint(raw[1]) and type(raw[2]) is int):  # noqa: E721
            raise ProtocolError("client heartbeat: sequence and time must be integers")
        return ClientHeartbeat(raw[1], raw[2], _ack(raw, 3, "client heartbeat"))
    if kind == MessageKind.CLIENT_HEARTBEAT_ACK:
        _length(raw, 4, 5, "client heartbeat ack")
        if not (_is_uint(raw[1]) and type(raw[2]) is int and _is_uint(raw[3])):  # noqa: E721
            raise ProtocolError("client heartbeat ack: fields must be integers")
        return ClientHeartbeatAck(raw[1], raw[2], raw[3], _ack(raw, 4, "client heartbeat ack"))
    if kind == MessageKind.HELLO:
        _length(raw, 2, 2, "hello")
        return Hello(_caps(raw[1], "hello"), _max_size(raw[1], "hello"))
    if kind == MessageKind.WELCOME:
        _length(raw, 2, 2, "welcome")
        info = raw[1]
        caps = _caps(info, "welcome")
        connection_id = info.get("id", "")
        if type(connection_id) is not str:  # noqa: E721
            raise ProtocolError("welcome: id must be a string")
        interval: float | None = None
        timeout: float | None = None
        hb = info.get("hb")
        if hb is not None:
            if type(hb) is not list or len(hb) != 2:  # noqa: E721
                raise ProtocolError("welcome: hb must be [interval, timeout]")
            interval, timeout = hb
            if type(interval) not in (int, float) or (
                timeout is not None and type(timeout) not in (int, float)
            ):
                raise ProtocolError("welcome: hb values must be numbers")
            if not interval > 0 or (timeout is not None and not timeout > 0):
                raise ProtocolError("welcome: hb values must be > 0")
        expires_in = info.get("expires_in")
        if expires_in is not None and (type(expires_in) not in (int, float) or expires_in < 0):
            raise ProtocolError("welcome: expires_in must be a number of seconds >= 0")
        return Welcome(caps, connection_id, interval, timeout, _max_size(info, "welcome"), expires_in)
    if kind == MessageKind.TOKEN:
        _length(raw, 3, 3, "token")
        if not _is_uint(raw[1]):
            raise ProtocolError("token: sequence must be an unsigned integer")
        return Token(raw[1], _text(raw[2], "token: token"))
    if kind == MessageKind.TOKEN_RESULT:
        _length(raw, 3, 5, "token result")
        if not _is_uint(raw[1]):
            raise ProtocolError("token result: sequence must be an unsigned integer")
        expires_in = raw[2]
        if expires_in is not None and (type(expires_in) not in (int, float) or expires_in < 0):
            raise ProtocolError("token result: expires_in must be a number of seconds >= 0 or nil")
        error = raw[3] if len(raw) > 3 else None
        if error is not None and type(error) is not str:  # noqa: E721
            raise ProtocolError("token result: error must be a string or nil")
        message = _text(raw[4], "token result: message") if len(raw) > 4 else ""
        return TokenResult(raw[1], expires_in, error, message)
    if MessageKind.SESSION <= kind <= MessageKind.ACK:
        return _decode_resume(kind, raw)
    if kind == MessageKind.CLOSE:
        _length(raw, 3, 3, "close")
        if type(raw[1]) is not int:  # noqa: E721
            raise ProtocolError("close: code must be an integer")
        return Close(raw[1], _text(raw[2], "close: reason"))
    raise ProtocolError(f"unknown message kind {kind!r}")


def _unpack(data: bytes, max_messages: int | None = None) -> list[object]:
    """
    Return every msgpack value in C{data}; raise ProtocolError on bad bytes
    and L{TooManyMessagesError} past C{max_messages} values (counted while
    decoding: the rest of the frame is not decoded).
    """
    try:
        try:
            # The common case, one message in the frame, is the fastest path.
            return [msgpack.unpackb(data, raw=False, strict_map_key=False)]
        except msgpack.ExtraData as extra:
            values = [extra.unpacked]
            rest = extra.extra
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(rest))
        unpacker.feed(rest)
        # tell() after the last *complete* value: once iteration stops on a
        # partial value, tell() already counts (some of) its bytes.
        end = 0
        limit = max_messages if max_messages is not None else len(data)
        for value in unpacker:
            values.append(value)
            if len(values) > limit:
                raise TooManyMessagesError(f"more than {limit} messages in one frame")
            end = unpacker.tell()
        if end != len(rest):
            raise ProtocolError("malformed msgpack: truncated message at the end of the frame")
        return values
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        # msgpack reports truncated input, bad bytes, too deep nesting and
        # non-string map keys as one of these.
        raise ProtocolError(f"malformed msgpack: {e or type(e).__name__}") from None
    except RecursionError:
        raise ProtocolError("malformed msgpack: nested too deeply") from None


def decode_frame(data: bytes, max_messages: int | None = None) -> list[Message]:
    """
    Decode every message in one binary frame.

    @param max_messages: the most messages one frame may hold (None: any).
    @raise TooManyMessagesError: the frame holds more than C{max_messages}.
    @raise ProtocolError: the frame is empty, not msgpack, or holds a value
        that is not a valid message.
    """
    if not data:
        raise ProtocolError("empty frame")
    return [_decode_one(raw) for raw in _unpack(data, max_messages)]
