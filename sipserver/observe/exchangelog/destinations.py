"""Where the exchange log's lines go: stdout or stderr, a file, or the local syslog socket.

``write(lines)`` hands over as many lines as the destination takes at once and returns how many;
fewer than all means "later" (the writer keeps the rest and waits for :meth:`pollable`'s
descriptor); an OSError means these lines cannot be written at all. None of them ever waits.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from typing import Protocol

#: Seconds between attempts to reach a syslog socket that could not be reached.
SYSLOG_RETRY = 5.0


class Destination(Protocol):
    name: str
    problem: str | None  # the destination's own trouble (syslog unreachable), for /health
    report: Callable[[str], None]

    def write(self, lines: list[str]) -> int: ...

    def pollable(self) -> int | None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


def report_to_stderr(text: str) -> None:
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
        self.report: Callable[[str], None] = report_to_stderr
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
        self.report: Callable[[str], None] = report_to_stderr
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
