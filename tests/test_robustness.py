"""Robustness against the real daemon: garbage, slow and oversized input, a stalled backend,
terminals that vanish mid-checkout, SIGTERM with requests in flight, and worker processes.

Every loop is bounded and every wait has a deadline; the only time limits asserted are generous
liveness bounds ("answered within 2 s while ..."), never throughput.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipserver.client import SIPClient
from sipserver.sip2 import decode, encode, make
from tests import pg
from tests.daemon import Daemon, config_data, open_many, write_config
from tests.support import DEMO_DATA, ROOT

pytestmark = pytest.mark.e2e

SIPSERVER = str(Path(sys.executable).parent / "sipserver")

JANE, PIN = "21000000000001", "1234"
ITEM = "31000000000008"  # on the shelf at MAIN in the demo data
DATE = "20250115    093010"


def frame(code: str, sequence: int | None = None, **values: object) -> bytes:
    return encode(make(code, **values), sequence=None if sequence is None else str(sequence % 10))


LOGIN = frame("93", 0, CN="sco", CO="scpass", CP="MAIN-DESK1")
PROBE = frame("99", 9, status_code="0", max_print_width="080", protocol_version="2.00")


def checkout(sequence: int = 1) -> bytes:
    return frame("11", sequence, sc_renewal_policy=True, no_block=False, transaction_date=DATE, nb_due_date=DATE,
                 AO="MAIN", AA=JANE, AB=ITEM, AC="", AD=PIN)  # fmt: skip


def checkin(sequence: int = 1) -> bytes:
    return frame("09", sequence, no_block=False, transaction_date=DATE, return_date=DATE, AP="MAIN", AO="MAIN",
                 AB=ITEM, AC="")  # fmt: skip


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Reads CR-terminated frames from a socket; ``closed`` once the server hung up."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def frame(self, timeout: float = 5.0) -> bytes | None:
        """The next frame (with its CR), or None when the connection closed first."""
        deadline = time.monotonic() + timeout
        while b"\r" not in self.buffer:
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no reply within {timeout}s (have {self.buffer[:80]!r})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""  # closed while our next request was still unread: an RST, still a close
            except TimeoutError:
                continue
            if not chunk:
                self.closed = True
            self.buffer += chunk
        data, _, self.buffer = self.buffer.partition(b"\r")
        return data + b"\r"


def login(port: int) -> tuple[socket.socket, Reader]:
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(LOGIN)
    reply = reader.frame()
    assert reply is not None and reply.startswith(b"941"), reply
    return sock, reader


def ask(port: int, request: bytes, expect: bytes, timeout: float = 2.0) -> bytes:
    """Log in on a new connection, send one request, return the reply (which must start with ``expect``)."""
    sock, reader = login(port)
    with sock:
        sock.sendall(request)
        reply = reader.frame(timeout)
    assert reply is not None and reply.startswith(expect), reply
    return reply


def start(tmp_path: Path, **changes: object) -> Daemon:
    return Daemon(write_config(tmp_path, config_data(tmp_path, **changes)), tmp_path / "daemon.log").wait_ready(2)


def server_settings(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "robust", "login_timeout": 30, "idle_timeout": 60,
                               "lockout": {"failures": 0, "window": 60, "duration": 300}}  # fmt: skip
    base.update(overrides)
    return base


def assert_clean_log(daemon: Daemon) -> None:
    log = daemon.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


# -------------------------------------------------------------------------------------------------
# Random and mutated frames


VALID_FRAMES = [
    LOGIN,
    PROBE,
    frame("23", 1, language="001", transaction_date=DATE, AO="MAIN", AA=JANE, AC="", AD=PIN),
    frame("63", 2, language="001", transaction_date=DATE, summary="  Y       ", AO="MAIN", AA=JANE, AC="", AD=PIN),
    checkout(3),
    checkin(4),
    frame("29", 5, third_party_allowed=False, no_block=False, transaction_date=DATE, nb_due_date=DATE,
          AO="MAIN", AA=JANE, AB=ITEM, AC="", AD=PIN),
    frame("17", 6, transaction_date=DATE, AO="MAIN", AB=ITEM, AC=""),
    frame("35", 7, transaction_date=DATE, AO="MAIN", AA=JANE, AC="", AD=PIN),
    frame("65", 8, transaction_date=DATE, AO="MAIN", AA=JANE, AC="", AD=PIN),
    b"97AZFEF5\r",
    b"9900802.00\r",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with a few bytes flipped, inserted, deleted or cut off."""
    data = bytearray(draw(st.sampled_from(VALID_FRAMES)).rstrip(b"\r"))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "special"]))
        if action == "flip" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[where:]
        else:  # the bytes a framing or field parser cares about most
            data[where:where] = draw(st.sampled_from([b"\r", b"\n", b"\0", b"|", b"AY", b"AZ", b"\xff", b"\x16\x03"]))
    return bytes(data)


FUZZ = st.one_of(st.binary(max_size=300), mutated(), mutated())


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    running = start(tmp_path, server=server_settings())
    yield running
    running.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=FUZZ)
def test_random_and_mutated_frames_get_a_reply_or_a_clean_close(fuzz_daemon, data):
    port = fuzz_daemon.port("raw")
    sock, reader = login(port)
    with sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(data + b"\r" + PROBE)
        for _ in range(200):  # each fuzzed piece gets at most one reply; the probe's 98 ends it
            reply = reader.frame(timeout=5.0)
            if reply is None:
                break  # a clean close: the server refused the input
            decode(reply)  # every reply is a well-formed SIP frame (raises otherwise)
            if reply.startswith(b"98") and b"AY9AZ" in reply:
                break
        else:
            raise AssertionError("endless replies")
    assert fuzz_daemon.process.poll() is None, fuzz_daemon.log()[-3000:]
    ask(port, PROBE, b"98")  # and a fresh terminal is served


def test_fuzzing_left_no_traceback(fuzz_daemon):
    ask(fuzz_daemon.port("raw"), PROBE, b"98")
    assert_clean_log(fuzz_daemon)


# -------------------------------------------------------------------------------------------------
# Slow and oversized input


def test_slowloris_and_oversized_frames_are_closed_without_starving_others(tmp_path):
    daemon = start(tmp_path, server=server_settings(login_timeout=2, idle_timeout=3, max_frame_bytes=512))
    port = daemon.port("raw")
    closed_after: dict[str, float] = {}

    def trickle(name: str, logged_in: bool) -> None:
        sock, _reader = login(port) if logged_in else (connect(port), None)
        began = time.monotonic()
        with sock:
            sock.settimeout(0.05)
            for _ in range(300):  # one byte every 50 ms, never a CR: at most 15 s
                try:
                    sock.send(b"9")
                    if sock.recv(1024) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            closed_after[name] = time.monotonic() - began

    def status_drip() -> None:
        # The raw listener answers 99 before a login; the answers must not move the login deadline.
        sock = connect(port)
        reader = Reader(sock)
        began = time.monotonic()
        with sock:
            for _ in range(75):  # a 99 every 200 ms: at most 15 s
                try:
                    sock.sendall(PROBE)
                except OSError:
                    break
                if reader.frame(timeout=5.0) is None:
                    break
                time.sleep(0.2)
        closed_after["99s before login"] = time.monotonic() - began

    threads = [threading.Thread(target=trickle, args=("before login", False)),
               threading.Thread(target=trickle, args=("logged in", True)),
               threading.Thread(target=status_drip)]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        oversized, reader = login(port)
        with oversized:
            oversized.sendall(b"23" + b"x" * 600)  # past max_frame_bytes, no CR
            assert reader.frame(timeout=5.0) is None  # closed, no reply
        oversized, reader = login(port)
        with oversized:  # past max_frame_bytes and complete in one write: closed, not run
            oversized.sendall(frame("99", 1, protocol_version="2.00", AF=["x" * 250] * 3))
            assert reader.frame(timeout=5.0) is None
        sock, reader = login(port)
        with sock:
            for sequence in range(20):  # a busy terminal while the slow ones drip
                started = time.monotonic()
                sock.sendall(frame("99", sequence, status_code="0", max_print_width="080", protocol_version="2.00"))
                reply = reader.frame(timeout=5.0)
                assert reply is not None and reply.startswith(b"98")
                assert time.monotonic() - started < 2.0
                time.sleep(0.1)
    finally:
        for thread in threads:
            thread.join(20)
    assert closed_after["before login"] < 2 + 5, closed_after  # the login timeout, with slack
    assert closed_after["99s before login"] < 2 + 5, closed_after  # a deadline, not an idle timer
    assert closed_after["logged in"] < 3 + 5, closed_after  # the idle timeout: bytes are not frames
    log = daemon.log()
    assert "login timeout" in log and "idle timeout" in log and "frame longer than 512 bytes" in log
    assert_clean_log(daemon)
    daemon.stop()


# -------------------------------------------------------------------------------------------------
# A stalled backend


def slow_config(tmp_path: Path, delay: float) -> dict[str, object]:
    data = config_data(tmp_path, server=server_settings())
    data["backends"]["embedded"].update(type="tests.slow_backend:SlowBackend", delay=delay)
    data["institutions"]["MAIN"]["policy"]["timeout"] = 20
    return data


def test_a_stalled_backend_does_not_slow_other_terminals(tmp_path):
    daemon = Daemon(write_config(tmp_path, slow_config(tmp_path, delay=3.0)), tmp_path / "daemon.log").wait_ready(2)
    port = daemon.port("raw")
    slow, slow_reader = login(port)
    with slow:
        slow.sendall(checkout())
        began = time.monotonic()
        fast, reader = login(port)
        with fast:
            for sequence in range(6):
                started = time.monotonic()
                if sequence % 2:
                    fast.sendall(frame("23", sequence, language="001", transaction_date=DATE, AO="MAIN", AA=JANE,
                                       AC="", AD=PIN))  # fmt: skip
                else:
                    fast.sendall(frame("99", sequence, status_code="0", max_print_width="080", protocol_version="2.00"))
                reply = reader.frame(timeout=5.0)
                assert reply is not None and reply[:2] in (b"98", b"24")
                assert time.monotonic() - started < 1.0, "another terminal's request waited for the stalled one"
        assert time.monotonic() - began < 2.5  # all of it while the checkout was still stalled
        reply = slow_reader.frame(timeout=10.0)
        assert reply is not None and reply.startswith(b"121"), reply
    assert_clean_log(daemon)
    daemon.stop()


# -------------------------------------------------------------------------------------------------
# Terminals that vanish in the middle of a checkout


def test_a_disconnect_mid_checkout_leaves_the_item_out_or_in_never_half(tmp_path):
    daemon = start(tmp_path, server=server_settings())
    port = daemon.port("raw")
    database = tmp_path / "e2e.sqlite3"
    for round_ in range(40):
        sock, _reader = login(port)
        sock.sendall(checkout(round_) if round_ % 2 == 0 else checkin(round_))
        if round_ % 3 == 0:  # some vanish with a reset rather than a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        if round_ % 10 == 9:
            check_item_consistent(database)
    ask(port, PROBE, b"98")  # the daemon is still serving
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the last transaction may still be committing
        if check_item_consistent(database) is not None:
            break
        time.sleep(0.1)
    assert_clean_log(daemon)
    daemon.stop()


def check_item_consistent(database: Path) -> bool | None:
    """The item's status agrees with its loans: charged with exactly one open loan (to Jane), or
    not charged with none. Returns whether it is out."""
    uri = f"file:{database}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None)) as db:
        db.execute("BEGIN")  # one snapshot for both reads: the daemon keeps committing meanwhile
        status, item_id = db.execute("SELECT status, id FROM items WHERE barcode = ?", (ITEM,)).fetchone()
        loans = db.execute(
            "SELECT p.barcode FROM loans l JOIN patrons p ON p.id = l.patron_id"
            " WHERE l.item_id = ? AND l.returned IS NULL",
            (item_id,),
        ).fetchall()
        db.execute("COMMIT")
    if status == "charged":
        assert loans == [(JANE,)], (status, loans)
        return True
    assert loans == [], (status, loans)
    return False


# -------------------------------------------------------------------------------------------------
# SIGTERM


def refused(port: int) -> bool:
    try:
        connect(port, timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_stops_accepting_answers_requests_in_flight_and_exits(tmp_path):
    data = slow_config(tmp_path, delay=4.0)
    data["backends"]["embedded"]["mark"] = str(tmp_path / "checkouts")
    daemon = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    port = daemon.port("raw")
    sock, reader = login(port)
    with sock:
        sock.sendall(checkout())
        deadline = time.monotonic() + 10
        while not (tmp_path / "checkouts").exists():  # the checkout is now waiting on the backend, for 4 s
            assert time.monotonic() < deadline, "the checkout never reached the backend"
            time.sleep(0.02)
        daemon.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while not refused(port):
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        # the port closed while the checkout was still in flight, not when the reactor stopped
        assert not reader.buffer and not select.select([sock], [], [], 0)[0], "closed only after the drain"
        reply = reader.frame(timeout=10.0)
        assert reply is not None and reply.startswith(b"121"), reply  # the checkout in flight was answered
    daemon.process.wait(15)
    assert daemon.process.returncode == 0, daemon.log()[-2000:]  # a drained stop is a clean exit
    assert "unanswered" not in daemon.log()
    assert_clean_log(daemon)
    daemon.stop()


# -------------------------------------------------------------------------------------------------
# What one client can make the daemon hold (before and after login). Each attack runs against a
# real daemon; the daemon's own bounds are asserted in the unit tests (test_transport_*, and
# test_passwordchecks), and here its memory is checked coarsely: far below what the attack grew
# it by without them (see docs/performance.md).

RSS_MARGIN = 48 * 1024 * 1024  # generous: the daemon's bounds are ~150 KB per connection


def send_until_blocked(sock: socket.socket, data: bytes, blocked_for: float = 2.0, within: float = 40.0) -> int:
    """Send ``data`` again and again without reading; returns the bytes sent once every send has
    been refused for ``blocked_for`` seconds: the daemon stopped reading us. Fails after
    ``within`` seconds of sends still going through."""
    sock.setblocking(False)
    sent, blocked_since, view = 0, None, memoryview(data)
    deadline = time.monotonic() + within
    while True:
        now = time.monotonic()
        try:
            n = sock.send(view)
            view = view[n:] if n < len(view) else memoryview(data)
            sent += n
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or now
            if now - blocked_since >= blocked_for:
                return sent
            time.sleep(0.01)
        assert now < deadline, f"still reading us after {within:g} s ({sent} bytes)"


def small_buffers(sock: socket.socket) -> socket.socket:
    """A client whose own kernel buffers are small, so that the daemon's bound shows sooner."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return sock


def test_a_client_that_never_reads_its_replies_is_not_read_and_costs_no_memory(tmp_path):
    daemon = start(tmp_path, server=server_settings())
    port = daemon.port("raw")
    before = daemon.rss()
    sock = small_buffers(socket.socket())
    sock.connect(("127.0.0.1", port))
    with sock:
        sock.sendall(LOGIN)
        sent = send_until_blocked(sock, b"9900302.00\r" * 1000)
        assert daemon.rss() - before < RSS_MARGIN, (daemon.rss() - before, sent)
        ask(port, PROBE, b"98")  # the others are served meanwhile
        sock.setblocking(True)
        sock.settimeout(5)
        received = 0
        while received < 1_000_000:  # it reads our replies again: the daemon reads us again
            received += len(sock.recv(65536))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            assert sock.send(b"9900302.00\r" * 100) > 0
    assert_clean_log(daemon)
    daemon.stop()


def telnet_socket(port: int) -> socket.socket:
    sock = small_buffers(socket.socket())
    sock.connect(("127.0.0.1", port))
    sock.settimeout(5)
    assert b"login: " in sock.recv(1024)
    return sock


def test_a_telnet_client_negotiating_without_reading_is_not_read_and_costs_no_memory(tmp_path):
    daemon = start(tmp_path, server=server_settings())
    before = daemon.rss()
    with telnet_socket(daemon.port("telnet")) as sock:
        send_until_blocked(sock, b"".join(b"\xff" + bytes([verb, option]) for verb in (251, 252, 253, 254)
                                          for option in range(40, 200)))  # fmt: skip
        assert daemon.rss() - before < RSS_MARGIN, daemon.rss() - before
        ask(daemon.port("raw"), PROBE, b"98")
    assert_clean_log(daemon)
    daemon.stop()


def test_an_endless_telnet_subnegotiation_is_closed_and_costs_no_memory(tmp_path):
    daemon = start(tmp_path, server=server_settings())
    before = daemon.rss()
    with telnet_socket(daemon.port("telnet")) as sock:
        sent = 0
        try:
            sock.sendall(b"\xff\xfa\x18")  # IAC SB TERMINAL-TYPE, and never IAC SE
            while sent < 64 * 1024 * 1024:
                sock.sendall(bytes(range(1, 255)) * 64)
                sent += 254 * 64
        except OSError:  # reset: the daemon closed it
            pass
        else:
            raise AssertionError("64 MB of one subnegotiation and the connection is still open")
        assert sent < 8 * 1024 * 1024  # closed after the first kilobyte, up to the kernel's buffers
    daemon.wait_for_log("telnet subnegotiation longer than 1024 bytes")
    assert daemon.rss() - before < RSS_MARGIN, daemon.rss() - before
    ask(daemon.port("raw"), PROBE, b"98")
    assert_clean_log(daemon)
    daemon.stop()


def scrypt_accounts(data: dict) -> dict:
    """The test accounts with real scrypt hashes instead of plain: ones, plus ``vendor``: a known
    terminal at 127.0.0.2 only."""
    from sipserver.accounts.passwords import hash_password

    for account in data["accounts"]:
        account["password"] = hash_password(account["password"].removeprefix("plain:"))
    data["accounts"].append({"login": "vendor", "password": hash_password("vendorpass"), "institution": "MAIN",
                             "allow_from": ["127.0.0.2/32"]})  # fmt: skip
    return data


def login_frame(login: str, password: str) -> bytes:
    return frame("93", 0, CN=login, CO=password)


def test_parallel_guesses_from_one_address_get_no_more_checks_than_the_lockout_allows(tmp_path):
    data = scrypt_accounts(config_data(tmp_path, server=server_settings(
        lockout={"failures": 5, "window": 60, "duration": 300})))  # fmt: skip
    daemon = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    port = daemon.port("raw")
    guesses = open_many(port, ["127.0.0.9"] * 300)
    for i, sock in enumerate(guesses):  # each on its own connection, all at once, the right one among them
        sock.sendall(login_frame("sco", "scpass" if i == 150 else f"guess{i}"))
    replies = []
    for sock in guesses:
        with sock:
            replies.append(Reader(sock).frame(timeout=30.0))
    log = daemon.log()
    daemon.stop()
    assert all(r is not None and r.startswith(b"940") for r in replies), "a guess got in"
    assert log.count("reason=wrong_password") == 5  # checked: the lockout's failures, not 300
    assert log.count("reason=locked_out") + log.count("reason=busy") == 295
    assert "login ok" not in log
    assert_clean_log(daemon)


def test_a_known_terminal_logs_in_next_during_a_flood_of_1500_wrong_logins(tmp_path):
    # 1,500 wrong logins from 300 addresses (unknown names, and the vendor's login where it may not
    # log in), 5 from each: as many as the lockout lets an address have checked. Then the vendor's
    # terminal logs in from its own address. Its check runs next: only the checks already running
    # finish before it (a first-come queue put it behind the whole flood, ~40 s of scrypt).
    data = scrypt_accounts(config_data(tmp_path, server=server_settings(
        lockout={"failures": 5, "window": 60, "duration": 300})))  # fmt: skip
    daemon = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    port = daemon.port("raw")
    flood = []
    try:
        # Connected first, so that the guesses all arrive at once.
        flood = open_many(port, [f"127.0.{1 + i % 300 // 250}.{1 + i % 300 % 250}" for i in range(1500)])
        for i, sock in enumerate(flood):
            sock.sendall(login_frame("vendor" if i % 3 == 0 else f"nobody{i}", f"wrong{i}"))
        deadline = time.monotonic() + 30
        while daemon.log().count("reason=busy") < 1000:  # the queue is full and the flood all read
            assert time.monotonic() < deadline, daemon.log()[-2000:]
            time.sleep(0.05)
        terminal = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=("127.0.0.2", 0))
        with terminal:
            terminal.sendall(login_frame("vendor", "vendorpass"))
            reply = Reader(terminal).frame(timeout=60.0)
        assert reply is not None and reply.startswith(b"941"), reply
    finally:
        for sock in flood:
            sock.close()
    log = daemon.log()
    daemon.stop()
    arrived = log.index("connection opened listener=raw peer=127.0.0.2")
    meanwhile = log[arrived : log.index("login ok listener=raw peer=127.0.0.2 login=vendor")]
    hashed = ("unknown_login", "wrong_password", "address_not_allowed")
    checked = sum(meanwhile.count(f"reason={why}") for why in hashed)
    assert checked <= 4, checked  # the two running when it came, and one beside it at most
    assert log.count("reason=busy") >= 1000  # the queue stayed bounded: the rest was refused unchecked
    assert_clean_log(daemon)


# -------------------------------------------------------------------------------------------------
# The HTTP status listener


def peer_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_flood_of_idle_status_connections_never_costs_a_terminal_its_login(tmp_path):
    data = config_data(tmp_path, server=server_settings())
    data["http"] = {"endpoint": "tcp:0:interface=127.0.0.1", "max_connections": 16, "timeout": 2}
    # 300 descriptors in all: the flood below would take every one of them without a cap.
    daemon = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log", nofile=300).wait_ready(2)
    flood: list[socket.socket] = []
    try:
        for _ in range(400):
            sock = socket.create_connection(("127.0.0.1", daemon.port("http")), timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: sip\r\n")  # never finished
            flood.append(sock)
        ask(daemon.port("raw"), PROBE, b"98")  # a terminal logs in and is answered
        with SIPClient("127.0.0.1", daemon.port("telnet"), transport="telnet") as client:
            assert client.telnet_login("telnet", "telnetpass")
        deadline = time.monotonic() + 10
        while sum(1 for s in flood if not peer_closed(s)) > 16:  # the status page kept its 16
            assert time.monotonic() < deadline, sum(1 for s in flood if not peer_closed(s))
            time.sleep(0.1)
        deadline = time.monotonic() + 15
        while not all(peer_closed(s) for s in flood):  # and closed those after http.timeout
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port('http')}/metrics", timeout=5) as page:
            metrics = page.read().decode()
        refused = int(re.search(r"^sip_http_connections_refused_total (\d+)$", metrics, re.M).group(1))
        assert refused >= 200  # most of the flood was closed at once (slots free again after http.timeout)
    finally:
        for sock in flood:
            sock.close()
        daemon.stop()
    assert_clean_log(daemon)


# -------------------------------------------------------------------------------------------------
# SIGTERM under a circulation load, on both backends: every committed transaction had its reply


LOAD_PATRONS = [f"2900000000{i:04d}" for i in range(8)]
LOAD_ITEMS = [f"3900000000{i:04d}" for i in range(8)]


def load_data(path: Path) -> Path:
    data = {
        "patrons": [{"barcode": b, "name": f"Loader {i}", "expires": "2099-12-31"} for i, b in enumerate(LOAD_PATRONS)],
        "items": [{"barcode": b, "title": f"Busy {i}", "owner": "MAIN"} for i, b in enumerate(LOAD_ITEMS)],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def circulate(port: int, patron: str, item: str, replies: list[tuple[str, bool]]) -> None:
    """One terminal checking its own item out and in, one request at a time, until the server
    closes the connection; each reply is recorded as (request, ok)."""
    sock, reader = login(port)
    with sock:
        for sequence in range(100_000):
            if sequence % 2 == 0:
                request, data = "checkout", frame("11", sequence, sc_renewal_policy=True, no_block=False,
                                                  transaction_date=DATE, nb_due_date=DATE, AO="MAIN", AA=patron,
                                                  AB=item, AC="")  # fmt: skip
            else:
                request, data = "checkin", frame("09", sequence, no_block=False, transaction_date=DATE,
                                                 return_date=DATE, AP="MAIN", AO="MAIN", AB=item, AC="")  # fmt: skip
            try:
                sock.sendall(data)
            except OSError:
                return
            reply = reader.frame(timeout=30.0)
            if reply is None:
                return
            replies.append((request, reply[2:3] == b"1"))


def sigterm_under_load(tmp_path: Path, backend: dict[str, object], audit) -> None:
    data = config_data(tmp_path, server=server_settings(), backends={"embedded": backend})
    config = write_config(tmp_path, data)
    daemon = Daemon(config, tmp_path / "daemon.log").wait_ready(2)
    try:
        daemon.wait_for_log("backend embedded ready")
        loaded = subprocess.run([SIPSERVER, "load", "--config", str(config), str(load_data(tmp_path / "load.yaml"))],
                                capture_output=True, text=True, timeout=60, cwd=str(ROOT))  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr
        port = daemon.port("raw")
        replies: list[list[tuple[str, bool]]] = [[] for _ in LOAD_ITEMS]
        terminals = [threading.Thread(target=circulate, args=(port, patron, item, replies[i]), daemon=True)
                     for i, (patron, item) in enumerate(zip(LOAD_PATRONS, LOAD_ITEMS, strict=True))]  # fmt: skip
        for terminal in terminals:
            terminal.start()
        deadline = time.monotonic() + 30
        while min(len(r) for r in replies) < 10:  # every terminal busy
            assert time.monotonic() < deadline, [len(r) for r in replies]
            time.sleep(0.02)
        daemon.signal(signal.SIGTERM)
        daemon.process.wait(30)
        for terminal in terminals:
            terminal.join(30)
        assert not any(t.is_alive() for t in terminals), "a terminal was never told the server closed"
    finally:
        daemon.stop()
    assert daemon.process.returncode == 0, daemon.log()[-3000:]
    assert "unanswered" not in daemon.log()
    assert_clean_log(daemon)
    for item, received in zip(LOAD_ITEMS, replies, strict=True):
        # Each audit row is a committed transaction (the row commits with it): the same ones, in
        # the same order and with the same outcomes, as the replies the terminal got.
        committed = [(request, outcome == "ok") for request, outcome in audit(item)]
        assert committed == received, (item, len(committed), len(received))


def test_sigterm_under_load_on_sqlite_sends_every_committed_reply_and_exits_0(tmp_path):
    database = tmp_path / "e2e.sqlite3"

    def audit(item: str) -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(
                "SELECT request, outcome FROM audit_log WHERE item = ? AND request IN ('checkout', 'checkin')"
                " ORDER BY id",
                (item,),
            ).fetchall()

    sigterm_under_load(tmp_path, {"type": "sqlite", "path": str(database), "seed": str(DEMO_DATA)}, audit)


@pytest.mark.postgresql
def test_sigterm_under_load_on_postgresql_sends_every_committed_reply_and_exits_0(tmp_path, pg_demo_template):
    with pg.temporary_database(pg_demo_template) as dbname:

        def audit(item: str) -> list[tuple[str, str]]:
            with pg.admin(pg.dsn_for(dbname)) as cur:
                cur.execute(
                    "SELECT request, outcome FROM audit_log WHERE item = %s AND request IN ('checkout', 'checkin')"
                    " ORDER BY id",
                    (item,),
                )
                return cur.fetchall()

        backend = {"type": "postgresql", "dsn": pg.dsn_for(dbname), "pool": {"min": 2, "max": 6}}
        sigterm_under_load(tmp_path, backend, audit)


# -------------------------------------------------------------------------------------------------
# Workers


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_both_answer_and_sigterm_stops_them_all(tmp_path):
    daemon = start(tmp_path, server=server_settings(workers=2))
    port = daemon.port("raw")
    daemon.wait_for_log("worker 1 (pid", timeout=20)
    child = int(re.search(r"worker 1 started \(pid (\d+)\)", daemon.log()).group(1))
    assert alive(child)
    for sequence in range(8):  # dealt out in turn: both processes get some
        reply = ask(port, frame("99", sequence, status_code="0", max_print_width="080", protocol_version="2.00"), b"98")
        assert reply.startswith(b"98Y")
    deadline = time.monotonic() + 10
    while not ("worker=0" in daemon.log() and "worker=1" in daemon.log()):
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        time.sleep(0.05)
    daemon.signal(signal.SIGTERM)
    daemon.process.wait(20)
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "worker still running after the parent stopped"
        time.sleep(0.05)
    assert refused(port)
    assert_clean_log(daemon)
    daemon.stop()


def test_a_worker_whose_parent_dies_stops(tmp_path):
    daemon = start(tmp_path, server=server_settings(workers=2))
    daemon.wait_for_log("worker 1 (pid", timeout=20)
    child = int(re.search(r"worker 1 started \(pid (\d+)\)", daemon.log()).group(1))
    daemon.process.kill()  # no chance to forward anything
    daemon.process.wait(10)
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "orphaned worker kept running"
        time.sleep(0.05)
    daemon.stop()
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
