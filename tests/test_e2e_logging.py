"""End to end: the exchange log of the real daemon, to a pipe that lags, a file that logrotate
renames, /dev/full, a syslog socket that goes away, and across worker processes and SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sipserver.client import SIPClient
from sipserver.sip2 import encode, make
from tests.daemon import LISTENING, ROOT, TWISTD, Daemon, config_data, run_to_exit, write_config

pytestmark = pytest.mark.e2e

STATUS_LINE = re.compile(r"\S+ \[sipserver#info\] sip listener=raw peer=127\.0\.0\.1 login=sco sc_status ok \d+\.\dms")
# Every line the daemon writes in the text format: a time, then [namespace#level] or [-] (Twisted's own).
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]]+\] .*")


def status_frames(count: int) -> bytes:
    return b"".join(encode(make("99", protocol_version="2.00"), sequence=str(n % 10)) for n in range(count))


def login_frame() -> bytes:
    return encode(make("93", CN="sco", CO="scpass", CP="MAIN-DESK1"), sequence="0")


def read_replies(sock: socket.socket, count: int) -> int:
    """Read ``count`` replies (frames end with CR); fewer if the daemon stops answering (timeout)."""
    seen, buffer = 0, b""
    while seen < count:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return seen
        if not chunk:
            return seen
        buffer += chunk
        seen += chunk.count(b"\r")
    return seen


def logged_in(address: tuple[str, int] | str) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    sock.sendall(login_frame())
    assert read_replies(sock, 1) == 1
    return sock


def wait_for(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not seen within {timeout}s")


def http_get(address: str | int, path: str) -> str:
    """GET ``path`` from the status listener (a unix socket path or a loopback port); the body."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(address)
    else:
        sock = socket.create_connection(("127.0.0.1", address), timeout=10)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: sip\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()


def test_a_stdout_nobody_reads_never_stalls_the_daemon_and_every_line_is_written_at_sigterm(tmp_path):
    data = config_data(tmp_path, logging={"level": "info"})
    del data["http"]
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(write_config(tmp_path, data))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
    )
    try:
        fd = process.stdout.fileno()
        os.set_blocking(fd, False)
        output, deadline, ports = b"", time.monotonic() + 30, {}
        while not ({"raw", "telnet"} <= set(ports) and b"backend embedded ready" in output):
            assert time.monotonic() < deadline and process.poll() is None, output.decode()
            try:
                output += os.read(fd, 65536)
            except BlockingIOError:
                time.sleep(0.05)
            ports = {m.group("name"): int(m.group("port")) for m in LISTENING.finditer(output.decode())}
        # From here on nobody reads the daemon's stdout: its pipe (64 KB) fills after about 600 lines.
        terminals = [logged_in(("127.0.0.1", ports["raw"])) for _ in range(4)]
        answered = 0
        for _ in range(15):
            for sock in terminals:
                sock.sendall(status_frames(50))
            for sock in terminals:
                answered += read_replies(sock, 50)
        assert answered == 15 * 4 * 50  # 3,000 exchanges answered while their lines waited
        for sock in terminals:
            sock.close()
        process.send_signal(signal.SIGTERM)
        os.set_blocking(fd, True)
        rest, _ = process.communicate(timeout=60)  # read it now: the daemon writes what waited, then exits
        output += rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode in (0, -signal.SIGTERM)  # twistd ends by the signal that stopped it
    lines = output.decode().splitlines()
    assert all(TEXT_LINE.fullmatch(line) for line in lines), [line for line in lines if not TEXT_LINE.fullmatch(line)]
    assert sum(1 for line in lines if STATUS_LINE.fullmatch(line)) == 3000
    assert sum(1 for line in lines if "login=sco login ok" in line) == 4
    # twistd's last word is written too (the ports' "Closed" lines may come before or after it).
    assert any("Server Shut Down." in line for line in lines[-4:]), lines[-4:]


def test_twistd_logfile_still_names_the_file_when_the_config_says_stdout(tmp_path):
    path = tmp_path / "twistd.log"
    config = write_config(tmp_path, config_data(tmp_path, logging={"level": "info"}))
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", f"--logfile={path}", "sip", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
    )
    try:
        wait_for(lambda: path.exists() and "backend embedded ready" in path.read_text(), "start-up")
        port = next(int(m.group("port")) for m in LISTENING.finditer(path.read_text()) if m.group("name") == "raw")
        sock = logged_in(("127.0.0.1", port))
        sock.sendall(status_frames(5))
        assert read_replies(sock, 5) == 5
        sock.close()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert path.read_text().count("sc_status ok") == 5 and output == b""


def test_sigusr1_and_sighup_reopen_the_log_file_after_logrotate_renames_it(tmp_path):
    path = tmp_path / "sip.log"
    data = config_data(tmp_path, logging={"level": "info", "destination": "file", "file": str(path)})
    running = Daemon(write_config(tmp_path, data), tmp_path / "out.log", log_file=path).wait_ready(2)
    try:
        sock = logged_in(("127.0.0.1", running.port("raw")))

        def exchanges(count: int, into: Path) -> None:
            sock.sendall(status_frames(count))
            assert read_replies(sock, count) == count
            wait_for(lambda: into.exists() and into.read_text().count("sc_status ok") >= count, "the lines")

        exchanges(10, path)
        path.rename(tmp_path / "sip.log.1")  # logrotate's rename; then its postrotate signal
        running.signal(signal.SIGUSR1)
        wait_for(path.exists, "the reopened file")
        exchanges(20, path)
        path.rename(tmp_path / "sip.log.2")
        running.signal(signal.SIGHUP)
        wait_for(lambda: path.exists() and "configuration reloaded" in path.read_text(), "the reload")
        exchanges(30, path)
        sock.close()
    finally:
        assert running.stop() in (0, -signal.SIGTERM)
    counts = [(tmp_path / name).read_text().count("sc_status ok") for name in ("sip.log.1", "sip.log.2", "sip.log")]
    assert counts == [10, 20, 30]
    assert "Server Shut Down." in path.read_text() and running.output() == ""


def test_every_exchange_of_two_workers_is_in_the_log_file_whole_after_sigterm(tmp_path):
    path = tmp_path / "sip.log"
    data = config_data(tmp_path, logging={"level": "info", "destination": "file", "file": str(path)})
    data["server"]["workers"] = 2
    running = Daemon(write_config(tmp_path, data), tmp_path / "out.log", log_file=path).wait_ready(2)
    try:
        terminals = [logged_in(("127.0.0.1", running.port("raw"))) for _ in range(6)]
        for _ in range(10):
            for sock in terminals:
                sock.sendall(status_frames(40))
            for sock in terminals:
                assert read_replies(sock, 40) == 40
        for sock in terminals:
            sock.close()
    finally:
        assert running.stop() in (0, -signal.SIGTERM)
    lines = path.read_text().splitlines()
    assert all(TEXT_LINE.fullmatch(line) for line in lines), [line for line in lines if not TEXT_LINE.fullmatch(line)]
    assert sum(1 for line in lines if STATUS_LINE.fullmatch(line)) == 6 * 10 * 40
    opened = [line for line in lines if "connection opened" in line]
    assert any(line.endswith("worker=0") for line in opened) and any(line.endswith("worker=1") for line in opened)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_log_file_on_a_full_disk_keeps_the_daemon_serving_counts_the_lines_and_says_so_once(tmp_path):
    sip, http = str(tmp_path / "sip.sock"), str(tmp_path / "http.sock")
    data = config_data(
        tmp_path,
        logging={"level": "info", "destination": "file", "file": "/dev/full"},
        listeners=[{"name": "raw", "transport": "raw", "endpoint": f"unix:{sip}"}],  # no line says where
        http={"endpoint": f"unix:{http}"},
    )
    running = Daemon(write_config(tmp_path, data), tmp_path / "out.log")
    try:
        wait_for(lambda: os.path.exists(http) and os.path.exists(sip), "the sockets")
        sock = logged_in(sip)
        sock.sendall(status_frames(20))
        assert read_replies(sock, 20) == 20
        sock.close()
        metrics = http_get(http, "/metrics")
        dropped = int(re.search(r"^sip_log_lines_dropped_total (\d+)$", metrics, re.M).group(1))
        assert dropped >= 21 and "sip_log_destination_up 0" in metrics
        health = json.loads(http_get(http, "/health"))
        assert health["status"] == "ok" and health["log"] == "cannot write to /dev/full: No space left on device"
    finally:
        running.stop()
    reports = [line for line in running.output().splitlines() if "log lines are being dropped" in line]
    assert reports == ["sipserver: log lines are being dropped: cannot write to /dev/full: No space left on device"
                       " (counted in sip_log_lines_dropped_total)"]  # fmt: skip


def test_a_log_file_that_cannot_be_opened_stops_start_up_and_fails_the_check_with_one_line(tmp_path):
    path = tmp_path / "missing" / "sip.log"
    config = write_config(tmp_path, config_data(tmp_path, logging={"destination": "file", "file": str(path)}))
    line = f"sipserver: {config}: logging.file: cannot open {path}: No such file or directory"
    for extra in ((), ("--check",)):
        result = run_to_exit(config, 30, *extra)
        assert (result.returncode, result.stderr.strip()) == (1, line)


class SyslogReceiver:
    """A unix datagram socket where /dev/log would be: each datagram becomes one line of ``into``."""

    def __init__(self, path: Path, into: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.into = into
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.into.open("a") as out:
            while not self.stopped.is_set():
                try:
                    datagram = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                out.write(datagram.decode(errors="replace") + "\n")
                out.flush()

    def stop(self) -> None:
        """The syslog daemon goes away: its socket is closed and removed."""
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()
        self.path.unlink()


def test_a_syslog_that_goes_away_sends_the_lines_to_stderr_says_so_once_and_in_health_and_comes_back(tmp_path):
    devlog, received = tmp_path / "devlog", tmp_path / "syslog.txt"
    receiver = SyslogReceiver(devlog, received)
    data = config_data(tmp_path, logging={"level": "info", "destination": "syslog", "syslog_socket": str(devlog)})
    running = Daemon(write_config(tmp_path, data), tmp_path / "out.log", log_file=received)
    try:
        running.wait_ready(2)
        http = running.port("http")
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert client.login("sco", "scpass")
            client.sc_status()
            wait_for(lambda: "sc_status ok" in received.read_text(), "the exchange line in syslog")
            line = next(line for line in received.read_text().splitlines() if "sc_status ok" in line)
            pid = running.process.pid
            assert re.fullmatch(rf"<182>\w{{3}} [ \d]\d [\d:]{{8}} sipserver\[{pid}\]: " + STATUS_LINE.pattern
                                .split(" ", 1)[1], line)  # fmt: skip
            assert json.loads(http_get(http, "/health"))["log"] == "ok"
            receiver.stop()
            client.sc_status()
            client.sc_status()
            wait_for(lambda: running.output().count("sc_status ok") == 2, "the lines on stderr")
            output = running.output()
            assert output.count("syslog unreachable") == 1 and "sipserver: syslog unreachable at" in output
            health = json.loads(http_get(http, "/health"))
            assert health["status"] == "ok" and health["log"].startswith(f"syslog unreachable at {devlog}")
            assert "sip_log_destination_up 0" in http_get(http, "/metrics")
            receiver = SyslogReceiver(devlog, received)  # it is back; SIGHUP reconnects at once
            running.signal(signal.SIGHUP)
            wait_for(lambda: "configuration reloaded" in received.read_text(), "the reload line in syslog")
            client.sc_status()
            wait_for(lambda: received.read_text().count("sc_status ok") == 2, "the exchange line in syslog again")
            assert json.loads(http_get(http, "/health"))["log"] == "ok"
    finally:
        running.stop()
        receiver.stop()
    assert running.output().count("sc_status ok") == 2 and "reachable again" in running.output()


def test_no_syslog_socket_at_start_up_is_said_once_and_the_lines_go_to_stderr(tmp_path):
    devlog = tmp_path / "no-syslog-here"
    data = config_data(tmp_path, logging={"level": "info", "destination": "syslog", "syslog_socket": str(devlog)})
    running = Daemon(write_config(tmp_path, data), tmp_path / "out.log")
    try:
        running.wait_ready(2)  # the listening lines came on stderr
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert client.login("sco", "scpass")
            client.sc_status()
        wait_for(lambda: "sc_status ok" in running.output(), "the exchange line on stderr")
        health = json.loads(http_get(running.port("http"), "/health"))
        why = f"syslog unreachable at {devlog} (No such file or directory); writing log lines to stderr"
        assert health["log"] == why
    finally:
        running.stop()
    output = running.output()
    assert output.splitlines()[0] == f"sipserver: {health['log']}" and output.count("syslog unreachable") == 1
