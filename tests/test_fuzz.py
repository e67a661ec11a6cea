"""
Property tests for the wire format and the connection cores: whatever bytes
arrive, the only exception is L{ProtocolError}; every valid message survives
an encode/decode round trip.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._core.connection import ClientConnection, Connection, ServerConnection
from twisted_hub._core.wire import (
    OUR_CAPABILITIES,
    ClientHeartbeat,
    ClientHeartbeatAck,
    ClientInvoke,
    Close,
    Error,
    Hello,
    Invoke,
    Message,
    Notify,
    ProtocolError,
    ReceiverCall,
    Result,
    ServerHeartbeat,
    ServerHeartbeatAck,
    Welcome,
    decode_frame,
    encode,
)

#: Bounded so the whole file runs in a few seconds.
BOUNDED = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

uint64 = st.integers(min_value=0, max_value=2**64 - 1)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
msgpack_int = st.integers(min_value=-(2**63), max_value=2**64 - 1)
short_text = st.text(max_size=8)

#: Any msgpack value the decoder can give back equal: no NaN (NaN != NaN), no
#: tuples (they come back as lists), str keys only (the wire allows no others
#: but bin, which would come back equal too but is rare in practice).
values = st.recursive(
    st.none()
    | st.booleans()
    | msgpack_int
    | st.floats(allow_nan=False)
    | short_text
    | st.binary(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(short_text, children, max_size=3),
    max_leaves=6,
)
args = st.lists(values, max_size=3)
#: The encoder leaves out empty keyword arguments, so {} comes back as None.
kwargs = st.none() | st.dictionaries(short_text, values, min_size=1, max_size=3)
seconds = st.none() | st.integers(min_value=1, max_value=10_000) | st.floats(min_value=0.001, max_value=1e6)


@st.composite
def welcomes(draw: st.DrawFn) -> Welcome:
    """A welcome; a timeout only travels together with an interval."""
    interval = draw(seconds)
    timeout = draw(seconds) if interval is not None else None
    return Welcome(draw(st.lists(short_text, max_size=4)), draw(short_text), interval, timeout)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, st.lists(short_text, max_size=4)),
    welcomes(),
    st.builds(Invoke, uint64, short_text, args, kwargs),
    st.builds(Notify, short_text, args, kwargs),
    st.builds(Result, uint64, values),
    st.builds(Error, uint64, short_text, short_text, values),
    st.builds(ReceiverCall, short_text, args, kwargs),
    st.builds(ClientInvoke, uint64, short_text, args, kwargs),
    st.builds(Close, int64, short_text),
    st.builds(ServerHeartbeat, uint64, uint64, st.none() | st.binary(max_size=16)),
    st.builds(ServerHeartbeatAck, uint64),
    st.builds(ClientHeartbeat, uint64, int64),
    st.builds(ClientHeartbeatAck, uint64, int64, uint64),
)


@st.composite
def damaged_frames(draw: st.DrawFn) -> bytes:
    """A valid frame, then truncated, extended or with some bytes overwritten."""
    frame = bytearray(b"".join(encode(m) for m in draw(st.lists(messages, min_size=1, max_size=2))))
    how = draw(st.sampled_from(["truncate", "append", "overwrite", "insert"]))
    if how == "truncate":
        del frame[draw(st.integers(min_value=0, max_value=len(frame) - 1)) :]
    elif how == "append":
        frame += draw(st.binary(min_size=1, max_size=8))
    elif how == "overwrite":
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            frame[draw(st.integers(min_value=0, max_value=len(frame) - 1))] = draw(st.integers(0, 255))
    else:
        position = draw(st.integers(min_value=0, max_value=len(frame)))
        frame[position:position] = draw(st.binary(min_size=1, max_size=4))
    return bytes(frame)


#: Random bytes, damaged valid frames, and valid frames of any direction.
hostile_frames = st.one_of(
    st.binary(max_size=64),
    damaged_frames(),
    st.lists(messages, min_size=1, max_size=2).map(lambda ms: b"".join(encode(m) for m in ms)),
)


def _decodes_or_protocol_error(data: bytes) -> list[Message] | None:
    try:
        return decode_frame(data)
    except ProtocolError:
        return None


def _open_server() -> ServerConnection[str]:
    server: ServerConnection[str] = ServerConnection("fuzz", 5.0, 15.0)
    server.receive_frame(encode(Hello(list(OUR_CAPABILITIES))), 0.0)
    server.invoke_client("pending", "r", [])
    server.heartbeat.sent(1, 0.0)
    return server


def _open_client() -> ClientConnection[str]:
    client: ClientConnection[str] = ClientConnection()
    client.receive_frame(encode(Welcome(list(OUR_CAPABILITIES), "fuzz", 5.0, 15.0)), 0.0)
    client.invoke("pending", "m", [])
    client.send_heartbeat(0.0)
    return client


def _feed(connection: Connection[Any], frames: list[bytes]) -> int:
    """Feed frames until one is rejected; return how many were accepted."""
    accepted = 0
    for number, frame in enumerate(frames):
        try:
            connection.receive_frame(frame, float(number))
        except ProtocolError:
            break
        connection.frames_to_send()
        accepted += 1
    return accepted


class DecodeFuzzTests(SynchronousTestCase):
    """decode_frame never raises anything but ProtocolError."""

    @settings(BOUNDED, max_examples=500)
    @given(st.binary(max_size=256))
    def test_anyBytes(self, data: bytes) -> None:
        """Arbitrary bytes decode to a list of messages or raise ProtocolError."""
        result = _decodes_or_protocol_error(data)
        if result is not None:
            self.assertTrue(data)
            self.assertTrue(result)

    @BOUNDED
    @given(damaged_frames())
    def test_damagedFrames(self, data: bytes) -> None:
        """Truncated, extended or corrupted valid frames decode or raise ProtocolError."""
        result = _decodes_or_protocol_error(data)
        if result is not None:
            # Whatever decodes re-encodes to a valid frame of the same messages.
            self.assertEqual(decode_frame(b"".join(encode(m) for m in result)), result)


class RoundTripTests(SynchronousTestCase):
    """encode and decode_frame are inverse on valid messages."""

    @BOUNDED
    @given(st.lists(messages, min_size=1, max_size=4))
    def test_roundTrip(self, batch: list[Message]) -> None:
        """Valid messages decode back equal from their encodings, alone and back to back."""
        self.assertEqual(decode_frame(encode(batch[0])), batch[:1])
        self.assertEqual(decode_frame(b"".join(encode(m) for m in batch)), batch)

    @BOUNDED
    @given(st.lists(messages, min_size=1, max_size=3))
    def test_prefixes(self, batch: list[Message]) -> None:
        """A frame cut inside a message is a ProtocolError; cut between messages, it holds the ones before."""
        encoded = [encode(m) for m in batch]
        data = b"".join(encoded)
        boundaries = {sum(map(len, encoded[:count])): count for count in range(1, len(batch) + 1)}
        for cut in range(len(data)):
            if cut in boundaries:
                self.assertEqual(decode_frame(data[:cut]), batch[: boundaries[cut]])
            else:
                with self.assertRaises(ProtocolError, msg=f"cut at {cut} of {len(data)}"):
                    decode_frame(data[:cut])


class ConnectionFuzzTests(SynchronousTestCase):
    """The connection cores raise only ProtocolError, in any state."""

    @BOUNDED
    @given(st.lists(hostile_frames, min_size=1, max_size=3))
    def test_server(self, frames: list[bytes]) -> None:
        """A server before hello, open (a call and a timeout pending) or closed raises only ProtocolError."""
        handshaking: ServerConnection[str] = ServerConnection("fuzz", 5.0, 15.0)
        self.assertLessEqual(_feed(handshaking, frames), len(frames))
        server = _open_server()
        _feed(server, frames)
        self.assertLessEqual(server.pending_count, 1)
        closed = _open_server()
        self.assertEqual(closed.closed(), ["pending"])
        self.assertEqual(_feed(closed, frames), len(frames))
        self.assertEqual(closed.frames_to_send(), [])

    @BOUNDED
    @given(st.lists(hostile_frames, min_size=1, max_size=3))
    def test_client(self, frames: list[bytes]) -> None:
        """A client before welcome, open (a call and a timeout pending) or closed raises only ProtocolError."""
        handshaking: ClientConnection[str] = ClientConnection()
        self.assertLessEqual(_feed(handshaking, frames), len(frames))
        client = _open_client()
        _feed(client, frames)
        self.assertLessEqual(client.pending_count, 1)
        closed = _open_client()
        self.assertEqual(closed.closed(), ["pending"])
        self.assertEqual(_feed(closed, frames), len(frames))
        self.assertEqual(closed.frames_to_send(), [])
