"""The exchange log: one line per connection, login and SIP exchange, at a few microseconds a line.

Why not Twisted's logger for these lines: there each line is an event dict that goes through a
publisher, two filters and an observer that formats it with ``string.Formatter`` and writes it
with a system call of its own, which cost more than the rest of a status request
(docs/performance.md, "The exchange log"). Here a line is built once, with an f-string, from the
values at hand; the lines of a reactor turn wait in a list and go out together at the end of the
turn (or once :data:`BATCH` have gathered). Twisted's logger stays for everything else (start-up,
errors, reloads): :func:`observer` turns those events into lines of the same writer, so one
process writes every line to one destination, in order.

Nothing blocks, nothing is cut, nothing vanishes unseen. A destination that cannot take the lines
now (a pipe or journal socket whose reader lags, a full syslog queue) keeps them waiting, up to
:data:`MAX_WAITING` lines, and is tried again :data:`RETRY` seconds later; lines beyond that, and
lines a destination refuses (a full disk, a file that went away), are dropped whole and counted
(``sip_log_lines_dropped_total``), and the trouble is reported once on stderr and in ``/health``.
A line that went out in part is finished before anything else. At shutdown whatever waits is
written before the process exits.

The destinations are small classes: :class:`Stream` (stdout, stderr), :class:`LogFile` (a file,
reopened on SIGHUP or SIGUSR1 after logrotate renames it) and :class:`Syslog` (the local syslog
socket, one datagram a line, stderr while it cannot be reached). The line formats are
:class:`TextLines`, :class:`JsonLines` and :class:`SyslogLines`.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import select
import socket
import stat
import syslog
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IWriteDescriptor
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevelFilterPredicate,
    eventAsText,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from zope.interface import implementer

#: Lines gathered in one reactor turn before they are written without waiting for its end.
BATCH = 256
#: Lines that may wait for a destination that lags; past that new lines are dropped and counted.
MAX_WAITING = 20000
#: Seconds before lines that a lagging destination could not take are tried again.
RETRY = 0.05
#: Seconds between attempts to reach a syslog socket that could not be reached.
SYSLOG_RETRY = 5.0
#: Seconds a stopping process waits for a lagging destination to take what waits.
CLOSE_TIMEOUT = 5.0

SYSLOG_TAG = "sipserver"
_SEVERITY = {"debug": syslog.LOG_DEBUG, "info": syslog.LOG_INFO, "warn": syslog.LOG_WARNING,
             "error": syslog.LOG_ERR, "critical": syslog.LOG_CRIT}  # fmt: skip
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SCALARS = (str, int, float, bool, type(None))
_json_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


# -------------------------------------------------------------------------------------------------
# Formats: what a line looks like. Each line ends with one newline and holds no other (a Twisted
# event of several lines, a traceback, becomes several), so a destination counts lines by newlines.


class Lines(Protocol):
    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str: ...  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]: ...

    def event(self, event: dict[str, Any]) -> list[str]: ...


class TextLines:
    """twistd's classic line: ``2026-11-23T19:39:13+0000 [sipserver#info] message``, local time."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, formatTime(second)
        return self._stamp

    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str:  # fmt: skip
        if int(now) != self._second:
            self.stamp(now)
        return (f"{self._stamp} [sipserver#info] sip listener={listener} peer={peer} login={login} "
                f"{request} {outcome} {elapsed * 1000:.1f}ms\n")  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]:
        first, *rest = _physical(message)
        return [f"{self.stamp(now)} [{namespace}#{level}] {first}\n", *(f"{piece}\n" for piece in rest)]

    def event(self, event: dict[str, Any]) -> list[str]:
        text = formatEventAsClassicLogText(event)
        return [piece + "\n" for piece in text.splitlines() if piece.strip()]


class JsonLines:
    """One JSON object a line: time (UTC, to the microsecond), level, namespace, message, and the
    line's own fields (listener, peer, login, request, outcome, ms...), for log shippers."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            iso = datetime.datetime.fromtimestamp(second, datetime.UTC).isoformat()
            self._second, self._prefix = second, iso.removesuffix("+00:00")
        return f"{self._prefix}.{int((now - second) * 1e6):06d}+00:00"

    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str:  # fmt: skip
        second = int(now)
        if second != self._second:
            self.stamp(now)
        # each value escaped once, without its quotes, serves in the message and in its own field
        s = _json_string
        lst, pr, lg, rq, oc = s(listener)[1:-1], s(peer)[1:-1], s(login)[1:-1], s(request)[1:-1], s(outcome)[1:-1]
        ms = elapsed * 1000
        return (f'{{"time": "{self._prefix}.{int((now - second) * 1e6):06d}+00:00", "level": "info", '
                f'"namespace": "sipserver", "message": "sip listener={lst} peer={pr} login={lg} {rq} {oc} {ms:.1f}ms", '
                f'"listener": "{lst}", "peer": "{pr}", "login": "{lg}", "request": "{rq}", "outcome": "{oc}", '
                f'"ms": {ms:.3f}}}\n')  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]:
        record = {"time": self.stamp(now), "level": level, "namespace": namespace, "message": message, **fields}
        return [json.dumps(record, ensure_ascii=False, default=str) + "\n"]

    def event(self, event: dict[str, Any]) -> list[str]:
        record: dict[str, Any] = {
            "time": self.stamp(event.get("log_time") or time.time()),
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
        return [json.dumps(record, ensure_ascii=False, default=str) + "\n"]


class SyslogLines:
    """RFC 3164 as the C library's ``syslog()`` sends it: ``<PRI>Nov 23 19:39:13 sipserver[PID]:``,
    then the text line without its time: ``[sipserver#info] message``. The priority carries the
    level (warn is ``warning``, error is ``err``); no newline, each line is one datagram."""

    def __init__(self, facility: int) -> None:
        self._head = {level: f"<{facility | severity}>" for level, severity in _SEVERITY.items()}
        self._tag = f" {SYSLOG_TAG}[{os.getpid()}]: "
        self._second = -1
        self._stamp = ""

    def stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            t = time.localtime(second)
            self._second = second
            self._stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        return self._stamp

    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str:  # fmt: skip
        return (f"{self._head['info']}{self.stamp(now)}{self._tag}[sipserver#info] sip listener={listener} "
                f"peer={peer} login={login} {request} {outcome} {elapsed * 1000:.1f}ms\n")  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]:
        head = f"{self._head.get(level, self._head['info'])}{self.stamp(now)}{self._tag}[{namespace}#{level}] "
        return [f"{head}{text}\n" for text in _physical(message)]

    def event(self, event: dict[str, Any]) -> list[str]:
        level = getattr(event.get("log_level"), "name", "info")
        text = eventAsText(event, includeTimestamp=False)
        when = event.get("log_time") or time.time()
        head = f"{self._head.get(level, self._head['info'])}{self.stamp(when)}{self._tag}"
        return [f"{head}{piece}\n" for piece in text.splitlines() if piece.strip()]


def _physical(message: str) -> list[str]:
    """A message as the lines it prints (a message with a newline in it is rare: a reason or a
    frame fragment); continuation lines start with a tab, as twistd writes them."""
    if "\n" not in message and "\r" not in message:
        return [message]
    first, *rest = message.splitlines() or [""]
    return [first, *(f"\t{piece}" for piece in rest)]


# -------------------------------------------------------------------------------------------------
# Destinations: where lines go. ``write(lines)`` hands over as many as it can at once and returns
# how many; fewer than all means "later" (the writer keeps the rest); an OSError means these
# lines cannot be written at all.


class Destination(Protocol):
    name: str
    problem: str | None  # the destination's own trouble (syslog unreachable), for /health
    report: Callable[[str], None]

    def write(self, lines: list[str]) -> int: ...

    def pollable(self) -> int | None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


def _report_to_stderr(text: str) -> None:
    """One line to file descriptor 2, without waiting (twistd turns ``sys.stderr`` into log
    events, which would come back here)."""
    try:
        _stderr().write([f"sipserver: {text}\n"])
    except OSError:
        pass


class Stream:
    """An open file descriptor: lines are joined and written with as few system calls as it takes.

    A pipe, a socket (the journal under systemd) or a terminal never blocks the process here: it is
    written without waiting (its own non-blocking file description, or ``MSG_DONTWAIT``), in pieces
    of at most ``PIPE_BUF`` bytes that end at a line's end, which the kernel writes whole or not at
    all, so the worker processes sharing stdout never interleave inside a line. A regular file
    takes everything at once (appends are whole, whatever other processes write).
    """

    def __init__(self, fd: int, name: str, *, owned: bool, piece: int | None, sock: socket.socket | None = None):
        self.fd = fd
        self.name = name
        self.problem: str | None = None
        self.report = _report_to_stderr
        self._owned = owned  # closed by close(); stdout itself is not ours to close
        self._piece = piece
        self._sock = sock
        self._rest = b""  # the end of a line whose beginning was written

    @classmethod
    def standard(cls, fd: int, name: str) -> Stream:
        """Stdout or stderr, made safe to write without waiting for whatever reads it."""
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return cls(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), f"{name} (closed)", owned=True, piece=None)
        if stat.S_ISREG(mode):
            return cls(fd, name, owned=False, piece=None)
        if stat.S_ISSOCK(mode):
            sock = socket.socket(fileno=os.dup(fd))
            return cls(sock.fileno(), name, owned=True, piece=select.PIPE_BUF, sock=sock)
        try:  # a pipe or a terminal: a description of our own, so O_NONBLOCK touches nobody else's
            own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return cls(fd, name, owned=False, piece=select.PIPE_BUF)
        return cls(own, name, owned=True, piece=select.PIPE_BUF)

    def __repr__(self) -> str:
        return f"<Stream {self.name} fd={self.fd}>"

    def _send(self, data: bytes | memoryview) -> int:
        try:
            if self._sock is not None:
                return self._sock.send(data, socket.MSG_DONTWAIT)
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    def write(self, lines: list[str]) -> int:
        if self._rest:
            sent = self._send(self._rest)
            self._rest = self._rest[sent:]
            if self._rest:
                return 0
        data = "".join(lines).encode("utf-8", "backslashreplace")
        piece = self._piece
        if piece is None or len(data) <= piece:
            sent = self._send(data)
            return len(lines) if sent == len(data) else self._cut(data, sent)
        view, start, total = memoryview(data), 0, len(data)
        while start < total:
            end = total if total - start <= piece else data.rfind(b"\n", start, start + piece) + 1
            if end <= start:  # one line longer than a piece: it cannot be written whole, only in order
                end = data.index(b"\n", start) + 1
            try:
                sent = self._send(view[start:end])
            except OSError:
                if not start:
                    raise
                sent = 0  # the lines written so far count; the error comes again on the next write
            if sent < end - start:
                return self._cut(data, start + sent)
            start = end
        return len(lines)

    def _cut(self, data: bytes, sent: int) -> int:
        """The lines done when ``sent`` bytes of ``data`` went out; a line begun counts as done,
        its end is kept and goes out first next time."""
        done = data.count(b"\n", 0, sent)
        if sent and data[sent - 1] != 0x0A:
            end = data.index(b"\n", sent) + 1
            self._rest = data[sent:end]
            done += 1
        return done

    def pollable(self) -> int | None:
        """The descriptor to wait on when lines could not all be written (a regular file never makes
        anyone wait)."""
        return self.fd if self._piece is not None else None

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        elif self._owned:
            os.close(self.fd)


class LogFile(Stream):
    """A file, appended to; :meth:`reopen` opens the path again, for logrotate's rename."""

    def __init__(self, path: str) -> None:
        super().__init__(self._open(path), path, owned=True, piece=None)
        self.path = path

    @staticmethod
    def _open(path: str) -> int:
        # O_NONBLOCK: a named pipe with no reader fails here instead of hanging start-up
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o640)

    def reopen(self) -> None:
        try:
            fd = self._open(self.path)
        except OSError as exc:  # keep writing where we were
            self.report(f"cannot reopen the log file {self.path}: {exc.strerror or exc}; still writing to the old one")
            return
        if self._rest:  # the end of a begun line belongs with its beginning
            try:
                os.write(self.fd, self._rest)
            except OSError:
                pass
            self._rest = b""
        os.close(self.fd)
        self.fd = fd


class Syslog:
    """The local syslog socket (``/dev/log``): one datagram a line, sent without waiting.

    When the socket cannot be reached (no syslog daemon, no ``/dev/log`` in a container, the
    daemon restarting), the lines go to stderr instead of vanishing, the fact is reported once
    (stderr, ``/health``), and the socket is tried again every :data:`SYSLOG_RETRY` seconds.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"syslog ({path})"
        self.problem: str | None = None
        self.report = _report_to_stderr
        self.fallback = _stderr()
        self._sock: socket.socket | None = None
        self._retry_at = 0.0
        failure = self._connect()
        if failure is not None:
            self._unreachable(failure)

    def _connect(self) -> OSError | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            return exc
        self._sock = sock
        return None

    def _unreachable(self, exc: OSError) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._retry_at = time.monotonic() + SYSLOG_RETRY
        if self.problem is None:
            self.problem = f"syslog unreachable at {self.path} ({exc.strerror or exc}); writing log lines to stderr"
            self.report(self.problem)

    def write(self, lines: list[str]) -> int:
        if self._sock is None and time.monotonic() >= self._retry_at:
            failure = self._connect()
            if failure is not None:
                self._unreachable(failure)
            elif self.problem is not None:
                self.problem = None
                self.report(f"syslog at {self.path} reachable again; log lines go there")
        sent = 0
        while self._sock is not None and sent < len(lines):
            try:
                self._sock.send(lines[sent][:-1].encode("utf-8", "backslashreplace"))  # no newline
            except BlockingIOError:
                return sent
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:  # longer than the socket takes: written to stderr instead
                    self.fallback.write([_unframed(lines[sent])])
                    sent += 1
                    continue
                # ECONNREFUSED, ENOENT, ENOTCONN: the daemon went away, or restarted with a new socket
                failure = self._connect_again()
                if failure is not None:
                    self._unreachable(failure)
                continue
            sent += 1
        if sent < len(lines):
            sent += self.fallback.write([_unframed(line) for line in lines[sent:]])
        return sent

    def _connect_again(self) -> OSError | None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self._connect()

    def pollable(self) -> int | None:
        return self._sock.fileno() if self._sock is not None else self.fallback.pollable()

    def reopen(self) -> None:
        if self._sock is None:
            self._retry_at = 0.0  # try the socket again at the next line

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_STDERR: list[Stream] = []


def _stderr() -> Stream:
    """This process's stderr as a :class:`Stream`, shared by every report and syslog fallback so
    that their lines never interleave."""
    if not _STDERR:
        _STDERR.append(Stream.standard(2, "stderr"))
    return _STDERR[0]


def _unframed(datagram: str) -> str:
    """A syslog datagram as a line for stderr: ``Nov 23 19:39:13 sipserver[PID]: [ns#level] text``."""
    return datagram[datagram.find(">") + 1 :]


# -------------------------------------------------------------------------------------------------
# The writer


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
        if level in ("error", "critical") or self._closing:
            self.flush()  # an error may come just before the process dies
        elif len(waiting) >= BATCH and not self._lagging:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        if self.reactor is None or self._closing:
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
        (the process is stopping); from now on each line is written at once."""
        self._closing = True
        if self._waiter is not None:
            self._stop_waiting()
        self._scheduled = False  # a retry set for later may never run: the next line goes out at once
        deadline = time.monotonic() + timeout
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
        _report_to_stderr(text)


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


# -------------------------------------------------------------------------------------------------
# Building the writer from the config, and Twisted's observer


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
