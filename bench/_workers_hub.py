"""
The hub of ``bench/workers.py``, served by ``twistd hub --workers N --hub bench/_workers_hub.py:WorkersBenchHub``:
every connection joins the group ``g``; ``fanout(count, size)`` sends ``count`` messages of ``size``
bytes to the group's other members, one per reactor turn (the caller, a trigger client, is left out).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from twisted_hub import Hub, hub, method


@hub("bench")
class WorkersBenchHub(Hub):
    def on_connected(self) -> None:
        self.groups.add("g")

    @method
    def fanout(self, count: int, size: int) -> Deferred[int]:
        from twisted.internet import reactor

        payload = b"x" * size
        members = self.clients.group_except("g", [self.connection.id])
        done: Deferred[int] = Deferred()

        def step(left: int) -> None:
            members.msg(payload)
            if left > 1:
                reactor.callLater(0, step, left - 1)  # type: ignore[attr-defined]
            else:
                done.callback(count)

        step(count)
        return done
