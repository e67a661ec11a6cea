"""
How the sans-IO core logs: through a L{CoreLog} its adapter hands it.

The core imports no Twisted, so it cannot make a C{twisted.logger.Logger}
of its own.  It writes through this small protocol instead, with the same
format strings as C{twisted.logger} (PEP 3101, named fields:
C{"{id} sent no hello within {timeout}s"}).  The Twisted adapters pass a
logger that emits the very events they emitted before, through twisted-hub's
level filter (L{twisted_hub._support.logging.TwistedCoreLog}); the asyncio client
passes a L{StdlibCoreLog}, which writes to the standard C{logging} module.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol

__all__ = ["CoreLog", "StdlibCoreLog"]


class CoreLog(Protocol):
    """Where a sans-IO unit writes its log lines."""

    def debug(self, format: str, **fields: Any) -> None: ...

    def info(self, format: str, **fields: Any) -> None: ...

    def warn(self, format: str, **fields: Any) -> None: ...

    def error(self, format: str, **fields: Any) -> None: ...

    def failure(self, format: str, error: BaseException | None = None, **fields: Any) -> None:
        """
        Log an exception with its traceback: C{error}, or the one being
        handled when C{error} is C{None} (call it from an C{except} block).
        """


class _Formatted:
    """A log message formatted only when a handler writes it."""

    __slots__ = ("format", "fields")

    def __init__(self, format: str, fields: dict[str, Any]) -> None:
        self.format = format
        self.fields = fields

    def __str__(self) -> str:
        return self.format.format(**self.fields)


class StdlibCoreLog:
    """
    A L{CoreLog} on the standard C{logging} module: C{failure} becomes
    C{logger.error(..., exc_info=...)}, a C{twisted.logger} format string is
    formatted with C{str.format} when a handler writes the record (a format
    that does not fit its fields is reported by C{logging}'s own
    C{handleError}, as any bad log call is).
    """

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def _log(self, level: int, format: str, fields: dict[str, Any], exc_info: Any = None) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, _Formatted(format, fields), exc_info=exc_info, stacklevel=3)

    def debug(self, format: str, **fields: Any) -> None:
        self._log(logging.DEBUG, format, fields)

    def info(self, format: str, **fields: Any) -> None:
        self._log(logging.INFO, format, fields)

    def warn(self, format: str, **fields: Any) -> None:
        self._log(logging.WARNING, format, fields)

    def error(self, format: str, **fields: Any) -> None:
        self._log(logging.ERROR, format, fields)

    def failure(self, format: str, error: BaseException | None = None, **fields: Any) -> None:
        exc_info: Any = (type(error), error, error.__traceback__) if error is not None else sys.exc_info()
        self._log(logging.ERROR, format, fields, exc_info)
