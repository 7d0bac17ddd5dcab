"""The WAL-index header as the patron cache's change stamp: it moves on every commit, any process's."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from sipserver.ils.embedded.db.sqlite_commits import HEADER_SIZE, WalHeader
from tests.test_backend_patroncache import lookup
from tests.test_backend_support import make_backend


def wal_database(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    return conn


def tear(database) -> None:
    """Make the header's two copies differ, as a commit halfway through writing them leaves them."""
    with open(f"{database}-shm", "r+b") as shm:
        shm.seek(HEADER_SIZE + 8)  # the second copy's change counter
        shm.write(b"\xff\xff\xff\xff")


def test_the_header_moves_on_every_commit_and_only_then(tmp_path):
    path = str(tmp_path / "t.db")
    conn = wal_database(path)
    header = WalHeader.open(path)
    assert header is not None
    before = header.read()
    assert before is not None and len(before) == HEADER_SIZE
    conn.execute("SELECT count(*) FROM t").fetchall()
    assert header.read() == before  # a read changes nothing
    conn.execute("INSERT INTO t VALUES (1)")
    after = header.read()
    assert after is not None and after != before
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("INSERT INTO t VALUES (2)")  # a commit into a reset WAL, frame 1 again
    assert header.read() not in (before, after)
    header.close()


def test_no_header_without_wal_or_with_an_unknown_format(tmp_path):
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)")
    assert WalHeader.open(str(plain)) is None  # rollback journal: no -shm file
    odd = tmp_path / "odd.db"
    (tmp_path / "odd.db-shm").write_bytes(b"\x01" * 2 * HEADER_SIZE)
    assert WalHeader.open(str(odd)) is None
    (tmp_path / "short.db-shm").write_bytes(b"")
    assert WalHeader.open(str(tmp_path / "short.db")) is None


def test_two_copies_that_differ_are_no_answer(tmp_path):
    path = str(tmp_path / "t.db")
    wal_database(path).execute("INSERT INTO t VALUES (1)")
    header = WalHeader.open(path)
    assert header is not None
    tear(path)
    assert header.read() is None
    header.close()


def test_the_backend_stamps_with_the_header_and_falls_back_to_data_version(tmp_path):
    path = tmp_path / "ils.db"
    backend = make_backend(str(path))
    _, seen = backend.change_stamp()
    assert isinstance(seen, bytes)
    tear(path)
    _, seen = backend.change_stamp()
    assert isinstance(seen, int)  # PRAGMA data_version (and sqlite rebuilds its header)
    _, seen = backend.change_stamp()
    assert isinstance(seen, bytes)
    assert not lookup(backend).blocked
    backend.stop()


def test_a_commit_by_another_process_is_seen_by_the_next_lookup(tmp_path):
    path = tmp_path / "ils.db"
    backend = make_backend(str(path))
    assert not lookup(backend).blocked
    assert not lookup(backend).blocked  # remembered
    hits = backend.patron_cache.hits
    script = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        " c.execute(\"UPDATE patrons SET blocked = 1, block_reason = 'desk' WHERE barcode = 'P1'\"); c.commit()"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    patron = lookup(backend)
    assert patron.blocked and patron.block_reason == "desk"
    assert backend.patron_cache.hits == hits  # read from the database, not the cache
    backend.stop()
