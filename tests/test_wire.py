"""
Tests for the wire format (L{twisted_hub._core.wire}): the byte-exact examples of
docs/protocol.md, and the shape rules the decoder enforces.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from twisted.trial.unittest import SynchronousTestCase

from twisted_hub._core.wire import (
    SUBPROTOCOL,
    Ack,
    ClientHeartbeat,
    ClientHeartbeatAck,
    ClientInvoke,
    Close,
    CloseCode,
    Error,
    Hello,
    Invoke,
    Message,
    MessageKind,
    Notify,
    ProtocolError,
    ReceiverCall,
    Result,
    Resume,
    Resumed,
    ResumeReason,
    ResumeRefused,
    ServerHeartbeat,
    ServerHeartbeatAck,
    SessionGrant,
    StreamCancel,
    StreamCredit,
    StreamEnd,
    StreamInvoke,
    StreamItem,
    Token,
    TokenResult,
    TooManyMessagesError,
    Welcome,
    decode_frame,
    encode,
    encode_fields,
)

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

_BLOCK = re.compile(r"^```(wire|wire-invalid)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class FrameExample:
    """One ```wire block: message arrays and the frame payload they make."""

    line: int
    arrays: list[list[Any]]
    payload: bytes


@dataclass(frozen=True)
class InvalidExample:
    """One hex/why pair of a ```wire-invalid block."""

    line: int
    payload: bytes
    why: str


def _hex(text: str, line: int) -> bytes:
    pairs = text.split()
    if not pairs or not all(re.fullmatch(r"[0-9a-f]{2}", pair) for pair in pairs):
        raise ValueError(f"protocol.md line {line}: hex must be space-separated lower-case byte pairs")
    return bytes(int(pair, 16) for pair in pairs)


def parse_examples(text: str) -> tuple[list[FrameExample], list[InvalidExample]]:
    """Every ```wire and ```wire-invalid example of a protocol document."""
    frames: list[FrameExample] = []
    invalid: list[InvalidExample] = []
    for block in _BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(2)) + 1
        lines = [
            (first_line + offset, raw.strip())
            for offset, raw in enumerate(block.group(2).splitlines())
            if raw.strip()
        ]
        if block.group(1) == "wire":
            arrays: list[list[Any]] = []
            payload: bytes | None = None
            for number, line in lines:
                label, _, value = line.partition(":")
                if label == "msg" and payload is None:
                    arrays.append(ast.literal_eval(value.strip()))
                elif label == "hex" and payload is None and arrays:
                    payload = _hex(value, number)
                else:
                    raise ValueError(f"protocol.md line {number}: unexpected {line!r}")
            if payload is None:
                raise ValueError(f"protocol.md line {first_line}: wire block without hex")
            frames.append(FrameExample(first_line, arrays, payload))
        else:
            if len(lines) % 2:
                raise ValueError(f"protocol.md line {first_line}: hex/why lines must pair up")
            for (number, hex_line), (_, why_line) in zip(lines[::2], lines[1::2]):
                if not (hex_line.startswith("hex:") and why_line.startswith("why:")):
                    raise ValueError(f"protocol.md line {number}: expected hex: then why:")
                invalid.append(InvalidExample(number, _hex(hex_line[4:], number), why_line[4:].strip()))
    return frames, invalid


def message_from_array(array: list[Any]) -> Message:
    """
    Build the message object an array describes, without the decoder (so the
    decoder can be checked against it).
    """
    kind, rest = array[0], array[1:]
    if kind == MessageKind.HELLO:
        return Hello(rest[0].get("caps", []), rest[0].get("max"))
    if kind == MessageKind.WELCOME:
        info = rest[0]
        interval, timeout = info.get("hb") or (None, None)
        return Welcome(info.get("caps", []), info.get("id", ""), interval, timeout, info.get("max"), info.get("expires_in"))
    classes: dict[int, Any] = {
        MessageKind.INVOKE: Invoke,
        MessageKind.NOTIFY: Notify,
        MessageKind.RESULT: Result,
        MessageKind.ERROR: Error,
        MessageKind.RECEIVER_CALL: ReceiverCall,
        MessageKind.CLIENT_INVOKE: ClientInvoke,
        MessageKind.CLOSE: Close,
        MessageKind.SERVER_HEARTBEAT: ServerHeartbeat,
        MessageKind.SERVER_HEARTBEAT_ACK: ServerHeartbeatAck,
        MessageKind.CLIENT_HEARTBEAT: ClientHeartbeat,
        MessageKind.CLIENT_HEARTBEAT_ACK: ClientHeartbeatAck,
        MessageKind.TOKEN: Token,
        MessageKind.TOKEN_RESULT: TokenResult,
        MessageKind.SESSION: SessionGrant,
        MessageKind.RESUME: Resume,
        MessageKind.RESUMED: Resumed,
        MessageKind.RESUME_REFUSED: ResumeRefused,
        MessageKind.ACK: Ack,
        MessageKind.STREAM_ITEM: StreamItem,
        MessageKind.STREAM_END: StreamEnd,
        MessageKind.STREAM_CREDIT: StreamCredit,
        MessageKind.STREAM_CANCEL: StreamCancel,
    }
    if kind == MessageKind.STREAM_INVOKE:
        call_id, method, args, kwargs, credit, *streams = rest
        return StreamInvoke(call_id, method, args, kwargs, streams[0] if streams else None, credit)
    message: Message = classes[kind](*rest)
    return message


def _load() -> tuple[list[FrameExample], list[InvalidExample]]:
    return parse_examples(PROTOCOL_MD.read_text(encoding="utf-8"))


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


class ProtocolDocumentExamplesTests(SynchronousTestCase):
    """The hex examples of docs/protocol.md are exactly what the code does."""

    def test_examplesPresent(self) -> None:
        """The document has an example of every message kind and a batched frame."""
        frames, invalid = _load()
        kinds = {array[0] for example in frames for array in example.arrays}
        resume = set(range(MessageKind.SESSION, MessageKind.ACK + 1))
        self.assertEqual(kinds, set(range(MessageKind.STREAM_CANCEL + 1)) | resume)
        self.assertTrue(any(len(example.arrays) > 1 for example in frames))
        self.assertGreaterEqual(len(invalid), 5)

    def test_literalsMatchHex(self) -> None:
        """Each example's message arrays, packed with msgpack, give its hex."""
        for example in _load()[0]:
            packed = b"".join(_pack(array) for array in example.arrays)
            self.assertEqual(packed.hex(" "), example.payload.hex(" "), f"protocol.md line {example.line}")

    def test_encoderProducesHex(self) -> None:
        """encode() of each example's message objects produces exactly its bytes."""
        for example in _load()[0]:
            encoded = b"".join(encode(message_from_array(array)) for array in example.arrays)
            self.assertEqual(encoded.hex(" "), example.payload.hex(" "), f"protocol.md line {example.line}")

    def test_encodeFieldsProducesHex(self) -> None:
        """encode_fields() of each example's arrays (the hot path) produces its bytes."""
        for example in _load()[0]:
            encoded = b"".join(encode_fields(array) for array in example.arrays)
            self.assertEqual(encoded, example.payload, f"protocol.md line {example.line}")

    def test_decoderReadsHex(self) -> None:
        """decode_frame() of each example's bytes gives back its messages, in order."""
        for example in _load()[0]:
            expected = [message_from_array(array) for array in example.arrays]
            self.assertEqual(decode_frame(example.payload), expected, f"protocol.md line {example.line}")

    def test_invalidExamplesRejected(self) -> None:
        """Every wire-invalid example of the document raises ProtocolError."""
        for example in _load()[1]:
            with self.assertRaises(ProtocolError, msg=f"protocol.md line {example.line}: {example.why}"):
                decode_frame(example.payload)

    def test_subprotocolDocumented(self) -> None:
        """The document names the subprotocol the code speaks."""
        self.assertIn(f"`{SUBPROTOCOL}`", PROTOCOL_MD.read_text(encoding="utf-8"))


class ExampleParserTests(SynchronousTestCase):
    """The example parser itself fails loudly on malformed blocks."""

    def test_parsesBatch(self) -> None:
        """Several msg lines before one hex line make one batched example."""
        text = "```wire\nmsg: [10, 1]\nmsg: [10, 2]\nhex: 92 0a 01 92 0a 02\n```\n"
        frames, invalid = parse_examples(text)
        self.assertEqual([(f.arrays, f.payload) for f in frames], [([[10, 1], [10, 2]], b"\x92\x0a\x01\x92\x0a\x02")])
        self.assertEqual(invalid, [])

    def test_rejectsBadHex(self) -> None:
        """Upper-case or unpaired hex digits are a parse error, not silently skipped."""
        self.assertRaises(ValueError, parse_examples, "```wire\nmsg: [10, 1]\nhex: 92 0A 1\n```\n")

    def test_rejectsMissingHex(self) -> None:
        """A wire block without a hex line is a parse error."""
        self.assertRaises(ValueError, parse_examples, "```wire\nmsg: [10, 1]\n```\n")


def _frame(*values: Any) -> bytes:
    return b"".join(_pack(value) for value in values)


class EncodeTests(SynchronousTestCase):
    """Encoder details the examples do not show."""

    def test_emptyKwargsOmitted(self) -> None:
        """A call with no keyword arguments (None or {}) encodes without the kwargs element."""
        self.assertEqual(encode(Invoke(1, "m", [], {})), _frame([2, 1, "m", []]))
        self.assertEqual(encode(Notify("m", [], None)), _frame([3, "m", []]))
        self.assertEqual(encode(ReceiverCall("m", [1], {})), _frame([6, "m", [1]]))
        self.assertEqual(encode(ClientInvoke(4, "m", [], None)), _frame([7, 4, "m", []]))

    def test_errorAlwaysHasDetail(self) -> None:
        """An error without detail still encodes five elements, the last nil."""
        self.assertEqual(encode(Error(3, "c", "m")), _frame([5, 3, "c", "m", None]))

    def test_welcomeWithoutIntervalDropsTimeout(self) -> None:
        """A welcome without a heartbeat interval carries no hb entry at all."""
        self.assertEqual(encode(Welcome(["batch"], "x", None, 5.0)), _frame([1, {"caps": ["batch"], "id": "x"}]))

    def test_binaryStaysBinary(self) -> None:
        """bytes encode as msgpack bin and str as msgpack str."""
        self.assertEqual(encode(Result(1, [b"\x00", "a"])), bytes.fromhex("93 04 01 92 c4 01 00 a1 61"))


class DecodeTests(SynchronousTestCase):
    """The decoder accepts the documented optional forms."""

    def test_shortForms(self) -> None:
        """Optional trailing fields may be left out or nil."""
        self.assertEqual(
            decode_frame(_frame([5, 1, "c", "m"], [9, 1, 2], [2, 1, "m", [], None], [3, "m", [], None])),
            [Error(1, "c", "m", None), ServerHeartbeat(1, 2, None), Invoke(1, "m", [], None), Notify("m", [], None)],
        )

    def test_widerIntegersAccepted(self) -> None:
        """A non-shortest integer encoding (uint16 call id) decodes like the short one."""
        self.assertEqual(decode_frame(bytes.fromhex("93 04 cd 00 01 01")), [Result(1, 1)])

    def test_helloMissingCapsAndExtraKeys(self) -> None:
        """A hello without caps has none; unknown keys are ignored."""
        self.assertEqual(decode_frame(_frame([0, {"future": 1}])), [Hello([])])
        for bad_max in (0, -5, 1.5, "1", True):
            self.assertRaises(ProtocolError, decode_frame, _frame([0, {"caps": [], "max": bad_max}]))
            self.assertRaises(ProtocolError, decode_frame, _frame([1, {"caps": [], "max": bad_max}]))

    def test_welcomeIntegerHeartbeat(self) -> None:
        """Welcome heartbeat settings may be integers, and the timeout nil."""
        self.assertEqual(decode_frame(_frame([1, {"hb": [20, None]}])), [Welcome([], "", 20, None)])

    def test_negativeClientTime(self) -> None:
        """The client time of a client heartbeat is opaque: negative values are fine."""
        self.assertEqual(
            decode_frame(_frame([11, 1, -5], [12, 1, -5, 7])),
            [ClientHeartbeat(1, -5), ClientHeartbeatAck(1, -5, 7)],
        )

    def test_largestIds(self) -> None:
        """Call ids and sequences use the full unsigned 64-bit range."""
        top = 2**64 - 1
        self.assertEqual(decode_frame(encode(Result(top, None))), [Result(top, None)])
        self.assertEqual(decode_frame(encode(ServerHeartbeatAck(top))), [ServerHeartbeatAck(top)])


class DecodeRejectionTests(SynchronousTestCase):
    """Every shape rule of the decoder raises ProtocolError when broken."""

    def assertRejected(self, *values: Any) -> ProtocolError:
        """Assert that a frame of these msgpack values is a protocol error."""
        error: ProtocolError = self.assertRaises(ProtocolError, decode_frame, _frame(*values))
        return error

    def test_emptyFrame(self) -> None:
        """An empty frame is a protocol error."""
        error = self.assertRaises(ProtocolError, decode_frame, b"")
        self.assertIn("empty", str(error))

    def test_notAnArray(self) -> None:
        """A message that is not an array (nil, int, map, str) is rejected."""
        for value in (None, 2, {"kind": 2}, "invoke"):
            self.assertRejected(value)

    def test_emptyArray(self) -> None:
        """An empty array has no kind and is rejected."""
        self.assertRejected([])

    def test_unknownKind(self) -> None:
        """Kinds beyond 24 (20-24 are reserved for resume), negative kinds and non-integer kinds are rejected."""
        for kind in (25, 99, -1):
            error = self.assertRejected([kind, 1])
            self.assertIn("unknown message kind", str(error))
        odd_kinds: list[Any] = [True, False, 2.0, "2", None, [2]]
        for odd in odd_kinds:
            self.assertRejected([odd, 1, "m", []])

    def test_wrongLengths(self) -> None:
        """Each kind rejects arrays shorter or longer than it allows."""
        bad: list[list[Any]] = [
            [0],
            [0, {}, 1],
            [1],
            [1, {}, 1],
            [2, 1, "m"],
            [2, 1, "m", [], {}, 1],
            [3, "m"],
            [3, "m", [], {}, 1],
            [4, 1],
            [4, 1, 2, 3],
            [5, 1, "c"],
            [5, 1, "c", "m", None, 1],
            [6, "m"],
            [6, "m", [], {}, 1],
            [7, 1, "m"],
            [7, 1, "m", [], {}, 1],
            [8, 1000],
            [8, 1000, "r", 1],
            [9, 1],
            [9, 1, 2, None, 1],
            [10],
            [10, 1, 2, 3],
            [11, 1],
            [11, 1, 2, 3, 4],
            [12, 1, 2],
            [12, 1, 2, 3, 4, 5],
        ]
        for array in bad:
            with self.assertRaises(ProtocolError, msg=repr(array)):
                decode_frame(_frame(array))

    def test_negativeCallId(self) -> None:
        """A negative call id is rejected in every message that carries one."""
        for array in ([2, -1, "m", []], [4, -1, None], [5, -1, "c", "m"], [7, -1, "m", []]):
            with self.assertRaises(ProtocolError, msg=repr(array)):
                decode_frame(_frame(array))

    def test_boolCallId(self) -> None:
        """A boolean is not a call id, although Python's True == 1."""
        for array in ([2, True, "m", []], [4, True, None], [5, False, "c", "m"], [7, True, "m", []]):
            with self.assertRaises(ProtocolError, msg=repr(array)):
                decode_frame(_frame(array))

    def test_nonIntegerCallId(self) -> None:
        """Float, string and nil call ids are rejected."""
        for call_id in (1.0, "1", None):
            self.assertRejected([4, call_id, None])

    def test_methodMustBeString(self) -> None:
        """The method name of every call kind must be a str (not bin, not int)."""
        arrays: list[list[Any]] = [[2, 1, b"m", []], [3, 1, []], [6, None, []], [7, 1, 5, []]]
        for array in arrays:
            with self.assertRaises(ProtocolError, msg=repr(array)):
                decode_frame(_frame(array))

    def test_argsMustBeArray(self) -> None:
        """Positional arguments must be an array, not a map or nil."""
        for array in ([2, 1, "m", {}], [3, "m", None], [6, "m", "x"], [7, 1, "m", 1]):
            with self.assertRaises(ProtocolError, msg=repr(array)):
                decode_frame(_frame(array))

    def test_kwargsMustBeStringKeyedMap(self) -> None:
        """Keyword arguments must be a map with str keys (bin keys rejected too)."""
        for kwargs in ([1], "x", {b"k": 1}):
            for array in ([2, 1, "m", [], kwargs], [3, "m", [], kwargs], [6, "m", [], kwargs], [7, 1, "m", [], kwargs]):
                with self.assertRaises(ProtocolError, msg=repr(array)):
                    decode_frame(_frame(array))

    def test_mapKeys(self) -> None:
        """Scalar map keys pass in values; kwargs keys must be str; an array key is rejected anywhere."""
        self.assertRejected([2, 1, "m", [], {1: 2}])
        self.assertEqual(decode_frame(msgpack.packb([4, 1, {1: "a", None: 2}])), [Result(1, {1: "a", None: 2})])
        self.assertRaises(ProtocolError, decode_frame, bytes.fromhex("93 04 01 81 91 01 02"))

    def test_errorFieldsMustBeStrings(self) -> None:
        """An error's code and message must be str."""
        self.assertRejected([5, 1, 1, "m"])
        self.assertRejected([5, 1, "c", None])

    def test_closeFields(self) -> None:
        """A close needs an integer code (not bool) and a str reason."""
        self.assertRejected([8, "1000", "r"])
        self.assertRejected([8, True, "r"])
        self.assertRejected([8, 1000, None])

    def test_heartbeatFields(self) -> None:
        """Heartbeat sequences and server times must be unsigned integers; metadata bin or nil."""
        bad: list[list[Any]] = [
            [9, -1, 0, None],
            [9, 1, -1, None],
            [9, True, 0, None],
            [9, 1, 1.5, None],
            [9, 1, 0, "text"],
            [9, 1, 0, 7],
            [10, -1],
            [10, True],
            [10, "1"],
            [11, -1, 0],
            [11, 1, 1.0],
            [11, 1, True],
            [12, 1, 0, -1],
            [12, -1, 0, 0],
            [12, 1, None, 0],
        ]
        for array in bad:
            with self.assertRaises(ProtocolError, msg=repr(array)):
                decode_frame(_frame(array))

    def test_helloShape(self) -> None:
        """Hello info must be a map and caps an array of str."""
        infos: list[Any] = [None, [], "caps", {"caps": "batch"}, {"caps": [1]}, {"caps": None}]
        for info in infos:
            with self.assertRaises(ProtocolError, msg=repr(info)):
                decode_frame(_frame([0, info]))

    def test_welcomeShape(self) -> None:
        """Welcome id must be str and hb a pair of numbers (timeout may be nil)."""
        infos: list[Any] = [
            [],
            {"id": 5},
            {"caps": [None]},
            {"hb": 5},
            {"hb": [1]},
            {"hb": [1, 2, 3]},
            {"hb": ["1", 2]},
            {"hb": [None, 2]},
            {"hb": [1, "2"]},
            {"hb": [True, 2]},
        ]
        for info in infos:
            with self.assertRaises(ProtocolError, msg=repr(info)):
                decode_frame(_frame([1, info]))

    def test_truncatedFrame(self) -> None:
        """A frame cut short inside its only (or a later) message is rejected."""
        whole = _frame([2, 1, "echo", [1, 2, 3]], [10, 5])
        for cut in range(1, len(whole)):
            if cut == len(_frame([2, 1, "echo", [1, 2, 3]])):
                continue  # a complete first message: valid on its own
            with self.assertRaises(ProtocolError, msg=f"cut at {cut}"):
                decode_frame(whole[:cut])

    def test_trailingGarbage(self) -> None:
        """Bytes after a complete message that are not a message are rejected."""
        valid = _frame([4, 1, 1])
        for tail in (b"\xc1", b"\x01", b"\xc0", b"\x93\x04", b"\xa1"):
            with self.assertRaises(ProtocolError, msg=tail.hex()):
                decode_frame(valid + tail)

    def test_invalidUtf8(self) -> None:
        """A str that is not valid UTF-8 is rejected."""
        self.assertRaises(ProtocolError, decode_frame, bytes.fromhex("93 06 a1 ff 90"))

    def test_deepNesting(self) -> None:
        """Absurdly deep nesting is a protocol error, not a crash."""
        payload = bytes.fromhex("93 04 01") + b"\x91" * 100_000 + b"\xc0"
        self.assertRaises(ProtocolError, decode_frame, payload)

    def test_errorInLaterMessage(self) -> None:
        """One bad message in a batch makes the whole frame invalid."""
        self.assertRejected([4, 1, 1], [4, -1, 1])


class MessagesPerFrameTests(SynchronousTestCase):
    """decode_frame's bound on the number of messages in one frame."""

    def test_atTheLimitDecodes(self) -> None:
        """A frame with exactly max_messages messages decodes whole."""
        frame = _frame(*([10, n] for n in range(1, 6)))
        self.assertEqual(decode_frame(frame, max_messages=5), [ServerHeartbeatAck(n) for n in range(1, 6)])

    def test_overTheLimitRaises(self) -> None:
        """One message more than max_messages raises TooManyMessagesError, a ProtocolError."""
        frame = _frame(*([10, n] for n in range(1, 7)))
        with self.assertRaises(TooManyMessagesError) as caught:
            decode_frame(frame, max_messages=5)
        self.assertIsInstance(caught.exception, ProtocolError)
        self.assertIn("more than 5 messages", str(caught.exception))

    def test_limitOfOne(self) -> None:
        """max_messages=1 takes a single message and refuses a second one."""
        self.assertEqual(decode_frame(_frame([10, 1]), max_messages=1), [ServerHeartbeatAck(1)])
        self.assertRaises(TooManyMessagesError, decode_frame, _frame([10, 1], [10, 2]), max_messages=1)

    def test_stopsDecodingAtTheLimit(self) -> None:
        """The count is checked while decoding: garbage after the limit is never reached."""
        frame = _frame([10, 1], [10, 2], [10, 3]) + b"\xc1" * 100
        self.assertRaises(TooManyMessagesError, decode_frame, frame, max_messages=2)
        # without a limit, the same frame is malformed (the garbage is read)
        with self.assertRaises(ProtocolError) as caught:
            decode_frame(frame)
        self.assertNotIsInstance(caught.exception, TooManyMessagesError)

    def test_noLimitByDefault(self) -> None:
        """Without max_messages any number of messages decodes."""
        frame = _frame(*([10, n] for n in range(1, 3001)))
        self.assertEqual(len(decode_frame(frame)), 3000)


class CloseCodeTypeTests(SynchronousTestCase):
    def test_close_codes_pass_autobahn_send_close(self) -> None:
        """Every CloseCode is exactly an int, so autobahn's sendClose (which checks type(code) is int) takes it."""
        from autobahn.twisted.websocket import WebSocketServerProtocol

        sent: list[tuple[int | None, bytes | None]] = []
        protocol = WebSocketServerProtocol()
        protocol.sendCloseFrame = lambda code=None, reasonUtf8=None, isReply=False: sent.append((code, reasonUtf8))
        codes = [value for name, value in vars(CloseCode).items() if name.isupper()]
        self.assertGreater(len(codes), 10)
        for code in codes:
            self.assertIs(type(code), int)
            if code == CloseCode.NORMAL or 3000 <= code <= 4999:
                protocol.sendClose(code, "why")
        self.assertEqual([code for code, _ in sent], [c for c in codes if c == 1000 or 3000 <= c <= 4999])


_TOKEN = bytes(range(32))


class ResumeMessageTests(SynchronousTestCase):
    """Kinds 20-24 and the heartbeats' acknowledgement field (capability resume)."""

    def test_roundTrip(self) -> None:
        """Every resume message, and every heartbeat with and without ack, decodes back to itself."""
        messages: list[Message] = [
            SessionGrant(_TOKEN, 120.0),
            SessionGrant(b"t" * 16, 5),
            SessionGrant(b"t" * 64, 0.5),
            Resume(_TOKEN, 0),
            Resume(_TOKEN, 2**64 - 1),
            Resume(_TOKEN, 3, 0),
            Resume(_TOKEN, 0, 2**64 - 1),
            Resumed(17, _TOKEN, "5f3a9c01-7"),
            Resumed(0, _TOKEN, ""),
            ResumeRefused(ResumeReason.WINDOW_EXPIRED, "the session outlived its window"),
            ResumeRefused("some-future-reason", ""),
            Ack(0),
            Ack(2**64 - 1),
            ServerHeartbeatAck(7),
            ServerHeartbeatAck(7, 0),
            ClientHeartbeat(3, -5),
            ClientHeartbeat(3, -5, 12),
            ClientHeartbeatAck(3, -5, 99),
            ClientHeartbeatAck(3, -5, 99, 12),
        ]
        for message in messages:
            self.assertEqual(decode_frame(encode(message)), [message], repr(message))
            self.assertEqual(encode_fields(message.fields()), encode(message))

    def test_allReasonsDistinct(self) -> None:
        self.assertEqual(
            ResumeReason.ALL,
            ("window-expired", "buffer-overflowed", "session-unknown", "backplane-state-lost", "token-invalid"),
        )

    def test_ackLeftOutWhenNone(self) -> None:
        """Without an ack the heartbeats are exactly their version-1 arrays."""
        self.assertEqual(ServerHeartbeatAck(7).fields(), [10, 7])
        self.assertEqual(ClientHeartbeat(3, 1).fields(), [11, 3, 1])
        self.assertEqual(ClientHeartbeatAck(3, 1, 2).fields(), [12, 3, 1, 2])

    def test_tokenNeverInRepr(self) -> None:
        """The messages that carry a session token show only its length."""
        for message in (SessionGrant(_TOKEN, 1.0), Resume(_TOKEN, 1), Resumed(1, _TOKEN, "c")):
            self.assertNotIn(repr(_TOKEN), repr(message))
            self.assertNotIn(_TOKEN.hex(), repr(message))
            self.assertIn("<32 bytes>", repr(message))

    def assertRejected(self, array: list[Any], reason: str) -> None:
        with self.assertRaises(ProtocolError, msg=repr(array)) as caught:
            decode_frame(_pack(array))
        self.assertIn(reason, str(caught.exception), repr(array))

    def test_malformed(self) -> None:
        """Every malformed variant of kinds 20-24 and of the ack fields is a protocol error."""
        bad: list[tuple[list[Any], str]] = [
            ([20, _TOKEN], "expected 3..3"),
            ([20, _TOKEN, 1.0, 1], "expected 3..3"),
            ([20, "text-token-of-enough-bytes-32xxx", 1.0], "token must be binary"),
            ([20, None, 1.0], "token must be binary"),
            ([20, b"x" * 15, 1.0], "token must be 16..64 bytes, got 15"),
            ([20, b"x" * 65, 1.0], "got 65"),
            ([20, _TOKEN, 0], "window must be"),
            ([20, _TOKEN, -1.0], "window must be"),
            ([20, _TOKEN, None], "window must be"),
            ([20, _TOKEN, True], "window must be"),
            ([20, _TOKEN, "120"], "window must be"),
            ([21, _TOKEN], "expected 3..4"),
            ([21, _TOKEN, 1, 2, 3], "expected 3..4"),
            ([21, _TOKEN, 1, -2], "sent must be an unsigned integer"),
            ([21, _TOKEN, 1, None], "sent must be an unsigned integer"),
            ([21, _TOKEN, 1, 2.0], "sent must be an unsigned integer"),
            ([21, _TOKEN, -1], "received must be an unsigned integer"),
            ([21, _TOKEN, True], "received must be an unsigned integer"),
            ([21, _TOKEN, 1.0], "received must be an unsigned integer"),
            ([21, b"short", 1], "token must be 16..64 bytes"),
            ([21, 1, _TOKEN], "token must be binary"),
            ([22, 1, _TOKEN], "expected 4..4"),
            ([22, 1, _TOKEN, "c", 1], "expected 4..4"),
            ([22, -1, _TOKEN, "c"], "received must be"),
            ([22, _TOKEN, 1, "c"], "received must be"),
            ([22, 1, None, "c"], "token must be binary"),
            ([22, 1, _TOKEN, None], "id must be a string"),
            ([22, 1, _TOKEN, 7], "id must be a string"),
            ([23, "window-expired"], "expected 3..3"),
            ([23, "window-expired", "m", "x"], "expected 3..3"),
            ([23, None, ""], "reason must be a string"),
            ([23, b"window-expired", ""], "reason must be a string"),
            ([23, "window-expired", None], "message must be a string"),
            ([24], "expected 2..2"),
            ([24, 1, 2], "expected 2..2"),
            ([24, -1], "received must be"),
            ([24, False], "received must be"),
            ([24, None], "received must be"),
            ([10, 1, -1], "ack must be an unsigned integer"),
            ([10, 1, True], "ack must be an unsigned integer"),
            ([10, 1, None], "ack must be an unsigned integer"),
            ([11, 1, 2, 1.5], "ack must be an unsigned integer"),
            ([12, 1, 2, 3, "4"], "ack must be an unsigned integer"),
        ]
        for array, reason in bad:
            self.assertRejected(array, reason)
        for kind in (25, 99):
            self.assertRejected([kind, 1], "unknown message kind")
