"""The ILS on PostgreSQL: the same schema, SQL and rules as the embedded backend, for several daemons.

Configuration (a backend's mapping; see ``docs/postgresql.md``)::

    backends:
      central:
        type: postgresql
        dsn: "postgresql://sip@db.example.org/sipserver"   # libpq URI or "key=value ..." string
        pool: {min: 2, max: 10}          # worker threads = most connections open at once
        statement_timeout: 10000         # ms; set on every connection
        connect_timeout: 5               # s
        seed: demo-data.yaml             # loaded into an empty database only
        synchronous: false               # true: one connection on the caller's thread (tests, benchmarks)
        batch_statements: true           # false: each statement sent alone, unprepared (server.fast_paths)

How it runs a call: every operation is one function of the shared SQL package
(:class:`~sipserver.ils.embedded.sql_backend.SQLBackend`), run in one READ COMMITTED transaction on a pooled
connection in a worker thread (:mod:`sipserver.ils.embedded.db.pgpool`). The rows a write is about to
change are locked ``SELECT ... FOR UPDATE`` (patron before item, everywhere), so two terminals, on
one daemon or on two, can never lend one item twice or lose a fee payment; the unique index on open
loans backs that up.

When things go wrong:

* a serialization failure, a deadlock or a unique violation (a race the locks did not cover) rolls
  back and runs the whole transaction again, up to :data:`CONFLICT_RETRIES` times;
* a lost connection (server restart, ``pg_terminate_backend``, network) *before COMMIT was sent*
  is retried once on a new connection, reads and writes alike: PostgreSQL rolls back a transaction
  whose session ends before it commits, so nothing of the first attempt remains. A connection lost
  *during* COMMIT is never retried (it may have committed); the terminal gets a negative answer;
* a statement timeout, a refused connection or a second connection failure become
  :class:`~sipserver.ils.interface.BackendUnavailable`: the terminal gets a negative answer with a
  screen message and 98 reports the institution off-line;
* when the caller gives up (the ACS cancels the call after the institution's timeout), work that
  has not started is skipped and a write that has not committed is rolled back, so a terminal told
  "no" was told the truth.

Start-up connects, opens ``pool.min`` connections and checks the schema version: a database behind
or ahead of this code is refused with one line naming the fix (``sipserver migrate``), never
changed silently. :meth:`PostgreSQLBackend.migrate` applies pending migrations in one transaction
under an advisory lock, so several daemons may run it at once.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.threads import deferToThreadPool

from sipserver.config.schema import REQUIRED, Flag, Integer, Key, Number, Options, Section, Text
from sipserver.ils.embedded import loader, schema
from sipserver.ils.embedded.db.dialect import POSTGRESQL, Tx
from sipserver.ils.embedded.db.pgpool import ConnectionPool, PoolStopped
from sipserver.ils.embedded.sql_backend import Clock, SQLBackend
from sipserver.ils.interface import BackendConfigError, BackendUnavailable
from sipserver.observe.loglevel import logger

try:
    import psycopg2
    import psycopg2.extensions
except ImportError as exc:  # pragma: no cover - the factory reports it as a config error
    raise ImportError(
        "the postgresql backend needs psycopg2 (pip install psycopg2-binary, or apt install python3-psycopg2)"
    ) from exc

T = TypeVar("T")

#: Runs of a transaction that hit a serialization failure, deadlock or unique violation.
CONFLICT_RETRIES = 5
#: SQLSTATEs worth running the transaction again for: serialization failure, deadlock, unique violation.
CONFLICT_CODES = frozenset({"40001", "40P01", "23505"})
#: SQLSTATE of "cached plan must not change result type" (the schema changed under a prepared
#: statement): the connection is replaced, which forgets its prepared statements, and the call retried.
REPLAN_CODE = "0A000"
#: pg_advisory_xact_lock keys: one for migrations, one for seeding.
MIGRATE_LOCK = 0x5349_5053_0001
SEED_LOCK = 0x5349_5053_0002
#: The options a postgresql backend takes (``type`` is the factory's); see the module docstring.
OPTIONS: Section[dict[str, Any]] = Section(
    None,
    (
        Key("type", Text(), default="postgresql"),
        Key(
            "dsn",
            Text(empty=True, what="a libpq connection string"),
            default=REQUIRED,
            example='"postgresql://sip@dbhost/sipserver"',
        ),
        Key(
            "pool",
            Section(
                None,
                (
                    Key("min", Integer(0, noun="a whole number"), default=2),
                    Key("max", Integer(1, noun="a whole number"), default=10),
                ),
                what="a mapping {min: N, max: N}",
            ),
            default={"min": 2, "max": 10},
        ),
        Key("statement_timeout", Integer(0, noun="a whole number of milliseconds"), default=10000),
        Key("connect_timeout", Number(above=0), default=5.0),
        Key("seed", Text(empty=True, what="a data file name"), default=None),
        Key("synchronous", Flag(), default=False),
        Key("batch_statements", Flag(), default=True),
    ),
    what="a mapping of options",
)
#: Seconds health() waits for SELECT 1.
HEALTH_TIMEOUT = 2.0


class _Skipped(Exception):
    """The caller cancelled before the work could start: nothing was done."""


#: libpq settings that notice a database host that vanished without closing its connections (power
#: loss, a failover, a firewall dropping state). Without them a call waits on a dead socket for the
#: kernel's defaults, about two hours idle and fifteen minutes with a statement unanswered, and
#: holds its pool slot that long. Idle: probes after 30 s, every 10 s, dead after 3 missed; with
#: data unacknowledged: dead after 30 s (``tcp_user_timeout``, milliseconds). A DSN may set its own.
DEAD_PEER_DETECTION = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


class _Connection(psycopg2.extensions.connection):
    """A psycopg2 connection that remembers which statements it has prepared on the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: dict[str, tuple[str, str] | None] = {}


#: At most this many prepared statements per connection (the rules use a few dozen).
MAX_PREPARED = 400
_PREPARABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


@functools.lru_cache(maxsize=1024)
def numbered_placeholders(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``$1``, ``$2``... outside quoted text (for PREPARE)."""
    out: list[str] = []
    quote = ""
    n = 0
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


class PgTx(Tx):
    """The rules' :class:`Tx` on one psycopg2 connection (in autocommit mode), built for few round trips.

    Every round trip to the server costs a thread switch here, a process wake-up there and kernel
    time on both sides, so this Tx sends as few as it can, without changing what the rules see:

    * each statement runs as a server-side **prepared statement**, prepared on its first use on the
      connection (inside a savepoint in a transaction; a statement PostgreSQL will not prepare is
      remembered and sent as plain SQL): PostgreSQL then neither parses nor plans it again;
    * a write transaction's ``BEGIN`` travels with its first statement, and writes whose results
      the rules never read (``INSERT``/``UPDATE``/``DELETE`` without ``RETURNING``, sent with
      :meth:`execute`) travel with the next statement, or with the ``COMMIT``. They still run
      before that statement, in order, in the same transaction, so locks, constraints and results
      are the same; only the moment an error is *reported* moves, and any error fails the whole
      transaction either way;
    * a read needs no ``BEGIN``/``COMMIT`` at all: under READ COMMITTED every statement takes its
      own snapshot anyway, so each read statement simply runs on its own.
    """

    def __init__(self, conn: Any, *, write: bool, batch: bool = True) -> None:
        """``batch=False`` (``server.fast_paths: false``): each statement goes alone, as plain SQL,
        a write transaction's BEGIN alone before its first: slower, the same results."""
        cursor = conn.cursor()
        super().__init__(cursor, POSTGRESQL)
        self.mogrify: Callable[[str, tuple[Any, ...]], bytes] = cursor.mogrify  # psycopg2's, not the DB-API's
        self.conn = conn
        self.prepared: dict[str, tuple[str, str] | None] = conn.prepared
        self.write = write
        self.batch = batch
        self.pending: list[str] = ["BEGIN"] if write else []
        self.sent = False  # has anything of this transaction reached the server?
        self.codec = psycopg2.extensions.encodings.get(conn.encoding, "utf-8")

    # -- what the rules call ----------------------------------------------------------------------

    def execute(self, sql: str, params: Any = ()) -> None:
        text = self._text(sql, tuple(params))
        if self.write and self.batch and _deferrable(sql):
            self.pending.append(text)
        else:
            self._send(text)

    def take_locks(self, sql: str, params: Any = ()) -> None:
        """Send the locking statement with the next one (in a write transaction): PostgreSQL runs
        it first and the next statement starts only once its locks are held."""
        text = self._text(sql, tuple(params))
        if self.write and self.batch:
            self.pending.append(text)
        else:
            self._send(text)

    def all(self, sql: str, params: Any = ()) -> list[Any]:
        self._send(self._text(sql, tuple(params)))
        return self._rows()

    def scalar(self, sql: str, params: Any = ()) -> Any:
        self._send(self._text(sql, tuple(params)))
        rows = self.cursor.fetchall()
        return rows[0][0] if rows else None

    # -- the transaction --------------------------------------------------------------------------

    def commit(self) -> None:
        """Send what is pending and COMMIT, in one round trip (nothing when nothing was begun)."""
        if self.write and (self.sent or len(self.pending) > 1):
            self._send("COMMIT")
        self.pending.clear()

    def rollback(self) -> None:
        self.pending.clear()
        if self.write and self.sent:
            self.cursor.execute("ROLLBACK")

    # -- sending ----------------------------------------------------------------------------------

    def _send(self, text: str) -> None:
        if self.pending and not self.batch:  # only the BEGIN waits unbatched
            for pending in self.pending:
                self.cursor.execute(pending)
            self.pending.clear()
        elif self.pending:
            text = "; ".join([*self.pending, text])
            self.pending.clear()
        self.sent = True
        self.cursor.execute(text)

    def _text(self, sql: str, params: tuple[Any, ...]) -> str:
        """The statement as the text to send: ``EXECUTE name(values)``, or the plain SQL."""
        entry: tuple[str, str] | Literal[False] | None = self.prepared.get(sql, False) if self.batch else None
        if entry is False:
            entry = self._prepare(sql, len(params))
        if entry is None:
            if not params:
                return sql
            return self.mogrify(self.dialect.sql(sql), params).decode(self.codec)
        if not params:
            return entry[1]
        return self.mogrify(entry[1], params).decode(self.codec)

    def _prepare(self, sql: str, count: int) -> tuple[str, str] | None:
        if len(self.prepared) >= MAX_PREPARED or not sql.lstrip()[:6].upper().startswith(_PREPARABLE):
            self.prepared[sql] = None
            return None
        name = f"sip_{len(self.prepared)}"
        prepare = f"PREPARE {name} AS {numbered_placeholders(sql)}"
        in_transaction = self.write
        if in_transaction:  # a failed PREPARE must not abort the transaction: a savepoint around it
            if self.pending:
                self._send("SELECT 1")  # report the pending writes' errors as theirs
            prepare = f"SAVEPOINT sip_prepare; {prepare}; RELEASE SAVEPOINT sip_prepare"
        try:
            self.cursor.execute(prepare)
        except (psycopg2.ProgrammingError, psycopg2.DataError, psycopg2.NotSupportedError):
            if in_transaction:
                self.cursor.execute("ROLLBACK TO SAVEPOINT sip_prepare")
            self.prepared[sql] = None
            return None
        finally:
            self.sent = self.sent or in_transaction
        call = f"EXECUTE {name}" + (f"({', '.join(['%s'] * count)})" if count else "")
        self.prepared[sql] = entry = (name, call)
        return entry


def _deferrable(sql: str) -> bool:
    head = sql.lstrip()[:6].upper()
    return head in ("INSERT", "UPDATE", "DELETE") and "RETURNING" not in sql.upper()


def describe_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` for logs and errors: never the password."""
    try:
        parts = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return "(unparsable dsn)"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    user = parts.get("user")
    return f"{user + '@' if user else ''}{host}:{port}/{parts.get('dbname') or user or ''}"


class PostgreSQLBackend(SQLBackend):
    """See the module docstring. Construct as ``PostgreSQLBackend(name=..., options=..., reactor=...)``."""

    dialect = POSTGRESQL
    log = logger()

    def __init__(
        self,
        name: str = "postgresql",
        options: Mapping[str, Any] | None = None,
        reactor: Any = None,
        *,
        synchronous: bool | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.name = name
        source = Options("postgresql", name, BackendConfigError)
        chosen = OPTIONS.read(options or {}, source.root())
        dsn = chosen["dsn"]
        if not dsn.strip():
            raise source.missing(source.root().child("dsn"), OPTIONS.key("dsn"))
        try:
            parsed = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.Error as exc:
            raise BackendConfigError(
                f"postgresql backend {name!r}: 'dsn' is not a libpq connection string: {exc}"
            ) from None
        self.dsn = dsn
        self.where = describe_dsn(dsn)
        self.batch_statements: bool = chosen["batch_statements"]
        self.pool_min: int = chosen["pool"]["min"]
        self.pool_max: int = chosen["pool"]["max"]
        if self.pool_min > self.pool_max:
            raise BackendConfigError(
                f"postgresql backend option 'pool': expected 0 <= min <= max and max >= 1,"
                f" got min {self.pool_min}, max {self.pool_max}"
            )
        self.statement_timeout: int = chosen["statement_timeout"]
        self.connect_timeout: float = chosen["connect_timeout"]
        self.seed: str | None = chosen["seed"] or None
        self.synchronous = chosen["synchronous"] if synchronous is None else bool(synchronous)
        self._connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed:
            self._connect_args["connect_timeout"] = max(1, round(self.connect_timeout))
        if "application_name" not in parsed:
            self._connect_args["application_name"] = f"sipserver/{name}"
        for key, value in DEAD_PEER_DETECTION.items():
            if key not in parsed:
                self._connect_args[key] = value
        self._reactor = reactor
        self.pool = ConnectionPool(
            self._connect,
            minimum=min(self.pool_min, 1) if self.synchronous else self.pool_min,
            maximum=1 if self.synchronous else self.pool_max,
            reactor=reactor,
            name=name,
            threads=not self.synchronous,
        )
        self._ready = False
        self._starting: Deferred[None] | None = None

    # -- connections ------------------------------------------------------------------------------

    def _connect(self) -> Any:
        """A new connection with this backend's session settings (adbapi's ``cp_openfun``)."""
        conn = psycopg2.connect(self.dsn, connection_factory=_Connection, **self._connect_args)
        try:
            conn.autocommit = True  # PgTx sends BEGIN and COMMIT itself, with other statements
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (self.statement_timeout,))
        except BaseException:
            conn.close()
            raise
        return conn

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return BackendUnavailable(f"postgresql {self.where}: {what}: {reason}")

    # -- running SQL ------------------------------------------------------------------------------

    def _transaction(self, cancelled: Any, write: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(tx, ...)`` in one transaction, retrying as the module docstring says."""
        conflicts = 0
        reconnected = False
        while True:
            if cancelled is not None and cancelled.is_set():
                raise _Skipped()
            try:
                conn = self.pool.acquire(fresh=reconnected)
            except psycopg2.Error as exc:
                raise self._unavailable("cannot connect", exc) from None
            committing = False
            tx = PgTx(conn, write=write, batch=self.batch_statements)
            try:
                result = fn(tx, *args, **kwargs)
                if cancelled is not None and cancelled.is_set():
                    tx.rollback()  # the terminal was told it failed: make that true
                    self.pool.release(conn)
                    raise _Skipped()
                committing = write
                tx.commit()
            except psycopg2.Error as exc:
                broken = bool(conn.closed) or isinstance(exc, psycopg2.InterfaceError)
                if exc.pgcode == REPLAN_CODE and "cached plan" in str(exc) and conflicts < CONFLICT_RETRIES:
                    conflicts += 1
                    self.pool.release(conn, broken=True)
                    continue
                if not broken:
                    try:
                        tx.rollback()
                    except psycopg2.Error:
                        broken = True
                self.pool.release(conn, broken=broken)
                if broken:
                    self.pool.discard_idle()  # its siblings died with it, most likely
                    if not committing and not reconnected:
                        reconnected = True
                        self.log.info(
                            "postgresql {backend}: connection lost ({why}); retrying on a new connection",
                            backend=self.name,
                            why=" ".join(str(exc).split()),
                        )
                        continue
                    what = "connection lost during COMMIT (the outcome is unknown)" if committing else "connection lost"
                    raise self._unavailable(what, exc) from None
                if exc.pgcode in CONFLICT_CODES and conflicts < CONFLICT_RETRIES:
                    conflicts += 1
                    time.sleep(random.uniform(0, 0.005 * 2**conflicts))
                    continue
                if not isinstance(exc, psycopg2.OperationalError) and exc.pgcode not in CONFLICT_CODES:
                    self.log.failure(
                        "postgresql {backend}: error in {fn}", backend=self.name, fn=getattr(fn, "__name__", fn)
                    )
                raise self._unavailable(getattr(fn, "__name__", "query"), exc) from None
            except _Skipped:
                raise
            except BaseException:
                # A fault in the rules (or a data error while seeding): nothing is committed.
                try:
                    tx.rollback()
                    self.pool.release(conn)
                except psycopg2.Error:
                    self.pool.release(conn, broken=True)
                raise
            self.pool.release(conn)
            return result

    def _run(self, write: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        if not self._ready:
            return fail(BackendUnavailable(f"postgresql backend {self.name!r} is not started"))
        d = self.pool.submit(self._transaction, write, fn, *args, **kwargs)
        d.addErrback(self._stopped)
        return d

    def _stopped(self, failure: Any) -> Any:
        if failure.check(PoolStopped):
            raise BackendUnavailable(f"postgresql backend {self.name!r} is stopped")
        return failure

    def read_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return self._run(False, fn, *args, **kwargs)

    def write_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return self._run(True, fn, *args, **kwargs)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Connect, check the schema, seed an empty database; BackendUnavailable when unreachable."""
        if self._ready:
            return succeed(None)
        self.pool.start()
        d = self.pool.submit(self._open)
        self._starting = d

        def done(result: Any) -> Any:
            self._starting = None
            return result

        d.addBoth(done)
        return d

    def _open(self, cancelled: Any) -> None:
        try:
            self._transaction(None, False, self._check_schema)
            if self.seed and self._transaction(None, False, loader.is_empty):
                self._transaction(None, True, self._seed, self.seed, self.now())
            conns = [self.pool.acquire(fresh=True) for _ in range(self.pool.minimum - self.pool.idle_count())]
            for conn in conns:
                self.pool.release(conn)
        except psycopg2.Error as exc:
            self.pool.discard_idle()
            raise self._unavailable("cannot connect", exc) from None
        except loader.DataError as exc:
            self.pool.discard_idle()
            raise BackendConfigError(str(exc)) from exc
        except BaseException:
            self.pool.discard_idle()
            raise
        self._ready = True
        self.log.info(
            "postgresql {backend}: connected to {where}, schema version {version}, pool {min}..{max}",
            backend=self.name,
            where=self.where,
            version=schema.code_version(),
            min=self.pool_min,
            max=self.pool_max,
        )

    def _check_schema(self, tx: Tx) -> int:
        have, want = schema.database_version(tx), schema.code_version()
        if have < want:
            raise BackendConfigError(
                f"postgresql {self.where}: database at schema version {have}, this sipserver needs {want}:"
                f" run `sipserver migrate --config CONFIG --backend {self.name}`"
            )
        if have > want:
            raise BackendConfigError(
                f"postgresql {self.where}: database at schema version {have}, newer than this sipserver's {want}:"
                " upgrade sipserver"
            )
        return have

    @staticmethod
    def _seed(tx: Tx, path: str, now: Any) -> dict[str, int] | None:
        # Several daemons may start at once on an empty database: one seeds, the others see it done.
        tx.execute("SELECT pg_advisory_xact_lock(?)", (SEED_LOCK,))
        if not loader.is_empty(tx):
            return None
        return loader.load_data_file(tx, path, now)

    def migrate(self) -> Deferred[int]:
        """Apply the pending migrations in one transaction under an advisory lock; the version now."""

        def work(_cancelled: Any = None) -> int:
            try:
                conn = self._connect()
            except psycopg2.Error as exc:
                raise self._unavailable("cannot connect", exc) from None
            try:
                conn.autocommit = False  # one transaction for every pending migration
                with conn.cursor() as cursor:
                    tx = Tx(cursor, POSTGRESQL)
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
                    applied = schema.apply_migrations(tx, self.now())
                    version = schema.database_version(tx)
                conn.commit()
            except psycopg2.Error as exc:
                raise BackendConfigError(f"postgresql {self.where}: migration failed: {exc}") from None
            finally:
                conn.close()
            if applied:
                self.log.info("postgresql {backend}: applied migrations {applied}", backend=self.name, applied=applied)
            return version

        if self.synchronous:
            return self.pool.submit(work)
        reactor = self._get_reactor()
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def health(self) -> Deferred[bool]:
        """SELECT 1 within :data:`HEALTH_TIMEOUT` seconds: True or False, never an error."""
        if not self._ready:
            if self._starting is None:
                return succeed(False)
            started: Deferred[None] = Deferred()

            def relay(result: object) -> object:
                started.callback(None)
                return result

            self._starting.addBoth(relay)
            return started.addCallback(lambda _: self.health() if self._ready else succeed(False))
        d = self.run_read(lambda tx: tx.scalar("SELECT 1") == 1)
        if not self.synchronous:
            d.addTimeout(HEALTH_TIMEOUT, self._get_reactor())
        d.addErrback(self._health_failed)
        return d

    def _health_failed(self, failure: Any) -> bool:
        if not failure.check(BackendUnavailable, TimeoutError, CancelledError):
            self.log.failure("postgresql {backend}: health check failed", failure, backend=self.name)
        return False

    def stop(self) -> Deferred[None]:
        """Stop the worker threads and close every connection."""
        self._ready = False
        self.pool.stop()
        return succeed(None)
