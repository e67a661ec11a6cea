"""
The permessage-deflate settings (RFC 7692), L{CompressionPolicy}, for the
server and both clients, and their one-line description.

Pure data and checks: how each side negotiates them is in
L{twisted_hub._compression} (autobahn) and L{twisted_hub.aio} (websockets);
what they cost and save is in C{twisted_hub/_compression.py}'s docstring and
docs/performance.md ("Compression").
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base_error import HubArgumentError

__all__ = ["DEFAULT_COMPRESSION_MIN_SIZE", "SMALLEST_MIN_SIZE", "CompressionPolicy", "describe"]

#: Messages shorter than this many bytes are sent uncompressed (docs/performance.md, "Compression").
DEFAULT_COMPRESSION_MIN_SIZE = 1024
#: The smallest C{min_size}: hub heartbeats and their acks (under 40 bytes) stay below it.
SMALLEST_MIN_SIZE = 64

_WINDOW_BITS = range(9, 16)
_MEM_LEVELS = range(1, 10)
_LEVELS = range(0, 10)


@dataclass(frozen=True)
class CompressionPolicy:
    """
    permessage-deflate settings, the same type for the server
    (C{HubServerFactory(compression=...)}, C{HubService}, C{twistd hub
    --compression}) and the clients (C{HubClientOptions(compression=...)}).

    @ivar min_size: messages (WebSocket frames) shorter than this many bytes
        are sent uncompressed; at least L{SMALLEST_MIN_SIZE}.
    @ivar server_max_window_bits: the server's LZ77 window, 9 to 15 (2 ** bits
        bytes): on the server, its compressor's; a client asks the server for
        at most this (its decompressor's memory).
    @ivar client_max_window_bits: the client's window: a client compresses
        with it; the server asks the client for at most this when the client
        allows it (browsers, C{ws} and C{websockets} do), else it must inflate
        with the full 15 bits.
    @ivar mem_level: zlib's memLevel for our compressor, 1 to 9 (its hash
        table: C{2 ** (mem_level + 9)} bytes); lower is smaller and slower.
    @ivar level: zlib's compression level, 0 to 9.  1, the default, is the
        fastest: on our payload set it sends 4-8 % more bytes than zlib's
        default 6 and spends 20-40 % less CPU deflating (docs/performance.md).
    @ivar context_takeover: keep each direction's compression state from one
        message to the next: a better ratio on small, similar messages, but
        the zlib state (tens of KiB) then stays with each connection.  False,
        the default: every message on its own, the zlib state released after
        each, and the peer asked to do the same.
    """

    min_size: int = DEFAULT_COMPRESSION_MIN_SIZE
    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    mem_level: int = 5
    level: int = 1
    context_takeover: bool = False

    def __post_init__(self) -> None:
        def whole(name: str, value: object, allowed: range) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
                raise HubArgumentError(
                    f"compression {name} must be a whole number from {allowed.start} to {allowed.stop - 1}, got {value!r}"
                )

        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < SMALLEST_MIN_SIZE:
            raise HubArgumentError(
                f"compression min_size must be a whole number of bytes >= {SMALLEST_MIN_SIZE} "
                f"(heartbeats stay uncompressed), got {self.min_size!r}"
            )
        whole("server_max_window_bits", self.server_max_window_bits, _WINDOW_BITS)
        whole("client_max_window_bits", self.client_max_window_bits, _WINDOW_BITS)
        whole("mem_level", self.mem_level, _MEM_LEVELS)
        whole("level", self.level, _LEVELS)
        if not isinstance(self.context_takeover, bool):
            raise HubArgumentError(f"compression context_takeover must be True or False, got {self.context_takeover!r}")


def describe(policy: CompressionPolicy | None) -> str:
    """One line for the start-up banner and the status page."""
    if policy is None:
        return "off"
    takeover = ", context takeover" if policy.context_takeover else ""
    return (
        f"permessage-deflate from {policy.min_size} bytes (window bits {policy.server_max_window_bits}/"
        f"{policy.client_max_window_bits}, memLevel {policy.mem_level}, level {policy.level}{takeover})"
    )
