"""
L{RedisBackplane}: many hub processes ("nodes") serving as one, through
Redis (U{txredisapi<https://github.com/IlyaSkriblovsky/txredisapi>}, the
C{redis} extra: C{pip install 'twisted-hub[redis]'}).

    factory = HubServerFactory([ChatHub], backplane=RedisBackplane("redis://127.0.0.1:6379/0"))

What travels between nodes (C{docs/scaling.md} says it for users):

  - a receiver call for C{all}, C{others}, C{all_except}, C{group} or
    C{group_except} is one C{PUBLISH} of the already-encoded hub message on
    the hub-wide channel; every node delivers it to its own matching
    connections, framing it once for all of them;
  - a call for C{only}/C{client} ids on other nodes is one C{PUBLISH} per
    node holding some of them, on that node's channel (a connection id
    starts with its node's token);
  - group joins and leaves are written to this node's membership hash and
    published, so every node keeps a mirror of the other nodes' members:
    C{groups.count()} and C{groups.members()} stay synchronous;
  - every node refreshes a lease (a key with an expiry) and publishes
    "alive" every C{lease / 3} seconds; a node not heard from for C{lease}
    seconds is dropped from every mirror (its members leave the counts),
    and its Redis keys expire by themselves.

Redis being away never stops a node: it serves its own connections, drops
(and counts) what it cannot publish, reconnects with backoff, then writes
its membership snapshot again and reloads the other nodes'.  Each renewal
checks that Redis still holds this node's state and writes it again if
not.  Messages are numbered per channel (gaps are counted as C{missed}) and,
with a shared secret, signed (L{twisted_hub._backplane_wire}); the
connections themselves (TLS, Sentinel, the PING watch) are
L{twisted_hub._redis_link}'s.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._backplane import TARGET_ONLY, Target, node_of, receiver_call_problem
from ._backplane_wire import (
    ALIVE,
    BYE,
    JOIN,
    KICK,
    LEAVE,
    SEND,
    SYNC,
    MalformedMessage,
    NodeCodec,
    NodeMessage,
    RejectedMessage,
    Signer,
    read_secret_file,
    secret_from_environment,
)
from ._base_error import HubArgumentError, HubStateError
from ._logging import HUB_LOG_OBSERVER
from ._ratelimit import LogRateLimiter
from ._redis_link import (
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    RedisLinkError,
    RedisSettings,
    TxRedisConnector,
    parse_redis_url,
)

if TYPE_CHECKING:
    from ._server import HubServerFactory

__all__ = ["RedisBackplane", "RedisLinkError", "RedisSettings", "TxRedisConnector", "parse_redis_url"]

_log = Logger(observer=HUB_LOG_OBSERVER)

#: seconds a node's lease lasts; it is refreshed every third of it
DEFAULT_LEASE = 15.0
#: Redis commands this node may have sent and not yet had answered
DEFAULT_MAX_PENDING_COMMANDS = 10_000
#: bytes of such commands
DEFAULT_MAX_PENDING_BYTES = 16 * 1024 * 1024
#: Redis key and channel prefix; nodes with the same prefix serve as one
DEFAULT_PREFIX = "twisted-hub"
#: seconds a stopping node waits for Redis to confirm its goodbye
GOODBYE_TIMEOUT = 2.0

#: what a command's Deferred fires with when it failed (the failure was counted or logged)
_FAILED: Any = object()


class RedisCommands(Protocol):
    """What the backplane needs of a command connection (txredisapi's protocol has it)."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Deferred[Any]: ...


class RedisConnector(Protocol):
    """
    Keeps a backplane's two Redis connections (commands, subscriber) up
    and reports on them through the backplane's C{link_*} methods.
    """

    def start(self, backplane: RedisBackplane) -> None: ...

    def stop(self) -> Deferred[None] | None:
        """Close both connections; the Deferred fires once they are closed."""


@dataclass
class _Node:
    """What this node knows of another one."""

    node_id: str
    last_seen: float
    #: (hub, group) -> connection ids, in the order heard
    members: dict[tuple[str, str], dict[str, None]] = field(default_factory=dict)

    def apply(self, hub: str, group: str, connection_id: str, joined: bool) -> None:
        key = (hub, group)
        if joined:
            self.members.setdefault(key, {})[connection_id] = None
            return
        ids = self.members.get(key)
        if ids is not None:
            ids.pop(connection_id, None)
            if not ids:
                del self.members[key]

    def size(self) -> int:
        return sum(len(ids) for ids in self.members.values())


def _member_field(hub: str, group: str, connection_id: str) -> bytes:
    field: bytes = msgpack.packb([hub, group, connection_id])
    return field


def _resp_size(command: tuple[Any, ...]) -> int:
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


class RedisBackplane:
    """
    Join this process to the others serving the same hubs through Redis.

    @param url: C{redis://[user:password@]host[:port][/db]}.
    @param prefix: Redis key and channel prefix; nodes with the same prefix
        (and database) serve as one.
    @param lease: seconds a node stays in the others' counts without being
        heard from; refreshed every C{lease / 3}.  A node killed with
        C{kill -9} leaves the counts within C{lease + lease / 3} seconds.
    @param max_pending_commands: Redis commands that may wait for their
        answer; over it (or over C{max_pending_bytes}) a publish is dropped
        and counted, with a (rate-limited) log line.
    @param max_pending_bytes: bytes of such commands.
    @param node_id: this node's name (default: host-pid-token).
    @param secret_file: a file holding the shared secret (or several,
        whitespace-separated: the first signs, all verify) with which every
        node signs what it publishes and keeps in Redis, and refuses what
        is not signed with it (C{docs/scaling.md}, "Trust").
    @param secret_env: the name of an environment variable holding it
        instead.  Never the secret itself: it would show in C{ps}.
    @param ping_interval: seconds between PINGs on each of the two
        connections to Redis.
    @param ping_timeout: a connection that brings nothing for this long is
        cut and made again: a dead path to Redis (black-holed, no reset) is
        noticed within C{ping_interval + ping_timeout} seconds.
    @param clock: time source (default: the factory's clock).
    @param connector: keeps the connections to Redis (default: txredisapi
        through C{ClientService}, reconnecting with Twisted's
        C{backoffPolicy}); tests give an in-memory one.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = DEFAULT_PREFIX,
        lease: float = DEFAULT_LEASE,
        max_pending_commands: int = DEFAULT_MAX_PENDING_COMMANDS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        node_id: str | None = None,
        secret_file: str | None = None,
        secret_env: str | None = None,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
        clock: IReactorTime | None = None,
        connector: RedisConnector | None = None,
    ) -> None:
        self.settings = parse_redis_url(url)
        if self.settings.tls:
            self.settings.tls_options()  # the certificate files are read now: a bad one fails at once
        if secret_file is not None and secret_env is not None:
            raise HubArgumentError("give either secret_file or secret_env")
        signer = None
        if secret_file is not None:
            signer = Signer(read_secret_file(secret_file))
        elif secret_env is not None:
            signer = Signer(secret_from_environment(secret_env))
        #: where the secret came from (for the status page; never the secret)
        self.secret_source = (
            f"file {secret_file}" if secret_file is not None else f"${secret_env}" if secret_env is not None else None
        )
        if not lease > 0:
            raise HubArgumentError(f"lease must be > 0, got {lease!r}")
        if min(max_pending_commands, max_pending_bytes) <= 0:
            raise HubArgumentError("max_pending_commands and max_pending_bytes must be > 0")
        self.prefix = prefix
        self.lease = lease
        self.max_pending_commands = max_pending_commands
        self.max_pending_bytes = max_pending_bytes
        #: the start of every connection id of this node
        self.token = os.urandom(6).hex()
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-{self.token}"
        self._clock = clock
        self._connector: RedisConnector = (
            connector if connector is not None
            else TxRedisConnector(ping_interval=ping_interval, ping_timeout=ping_timeout)
        )
        self._counter = 0
        self._factory: HubServerFactory | None = None
        self._commands: RedisCommands | None = None
        self._subscribed = False
        self._nodes: dict[str, _Node] = {}
        #: node token -> events heard while its snapshot is loading
        self._loading: dict[str, list[NodeMessage]] = {}
        self._codec = NodeCodec(self.token, signer)
        self._heartbeat: LoopingCall | None = None
        self._resync = False
        self._started = False
        self._ever_connected = False
        self._outage_logged = False
        self._last_error = ""
        self._drop_log = LogRateLimiter(5.0)
        self._bad_log = LogRateLimiter(5.0)
        self._error_log = LogRateLimiter(5.0)
        self._missed_log = LogRateLimiter(5.0)
        self._reject_log = LogRateLimiter(5.0)
        #: bumped when the command connection is lost: older replies are not counted
        self._generation = 0
        #: commands that were waiting for their answer when the connection went
        self.lost_in_flight = 0
        self.pending_commands = 0
        self.pending_bytes = 0
        #: receiver calls published (one PUBLISH each) / broadcasts asked for
        self.published = 0
        #: publishes not sent: Redis away (C{dropped_disconnected}) or too slow (C{dropped_overload})
        self.dropped_disconnected = 0
        self.dropped_overload = 0
        #: messages from Redis that could not be understood
        self.bad_messages = 0
        #: messages other nodes published that never reached this node (gaps in their sequence numbers)
        self.missed = 0
        #: messages and Redis state refused: not signed with the secret, stale or replayed
        self.rejected = 0
        #: nodes dropped because their lease ran out
        self.nodes_expired = 0
        #: times this node found its state gone from Redis and wrote it again
        self.state_rewrites = 0
        #: memberships this node holds (what its hash in Redis must hold)
        self._member_count = 0
        #: bumped by every snapshot written: checks of older renewals are void
        self._snapshot_epoch = 0
        self.channel_all = f"{prefix}:v1:all".encode()
        self.channel_node = self._node_channel(self.token)

    # -- naming ------------------------------------------------------------
    def _node_channel(self, token: str) -> bytes:
        return f"{self.prefix}:v1:node:{token}".encode()

    def _lease_key(self, token: str) -> bytes:
        return f"{self.prefix}:v1:lease:{token}".encode()

    def _members_key(self, token: str) -> bytes:
        return f"{self.prefix}:v1:members:{token}".encode()

    @property
    def _nodes_key(self) -> bytes:
        return f"{self.prefix}:v1:nodes".encode()

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            if self._factory is not None:
                self._clock = self._factory.clock
            else:  # pragma: no cover - attach() always runs first
                from twisted.internet import reactor

                self._clock = reactor
        assert self._clock is not None
        return self._clock

    @property
    def connected(self) -> bool:
        """True while both connections to Redis are up (and subscribed)."""
        return self._commands is not None and self._subscribed

    @property
    def connected_commands(self) -> bool:
        """True while the command connection is up."""
        return self._commands is not None

    @property
    def nodes(self) -> dict[str, str]:
        """The other nodes this one hears: token -> node id."""
        return {token: node.node_id for token, node in self._nodes.items()}

    # -- Backplane ---------------------------------------------------------
    def attach(self, factory: HubServerFactory) -> None:
        if self._factory is not None and self._factory is not factory:
            raise HubStateError("a RedisBackplane serves one HubServerFactory")
        self._factory = factory

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(self.lease / 3.0, now=False)
        self._connector.start(self)

    def stop(self) -> Deferred[None]:
        """
        Leave: say goodbye (the others drop this node's members at once) and
        delete this node's state, then close the connections.  The Deferred
        fires once Redis answered the goodbye, or after L{GOODBYE_TIMEOUT}
        seconds (the lease removes the node then), and the connections are
        closed: C{HubService} waits for it, so a SIGTERM'd C{twistd} does
        not end with the goodbye still in its buffers.
        """
        if not self._started:
            return succeed(None)
        self._started = False
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        answers: list[Deferred[Any]] = []
        if self.connected:
            for sent in (
                self._publish(self.channel_all, BYE, []),
                self._command("DEL", self._lease_key(self.token), self._members_key(self.token)),
                self._command("SREM", self._nodes_key, self.token),
            ):
                if sent is not None:
                    answers.append(sent)
        if not answers:
            return self._close_links()
        said: Deferred[bool] = Deferred()

        def too_late() -> None:
            if not said.called:
                said.callback(False)

        timer = self.clock.callLater(GOODBYE_TIMEOUT, too_late)

        def answered(_: object) -> None:
            if not said.called:
                timer.cancel()
                said.callback(True)

        gatherResults(answers).addCallback(answered)

        def close(confirmed: bool) -> Deferred[None]:
            if confirmed:
                _log.info("node {node} left: its goodbye reached Redis", node=self.node_id)
            else:
                _log.warn(
                    "node {node} stopped before Redis confirmed its goodbye ({timeout:g} s): the other nodes "
                    "drop its members when its lease ends",
                    node=self.node_id, timeout=GOODBYE_TIMEOUT,
                )
            return self._close_links()

        return said.addCallback(close)

    def _close_links(self) -> Deferred[None]:
        stopped = self._connector.stop()
        return stopped if stopped is not None else succeed(None)

    def new_connection_id(self) -> str:
        self._counter += 1
        return f"{self.token}-{self._counter}"

    def publish(self, hub: str, target: Target, payload: bytes) -> None:
        if target.kind == TARGET_ONLY:
            by_node: dict[str, list[str]] = {}
            for connection_id in target.ids:
                token = node_of(connection_id)
                if token and token != self.token:
                    by_node.setdefault(token, []).append(connection_id)
            for token, ids in by_node.items():
                self._publish(self._node_channel(token), SEND, [hub, TARGET_ONLY, None, ids, payload], counted=True)
            return
        self._publish(self.channel_all, SEND, [hub, target.kind, target.group, list(target.ids), payload], counted=True)

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        token = node_of(connection_id)
        if not token or token == self.token:
            return  # one of ours that is gone already, or not a connection id at all
        self._publish(self._node_channel(token), KICK, [hub, connection_id, reason], counted=True)

    def membership_changed(self, hub: str, group: str, connection_id: str, joined: bool) -> None:
        self._member_count += 1 if joined else -1
        if not self.connected or self._resync:
            return  # the snapshot written on reconnection (or at the next renewal) says it
        members_key = self._members_key(self.token)
        member = _member_field(hub, group, connection_id)
        if joined:
            commands: list[tuple[Any, ...]] = [
                ("HSET", members_key, member, self._codec.member_value(member)),
                ("PEXPIRE", members_key, int(self.lease * 1000)),
            ]
        else:
            commands = [("HDEL", members_key, member)]
        now = self.clock.seconds()
        kind = JOIN if joined else LEAVE
        message = self._codec.encode(self.channel_all, kind, [hub, group, connection_id], now)
        commands.append(("PUBLISH", self.channel_all, message))
        if not self._fits(commands):
            self._codec.unsend(self.channel_all)
            self._resync = True  # said by the next snapshot instead
            return
        sent = [self._command(*command) for command in commands]
        if sent[-1] is None:  # the link went meanwhile: the snapshot on reconnection says it
            self._codec.unsend(self.channel_all)

    def remote_members(self, hub: str, group: str) -> list[str]:
        key = (hub, group)
        return [i for node in self._nodes.values() for i in node.members.get(key, ())]

    def remote_count(self, hub: str, group: str) -> int:
        key = (hub, group)
        return sum(len(node.members.get(key, ())) for node in self._nodes.values())

    def status(self) -> list[tuple[str, str]]:
        if self.connected:
            state = f"connected to {self.settings.display()}, {len(self._nodes)} other node(s)"
        else:
            state = f"NOT connected to {self.settings.display()} (retrying): serving this node's connections only"
            if self._last_error:
                state += f"; last error: {self._last_error}"
        rows = [("node", self.node_id), ("redis", state)]
        signer = self._codec.signer
        if signer is None:
            rows.append(("backplane messages", "not signed: whoever can publish on this Redis reaches every client"))
        else:
            rows.append((
                "backplane messages",
                f"signed (HMAC-SHA256; {signer.key_count} secret(s) from {self.secret_source})",
            ))
        if self.rejected or self.bad_messages:
            rows.append((
                "backplane messages refused",
                f"{self.rejected} rejected (unsigned, forged, stale or replayed), {self.bad_messages} malformed",
            ))
        dropped = self.dropped_disconnected + self.dropped_overload
        if dropped:
            rows.append((
                "redis messages dropped",
                f"{dropped} ({self.dropped_disconnected} while disconnected, {self.dropped_overload} over the queue limit)",
            ))
        if self.missed:
            rows.append(("redis messages missed", f"{self.missed} (published by other nodes, never heard here)"))
        return rows

    # -- sending -----------------------------------------------------------
    def _fits(self, commands: list[tuple[Any, ...]]) -> bool:
        """Whether these commands may be sent without passing either limit."""
        size = sum(_resp_size(command) for command in commands)
        return (
            self.pending_commands + len(commands) <= self.max_pending_commands
            and self.pending_bytes + size <= self.max_pending_bytes
        )

    def _command(self, *args: Any, unlimited: bool = False) -> Deferred[Any] | None:
        """
        Send a command if the link is up and it fits in the limits
        (C{unlimited}: past them too: a snapshot larger than the limits
        goes whole); its reply (or error) is accounted and logged here.
        None: not sent.
        """
        commands = self._commands
        if commands is None:
            return None
        size = _resp_size(args)
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
                return _FAILED
            suppressed = self._error_log.allow(self.clock.seconds())
            if suppressed is not None:
                _log.error(
                    "Redis command {command} failed: {error} ({suppressed} more failures suppressed)",
                    command=args[0], error=failure.getErrorMessage(), suppressed=suppressed,
                )
            return _FAILED

        d.addBoth(answered)
        d.addErrback(failed)
        return d

    def _publish(self, channel: bytes, kind: int, fields: list[Any], counted: bool = False) -> Deferred[Any] | None:
        """
        Publish one message (numbered by the codec).  C{counted}: a receiver
        call, dropped and counted when it cannot go.
        """
        message = self._codec.encode(channel, kind, fields, self.clock.seconds())
        if counted:
            if not self.connected:
                self._codec.unsend(channel)
                self.dropped_disconnected += 1
                self._log_drop("Redis is not connected")
                return None
            if not self._fits([("PUBLISH", channel, message)]):
                self._codec.unsend(channel)
                self.dropped_overload += 1
                self._log_drop(
                    f"{self.pending_commands} Redis commands ({self.pending_bytes} bytes) await an answer"
                )
                return None
        sent = self._command("PUBLISH", channel, message)
        if sent is None:
            self._codec.unsend(channel)
            if counted:
                self.dropped_disconnected += 1
                self._log_drop("Redis is not connected")
        elif counted:
            self.published += 1
        return sent

    def _log_drop(self, why: str) -> None:
        suppressed = self._drop_log.allow(self.clock.seconds())
        if suppressed is not None:
            _log.error(
                "a receiver call for other nodes was dropped: {why} "
                "(dropped so far: {disconnected} while disconnected, {overload} over the limit; "
                "{suppressed} lines suppressed)",
                why=why, disconnected=self.dropped_disconnected, overload=self.dropped_overload,
                suppressed=suppressed,
            )

    # -- connection events (from the connector) ------------------------------
    def link_ready(self, which: str, link: RedisCommands | None = None) -> None:
        """A connection is up: C{"commands"} (with C{link}) or C{"subscriber"} (subscribed)."""
        if which == "commands":
            self._commands = link
        else:
            self._subscribed = True
        if self.connected:
            self._connected()

    def link_lost(self, which: str, reason: str) -> None:
        """A connection to Redis is gone; the connector reconnects it."""
        was_connected = self.connected
        if which == "commands":
            self._commands = None
            self._generation += 1
            self.pending_commands = 0
            self.pending_bytes = 0
        else:
            self._subscribed = False
        self._last_error = reason
        if was_connected and self._started:
            _log.warn(
                "lost Redis at {url} ({reason}): serving this node's connections only, reconnecting with backoff",
                url=self.settings.display(), reason=reason,
            )

    def link_failed(self, reason: str, refused: bool = False, retry_in: float | None = None) -> None:
        """
        A connection attempt failed; the connector retries in C{retry_in}
        seconds.  C{refused}: Redis answered and said no (a wrong password,
        protected mode, a replica, a certificate): a line at every attempt,
        as a retry will not mend it by itself.  Else Redis was not reached:
        one line until it is.
        """
        self._last_error = reason
        retry = f"; next attempt in {retry_in:.1f} s" if retry_in is not None else ""
        if refused:
            _log.error(
                "Redis at {url} refused node {node}: {reason}{retry}",
                url=self.settings.display(), node=self.node_id, reason=reason, retry=retry,
            )
            return
        if not self._ever_connected and not self._outage_logged:
            self._outage_logged = True
            _log.error(
                "Redis at {url} is unreachable ({reason}): node {node} serves its own connections only "
                "and retries with backoff",
                url=self.settings.display(), reason=reason, node=self.node_id,
            )

    def _connected(self) -> None:
        self._ever_connected = True
        self._last_error = ""
        _log.info(
            "connected to Redis at {url} as node {node}", url=self.settings.display(), node=self.node_id,
        )
        self._write_snapshot()
        listed = self._command("SMEMBERS", self._nodes_key)
        if listed is not None:
            listed.addCallback(self._load_nodes)

    def _write_snapshot(self) -> None:
        """
        Write this node's lease and every membership it holds, and tell the
        others to reload it (after a (re)connection or a loss).  It is sent
        whole: if it does not fit in the limits it waits for the next
        renewal, but a snapshot larger than the limits goes when nothing
        else waits (the one case where C{pending_bytes} passes them).
        """
        members_key = self._members_key(self.token)
        commands: list[tuple[Any, ...]] = [("DEL", members_key)]
        fields: list[bytes] = []
        assert self._factory is not None
        count = 0
        for hub, runtime in self._factory.runtimes.items():
            for group, connection_id in runtime.groups.memberships():
                field = _member_field(hub, group, connection_id)
                fields += [field, self._codec.member_value(field)]
                count += 1
                if len(fields) >= 1000:
                    commands.append(("HSET", members_key, *fields))
                    fields = []
        if fields:
            commands.append(("HSET", members_key, *fields))
        commands += self._lease_commands()
        sync = self._codec.encode(self.channel_all, SYNC, [self.node_id], self.clock.seconds())
        commands.append(("PUBLISH", self.channel_all, sync))
        fits = self._fits(commands)
        if not fits and self.pending_commands > 0:
            self._codec.unsend(self.channel_all)
            self._resync = True
            return
        self._resync = False
        self._snapshot_epoch += 1
        self._member_count = count
        for command in commands:
            if self._command(*command, unlimited=not fits) is None:
                # The link went while writing: the reconnection writes it again,
                # and the "sync" (the last command) was not sent.
                self._codec.unsend(self.channel_all)
                self._resync = True
                return

    def _lease_commands(self, only_if_held: bool = False) -> list[tuple[Any, ...]]:
        lease_ms = int(self.lease * 1000)
        renew: tuple[Any, ...] = ("SET", self._lease_key(self.token), self._codec.lease_value(self.node_id), "PX", lease_ms)
        return [
            (*renew, "XX") if only_if_held else renew,
            ("PEXPIRE", self._members_key(self.token), lease_ms),
            ("SADD", self._nodes_key, self.token),
        ]

    def _renew(self) -> None:
        """
        Renew this node's lease and the expiry of its membership hash, and
        make sure Redis still holds them: the lease is renewed only if it
        exists (C{SET ... XX}) and the hash must hold as many fields as this
        node holds memberships (C{HLEN}).  Either gone (Redis or this node
        stalled past the lease with the connections intact, someone deleted
        them, a write failed) makes this node write its whole state again
        and tell the others to reload it.
        """
        epoch, expected = self._snapshot_epoch, self._member_count
        lease, expire, register = self._lease_commands(only_if_held=True)
        commands = [lease, expire, ("HLEN", self._members_key(self.token)), register]
        alive = self._codec.encode(self.channel_all, ALIVE, [self.node_id], self.clock.seconds())
        commands.append(("PUBLISH", self.channel_all, alive))
        if not self._fits(commands):
            self._codec.unsend(self.channel_all)
            return  # the next renewal tries again (the lease outlives two missed ones)
        sent = [self._command(*command) for command in commands]
        renewed, counted = sent[0], sent[2]
        if sent[-1] is None:
            self._codec.unsend(self.channel_all)
        if renewed is None or counted is None:
            return

        def compare(held: list[Any]) -> None:
            if _FAILED in held or epoch != self._snapshot_epoch or not self.connected or self._resync:
                return  # unknown, or written again since
            fields = int(held[1])
            if held[0] is None:
                self._state_lost(f"its lease had expired (holding {expected} membership(s))")
            elif fields != expected:
                self._state_lost(f"its membership hash held {fields} field(s), not {expected}")

        gatherResults([renewed, counted]).addCallback(compare)

    def _state_lost(self, why: str) -> None:
        """Redis lost this node's state: write it again, and have the others reload it."""
        self.state_rewrites += 1
        _log.warn(
            "Redis lost the state of node {node} ({why}; Redis or this node stalled longer than the "
            "{lease:g} s lease?): writing it again",
            node=self.node_id, why=why, lease=self.lease,
        )
        self._write_snapshot()

    def _beat(self) -> None:
        """Every C{lease / 3}: renew this node's lease, say it is alive, forget silent nodes."""
        now = self.clock.seconds()
        for token, node in list(self._nodes.items()):
            if now - node.last_seen > self.lease:
                del self._nodes[token]
                self.nodes_expired += 1
                _log.warn(
                    "node {node} was not heard from for {lease:g} s: its {count} group member(s) left the counts",
                    node=node.node_id, lease=self.lease, count=node.size(),
                )
        self._codec.forget(now, {self._node_channel(token) for token in self._nodes})
        if not self.connected:
            return
        if self._resync:
            self._write_snapshot()
        else:
            self._renew()

    # -- loading other nodes' snapshots --------------------------------------
    def _load_nodes(self, tokens: Any) -> None:
        if tokens is _FAILED:
            return
        for raw in tokens or ():
            token = raw.decode() if isinstance(raw, bytes) else str(raw)
            if token != self.token:
                self._load(token)

    def _load(self, token: str) -> None:
        if token in self._loading:
            return
        self._loading[token] = []
        lease = self._command("GET", self._lease_key(token))
        members = self._command("HGETALL", self._members_key(token))
        if lease is None or members is None:
            self._loading.pop(token, None)
            return

        def loaded(lease_value: Any) -> Deferred[Any]:
            return members.addCallback(lambda snapshot: self._loaded(token, lease_value, snapshot))

        def failed(failure: Failure) -> None:
            self._loading.pop(token, None)
            _log.failure("loading the members of node {token} failed", failure, token=token)

        lease.addCallback(loaded).addErrback(failed)

    def _loaded(self, token: str, lease_value: Any, snapshot: Any) -> None:
        buffered = self._loading.pop(token, [])
        if lease_value is _FAILED or snapshot is _FAILED:
            return  # not known either way: the next SYNC or ALIVE loads it again
        if lease_value is None:
            # Its lease ran out: the node is gone (it says SYNC if it comes back).
            self._command("SREM", self._nodes_key, token)
            self._nodes.pop(token, None)
            return
        node_id = self._codec.lease_node_id(token, lease_value)
        if node_id is None:
            self._reject(f"the lease of node {token} in Redis is not signed with the secret")
            return
        node = _Node(node_id, self.clock.seconds())
        items = list(snapshot or ())
        for i in range(0, len(items) - 1, 2):
            field, value = items[i], items[i + 1]
            if not self._codec.member_ok(token, field, value):
                self._reject(f"a membership of node {node_id} in Redis is not signed with the secret")
                continue
            try:
                hub, group, connection_id = msgpack.unpackb(field)
            except Exception as e:
                self._bad(f"membership field of node {node_id}: {e}")
                continue
            node.apply(str(hub), str(group), str(connection_id), True)
        self._nodes[token] = node
        for message in buffered:
            self._membership_event(message)

    # -- receiving -----------------------------------------------------------
    def link_message(self, channel: bytes, data: bytes) -> None:
        """A message arrived on a subscribed channel."""
        now = self.clock.seconds()
        try:
            message = self._codec.decode(channel, data, now)
        except MalformedMessage as e:
            self._bad(f"on {channel!r}: {e}")
            return
        except RejectedMessage as e:
            self._reject(f"a message on {channel!r}: {e}")
            return
        origin = message.origin
        if origin == self.token:
            return  # our own, served locally already
        try:
            gap = self._codec.in_sequence(message, channel, now)
        except RejectedMessage as e:
            self._reject(f"a message of node {origin}: {e}")
            return
        if gap:
            self._missed(origin, gap, channel)
        kind = message.kind
        if kind == SEND:
            self._heard(origin)
            self._deliver(message)
        elif kind in (JOIN, LEAVE):
            self._heard(origin)
            if origin in self._loading:
                self._loading[origin].append(message)
            else:
                self._membership_event(message)
        elif kind in (ALIVE, SYNC):
            node = self._nodes.get(origin)
            if kind == SYNC or node is None:
                self._load(origin)
            else:
                node.last_seen = now
        elif kind == KICK:
            self._heard(origin)
            self._kick(message)
        elif kind == BYE:
            gone = self._nodes.pop(origin, None)
            if gone is not None:
                _log.info("node {node} left", node=gone.node_id)

    def _missed(self, origin: str, count: int, channel: bytes) -> None:
        """Messages of node C{origin} on C{channel} never reached this node."""
        self.missed += count
        node = self._nodes.get(origin)
        name = node.node_id if node is not None else origin
        suppressed = self._missed_log.allow(self.clock.seconds())
        if suppressed is not None:
            _log.warn(
                "missed {count} message(s) of node {node} on {channel} (Redis dropped them: a lost or too slow "
                "subscriber connection?); {total} missed in all ({suppressed} lines suppressed)",
                count=count, node=name, channel=channel.decode(errors="replace"), total=self.missed,
                suppressed=suppressed,
            )
        if channel == self.channel_all and node is not None:
            self._load(origin)  # a join or leave may be among them

    def _heard(self, origin: str) -> None:
        node = self._nodes.get(origin)
        if node is not None:
            node.last_seen = self.clock.seconds()

    def _membership_event(self, message: NodeMessage) -> None:
        node = self._nodes.get(message.origin)
        if node is None:
            return  # a node we do not know yet: its snapshot will say it
        hub, group, connection_id = message.fields
        node.apply(hub, group, connection_id, message.kind == JOIN)

    def _deliver(self, message: NodeMessage) -> None:
        hub, kind, group, ids, payload = message.fields
        assert self._factory is not None
        runtime = self._factory.runtimes.get(hub)
        if runtime is None:
            self._bad(f"a receiver call for unknown hub {hub[:64]!r}")
            return
        problem = receiver_call_problem(payload, runtime.receiver_methods, runtime.max_message_size)
        if problem is not None:
            self._bad(f"{problem}, from node {message.origin[:64]!r} for hub {hub!r}: not forwarded to any client")
            return
        target = Target(kind, group, tuple(ids))
        runtime.deliver(runtime.local_targets(target), payload)

    def _kick(self, message: NodeMessage) -> None:
        hub, connection_id, reason = message.fields
        assert self._factory is not None
        runtime = self._factory.runtimes.get(hub)
        if runtime is None:
            self._bad(f"a kick for unknown hub {hub[:64]!r}")
            return
        if connection_id in runtime.connections:  # else it left meanwhile: nothing to do
            runtime.kick(connection_id, reason)

    def _bad(self, what: str) -> None:
        self.bad_messages += 1
        suppressed = self._bad_log.allow(self.clock.seconds())
        if suppressed is not None:
            _log.warn(
                "ignored a backplane message: {what} ({suppressed} more suppressed)", what=what, suppressed=suppressed
            )

    def _reject(self, what: str) -> None:
        self.rejected += 1
        suppressed = self._reject_log.allow(self.clock.seconds())
        if suppressed is not None:
            _log.error(
                "rejected {what} ({suppressed} more suppressed; {total} rejected in all)",
                what=what, suppressed=suppressed, total=self.rejected,
            )

# -- the real connections ---------------------------------------------------------


def _link_gone(error: Exception) -> bool:
    import txredisapi

    return isinstance(error, txredisapi.ConnectionError)
