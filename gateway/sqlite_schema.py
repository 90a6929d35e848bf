"""Versioned SQLite schemas: each of the gateway's databases (gateway/state_store.py's keys and
usage, gateway/batches/store.py's batches) is brought to its current schema by numbered
migrations, and one written by a newer Tandem is refused instead of being misread.

The version is SQLite's own `PRAGMA user_version` (sqlite.org/pragma.html#pragma_user_version): an
integer in the database header, 0 in a new or pre-versioning database. Migration N takes a
database from version N-1 to N, and the version is set in the same transaction as the
migration's statements, so a crash leaves the database at one version or the next, never between.
A migration must therefore be written so that it also applies to a pre-versioning database of the
same shape (the first migration of the batch store uses CREATE ... IF NOT EXISTS for that reason).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


class SchemaTooNew(RuntimeError):
    """The database was written by a newer Tandem than this one: reading it could lose data."""


def migrate(db: sqlite3.Connection, migrations: Sequence[str], path: Path) -> int:
    """Apply the migrations `db` has not had yet (migrations[i] takes it to version i + 1) and
    return the version it is now at. The connection must be in autocommit mode
    (isolation_level=None): each migration runs in its own explicit transaction."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    latest = len(migrations)
    if current > latest:
        raise SchemaTooNew(
            f"{path} has schema version {current}, newer than the {latest} this Tandem knows: it was written "
            "by a newer Tandem; upgrade this one, or give it another data directory"
        )
    for version in range(current + 1, latest + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, migrations[version - 1].split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")  # an integer of ours: no injection
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return latest
