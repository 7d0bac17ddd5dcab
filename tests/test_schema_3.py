"""Schema 3 adds a patron's internet privileges (64's PI): a database of schema 2 migrates on both
embedded backends and keeps its patrons, who have none yet; a data file sets them."""

from __future__ import annotations

import sqlite3

import pytest

from sipserver.ils.embedded import schema
from sipserver.ils.embedded.db.dialect import POSTGRESQL, SQLITE, Tx
from sipserver.ils.embedded.loader import load_file
from sipserver.ils.embedded.postgresql import PostgreSQLBackend
from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.ils.interface import PatronRequest, Terminal
from tests import pg
from tests.test_backend_support import result_of

DATA = 'patrons:\n  - {barcode: "P", name: Pat, internet_privileges: Filtered}\n'


def _schema_2(tx: Tx, dialect) -> None:
    for migration in schema.migrations()[:2]:
        for statement in migration.statements():
            tx.execute(dialect.ddl(statement))
        tx.execute(
            "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, 'x')",
            (migration.version, migration.name),
        )
    tx.execute("INSERT INTO patrons (barcode, pin_hash, name) VALUES ('P', '', 'Pat')")


def _check(backend, tmp_path) -> None:
    assert schema.code_version() >= 3
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="MAIN"), patron="P", pin=None))
        ).internet_privileges
        == ""
    )
    (tmp_path / "data.yaml").write_text(DATA)
    result_of(load_file(backend, str(tmp_path / "data.yaml")))
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="MAIN"), patron="P", pin=None))
        ).internet_privileges
        == "Filtered"
    )


def test_a_schema_2_sqlite_database_migrates_and_keeps_its_patrons(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    _schema_2(Tx(conn.cursor(), SQLITE), SQLITE)
    conn.close()
    backend = SQLiteBackend(name="t", options={"path": str(path)}, threaded=False)
    result_of(backend.start())  # the embedded backend migrates on start
    _check(backend, tmp_path)
    result_of(backend.stop())


@pytest.mark.postgresql
def test_a_schema_2_postgresql_database_is_migrated_by_sipserver_migrate(tmp_path):
    pg.require()
    with pg.temporary_database() as name:
        with pg.admin(pg.dsn_for(name)) as cur:
            _schema_2(Tx(cur, POSTGRESQL), POSTGRESQL)
        backend = PostgreSQLBackend(name="central", options={"dsn": pg.dsn_for(name), "synchronous": True})
        assert f"schema version 2, this sipserver needs {schema.code_version()}" in str(_failure(backend.start()))
        assert result_of(backend.migrate()) == schema.code_version()
        result_of(backend.start())
        _check(backend, tmp_path)
        backend.stop()


def _failure(d):
    out = []
    d.addErrback(lambda f: out.append(f.value))
    assert out
    return out[0]
