"""
What moving sessions between nodes adds to the send path, in-process:
``python3 bench/move_costs.py [--number N] [--repeats R]``.

With a Redis backplane, a node that moves sessions (resume on) does two
things per receiver call that a node without them does not:

- ``history``: remembers every hub-wide receiver call it publishes or hears
  (``SendHistory.add``, twisted_hub/_backplane/moves.py), so that a session
  arriving from another node gets what it missed on the way;
- ``caller check``: ``HubRuntime.send_to`` looks the caller up among this
  node's connections (a call still running here for a session that moved
  away is routed to the node that holds it now).

Each is timed beside the work the same receiver call costs anyway:
``encode``, the hub's one encoding of the receiver call
(``receiver_call_payload``), and ``sign``, the backplane's numbering and
encoding of the message it publishes (``NodeCodec.encode``, unsigned).
Best of R repeats of N runs each, nanoseconds per run, the cost of an empty
call taken off.  A diagnostic, not a result file: nothing is recorded, no
socket is opened.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted_hub._backplane.interface import TARGET_CALLER, TARGET_GROUP, Target  # noqa: E402
from twisted_hub._backplane.moves import SendHistory  # noqa: E402
from twisted_hub._backplane.wire import NodeCodec, Send  # noqa: E402
from twisted_hub._core.connection import receiver_call_payload  # noqa: E402


def best_ns(run: Callable[[], object], number: int, repeats: int, empty: float) -> float:
    """Nanoseconds per call of C{run}, best of C{repeats}, less an empty call's."""
    best = min(timeit.repeat(run, number=number, repeat=repeats)) / number
    return max(best - empty, 0.0) * 1e9


def timing_options(doc: str | None, number: int) -> tuple[int, int, float]:
    """The command line of an in-process timing (C{--number}, C{--repeats}), and an empty call's seconds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=number)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    empty = min(timeit.repeat(lambda: None, number=options.number, repeat=options.repeats)) / options.number
    return options.number, options.repeats, empty


def main() -> None:
    number, repeats, empty = timing_options(__doc__, 200_000)

    args: list[object] = ["alice", "hello, everyone in the room", 1733570000.25]
    payload = receiver_call_payload("message", args, None, 1 << 20)
    group = Target(TARGET_GROUP, "room-7", ())
    send = Send("ChatHub", group, payload)
    history = SendHistory()
    codec = NodeCodec("node-a")
    channel = b"twisted-hub:v1:all"
    connections = {f"node-a.{i}": object() for i in range(10_000)}
    caller = Target(TARGET_CALLER, None, ("node-a.5000",))

    rows = [
        ("history (SendHistory.add)", best_ns(lambda: history.add("node-b", 5, send), number, repeats, empty)),
        ("caller check (send_to)", best_ns(lambda: caller.ids[0] not in connections, number, repeats, empty)),
        ("encode (receiver_call_payload)",
         best_ns(lambda: receiver_call_payload("message", args, None, 1 << 20), number, repeats, empty)),
        ("sign (NodeCodec.encode)", best_ns(lambda: codec.encode(channel, send, 1733570000.0), number, repeats, empty)),
    ]
    print(f"per receiver call, ns (best of {repeats} x {number:,}; {len(payload)}-byte payload):")
    for name, ns in rows:
        print(f"  {name:32} {ns:8.0f}")


if __name__ == "__main__":
    main()
