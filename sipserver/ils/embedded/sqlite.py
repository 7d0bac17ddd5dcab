"""The embedded ILS: the SQL backend on a local sqlite3 file, the default for demos and small sites.

Options (the backend's mapping in the configuration):

``path``
    The database file, created on first start (its folder must exist: a missing folder is a
    start failure, which the service retries); ``":memory:"`` for a throwaway database.
``seed``
    A data file (see ``docs/data-format.md``) loaded on start into an *empty* database only.
``threaded``
    ``true`` (default): every call runs in one dedicated worker thread, so the reactor never waits
    for the disk; one thread because a sqlite connection belongs to one thread and writers
    serialize anyway. ``false``: calls run synchronously on the caller's thread and the Deferreds
    have fired on return; for tests and benchmarks, where the reactor is not running.
``inline_reads``
    ``true`` (default): with ``threaded`` and a database file, reads (patron and item look-ups,
    health) run at once on the calling (reactor) thread, on a second connection of their own, and
    only writes go to the worker thread. In WAL mode a reader never waits for a writer, and a
    look-up costs less than the thread hop it saves (a hop costs the reactor a wake-up and, worse,
    GIL hand-offs that add latency to every other terminal under load; the figures are in
    ``docs/performance.md``, step 1). A read that finds
    the database busy anyway (rare in WAL mode: recovery, a schema change) is retried on the
    worker thread, so the reactor never sleeps on a lock. ``false``: reads use the worker thread too.
``inline_writes``
    ``true`` (default): with ``threaded`` and a database file, writes (checkout, checkin...) also
    run at once on the calling thread, on a third connection that never waits for a lock and never
    checkpoints: a commit in WAL mode with ``synchronous = NORMAL`` appends to the log without an
    fsync, which costs less than the GIL hand-offs of a thread hop under load (step 9 of
    ``docs/performance.md``).
    A write that finds the database locked (another process writing, ``sipserver load``) is
    rolled back at once, having changed nothing, and handed to the worker thread, which waits
    for the lock up to ``busy_timeout``. The log is checkpointed by the worker thread about once
    a second after writes, so the fsync of a checkpoint never stalls the reactor. ``false``: every
    write goes to the worker thread (where a write the ACS gives up on is rolled back).
``patron_cache``
    ``true`` (default): remember patron look-ups (23, and 63 without lists) while neither this
    backend nor any other connection has written to the database and the patron's standing has
    not moved with time alone (``sipserver.ils.embedded.patroncache``); PINs are still checked on every
    request. It needs reads on the calling thread (``inline_reads``, or ``threaded: false``) to
    ask sqlite cheaply whether the database changed. ``false``: every look-up reads the database.
``synchronous``
    ``normal`` (default): sqlite's ``synchronous = NORMAL`` in WAL mode: a commit survives the
    daemon crashing or being killed, but a power cut or an operating-system crash may undo the
    transactions of the last moments (those not yet checkpointed). ``full``: every commit waits
    for the disk (an fsync), so nothing that a terminal was told happened can be undone; writes
    then always run on the worker thread (``inline_writes`` is ignored), never stalling the reactor.
``busy_timeout``
    Seconds a write waits for another process's lock before failing (default 5).

sqlite errors at run time (a locked database, a disk error) become :class:`BackendUnavailable`; at
start they become :class:`BackendConfigError` with one line naming the file.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from sipserver.config.schema import Choice, Flag, Key, Number, Options, Section, Text
from sipserver.ils.embedded import loader, schema
from sipserver.ils.embedded.db.dialect import SQLITE, Tx
from sipserver.ils.embedded.db.sqlite_commits import WalHeader
from sipserver.ils.embedded.patroncache import PatronCache
from sipserver.ils.embedded.sql_backend import Clock, SQLBackend
from sipserver.ils.interface import Answer, BackendConfigError, BackendUnavailable
from sipserver.observe.loglevel import logger

T = TypeVar("T")

#: Seconds between checkpoints of the write-ahead log after inline writes (by the worker thread).
CHECKPOINT_INTERVAL = 1.0


#: The options a sqlite backend takes (``type`` is the factory's); see the module docstring.
OPTIONS: Section[dict[str, Any]] = Section(
    None,
    (
        Key("type", Text(), default="sqlite"),
        Key("path", Text(empty=True, what="a file name or ':memory:'"), default=":memory:"),
        Key("seed", Text(empty=True, what="a data file name"), default=None),
        Key("threaded", Flag(), default=True),
        Key("inline_reads", Flag(), default=True),
        Key("inline_writes", Flag(), default=True),
        Key("patron_cache", Flag(), default=True),
        Key("synchronous", Choice(("normal", "full"), what="normal or full"), default="normal"),
        Key("busy_timeout", Number(what="seconds"), default=5.0),
    ),
    what="a mapping of options",
)


def _busy(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause)


class SQLiteBackend(SQLBackend):
    """See the module docstring. Construct as ``SQLiteBackend(name=..., options=..., reactor=...)``."""

    dialect = SQLITE
    log = logger()

    def __init__(
        self,
        name: str = "sqlite",
        options: Mapping[str, Any] | None = None,
        reactor: Any = None,
        *,
        threaded: bool | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.name = name
        chosen = OPTIONS.read(options or {}, Options("sqlite", name, BackendConfigError).root())
        self.path: str = chosen["path"]
        self.seed: str | None = chosen["seed"] or None
        self.threaded = chosen["threaded"] if threaded is None else bool(threaded)
        self.busy_timeout: float = chosen["busy_timeout"]
        self.inline_reads: bool = chosen["inline_reads"]
        self.synchronous: str = chosen["synchronous"]
        # An fsync per commit must not happen on the reactor thread.
        self.inline_writes = self.synchronous == "normal" and chosen["inline_writes"]
        if chosen["patron_cache"]:
            self.patron_cache = PatronCache(self.pins)
        self._writes = 0  # moves when this backend starts or finishes a write (see change_stamp)
        self._reactor = reactor
        self._pool: ThreadPool | None = None
        self._shutdown_trigger: Any = None
        self._conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None  # inline reads' own connection
        self._write_conn: sqlite3.Connection | None = None  # inline writes' own connection
        self._wal_header: WalHeader | None = None  # the change stamp's quick source (db/sqlite_commits.py)
        self._uncheckpointed = 0  # inline writes since the worker thread last checkpointed
        self._checkpoints: Any = None  # the LoopingCall that asks for them

    # -- running SQL ------------------------------------------------------------------------------

    def _on_worker(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """``fn`` on the worker thread (unthreaded: here), as a Deferred: start, stop, checkpoints,
        and the transactions that do not run on the calling thread."""
        if not self.threaded:
            try:
                return succeed(fn(*args, **kwargs))
            except BaseException:
                return fail()
        if self._pool is None:
            return fail(BackendUnavailable(f"sqlite backend {self.name!r} is not started"))
        return deferToThreadPool(self._get_reactor(), self._pool, fn, *args, **kwargs)

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _main_transaction(self, write: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A transaction on the main connection: the worker thread's (unthreaded: the only one)."""
        return self._transaction(self._conn, write, fn, *args, **kwargs)

    def _transaction(
        self,
        conn: sqlite3.Connection | None,
        write: bool,
        fn: Callable[..., T],
        *args: Any,
        _cancelled: threading.Event | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(tx, ...)`` in one transaction on ``conn``, committed when it returns; rolled back
        when it raises, or when the caller gave up (``_cancelled``) before the commit."""
        if conn is None:
            raise BackendUnavailable(f"sqlite backend {self.name!r} is not started")
        try:
            cursor = conn.cursor()
            try:
                if _cancelled is not None and _cancelled.is_set():
                    raise BackendUnavailable("the caller gave up before the transaction began")
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                result = fn(Tx(cursor, SQLITE), *args, **kwargs)
                if _cancelled is not None and _cancelled.is_set():
                    # The terminal was already told it failed: undo, so it happened not at all.
                    raise BackendUnavailable("the caller gave up; rolled back")
                cursor.execute("COMMIT")
                return result
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                cursor.close()
        except sqlite3.Error as exc:
            if not isinstance(exc, sqlite3.OperationalError):
                self.log.failure("sqlite error in {fn}", fn=getattr(fn, "__name__", fn))
            raise BackendUnavailable(f"sqlite {self.path}: {exc}") from exc

    def _unthreaded(self, write: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Answer[T]:
        """Unthreaded: the transaction on the calling thread; its result, or a failed Deferred."""
        try:
            return self._main_transaction(write, fn, *args, **kwargs)
        except BaseException:
            return fail()

    def read_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Answer[T]:
        conn = self._read_conn
        if conn is not None:
            try:
                return self._transaction(conn, False, fn, *args, **kwargs)
            except BackendUnavailable as exc:
                if not _busy(exc):
                    return fail()
                # Locked (WAL recovery, a schema change): wait on the worker thread, not here.
            except BaseException:
                return fail()
        if not self.threaded:
            return self._unthreaded(False, fn, *args, **kwargs)
        return self._on_worker(self._main_transaction, False, fn, *args, **kwargs)

    def write_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Answer[T]:
        # Before: a look-up while the write runs must not be remembered past it. After: one that
        # ran before the commit is stale now. (data_version alone misses a single connection's
        # own writes.)
        self._writes += 1
        answer = self._write_here_or_on_worker(fn, *args, **kwargs)
        if isinstance(answer, Deferred):
            return answer.addBoth(self._written)
        self._writes += 1
        return answer

    def _written(self, result: T) -> T:
        self._writes += 1
        return result

    def _write_here_or_on_worker(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Answer[T]:
        """The write done here and now on the inline connection; on the worker thread when there
        is none, or when the database was locked (then nothing was done here)."""
        conn = self._write_conn
        if conn is not None:
            try:
                result = self._transaction(conn, True, fn, *args, **kwargs)
            except BackendUnavailable as exc:
                if not _busy(exc):
                    return fail()
                # Rolled back by _transaction: the worker thread waits for the lock.
            except BaseException:
                return fail()
            else:
                self._uncheckpointed += 1
                return result
        return self._write_on_worker(fn, *args, **kwargs)

    def _checkpoint_soon(self) -> None:
        if self._uncheckpointed and self._pool is not None:
            self._uncheckpointed = 0
            self._on_worker(self._checkpoint).addErrback(
                lambda failure: self.log.warn(
                    "sqlite {backend}: checkpoint failed: {why}", backend=self.name, why=failure.getErrorMessage()
                )
            )

    def _checkpoint(self) -> None:
        if self._conn is not None:  # PASSIVE: waits for no reader and no writer
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _write_on_worker(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Answer[T]:
        """A write on the worker thread whose Deferred can be cancelled (the ACS does after the
        institution's timeout): the transaction then rolls back instead of committing, so the
        terminal's "not available" stays true. (The last instant before COMMIT remains a race.)"""
        if not self.threaded:
            return self._unthreaded(True, fn, *args, **kwargs)
        if self._pool is None:
            return self._on_worker(self._main_transaction, True, fn, *args, **kwargs)
        cancelled = threading.Event()
        d: Deferred[T] = Deferred(lambda _: cancelled.set())
        reactor = self._get_reactor()

        def deliver(success: bool, result: Any) -> None:
            if d.called:  # cancelled: the caller has its answer; the work rolled back or never began
                if success:
                    self.log.warn("sqlite {backend}: a write committed after its caller gave up", backend=self.name)
                return
            if success:
                d.callback(result)
            else:
                d.errback(result)

        # self._main_transaction reads self._conn on the worker thread, in order with stop().
        work = functools.partial(self._main_transaction, True, fn, *args, _cancelled=cancelled, **kwargs)
        self._pool.callInThreadWithCallback(
            lambda success, result: reactor.callFromThread(deliver, success, result), work
        )
        return d

    def change_stamp(self) -> tuple[int, bytes | int] | None:
        """(this backend's write counter, the WAL-index header or else sqlite's data_version):
        together they move on every commit, this process's or another's. None when reads run on
        the worker thread."""
        conn = self._read_conn if self.threaded else self._conn
        if conn is None:
            return None
        header = self._wal_header
        if header is not None:
            seen = header.read()
            if seen is not None:
                return self._writes, seen
        try:
            (version,) = conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None  # the look-up itself will report what is wrong
        return self._writes, version

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        if self.threaded and self._pool is None:
            self._pool = ThreadPool(1, 1, name=f"sipserver-sqlite-{self.name}")
            self._pool.start()
            self._shutdown_trigger = self._get_reactor().addSystemEventTrigger("during", "shutdown", self._stop_pool)
        return self._on_worker(self._open).addCallback(self._start_checkpoints)

    def _start_checkpoints(self, result: Any) -> Any:
        if self._write_conn is not None and self._checkpoints is None:
            self._checkpoints = LoopingCall(self._checkpoint_soon)
            self._checkpoints.clock = self._get_reactor()
            self._checkpoints.start(CHECKPOINT_INTERVAL, now=False)
        return result

    def _open(self) -> None:
        """Open, tune, migrate and (into an empty database) seed; any failure is a config error."""
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        except sqlite3.Error as exc:
            # Unavailable, not misconfigured: a directory not mounted yet or a permission being
            # fixed; the service keeps the institution off-line and tries again.
            raise BackendUnavailable(f"sqlite database {self.path}: {exc}") from exc
        self._conn = conn
        try:
            self._main_transaction(True, schema.apply_migrations, self.now())
            if self.seed and self._main_transaction(False, loader.is_empty):
                self._main_transaction(True, loader.load_data_file, self.seed, self.now())
            if self.threaded and self.inline_reads and self.path != ":memory:":
                self._read_conn = self._connect_reader()
            if self.threaded and self.inline_writes and self.path != ":memory:":
                self._write_conn = self._connect_inline_writer()
            if self.patron_cache is not None and self.path != ":memory:":
                self._wal_header = WalHeader.open(self.path)
        except BaseException as exc:
            self._close()  # the service may call start() again later: leave nothing open
            if isinstance(exc, loader.DataError | BackendUnavailable):
                raise BackendConfigError(str(exc)) from exc
            raise

    def _connect_reader(self) -> sqlite3.Connection:
        # No busy wait on the reactor thread: a locked database is handed to the worker thread.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _connect_inline_writer(self) -> sqlite3.Connection:
        # Never waits for a lock (that is the worker thread's job) and never checkpoints (an fsync).
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _drop_wal_header(self) -> None:
        header, self._wal_header = self._wal_header, None
        if header is not None:
            header.close()

    def _close(self, detached: tuple[sqlite3.Connection, ...] = ()) -> None:
        for conn in detached:
            conn.close()
        self._drop_wal_header()
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def stop(self) -> Deferred[None]:
        if self.threaded and self._pool is None:
            return succeed(None)  # never started, or stopped already
        if self._checkpoints is not None:
            if self._checkpoints.running:
                self._checkpoints.stop()
            self._checkpoints = None
        # The reactor thread's connections are taken out of its reach here, before the worker
        # thread closes them, so no request can be using one while it closes.
        detached = tuple(c for c in (self._read_conn, self._write_conn) if c is not None)
        self._read_conn = self._write_conn = None
        self._drop_wal_header()  # on the reactor thread too: change_stamp reads it there
        d = self._on_worker(self._close, detached)
        if self.threaded:
            if self._shutdown_trigger is not None:
                self._get_reactor().removeSystemEventTrigger(self._shutdown_trigger)
                self._shutdown_trigger = None

            def stopped(result: Any) -> Any:
                self._stop_pool()
                return result

            d.addBoth(stopped)
        return d
