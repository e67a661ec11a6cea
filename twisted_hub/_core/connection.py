"""
The connection state machine, without I/O (in the manner of h2 and wsproto).

A L{ServerConnection} or L{ClientConnection} takes whole WebSocket frames and
an explicit C{now}, and returns events; what it wants sent accumulates in an
outbox that the adapter drains with L{Connection.frames_to_send}.  Messages
written in one go (while handling one frame, or inside a batch) leave as one
frame.  It answers heartbeats itself, matches results to pending calls and
enforces the handshake; it never touches a socket or a timer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .base_error import HubArgumentError
from .heartbeat import ClockOffset, ClockSync, HeartbeatTracker
from .resume_link import SEQUENCED_KINDS, ResumeLink
from .sentinel import UNSET, Unset
from .wire import (
    BATCH_MESSAGES,
    CAP_BATCH,
    CAP_HEARTBEAT,
    CAP_RESUME,
    CAP_STREAM,
    CAP_TOKEN_REFRESH,
    OUR_CAPABILITIES,
    Ack,
    ClientHeartbeat,
    ClientHeartbeatAck,
    ClientInvoke,
    Close,
    Error,
    ErrorCode,
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
    Welcome,
    decode_frame,
    encode,
    encode_fields,
    to_us,
)

T = TypeVar("T")

#: A batch is closed before it would exceed this many bytes (a bigger message
#: goes alone).  Batching saves per-frame work for small messages; for large
#: ones it saves nothing and serialises the pipeline instead: the peer can
#: handle no message of a frame until all of it has arrived, so frames as large
#: as the peer's 1 MiB limit left both sides waiting on each other
#: (docs/performance.md, "What stalled, what was slow, what changed").
BATCH_BYTES = 64 * 1024

_RESULT = MessageKind.RESULT
_ERROR = MessageKind.ERROR


#: The trailing ack of kinds 10-12 and ACK belong to the capability "resume"
#: (docs/protocol.md section 10): from a peer without it they are protocol errors.
_ACK_WITHOUT_RESUME = "an acknowledgement arrived, but resume was not negotiated"

class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    #: open at the WebSocket level, hub handshake (hello/welcome) not done
    HANDSHAKING = "handshaking"
    OPEN = "open"
    #: we decided to close (or the peer announced it); nothing more is sent
    CLOSING = "closing"
    CLOSED = "closed"


# Which message kinds each side may receive.
_SERVER_ACCEPTS = frozenset(
    {
        MessageKind.HELLO,
        MessageKind.INVOKE,
        MessageKind.NOTIFY,
        MessageKind.RESULT,
        MessageKind.ERROR,
        MessageKind.CLOSE,
        MessageKind.SERVER_HEARTBEAT_ACK,
        MessageKind.CLIENT_HEARTBEAT,
        MessageKind.STREAM_INVOKE,
        MessageKind.STREAM_ITEM,
        MessageKind.STREAM_END,
        MessageKind.STREAM_CREDIT,
        MessageKind.STREAM_CANCEL,
    }
)
_CLIENT_ACCEPTS = frozenset(
    {
        MessageKind.WELCOME,
        MessageKind.RESULT,
        MessageKind.ERROR,
        MessageKind.RECEIVER_CALL,
        MessageKind.CLIENT_INVOKE,
        MessageKind.CLOSE,
        MessageKind.SERVER_HEARTBEAT,
        MessageKind.CLIENT_HEARTBEAT_ACK,
        MessageKind.TOKEN_RESULT,
        MessageKind.STREAM_ITEM,
        MessageKind.STREAM_END,
        MessageKind.STREAM_CREDIT,
        MessageKind.STREAM_CANCEL,
    }
)
#: the stream messages (capability C{stream}): handed to the session's L{twisted_hub._core.streams.StreamTable}
STREAM_MESSAGES = (StreamItem, StreamEnd, StreamCredit, StreamCancel)
#: what a server that takes fresh tokens accepts besides (it announced C{token-refresh})
_SERVER_ACCEPTS_WITH_REFRESH = _SERVER_ACCEPTS | {MessageKind.TOKEN}
#: what a server that announced C{resume} accepts besides (RESUME only right after HELLO in its frame)
_RESUME_FROM_CLIENT = frozenset({MessageKind.RESUME, MessageKind.ACK})
#: what a client that announced C{resume} accepts besides
_RESUME_FROM_SERVER = frozenset({MessageKind.SESSION, MessageKind.RESUMED, MessageKind.RESUME_REFUSED, MessageKind.ACK})

#: at most this many distinct capability sets are shared (the peers choose them)
MAX_SHARED_CAPABILITY_SETS = 64
_capability_sets: dict[tuple[str, ...], frozenset[str]] = {}


def shared_capabilities(capabilities: list[str]) -> frozenset[str]:
    """
    The set of C{capabilities}, one object for every connection that announced
    the same list (and its strings with it): clients of one version announce one
    list, and a set of three strings per connection is 330 bytes
    (C{bench/conn_memory_sites.py}).  Lists past the first
    L{MAX_SHARED_CAPABILITY_SETS} seen get a set of their own.
    """
    key = tuple(capabilities)
    shared = _capability_sets.get(key)
    if shared is None:
        shared = frozenset(capabilities)
        if len(_capability_sets) < MAX_SHARED_CAPABILITY_SETS:
            _capability_sets[key] = shared
    return shared


@dataclass(slots=True)
class CallSucceeded(Generic[T]):
    """A pending call of ours got its result."""

    token: T
    value: Any


@dataclass(slots=True)
class CallFailed(Generic[T]):
    """A pending call of ours got an error response."""

    token: T
    error: Error


@dataclass(slots=True)
class HandshakeCompleted:
    """The hello/welcome exchange is done; the peer supports C{capabilities}."""

    capabilities: frozenset[str]


@dataclass(slots=True)
class HeartbeatAnswered:
    """
    The peer answered our newest heartbeat.

    @ivar latency: full round trip in seconds.
    @ivar clock: the clock-offset sample (client side only).
    """

    sequence: int
    latency: float
    clock: ClockOffset | None = None


@dataclass(slots=True)
class ServerHeartbeatReceived:
    """Client side: the server beat (we have already answered it)."""

    message: ServerHeartbeat


Event = (
    Invoke
    | Notify
    | ClientHeartbeat
    | ReceiverCall
    | ClientInvoke
    | Close
    | CallSucceeded[Any]
    | CallFailed[Any]
    | HandshakeCompleted
    | HeartbeatAnswered
    | ServerHeartbeatReceived
    | Token
    | TokenResult
    | StreamItem
    | StreamEnd
    | StreamCredit
    | StreamCancel
    | SessionGrant
    | Resume
    | Resumed
    | ResumeRefused
)


def receiver_call_payload(method: str, args: list[Any], kwargs: dict[str, Any] | None, own_limit: int) -> bytes:
    """
    One RECEIVER_CALL, encoded once for every connection it goes to.

    @raise HubArgumentError: an argument cannot be encoded (also a
        C{TypeError}, which this raised before), or it is larger than
        C{own_limit} (nothing would take it).
    """
    try:
        payload = encode(ReceiverCall(method, args, kwargs or None))
    except (TypeError, ValueError, OverflowError) as e:
        raise HubArgumentError(f"receiver call {method!r}: an argument cannot be encoded: {e}") from e
    if len(payload) > own_limit:
        raise HubArgumentError(f"receiver call {method!r} is {len(payload)} bytes, over max_message_size")
    return payload


class Connection(Generic[T]):
    """
    The state both sides share: outbox, pending calls, liveness bookkeeping.

    C{T} is whatever the adapter attaches to a pending call (a Deferred).
    """

    _accepts: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self.state = ConnectionState.HANDSHAKING
        self.peer_capabilities: frozenset[str] = frozenset()
        self._outbox: list[bytes] = []
        #: heartbeats and answers to heartbeats: they leave ahead of the outbox
        self._urgent: list[bytes] = []
        self._next_call_id = 1
        self._pending: dict[int, T] = {}
        #: the largest message the peer accepts, from its hello/welcome (None: not announced)
        self.peer_max_message_size: int | None = None
        #: when we last received a frame (any frame), for "any traffic counts"
        self.last_received = 0.0
        #: heartbeats we send and the answers to them
        self.heartbeat = HeartbeatTracker()
        self.frames_received = 0
        self.late_answers = 0
        #: traffic counts, read by the metrics at scrape time (twisted_hub/_metrics.py)
        self.messages_received = 0
        self.messages_sent = 0
        self.bytes_received = 0
        self.client_heartbeats_answered = 0
        #: how many messages the last frame received held
        self.last_frame_messages = 0
        #: the most messages one incoming frame may hold (None: any); over it
        #: L{receive_frame} raises L{TooManyMessagesError} before handling any
        self.max_messages_per_frame: int | None = None
        #: the resumable session's ledger, once resume is negotiated (None: not resumable)
        self.resume: ResumeLink | None = None

    # -- sending ----------------------------------------------------------
    def send(self, message: Message) -> None:
        """Queue one message for the next frame."""
        if self.state is ConnectionState.CLOSED:
            return
        data = encode(message)
        self._outbox.append(data)
        if self.resume is not None:
            self.resume.sent(data)

    def send_urgent(self, message: Message) -> None:
        """
        Queue a heartbeat or an answer to one: it leaves ahead of the
        outbox (L{urgent_frames_to_send}), and the adapter writes it ahead
        of any frames it holds back, so it waits behind as little of our
        own data as possible.  (Buffers past our process -- the kernel's, a
        proxy's -- cannot be overtaken.)
        """
        if self.state is ConnectionState.CLOSED:
            return
        self._urgent.append(encode(message))

    def urgent_frames_to_send(self) -> list[bytes]:
        """The heartbeats and heartbeat answers queued, as frames (batched when the peer takes batches)."""
        urgent = self._urgent
        if not urgent:
            return []
        self._urgent = []
        self.messages_sent += len(urgent)
        if len(urgent) == 1 or CAP_BATCH not in self.peer_capabilities:
            return urgent
        return [b"".join(urgent[i : i + BATCH_MESSAGES]) for i in range(0, len(urgent), BATCH_MESSAGES)]

    def queue_payload(self, payload: bytes) -> bool:
        """
        Queue one already-encoded message (a receiver call encoded once for
        many connections).  Return False, queueing nothing, when it is larger
        than the peer announced it accepts (the peer would close with 1009).
        """
        if self.state is ConnectionState.CLOSED:
            return True
        limit = self.peer_max_message_size
        if limit is not None and len(payload) > limit:
            return False
        self._outbox.append(payload)
        if self.resume is not None:
            self.resume.sent(payload)
        return True

    def queue_replay(self, payloads: list[bytes]) -> None:
        """Queue messages kept by the ledger again, as they are (a resume's replay: not numbered again)."""
        self._outbox.extend(payloads)

    def drop_outgoing(self) -> None:
        """Forget what is queued (the session is detached: the ledger keeps what counts)."""
        self._outbox = []
        self._urgent = []

    def send_limit(self, own_limit: int) -> int:
        """The largest frame we may send: our own limit, or the peer's if it announced a smaller one."""
        peer = self.peer_max_message_size
        return own_limit if peer is None or peer >= own_limit else peer

    def frames_to_send(self, max_size: int | None = None) -> list[bytes]:
        """
        Everything queued, as frame payloads: the urgent ones first
        (L{urgent_frames_to_send}; an adapter that holds frames back takes
        those first, to write them ahead), then the outbox in batches when
        the peer takes them (each at most C{max_size} and at most
        L{BATCH_BYTES} bytes unless one message is larger, and at most
        L{BATCH_MESSAGES} messages), else one frame per message.
        """
        urgent = self.urgent_frames_to_send() if self._urgent else []
        outbox = self._outbox
        if not outbox:
            return urgent
        if urgent:
            return urgent + self.frames_to_send(max_size)
        self._outbox = []
        self.messages_sent += len(outbox)
        if len(outbox) == 1 or CAP_BATCH not in self.peer_capabilities:
            return outbox
        limit = BATCH_BYTES if max_size is None or max_size > BATCH_BYTES else max_size
        frames: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for message in outbox:
            if batch and (len(batch) == BATCH_MESSAGES or size + len(message) > limit):
                frames.append(b"".join(batch))
                batch, size = [], 0
            batch.append(message)
            size += len(message)
        frames.append(b"".join(batch))
        return frames

    @property
    def has_outgoing(self) -> bool:
        return bool(self._outbox) or bool(self._urgent)

    # -- our own calls ----------------------------------------------------
    @property
    def next_call_id(self) -> int:
        """The id our next call to the peer gets (ids of a resumable session go on across nodes)."""
        return self._next_call_id

    @next_call_id.setter
    def next_call_id(self, call_id: int) -> None:
        self._next_call_id = call_id

    def _register_call(self, token: T) -> int:
        call_id = self._next_call_id
        self._next_call_id = call_id + 1
        self._pending[call_id] = token
        return call_id

    def forget_call(self, call_id: int) -> T | None:
        """Drop a pending call (it timed out); a late answer is then ignored."""
        return self._pending.pop(call_id, None)

    def take_all_pending(self) -> list[T]:
        """Remove and return every pending call (the connection is closing)."""
        tokens = list(self._pending.values())
        self._pending.clear()
        return tokens

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def _answer(self, message: Result | Error) -> CallSucceeded[T] | CallFailed[T] | None:
        token = self._pending.pop(message.call_id, None)
        if token is None:
            # The call timed out (or was never made): a late answer is dropped.
            self.late_answers += 1
            return None
        if isinstance(message, Result):
            return CallSucceeded(token, message.value)
        return CallFailed(token, message)

    # -- receiving --------------------------------------------------------
    def receive_frame(self, data: bytes, now: float) -> list[Event]:
        """
        Take one binary frame; return the events it produced.

        @raise ProtocolError: the frame is not valid for this side in this
            state; the adapter closes the connection.
        """
        if self.state is ConnectionState.CLOSED:
            return []
        self.last_received = now
        self.frames_received += 1
        self.bytes_received += len(data)
        messages = decode_frame(data, self.max_messages_per_frame)
        self.messages_received += len(messages)
        self.last_frame_messages = len(messages)
        events: list[Event] = []
        accepts = self._accepts
        for message in messages:  # the whole frame is checked before any message is handled
            if message.kind not in accepts:
                raise ProtocolError(f"message kind {message.kind} is not valid in this direction")
        if messages and type(messages[-1]) is Resume:
            self._check_resume_position(messages)
        for message in messages:
            link = self.resume
            if link is not None and message.kind in SEQUENCED_KINDS:
                link.ledger.received.receive(now)
            event = self._handle(message, now)
            if event is not None:
                events.append(event)
        return events

    def _check_resume_position(self, messages: list[Message]) -> None:
        if len(messages) != 2 or type(messages[0]) is not Hello:
            raise ProtocolError("RESUME must come right after HELLO, in the same frame")

    def _peer_acknowledged(self, received: int | None) -> None:
        """An acknowledgement from the peer (a heartbeat's C{ack} field, or ACK)."""
        if received is None:
            return
        link = self.resume
        if link is None:
            raise ProtocolError(_ACK_WITHOUT_RESUME)
        link.acknowledged(received)

    def our_acknowledgement(self) -> int | None:
        """The C{ack} for a heartbeat message we send now (None: not resumable)."""
        link = self.resume
        return None if link is None else link.acknowledge()

    def _handle(self, message: Message, now: float) -> Event | None:
        raise NotImplementedError()

    def closing(self) -> None:
        """We are closing: send nothing more, stop heartbeat bookkeeping."""
        if self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CLOSING
        self.heartbeat.stop()

    def closed(self) -> list[T]:
        """The transport is gone; return the calls that must now fail."""
        self.state = ConnectionState.CLOSED
        self._outbox = []
        self._urgent = []
        self.heartbeat.stop()
        return self.take_all_pending()




class ServerConnection(Connection[T]):
    """The server side of one hub connection."""

    _accepts = _SERVER_ACCEPTS

    def __init__(
        self,
        connection_id: str,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.connection_id = connection_id
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout

    def welcome(
        self,
        heartbeat_interval: float | None | Unset = UNSET,
        heartbeat_timeout: float | None | Unset = UNSET,
        max_message_size: int | None = None,
        *,
        token_refresh: bool = False,
        expires_in: float | None = None,
        resume: bool = False,
    ) -> None:
        """
        Queue the welcome; call once the WebSocket is open.  The heartbeat
        settings it announces default to the constructor's (the adapter
        passes the final ones, which C{on_connecting} may have changed);
        C{max_message_size} announces the largest message we accept.
        C{token_refresh}: we take fresh access tokens (capability
        C{token-refresh}, message L{Token}); C{expires_in}: seconds left on
        the connection's token.
        """
        if heartbeat_interval is not UNSET:
            self._heartbeat_interval = heartbeat_interval
        if heartbeat_timeout is not UNSET:
            self._heartbeat_timeout = heartbeat_timeout
        capabilities = list(OUR_CAPABILITIES)
        if token_refresh:
            capabilities.append(CAP_TOKEN_REFRESH)
            self._accepts = _SERVER_ACCEPTS_WITH_REFRESH
        if resume:
            capabilities.append(CAP_RESUME)
            self._accepts = self._accepts | _RESUME_FROM_CLIENT
        self.send(
            Welcome(
                capabilities,
                self.connection_id,
                self._heartbeat_interval,
                self._heartbeat_timeout if self._heartbeat_interval is not None else None,
                max_message_size,
                expires_in,
            )
        )

    def adopt_handshake(self, fresh: ServerConnection[Any]) -> None:
        """
        A resumed session goes on over C{fresh}'s connection: take what its
        handshake settled (the client's capabilities and limit, the kinds we
        accept, its heartbeat bookkeeping); keep our calls, ids and ledger.
        """
        self.peer_capabilities = fresh.peer_capabilities
        self.peer_max_message_size = fresh.peer_max_message_size
        self._accepts = fresh._accepts
        self.state = fresh.state
        self.heartbeat = fresh.heartbeat
        self.last_received = fresh.last_received
        self.drop_outgoing()

    def token_result(self, sequence: int, expires_in: float | None, error: str | None = None, message: str = "") -> None:
        """Answer the client's fresh token C{sequence}: accepted (C{error} None) or refused."""
        if self.state is ConnectionState.OPEN:
            self.send(TokenResult(sequence, expires_in, error, message))

    @property
    def peer_takes_heartbeats(self) -> bool:
        return CAP_HEARTBEAT in self.peer_capabilities

    def answer_heartbeat(self, heartbeat: ClientHeartbeat, now: float) -> None:
        """
        Answer a client heartbeat (always, whatever our own heartbeat
        settings): its sequence and time echoed, and our clock.  The answer
        is urgent (L{send_urgent}): it leaves ahead of the answers to calls
        queued with it, and of whatever output the adapter holds back.
        """
        if self.state is ConnectionState.OPEN:
            self.client_heartbeats_answered += 1
            ack = self.our_acknowledgement()
            self.send_urgent(ClientHeartbeatAck(heartbeat.sequence, heartbeat.client_time, to_us(now), ack))
            # The client's beat came the other way while ours may wait behind our output.
            self.heartbeat.peer_heartbeat(now)

    def send_result(self, call_id: int, value: Any, own_limit: int) -> str | None:
        """
        Queue the RESULT of call C{call_id}.  When C{value} cannot be encoded,
        or the result is larger than our own limit or the client's announced
        one, queue an C{internal} ERROR instead and return why (for the log).
        """
        try:
            payload = encode_fields([_RESULT, call_id, value])
        except (TypeError, ValueError, OverflowError) as e:
            self.send_error(call_id, ErrorCode.INTERNAL, "the result cannot be encoded")
            return f"the result cannot be encoded: {e}"
        if len(payload) > self.send_limit(own_limit):
            # Over our limit autobahn would raise into the reactor; over the
            # client's announced limit the client would close with 1009.
            self.send_error(call_id, ErrorCode.INTERNAL, "the result is too big to send")
            return f"the result is too big to send ({len(payload)} bytes)"
        self.queue_payload(payload)
        if self.resume is not None:
            self.resume.sent_answer(call_id, payload)
        return None

    def send_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        """
        Queue an ERROR answer to call C{call_id}.  A detail that cannot be
        encoded, or that makes the answer larger than the client accepts, is
        dropped (and the message shortened): the call is always answered.
        """
        try:
            payload = encode_fields([_ERROR, call_id, code, message, detail])
        except (TypeError, ValueError, OverflowError):
            payload = encode_fields([_ERROR, call_id, code, message, None])
        for attempt in (payload, [_ERROR, call_id, code, message[:200], None], [_ERROR, call_id, ErrorCode.INTERNAL, "", None]):
            encoded = attempt if isinstance(attempt, bytes) else encode_fields(attempt)
            if self.queue_payload(encoded):
                if self.resume is not None:
                    self.resume.sent_answer(call_id, encoded)
                return

    def invoke_client(self, token: T, method: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> int:
        """Queue a client-result request; return its call id."""
        call_id = self._register_call(token)
        self.send(ClientInvoke(call_id, method, args, kwargs))
        return call_id

    def _handle(self, message: Message, now: float) -> Event | None:
        # Dispatch on the message's class: exact type checks narrow for mypy
        # and cost what the old comparisons of kinds did.
        kind = type(message)
        if self.state is ConnectionState.HANDSHAKING:
            if kind is not Hello:
                raise ProtocolError("the first message from a client must be hello")
            assert isinstance(message, Hello)
            self.peer_capabilities = shared_capabilities(message.capabilities)
            self.peer_max_message_size = message.max_message_size
            self.state = ConnectionState.OPEN
            return HandshakeCompleted(self.peer_capabilities)
        if isinstance(message, (Invoke, Notify)):
            return message
        if isinstance(message, (Result, Error)):
            return self._answer(message)
        if isinstance(message, ServerHeartbeatAck):
            if message.ack is not None:
                self._peer_acknowledged(message.ack)
            latency = self.heartbeat.acknowledged(message.sequence, now)
            if latency is None:
                return None
            return HeartbeatAnswered(message.sequence, latency)
        if isinstance(message, ClientHeartbeat):
            if message.ack is not None:
                self._peer_acknowledged(message.ack)
            # Answered through answer_heartbeat, in the order of the frame's
            # messages (after the results of the calls before it).
            return message if self.state is ConnectionState.OPEN else None
        if isinstance(message, Token):
            return message if self.state is ConnectionState.OPEN else None
        if isinstance(message, STREAM_MESSAGES):
            return message if self.state is ConnectionState.OPEN else None
        if isinstance(message, Close):
            self.state = ConnectionState.CLOSING
            return message
        if kind is Ack:
            assert isinstance(message, Ack)
            self._peer_acknowledged(message.received)
            return None
        if isinstance(message, Resume):
            if CAP_RESUME not in self.peer_capabilities:
                raise ProtocolError("RESUME from a client that did not announce resume")
            return message
        raise ProtocolError("hello sent twice")


class ClientConnection(Connection[T]):
    """The client side of one hub connection."""

    _accepts = _CLIENT_ACCEPTS

    def __init__(self, capabilities: tuple[str, ...] = OUR_CAPABILITIES) -> None:
        super().__init__()
        self.capabilities = capabilities
        self.welcome: Welcome | None = None
        self.clock_sync = ClockSync()
        self._heartbeat_sequence = 0
        self._token_sequence = 0

    def hello(self, max_message_size: int | None = None, resume: Resume | None = None) -> None:
        """
        Queue the hello (announcing the largest message we accept); call
        once the WebSocket is open.  C{resume}: the session to resume, sent
        right after the hello in the same frame (the capabilities must
        include C{resume}).
        """
        self.send(Hello(list(self.capabilities), max_message_size))
        if resume is not None:
            self.send(resume)

    def invoke(
        self, token: T, method: str, args: list[Any], kwargs: dict[str, Any] | None = None,
        max_size: int | None = None, *, credit: int | None = None, streams: list[list[Any]] | None = None,
    ) -> int:
        """
        Queue a call that wants a result; return its call id.  C{credit}:
        the call wants a stream (STREAM_INVOKE) and grants that much credit
        first; C{streams}: the arguments that are streams we produce
        (C{[where, stream_id]}; capability C{stream}).

        @raise TypeError: an argument cannot be encoded.
        @raise HubArgumentError: the encoded call is larger than C{max_size}.
        Nothing is queued or registered when either is raised.
        """
        call_id = self._next_call_id
        if credit is not None:
            payload = encode(StreamInvoke(call_id, method, args, kwargs, streams, credit))
        elif streams:
            payload = encode(Invoke(call_id, method, args, kwargs, streams))
        elif kwargs:
            payload = encode_fields([MessageKind.INVOKE, call_id, method, args, kwargs])
        else:
            payload = encode_fields([MessageKind.INVOKE, call_id, method, args])
        if max_size is not None and len(payload) > max_size:
            raise HubArgumentError(f"the call is {len(payload)} bytes, over the {max_size}-byte message limit")
        self._register_call(token)
        self._outbox.append(payload)
        if self.resume is not None:
            self.resume.sent(payload)
        return call_id

    def notify(self, method: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> None:
        """Queue a fire-and-forget call."""
        self.send(Notify(method, args, kwargs))

    def reply(self, call_id: int, value: Any) -> None:
        """
        Answer the server's client-result request C{call_id} with C{value};
        a value that cannot be encoded is answered with an C{internal} error.
        Nothing is sent once the connection is closing.
        """
        if self.state is not ConnectionState.OPEN:
            return
        try:
            payload = encode_fields([_RESULT, call_id, value])
        except (TypeError, ValueError, OverflowError):
            self.reply_error(call_id, ErrorCode.INTERNAL, "result cannot be encoded")
            return
        self._outbox.append(payload)
        if self.resume is not None:
            self.resume.sent(payload)
            self.resume.sent_answer(call_id, payload)

    def reply_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
        """Answer the server's client-result request C{call_id} with an error."""
        if self.state is not ConnectionState.OPEN:
            return
        try:
            payload = encode_fields([_ERROR, call_id, code, message, detail])
        except (TypeError, ValueError, OverflowError):
            payload = encode_fields([_ERROR, call_id, code, message, None])
        self._outbox.append(payload)
        if self.resume is not None:
            self.resume.sent(payload)
            self.resume.sent_answer(call_id, payload)

    @property
    def server_takes_heartbeats(self) -> bool:
        return CAP_HEARTBEAT in self.peer_capabilities

    @property
    def server_takes_streams(self) -> bool:
        """The server announced C{stream}: it takes STREAM_INVOKE and stream arguments."""
        return CAP_STREAM in self.peer_capabilities

    @property
    def server_takes_tokens(self) -> bool:
        """The server announced C{token-refresh}: it takes fresh access tokens over this connection."""
        return CAP_TOKEN_REFRESH in self.peer_capabilities

    def send_token(self, token: str) -> int:
        """Queue a fresh access token for the server; return its sequence (its answer carries it)."""
        self._token_sequence += 1
        self.send(Token(self._token_sequence, token))
        return self._token_sequence

    def send_heartbeat(self, now: float, written: int | None = None) -> tuple[int, bool]:
        """
        Queue our own heartbeat; return (sequence, whether it started a
        timeout).  C{written}: bytes written toward the server before it
        (L{HeartbeatTracker.sent}).
        """
        self._heartbeat_sequence += 1
        sequence = self._heartbeat_sequence
        self.send_urgent(ClientHeartbeat(sequence, to_us(now), self.our_acknowledgement()))
        return sequence, self.heartbeat.sent(sequence, now, written)

    def _handle(self, message: Message, now: float) -> Event | None:
        if self.state is ConnectionState.HANDSHAKING:
            if not isinstance(message, Welcome):
                raise ProtocolError("the first message from a server must be welcome")
            self.welcome = message
            self.peer_capabilities = frozenset(message.capabilities)
            self.peer_max_message_size = message.max_message_size
            self.state = ConnectionState.OPEN
            if CAP_RESUME in self.capabilities and CAP_RESUME in self.peer_capabilities:
                self._accepts = self._accepts | _RESUME_FROM_SERVER
            return HandshakeCompleted(self.peer_capabilities)
        if isinstance(message, (Result, Error)):
            return self._answer(message)
        if isinstance(message, (ReceiverCall, ClientInvoke)):
            return message
        if isinstance(message, ServerHeartbeat):
            # Answered here, from the message handler: no client timer needed,
            # so a throttled client timer cannot make the server time us out.
            if self.state is ConnectionState.OPEN:
                self.send_urgent(ServerHeartbeatAck(message.sequence, self.our_acknowledgement()))
                # The server's beat came the other way while ours may wait behind our upload.
                self.heartbeat.peer_heartbeat(now)
            return ServerHeartbeatReceived(message)
        if isinstance(message, ClientHeartbeatAck):
            if message.ack is not None:
                self._peer_acknowledged(message.ack)
            sample = self.clock_sync.add(message.client_time / 1e6, message.server_time_us / 1e6, now)
            latency = self.heartbeat.acknowledged(message.sequence, now)
            if latency is None:
                return None
            return HeartbeatAnswered(message.sequence, latency, sample)
        if isinstance(message, TokenResult):
            return message
        if isinstance(message, STREAM_MESSAGES):
            return message if self.state is ConnectionState.OPEN else None
        if isinstance(message, Close):
            self.state = ConnectionState.CLOSING
            return message
        if isinstance(message, Ack):
            self._peer_acknowledged(message.received)
            return None
        if isinstance(message, (SessionGrant, Resumed, ResumeRefused)):
            return message
        raise ProtocolError("welcome sent twice")
