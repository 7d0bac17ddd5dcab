"""Twisted's log events into the exchange log's writer, so that every line has one destination.

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
from sipserver.observe import exchangelog
from sipserver.observe.events import LEVELS


def install(application: Any, writer: exchangelog.LogWriter, config: LoggingConfig) -> LogLevelFilterPredicate | None:
    """Make ``writer`` the application's log observer, filtered at ``config.level``; the level
    predicate a reload moves (None when ``application`` takes no components)."""
    if not hasattr(application, "setComponent"):
        return None
    observer, predicate = exchangelog.observer(writer, LEVELS[config.level])
    application.setComponent(ILogObserver, observer)
    return predicate
