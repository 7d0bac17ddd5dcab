"""The exchange log's writer on real descriptors: a file, a pipe nobody reads, /dev/full, a unix
datagram socket standing in for /dev/log. Lines are compared with what Twisted's logger wrote for
the same event before the writer existed; the clock is a ``Clock``, so nothing here is timed."""

from __future__ import annotations

import datetime
import json
import os
import re
import select
import signal
import socket
import syslog
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, formatEvent, formatEventAsClassicLogText

from sipserver.observe import exchangelog
from sipserver.observe.events import Events
from sipserver.observe.exchangelog import JsonLines, LogFile, LogWriter, Stream, Syslog, SyslogLines, TextLines
from sipserver.observe.exchangelog import writer as writer_module

LOCAL6_INFO, LOCAL6_WARNING = syslog.LOG_LOCAL6 | syslog.LOG_INFO, syslog.LOG_LOCAL6 | syslog.LOG_WARNING


class _Listener:
    name = "raw"


class _Session:
    """What the events read from a session: the listener's name, the peer and the login."""

    listener = _Listener()

    def __init__(self, login: str | None = "sco", peer: str = "127.0.0.1") -> None:
        self.login = login
        self.peer = peer


def twisted_event(format: str, level: LogLevel = LogLevel.info, **fields: Any) -> dict[str, Any]:
    """The event Twisted's logger made for a line before the writer (the namespace was ``sipserver``)."""
    seen: list[dict[str, Any]] = []
    Logger(namespace="sipserver", observer=seen.append).emit(level, format, **fields)
    return seen[0]


@pytest.fixture(autouse=True)
def _bounded():
    """A write that blocked would hang the test: fail it instead after 60 s."""

    def hang(*_: Any) -> None:
        raise TimeoutError("a write blocked")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# -------------------------------------------------------------------------------------------------
# The lines: the same as Twisted's


# Each line as events.py wrote it through Twisted's logger before: (the call now, format, level, fields).
BEFORE = [
    (lambda e, s: e.exchange(s, "sc_status", "ok", 0.00021),
     "sip listener={listener} peer={peer} login={login} {request} {outcome} {ms:.1f}ms", LogLevel.info,
     {"listener": "raw", "peer": "127.0.0.1", "login": "sco", "request": "sc_status", "outcome": "ok", "ms": 0.21}),
    (lambda e, s: e.connection_opened(s), "connection opened listener={listener} peer={peer}", LogLevel.info,
     {"listener": "raw", "peer": "127.0.0.1"}),
    (lambda e, s: e.connection_refused("raw", "10.1.2.3", "listener limit of 1 connections reached"),
     "connection refused listener={listener} peer={peer} reason={reason}", LogLevel.warn,
     {"listener": "raw", "peer": "10.1.2.3", "reason": "listener limit of 1 connections reached"}),
    (lambda e, s: e.closing(s, "idle timeout"),
     "closing connection listener={listener} peer={peer} login={login} reason={reason}", LogLevel.info,
     {"listener": "raw", "peer": "127.0.0.1", "login": "sco", "reason": "idle timeout"}),
    (lambda e, s: e.connection_closed(s), "connection closed listener={listener} peer={peer} login={login}",
     LogLevel.info, {"listener": "raw", "peer": "127.0.0.1", "login": "sco"}),
    (lambda e, s: e.login(s, "sco", True, None), "login ok listener={listener} peer={peer} login={login}",
     LogLevel.info, {"listener": "raw", "peer": "127.0.0.1", "login": "sco"}),
    (lambda e, s: e.login(s, "sco", False, "wrong_password"),
     "login refused listener={listener} peer={peer} login={login} reason={reason}", LogLevel.warn,
     {"listener": "raw", "peer": "127.0.0.1", "login": "sco", "reason": "wrong_password"}),
    (lambda e, s: e.protocol_error(s, "checksum error; answered 96"),
     "protocol listener={listener} peer={peer} login={login}: {what}", LogLevel.warn,
     {"listener": "raw", "peer": "127.0.0.1", "login": "sco", "what": "checksum error; answered 96"}),
]  # fmt: skip


def write_one(tmp_path: Path, lines: Any, call: Any, session: Any = None) -> str:
    path = tmp_path / "one.log"
    path.unlink(missing_ok=True)
    events = Events("debug", LogWriter(LogFile(str(path)), lines))
    call(events, session or _Session())
    return path.read_text()


@pytest.mark.parametrize(("call", "format", "level", "fields"), BEFORE, ids=[b[1].split(" ")[0] + str(i)
                         for i, b in enumerate(BEFORE)])  # fmt: skip
def test_text_lines_are_the_lines_twisted_wrote(tmp_path, call, format, level, fields):
    [line] = write_one(tmp_path, TextLines(), call).splitlines(keepends=True)
    before = formatEventAsClassicLogText(twisted_event(format, level, **fields))
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} "
    assert re.fullmatch(stamp + re.escape(before.split(" ", 1)[1]), line), (line, before)


@pytest.mark.parametrize(("call", "format", "level", "fields"), BEFORE, ids=[b[1].split(" ")[0] + str(i)
                         for i, b in enumerate(BEFORE)])  # fmt: skip
def test_json_lines_have_the_fields_of_before(tmp_path, call, format, level, fields):
    [line] = write_one(tmp_path, JsonLines(), call).splitlines()
    record = json.loads(line)
    event = twisted_event(format, level, **fields)
    expected = {"level": level.name, "namespace": "sipserver", "message": formatEvent(event), **fields}
    time = datetime.datetime.fromisoformat(record.pop("time"))
    assert time.tzinfo == datetime.UTC and abs(time.timestamp() - event["log_time"]) < 60
    assert record == expected


def test_the_worker_index_is_a_number_in_json_and_a_word_in_text(tmp_path):
    def opened(events: Events, session: Any) -> None:
        events.worker = 1
        events.connection_opened(session)

    assert write_one(tmp_path, TextLines(), opened).endswith("connection opened listener=raw peer=127.0.0.1 worker=1\n")
    assert json.loads(write_one(tmp_path, JsonLines(), opened))["worker"] == 1


def test_a_password_typed_as_a_login_is_masked_in_every_format(tmp_path):
    def refused(events: Events, session: Any) -> None:
        events.login(session, "9300CNsco|COs3cret|CPDESK1|", False, "unknown_login")

    text = write_one(tmp_path, TextLines(), refused)
    record = json.loads(write_one(tmp_path, JsonLines(), refused))
    assert "s3cret" not in text and "login=9300CNsco|CO***|CPDESK1|" in text
    assert "s3cret" not in json.dumps(record) and record["login"] == "9300CNsco|CO***|CPDESK1|"


def test_a_newline_in_a_message_starts_a_continuation_line_and_json_escapes_it(tmp_path):
    def odd(events: Events, session: Any) -> None:
        events.closing(session, "bad\nthing")

    assert write_one(tmp_path, TextLines(), odd).endswith("login=sco reason=bad\n\tthing\n")
    assert json.loads(write_one(tmp_path, JsonLines(), odd))["reason"] == "bad\nthing"


def test_nothing_is_written_below_the_level(tmp_path):
    path = tmp_path / "quiet.log"
    events = Events("warn", LogWriter(LogFile(str(path)), TextLines()))
    events.exchange(_Session(), "sc_status", "ok", 0.001)
    events.connection_opened(_Session())
    events.login(_Session(), "sco", False, "wrong_password")
    assert path.read_text().count("\n") == 1 and "login refused" in path.read_text()


def test_twisted_events_share_the_writer_in_order_with_their_tracebacks(tmp_path):
    path = tmp_path / "all.log"
    writer = LogWriter(LogFile(str(path)), TextLines(), Clock())
    observer, _ = exchangelog.observer(writer, LogLevel.info)
    log = Logger(namespace="sipserver.daemon.service", observer=observer)
    writer.exchange("raw", "127.0.0.1", "sco", "sc_status", "ok", 0.0002)
    log.info("configuration reloaded: {accounts} account(s)", accounts=3)
    log.debug("below the level")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("internal error")  # an error is written at once, with what waited before it
    lines = path.read_text().splitlines()
    assert "sc_status ok" in lines[0]
    assert "[sipserver.daemon.service#info] configuration reloaded: 3 account(s)" in lines[1]
    assert "[sipserver.daemon.service#critical] internal error" in lines[2] and "ZeroDivisionError" in lines[-1]
    assert not any("below the level" in line for line in lines)


class _ThreadedReactor(MemoryReactorClock):
    """A memory reactor that queues ``callFromThread`` calls, as the real one does, until run."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.from_threads.append((f, args))


def test_an_event_logged_on_another_thread_joins_the_lines_on_the_reactor_thread(tmp_path):
    path, reactor = tmp_path / "threads.log", _ThreadedReactor()
    writer = LogWriter(LogFile(str(path)), TextLines(), reactor)
    observer, _ = exchangelog.observer(writer, LogLevel.info)
    pool_log = Logger(namespace="sipserver.ils.embedded", observer=observer)
    thread = threading.Thread(target=lambda: pool_log.error("lost"))
    thread.start()
    thread.join(10)
    assert path.read_text() == "" and not writer._waiting  # nothing touched from the thread
    for f, args in reactor.from_threads:
        f(*args)
    assert "[sipserver.ils.embedded#error] lost" in path.read_text()


# -------------------------------------------------------------------------------------------------
# Per turn, and nothing blocks


def test_lines_wait_for_the_end_of_the_turn_then_go_out_in_one_write(tmp_path):
    path, clock = tmp_path / "turn.log", Clock()
    writer = LogWriter(LogFile(str(path)), TextLines(), clock)
    for _ in range(10):
        writer.exchange("raw", "127.0.0.1", "sco", "sc_status", "ok", 0.0002)
    assert path.read_text() == "" and len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert path.read_text().count("sc_status ok") == 10
    for _ in range(writer_module.BATCH + 1):  # a batch is written without waiting for the turn to end
        writer.exchange("raw", "127.0.0.1", "sco", "sc_status", "ok", 0.0002)
    assert path.read_text().count("sc_status ok") == 10 + writer_module.BATCH


@pytest.fixture
def pipe():
    """A pipe nobody reads until the test says: its read end, and the writer's stream on the other."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    stream = Stream.standard(write, "stdout")
    yield read, stream
    stream.close()
    os.close(read)
    os.close(write)


def exchanges(writer: LogWriter, count: int, turn: Any = None) -> None:
    """``count`` exchange lines numbered from 0 in the request's place; ``turn()`` every 40."""
    for n in range(count):
        writer.exchange("raw", "127.0.0.1", "sco", str(n), "ok", 0.0002)
        if turn is not None and n % 40 == 39:
            turn()


def drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


LINE = re.compile(rb"\d{4}-\S+ \[sipserver#info\] sip listener=raw peer=127\.0\.0\.1 login=sco (\d+) ok 0\.2ms")


def numbered(received: bytes) -> list[int]:
    """The numbers of the lines received, each line checked whole."""
    return [int(LINE.fullmatch(line).group(1)) for line in received.split(b"\n")[:-1]]


def test_a_reader_that_lags_never_blocks_lines_wait_then_are_dropped_whole_and_counted(pipe, capfd, monkeypatch):
    monkeypatch.setattr(writer_module, "MAX_WAITING", 2000)
    read, stream = pipe
    clock = Clock()
    writer = LogWriter(stream, TextLines(), clock)
    total = 8000  # about 800 KB: the pipe holds 64 KB, 2000 lines wait, the rest is dropped
    exchanges(writer, total, lambda: clock.advance(0))  # a turn ends every 40 lines
    assert writer.dropped > 0 and writer.problem is not None
    received = drain(read)
    for _ in range(200):  # the reader catches up: each retry writes what the pipe takes
        clock.advance(writer_module.RETRY)
        received += drain(read)
        if not writer._waiting:
            break
    assert writer.problem is None
    assert received.endswith(b"\n")
    numbers = numbered(received)
    assert numbers == sorted(numbers) and len(numbers) + writer.dropped == total
    reports = capfd.readouterr().err.splitlines()
    assert len(reports) == 2, reports  # once when dropping began, once when it ended
    assert "stdout is not keeping up" in reports[0] and "sip_log_lines_dropped_total" in reports[0]
    assert f"{writer.dropped} were dropped" in reports[1]


def test_a_socket_as_stdout_the_journal_under_systemd_is_written_without_waiting_and_lines_stay_whole():
    daemon_end, journal_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    journal_end.setblocking(False)
    stream = Stream.standard(daemon_end.fileno(), "stdout")
    assert daemon_end.getblocking()  # the socket itself stays as it was: MSG_DONTWAIT, call by call
    clock = Clock()
    writer = LogWriter(stream, TextLines(), clock)
    exchanges(writer, 5000, lambda: clock.advance(0))
    assert writer._waiting  # the socket's buffer is full: the rest waits
    received = b""
    for _ in range(1000):
        try:
            received += journal_end.recv(1 << 16)
        except BlockingIOError:
            pass
        clock.advance(writer_module.RETRY)
        if not writer._waiting:
            break
    while True:
        try:
            received += journal_end.recv(1 << 16)
        except BlockingIOError:
            break
    assert numbered(received) == list(range(5000)) and writer.dropped == 0
    stream.close()
    daemon_end.close()
    journal_end.close()


def overfilled(stream: Stream, reactor: Any) -> LogWriter:
    """A writer on ``stream`` after a turn of 2,000 lines, more than a pipe holds."""
    writer = LogWriter(stream, TextLines(), reactor)
    exchanges(writer, 2000)
    reactor.advance(0)
    return writer


def test_at_shutdown_what_waits_is_written_when_the_reader_catches_up(pipe):
    read, stream = pipe
    writer = overfilled(stream, Clock())
    assert writer._waiting  # the pipe is full
    received = drain(read)
    writer.close(timeout=0)  # no wait: what the pipe took now is written, the rest dropped and counted
    received += drain(read)
    assert len(numbered(received)) + writer.dropped == 2000 and writer.dropped > 0
    writer.exchange("raw", "127.0.0.1", "sco", "9999", "ok", 0.0002)  # after close: at once
    assert drain(read).endswith(b" 9999 ok 0.2ms\n")


def pipe_full(write: int) -> bool:
    """Whether the pipe whose write end is ``write`` takes nothing more now (not writable)."""
    return not select.select([], [write], [], 0)[1]


def test_lines_logged_after_close_wait_for_a_full_pipe_while_its_reader_catches_up(pipe):
    # twistd logs its last words ("Main loop terminated", "Server Shut Down.") after the service has
    # closed the writer; a reader that is just draining a full pipe (systemd, a shell) must get them.
    read, stream = pipe
    writer = LogWriter(stream, TextLines(), Clock())
    received = []

    def reader() -> None:
        deadline = time.monotonic() + 5
        while not pipe_full(stream.fd):  # the pipe fills up with the late lines before anyone reads
            assert time.monotonic() < deadline, "the late lines never filled the pipe"
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            received.append(drain(read))
            time.sleep(0.01)

    thread = threading.Thread(target=reader)
    thread.start()
    writer.close(timeout=2)
    exchanges(writer, 2000)  # more than the pipe holds
    writer.line("info", "Server Shut Down.")
    thread.join()
    data = b"".join(received)
    assert writer.dropped == 0 and not writer._waiting
    assert numbered(data.rsplit(b"\n", 2)[0] + b"\n") == list(range(2000))
    assert data.endswith(b"Server Shut Down.\n")


def test_under_a_reactor_a_lagging_destination_is_written_again_as_soon_as_it_can_take_more(pipe):
    read, stream = pipe
    reactor = MemoryReactorClock()
    writer = overfilled(stream, reactor)
    [waiter] = reactor.getWriters()  # the pipe is full: its descriptor is watched, no timer
    assert waiter.fileno() == stream.fd and not reactor.getDelayedCalls()
    received = b""
    for _ in range(100):
        received += drain(read)
        waiter.doWrite()  # what the reactor calls once the pipe can take more
        if not reactor.getWriters():
            break
        [waiter] = reactor.getWriters()
    received += drain(read)
    assert numbered(received) == list(range(2000)) and writer.dropped == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_disk_drops_the_lines_counts_them_and_says_so_once(capfd):
    writer = LogWriter(LogFile("/dev/full"), TextLines(), Clock())
    for _ in range(3):
        for _ in range(10):
            writer.exchange("raw", "127.0.0.1", "sco", "sc_status", "ok", 0.0002)
        writer.flush()
    assert writer.dropped == 30
    assert writer.problem == "cannot write to /dev/full: No space left on device"
    [report] = capfd.readouterr().err.splitlines()
    assert "log lines are being dropped: cannot write to /dev/full" in report


def test_a_log_file_that_cannot_be_opened_is_an_error_at_once(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(NotADirectoryError):
        LogFile(str(tmp_path / "not-a-dir" / "sip.log"))


def test_reopen_follows_a_rename_as_logrotate_does(tmp_path):
    path = tmp_path / "sip.log"
    writer = LogWriter(LogFile(str(path)), TextLines())
    writer.exchange("raw", "127.0.0.1", "sco", "before", "ok", 0.0002)
    path.rename(tmp_path / "sip.log.1")
    writer.exchange("raw", "127.0.0.1", "sco", "renamed", "ok", 0.0002)  # still the old file, until told
    writer.reopen()
    writer.exchange("raw", "127.0.0.1", "sco", "after", "ok", 0.0002)
    old = (tmp_path / "sip.log.1").read_text()
    assert " before ok" in old and " renamed ok" in old and " after ok" not in old
    assert path.read_text().count("\n") == 1 and " after ok" in path.read_text()


# -------------------------------------------------------------------------------------------------
# Syslog


@pytest.fixture
def devlog(tmp_path):
    """A unix datagram socket where /dev/log would be, read by the test."""
    path = tmp_path / "devlog"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    yield path, server
    server.close()


def datagrams(server: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(server.recv(65536).decode())
        except BlockingIOError:
            return out


def test_syslog_lines_are_one_datagram_each_with_the_level_as_priority(devlog):
    path, server = devlog
    events = Events("info", LogWriter(Syslog(str(path)), SyslogLines(syslog.LOG_LOCAL6), Clock()))
    events.exchange(_Session(), "sc_status", "ok", 0.00021)
    events.login(_Session(), "sco", False, "wrong_password")
    events.log.flush()
    first, second = datagrams(server)
    head = r"<{}>[A-Z][a-z]{{2}} [ \d]\d \d\d:\d\d:\d\d sipserver\[{}\]: "
    exchange = "[sipserver#info] sip listener=raw peer=127.0.0.1 login=sco sc_status ok 0.2ms"
    refused = "[sipserver#warn] login refused listener=raw peer=127.0.0.1 login=sco reason=wrong_password"
    assert re.fullmatch(head.format(LOCAL6_INFO, os.getpid()) + re.escape(exchange), first)
    assert re.fullmatch(head.format(LOCAL6_WARNING, os.getpid()) + re.escape(refused), second)


def test_a_syslog_that_goes_away_falls_back_to_stderr_said_once_and_comes_back(devlog, capfd):
    path, server = devlog
    writer = LogWriter(Syslog(str(path)), SyslogLines(syslog.LOG_LOCAL6))
    writer.exchange("raw", "127.0.0.1", "sco", "first", "ok", 0.0002)
    assert len(datagrams(server)) == 1
    server.close()
    path.unlink()  # the syslog daemon stopped
    writer.exchange("raw", "127.0.0.1", "sco", "second", "ok", 0.0002)
    writer.exchange("raw", "127.0.0.1", "sco", "third", "ok", 0.0002)
    err = capfd.readouterr().err.splitlines()
    assert len([line for line in err if "syslog unreachable" in line]) == 1
    assert [line.split(": ", 1)[1] for line in err if "sip listener" in line] == [
        "[sipserver#info] sip listener=raw peer=127.0.0.1 login=sco second ok 0.2ms",
        "[sipserver#info] sip listener=raw peer=127.0.0.1 login=sco third ok 0.2ms",
    ]
    assert writer.dropped == 0 and "syslog unreachable" in writer.problem
    again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    again.bind(str(path))  # it is back; SIGHUP (or SIGUSR1) tries at once
    writer.reopen()
    writer.exchange("raw", "127.0.0.1", "sco", "fourth", "ok", 0.0002)
    assert again.recv(65536).decode().endswith("login=sco fourth ok 0.2ms") and writer.problem is None
    assert "reachable again" in capfd.readouterr().err
    again.close()


def test_no_syslog_socket_at_start_up_is_said_once_and_lines_go_to_stderr(tmp_path, capfd):
    writer = LogWriter(Syslog(str(tmp_path / "no-such-log")), SyslogLines(syslog.LOG_DAEMON))
    writer.line("warn", "connection refused listener=raw peer=10.0.0.1 reason=server limit of 1 connections reached")
    err = capfd.readouterr().err.splitlines()
    assert err[0] == (f"sipserver: syslog unreachable at {tmp_path}/no-such-log (No such file or directory); "
                      "writing log lines to stderr")  # fmt: skip
    assert err[1].endswith(f"sipserver[{os.getpid()}]: [sipserver#warn] connection refused listener=raw "
                           "peer=10.0.0.1 reason=server limit of 1 connections reached")  # fmt: skip
    assert len(err) == 2 and writer.problem is not None


def test_a_full_syslog_queue_keeps_lines_waiting_and_sends_them_in_order_later(devlog):
    path, server = devlog
    clock = Clock()
    writer = LogWriter(Syslog(str(path)), SyslogLines(syslog.LOG_LOCAL6), clock)
    received: list[str] = []
    exchanges(writer, 3000, lambda: clock.advance(0))  # more than the socket's queue holds while nobody reads
    clock.advance(0)
    assert writer._waiting and writer.dropped == 0
    for _ in range(3000):  # each retry sends what the queue takes (net.unix.max_dgram_qlen, often 10)
        received += datagrams(server)
        clock.advance(writer_module.RETRY)
        if not writer._waiting:
            break
    received += datagrams(server)
    numbers = [int(re.search(r"login=sco (\d+) ok", d).group(1)) for d in received]
    assert numbers == list(range(3000))
