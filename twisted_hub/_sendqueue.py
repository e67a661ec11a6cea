"""
How many bytes written toward the peer are still on our side: the reading
behind "progress counts as life" (L{HeartbeatTracker.sample_output}).

Two places hold them: the transport's own buffer in our process (Twisted's
C{FileDescriptor} buffer, asyncio's C{get_write_buffer_size()}), and the
kernel's socket send queue -- on Linux, C{SIOCOUTQ} (the C{TIOCOUTQ} ioctl on
a socket) gives the bytes written to the socket and not yet acknowledged by
the peer's TCP.  Together they shrink exactly as fast as the peer (or a
proxy between us) takes our data.  Where the kernel's count is not available
(other systems), only our process's buffer is counted: our own socket buffer
then fills like the other buffers between us before a stopped peer is seen
(docs/heartbeat.md, "Slow links").

No reactor and no event loop: these functions read a transport or a socket
when asked.  Reading Twisted's buffer uses attributes of its
C{FileDescriptor} (C{dataBuffer}, C{offset}, C{_tempDataLen}); a transport
without them gives None (unknown), never a guess.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["asyncio_queued", "socket_unacknowledged", "twisted_queued"]

try:
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ if sys.platform.startswith("linux") else None
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    _OUTQ = None

#: how many wrapping transports (TLS, a connection guard) are looked through
_MAX_LAYERS = 4


def socket_unacknowledged(fileno: int) -> int | None:
    """
    Bytes written to socket C{fileno} that the peer has not acknowledged
    (sent or not), from the kernel (Linux C{SIOCOUTQ}); None where the
    system does not tell, or the socket is gone.
    """
    if _OUTQ is None or fileno < 0:
        return None
    buffer = bytearray(4)
    try:
        fcntl.ioctl(fileno, _OUTQ, buffer)
    except OSError:
        return None
    return int.from_bytes(buffer, sys.byteorder, signed=True)


def _fileno(handle: Any) -> int:
    try:
        return int(handle.fileno())
    except (AttributeError, OSError, ValueError, TypeError):
        return -1


def twisted_queued(transport: Any) -> int | None:
    """
    Bytes written to a Twisted C{transport} that are still on our side: in
    its buffer, in the buffers of the transports it wraps (TLS), and in the
    socket's send queue where the kernel tells (L{socket_unacknowledged}).
    None when no layer is a Twisted file descriptor (an in-memory test
    transport): unknown.
    """
    total = 0
    layer = transport
    for _ in range(_MAX_LAYERS):
        if layer is None:
            return None
        waiting = getattr(layer, "_appSendBuffer", None)  # TLS: written before the handshake finished
        if waiting:
            total += sum(len(chunk) for chunk in waiting)
        buffered = getattr(layer, "dataBuffer", None)
        offset = getattr(layer, "offset", None)
        pending = getattr(layer, "_tempDataLen", None)
        if isinstance(buffered, bytes) and isinstance(offset, int) and isinstance(pending, int):
            total += len(buffered) - offset + pending
            socket = getattr(layer, "socket", None)
            kernel = socket_unacknowledged(_fileno(socket)) if socket is not None else None
            return total if kernel is None else total + kernel
        layer = getattr(layer, "transport", None)
    return None


def asyncio_queued(transport: Any) -> int | None:
    """
    The same for an asyncio transport: its write buffer
    (C{get_write_buffer_size()}) plus the socket's send queue where the
    kernel tells.  None when the transport cannot say (closed, or not a
    write transport).
    """
    if transport is None:
        return None
    try:
        buffered = int(transport.get_write_buffer_size())
    except (AttributeError, RuntimeError, TypeError):
        return None
    socket = transport.get_extra_info("socket")
    kernel = socket_unacknowledged(_fileno(socket)) if socket is not None else None
    return buffered if kernel is None else buffered + kernel
