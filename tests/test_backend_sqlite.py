"""The sqlite backend's life cycle, threading, errors and schema migrations; the backend factory."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import time
from importlib.metadata import EntryPoint

import pytest
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sipserver.ils import factory
from sipserver.ils.embedded import schema
from sipserver.ils.embedded.db.dialect import POSTGRESQL, SQLITE, Tx, to_format_paramstyle
from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.ils.interface import (
    BackendConfigError,
    BackendUnavailable,
    BlockPatronRequest,
    CheckinRequest,
    CheckoutRequest,
    ILSBackend,
    ItemRequest,
    PatronRequest,
    SummaryRequest,
    Terminal,
)
from tests.test_backend_support import DEMO, FakeClock, ctx, make_backend, result_of, rows


def sync(path, **options):
    return SQLiteBackend(
        name="t", options={"type": "sqlite", "path": str(path), **options}, threaded=False, clock=FakeClock()
    )


def test_it_implements_the_interface(tmp_path):
    assert isinstance(sync(tmp_path / "db"), ILSBackend)


def test_start_creates_and_migrates_a_file_database(tmp_path):
    backend = sync(tmp_path / "ils.db")
    result_of(backend.start())
    versions = rows(backend, "SELECT version FROM schema_version")
    assert [r["version"] for r in versions] == list(range(1, schema.code_version() + 1))
    assert rows(backend, "PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert rows(backend, "PRAGMA foreign_keys")[0]["foreign_keys"] == 1
    result_of(backend.stop())
    again = sync(tmp_path / "ils.db")
    result_of(again.start())  # nothing pending: no error, no row added
    assert len(rows(again, "SELECT version FROM schema_version")) == schema.code_version()


def test_seed_loads_only_into_an_empty_database(tmp_path):
    backend = sync(tmp_path / "ils.db", seed=DEMO)
    result_of(backend.start())
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron="21000000000001", pin="1234"))
        ).name
        == "Jane Doe"
    )
    result_of(backend.block_patron(BlockPatronRequest(terminal=ctx(), patron="21000000000001")))
    result_of(backend.stop())
    again = sync(tmp_path / "ils.db", seed=DEMO)
    result_of(again.start())
    assert result_of(
        again.patron(PatronRequest(terminal=Terminal(institution="X"), patron="21000000000001", pin=None))
    ).blocked  # not overwritten


def test_seed_errors_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("patrons:\n  - {barcode: 123}\n")
    backend = sync(tmp_path / "ils.db", seed=str(bad))
    with pytest.raises(BackendConfigError, match=r"bad.yaml: patrons\[0\].barcode: expected a string"):
        result_of(backend.start())
    assert backend._conn is None
    bad.write_text("patrons:\n  - {barcode: '123'}\n")
    result_of(backend.start())  # fixed: a second start works
    assert (
        result_of(backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron="123", pin=None))) is not None
    )
    with pytest.raises(BackendConfigError, match="data file not found"):
        result_of(sync(tmp_path / "ils2.db", seed=str(tmp_path / "nope.yaml")).start())


def test_a_seed_with_an_impossible_date_or_number_stops_the_start_naming_the_key(tmp_path):
    # A bare ValueError or OverflowError here left the daemon "retrying" a file that cannot change.
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("patrons:\n  - {barcode: X1, expires: 2024-13-45}\n", r"patrons\[0\].expires: expected a date"),
        ("rules:\n  default: {loan_days: 100000000000}\n", r"rules.default.loan_days: expected a whole number"),
    ]:
        bad.write_text(text)
        backend = sync(tmp_path / "ils.db", seed=str(bad))
        with pytest.raises(BackendConfigError, match=f"^{bad}: {message}"):
            result_of(backend.start())


def test_an_unopenable_database_is_unavailable_until_it_can_be_opened(tmp_path):
    backend = sync(tmp_path / "var" / "ils.db")
    with pytest.raises(BackendUnavailable, match=r"sqlite database .*var/ils\.db: unable to open"):
        result_of(backend.start())
    (tmp_path / "var").mkdir()
    result_of(backend.start())  # the service retries start(); now it works
    assert result_of(backend.health()) is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": 3}, "option 'path': expected a file name"),
        ({"threaded": "yes"}, "option 'threaded': expected true or false"),
        ({"busy_timeout": True}, "option 'busy_timeout': expected seconds"),
        ({"seed": ["a"]}, "option 'seed': expected a data file name"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(BackendConfigError, match=message):
        SQLiteBackend(name="t", options={"type": "sqlite", **options})


def test_a_locked_database_is_unavailable(tmp_path):
    backend = sync(tmp_path / "ils.db", busy_timeout=0.05)
    result_of(backend.start())
    other = sqlite3.connect(str(tmp_path / "ils.db"), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(BackendUnavailable, match="locked"):
            result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I1", pin=None)))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert result_of(backend.health()) is True


def test_calls_before_start_or_after_stop_are_unavailable(tmp_path):
    backend = sync(tmp_path / "ils.db")
    with pytest.raises(BackendUnavailable, match="not started"):
        result_of(backend.item(ItemRequest(terminal=Terminal(institution="X"), item="I1")))
    result_of(backend.start())
    result_of(backend.stop())
    assert result_of(backend.health()) is False


def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"))

    def half_then_fail(tx: Tx) -> None:
        tx.execute("UPDATE patrons SET name = 'changed'")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        result_of(backend.run_write(half_then_fail))
    assert {r["name"] for r in rows(backend, "SELECT name FROM patrons")} != {"changed"}


class ThreadedTests(unittest.TestCase):
    """The default mode: SQL in one worker thread, results through the reactor."""

    @defer.inlineCallbacks
    def test_checkout_and_checkin_in_the_worker_thread(self):
        from twisted.internet import reactor

        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "ils.db")
        backend = SQLiteBackend(name="t", options={"type": "sqlite", "path": path, "seed": DEMO}, reactor=reactor)
        yield backend.start()
        self.addCleanup(backend.stop)
        self.assertTrue((yield backend.health()))
        jane = yield backend.patron(
            PatronRequest(
                terminal=Terminal(institution="X"), patron="21000000000001", pin="1234", summary=SummaryRequest()
            )
        )
        self.assertEqual((jane.name, jane.pin_ok, len(jane.charged_items)), ("Jane Doe", True, 2))
        out = yield backend.checkout(
            CheckoutRequest(terminal=ctx(), patron="21000000000001", item="31000000000008", pin="1234")
        )
        self.assertTrue(out.ok)
        back = yield backend.checkin(CheckinRequest(terminal=ctx(), item="31000000000008", branch="MAIN"))
        self.assertEqual(back.patron_barcode, "21000000000001")
        with self.assertRaises(BackendUnavailable):
            yield backend.run_write(lambda tx: tx.execute("SELECT * FROM no_such_table"))

    @defer.inlineCallbacks
    def test_a_write_given_up_by_its_caller_rolls_back(self):
        """The ACS cancels a call at the institution's timeout and tells the terminal it failed:
        the checkout must then not happen behind its back."""
        from twisted.internet import reactor

        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "ils.db")
        options = {"type": "sqlite", "path": path, "seed": DEMO, "inline_writes": False}  # on the worker thread
        backend = SQLiteBackend(name="t", options=options, reactor=reactor)
        yield backend.start()
        self.addCleanup(backend.stop)
        inside, release = threading.Event(), threading.Event()

        def slow_rename(tx: Tx) -> None:
            tx.execute("UPDATE patrons SET name = 'changed' WHERE barcode = '21000000000001'")
            inside.set()
            release.wait(10)

        d = backend.run_write(slow_rename)
        yield deferToThread(inside.wait, 10)
        d.cancel()  # what addTimeout does when the institution's timeout expires
        self.failureResultOf(d, defer.CancelledError)
        release.set()
        yield backend.run_write(lambda tx: None)  # the worker thread has finished the first write
        jane = yield backend.patron(
            PatronRequest(terminal=Terminal(institution="X"), patron="21000000000001", pin=None)
        )
        self.assertEqual(jane.name, "Jane Doe")

    @defer.inlineCallbacks
    def _started(self, **options):
        from twisted.internet import reactor

        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "ils.db")
        backend = SQLiteBackend(
            name="t", options={"type": "sqlite", "path": path, "seed": DEMO, **options}, reactor=reactor
        )
        yield backend.start()
        self.addCleanup(backend.stop)
        return backend, path

    @defer.inlineCallbacks
    def test_writes_run_at_once_on_the_calling_thread(self):
        backend, _ = yield self._started()
        d = backend.checkout(
            CheckoutRequest(terminal=ctx(), patron="21000000000001", item="31000000000008", pin="1234")
        )
        self.assertTrue(result_of(d).ok)  # answered on return: no thread hop
        loans = yield backend.run_read(
            lambda tx: tx.all("SELECT l.id FROM loans l JOIN items i ON i.id = l.item_id"
                              " WHERE i.barcode = '31000000000008' AND l.returned IS NULL")
        )  # fmt: skip
        self.assertEqual(len(loans), 1)
        self.assertEqual(backend._write_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0], 0)
        self.assertEqual(backend._uncheckpointed, 1)
        backend._checkpoint_soon()  # what the LoopingCall does every second: on the worker thread
        self.assertEqual(backend._uncheckpointed, 0)
        yield backend.run_write(lambda tx: None)

    @defer.inlineCallbacks
    def test_a_write_that_finds_the_database_locked_waits_on_the_worker_thread(self):
        backend, path = yield self._started()
        other = sqlite3.connect(path, isolation_level=None)  # another process, in the middle of a write
        other.execute("BEGIN IMMEDIATE")
        d = backend.checkout(
            CheckoutRequest(terminal=ctx(), patron="21000000000001", item="31000000000008", pin="1234")
        )
        self.assertNoResult(d)  # not refused, not done: queued behind the lock
        yield deferToThread(time.sleep, 0.2)
        self.assertNoResult(d)
        other.execute("COMMIT")
        other.close()
        result = yield d
        self.assertTrue(result.ok)
        loans = yield backend.run_read(
            lambda tx: tx.all("SELECT l.id FROM loans l JOIN items i ON i.id = l.item_id"
                              " WHERE i.barcode = '31000000000008' AND l.returned IS NULL")
        )  # fmt: skip
        self.assertEqual(len(loans), 1)  # once, not twice

    def test_stop_before_start_is_harmless(self):
        backend = SQLiteBackend(name="t", options={"type": "sqlite"})
        self.assertIsNone(self.successResultOf(backend.stop()))

    @defer.inlineCallbacks
    def test_stop_ends_the_worker_thread(self):
        from twisted.internet import reactor

        backend = SQLiteBackend(name="t", options={"type": "sqlite", "path": ":memory:"}, reactor=reactor)
        yield backend.start()
        yield backend.stop()
        self.assertIsNone(backend._pool)
        self.assertFalse((yield backend.health()))


# -- schema -------------------------------------------------------------------------------------


def test_check_schema_refuses_other_versions(tmp_path):
    backend = sync(tmp_path / "ils.db")
    result_of(backend.start())
    assert result_of(backend.run_read(schema.check_schema)) == schema.code_version()
    result_of(backend.run_write(lambda tx: tx.execute(
        "INSERT INTO schema_version (version, name, applied) VALUES (99, 'future', 'x')"
    )))  # fmt: skip
    newer = f"version 99, newer than this sipserver's {schema.code_version()}: upgrade sipserver"
    with pytest.raises(BackendConfigError, match=newer):
        result_of(backend.run_read(schema.check_schema))
    result_of(backend.stop())
    with pytest.raises(BackendConfigError, match="newer"):
        result_of(sync(tmp_path / "ils.db").start())


def test_migrations_bring_an_empty_or_old_database_up_to_date(monkeypatch):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    tx = Tx(conn.cursor(), SQLITE)
    with pytest.raises(BackendConfigError, match=r"no sipserver schema .* run the migrations"):
        schema.check_schema(tx)
    shipped = schema.migrations()
    last = shipped[-1].version
    assert schema.apply_migrations(tx) == list(range(1, last + 1))
    newer = [*shipped, schema.Migration(last + 1, "more", "-- a comment;\nCREATE TABLE extra (id @PK@);\n")]
    monkeypatch.setattr(schema, "migrations", lambda: newer)
    older = f"version {last}, older than this sipserver's {last + 1}: run the migrations"
    with pytest.raises(BackendConfigError, match=older):
        schema.check_schema(tx)
    assert schema.apply_migrations(tx) == [last + 1]
    assert schema.check_schema(tx) == last + 1 and tx.table_exists("extra")


def test_a_version_1_database_with_loans_migrates_and_keeps_them(tmp_path):
    """Schema 2 adds loans.undone: a database made by the first release keeps its loans, none undone."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    tx = Tx(conn.cursor(), SQLITE)
    first = schema.migrations()[0]
    for statement in first.statements():
        tx.execute(SQLITE.ddl(statement))
    tx.execute("INSERT INTO schema_version (version, name, applied) VALUES (1, 'initial', 'x')")
    tx.execute("INSERT INTO patrons (barcode, pin_hash, name) VALUES ('P', '', 'Pat')")
    tx.execute("INSERT INTO items (barcode, title) VALUES ('I', 'Book')")
    tx.execute("INSERT INTO loans (item_id, patron_id, checked_out, due) VALUES (1, 1, '2024-06-01T10:00:00', "
               "'2024-06-15T23:59:00')")  # fmt: skip
    conn.close()
    backend = sync(path)
    result_of(backend.start())  # the embedded backend migrates on start
    assert rows(backend, "SELECT undone, renewals FROM loans") == [{"undone": 0, "renewals": 0}]
    result_of(backend.stop())


def test_migrations_expand_for_postgresql():
    statements = [POSTGRESQL.ddl(s) for m in schema.migrations() for s in m.statements()]
    assert statements and not any("@PK@" in s or s.endswith(";") for s in statements)
    assert any("GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in s for s in statements)
    assert not any("AUTOINCREMENT" in s for s in statements)


def test_placeholders_for_format_paramstyle():
    assert to_format_paramstyle("SELECT * FROM t WHERE a = ? AND b LIKE 'x?%' AND c = ?") == (
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x?%%' AND c = %s"
    )
    assert POSTGRESQL.sql("SELECT 1 WHERE x = ?") == "SELECT 1 WHERE x = %s"
    assert SQLITE.sql("SELECT ?") == "SELECT ?"
    assert POSTGRESQL.lock_clause == " FOR UPDATE" and SQLITE.lock_clause == ""


# -- factory ------------------------------------------------------------------------------------


class PluginBackend:
    def __init__(self, name, options, reactor):
        self.name, self.options, self.reactor = name, options, reactor


class BadSignature:
    def __init__(self):
        pass


def test_factory_builds_the_sqlite_backend():
    backend = factory.create_backend("main", {"type": "sqlite", "path": ":memory:"}, reactor=None)
    assert isinstance(backend, SQLiteBackend) and backend.name == "main" and backend.threaded


def test_factory_accepts_module_colon_class():
    backend = factory.create_backend("x", {"type": f"{__name__}:PluginBackend", "k": 1}, reactor="r")
    assert isinstance(backend, PluginBackend) and backend.options["k"] == 1 and backend.reactor == "r"


def test_factory_finds_entry_points(monkeypatch):
    ep = EntryPoint(name="acme", value=f"{__name__}:PluginBackend", group=factory.ENTRY_POINT_GROUP)
    monkeypatch.setattr(factory, "entry_points", lambda group: [ep] if group == factory.ENTRY_POINT_GROUP else [])
    assert isinstance(factory.create_backend("x", {"type": "acme"}), PluginBackend)
    with pytest.raises(BackendConfigError, match="expected one of acme, postgresql, sip2, sqlite"):
        factory.create_backend("x", {"type": "nope"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "backend 'x': 'type' must name a backend"),
        ({"type": "nope"}, "unknown backend type 'nope'"),
        ({"type": "no_such_module:Thing"}, "cannot import no_such_module"),
        ({"type": f"{__name__}:Missing"}, "has no Missing"),
        ({"type": f"{__name__}:BadSignature"}, r"does not take \(name, options, reactor\)"),
    ],
)
def test_factory_errors(options, message):
    with pytest.raises(BackendConfigError, match=message):
        factory.create_backend("x", options)


def test_factory_postgresql_is_imported_lazily(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sipserver.ils.embedded.postgresql", None)  # as if it were missing
    with pytest.raises(BackendConfigError, match="backend type 'postgresql': cannot import"):
        factory.create_backend("pg", {"type": "postgresql"})


def test_synchronous_full_waits_for_the_disk_and_keeps_writes_off_the_reactor(tmp_path):
    backend = SQLiteBackend(
        name="t", options={"type": "sqlite", "path": str(tmp_path / "ils.db"), "synchronous": "FULL"}, threaded=False
    )
    assert backend.inline_writes is False
    result_of(backend.start())
    assert rows(backend, "PRAGMA synchronous")[0]["synchronous"] == 2  # FULL
    normal = sync(tmp_path / "other.db")
    assert normal.inline_writes is True
    result_of(normal.start())
    assert rows(normal, "PRAGMA synchronous")[0]["synchronous"] == 1  # NORMAL


def test_synchronous_takes_normal_or_full_only(tmp_path):
    with pytest.raises(BackendConfigError, match="'synchronous': expected normal or full, got 'off'"):
        sync(tmp_path / "ils.db", synchronous="off")


def test_options_are_checked_as_the_config_is_an_unknown_one_with_a_hint_and_null_as_the_default(tmp_path):
    # A typo used to leave the option at its default without a word.
    with pytest.raises(BackendConfigError) as info:
        SQLiteBackend(name="t", options={"type": "sqlite", "inline_read": False})
    assert str(info.value) == (
        "sqlite backend 't': unknown option 'inline_read' (did you mean 'inline_reads'?); expected one of path, "
        "seed, threaded, inline_reads, inline_writes, patron_cache, synchronous, busy_timeout"
    )
    backend = SQLiteBackend(name="t", options={"path": None, "busy_timeout": None, "synchronous": None})
    assert (backend.path, backend.busy_timeout, backend.synchronous) == (":memory:", 5.0, "normal")
