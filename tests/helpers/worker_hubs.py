"""A hub for the C{twistd hub --workers} process tests: the work hub, plus which process serves the caller."""

from __future__ import annotations

import os

from twisted_hub import hub, method

from .hubs import ProcessWorkHub


@hub("work")
class PidWorkHub(ProcessWorkHub):
    """L{ProcessWorkHub} (hub C{work}) with C{pid()}: the worker process holding this connection."""

    @method
    def pid(self) -> int:
        return os.getpid()
