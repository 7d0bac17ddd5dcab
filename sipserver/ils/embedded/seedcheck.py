"""A seed data file checked before the daemon opens a port.

A backend loads its ``seed`` file when it starts, after the listeners are open: a file it refused
would have the daemon answer terminals (98 on-line, logins accepted) for a moment and then exit.
Loading the file into a throw-away in-memory database first, the way seeding an empty database
would, finds every error the real load would find (a bad value, a loan of a patron the file does
not have) while nothing is listening yet, and ``twistd sip --check`` finds them too.
"""

from __future__ import annotations

import datetime
import sqlite3

from sipserver.ils.embedded import loader, schema
from sipserver.ils.embedded.db.dialect import SQLITE, Tx


def check_data_file(path: str, now: datetime.datetime) -> dict[str, int]:
    """Load ``path`` into an empty in-memory database and throw it away; the counts per section.

    Raises :class:`~sipserver.ils.embedded.loader.DataError` (one line naming the file and the key)
    for a file the loader refuses."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        tx = Tx(conn.cursor(), SQLITE)
        tx.execute("BEGIN")
        schema.apply_migrations(tx, now)
        return loader.load_data_file(tx, path, now)
    finally:
        conn.close()
