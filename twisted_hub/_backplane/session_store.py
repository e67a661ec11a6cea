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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import msgpack
from twisted.logger import Logger

from .._support.logging import HUB_LOG_OBSERVER
from .redis_commands import FAILED, CommandLink, RedisKeys
from .wire import NodeCodec

__all__ = ["SNAPSHOT_LAYOUT", "SessionStore"]

_log = Logger(namespace="twisted_hub.redis", observer=HUB_LOG_OBSERVER)

#: the layout of a snapshot key's value (a node refuses another: the session is not restored)
SNAPSHOT_LAYOUT: Final = 1
#: deletes remembered while Redis is away (sent on reconnection; the oldest go first past it)
MAX_UNSENT_FORGETS: Final = 100_000
#: expiries renewed at most per call of L{SessionStore.refresh} (or an eighth of the snapshots, if more),
#: so that renewing many snapshots never fills the command limits that publishing shares
REFRESH_AT_ONCE: Final = 1000


class SessionStore:
    """
    This node's side of the snapshots in Redis.

    @param cutoffs: the last hub-wide number this node handled from each node.
    """

    def __init__(
        self, keys: RedisKeys, codec: NodeCodec, link: CommandLink, now: Callable[[], float],
        cutoffs: Callable[[], dict[str, int]],
    ) -> None:
        self._keys = keys
        self._codec = codec
        self._link = link
        self._now = now
        self._cutoffs = cutoffs
        # this node's snapshot keys -> (written or refreshed at, ttl in ms, value), least recently refreshed first
        self._written: OrderedDict[bytes, tuple[float, int, bytes]] = OrderedDict()
        # deletes that could not be sent (Redis away), sent on reconnection
        self._unsent: OrderedDict[bytes, None] = OrderedDict()
        #: snapshots written, deleted, read (found and usable), and found unusable; written again because
        #: Redis had lost them (found at a renewal: Redis restarted without its data, or flushed)
        self.rewritten = 0
        self.saved = 0
        self.forgotten = 0
        self.read_found = 0
        self.read_unusable = 0

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
        self._written[name] = (self._now(), ttl_ms, value)
        self._written.move_to_end(name)
        self.saved += 1
        return True

    def forget(self, key: bytes) -> None:
        """Delete a snapshot; while Redis is away the delete waits for the reconnection."""
        name = self._keys.session(key)
        self._written.pop(name, None)
        self.forgotten += 1
        if self._link.send("DEL", name, unlimited=True) is None:
            self._unsent[name] = None
            while len(self._unsent) > MAX_UNSENT_FORGETS:
                self._unsent.popitem(last=False)

    def connected(self) -> None:
        """Redis is back: send the deletes that waited, and renew the expiry of the kept snapshots."""
        unsent, self._unsent = self._unsent, OrderedDict()
        for name in unsent:
            if self._link.send("DEL", name, unlimited=True) is None:
                self._unsent[name] = None
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
            name, (at, ttl_ms, value) = next(iter(written.items()))
            if at == now or (not everything and (now - at) * 1000 < ttl_ms / 4):
                return  # (renewed this turn, or not due yet)
            renewed = self._link.send("PEXPIRE", name, ttl_ms)
            if renewed is None:
                return
            renewed.addCallback(self._renewed, name)
            written[name] = (now, ttl_ms, value)
            written.move_to_end(name)

    def _renewed(self, reply: Any, name: bytes) -> None:
        """A renewal's answer: 0 means Redis no longer holds the snapshot (it is written again)."""
        entry = self._written.get(name)
        if reply != 0 or entry is None:
            return  # (renewed, failed and counted by the link, or forgotten meanwhile)
        _, ttl_ms, value = entry
        if self._link.send("SET", name, value, "PX", ttl_ms) is not None:
            self.rewritten += 1

    def read(self, hub: str, key: bytes, then: Callable[[tuple[bytes, dict[str, int]] | None], None]) -> None:
        """Read the snapshot of session C{key} of C{hub}: C{then((state, cut-offs))} or C{then(None)}, once."""
        name = self._keys.session(key)
        reading = self._link.send("GET", name, unlimited=True)
        if reading is None:
            then(None)
            return

        def got(value: Any) -> None:
            found = None if value is FAILED or value is None else self._decode(name, hub, value)
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
