"""The exchange log's writer: lines in, written at the end of the reactor's turn, never blocking.

See the package's docs (:mod:`sipserver.observe.exchangelog`) for why and for what happens when a
destination lags or fails.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IWriteDescriptor
from zope.interface import implementer

from sipserver.observe.exchangelog.destinations import Destination, report_to_stderr
from sipserver.observe.exchangelog.lines import Lines

#: Lines gathered in one reactor turn before they are written without waiting for its end.
BATCH = 256
#: Lines that may wait for a destination that lags; past that new lines are dropped and counted.
MAX_WAITING = 20000
#: Seconds before lines that a lagging destination could not take are tried again, where the
#: reactor cannot watch its descriptor (a test's clock).
RETRY = 0.05
#: Seconds a stopping process waits for a lagging destination to take what waits.
CLOSE_TIMEOUT = 5.0
#: Seconds a line logged after :meth:`LogWriter.close` may still wait for a lagging destination once
#: the close's own deadline has passed (the reactor's and twistd's last words).
LATE_LINE_WAIT = 0.2


class LogWriter:
    """Lines in, written to the destination at the end of the reactor's turn (see the module's docs).

    Without a reactor (a script, a test), each line is written at once.
    """

    def __init__(self, destination: Destination, lines: Lines, reactor: Any = None) -> None:
        self.destination = destination
        destination.report = self._report
        self.lines = lines
        self.reactor = reactor
        self.dropped = 0  # lines counted in sip_log_lines_dropped_total
        self._waiting: list[str] = []
        self._scheduled = False  # a flush is set for the end of this turn, or the destination is awaited
        self._lagging = False  # the destination did not take everything last time: wait for it
        self._waiter: _Writable | None = None  # registered with the reactor while the destination lags
        self._trouble: str | None = None  # why lines are being dropped now, reported once
        self._dropped_since = 0
        self._closing = False
        self._deadline = 0.0  # after close: how long a late line may wait for the destination
        self._thread = threading.get_ident()  # the reactor's: the writer is made where the reactor runs

    @property
    def problem(self) -> str | None:
        """What keeps lines from their destination now, or None (``/health``)."""
        return self._trouble or self.destination.problem

    # Lines in ---------------------------------------------------------------------------------------

    def exchange(self, listener: str, peer: str, login: str, request: str, outcome: str, elapsed: float) -> None:
        """The line of one SIP exchange: the hot path, one f-string and a list append."""
        waiting = self._waiting
        if len(waiting) >= BATCH:
            if not self._lagging:
                self.flush()
            if len(waiting) >= MAX_WAITING:
                self._drop(1, f"{self.destination.name} is not keeping up")
                return
        waiting.append(self.lines.exchange(time.time(), listener, peer, login, request, outcome, elapsed))
        if not self._scheduled:
            self._schedule()

    def line(self, level: str, message: str, **fields: Any) -> None:
        """A line of the ``sipserver`` namespace: connections, logins, protocol errors."""
        self._add(self.lines.line(time.time(), level, "sipserver", message, fields), level)

    def event(self, event: dict[str, Any]) -> None:
        """A Twisted log event (see :func:`observer`). One logged on another thread (a backend's
        pool) joins the lines on the reactor's thread, which alone touches the list and the timers."""
        lines, level = self.lines.event(event), getattr(event.get("log_level"), "name", "info")
        if self.reactor is not None and threading.get_ident() != self._thread and not self._closing:
            self.reactor.callFromThread(self._add, lines, level)
        else:
            self._add(lines, level)

    def _add(self, lines: list[str], level: str) -> None:
        waiting = self._waiting
        if len(waiting) + len(lines) > MAX_WAITING:
            self._drop(len(lines), f"{self.destination.name} is not keeping up")
            return
        waiting.extend(lines)
        if self._closing:
            self._write_out(max(self._deadline, time.monotonic() + LATE_LINE_WAIT))
        elif level in ("error", "critical"):
            self.flush()  # an error may come just before the process dies
        elif len(waiting) >= BATCH and not self._lagging:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        if self._closing:
            self._write_out(max(self._deadline, time.monotonic() + LATE_LINE_WAIT))
        elif self.reactor is None:
            self.flush()
        else:
            self._scheduled = True
            self.reactor.callLater(0, self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self.flush()

    # Lines out --------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand what waits to the destination; what it cannot take now is tried again as soon as its
        descriptor can be written (or in RETRY s)."""
        if self._waiter is not None:
            self._stop_waiting()
        waiting = self._waiting
        if not waiting:
            return
        try:
            done = self.destination.write(waiting)
        except OSError as exc:
            count = len(waiting)
            waiting.clear()
            self._lagging = False
            self._drop(count, f"cannot write to {self.destination.name}: {exc.strerror or exc}")
            return
        if done >= len(waiting):
            waiting.clear()
            self._lagging = False
            if self._trouble is not None:
                self._recovered()
            return
        del waiting[:done]
        self._lagging = True
        if self.reactor is not None and not self._closing:
            self._wait()

    def _wait(self) -> None:
        """Flush again when the reactor sees the destination's descriptor writable, so a reader
        that lags only a little (a syslog queue of ten datagrams) costs no time; RETRY s later
        where there is no descriptor to watch (a test's clock)."""
        self._scheduled = True
        fd = self.destination.pollable()
        add = getattr(self.reactor, "addWriter", None)
        if fd is None or add is None:
            self.reactor.callLater(RETRY, self._end_of_turn)
            return
        self._waiter = _Writable(fd, self.flush)
        add(self._waiter)

    def _stop_waiting(self) -> None:
        self.reactor.removeWriter(self._waiter)
        self._waiter = None
        self._scheduled = False

    def reopen(self) -> None:
        """SIGHUP or SIGUSR1: what waits goes where it was going, then the destination is opened
        again (a log file renamed by logrotate; a syslog socket that could not be reached)."""
        self.flush()
        self.destination.reopen()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write everything that waits, waiting for a lagging destination up to ``timeout`` seconds
        (the process is stopping); from now on each line is written at once, waiting for the
        destination as long as that deadline allows (the reactor's and twistd's last lines come
        after this, and a reader at the other end of a full pipe is about to take them)."""
        self._closing = True
        if self._waiter is not None:
            self._stop_waiting()
        self._scheduled = False  # a retry set for later may never run: the next line goes out at once
        self._deadline = time.monotonic() + timeout
        self._write_out(self._deadline)

    def _write_out(self, deadline: float) -> None:
        """Flush until nothing waits, polling a lagging destination until ``deadline``; what is
        still left then is dropped and counted."""
        while self._waiting:
            self.flush()
            left = deadline - time.monotonic()
            fd = self.destination.pollable()
            if not self._waiting or left <= 0 or fd is None:
                break
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll(int(min(left, 0.5) * 1000) + 1)
        if self._waiting:
            count = len(self._waiting)
            self._waiting.clear()
            self._drop(count, f"{self.destination.name} did not take the last lines before exit")

    # Trouble ----------------------------------------------------------------------------------------

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        self._dropped_since += count
        if self._trouble is None:
            self._trouble = why
            self._report(f"log lines are being dropped: {why} (counted in sip_log_lines_dropped_total)")

    def _recovered(self) -> None:
        self._report(f"log lines are written to {self.destination.name} again; {self._dropped_since} were dropped")
        self._trouble = None
        self._dropped_since = 0

    def _report(self, text: str) -> None:
        """Trouble with the log itself goes to stderr, once per episode (the log may be where the
        trouble is)."""
        report_to_stderr(text)


@implementer(IWriteDescriptor)
class _Writable:
    """A lagging destination's descriptor, watched by the reactor until it can be written."""

    def __init__(self, fd: int, ready: Callable[[], None]) -> None:
        self.fd = fd
        self.ready = ready

    def fileno(self) -> int:
        return self.fd

    def doWrite(self) -> None:
        self.ready()

    def connectionLost(self, reason: Any) -> None:
        self.ready()  # the reader went away: the next write says why, and the lines are counted

    def logPrefix(self) -> str:
        return "sipserver-log"
