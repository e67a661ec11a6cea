"""
The messages between backplane nodes, without I/O (time is passed in).

Every message is a msgpack array C{[kind, origin, seq, sent_ms, *fields]}:
C{origin} is the publishing node's token, C{seq} counts that node's
messages on that channel (1, 2, 3 ...), C{sent_ms} is its clock when it
published.  With a shared secret the array is signed:
C{0xC1 | HMAC-SHA256(secret, channel NUL array) | array}.  (0xC1 is the one
byte msgpack never uses, so a signed message cannot be taken for an array.)
Each kind is a typed class (L{Send}, L{Join}, L{Leave}, L{Alive}, L{Sync},
L{Bye}, L{Kick}, and for sessions that move between nodes L{Claim},
L{Handover}, L{Moved}, L{Forward}) that lists its own fields and checks them when decoded:
no positional list is built or read anywhere else.

L{NodeCodec} encodes what this node publishes and checks what it hears:
well-formed (L{MalformedMessage}), authentic, recent and not heard before
(L{RejectedMessage}), and in sequence (L{NodeCodec.in_sequence} says how
many messages of that node were missed before it).  The same secret signs
the state a node keeps in Redis (membership fields and lease), so a party
that can write to Redis but lacks the secret cannot add members or nodes
(C{docs/scaling.md}, "Trust").
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import msgpack

from .._core.base_error import HubArgumentError
from .interface import TARGET_ALL, TARGET_GROUP, TARGET_ONLY, Target

__all__ = [
    "ALIVE", "BYE", "CLAIM", "FORWARD", "HANDOVER", "JOIN", "KICK", "LEAVE", "MOVED", "SEND", "SYNC",
    "Alive", "BackplaneMessage", "Bye", "Claim", "Forward", "Handover", "Join", "Kick", "Leave", "Moved", "Send",
    "Sync",
    "MalformedMessage", "NodeCodec", "NodeMessage", "RejectedMessage", "Signer",
    "decode_member_field", "load_secrets", "member_field", "read_secret_file", "secret_from_environment",
]

SEND = 0  # fields: hub, target kind, group, ids, payload
JOIN = 1  # fields: hub, group, connection id
LEAVE = 2  # fields: hub, group, connection id
ALIVE = 3  # fields: node id
SYNC = 4  # fields: node id (reload my membership snapshot)
BYE = 5  # no fields: I am stopping, drop my members
KICK = 6  # fields: hub, connection id, reason (close this connection of yours: clients.kick)
CLAIM = 7  # fields: hub, session key, token digest, user, claim id (who holds this session? give it to me)
HANDOVER = 8  # fields: hub, session key, claim id, reason, message, state, cutoffs (the answer to a claim)
MOVED = 9  # fields: hub, connection id, node token (this connection is held by that node now)
FORWARD = 10  # fields: hub, connection id, payload (a message for a connection that moved to you)

_HEADER = 4

#: the first byte of a signed message
SIGNED_MARK = 0xC1
MAC_SIZE = 32
#: the shortest secret accepted
MIN_SECRET_BYTES = 16
#: seconds a signed message may be old (or ahead of this node's clock) and still be accepted
MAX_AGE = 60.0
#: seconds a node's sequence state is kept after its last message (longer than MAX_AGE)
RECEIVE_HORIZON = 600.0
#: seconds a counter for another node's channel is kept once unused (longer than RECEIVE_HORIZON)
SEND_HORIZON = 3600.0


class MalformedMessage(ValueError):
    """Not a backplane message of this version (counted as C{bad_messages})."""


class RejectedMessage(ValueError):
    """A well-formed message refused: unsigned, forged, stale or replayed (counted as C{rejected})."""


# -- the messages ----------------------------------------------------------------


def _text(value: object, what: str) -> str:
    if type(value) is not str:  # noqa: E721
        raise MalformedMessage(f"{what} must be a string, got {type(value).__name__}")
    return value


def _texts(fields: Sequence[Any], names: tuple[str, ...]) -> list[str]:
    return [_text(value, what) for value, what in zip(fields, names, strict=True)]


@dataclass(frozen=True, slots=True)
class Send:
    """
    A receiver call for the connections other nodes hold: C{payload} is the
    encoded hub message, C{target} says whose (any node resolves it against
    the connections it holds).
    """

    KIND: ClassVar[int] = SEND
    hub: str
    target: Target
    payload: bytes

    def fields(self) -> list[Any]:
        return [self.hub, self.target.kind, self.target.group, list(self.target.ids), self.payload]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Send:
        hub, kind, group, ids, payload = fields
        _text(hub, "the hub")
        if kind not in (TARGET_ALL, TARGET_GROUP, TARGET_ONLY):
            raise MalformedMessage(f"unknown target kind {kind!r}")
        if kind == TARGET_GROUP:
            _text(group, "the group")
        elif group is not None and type(group) is not str:  # noqa: E721
            raise MalformedMessage(f"the group must be a string or nil, got {type(group).__name__}")
        if type(ids) is not list or any(type(i) is not str for i in ids):  # noqa: E721
            raise MalformedMessage("the connection ids must be a list of strings")
        if type(payload) is not bytes:  # noqa: E721
            raise MalformedMessage("the payload must be bytes")
        return cls(hub, Target(kind, group, tuple(ids)), payload)


@dataclass(frozen=True, slots=True)
class _GroupChange:
    """A connection of the publishing node joined or left a group (L{Join}, L{Leave})."""

    hub: str
    group: str
    connection_id: str

    def fields(self) -> list[Any]:
        return [self.hub, self.group, self.connection_id]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Self:
        return cls(*_texts(fields, ("the hub", "the group", "the connection id")))


@dataclass(frozen=True, slots=True)
class Join(_GroupChange):
    """A connection of the publishing node joined a group."""

    KIND: ClassVar[int] = JOIN


@dataclass(frozen=True, slots=True)
class Leave(_GroupChange):
    """A connection of the publishing node left a group."""

    KIND: ClassVar[int] = LEAVE


@dataclass(frozen=True, slots=True)
class Alive:
    """The publishing node is alive (every C{lease / 3} seconds)."""

    KIND: ClassVar[int] = ALIVE
    node_id: str

    def fields(self) -> list[Any]:
        return [self.node_id]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Alive:
        return cls(_text(fields[0], "the node id"))


@dataclass(frozen=True, slots=True)
class Sync:
    """The publishing node wrote its membership snapshot anew: reload it."""

    KIND: ClassVar[int] = SYNC
    node_id: str

    def fields(self) -> list[Any]:
        return [self.node_id]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Sync:
        return cls(_text(fields[0], "the node id"))


@dataclass(frozen=True, slots=True)
class Bye:
    """The publishing node is stopping: drop its members."""

    KIND: ClassVar[int] = BYE

    def fields(self) -> list[Any]:
        return []

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Bye:
        return cls()


@dataclass(frozen=True, slots=True)
class Kick:
    """Close this connection of yours (C{clients.kick}): sent to the node that holds it."""

    KIND: ClassVar[int] = KICK
    hub: str
    connection_id: str
    reason: str

    def fields(self) -> list[Any]:
        return [self.hub, self.connection_id, self.reason]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Kick:
        return cls(*_texts(fields, ("the hub", "the connection id", "the reason")))


def _bytes(value: object, what: str) -> bytes:
    if type(value) is not bytes:  # noqa: E721
        raise MalformedMessage(f"{what} must be bytes, got {type(value).__name__}")
    return value


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:  # noqa: E721
        raise MalformedMessage(f"{what} must be a count, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Claim:
    """
    A client resumed on the publishing node with a session it does not
    hold: the node holding the session (key: epoch and session id) gives it
    up if C{digest} is its token's and C{user} its user (docs/resumption.md,
    "Across nodes").  C{user} "" is no user.  On the hub-wide channel.
    """

    KIND: ClassVar[int] = CLAIM
    hub: str
    key: bytes
    digest: bytes
    user: str
    claim_id: int

    def fields(self) -> list[Any]:
        return [self.hub, self.key, self.digest, self.user, self.claim_id]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Claim:
        hub, key, digest, user, claim_id = fields
        return cls(_text(hub, "the hub"), _bytes(key, "the session key"), _bytes(digest, "the digest"),
                   _text(user, "the user"), _count(claim_id, "the claim id"))


@dataclass(frozen=True, slots=True)
class Handover:
    """
    The answer to a L{Claim}, on the claimant's channel: the session's
    C{state} (L{twisted_hub._core.session_move.MovedSession}) and the last
    number this node had handled on the hub-wide channel from each node
    (C{cutoffs}, its own included), or C{reason} (a typed refusal) and no state.
    """

    KIND: ClassVar[int] = HANDOVER
    hub: str
    key: bytes
    claim_id: int
    reason: str
    message: str
    state: bytes
    cutoffs: dict[str, int]

    def fields(self) -> list[Any]:
        return [self.hub, self.key, self.claim_id, self.reason, self.message, self.state, self.cutoffs]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Handover:
        hub, key, claim_id, reason, message, state, cutoffs = fields
        if type(cutoffs) is not dict or any(  # noqa: E721
            type(k) is not str or type(v) is not int or v < 0 for k, v in cutoffs.items()  # noqa: E721
        ):
            raise MalformedMessage("the cut-offs must map node tokens to counts")
        return cls(_text(hub, "the hub"), _bytes(key, "the session key"), _count(claim_id, "the claim id"),
                   _text(reason, "the reason"), _text(message, "the message"), _bytes(state, "the state"), cutoffs)


@dataclass(frozen=True, slots=True)
class Moved:
    """Connection C{connection_id} of C{hub} is held by node C{node} now (send what is for it there)."""

    KIND: ClassVar[int] = MOVED
    hub: str
    connection_id: str
    node: str

    def fields(self) -> list[Any]:
        return [self.hub, self.connection_id, self.node]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Moved:
        return cls(*_texts(fields, ("the hub", "the connection id", "the node")))


@dataclass(frozen=True, slots=True)
class Forward:
    """
    An encoded hub message for connection C{connection_id}, which moved
    to the node this is sent to (what a call still running on the old node
    sends it, or a receiver call that reached the old node).
    """

    KIND: ClassVar[int] = FORWARD
    hub: str
    connection_id: str
    payload: bytes

    def fields(self) -> list[Any]:
        return [self.hub, self.connection_id, self.payload]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Forward:
        hub, connection_id, payload = fields
        return cls(_text(hub, "the hub"), _text(connection_id, "the connection id"), _bytes(payload, "the payload"))


#: Every message one node publishes for the others.
BackplaneMessage = Send | Join | Leave | Alive | Sync | Bye | Kick | Claim | Handover | Moved | Forward

#: kind -> (number of fields, the strict decoder of those fields)
_DECODERS: dict[int, tuple[int, Callable[[list[Any]], BackplaneMessage]]] = {
    message.KIND: (fields, message.from_fields)
    for message, fields in (
        (Send, 5), (Join, 3), (Leave, 3), (Alive, 1), (Sync, 1), (Bye, 0), (Kick, 3),
        (Claim, 5), (Handover, 7), (Moved, 3), (Forward, 3),
    )
}


@dataclass(frozen=True, slots=True)
class NodeMessage:
    """One decoded message from another node: the envelope and its typed C{body}."""

    origin: str
    seq: int
    #: the publisher's clock, seconds
    sent: float
    body: BackplaneMessage

    @property
    def kind(self) -> int:
        return self.body.KIND


def member_field(hub: str, group: str, connection_id: str) -> bytes:
    """The field of one membership in a node's membership hash in Redis."""
    field: bytes = msgpack.packb([hub, group, connection_id])
    return field


def decode_member_field(field: object) -> tuple[str, str, str]:
    """
    C{(hub, group, connection id)} from a membership hash field.

    @raise MalformedMessage: it is not one.
    """
    if not isinstance(field, bytes):
        raise MalformedMessage(f"a field must be bytes, got {type(field).__name__}")
    try:
        raw = msgpack.unpackb(field, raw=False, use_list=True)
    except Exception as e:
        raise MalformedMessage(f"not msgpack: {e}") from None
    if type(raw) is not list or len(raw) != 3:  # noqa: E721
        raise MalformedMessage("not a [hub, group, connection id] array")
    hub, group, connection_id = _texts(raw, ("the hub", "the group", "the connection id"))
    return hub, group, connection_id


def load_secrets(text: str, source: str) -> list[bytes]:
    """
    The secrets in C{text}, separated by whitespace: the first signs, every
    one verifies (add the new secret second, then first, then drop the old
    one: a rotation without a split).
    """
    secrets = [word.encode("utf-8") for word in text.split()]
    if not secrets:
        raise HubArgumentError(f"{source} holds no backplane secret")
    for secret in secrets:
        if len(secret) < MIN_SECRET_BYTES:
            raise HubArgumentError(
                f"a backplane secret in {source} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed "
                "(e.g. openssl rand -hex 32)"
            )
    return secrets


def read_secret_file(path: str | os.PathLike[str]) -> list[bytes]:
    """The backplane secrets in a file (one or more, whitespace-separated)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise HubArgumentError(f"cannot read the backplane secret file {os.fspath(path)!r}: {e.strerror}") from None
    return load_secrets(text, f"the file {os.fspath(path)!r}")


def secret_from_environment(name: str, environ: Mapping[str, str] | None = None) -> list[bytes]:
    """The backplane secrets in the environment variable C{name}."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        raise HubArgumentError(f"the environment variable {name} (the backplane secret) is not set")
    return load_secrets(value, f"the environment variable {name}")


class Signer:
    """HMAC-SHA256 with the first secret; verification with any of them."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise HubArgumentError("a Signer needs at least one secret")
        self._keys = list(secrets)

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._keys[0], data, hashlib.sha256).digest()

    def verify(self, mac: bytes, data: bytes) -> bool:
        return any(hmac.compare_digest(mac, hmac.new(key, data, hashlib.sha256).digest()) for key in self._keys)


class NodeCodec:
    """
    One node's side of the messages: numbering and signing what it
    publishes, checking what it hears.

    @param token: this node's token (the C{origin} of what it publishes).
    @param signer: signs and verifies (None: messages are neither signed
        nor checked, signed ones are accepted unverified).
    """

    def __init__(self, token: str, signer: Signer | None = None) -> None:
        self.token = token
        self.signer = signer
        #: channel -> [last seq sent, last use]
        self._sent: dict[bytes, list[float]] = {}
        #: (origin, channel) -> [last seq heard, when]
        self._heard: dict[tuple[str, bytes], list[float]] = {}

    # -- publishing ------------------------------------------------------------
    def encode(self, channel: bytes, message: BackplaneMessage, now: float) -> bytes:
        """The next message of this node on C{channel} (numbered, signed if there is a secret)."""
        counter = self._sent.get(channel)
        if counter is None:
            counter = self._sent[channel] = [0, now]
        counter[0] += 1
        counter[1] = now
        header = [message.KIND, self.token, int(counter[0]), int(now * 1000)]
        packed: bytes = msgpack.packb([*header, *message.fields()], use_bin_type=True)
        if self.signer is None:
            return packed
        return bytes([SIGNED_MARK]) + self.signer.sign(channel + b"\0" + packed) + packed

    def last_sent(self, channel: bytes) -> int:
        """The number of this node's last message on C{channel} (0: none)."""
        counter = self._sent.get(channel)
        return int(counter[0]) if counter is not None else 0

    def last_heard(self, channel: bytes) -> dict[str, int]:
        """The number of the last message heard on C{channel} from each node, and this node's own last one."""
        heard = {origin: int(state[0]) for (origin, on), state in self._heard.items() if on == channel}
        heard[self.token] = self.last_sent(channel)
        return heard

    def unsend(self, channel: bytes) -> None:
        """The message just encoded for C{channel} was not sent: reuse its number."""
        self._sent[channel][0] -= 1

    # -- receiving -----------------------------------------------------------
    def decode(self, channel: bytes, data: bytes, now: float) -> NodeMessage:
        """
        Check and decode one message heard on C{channel}.

        @raise RejectedMessage: unsigned or forged while there is a secret,
            or signed more than L{MAX_AGE} seconds away from C{now}.
        @raise MalformedMessage: anything else that is not a message.
        """
        signed = data[:1] == bytes([SIGNED_MARK])
        if signed:
            if len(data) <= 1 + MAC_SIZE:
                raise MalformedMessage("a signed message too short to hold a signature")
            mac, packed = data[1:1 + MAC_SIZE], data[1 + MAC_SIZE:]
            if self.signer is not None and not self.signer.verify(mac, channel + b"\0" + packed):
                raise RejectedMessage("its signature is wrong (another secret, or forged)")
        else:
            if self.signer is not None:
                raise RejectedMessage("it is not signed (a node without the secret, or forged)")
            packed = data
        try:
            raw = msgpack.unpackb(packed, raw=False, use_list=True, strict_map_key=False)
        except Exception as e:
            raise MalformedMessage(f"not msgpack: {e}") from None
        if type(raw) is not list or len(raw) < _HEADER:  # noqa: E721
            raise MalformedMessage("not a backplane message array")
        kind, origin, seq, sent_ms = raw[:_HEADER]
        decoder = _DECODERS.get(kind) if type(kind) is int else None  # noqa: E721
        if decoder is None:
            raise MalformedMessage(f"unknown message kind {kind!r}")
        expected, from_fields = decoder
        if len(raw) != _HEADER + expected:
            raise MalformedMessage(f"a message of kind {kind} has {len(raw)} items, not {_HEADER + expected}")
        _text(origin, "the origin")
        if type(seq) is not int or seq < 1 or type(sent_ms) is not int:  # noqa: E721
            raise MalformedMessage("the sequence number and send time must be integers")
        body = from_fields(raw[_HEADER:])
        sent = sent_ms / 1000.0
        if self.signer is not None and abs(now - sent) > MAX_AGE:
            raise RejectedMessage(
                f"it was signed {now - sent:.0f} s ago (more than {MAX_AGE:g} s: replayed, or the clocks differ)"
            )
        return NodeMessage(origin, seq, sent, body)

    def in_sequence(self, message: NodeMessage, channel: bytes, now: float) -> int:
        """
        Record C{message} as heard on C{channel}; return how many messages of
        its node on that channel were missed just before it (0: none, or the
        first heard from that node).

        @raise RejectedMessage: its number was heard already (replayed).
        """
        key = (message.origin, channel)
        state = self._heard.get(key)
        if state is None:
            self._heard[key] = [message.seq, now]
            return 0
        last = int(state[0])
        if message.seq <= last:
            raise RejectedMessage(f"its sequence number {message.seq} was heard already (last {last}): replayed")
        state[0] = message.seq
        state[1] = now
        return message.seq - last - 1

    def forget(self, now: float, live_channels: set[bytes]) -> None:
        """Drop the state of nodes silent for L{RECEIVE_HORIZON} and of unused channels of gone nodes."""
        for key, (_, when) in list(self._heard.items()):
            if now - when > RECEIVE_HORIZON:
                del self._heard[key]
        for channel, (_, used) in list(self._sent.items()):
            if channel not in live_channels and now - used > SEND_HORIZON:
                del self._sent[channel]

    # -- the state kept in Redis -------------------------------------------------
    def member_value(self, field: bytes) -> bytes:
        """The hash value stored with one of this node's membership fields."""
        if self.signer is None:
            return b"1"
        return self.signer.sign(b"member\0" + self.token.encode() + b"\0" + field)

    def member_ok(self, token: str, field: bytes, value: object) -> bool:
        """Whether a membership field of node C{token} read from Redis is authentic."""
        if self.signer is None:
            return True
        return isinstance(value, bytes) and self.signer.verify(value, b"member\0" + token.encode() + b"\0" + field)

    def session_value(self, name: bytes, data: bytes) -> bytes:
        """What a session's snapshot key C{name} holds: C{data}, signed when there is a secret."""
        if self.signer is None:
            return data
        return self.signer.sign(b"session\0" + name + b"\0" + data) + data

    def session_data(self, name: bytes, value: object) -> bytes | None:
        """The data in a session snapshot read from key C{name}; None if it is not authentic."""
        if not isinstance(value, bytes):
            return None
        if self.signer is None:
            return value
        mac, data = value[:MAC_SIZE], value[MAC_SIZE:]
        return data if self.signer.verify(mac, b"session\0" + name + b"\0" + data) else None

    def lease_value(self, node_id: str) -> bytes:
        """What this node's lease key holds: its node id (signed when there is a secret)."""
        name = node_id.encode("utf-8")
        if self.signer is None:
            return name
        return self.signer.sign(b"lease\0" + self.token.encode() + b"\0" + name) + name

    def lease_node_id(self, token: str, value: object) -> str | None:
        """The node id in node C{token}'s lease value; None if it is not authentic."""
        if not isinstance(value, bytes):
            return None
        if self.signer is None:
            return value.decode("utf-8", "replace")
        mac, name = value[:MAC_SIZE], value[MAC_SIZE:]
        if not self.signer.verify(mac, b"lease\0" + token.encode() + b"\0" + name):
            return None
        return name.decode("utf-8", "replace")
