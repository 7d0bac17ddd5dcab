"""Versioned schema migrations shared by the SQL backends.

Migrations are the files ``migrations/NNNN_name.sql`` shipped with this package; ``NNNN`` is the
version they bring the database to. The ``schema_version`` table records each one applied, in the
same transaction as the migration itself. The embedded sqlite backend migrates on start; a
PostgreSQL deployment migrates explicitly and then only :func:`check_schema` runs on start, so that
a daemon never silently changes a shared database.
"""

from __future__ import annotations

import datetime
import re
from importlib import resources

import attrs

from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.interface import BackendConfigError

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The statements in the file: comment lines dropped, split at a semicolon ending a line."""
        lines = [ln for ln in self.sql.splitlines() if not ln.lstrip().startswith("--")]
        parts = re.split(r";[ \t]*$", "\n".join(lines), flags=re.MULTILINE)
        return [p.strip() for p in parts if p.strip()]


def migrations() -> list[Migration]:
    """All migrations shipped with the code, in version order."""
    folder = resources.files("sipserver.ils.embedded").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise BackendConfigError(f"migrations are not numbered 1..n without gaps: {versions}")
    return found


def code_version() -> int:
    """The schema version this code expects."""
    return migrations()[-1].version


def database_version(tx: Tx) -> int:
    """The database's schema version; 0 for an empty database."""
    if not tx.table_exists("schema_version"):
        return 0
    return int(tx.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version") or 0)


def check_schema(tx: Tx) -> int:
    """Refuse a database whose schema is not exactly the one this code was written for."""
    have, want = database_version(tx), code_version()
    if have == want:
        return have
    if have == 0:
        raise BackendConfigError(
            f"database has no sipserver schema (expected version {want}): run the migrations first"
        )
    if have < want:
        raise BackendConfigError(
            f"database schema is at version {have}, older than this sipserver's {want}: run the migrations"
        )
    raise BackendConfigError(
        f"database schema is at version {have}, newer than this sipserver's {want}: upgrade sipserver"
    )


def apply_migrations(tx: Tx, now: datetime.datetime | None = None) -> list[int]:
    """Apply every pending migration inside the caller's transaction; returns the versions applied.

    A database newer than the code is refused rather than touched.
    """
    have, want = database_version(tx), code_version()
    if have > want:
        check_schema(tx)
    stamp = (now or datetime.datetime.now()).replace(microsecond=0).isoformat()
    applied = []
    for migration in migrations():
        if migration.version <= have:
            continue
        for statement in migration.statements():
            tx.execute(tx.dialect.ddl(statement))
        tx.execute(
            "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
            (migration.version, migration.name, stamp),
        )
        applied.append(migration.version)
    return applied
