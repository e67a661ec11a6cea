"""
twisted-hub's logging, all of it: the level of its own lines, applied where
they are emitted; the sans-IO core's logger on C{twisted.logger}
(L{TwistedCoreLog}); C{twistd hub --log-level} (L{LogLevelService}); the
JSON observer for log shippers (L{json_log_observer}).

twistd's default log (a C{.tac} file, C{twistd -y}) and most programs'
observers write every event they receive, debug included.  So, as txaio
does for autobahn, twisted-hub filters its own lines before they reach the
global log publisher: at C{info} and above unless told otherwise
(L{set_log_level}; C{twistd hub --log-level} sets it).  Every logger of
the package is C{Logger(observer=HUB_LOG_OBSERVER)}.

Where the log goes is twistd's business, as for C{twistd web}: its own
C{--logfile} (rotated on SIGUSR1 by twistd), C{--syslog}, C{-n} (standard
output), or C{--logger} with an observer of your choice.  twisted-hub
gives twistd no observer of its own.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import FilteringLogObserver, ILogObserver, Logger, LogLevel, LogLevelFilterPredicate, globalLogPublisher
from twisted.python.failure import Failure

from ._base_error import HubArgumentError

__all__ = [
    "HUB_LOG_OBSERVER",
    "LOG_LEVELS",
    "LogLevelService",
    "TwistedCoreLog",
    "get_log_level",
    "json_log_observer",
    "log_level_named",
    "set_log_level",
]

#: The default minimum level of twisted-hub's own lines.
DEFAULT_LOG_LEVEL = LogLevel.info
#: The minimum level of twisted-hub's own lines, by log namespace.
HUB_LOG_LEVELS = LogLevelFilterPredicate(defaultLogLevel=DEFAULT_LOG_LEVEL)
#: Where twisted-hub's loggers send their events: the global log publisher,
#: through L{HUB_LOG_LEVELS}.
HUB_LOG_OBSERVER = FilteringLogObserver(globalLogPublisher, [HUB_LOG_LEVELS])

#: The level names L{set_log_level}, C{twistd hub --log-level} and its TOML file take.
LOG_LEVELS = {
    "debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "warning": LogLevel.warn,
    "error": LogLevel.error, "critical": LogLevel.critical,
}
_LEVEL_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]


def log_level_named(name: str) -> LogLevel:
    """
    The level called C{name} (any case, surrounding blanks ignored).

    @raise HubArgumentError: no level has that name.
    """
    try:
        level: LogLevel = LOG_LEVELS[name.strip().lower()]
    except KeyError:
        raise HubArgumentError(f"log level must be one of debug, info, warn, error, critical, got {name!r}") from None
    return level


def set_log_level(level: LogLevel | str, namespace: str = "twisted_hub") -> None:
    """
    Emit twisted-hub's log lines of C{level} and above (default: C{info}):
    C{set_log_level("debug")} adds the heartbeat timers, refused calls,
    errors the hub answered and the like.  C{namespace} narrows it to part
    of the package (C{"twisted_hub.connections"}, C{"twisted_hub._liveness"}).
    Process-wide, like C{txaio.set_global_log_level} for autobahn.
    """
    if isinstance(level, str):
        level = log_level_named(level)
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


def autobahn_log_level(level: LogLevel) -> LogLevel:
    """
    autobahn's minimum level when ours is C{level}: never below info.  Debug
    is twisted-hub's story (connections, heartbeat timers, calls refused
    ...); autobahn's own debug output (every HTTP header, every frame) stays
    at info, or a handful of connections floods the log.
    """
    return level if _LEVEL_ORDER.index(level) > _LEVEL_ORDER.index(LogLevel.info) else LogLevel.info


class LogLevelService(MultiService):
    """
    C{twistd hub --log-level}: while it runs, twisted-hub's own lines are
    emitted from C{level} up (L{set_log_level}; the level before is put back
    when it stops) and autobahn's from C{level} up but never below info
    (txaio, autobahn's logging layer, filters them where they are emitted).

    It touches no observer: where the lines go is twistd's choice, from its
    own options (C{--logfile}, C{--syslog}, C{-n}, C{--logger}), as for
    C{twistd web}.  Lines from Twisted itself and other libraries reach that
    log as twistd writes them.
    """

    def __init__(self, level: LogLevel) -> None:
        MultiService.__init__(self)
        self.level = level
        self._hub_level_before: LogLevel | None = None

    def startService(self) -> None:
        import txaio  # autobahn's logging layer (a dependency of autobahn)

        txaio.set_global_log_level(autobahn_log_level(self.level).name)  # type: ignore[attr-defined]
        self._hub_level_before = get_log_level()
        set_log_level(self.level)
        MultiService.startService(self)

    def stopService(self) -> Deferred[Any]:
        def restore(result: object) -> object:
            # once the children stopped (their shutdown lines are at our level)
            before, self._hub_level_before = self._hub_level_before, None
            if before is not None:
                set_log_level(before)
            return result

        stopped: Deferred[Any] = MultiService.stopService(self)
        return stopped.addBoth(restore)


def json_log_observer() -> ILogObserver:
    """
    A log observer that writes one JSON object per event to standard output,
    every field included (for log shippers), for twistd's C{--logger}:
    C{twistd --logger twisted_hub.tap.json_log_observer -n hub ...}.  It
    writes what it receives: twisted-hub's and autobahn's lines arrive at
    C{--log-level} already (filtered where they are emitted).
    """
    from twisted.logger import jsonFileLogObserver

    return jsonFileLogObserver(sys.stdout)
