"""Where log lines go: stdout as text (journald's default), JSON lines, or syslog with a facility.

twistd starts logging *after* the service is made, and uses an ``ILogObserver`` component of the
application when one is set (unless ``--logger`` is given on the command line). So the config's
``logging`` block chooses the observer here, with no extra command-line flags, and the unit file
stays the same whichever destination a site picks. With the default (text to stdout) twistd's own
observer is kept, so ``--logfile`` keeps working.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

from sipserver.config import LoggingConfig
from sipserver.events import LEVELS

SYSLOG_PREFIX = "sipserver"


_SCALARS = (str, int, float, bool, type(None))


def json_lines_observer(stream: Any) -> Any:
    """One JSON object per line: time, level, namespace, the formatted message, and the event's
    own plain fields (listener, peer, login, request, outcome, ms...), for log shippers."""

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(event.get("log_time", 0), datetime.UTC).isoformat(),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace", ""),
            "message": formatEvent(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and key not in record and isinstance(value, _SCALARS):
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        stream.flush()

    return observe


def wants_own_observer(config: LoggingConfig) -> bool:
    return config.destination == "syslog" or config.format == "json"


def build_observer(config: LoggingConfig, stream: Any = None) -> tuple[Any, LogLevelFilterPredicate]:
    """The observer for ``config`` and the level predicate that a reload adjusts."""
    stream = stream if stream is not None else sys.stdout
    if config.destination == "syslog":
        from twisted.python import syslog

        facility = getattr(syslog.syslog, f"LOG_{config.syslog_facility.upper()}")
        inner: Any = LegacyLogObserverWrapper(syslog.SyslogObserver(SYSLOG_PREFIX, facility=facility).emit)
    elif config.format == "json":
        inner = json_lines_observer(stream)
    else:
        inner = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS.get(config.level, LEVELS["info"]))
    return FilteringLogObserver(inner, [predicate]), predicate


def install(application: Any, config: LoggingConfig) -> LogLevelFilterPredicate | None:
    """Set the application's log observer when the config asks for JSON or syslog."""
    if not wants_own_observer(config) or not hasattr(application, "setComponent"):
        return None
    observer, predicate = build_observer(config)
    application.setComponent(ILogObserver, observer)
    return predicate
