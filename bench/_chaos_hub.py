"""
The hub of the chaos test (bench/chaos.py, tests/test_chaos.py), served by
``twistd hub --hub bench/_chaos_hub.py:ChaosHub``: numbered traffic both
ways that the harness can check after the run.

- ``work(client, n)``: appends the line ``client n`` to this node's run file
  (``$CHAOS_RUNS/runs-<pid>.log``, flushed at once, so the line survives a
  ``kill -9`` of the node), sends the caller ``numbered(session, k)`` with
  ``k`` the session's own counter, kept in ``connection.items`` (1, 2, 3 ...
  over the session's whole life, resumes included), and answers
  ``[client, n, k, session]``.
- ``shout(sender, m)``: sends ``heard(sender, m)`` to the group ``all``.
- ``join()``: joins the group ``all``; answers the session's id.
"""

from __future__ import annotations

import os
from typing import IO, Any

from twisted_hub import Hub, hub, method

_runs: IO[str] | None = None


def _run_file() -> IO[str]:
    global _runs
    if _runs is None:
        directory = os.environ["CHAOS_RUNS"]
        _runs = open(os.path.join(directory, f"runs-{os.getpid()}.log"), "a", buffering=1, encoding="utf-8")
    return _runs


@hub("chaos")
class ChaosHub(Hub):
    @method
    def join(self) -> str:
        self.groups.add("all")
        return self.connection.id

    @method
    def work(self, client: str, n: int) -> list[Any]:
        runs = _run_file()
        runs.write(f"{client} {n}\n")
        runs.flush()
        k = int(self.connection.items.get("k", 0)) + 1
        self.connection.items["k"] = k
        self.clients.caller.numbered(self.connection.id, k)
        return [client, n, k, self.connection.id]

    @method
    def shout(self, sender: str, m: int) -> int:
        self.clients.group("all").heard(sender, m)
        return m
