"""
Resumable sessions' snapshots in Redis (docs/resumption.md, "When a node
dies"): L{SessionStore} writes the snapshot a node takes of a quiet
session, keeps it alive while the node lives, deletes it when it no longer
holds, and reads it for a claim nobody answered.

One key per session, C{<prefix>:v1:session:<epoch+id hex>}: the snapshot
(a C{MovedSession}'s bytes), the hub, and the writer's cut-offs (the last
hub-wide number it had handled from each node), signed like every other
value a node keeps when the nodes share a secret.  It expires C{ttl}
seconds after it was written or refreshed; the node refreshes each of its
own every quarter C{ttl}, so a key outlives its node by at least three
quarters of C{ttl} (the server asks for two windows: at least 1.5 windows).

A node that restored a session from its snapshot marks the key I{taken}
(its name for that node, same expiry) where another node would delete it:
the node that wrote the snapshot may be alive but cut off from Redis, with
a stale copy of the session.  Each renewal checks the key still holds what
this node wrote (L{RENEW}); one that finds it taken, or rewritten by
another node, gives the session up here without ending it, as a move does
(C{taken}).  One that finds it gone writes it again (Redis restarted
without its data, or was flushed).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import msgpack
from twisted.logger import Logger

from .._support.logging import HUB_LOG_OBSERVER
from .redis_commands import FAILED, CommandLink, RedisKeys
from .wire import NodeCodec

__all__ = ["RENEW", "SNAPSHOT_LAYOUT", "TAKE", "TAKEN_LAYOUT", "SessionStore"]

_log = Logger(namespace="twisted_hub.redis", observer=HUB_LOG_OBSERVER)

#: the layout of a snapshot key's value (a node refuses another: the session is not restored)
SNAPSHOT_LAYOUT: Final = 1
#: the layout of a taken snapshot key's value: C{[0, the token of the node that restored it]}
TAKEN_LAYOUT: Final = 0
#: a renewal (Lua, run by Redis in one step): renew the key if it still holds the value whose
#: SHA-1 is ARGV[1] (answer 1); 0 when it is gone; else the value it holds now
RENEW: Final = (
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then return 0 end "
    "if redis.sha1hex(v) ~= ARGV[1] then return v end "
    "redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "return 1"
)
#: marking a restored snapshot taken (Lua): the key holds ARGV[1] with the expiry it had (1); 0 when it is gone
TAKE: Final = (
    "local t = redis.call('PTTL', KEYS[1]) "
    "if t <= 0 then return 0 end "
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', t) "
    "return 1"
)
#: keys this node restored, remembered until it deletes them (they are marked taken then)
MAX_RESTORED: Final = 10_000
#: deletes remembered while Redis is away (sent on reconnection; the oldest go first past it)
MAX_UNSENT_FORGETS: Final = 100_000
#: expiries renewed at most per call of L{SessionStore.refresh} (or an eighth of the snapshots, if more),
#: so that renewing many snapshots never fills the command limits that publishing shares
REFRESH_AT_ONCE: Final = 1000


class SessionStore:
    """
    This node's side of the snapshots in Redis.

    @param cutoffs: the last hub-wide number this node handled from each node.
    @param node: this node's token (what a taken key names).
    @param taken: C{taken(hub, key, node)}: another node restored session C{key} of C{hub}
        from this node's snapshot (C{node}: that node; "" when the key holds another
        node's snapshot of it by now); this node gives its copy up.
    """

    def __init__(
        self, keys: RedisKeys, codec: NodeCodec, link: CommandLink, now: Callable[[], float],
        cutoffs: Callable[[], dict[str, int]], node: str = "",
        taken: Callable[[str, bytes, str], None] | None = None,
    ) -> None:
        self._keys = keys
        self._codec = codec
        self._link = link
        self._now = now
        self._cutoffs = cutoffs
        self._node = node
        self._taken = taken
        # this node's snapshot keys -> (written or refreshed at, ttl in ms, value, hub, session key),
        # least recently refreshed first
        self._written: OrderedDict[bytes, tuple[float, int, bytes, str, bytes]] = OrderedDict()
        # the keys of snapshots this node restored, until it deletes them (marks them taken)
        self._restored: OrderedDict[bytes, None] = OrderedDict()
        # deletes that could not be sent (Redis away), sent on reconnection: key -> None, or the taken marker
        self._unsent: OrderedDict[bytes, bytes | None] = OrderedDict()
        #: snapshots written, deleted, read (found and usable), and found unusable; written again because
        #: Redis had lost them (found at a renewal: Redis restarted without its data, or flushed);
        #: given up because another node restored them (found at a renewal); marked taken
        self.rewritten = 0
        self.given_up = 0
        self.marked_taken = 0
        self.saved = 0
        self.forgotten = 0
        self.read_found = 0
        self.read_unusable = 0
        self.read_taken = 0

    def __len__(self) -> int:
        return len(self._written)

    def save(self, hub: str, key: bytes, state: bytes, ttl: float) -> bool:
        """Write a snapshot (see L{twisted_hub._backplane.interface.Backplane.save_session})."""
        name = self._keys.session(key)
        data: bytes = msgpack.packb([SNAPSHOT_LAYOUT, hub, state, self._cutoffs()], use_bin_type=True)
        ttl_ms = max(int(ttl * 1000), 1)
        value = self._codec.session_value(name, data)
        if self._link.send("SET", name, value, "PX", ttl_ms) is None:
            return False
        self._unsent.pop(name, None)
        self._restored.pop(name, None)  # (this node's own snapshot now)
        self._written[name] = (self._now(), ttl_ms, value, hub, key)
        self._written.move_to_end(name)
        self.saved += 1
        return True

    def forget(self, key: bytes) -> None:
        """
        Delete a snapshot; while Redis is away the delete waits for the
        reconnection.  One this node restored is marked taken instead (the
        module docstring), if Redis is there.
        """
        name = self._keys.session(key)
        self._written.pop(name, None)
        self.forgotten += 1
        marker = None
        if name in self._restored:
            del self._restored[name]
            marker = self._codec.session_value(name, msgpack.packb([TAKEN_LAYOUT, self._node]))
        if not self._delete(name, marker):
            self._unsent[name] = marker
            while len(self._unsent) > MAX_UNSENT_FORGETS:
                self._unsent.popitem(last=False)

    def disown(self, key: bytes) -> None:
        """
        This node handed the session over to another node: stop renewing its
        snapshot, without deleting it (the new node deletes it once the
        token rotated there; if the handover is lost, the claimant may still
        restore the session from it).
        """
        self._written.pop(self._keys.session(key), None)

    def _delete(self, name: bytes, marker: bytes | None) -> bool:
        """Delete key C{name}, or mark it taken with C{marker}; False when Redis is away."""
        if marker is None:
            return self._link.send("DEL", name, unlimited=True) is not None
        if self._link.send("EVAL", TAKE, 1, name, marker, unlimited=True) is None:
            return False
        self.marked_taken += 1
        return True

    def connected(self) -> None:
        """
        Redis is back: send the deletes that waited, and renew the expiry of
        the kept snapshots (finding at once those another node restored meanwhile).
        """
        unsent, self._unsent = self._unsent, OrderedDict()
        for name, marker in unsent.items():
            if not self._delete(name, marker):
                self._unsent[name] = marker
        self.refresh(everything=True)

    def refresh(self, everything: bool = False) -> None:
        """
        Renew the expiry of this node's snapshots last renewed a quarter of
        their ttl ago (any: C{everything}), oldest first, at most
        L{REFRESH_AT_ONCE} (or an eighth of them) and as many as fit in the
        command limits now; the rest at the next call.  One Redis no longer
        holds (it restarted without its data, or was flushed) is written again.
        """
        now = self._now()
        written = self._written
        for _ in range(max(REFRESH_AT_ONCE, len(written) // 8)):
            if not written:
                return
            name, (at, ttl_ms, value, hub, key) = next(iter(written.items()))
            if at == now or (not everything and (now - at) * 1000 < ttl_ms / 4):
                return  # (renewed this turn, or not due yet)
            digest = hashlib.sha1(value, usedforsecurity=False).hexdigest()
            renewed = self._link.send("EVAL", RENEW, 1, name, digest, ttl_ms)
            if renewed is None:
                return
            written[name] = (now, ttl_ms, value, hub, key)
            written.move_to_end(name)
            renewed.addCallback(self._renewed, name, value)  # (last: an answer at once may give the key up)

    def _renewed(self, reply: Any, name: bytes, value: bytes) -> None:
        """
        A renewal's answer: 1 renewed; 0: Redis no longer holds the
        snapshot, or a value not signed with the nodes' secret: this node's
        is written again; another authentic value (a taken mark, another
        node's snapshot): the session is given up here (the module docstring).
        """
        entry = self._written.get(name)
        if reply == 1 or reply is FAILED or entry is None or entry[2] != value:
            return  # (renewed, failed and counted by the link, or forgotten or written anew meanwhile)
        _, ttl_ms, _, hub, key = entry
        data = None if reply == 0 else self._codec.session_data(name, reply)
        if data is None:
            if reply != 0:
                _log.error("the session snapshot {key} in Redis was overwritten with a value not signed with the"
                           " nodes' secret: this node's is written again", key=name.decode())
            if self._link.send("SET", name, value, "PX", ttl_ms) is not None:
                self.rewritten += 1
            return
        del self._written[name]
        self.given_up += 1
        node = _taken_by(data)
        _log.warn(
            "the session snapshot {key} was restored by {node} while this node was cut off from Redis:"
            " its copy here is given up",
            key=name.decode(), node=f"node {node}" if node else "another node",
        )
        if self._taken is not None:
            self._taken(hub, key, node)

    def read(self, hub: str, key: bytes, then: Callable[[tuple[bytes, dict[str, int]] | None], None]) -> None:
        """Read the snapshot of session C{key} of C{hub}: C{then((state, cut-offs))} or C{then(None)}, once."""
        name = self._keys.session(key)
        reading = self._link.send("GET", name, unlimited=True)
        if reading is None:
            then(None)
            return

        def got(value: Any) -> None:
            found = None if value is FAILED or value is None else self._decode(name, hub, value)
            if found is not None:
                self._restored[name] = None
                while len(self._restored) > MAX_RESTORED:
                    self._restored.popitem(last=False)
            then(found)

        reading.addCallback(got)

    def _decode(self, name: bytes, hub: str, value: object) -> tuple[bytes, dict[str, int]] | None:
        data = self._codec.session_data(name, value)
        problem = "not signed with the nodes' secret" if data is None else None
        raw: Any = None
        if data is not None:
            try:
                raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
            except Exception as e:
                problem = f"not msgpack ({e})"
        if problem is None and type(raw) is list and len(raw) == 2 and raw[0] == TAKEN_LAYOUT:  # noqa: E721
            self.read_taken += 1
            _log.info("the session snapshot {key} was restored before, by node {node}: not again",
                      key=name.decode(), node=raw[1])
            return None
        if problem is None and not (
            type(raw) is list and len(raw) == 4 and raw[0] == SNAPSHOT_LAYOUT  # noqa: E721
            and type(raw[2]) is bytes and type(raw[3]) is dict  # noqa: E721
            and all(type(k) is str and type(v) is int for k, v in raw[3].items())  # noqa: E721
        ):
            problem = "not a snapshot of a layout this node knows"
        if problem is None and raw[1] != hub:
            problem = f"a snapshot of hub {raw[1]!r}, not {hub!r}"
        if problem is not None:
            self.read_unusable += 1
            _log.error("the session snapshot {key} in Redis is unusable ({problem}): the session is not restored",
                       key=name.decode(), problem=problem)
            return None
        self.read_found += 1
        return raw[2], raw[3]


def _taken_by(data: bytes) -> str:
    """The node a taken key's (authentic) data names; "" for anything else (another node's snapshot)."""
    try:
        raw = msgpack.unpackb(data, raw=False)
    except ValueError:  # (msgpack's errors: the value is another node's, of a layout unknown here)
        return ""
    if type(raw) is list and len(raw) == 2 and raw[0] == TAKEN_LAYOUT and type(raw[1]) is str:  # noqa: E721
        return raw[1]
    return ""
