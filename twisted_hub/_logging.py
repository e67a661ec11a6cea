"""
twisted-hub's own log level, applied where its lines are emitted.

twistd's default log (a C{.tac} file, C{twistd -y}) and most programs'
observers write every event they receive, debug included.  So, as txaio
does for autobahn, twisted-hub filters its own lines before they reach the
global log publisher: at C{info} and above unless told otherwise
(L{set_log_level}; C{twistd hub --log-level} sets it).  Every logger of
the package is C{Logger(observer=HUB_LOG_OBSERVER)}.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import FilteringLogObserver, ILogObserver, Logger, LogLevel, LogLevelFilterPredicate, globalLogPublisher
from twisted.python.failure import Failure

from ._base_error import HubArgumentError

__all__ = ["HUB_LOG_OBSERVER", "TwistedCoreLog", "get_log_level", "set_log_level"]

#: The default minimum level of twisted-hub's own lines.
DEFAULT_LOG_LEVEL = LogLevel.info
#: The minimum level of twisted-hub's own lines, by log namespace.
HUB_LOG_LEVELS = LogLevelFilterPredicate(defaultLogLevel=DEFAULT_LOG_LEVEL)
#: Where twisted-hub's loggers send their events: the global log publisher,
#: through L{HUB_LOG_LEVELS}.
HUB_LOG_OBSERVER = FilteringLogObserver(globalLogPublisher, [HUB_LOG_LEVELS])

_BY_NAME = {
    "debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "warning": LogLevel.warn,
    "error": LogLevel.error, "critical": LogLevel.critical,
}


def set_log_level(level: LogLevel | str, namespace: str = "twisted_hub") -> None:
    """
    Emit twisted-hub's log lines of C{level} and above (default: C{info}):
    C{set_log_level("debug")} adds the heartbeat timers, refused calls,
    errors the hub answered and the like.  C{namespace} narrows it to part
    of the package (C{"twisted_hub.connections"}, C{"twisted_hub._liveness"}).
    Process-wide, like C{txaio.set_global_log_level} for autobahn.
    """
    if isinstance(level, str):
        try:
            level = _BY_NAME[level.strip().lower()]
        except KeyError:
            raise HubArgumentError(f"log level must be one of debug, info, warn, error, critical, got {level!r}") from None
    if namespace == "twisted_hub":
        HUB_LOG_LEVELS.defaultLogLevel = level
        HUB_LOG_LEVELS.clearLogLevels()
    else:
        HUB_LOG_LEVELS.setLogLevelForNamespace(namespace, level)


def get_log_level(namespace: str = "twisted_hub") -> LogLevel:
    """The minimum level of twisted-hub's lines in C{namespace} (see L{set_log_level})."""
    level: LogLevel = HUB_LOG_LEVELS.logLevelForNamespace(namespace)
    return level


class TwistedCoreLog:
    """
    A L{twisted_hub._corelog.CoreLog} on C{twisted.logger}: the sans-IO core's
    lines become the same events a C{Logger(namespace, observer=HUB_LOG_OBSERVER)}
    emits (namespace, format, fields, C{log_failure}), so twisted-hub's level
    filter and every observer see them as before.
    """

    def __init__(self, namespace: str, observer: ILogObserver | None = None) -> None:
        # observer: where the events go instead (a test's EventLoggingObserver)
        self.logger = Logger(namespace=namespace, observer=HUB_LOG_OBSERVER if observer is None else observer)

    def debug(self, format: str, **fields: Any) -> None:
        self.logger.debug(format, **fields)

    def info(self, format: str, **fields: Any) -> None:
        self.logger.info(format, **fields)

    def warn(self, format: str, **fields: Any) -> None:
        self.logger.warn(format, **fields)

    def error(self, format: str, **fields: Any) -> None:
        self.logger.error(format, **fields)

    def failure(self, format: str, error: BaseException | None = None, **fields: Any) -> None:
        self.logger.failure(format, Failure(error) if error is not None else None, **fields)
