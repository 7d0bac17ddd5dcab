"""Start and stop the servers ``bench/load.py`` measures: ours under ``twistd`` and the pysip2 baseline.

Each server is a separate process, optionally pinned to a set of CPUs, listening on loopback on a
port chosen here. Our daemon writes its log to a file beside its config (``logging.level: info``
and text by default, as sites run it: one line per exchange).
:meth:`Server.rss` and :meth:`Server.cpu` add up the process and its children (the workers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
DEMO_DATA = ROOT / "etc" / "demo-data.yaml"
LOGIN, PASSWORD = "bench", "benchpass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def status_kb(pid: int, key: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process listening on ``port``."""

    name = "server"

    def __init__(
        self,
        argv: list[str],
        port: int,
        cpus: set[int] | None,
        log: Path,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)

        def pin() -> None:
            os.setpgrp()  # its own group: stop() can end it and its workers together
            # None: every CPU (not the generator's own pinning, which a child would inherit)
            os.sched_setaffinity(0, cpus or range(os.cpu_count() or 1))

        self.process = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            preexec_fn=pin,
        )

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def rss_kb(self) -> int:
        return sum(status_kb(pid) for pid in self.pids())

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def wait_ready(self, probe: bytes, timeout: float = 60.0) -> Server:
        """Until the server answers ``probe`` on its port (or fails loudly)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(probe)
                    if s.recv(4096).endswith(b"\r"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's process group; SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()


class OurServer(Server):
    name = "sipserver"

    def __init__(
        self,
        workdir: Path,
        *,
        cpus: set[int] | None,
        workers: int = 1,
        level: str = "info",
        log_format: str = "text",
        console: bool = False,
        **config: Any,
    ) -> None:
        port = free_port()
        self.log_file = workdir / f"sipserver-{port}.log"
        data = bench_config(workdir, port, workers=workers, level=level, log_format=log_format, **config)
        if console:  # the operator's console on: its books kept for every exchange (sipserver.observe.console)
            from sipserver.accounts.passwords import hash_password

            data["http"] = {"endpoint": f"tcp:{free_port()}:interface=127.0.0.1"}
            data["console"] = {"admins": [{"login": "bench", "password": hash_password("bench")}]}
        path = workdir / f"sip-{port}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        self.config_path = path
        super().__init__(
            [TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(path)],
            port,
            cpus,
            workdir / f"sipserver-{port}.out",
        )

    def log(self) -> str:
        """Its stdout and stderr (before logging starts), then the end of its log file."""
        lines = self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""
        return super().log() + lines


class _ScriptServer(Server):
    """A server run from a script of this folder that takes ``--port``."""

    script = ""

    def __init__(self, workdir: Path, *, cpus: set[int] | None) -> None:
        port = free_port()
        super().__init__(
            [sys.executable, str(ROOT / "bench" / self.script), "--port", str(port)],
            port,
            cpus,
            workdir / f"{self.name}-{port}.log",
        )


class Pysip2Server(_ScriptServer):
    name = "pysip2"
    script = "pysip2_baseline.py"


class FloorServer(_ScriptServer):
    name = "floor"
    script = "floor_server.py"


def bench_config(
    workdir: Path, port: int, *, workers: int = 1, level: str = "info", log_format: str = "text", **server: Any
) -> dict:
    """Our daemon as the benchmark runs it: embedded backend with the demo data, its log to a file
    (at ``info``, the default, one line per exchange)."""
    from sipserver.accounts.passwords import hash_password

    return {
        "server": {"name": "bench", "workers": workers, "max_connections": 10100, "login_timeout": 600,
                   "idle_timeout": 3600, **server},
        "logging": {"level": level, "format": log_format, "destination": "file",
                    "file": str(workdir / f"sipserver-{port}.log")},
        "listeners": [
            {"name": "raw", "transport": "raw", "status_before_login": True,
             "endpoint": f"tcp:{port}:interface=127.0.0.1:backlog=1024"},
        ],
        "institutions": {"MAIN": {"backend": "embedded", "library_name": "Demo Library"}},
        "accounts": [{"login": LOGIN, "password": hash_password(PASSWORD), "institution": "MAIN",
                      "location": "MAIN-DESK1", "allow_from": ["127.0.0.0/8"]}],
        "backends": {"embedded": {"type": "sqlite", "path": str(workdir / f"bench-{port}.sqlite3"),
                                  "seed": str(DEMO_DATA)}},
    }  # fmt: skip


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="sipbench-")
