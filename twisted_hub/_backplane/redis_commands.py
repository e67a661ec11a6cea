"""
The Redis side of a L{twisted_hub.redis.RedisBackplane}: the names of its
keys and channels (L{RedisKeys}), the command connection with its flow
control (L{CommandLink}: what may be sent now, what is pending, failures
logged), and publishing a backplane message (L{Publisher}: a receiver call
that cannot go is dropped and counted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._core.ratelimit import LogRateLimiter
from .._support.logging import HUB_LOG_OBSERVER
from .interface import TARGET_ONLY, Target, node_of
from .wire import BackplaneMessage, Kick, NodeCodec, Send

if TYPE_CHECKING:
    from .moves import SendHistory

__all__ = ["FAILED", "CommandLink", "Publisher", "RedisCommands", "RedisKeys", "resp_size"]

# The backplane's lines keep the namespace they always had.
_log = Logger(namespace="twisted_hub.redis", observer=HUB_LOG_OBSERVER)

#: what a command's Deferred fires with when it failed (the failure was counted or logged)
FAILED: Any = object()


class RedisCommands(Protocol):
    """What the backplane needs of a command connection (txredisapi's protocol has it)."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Deferred[Any]: ...


@dataclass(frozen=True)
class RedisKeys:
    """The Redis keys and channels of the nodes sharing one C{prefix}."""

    prefix: str

    @property
    def channel_all(self) -> bytes:
        """The hub-wide channel: every node hears it."""
        return f"{self.prefix}:v1:all".encode()

    def node_channel(self, token: str) -> bytes:
        """The channel of one node: what only its connections are for."""
        return f"{self.prefix}:v1:node:{token}".encode()

    def lease(self, token: str) -> bytes:
        """A node's lease: its (signed) node id, expiring unless renewed."""
        return f"{self.prefix}:v1:lease:{token}".encode()

    def members(self, token: str) -> bytes:
        """A node's membership hash: one (signed) field per membership."""
        return f"{self.prefix}:v1:members:{token}".encode()

    def session(self, key: bytes) -> bytes:
        """A resumable session's snapshot (docs/resumption.md, "When a node dies"): C{key} is its epoch and id."""
        return f"{self.prefix}:v1:session:{key.hex()}".encode()

    @property
    def nodes(self) -> bytes:
        """The set of the nodes' tokens."""
        return f"{self.prefix}:v1:nodes".encode()


def resp_size(command: tuple[Any, ...]) -> int:
    """The bytes of C{command} on the wire (RESP, as txredisapi writes it)."""
    size = len(b"*%d\r\n" % len(command))
    for arg in command:
        if isinstance(arg, bytes):
            n = len(arg)
        elif isinstance(arg, str):
            n = len(arg.encode())
        elif isinstance(arg, float):
            n = len(format(arg, "f"))
        else:
            n = len(str(arg))
        size += len(b"$%d\r\n" % n) + n + 2
    return size


def _link_gone(error: Exception) -> bool:
    import txredisapi

    return isinstance(error, txredisapi.ConnectionError)


class CommandLink:
    """
    The two connections' state, and the commands sent on the command
    connection: at most C{max_pending_commands} commands and
    C{max_pending_bytes} bytes wait for their answer.
    """

    def __init__(self, max_pending_commands: int, max_pending_bytes: int, now: Callable[[], float]) -> None:
        self.max_pending_commands = max_pending_commands
        self.max_pending_bytes = max_pending_bytes
        self._now = now
        self.commands: RedisCommands | None = None
        self.subscribed = False
        #: bumped when the command connection is lost: older replies are not counted
        self._generation = 0
        #: commands that were waiting for their answer when the connection went
        self.lost_in_flight = 0
        self.pending_commands = 0
        self.pending_bytes = 0
        self._error_log = LogRateLimiter(5.0)

    @property
    def connected(self) -> bool:
        """True while both connections to Redis are up (and subscribed)."""
        return self.commands is not None and self.subscribed

    def commands_lost(self) -> None:
        """The command connection is gone: what it was waiting for no longer counts."""
        self.commands = None
        self._generation += 1
        self.pending_commands = 0
        self.pending_bytes = 0

    def fits(self, commands: list[tuple[Any, ...]]) -> bool:
        """Whether these commands may be sent without passing either limit."""
        size = sum(resp_size(command) for command in commands)
        return (
            self.pending_commands + len(commands) <= self.max_pending_commands
            and self.pending_bytes + size <= self.max_pending_bytes
        )

    def send(self, *args: Any, unlimited: bool = False) -> Deferred[Any] | None:
        """
        Send a command if the link is up and it fits in the limits
        (C{unlimited}: past them too: a snapshot larger than the limits
        goes whole); its reply (or error) is accounted and logged here,
        a failure fires the Deferred with L{FAILED}.  None: not sent.
        """
        commands = self.commands
        if commands is None:
            return None
        size = resp_size(args)
        if not unlimited and (
            self.pending_commands + 1 > self.max_pending_commands
            or self.pending_bytes + size > self.max_pending_bytes
        ):
            return None
        self.pending_commands += 1
        self.pending_bytes += size
        try:
            d = commands.execute_command(*args)
        except Exception as e:
            # txredisapi raises ConnectionError at once when the link is gone
            # (the loss is being reported): not sent, not pending.
            if not _link_gone(e):
                raise
            self.pending_commands -= 1
            self.pending_bytes -= size
            return None

        generation = self._generation

        def answered(result: Any) -> Any:
            if generation == self._generation:
                self.pending_commands -= 1
                self.pending_bytes -= size
            return result

        def failed(failure: Failure) -> Any:
            if generation != self._generation:
                # Lost with its connection; the loss was logged once.
                self.lost_in_flight += 1
                return FAILED
            suppressed = self._error_log.allow(self._now())
            if suppressed is not None:
                _log.error(
                    "Redis command {command} failed: {error} ({suppressed} more failures suppressed)",
                    command=args[0], error=failure.getErrorMessage(), suppressed=suppressed,
                )
            return FAILED

        d.addBoth(answered)
        d.addErrback(failed)
        return d


class Publisher:
    """Publishes this node's messages, numbered by its codec; counts the receiver calls that cannot go."""

    def __init__(self, codec: NodeCodec, link: CommandLink, keys: RedisKeys, now: Callable[[], float]) -> None:
        self.codec = codec
        self.link = link
        self.keys = keys
        self._now = now
        #: receiver calls published (one PUBLISH each) / broadcasts asked for
        self.published = 0
        #: publishes not sent: Redis away (C{dropped_disconnected}) or too slow (C{dropped_overload})
        self.dropped_disconnected = 0
        self.dropped_overload = 0
        self._drop_log = LogRateLimiter(5.0)
        #: the node holding a connection id (where it moved, else the node its id names)
        self.route: Callable[[str], str] = node_of
        #: where this node's hub-wide receiver calls are remembered (sessions that move: None when they do not)
        self.history: SendHistory | None = None

    def receiver_call(self, hub: str, target: Target, payload: bytes) -> None:
        """
        An encoded receiver call for C{target}'s connections on the other
        nodes: on the hub-wide channel, or for C{only} ids on the channel of
        each node holding some of them (a connection id starts with its
        node's token).
        """
        if target.kind != TARGET_ONLY:
            send = Send(hub, target, payload)
            channel = self.keys.channel_all
            if self.publish(channel, send, counted=True) is not None and self.history is not None:
                self.history.add(self.codec.token, self.codec.last_sent(channel), send)
            return
        by_node: dict[str, list[str]] = {}
        route = self.route
        for connection_id in target.ids:
            token = route(connection_id)
            if token and token != self.codec.token:
                by_node.setdefault(token, []).append(connection_id)
        for token, ids in by_node.items():
            only = Target(TARGET_ONLY, None, tuple(ids))
            self.publish(self.keys.node_channel(token), Send(hub, only, payload), counted=True)

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        """Ask the node holding C{connection_id} to close it."""
        token = self.route(connection_id)
        if not token or token == self.codec.token:
            return  # one of ours that is gone already, or not a connection id at all
        self.publish(self.keys.node_channel(token), Kick(hub, connection_id, reason), counted=True)

    def publish(self, channel: bytes, message: BackplaneMessage, counted: bool = False) -> Deferred[Any] | None:
        """
        Publish one message.  C{counted}: a receiver call, dropped and
        counted when it cannot go.  None: not sent (its number is reused).
        """
        link = self.link
        data = self.codec.encode(channel, message, self._now())
        if counted:
            if not link.connected:
                self.codec.unsend(channel)
                self._dropped(disconnected=True, why="Redis is not connected")
                return None
            if not link.fits([("PUBLISH", channel, data)]):
                self.codec.unsend(channel)
                self._dropped(
                    disconnected=False,
                    why=f"{link.pending_commands} Redis commands ({link.pending_bytes} bytes) await an answer",
                )
                return None
        sent = link.send("PUBLISH", channel, data)
        if sent is None:
            self.codec.unsend(channel)
            if counted:
                self._dropped(disconnected=True, why="Redis is not connected")
        elif counted:
            self.published += 1
        return sent

    def _dropped(self, disconnected: bool, why: str) -> None:
        if disconnected:
            self.dropped_disconnected += 1
        else:
            self.dropped_overload += 1
        suppressed = self._drop_log.allow(self._now())
        if suppressed is not None:
            _log.error(
                "a receiver call for other nodes was dropped: {why} "
                "(dropped so far: {disconnected} while disconnected, {overload} over the limit; "
                "{suppressed} lines suppressed)",
                why=why, disconnected=self.dropped_disconnected, overload=self.dropped_overload,
                suppressed=suppressed,
            )
