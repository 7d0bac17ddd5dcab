"""Twisted's log events into the exchange log's writer, so that every line has one destination; and
the thresholds ``logging.level`` moves.

twistd starts logging *after* the service is made, and uses an ``ILogObserver`` component of the
application when one is set. The server's writer (:mod:`sipserver.observe.exchangelog`, chosen by the
config's ``logging`` block) is that observer for every destination: start-up lines, errors and
reloads then share the exchange lines' destination, order, non-blocking writes and reopening, and
the unit file stays the same whichever destination a site picks. twistd's ``--logfile=FILE`` is
honoured by the writer itself (``destination: stdout`` then writes to FILE; see ``sipserver.tap``).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, LogLevelFilterPredicate

from sipserver.config import LoggingConfig
from sipserver.observe import exchangelog, loglevel
from sipserver.observe.events import LEVELS, Events


def install(application: Any, writer: exchangelog.LogWriter, config: LoggingConfig) -> LogLevelFilterPredicate | None:
    """Make ``writer`` the application's log observer, filtered at ``config.level``; the level
    predicate a reload moves (None when ``application`` takes no components)."""
    if not hasattr(application, "setComponent"):
        return None
    observer, predicate = exchangelog.observer(writer, LEVELS[config.level])
    application.setComponent(ILogObserver, observer)
    return predicate


class LogLevels:
    """Every threshold ``logging.level`` sets, moved together at start-up and on each reload: the
    exchange lines' (``events``), our loggers' (:data:`sipserver.observe.loglevel.LEVEL`), and the
    log observer's, once twistd (or a worker process) has installed one (:meth:`follow`)."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self._predicates: list[LogLevelFilterPredicate] = []

    def follow(self, predicate: LogLevelFilterPredicate) -> None:
        self._predicates.append(predicate)

    def set(self, level: str) -> None:
        self.events.set_level(level)
        loglevel.set_level(LEVELS[level])
        for predicate in self._predicates:
            loglevel.set_level(LEVELS[level], predicate)
