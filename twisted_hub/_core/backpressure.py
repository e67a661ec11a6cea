"""
How much one server connection may leave unread: the slow-consumer rule.

The transport says when its buffer is full (C{pauseProducing}, an
C{IPushProducer} call in Twisted; C{pause_writing} in asyncio) and when it
has room again.  Everything written while it is full counts as unread output;
past C{max_outgoing_buffer} the client is dropped (close code 4004) rather
than let the server's memory grow.  L{OutputBudget} keeps that count and
makes the decision; the adapter reports each write and does the dropping.
What is written while the transport is full waits in L{HeldFrames}, where
heartbeats overtake it.  No I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["BUFFERED_WRITE_OVERHEAD", "HeldFrames", "OutputBudget"]

#: What the transport's buffer holds per write besides the bytes themselves
#: (a bytes object's header, a list slot): counted with each write, so a
#: flood of small frames (pongs) is held to max_outgoing_buffer in memory too.
BUFFERED_WRITE_OVERHEAD = 48


class OutputBudget:
    """
    One connection's unread output.

    The adapter reads L{stopped} and L{paused} on every write (plain
    attributes: the common write costs two attribute reads), adds the size
    to L{bytes_sent}, and while paused asks L{take} before writing; after a
    write it calls L{filled} when that write paused the transport.

    @ivar limit: bytes the client may leave unread (C{max_outgoing_buffer}).
    @ivar paused: the transport said its buffer is full.
    @ivar written_while_paused: bytes (plus L{BUFFERED_WRITE_OVERHEAD} per
        write) handed to the transport since it paused, the write that
        filled it included.
    @ivar stopped: nothing more is written (the client was dropped, or the
        connection is gone).
    @ivar bytes_sent: bytes written to this client (for the metrics).
    @ivar refused_at: the unread output the refused write would have made
        (for the log line; 0 until L{take} refused one).
    """

    __slots__ = ("limit", "paused", "written_while_paused", "stopped", "bytes_sent", "refused_at")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.paused = False
        self.written_while_paused = 0
        self.stopped = False
        self.bytes_sent = 0
        self.refused_at = 0

    def pause(self) -> None:
        """The transport's buffer is full.  Twisted says so again on every
        write while it stays full: only the first call starts the count, or a
        stalled client would never be dropped."""
        if not self.paused:
            self.paused = True
            self.written_while_paused = 0

    def resume(self) -> None:
        """The transport's buffer has room again."""
        self.paused = False
        self.written_while_paused = 0

    def take(self, size: int) -> bool:
        """
        While paused: count a write of C{size} bytes.  False (nothing
        counted, and L{stopped} set) when it would go over the limit: the
        adapter must drop the client instead of writing.
        """
        waiting = self.written_while_paused + size + BUFFERED_WRITE_OVERHEAD
        if waiting > self.limit:
            self.stopped = True
            self.refused_at = waiting
            return False
        self.written_while_paused = waiting
        return True

    def filled(self, size: int) -> None:
        """A write of C{size} bytes made while not paused paused the transport: it is the first unread one."""
        self.written_while_paused = size + BUFFERED_WRITE_OVERHEAD

    def still_held(self, size: int, writes: int) -> None:
        """The transport paused again with C{writes} writes (C{size} bytes) still held back: they are unread too."""
        self.written_while_paused += size + writes * BUFFERED_WRITE_OVERHEAD


class HeldFrames:
    """
    Our own queue of outgoing bytes: what an adapter writes while its
    transport's buffer is full waits here, in order, instead of in the
    transport, so heartbeats and their answers -- written straight to the
    transport -- overtake it ("heartbeats jump the queue where we control
    the queue").  The transport's own buffer stays near its pause
    threshold (Twisted's 64 KiB) plus one frame; what is already there,
    and in the kernel and any proxy, cannot be overtaken.
    """

    __slots__ = ("_frames", "size")

    def __init__(self) -> None:
        # made at the first frame held: most connections never hold one, and an
        # empty deque is 760 bytes per connection (bench/conn_memory_sites.py)
        self._frames: deque[bytes] | None = None
        #: bytes held
        self.size = 0

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    def hold(self, data: bytes) -> None:
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        frames.append(data)
        self.size += len(data)

    def release(self, write: Callable[[bytes], object], full: Callable[[], bool]) -> None:
        """The transport has room again: C{write} held bytes, in order, until it is C{full} again."""
        frames = self._frames
        while frames and not full():
            data = frames.popleft()
            self.size -= len(data)
            write(data)

    def clear(self) -> None:
        self._frames = None
        self.size = 0
