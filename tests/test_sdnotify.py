"""systemd's readiness protocol, spoken to a datagram socket as systemd listens for it."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from sipserver.client import SIPClient
from sipserver.daemon import sdnotify
from sipserver.tap import Options
from tests.daemon import Daemon, config_data, write_config


def notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    return sock


def messages(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """Datagrams received until one contains ``until`` (bounded by ``timeout``)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(until in message for message in seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {until!r} within {timeout}s: {seen}"
        sock.settimeout(remaining)
        seen.append(sock.recv(4096).decode())
    return seen


def test_notify_is_silent_outside_systemd_and_reaches_an_abstract_socket():
    assert sdnotify.notify("READY=1", environ={}) is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "relative/path"}) is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0sipserver-test-{time.monotonic_ns()}")
        name = sock.getsockname()
        name = name.decode() if isinstance(name, bytes) else name
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name[1:]}) is True
        sock.settimeout(5)
        assert sock.recv(100) == b"READY=1"


def test_the_daemon_says_ready_once_its_listeners_accept_and_stopping_on_sigterm(tmp_path):
    data = config_data(tmp_path)
    data["server"]["workers"] = 2
    with notify_socket(tmp_path) as sock:
        daemon = Daemon(
            write_config(tmp_path, data), tmp_path / "daemon.log", env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        )
        try:
            ready = messages(sock, "READY=1")
            assert ready == [f"READY=1\nMAINPID={daemon.process.pid}"]  # the parent alone, once
            daemon.wait_ready(2, timeout=0.5)  # every listener had logged its port before READY=1
            with SIPClient("127.0.0.1", daemon.port("raw")) as client:
                assert client.login("sco", "scpass")
            daemon.signal(signal.SIGTERM)
            assert messages(sock, "STOPPING=1") == ["STOPPING=1"]
            daemon.process.wait(15)
        finally:
            daemon.stop()


@pytest.mark.parametrize("name", ["SIGHUP", "SIGUSR1"])
def test_reload_and_reopen_signals_are_ignored_from_the_options_on_until_their_handlers_exist(tmp_path, name):
    path = write_config(tmp_path, config_data(tmp_path))
    number = getattr(signal, name)
    before = signal.getsignal(number)
    try:
        Options().parseOptions(["--config", str(path)])
        assert signal.getsignal(number) is signal.SIG_IGN
    finally:
        signal.signal(number, before)
