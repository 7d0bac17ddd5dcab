"""One threshold for every line sipserver writes through Twisted's logger.

The daemon's observer filters by ``logging.level`` itself (``sipserver.observe.logsetup``); our loggers
also carry the filter, so that a line below the level is dropped before any observer sees it,
whichever observers a process has (a worker child, a test, a script). Each logger emits through
:data:`LEVEL` into the global publisher; ``logging.level`` sets it at start-up and on every reload
(``sipserver.daemon.service``). The exchange lines themselves do not come through here
(``sipserver.observe.exchangelog``).
"""

from __future__ import annotations

from twisted.logger import FilteringLogObserver, Logger, LogLevel, LogLevelFilterPredicate, globalLogPublisher

LEVEL = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_FILTERED = FilteringLogObserver(globalLogPublisher, [LEVEL])


def logger(namespace: str | None = None) -> Logger:
    """A Logger whose events below ``logging.level`` are dropped before any observer sees them.
    Without a namespace it is a class attribute named after its class, like ``Logger()``."""
    return Logger(namespace=namespace, observer=_FILTERED)


def set_level(level: LogLevel, predicate: LogLevelFilterPredicate = LEVEL) -> None:
    """Move ``predicate``'s threshold (ours by default). Its root namespace keeps the level it
    was made with until the table is cleared: setting ``defaultLogLevel`` alone changes nothing."""
    predicate.defaultLogLevel = level
    predicate.clearLogLevels()
