"""
permessage-deflate (RFC 7692): how the autobahn server and client negotiate
the settings (L{CompressionPolicy}, in L{twisted_hub._compression_policy}).

Off unless given.  Negotiated per connection: a client that does not offer
the extension gets an uncompressed connection from a server that has it on,
and a server that does not answer the offer gets one from a client that
offers it.  Once negotiated, a message shorter than C{min_size} bytes is
still sent uncompressed (RSV1 clear), as RFC 7692 allows per message:
heartbeats, acks and small results cost no deflate work and keep the fast
path (C{_autobahn.py}).  Server heartbeats are never compressed, whatever
their size.

Memory: by default every message is compressed on its own (no context
takeover, both directions) and the zlib state is released after each
message, so an open connection holds next to nothing for compression
(+2.6 KiB measured, docs/performance.md).  With C{context_takeover=True} a
connection keeps one compressor (C{2 ** (window_bits + 2) +
2 ** (mem_level + 9)} bytes plus zlib's few KiB) and one decompressor
(C{2 ** window_bits} bytes plus 7 KiB) from its first compressed message
until it closes: +54.7 KiB at the default window bits and memLevel,
+137.9 KiB at zlib's defaults (15, 8), measured.  Context takeover pays off
for small, similar messages (batched chat lines: 0.43 of the bytes instead
of 0.65 with C{min_size=128}); for our messages of a few KB it saves 1-3 %
of the bytes on the wire (7-11 % message by message).  Window bits and
memory level bound the rest.

Inflation is bounded by the receiver's C{max_message_size}: autobahn
(from 26.10) stops inflating once a message is past C{maxMessagePayloadSize}
and fails the connection with 1009, and 1007 for corrupt data.  Older
autobahn releases inflated a whole frame first (a few hundred compressed
bytes can inflate to megabytes), so compression is refused with them
(L{check_autobahn_bounds_inflation}).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import autobahn
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)

from ._autobahn import version_tuple
from ._base_error import HubArgumentError
from ._compression_policy import CompressionPolicy, describe

__all__ = [
    "MIN_AUTOBAHN_FOR_COMPRESSION",
    "CompressionPolicy",
    "check_autobahn_bounds_inflation",
    "client_accept",
    "client_offers",
    "describe",
    "install_deflate",
    "server_accept",
    "shared_deflated_frame",
]

#: The first autobahn release (major, minor) that bounds inflation by maxMessagePayloadSize
#: and closes with 1007 on corrupt deflate data (autobahn-python GHSA-hxp9-w8x3-p566, #1909).
MIN_AUTOBAHN_FOR_COMPRESSION = (26, 10)


def check_autobahn_bounds_inflation(version: str | None = None) -> None:
    """
    @raise HubArgumentError: the installed autobahn (or C{version}) inflates
        a compressed frame without a bound, so compression cannot be offered.
    """
    version = str(getattr(autobahn, "__version__", "0")) if version is None else version
    if version_tuple(version) < MIN_AUTOBAHN_FOR_COMPRESSION:
        wanted = ".".join(map(str, MIN_AUTOBAHN_FOR_COMPRESSION))
        raise HubArgumentError(
            f"compression needs autobahn >= {wanted} (it bounds inflation by the message size limit); "
            f"autobahn {version} is installed: pip install 'autobahn>={wanted}'"
        )


def server_accept(
    policy: CompressionPolicy, max_message_size: int,
) -> Callable[[Sequence[Any]], PerMessageDeflateOfferAccept | None]:
    """
    autobahn's C{perMessageCompressionAccept} for a server: accept the first
    permessage-deflate offer that fits the policy (None: decline them all,
    the connection opens uncompressed).
    """

    def accept(offers: Sequence[Any]) -> PerMessageDeflateOfferAccept | None:
        for offer in offers:
            if not isinstance(offer, PerMessageDeflateOffer):
                continue
            own_window = policy.server_max_window_bits
            if offer.request_max_window_bits:
                own_window = min(own_window, offer.request_max_window_bits)
            try:
                return PerMessageDeflateOfferAccept(
                    offer,
                    request_no_context_takeover=not policy.context_takeover and offer.accept_no_context_takeover,
                    request_max_window_bits=policy.client_max_window_bits if offer.accept_max_window_bits else 0,
                    no_context_takeover=offer.request_no_context_takeover or not policy.context_takeover,
                    window_bits=own_window,
                    mem_level=policy.mem_level,
                    max_message_size=max_message_size,
                )
            except Exception:  # autobahn refuses this combination: try the next offer
                continue
        return None

    return accept


def client_offers(policy: CompressionPolicy) -> list[PerMessageDeflateOffer]:
    """What a client offers: deflate with the server's window at most C{server_max_window_bits}."""
    return [
        PerMessageDeflateOffer(
            accept_no_context_takeover=True,
            accept_max_window_bits=True,
            request_no_context_takeover=not policy.context_takeover,
            request_max_window_bits=policy.server_max_window_bits,
        )
    ]


def client_accept(
    policy: CompressionPolicy, max_message_size: int,
) -> Callable[[Any], PerMessageDeflateResponseAccept | None]:
    """autobahn's C{perMessageCompressionAccept} for a client: take the server's answer to our offer."""

    def accept(response: Any) -> PerMessageDeflateResponseAccept | None:
        if not isinstance(response, PerMessageDeflateResponse):
            return None
        own_window = policy.client_max_window_bits
        if response.client_max_window_bits:
            own_window = min(own_window, response.client_max_window_bits)
        return PerMessageDeflateResponseAccept(
            response,
            no_context_takeover=response.client_no_context_takeover or not policy.context_takeover,
            window_bits=own_window,
            mem_level=policy.mem_level,
            max_message_size=max_message_size,
        )

    return accept


class HubDeflate(PerMessageDeflate):
    """
    autobahn's deflate with two changes: our compression C{level} (autobahn
    always uses zlib's default, 6), and without context takeover the zlib
    objects are released after each message (autobahn keeps the last one
    until the next message replaces it, so the memory stayed).
    """

    level: int = zlib.Z_DEFAULT_COMPRESSION

    def _own_no_context_takeover(self) -> bool:
        return bool(self.server_no_context_takeover if self._is_server else self.client_no_context_takeover)

    def _peer_no_context_takeover(self) -> bool:
        return bool(self.client_no_context_takeover if self._is_server else self.server_no_context_takeover)

    def start_compress_message(self) -> None:
        if self._compressor is None or self._own_no_context_takeover():
            bits = self.server_max_window_bits if self._is_server else self.client_max_window_bits
            self._compressor = zlib.compressobj(self.level, zlib.DEFLATED, -bits, self.mem_level)

    def end_compress_message(self) -> bytes:
        data: bytes = super().end_compress_message()
        if self._own_no_context_takeover():
            self._compressor = None
        return data

    def end_decompress_message(self) -> None:
        super().end_decompress_message()
        if self._peer_no_context_takeover():
            self._decompressor = None


def shared_deflated_frame(prepared: Any, deflate: Any) -> bytes | None:
    """
    The whole server frame (header and compressed payload, RSV1 set) of a
    prepared broadcast message for a connection whose compressor keeps no
    context (C{server_no_context_takeover}), or None when the connection's
    compression cannot share it (context takeover; not a L{HubDeflate}).

    Without context takeover every message is compressed by a fresh
    compressor, so connections with the same window bits, memLevel and level
    produce the same bytes: the first such connection compresses it and
    the frame is kept on the prepared message (one entry per setting) for
    the others.  A broadcast to N members costs one compression, not N.
    """
    if type(deflate) is not HubDeflate or not deflate._is_server or not deflate.server_no_context_takeover:
        return None
    key = (deflate.server_max_window_bits, deflate.mem_level, deflate.level)
    frames: dict[tuple[int, int, int], bytes] = prepared.__dict__.setdefault("_hub_deflated_frames", {})
    frame = frames.get(key)
    if frame is None:
        compressor = zlib.compressobj(deflate.level, zlib.DEFLATED, -deflate.server_max_window_bits, deflate.mem_level)
        data = (compressor.compress(prepared.payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        first = 0xC2 if prepared.binary else 0xC1  # FIN, RSV1 (compressed), binary or text
        length = len(data)
        if length < 126:
            header = bytes((first, length))
        elif length < 0x10000:
            header = bytes((first, 126)) + length.to_bytes(2, "big")
        else:
            header = bytes((first, 127)) + length.to_bytes(8, "big")
        frame = frames[key] = header + data
    return frame


def install_deflate(protocol: Any, policy: CompressionPolicy) -> bool:
    """
    Make the C{PerMessageDeflate} autobahn negotiated for C{protocol} a
    L{HubDeflate} (its class is changed in place: same parameters, and no
    message has been compressed yet); True when the connection is
    compressed.  Called when the WebSocket opens.  L{HubDeflate} reads
    autobahn's own attributes (C{_is_server}, C{_compressor},
    C{_decompressor}), as autobahn from L{MIN_AUTOBAHN_FOR_COMPRESSION} has them.
    """
    negotiated = getattr(protocol, "_perMessageCompress", None)
    if negotiated is None:
        return False
    if type(negotiated) is PerMessageDeflate:
        negotiated.__class__ = HubDeflate
        cast(HubDeflate, negotiated).level = policy.level
    return True
