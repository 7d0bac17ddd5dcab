"""The PostgreSQL backend itself: options, start-up and schema checks, migrations, seeding, the audit
trail, retries after lost connections and conflicts, timeouts, cancellation, and the worker pool."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from twisted.internet import defer
from twisted.trial import unittest

from sipserver.ils import factory
from sipserver.ils.embedded import circulation, schema
from sipserver.ils.embedded.loader import DataError, load_file
from sipserver.ils.embedded.postgresql import PgTx, PostgreSQLBackend, describe_dsn
from sipserver.ils.interface import (
    BackendConfigError,
    BackendUnavailable,
    BlockPatronRequest,
    CheckinRequest,
    CheckoutRequest,
    EnablePatronRequest,
    FeePaidRequest,
    HoldMode,
    HoldRequest,
    ILSBackend,
    ItemStatusUpdateRequest,
    PatronRequest,
    RenewRequest,
    Terminal,
)
from tests import pg
from tests.test_backend_support import DEMO, FIXTURE, FakeClock, ctx, load, result_of, rows

pytestmark = pytest.mark.postgresql

JANE, JANE_PIN, FREE_ITEM = "21000000000001", "1234", "31000000000008"


@pytest.fixture(scope="module")
def empty_template():
    pg.require()
    name = pg.migrated_database()
    yield name
    pg.drop_database(name)


@pytest.fixture
def database(empty_template):
    with pg.temporary_database(empty_template) as name:
        yield name


@pytest.fixture
def backend(database):
    running = pg.sync_backend(database, clock=FakeClock())
    load(running, FIXTURE)
    yield running
    running.stop()


def failure_of(d):
    with pytest.raises(Exception) as info:
        result_of(d)
    return info.value


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "'dsn' is required"),
        ({"dsn": "   "}, "'dsn' is required"),
        ({"dsn": "host=x port"}, "not a libpq connection string"),
        ({"dsn": "host=x", "pool": {"min": 5, "max": 2}}, "min <= max"),
        ({"dsn": "host=x", "pool": {"mni": 1}}, r"pool\.mni"),
        ({"dsn": "host=x", "pool": 3}, "expected a mapping"),
        ({"dsn": "host=x", "statement_timeout": "10s"}, "statement_timeout"),
        ({"dsn": "host=x", "synchronous": "yes"}, "true or false"),
        ({"dsn": "host=x", "pol": {"max": 3}}, "unknown option 'pol'"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(BackendConfigError, match=message):
        PostgreSQLBackend(name="pg", options=options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dsn": "host=x", "pool": {"min": -1}}, "postgresql backend option 'pool.min': expected a whole number >= 0"),
        ({"dsn": "host=x", "pool": {"mni": 1}}, "unknown option 'pool.mni' (did you mean 'min'?)"),
        ({"dsn": "host=x", "connect_timeout": 0}, "'connect_timeout': expected a number of seconds greater than 0"),
        ({"dsn": "host=x", "statement_timeout": -1}, "'statement_timeout': expected a whole number of milliseconds"),
        ({"dsn": "host=x", "synchronus": True}, "unknown option 'synchronus' (did you mean 'synchronous'?)"),
    ],
)
def test_option_errors_name_the_option_as_the_config_does(options, message):
    with pytest.raises(BackendConfigError) as info:
        PostgreSQLBackend(name="pg", options=options)
    assert message in str(info.value)


def test_null_options_take_their_defaults():
    backend = PostgreSQLBackend(name="pg", options={"dsn": "host=x", "pool": None, "statement_timeout": None})
    assert (backend.pool_min, backend.pool_max, backend.statement_timeout) == (2, 10, 10000)


def test_factory_builds_it_and_it_implements_the_interface():
    backend = factory.create_backend("central", {"type": "postgresql", "dsn": "postgresql://sip:secret@db/ils"})
    assert isinstance(backend, PostgreSQLBackend) and isinstance(backend, ILSBackend)
    assert (backend.pool_min, backend.pool_max, backend.statement_timeout) == (2, 10, 10000)
    assert backend.where == "sip@db:5432/ils" and "secret" not in backend.where


def test_the_dsn_is_described_without_its_password():
    assert describe_dsn("host=h port=6 dbname=d user=u password=pw") == "u@h:6/d"


# -- start-up, schema, migrations, seeding ----------------------------------------------------------


def test_connections_notice_a_vanished_host_unless_the_dsn_says_otherwise(database):
    dsn = pg.dsn_for(database)
    conn = PostgreSQLBackend("db", {"dsn": dsn}, synchronous=True)._connect()
    try:
        settings = conn.get_dsn_parameters()
        assert (settings["keepalives_idle"], settings["keepalives_count"], settings["tcp_user_timeout"]) == (
            "30",
            "3",
            "30000",
        )
    finally:
        conn.close()
    conn = PostgreSQLBackend("db", {"dsn": dsn + " keepalives_idle=7"}, synchronous=True)._connect()
    try:
        assert conn.get_dsn_parameters()["keepalives_idle"] == "7"
    finally:
        conn.close()


def test_an_unreachable_server_is_unavailable_at_start_and_in_every_call():
    pg.require()
    backend = PostgreSQLBackend(
        name="pg", options={"dsn": f"postgresql://postgres@127.0.0.1:{pg.free_port()}/x", "synchronous": True}
    )
    started = time.monotonic()
    error = failure_of(backend.start())
    assert isinstance(error, BackendUnavailable) and "cannot connect" in str(error)
    assert time.monotonic() - started < 5
    assert result_of(backend.health()) is False
    assert isinstance(
        failure_of(backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron=JANE, pin=None))),
        BackendUnavailable,
    )
    result_of(backend.stop())


def test_a_database_behind_the_code_refuses_to_start_until_migrated():
    pg.require()
    with pg.temporary_database() as name:
        backend = PostgreSQLBackend(name="central", options={"dsn": pg.dsn_for(name), "synchronous": True})
        error = failure_of(backend.start())
        want = schema.code_version()
        assert isinstance(error, BackendConfigError)
        assert f"database at schema version 0, this sipserver needs {want}" in str(error)
        assert "sipserver migrate --config" in str(error)
        assert result_of(backend.migrate()) == want
        assert result_of(backend.migrate()) == want  # nothing left to do: harmless
        result_of(backend.start())
        assert result_of(backend.health()) is True
        backend.stop()


def test_a_database_ahead_of_the_code_is_refused(database):
    with pg.admin(pg.dsn_for(database)) as cur:
        cur.execute("INSERT INTO schema_version (version, name, applied) VALUES (99, 'future', 'x')")
    backend = PostgreSQLBackend(name="central", options={"dsn": pg.dsn_for(database), "synchronous": True})
    error = failure_of(backend.start())
    assert isinstance(error, BackendConfigError) and "schema version 99" in str(error) and "upgrade" in str(error)
    error = failure_of(backend.migrate())
    assert isinstance(error, BackendConfigError) and "newer" in str(error)


def test_several_daemons_may_migrate_at_once():
    pg.require()
    with pg.temporary_database() as name:
        versions, errors = [], []

        def migrate():
            backend = PostgreSQLBackend(name="pg", options={"dsn": pg.dsn_for(name), "synchronous": True})
            try:
                versions.append(result_of(backend.migrate()))
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=migrate) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and versions == [schema.code_version()] * 4
        with pg.admin(pg.dsn_for(name)) as cur:
            cur.execute("SELECT count(*) FROM schema_version")
            assert cur.fetchone()[0] == schema.code_version()


def test_seed_loads_into_an_empty_database_only(database):
    first = pg.sync_backend(database, seed=DEMO)
    patrons = rows(first, "SELECT count(*) AS n FROM patrons")[0]["n"]
    assert patrons > 10
    first.run_write(lambda tx: tx.execute("DELETE FROM audit_log"))
    first.stop()
    again = pg.sync_backend(database, seed=DEMO)
    assert rows(again, "SELECT count(*) AS n FROM patrons")[0]["n"] == patrons
    again.stop()


def test_load_file_works_and_is_idempotent(database):
    backend = pg.sync_backend(database)
    first = result_of(load_file(backend, DEMO))
    second = result_of(load_file(backend, DEMO))
    assert first == second and first["patrons"] > 10
    assert rows(backend, "SELECT count(*) AS n FROM patrons")[0]["n"] == first["patrons"]
    backend.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("items:\n  - {barcode: Y1, title: T, price: '999999999'}\n", r"items\[0\].price: expected an amount of"),
        ("rules:\n  default: {loan_days: 100000000000}\n", r"rules.default.loan_days: expected a whole number from"),
        ("rules:\n  default: {hold_limit: 2147483648}\n", r"rules.default.hold_limit: expected a whole number from"),
        ("holds:\n  - {patron: X1, title: T, placed: 2024-02-30}\n", r"holds\[0\].placed: expected a date"),
    ],
)
def test_numbers_and_dates_the_database_cannot_hold_are_data_errors_naming_the_key(database, tmp_path, text, message):
    # PostgreSQL answered "integer out of range", naming no key, as if the server had failed.
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    backend = pg.sync_backend(database)
    with pytest.raises(DataError, match=f"^{path}: {message}"):
        result_of(load_file(backend, str(path)))
    backend.stop()
    with pytest.raises(BackendConfigError, match=f"^{path}: {message}"):
        pg.sync_backend(database, seed=str(path))


# -- the audit trail --------------------------------------------------------------------------------


def test_every_circulation_transaction_is_audited_with_who_where_and_outcome(backend):
    c = ctx(location="MAIN-DESK1")
    assert result_of(backend.checkout(CheckoutRequest(terminal=c, patron="P1", item="I1", pin="1111"))).ok
    assert result_of(backend.renew(RenewRequest(terminal=c, patron="P1", item="I1", pin="1111"))).ok
    assert result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))).ok
    assert not result_of(backend.checkout(CheckoutRequest(terminal=c, patron="P1", item="NO-SUCH-ITEM", pin="1111"))).ok
    assert result_of(backend.hold(HoldRequest(terminal=c, mode=HoldMode.ADD, patron="P2", pin=None, item="I2"))).ok
    assert result_of(backend.fee_paid(FeePaidRequest(terminal=c, patron="P6", pin=None, amount="1.00"))).ok
    result_of(backend.block_patron(BlockPatronRequest(terminal=c, patron="P1", reason="card kept")))
    result_of(backend.enable_patron(EnablePatronRequest(terminal=c, patron="P1", pin="1111")))
    assert result_of(
        backend.item_status_update(ItemStatusUpdateRequest(terminal=c, item="I2", properties="shelf 3"))
    ).ok
    log = rows(backend, "SELECT * FROM audit_log ORDER BY id")
    assert [(r["request"], r["outcome"]) for r in log] == [
        ("checkout", "ok"),
        ("renew", "ok"),
        ("checkin", "ok"),
        ("checkout", "unknown_item"),
        ("hold+", "ok"),
        ("fee_paid", "ok"),
        ("block_patron", "ok"),
        ("enable_patron", "ok"),
        ("item_status_update", "ok"),
    ]
    for row in log:
        assert (row["login"], row["location"], row["peer"], row["institution"]) == (
            "sc1",
            "MAIN-DESK1",
            "127.0.0.1",
            "TEST",
        )
        assert len(row["logged_at"]) == 19 and "1111" not in row["detail"]


def test_the_audit_row_is_written_in_the_same_transaction_as_the_change(backend):
    def checkout_then_fail(tx):
        result = circulation.checkout(
            tx, CheckoutRequest(terminal=ctx(), patron="P1", item="I1", pin="1111"), backend.now(), backend.pins
        )
        assert result.ok
        tx.execute("SELECT 1 / 0")  # fails after the change and its audit row were written

    assert isinstance(failure_of(backend.run_write(checkout_then_fail)), BackendUnavailable)
    assert rows(backend, "SELECT * FROM audit_log") == []
    assert rows(backend, "SELECT * FROM loans l JOIN items i ON i.id = l.item_id WHERE i.barcode = 'I1'") == []


# -- round trips -----------------------------------------------------------------------------------


class _CountingCursor(psycopg2.extensions.cursor):
    """A cursor that records every statement text it sends: one ``execute`` is one round trip."""

    sent: list[str] = []

    def execute(self, query, vars=None):
        _CountingCursor.sent.append(query if isinstance(query, str) else query.decode())
        return super().execute(query, vars)


def test_a_checkout_is_two_round_trips_and_a_checkin_two(backend):
    """The lock statements travel with the reads they guard, and writes with the COMMIT: the read
    allocates the new loan's id, so its INSERT needs no round trip of its own."""
    for conn in backend.pool._idle:
        conn.cursor_factory = _CountingCursor
    c = ctx()
    for _ in range(2):  # the first pair also prepares its statements
        assert result_of(backend.checkout(CheckoutRequest(terminal=c, patron="P1", item="I1", pin="1111"))).ok
        assert result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))).ok
    _CountingCursor.sent = []
    assert result_of(backend.checkout(CheckoutRequest(terminal=c, patron="P1", item="I1", pin="1111"))).ok
    checkout = _CountingCursor.sent
    _CountingCursor.sent = []
    assert result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))).ok
    checkin = _CountingCursor.sent
    assert len(checkout) == 2, checkout
    assert len(checkin) == 2, checkin
    # the lock is taken in the same round trip as, and before, the read it guards
    assert checkout[0].startswith("BEGIN; EXECUTE") and checkout[0].count("EXECUTE") == 2
    assert checkin[0].startswith("BEGIN; EXECUTE") and checkin[0].count("EXECUTE") == 2
    assert checkout[-1].endswith("COMMIT") and checkin[-1].endswith("COMMIT")


def test_a_checkin_that_sets_the_copy_aside_for_a_hold_is_four_round_trips(backend):
    """The lock and the read; the hold's patron with their rules; the hold changed only if it is
    still as read (holds.trap), which needs its answer; the rest of the writes with the COMMIT."""
    for conn in backend.pool._idle:
        conn.cursor_factory = _CountingCursor
    c = ctx()
    for _ in range(3):  # the first rounds also prepare their statements
        assert result_of(
            backend.hold(
                HoldRequest(
                    terminal=c, mode=HoldMode.ADD, patron="P2", pin="2222", title="Alpha", pickup_location="MAIN"
                )
            )
        ).ok
        _CountingCursor.sent = []
        checkin = result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN")))
        assert checkin.hold_patron_barcode == "P2"
        sent = list(_CountingCursor.sent)
        assert result_of(
            backend.hold(HoldRequest(terminal=c, mode=HoldMode.CANCEL, patron="P2", pin="2222", title="Alpha"))
        ).ok
        assert result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))).ok  # back on the shelf
    assert len(sent) == 4, sent
    assert sent[0].startswith("BEGIN; EXECUTE") and sent[-1].endswith("COMMIT")


def test_a_hold_that_lapsed_on_the_shelf_costs_no_round_trip(database):
    """Recording the lapsed hold as expired needs no answer: it travels with the COMMIT, so a
    checkout of the copy is still two round trips, and a checkin that passes it on to the next
    hold still four."""
    clock = FakeClock()
    backend = pg.sync_backend(database, clock=clock)
    load(backend, FIXTURE)
    for conn in backend.pool._idle:
        conn.cursor_factory = _CountingCursor
    c = ctx()

    def lapse(patron: str, pin: str) -> None:  # set I1 aside for the patron; then let the hold lapse
        assert result_of(
            backend.hold(
                HoldRequest(terminal=c, mode=HoldMode.ADD, patron=patron, pin=pin, item="I1", pickup_location="MAIN")
            )
        ).ok
        assert (
            result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))).hold_patron_barcode
            == patron
        )
        clock.advance(days=8)

    try:
        for _ in range(3):  # the first rounds also prepare their statements
            lapse("P2", "2222")
            _CountingCursor.sent = []
            assert result_of(backend.checkout(CheckoutRequest(terminal=c, patron="P1", item="I1", pin="1111"))).ok
            checkout = list(_CountingCursor.sent)
            assert result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))).ok
            lapse("P2", "2222")
            assert result_of(
                backend.hold(
                    HoldRequest(
                        terminal=c, mode=HoldMode.ADD, patron="P9", pin="9999", item="I1", pickup_location="MAIN"
                    )
                )
            ).ok
            _CountingCursor.sent = []
            assert (
                result_of(backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))).hold_patron_barcode
                == "P9"
            )
            checkin = list(_CountingCursor.sent)
            assert result_of(
                backend.hold(HoldRequest(terminal=c, mode=HoldMode.CANCEL, patron="P9", pin="9999", item="I1"))
            ).ok
            assert result_of(
                backend.checkin(CheckinRequest(terminal=c, item="I1", branch="MAIN"))
            ).ok  # back on the shelf
        assert len(checkout) == 2, checkout
        assert len(checkin) == 4, checkin
        states = rows(
            backend, "SELECT h.state FROM holds h JOIN patrons p ON p.id = h.patron_id WHERE p.barcode = ?", ("P2",)
        )
        assert [r["state"] for r in states] == ["expired"] * 6  # recorded, by the checkouts and the checkins
    finally:
        backend.stop()


# -- retries, timeouts ------------------------------------------------------------------------------


def test_a_killed_connection_is_replaced_and_the_call_retried(backend, database):
    assert (
        result_of(backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))).name
        == "Ann Able"
    )
    assert pg.terminate(database) >= 1
    assert (
        result_of(backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))).name
        == "Ann Able"
    )  # read: retried
    assert pg.terminate(database) >= 1
    assert result_of(
        backend.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I1", pin="1111"))
    ).ok  # write failed before COMMIT: retried
    assert len(rows(backend, "SELECT * FROM audit_log WHERE request = 'checkout'")) == 1


def test_a_connection_lost_inside_a_write_retries_it_once_and_it_happens_once(backend):
    runs = []

    def write(tx):
        tx.execute("UPDATE patrons SET name = name || '+' WHERE barcode = 'P1'")
        runs.append(1)
        if len(runs) == 1:
            tx.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return "done"

    assert result_of(backend.run_write(write)) == "done"
    assert len(runs) == 2
    assert rows(backend, "SELECT name FROM patrons WHERE barcode = 'P1'")[0]["name"] == "Ann Able+"


def test_a_connection_lost_during_commit_is_not_retried(backend, monkeypatch):
    runs = []

    def commit_lost(tx):
        tx.conn.close()  # the server rolls back, but the client cannot know whether COMMIT arrived
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PgTx, "commit", commit_lost)

    def write(tx):
        runs.append(1)
        tx.execute("UPDATE patrons SET name = 'x' WHERE barcode = 'P1'")

    error = failure_of(backend.run_write(write))
    assert isinstance(error, BackendUnavailable) and "during COMMIT" in str(error)
    assert runs == [1]


def test_conflicts_are_run_again_and_a_lasting_one_is_a_refusal_not_a_traceback(backend):
    attempts = []

    def duplicate_once(tx):
        attempts.append(1)
        if len(attempts) == 1:  # a real unique violation from the server, as a race would give
            tx.execute("INSERT INTO patrons (barcode) VALUES ('P1')")
        return len(attempts)

    assert result_of(backend.run_write(duplicate_once)) == 2
    error = failure_of(backend.run_write(lambda tx: tx.execute("INSERT INTO patrons (barcode) VALUES ('P1')")))
    assert isinstance(error, BackendUnavailable) and "duplicate key" in str(error)


def test_a_statement_over_the_timeout_is_cancelled_and_not_retried(database):
    backend = pg.sync_backend(database, statement_timeout=200)
    runs = []

    def slow(tx):
        runs.append(1)
        tx.execute("SELECT pg_sleep(3)")

    started = time.monotonic()
    error = failure_of(backend.run_read(slow))
    assert isinstance(error, BackendUnavailable) and "statement timeout" in str(error)
    assert time.monotonic() - started < 2 and runs == [1]
    assert result_of(backend.health()) is True  # the connection is still good
    backend.stop()


# -- threads and the reactor ------------------------------------------------------------------------


class ThreadedTests(unittest.TestCase):
    """The default mode: transactions in the pool's worker threads, results through the reactor."""

    def setUp(self):
        pg.require()
        from twisted.internet import reactor

        self.reactor = reactor
        self.dbname = pg.migrated_database(DEMO)
        self.addCleanup(pg.drop_database, self.dbname)

    def make(self, **options):
        options = {"dsn": pg.dsn_for(self.dbname), "pool": {"min": 2, "max": 4}, **options}
        backend = PostgreSQLBackend(name="central", options=options, reactor=self.reactor)
        self.addCleanup(backend.stop)
        return backend

    @defer.inlineCallbacks
    def test_circulation_in_worker_threads_and_stop_ends_them(self):
        backend = self.make()
        yield backend.start()
        self.assertEqual(backend.pool.idle_count(), 2)  # pool.min connections opened at start
        self.assertTrue((yield backend.health()))
        out = yield backend.checkout(CheckoutRequest(terminal=ctx(), patron=JANE, item=FREE_ITEM, pin=JANE_PIN))
        self.assertTrue(out.ok)
        back = yield backend.checkin(CheckinRequest(terminal=ctx(), item=FREE_ITEM, branch="MAIN"))
        self.assertEqual(back.patron_barcode, JANE)
        results = yield defer.gatherResults(
            [
                backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron=JANE, pin=None))
                for _ in range(20)
            ]
        )
        self.assertEqual({p.name for p in results}, {"Jane Doe"})
        self.assertLessEqual(backend.pool.opened, 4)
        yield backend.stop()
        self.assertEqual([t for t in threading.enumerate() if t.name.startswith("sipserver-pg")], [])
        self.assertEqual(backend.pool.idle_count(), 0)
        self.assertFalse((yield backend.health()))
        with self.assertRaises(BackendUnavailable):
            yield backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron=JANE, pin=None))

    @defer.inlineCallbacks
    def test_killed_connections_are_retried_in_threads_too(self):
        backend = self.make()
        yield backend.start()
        self.assertTrue(pg.terminate(self.dbname) >= 2)
        jane = yield backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron=JANE, pin=None))
        self.assertEqual(jane.name, "Jane Doe")
        self.assertTrue(
            (yield backend.checkout(CheckoutRequest(terminal=ctx(), patron=JANE, item=FREE_ITEM, pin=JANE_PIN))).ok
        )

    @defer.inlineCallbacks
    def test_a_write_the_caller_gave_up_on_is_rolled_back(self):
        backend = self.make()
        yield backend.start()

        gave_up = threading.Event()

        def slow_write(tx):
            tx.execute("UPDATE patrons SET name = 'changed' WHERE barcode = ?", (JANE,))
            gave_up.wait(5)  # still inside the transaction when the caller gives up

        d = backend.run_write(slow_write)
        d.addTimeout(0.1, self.reactor)  # what the ACS does with the institution's timeout
        with self.assertRaises(defer.TimeoutError):
            yield d
        gave_up.set()
        # The row's lock is held until that transaction ends (committed or rolled back): wait for it.
        yield backend.run_write(lambda tx: tx.scalar("SELECT name FROM patrons WHERE barcode = ? FOR UPDATE", (JANE,)))
        jane = yield backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron=JANE, pin=None))
        self.assertEqual(jane.name, "Jane Doe")

    @defer.inlineCallbacks
    def test_many_terminals_racing_for_one_item_lend_it_once(self):
        backend = self.make(pool={"min": 2, "max": 8})
        yield backend.start()
        patrons = yield backend.run_read(
            lambda tx: [r["barcode"] for r in tx.all("SELECT barcode FROM patrons ORDER BY id")]
        )
        results = yield defer.gatherResults(
            [
                backend.checkout(CheckoutRequest(terminal=ctx(), patron=p, item=FREE_ITEM, pin=None, no_block=False))
                for p in patrons[:12]
            ]
        )
        self.assertEqual(sum(r.ok for r in results), 1)
        loans = yield backend.run_read(
            lambda tx: tx.all(
                "SELECT * FROM loans WHERE returned IS NULL AND item_id = (SELECT id FROM items WHERE barcode = ?)",
                (FREE_ITEM,),
            )
        )
        self.assertEqual(len(loans), 1)

    @defer.inlineCallbacks
    def test_unreachable_at_start_then_started_once_it_answers(self):
        port = pg.free_port()
        backend = PostgreSQLBackend(
            name="central", options={"dsn": f"postgresql://postgres@127.0.0.1:{port}/x"}, reactor=self.reactor
        )
        self.addCleanup(backend.stop)
        with self.assertRaises(BackendUnavailable):
            yield backend.start()
        self.assertFalse((yield backend.health()))
        backend.dsn = pg.dsn_for(self.dbname)  # "the server is back"
        yield backend.start()
        self.assertTrue((yield backend.health()))
