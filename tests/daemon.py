"""Run the real daemon for end-to-end tests: ``twistd -n sip -c <config>`` as a subprocess.

Listeners use ``tcp:0`` on loopback; the daemon logs the port each one bound, and the harness reads
those lines, so tests never guess a free port. Every daemon is stopped (SIGTERM, then SIGKILL) when
its test ends, and start-up is bounded in time.
"""

from __future__ import annotations

import copy
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support import DEMO_DATA, ROOT

TWISTD = str(Path(sys.executable).parent / "twistd")
LISTENING = re.compile(
    r"(listener:(?P<name>[\w.-]+)|(?P<http>http))\"?,?.{0,40}?listening on (?P<host>[^\s\"]+):(?P<port>\d+)"
)

ACCOUNTS = [
    {"login": "sco", "password": "plain:scpass", "institution": "MAIN", "location": "MAIN-DESK1",
     "allow_from": ["127.0.0.0/8", "::1/128"]},
    {"login": "telnet", "password": "plain:telnetpass", "institution": "MAIN", "location": "MAIN-TELNET",
     "allow_from": ["127.0.0.0/8", "::1/128"]},
    {"login": "faraway", "password": "plain:farpass", "institution": "MAIN", "allow_from": ["10.0.0.0/8"]},
]  # fmt: skip


def config_data(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"name": "e2e", "login_timeout": 30, "idle_timeout": 60,
                   "lockout": {"failures": 4, "window": 60, "duration": 300}},
        "listeners": [
            {"name": "raw", "transport": "raw", "endpoint": "tcp:0:interface=127.0.0.1", "status_before_login": True},
            {"name": "telnet", "transport": "telnet", "endpoint": "tcp:0:interface=127.0.0.1"},
        ],
        "http": {"endpoint": "tcp:0:interface=127.0.0.1"},
        "institutions": {"MAIN": {"backend": "embedded", "library_name": "E2E Library",
                                  "policy": {"timeout": 5}}},
        "accounts": copy.deepcopy(ACCOUNTS),
        "backends": {"embedded": {"type": "sqlite", "path": str(tmp_path / "e2e.sqlite3"), "seed": str(DEMO_DATA)}},
    }  # fmt: skip
    data.update(changes)
    return data


#: ``server.fast_paths`` in every config :func:`write_config` writes that does not set it; pytest's
#: ``--fast-paths off`` (tests/conftest.py) runs the end-to-end tests on the plain, slower paths.
FAST_PATHS = True


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    if not FAST_PATHS and "fast_paths" not in (data.get("server") or {}):
        data = {**data, "server": {**(data.get("server") or {}), "fast_paths": False}}
    path = tmp_path / "sip.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


class Daemon:
    """A running ``twistd sip``; ``port("raw")`` is where a listener is. Its stdout and stderr go to
    ``log``; ``log_file`` is where its log lines are when the config sends them elsewhere (a
    ``destination: file``, or a syslog socket read by the test), and what :meth:`log` reads."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
        *,
        log_file: Path | None = None,
    ) -> None:
        """``nofile``: the daemon's open-files limit (soft and hard), to run it out of descriptors."""
        self.config = config
        self.output_path = log
        self.log_path = log_file or log
        self.ports: dict[str, int] = {}
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)

        def limit() -> None:
            if nofile is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=env,
            preexec_fn=limit if nofile is not None else None,
        )

    def rss(self) -> int:
        """The daemon's resident memory now, in bytes (Linux)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def wait_ready(self, listeners: int, timeout: float = 30.0) -> Daemon:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for match in LISTENING.finditer(self.log()):
                self.ports[match.group("name") or "http"] = int(match.group("port"))
            if len([n for n in self.ports if n != "http"]) >= listeners and "backend" in self.log():
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def port(self, name: str) -> int:
        return self.ports[name]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output(self) -> str:
        """What the daemon wrote on stdout and stderr."""
        return self.output_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


def run_to_exit(config: Path, timeout: float = 30.0, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``twistd sip`` expecting it to stop by itself (bad config, port in use, --check)."""
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )


def open_many(port: int, sources: list[str], within: float = 30.0) -> list[socket.socket]:
    """One connection from each source address, opened 40 at a time with a pause for the daemon to
    accept them: the listener's backlog is 50, and a SYN past it is retried only a second later."""
    socks: list[socket.socket] = []
    deadline = time.monotonic() + within
    for first in range(0, len(sources), 40):
        poller = select.poll()
        pending = {}
        for source in sources[first : first + 40]:
            sock = socket.socket()
            sock.bind((source, 0))
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
            pending[sock.fileno()] = sock
            poller.register(sock, select.POLLOUT)
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} connections not made"
            for fd, _event in poller.poll(500):
                assert pending.pop(fd).getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                poller.unregister(fd)
        time.sleep(0.03)
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(30)
    return socks
