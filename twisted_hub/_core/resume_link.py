"""
Where a connection's messages meet its resumable session's ledger:
L{ResumeLink} (docs/protocol.md section 10, docs/resumption.md).

A L{twisted_hub._core.connection.Connection} with a link numbers and keeps
every sequenced message it queues (the encoded bytes it already has: no
copy, no byte on the wire) and counts every sequenced message it receives;
acknowledgements from the peer go to the ledger's replay buffer.  Without a
link (resume not negotiated) a connection does none of this and costs
nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .replay_log import Broadcast
from .resume import SessionLedger
from .wire import MessageKind

__all__ = ["SEQUENCED_KINDS", "ResumeLink"]

#: The kinds that carry hub traffic and are numbered, kept and replayed
#: (docs/protocol.md section 10.2); every other kind is connection business.
SEQUENCED_KINDS: Final = frozenset(
    {
        MessageKind.INVOKE,
        MessageKind.NOTIFY,
        MessageKind.RESULT,
        MessageKind.ERROR,
        MessageKind.RECEIVER_CALL,
        MessageKind.CLIENT_INVOKE,
        MessageKind.STREAM_INVOKE,
        MessageKind.STREAM_ITEM,
        MessageKind.STREAM_END,
        MessageKind.STREAM_CREDIT,
        MessageKind.STREAM_CANCEL,
    }
)


class ResumeLink:
    """
    One connection's tie to its session's L{SessionLedger}: C{now} is the
    adapter's clock (the ledger's age bound reads it).
    """

    __slots__ = ("ledger", "now")

    def __init__(self, ledger: SessionLedger, now: Callable[[], float]) -> None:
        self.ledger = ledger
        self.now = now

    def sent(self, payload: bytes) -> None:
        """
        One encoded message is queued for the peer: number and keep it if
        it is sequenced.  Every message is a msgpack array of at most 15
        elements, so its second byte is its kind.
        """
        if payload[1] in SEQUENCED_KINDS:
            self.ledger.sent.append(payload, self.now())

    def sent_broadcast(self, broadcast: Broadcast) -> None:
        """
        A broadcast is sent that does not follow the buffer's open run (the
        fan-out's fast path, in L{SessionOutput.send_prepared}, took the
        others): keep it, and hold a run of its log from the next entry.
        """
        log, mark = broadcast.log, broadcast.mark
        if log is None or mark is None:
            self.sent(broadcast.payload)
        else:
            self.ledger.sent.join_run(log, mark, broadcast.payload, self.now())

    def sent_answer(self, call_id: int, payload: bytes) -> None:
        """
        The answer (RESULT or ERROR) to the peer's call C{call_id} is
        queued: keep it with the call for a repeat (L{CallDeduplicator}).
        """
        calls = self.ledger.calls
        if calls.is_running(call_id):
            calls.settle(call_id, payload, self.now())

    def acknowledged(self, received: int) -> None:
        """
        The peer received our sequenced messages up to C{received}.

        @raise ProtocolError: beyond what we sent, or going back.
        """
        self.ledger.sent.ack(received)

    def acknowledge(self) -> int:
        """The acknowledgement to send now (it is recorded as sent)."""
        return self.ledger.received.acknowledge()
