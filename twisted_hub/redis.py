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
with a shared secret, signed (L{twisted_hub._backplane.wire}); the
connections themselves (TLS, Sentinel, the PING watch) are
L{twisted_hub._backplane.redis_link}'s.

This module is the Redis driver; the decisions live in parts it wires
together: the typed messages and their checks (L{twisted_hub._backplane.wire}),
the mirror of the other nodes' members (L{twisted_hub._backplane.membership}) and what
is done with what they say (L{twisted_hub._backplane.inbox}), all without I/O;
and, on Redis, the keys and the command flow control
(L{twisted_hub._backplane.redis_commands}) and this node's state there
(L{twisted_hub._backplane.redis_presence}).  It reaches this node's hubs through
L{twisted_hub._backplane.interface.LocalHubs} only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ._backplane.inbox import BackplaneProblems, NodeInbox
from ._backplane.interface import ClaimAnswer, LocalHubs, Target
from ._backplane.membership import NodeMirror
from ._backplane.moves import CLAIM_TIMEOUT, SessionMoves
from ._backplane.redis_commands import CommandLink, Publisher, RedisCommands, RedisKeys
from ._backplane.redis_link import (
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    RedisLinkError,
    RedisSettings,
    TxRedisConnector,
    parse_redis_url,
)
from ._backplane.redis_presence import NodePresence
from ._backplane.session_store import SessionStore
from ._backplane.wire import (
    BackplaneMessage,
    Bye,
    Handover,
    NodeCodec,
    Signer,
    read_secret_file,
    secret_from_environment,
)
from ._core.base_error import HubArgumentError, HubStateError
from ._support.logging import HUB_LOG_OBSERVER, TwistedCoreLog

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


class RedisConnector(Protocol):
    """
    Keeps a backplane's two Redis connections (commands, subscriber) up
    and reports on them through the backplane's C{link_*} methods.
    """

    def start(self, backplane: RedisBackplane) -> None: ...

    def stop(self) -> Deferred[None] | None:
        """Close both connections; the Deferred fires once they are closed."""

    def drained(self, then: Callable[[], None]) -> None:
        """
        Call C{then} once every message Redis sent the subscriber connection
        before now has been given to the backplane (at once when that
        connection is not up).
        """


class _Kept:
    """A number one part of the backplane keeps, read on the backplane (metrics, status page, tests)."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, backplane: object, owner: type | None = None) -> int:
        count: int = getattr(getattr(backplane, self.part), self.name)
        return count


def _signer(secret_file: str | None, secret_env: str | None) -> tuple[Signer | None, str | None]:
    """The signer of a node's messages, and where its secret came from (for the status page; never the secret)."""
    if secret_file is not None and secret_env is not None:
        raise HubArgumentError("give either secret_file or secret_env")
    if secret_file is not None:
        return Signer(read_secret_file(secret_file)), f"file {secret_file}"
    if secret_env is not None:
        return Signer(secret_from_environment(secret_env)), f"${secret_env}"
    return None, None


def _answered_within(answers: list[Deferred[Any]], clock: IReactorTime, timeout: float) -> Deferred[bool]:
    """Fires True once every one of C{answers} fired, or False after C{timeout} seconds."""
    said: Deferred[bool] = Deferred()

    def too_late() -> None:
        if not said.called:
            said.callback(False)

    timer = clock.callLater(timeout, too_late)

    def answered(_: object) -> None:
        if not said.called:
            timer.cancel()
            said.callback(True)

    gatherResults(answers).addCallback(answered)
    return said


class _LinkReport:
    """
    What the operator is told of a backplane's links to Redis: a line as
    they go and come back (once per outage, not once per attempt, unless
    Redis refuses), and the rows of the status page.
    """

    def __init__(self, backplane: RedisBackplane) -> None:
        self.backplane = backplane
        self.ever_connected = False
        self.outage_logged = False
        self.last_error = ""

    def connected(self) -> None:
        backplane = self.backplane
        self.ever_connected = True
        self.last_error = ""
        _log.info("connected to Redis at {url} as node {node}", url=backplane.settings.display(), node=backplane.node_id)

    def lost(self, reason: str, was_connected: bool) -> None:
        self.last_error = reason
        if was_connected:
            _log.warn(
                "lost Redis at {url} ({reason}): serving this node's connections only, reconnecting with backoff",
                url=self.backplane.settings.display(), reason=reason,
            )

    def failed(self, reason: str, refused: bool, retry_in: float | None) -> None:
        backplane = self.backplane
        self.last_error = reason
        retry = f"; next attempt in {retry_in:.1f} s" if retry_in is not None else ""
        if refused:
            _log.error(
                "Redis at {url} refused node {node}: {reason}{retry}",
                url=backplane.settings.display(), node=backplane.node_id, reason=reason, retry=retry,
            )
            return
        if not self.ever_connected and not self.outage_logged:
            self.outage_logged = True
            _log.error(
                "Redis at {url} is unreachable ({reason}): node {node} serves its own connections only "
                "and retries with backoff",
                url=backplane.settings.display(), reason=reason, node=backplane.node_id,
            )

    def status(self, other_nodes: int, signer: Signer | None) -> list[tuple[str, str]]:
        backplane = self.backplane
        if backplane.connected:
            state = f"connected to {backplane.settings.display()}, {other_nodes} other node(s)"
        else:
            state = f"NOT connected to {backplane.settings.display()} (retrying): serving this node's connections only"
            if self.last_error:
                state += f"; last error: {self.last_error}"
        rows = [("node", backplane.node_id), ("redis", state)]
        if signer is None:
            rows.append(("backplane messages", "not signed: whoever can publish on this Redis reaches every client"))
        else:
            rows.append((
                "backplane messages",
                f"signed (HMAC-SHA256; {signer.key_count} secret(s) from {backplane.secret_source})",
            ))
        if backplane.rejected or backplane.bad_messages:
            rows.append((
                "backplane messages refused",
                f"{backplane.rejected} rejected (unsigned, forged, stale or replayed), {backplane.bad_messages} malformed",
            ))
        dropped = backplane.dropped_disconnected + backplane.dropped_overload
        if dropped:
            rows.append((
                "redis messages dropped",
                f"{dropped} ({backplane.dropped_disconnected} while disconnected, "
                f"{backplane.dropped_overload} over the queue limit)",
            ))
        if backplane.missed:
            rows.append(("redis messages missed", f"{backplane.missed} (published by other nodes, never heard here)"))
        claims = backplane.claims_won + backplane.claims_refused + backplane.claims_unanswered
        if claims or backplane.handed_over:
            rows.append((
                "sessions moved between nodes",
                f"{backplane.claims_won} taken over, {backplane.handed_over} handed over; "
                f"claims refused {backplane.claims_refused}, unanswered {backplane.claims_unanswered}",
            ))
        if backplane.claims_restored or backplane.snapshots_kept or backplane.given_up:
            rows.append((
                "sessions kept in redis",
                f"{backplane.snapshots_kept} snapshot(s) of quiet sessions; {backplane.claims_restored} restored "
                "here after their node was lost"
                + (f"; {backplane.given_up} restored elsewhere while this node was cut off" if backplane.given_up else ""),
            ))
        if backplane.late_handovers:
            rows.append((
                "sessions lost in a move",
                f"{backplane.late_handovers} (handed over after this node's claim timed out: "
                f"its claim_timeout, {backplane.claim_timeout:g} s, is shorter than a claim's round trip at times)",
            ))
        return rows


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
    @param claim_timeout: seconds a node waits for the node holding a session
        a client resumes here (docs/resumption.md, "Across nodes"); past it
        the resume is refused C{session-unknown}.
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
        claim_timeout: float = CLAIM_TIMEOUT,
    ) -> None:
        self.settings = parse_redis_url(url)
        if self.settings.tls:
            self.settings.tls_options()  # the certificate files are read now: a bad one fails at once
        signer, self.secret_source = _signer(secret_file, secret_env)
        if not lease > 0:
            raise HubArgumentError(f"lease must be > 0, got {lease!r}")
        if not claim_timeout > 0:
            raise HubArgumentError(f"claim_timeout must be > 0, got {claim_timeout!r}")
        if min(max_pending_commands, max_pending_bytes) <= 0:
            raise HubArgumentError("max_pending_commands and max_pending_bytes must be > 0")
        self.prefix = prefix
        self.lease = lease
        #: the start of every connection id of this node
        self.token = os.urandom(6).hex()
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-{self.token}"
        self._clock = clock
        self._connector: RedisConnector = (
            connector if connector is not None
            else TxRedisConnector(ping_interval=ping_interval, ping_timeout=ping_timeout)
        )
        self._counter = 0
        self._hubs: LocalHubs | None = None
        self.keys = RedisKeys(prefix)
        self.channel_all = self.keys.channel_all
        self.channel_node = self.keys.node_channel(self.token)
        self._codec = NodeCodec(self.token, signer)
        core_log = TwistedCoreLog(_log.namespace)
        self._mirror = NodeMirror(lease, core_log)
        self._problems = BackplaneProblems(core_log)
        self._link = CommandLink(max_pending_commands, max_pending_bytes, self._now)
        self._publisher = Publisher(self._codec, self._link, self.keys, self._now)
        self._inbox = NodeInbox(self._codec, self._mirror, self._problems, self.channel_all, self._load)
        self._sessions = SessionStore(
            self.keys, self._codec, self._link, self._now, lambda: self._codec.last_heard(self.channel_all),
            node=self.token, taken=self._session_taken,
        )
        self._moves = SessionMoves(
            self.token, self._publish_move, lambda: self._codec.last_heard(self.channel_all),
            self._call_later, core_log, claim_timeout, drain=self._drained, restore=self._read_session,
        )
        self._inbox.moves = self._moves
        self._publisher.route = self._moves.node_of
        self._publisher.history = self._moves.history
        self._presence = NodePresence(
            token=self.token, node_id=self.node_id, lease=lease, keys=self.keys, codec=self._codec,
            link=self._link, inbox=self._inbox, now=self._now,
        )
        self._heartbeat: LoopingCall | None = None
        self._started = False
        self._report = _LinkReport(self)

    #: receiver calls published (one PUBLISH each) / broadcasts asked for
    published = _Kept("_publisher")
    #: publishes not sent: Redis away (C{dropped_disconnected}) or too slow (C{dropped_overload})
    dropped_disconnected = _Kept("_publisher")
    dropped_overload = _Kept("_publisher")
    #: Redis commands (and their bytes) that may wait for their answer
    max_pending_commands = _Kept("_link")
    max_pending_bytes = _Kept("_link")
    #: Redis commands (and their bytes) sent and not answered yet
    pending_commands = _Kept("_link")
    pending_bytes = _Kept("_link")
    #: commands that were waiting for their answer when the connection went
    lost_in_flight = _Kept("_link")
    #: messages from Redis that could not be understood
    bad_messages = _Kept("_problems")
    #: messages other nodes published that never reached this node (gaps in their sequence numbers)
    missed = _Kept("_problems")
    #: messages and Redis state refused: not signed with the secret, stale or replayed
    rejected = _Kept("_problems")
    #: nodes dropped because their lease ran out
    nodes_expired = _Kept("_mirror")
    #: times this node found its state gone from Redis and wrote it again
    state_rewrites = _Kept("_presence")
    #: claims this node made for sessions another node held (a client resumed here, docs/resumption.md):
    #: answered with the session, refused by its holder, answered by no node within C{claim_timeout}
    claims_won = _Kept("_moves")
    claims_refused = _Kept("_moves")
    claims_unanswered = _Kept("_moves")
    #: sessions this node handed over to another node's claim
    handed_over = _Kept("_moves")
    #: sessions handed over after this node's claim timed out: lost (their client had started afresh)
    late_handovers = _Kept("_moves")
    #: messages for connections that moved away, sent on to the node holding them now
    forwarded = _Kept("_moves")
    #: claims nobody answered that were answered from the session's snapshot (its node died)
    claims_restored = _Kept("_moves")
    #: session snapshots written and deleted by this node (docs/resumption.md, "When a node dies")
    saved = _Kept("_sessions")
    forgotten = _Kept("_sessions")
    #: snapshots of this node another node restored while this node was cut off from Redis
    #: (found at a renewal: the session was given up here)
    given_up = _Kept("_sessions")

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            if self._hubs is not None:
                self._clock = self._hubs.clock
            else:  # pragma: no cover - attach() always runs first
                from twisted.internet import reactor

                self._clock = reactor
        assert self._clock is not None
        return self._clock

    def _now(self) -> float:
        return self.clock.seconds()

    @property
    def connected(self) -> bool:
        """True while both connections to Redis are up (and subscribed)."""
        return self._link.connected

    @property
    def connected_commands(self) -> bool:
        """True while the command connection is up."""
        return self._link.commands is not None

    @property
    def claim_timeout(self) -> float:
        """Seconds a claim for a session another node holds waits for its answer."""
        return self._moves.claim_timeout

    @property
    def nodes(self) -> dict[str, str]:
        """The other nodes this one hears: token -> node id."""
        return self._mirror.nodes

    # -- Backplane ---------------------------------------------------------
    def attach(self, hubs: LocalHubs) -> None:
        if self._hubs is not None and self._hubs != hubs:
            raise HubStateError("a RedisBackplane serves one HubServerFactory")
        self._hubs = self._inbox.hubs = self._presence.hubs = self._moves.hubs = hubs

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
            said_bye = self._publisher.publish(self.channel_all, Bye())
            sent = [said_bye, *(self._link.send(*command) for command in self._presence.forget_commands())]
            answers = [d for d in sent if d is not None]
        if not answers:
            return self._close_links()

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

        return _answered_within(answers, self.clock, GOODBYE_TIMEOUT).addCallback(close)

    def _close_links(self) -> Deferred[None]:
        stopped = self._connector.stop()
        return stopped if stopped is not None else succeed(None)

    def new_connection_id(self) -> str:
        self._counter += 1
        return f"{self.token}-{self._counter}"

    def publish(self, hub: str, target: Target, payload: bytes) -> None:
        self._publisher.receiver_call(hub, target, payload)

    def kick(self, hub: str, connection_id: str, reason: str) -> None:
        self._publisher.kick(hub, connection_id, reason)

    def membership_changed(self, hub: str, group: str, connection_id: str, joined: bool) -> None:
        self._presence.membership_changed(hub, group, connection_id, joined)

    def remote_members(self, hub: str, group: str) -> list[str]:
        return self._mirror.remote_members(hub, group)

    def remote_count(self, hub: str, group: str) -> int:
        return self._mirror.remote_count(hub, group)

    def status(self) -> list[tuple[str, str]]:
        return self._report.status(len(self._mirror), self._codec.signer)

    # -- sessions that move between nodes (docs/resumption.md, "Across nodes") ----------------
    #: a session this node does not hold is claimed from the others (SessionMoves)
    moves_sessions = True

    def claim_session(
        self, hub: str, key: bytes, digest: bytes, user: str | None, answer: Callable[[ClaimAnswer], None],
    ) -> None:
        if not self.connected:
            answer(ClaimAnswer("session-unknown", "Redis is not connected: no other node can be asked"))
            return
        self._moves.claim(hub, key, digest, user, answer)

    def session_arrived(
        self, hub: str, connection_id: str, groups: Iterable[str], cutoffs: dict[str, int], since: int,
    ) -> list[bytes]:
        return self._moves.arrived(hub, connection_id, groups, cutoffs, since)

    #: quiet sessions are kept in Redis (SessionStore), so a session outlives its node
    keeps_sessions = True

    def save_session(self, hub: str, key: bytes, state: bytes, ttl: float) -> bool:
        return self._sessions.save(hub, key, state, ttl)

    def forget_session(self, key: bytes) -> None:
        self._sessions.forget(key)

    @property
    def snapshots_kept(self) -> int:
        """Session snapshots this node keeps in Redis now."""
        return len(self._sessions)

    def _read_session(
        self, hub: str, key: bytes, then: Callable[[tuple[bytes, dict[str, int]] | None], None],
    ) -> None:
        self._sessions.read(hub, key, then)

    def _session_taken(self, hub: str, key: bytes, node: str) -> None:
        """Node C{node} ("": another) restored session C{key} of C{hub} from this node's snapshot: give it up here."""
        hubs = self._hubs
        if hubs is None:
            return  # (not attached: no session is held)
        moves = self._moves

        def forward(connection_id: str) -> Callable[[bytes], None]:
            if node:
                moves.moved_to(connection_id, node)
            return lambda payload: moves.forward(hub, connection_id, payload)

        try:
            hubs.give_up(hub, key, forward)
        except Exception:
            # a bug of ours: logged with its traceback (the copy stays, and ends when its window passes)
            _log.failure("giving up a session of hub {hub} another node restored failed", hub=hub)

    def _publish_move(self, node: str | None, message: BackplaneMessage) -> None:
        if isinstance(message, Handover) and message.state:
            # (the session is the claimant's now: this node stops renewing its snapshot, which
            # the claimant deletes once the token rotated there, or which expires by itself)
            self._sessions.disown(message.key)
        channel = self.channel_all if node is None else self.keys.node_channel(node)
        self._publisher.publish(channel, message)

    def _drained(self, then: Callable[[], None]) -> None:
        self._connector.drained(then)

    def _call_later(self, delay: float, function: Callable[[], object]) -> Callable[[], object]:
        call = self.clock.callLater(delay, function)
        return call.cancel

    # -- what the connector reports ----------------------------------------------
    def link_message(self, channel: bytes, data: bytes) -> None:
        """A message arrived on a subscribed channel."""
        self._inbox.receive(channel, data, self.clock.seconds())

    def link_ready(self, which: str, link: RedisCommands | None = None) -> None:
        """A connection is up: C{"commands"} (with C{link}) or C{"subscriber"} (subscribed)."""
        if which == "commands":
            self._link.commands = link
        else:
            self._link.subscribed = True
        if self.connected:
            self._connected()

    def link_lost(self, which: str, reason: str) -> None:
        """A connection to Redis is gone; the connector reconnects it."""
        was_connected = self.connected
        if which == "commands":
            self._link.commands_lost()
        else:
            self._link.subscribed = False
        self._report.lost(reason, was_connected and self._started)

    def link_failed(self, reason: str, refused: bool = False, retry_in: float | None = None) -> None:
        """
        A connection attempt failed; the connector retries in C{retry_in}
        seconds.  C{refused}: Redis answered and said no (a wrong password,
        protected mode, a replica, a certificate): a line at every attempt,
        as a retry will not mend it by itself.  Else Redis was not reached:
        one line until it is.
        """
        self._report.failed(reason, refused, retry_in)

    def _connected(self) -> None:
        self._report.connected()
        self._presence.write_snapshot()
        self._presence.load_nodes()
        self._sessions.connected()

    def _load(self, token: str) -> None:
        self._presence.load(token)

    def _beat(self) -> None:
        """Every C{lease / 3}: renew this node's lease, say it is alive, forget silent nodes."""
        now = self.clock.seconds()
        before = set(self._mirror.nodes)
        self._mirror.expire(now)
        for token in before - set(self._mirror.nodes):
            self._moves.node_gone(token)
        self._codec.forget(now, {self.keys.node_channel(token) for token in self._mirror.nodes})
        if self.connected:
            self._presence.refresh()
            self._sessions.refresh()
