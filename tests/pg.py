"""PostgreSQL for the tests: temporary databases on a real server, and a throwaway cluster.

The server is ``$SIPSERVER_TEST_PG`` (a libpq URI of a role that may create databases), by default
``postgresql://postgres@127.0.0.1:5432/postgres``. When it cannot be reached the PostgreSQL tests
are skipped with the reason, except under ``CI=true``, where they fail: CI must run them.

Every database made here is named ``sipserver_test_<pid>_<n>`` and dropped (its connections
terminated first) by the fixture that made it; :func:`drop_leftovers` removes those of dead test
runs. A migrated database holding the demo data is made once per run and copied with
``CREATE DATABASE ... TEMPLATE``, which takes a few milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - skipped (or failed under CI) by require()
    psycopg2 = None

ADMIN_DSN = os.environ.get("SIPSERVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "sipserver_test_"
_names = itertools.count(1)
_status: dict[str, Any] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unreachable_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can (the answer is cached)."""
    if "reason" not in _status:
        if psycopg2 is None:
            _status["reason"] = "psycopg2 is not installed"
        else:
            try:
                psycopg2.connect(ADMIN_DSN, connect_timeout=3).close()
                _status["reason"] = None
            except psycopg2.Error as exc:
                _status["reason"] = f"PostgreSQL not reachable at {ADMIN_DSN}: {' '.join(str(exc).split())}"
    return _status["reason"]


def require() -> None:
    """Skip the calling test when PostgreSQL is not reachable; under CI=true, fail instead."""
    reason = unreachable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def dsn_for(dbname: str, admin: str = ADMIN_DSN) -> str:
    parts = psycopg2.extensions.parse_dsn(admin)
    parts["dbname"] = dbname
    return psycopg2.extensions.make_dsn(**parts)


@contextlib.contextmanager
def admin(dsn: str = ADMIN_DSN) -> Iterator[Any]:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def new_name() -> str:
    return f"{PREFIX}{os.getpid()}_{next(_names)}"


def create_database(template: str | None = None, admin_dsn: str = ADMIN_DSN) -> str:
    name = new_name()
    with admin(admin_dsn) as cur:
        if template:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            cur.execute(f'CREATE DATABASE "{name}"')
    return name


def terminate(dbname: str, admin_dsn: str = ADMIN_DSN) -> int:
    """pg_terminate_backend every connection to ``dbname`` (but our own); how many there were."""
    with admin(admin_dsn) as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        return int(cur.fetchone()[0])


def drop_database(dbname: str, admin_dsn: str = ADMIN_DSN) -> None:
    deadline = time.monotonic() + 10
    while True:
        terminate(dbname, admin_dsn)
        try:
            with admin(admin_dsn) as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            return
        except psycopg2.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def drop_leftovers(admin_dsn: str = ADMIN_DSN) -> None:
    """Drop test databases left by runs whose process is gone (a run killed before its cleanup)."""
    with admin(admin_dsn) as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",))
        names = [r[0] for r in cur.fetchall()]
    for name in names:
        pid = name[len(PREFIX) :].split("_")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            drop_database(name, admin_dsn)


@contextlib.contextmanager
def temporary_database(template: str | None = None, admin_dsn: str = ADMIN_DSN) -> Iterator[str]:
    """A new database (a copy of ``template`` when given), dropped afterwards; yields its name."""
    name = create_database(template, admin_dsn)
    try:
        yield name
    finally:
        drop_database(name, admin_dsn)


def sync_backend(dbname: str, *, seed: str | None = None, clock: Any = None, **options: Any) -> Any:
    """A started synchronous PostgreSQL backend on ``dbname`` (its Deferreds fire on return)."""
    from sipserver.ils.embedded.postgresql import PostgreSQLBackend
    from tests.test_backend_support import result_of

    opts: dict[str, Any] = {"dsn": dsn_for(dbname), "synchronous": True, **options}
    if seed:
        opts["seed"] = seed
    backend = PostgreSQLBackend(name="embedded", options=opts, clock=clock)
    result_of(backend.start())
    return backend


def migrate_and_seed(dsn: str, data_file: str | None = None) -> None:
    """Migrate the database at ``dsn`` and load ``data_file`` into it when it is empty."""
    from sipserver.ils.embedded.postgresql import PostgreSQLBackend
    from tests.test_backend_support import result_of

    options: dict[str, Any] = {"dsn": dsn, "synchronous": True}
    if data_file:
        options["seed"] = data_file
    backend = PostgreSQLBackend(name="setup", options=options)
    try:
        result_of(backend.migrate())
        result_of(backend.start())
    finally:
        backend.stop()


def migrated_database(data_file: str | None = None, admin_dsn: str = ADMIN_DSN) -> str:
    """A new database, migrated, holding ``data_file`` when given (the caller drops it)."""
    name = create_database(None, admin_dsn)
    migrate_and_seed(dsn_for(name, admin_dsn), data_file)
    return name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / tool).exists():
            return str(folder / tool)
    return tool


def _as_postgres(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL server tool as the ``postgres`` OS user when we are root (root cannot run it)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False)


class ThrowawayCluster:
    """A PostgreSQL cluster of our own in a temporary folder, on a free loopback port.

    ``start()``/``stop()`` as often as a test needs; ``destroy()`` (always call it, e.g. in a
    ``finally``) stops it at once and removes the folder.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sipserver-pgcluster-"))
        self.data = self.folder / "data"
        self.logfile = self.folder / "server.log"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        result = _as_postgres(
            _pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        if result.returncode != 0:
            self.destroy()
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n"
                "fsync = off\nmax_connections = 40\nshared_buffers = 16MB\n"
            )

    def start(self) -> None:
        result = _as_postgres(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "30", "start"
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        result = _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {result.stdout}{result.stderr}")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def destroy(self) -> None:
        try:
            if self.running():
                _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
