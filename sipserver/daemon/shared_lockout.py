"""The failed-login lockout of several daemons on one PostgreSQL (``server.lockout.shared``).

Behind a balancer a terminal's connections land on any daemon, so each daemon's own count would
let ``failures`` wrong guesses through per daemon. With ``shared`` naming a postgresql backend,
its database holds the daemons' table (``login_failures``, ``login_locks``: migration 4), and every
process of every daemon uses it:

* before a password is checked, the address's failures within the window and its lock are read,
  and the process's own table takes them (:meth:`~sipserver.accounts.lockout.Lockout.take_entry`):
  one read per login attempt;
* each failure is written, and the write counts the address's failures over all the daemons and
  locks it at the limit; a refusal's reply waits for that write. A success deletes its failures.

The cost is those round trips, each a short transaction on the backend's pool: logins are rare
next to the requests a logged-in terminal makes, so the requests themselves cost nothing more.
When the database cannot be reached the process goes on with its own table, as without
``shared`` (one warning line until it can again): a database outage must not stop terminals
logging in.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from sipserver.accounts.lockout import Lockout, peer_key
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.observe.loglevel import logger

log = logger("sipserver.accounts.lockout")

_NOW = "extract(epoch from clock_timestamp())"
_LOCK_LEFT = f"SELECT locked_until - {_NOW} FROM login_locks WHERE address = ? AND locked_until > {_NOW}"


def _read(tx: Tx, key: str, window: float) -> tuple[list[float], float | None]:
    """The address's failures (their ages in seconds) within the window, and its lock's seconds left."""
    rows = tx.all(
        f"SELECT {_NOW} - failed_at AS age FROM login_failures WHERE address = ? AND failed_at > {_NOW} - ?",
        (key, window),
    )
    left = tx.scalar(
        f"SELECT locked_until - {_NOW} FROM login_locks WHERE address = ? AND locked_until > {_NOW}", (key,)
    )
    return [float(row["age"]) for row in rows], (float(left) if left is not None else None)


def _record_failure(tx: Tx, key: str, failures: int, window: float, duration: float) -> float | None:
    """Count a failure; the lock's seconds left when the address is (now) locked."""
    left = tx.scalar(
        f"SELECT locked_until - {_NOW} FROM login_locks WHERE address = ? AND locked_until > {_NOW}", (key,)
    )
    if left is not None:
        return float(left)  # a locked address's failures count for nothing, as in one process
    tx.execute(f"DELETE FROM login_failures WHERE failed_at <= {_NOW} - ?", (window,))
    tx.execute(f"INSERT INTO login_failures (address, failed_at) VALUES (?, {_NOW})", (key,))
    count = tx.scalar(
        f"SELECT count(*) FROM login_failures WHERE address = ? AND failed_at > {_NOW} - ?", (key, window)
    )
    if int(count) < failures:
        return None
    tx.execute(
        f"INSERT INTO login_locks (address, locked_until) VALUES (?, {_NOW} + ?) "
        "ON CONFLICT (address) DO UPDATE SET locked_until = EXCLUDED.locked_until",
        (key, duration),
    )
    tx.execute("DELETE FROM login_failures WHERE address = ?", (key,))
    return duration


def _forget(tx: Tx, key: str) -> None:
    tx.execute("DELETE FROM login_failures WHERE address = ?", (key,))


class DatabaseLockout:
    """Ties a process's :class:`Lockout` to the shared table (see the module docstring)."""

    def __init__(self, lockout: Lockout, backend: Any) -> None:
        self.lockout = lockout
        self.backend = backend
        self._failing = False
        lockout.share = self.share
        lockout.consult = self.consult

    def consult(self, peer: str) -> Deferred[Any] | None:
        lockout = self.lockout
        if lockout.failures == 0:
            return None
        key = peer_key(peer)
        d = self.backend.read_transaction(_read, key, lockout.window)
        d.addCallback(lambda entry: self._reached(lockout.take_entry(key, *entry)))
        return d.addErrback(self._unreachable)

    def share(self, event: str, key: str) -> Deferred[Any] | None:
        lockout = self.lockout
        if event == "failure":
            d = self.backend.write_transaction(_record_failure, key, lockout.failures, lockout.window, lockout.duration)
            d.addCallback(lambda left: self._reached(lockout.adopt_locks({key: left}) if left else None))
        else:
            d = self.backend.write_transaction(_forget, key)
            d.addCallback(self._reached)
        return d.addErrback(self._unreachable)

    def _reached(self, _: Any) -> None:
        if self._failing:
            self._failing = False
            log.info("the shared lockout's database answers again")

    def _unreachable(self, failure: Any) -> None:
        if not self._failing:
            self._failing = True
            log.warn(
                "the shared lockout's database cannot be reached ({why}): each process counts failed logins "
                "on its own until it can",
                why=failure.getErrorMessage(),
            )
