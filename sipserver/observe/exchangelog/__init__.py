"""The exchange log: one line per connection, login and SIP exchange, at a few microseconds a line.

Why not Twisted's logger for these lines: there each line is an event dict that goes through a
publisher, two filters and an observer that formats it with ``string.Formatter`` and writes it
with a system call of its own, which cost more than the rest of a status request
(docs/performance.md, "The exchange log"). Here a line is built once, with an f-string, from the
values at hand; the lines of a reactor turn wait in a list and go out together at the end of the
turn (or once a batch has gathered). Twisted's logger stays for everything else (start-up,
errors, reloads): :func:`observer` turns those events into lines of the same writer, so one
process writes every line to one destination, in order.

Nothing blocks, nothing is cut, nothing vanishes unseen. A destination that cannot take the lines
now (a pipe or journal socket whose reader lags, a full syslog queue) keeps them waiting, up to a
bound, and is tried again as soon as it can take more; lines beyond that, and lines a destination
refuses (a full disk, a file that went away), are dropped whole and counted
(``sip_log_lines_dropped_total``), and the trouble is reported once on stderr and in ``/health``.
A line that went out in part is finished before anything else. At shutdown whatever waits is
written before the process exits.

Three modules: :mod:`.lines` (what a line looks like: text, JSON, syslog), :mod:`.destinations`
(where it goes: :class:`Stream` for stdout and stderr, :class:`LogFile` reopened on SIGHUP or
SIGUSR1 after logrotate renames it, :class:`Syslog` with stderr while it cannot be reached) and
:mod:`.writer` (the list, the end of the turn, waiting, dropping and reporting). Here:
:func:`open_log` builds the writer the config asks for, :func:`observer` feeds it Twisted's events.
"""

from __future__ import annotations

import syslog
from typing import Any

from twisted.logger import FilteringLogObserver, ILogObserver, LogLevelFilterPredicate
from zope.interface import implementer

from sipserver.observe.exchangelog.destinations import Destination, LogFile, Stream, Syslog
from sipserver.observe.exchangelog.lines import JsonLines, Lines, SyslogLines, TextLines
from sipserver.observe.exchangelog.writer import LogWriter

__all__ = [
    "JsonLines",
    "LogFile",
    "LogWriter",
    "Stream",
    "Syslog",
    "SyslogLines",
    "TextLines",
    "observer",
    "open_log",
]


def open_log(config: Any, reactor: Any = None, logfile: str | None = None) -> LogWriter:
    """The writer for the ``logging:`` block ``config``. ``logfile`` is twistd's ``--logfile`` when
    it names a file: with ``destination: stdout`` the lines go there, as they did with twistd's
    own observer. Raises OSError when the file cannot be opened."""
    lines: Lines
    destination: Destination
    if config.destination == "syslog":
        facility = getattr(syslog, f"LOG_{config.syslog_facility.upper()}")
        destination, lines = Syslog(config.syslog_socket), SyslogLines(facility)
    else:
        lines = JsonLines() if config.format == "json" else TextLines()
        path = config.file if config.destination == "file" else logfile
        destination = LogFile(path) if path else Stream.standard(1, "stdout")
    return LogWriter(destination, lines, reactor)


@implementer(ILogObserver)
class _Observer:
    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer

    def __call__(self, event: dict[str, Any]) -> None:
        self.writer.event(event)


def observer(writer: LogWriter, level: Any) -> tuple[Any, LogLevelFilterPredicate]:
    """Twisted's events at ``level`` and above, as lines of ``writer``; and the level predicate
    that a reload moves."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(_Observer(writer), [predicate]), predicate
