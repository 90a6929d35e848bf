"""Schema versions of the gateway's SQLite stores (issue 25): a batch database from before versions
is migrated in place with its data, and a database written by a newer Tandem is refused with a
message that says so, by the batch store and by the gateway's keys and usage store (which then
does not start)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from gateway_support import FakeStack

from gateway import state_store
from gateway.auth import KeyRing, key_digest
from gateway.batches import store as batch_store
from gateway.batches.store import BatchStore, StoreBusy
from gateway.key_admin import KeyAdmin
from gateway.sqlite_schema import migrate
from gateway.state_store import DATABASE, SCHEMA_VERSION, StateStore


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def test_a_batch_database_from_before_versions_is_migrated_with_its_data(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "batches.sqlite3") as db:  # as the first release wrote it
        db.executescript(batch_store._MIGRATIONS[0])
        db.execute("INSERT INTO files (id, owner, purpose, doc) VALUES ('file-1', 'me', 'batch', '{}')")
    assert user_version(tmp_path / "batches.sqlite3") == 0
    store = BatchStore(tmp_path)
    try:
        assert user_version(tmp_path / "batches.sqlite3") == batch_store.SCHEMA_VERSION == 1
        rows = store._db.execute("SELECT id, owner FROM files").fetchall()
        assert rows == [("file-1", "me")]
    finally:
        store.close()
    BatchStore(tmp_path).close()  # opening a current database again changes nothing


def test_a_batch_database_from_a_newer_tandem_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "batches.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreBusy, match="schema version 99.*newer Tandem"):
        BatchStore(tmp_path)
    with sqlite3.connect(tmp_path / "batches.sqlite3") as db:
        db.execute("PRAGMA user_version = 0")
    BatchStore(tmp_path).close()


def test_the_gateway_store_is_created_at_the_current_version(tmp_path: Path) -> None:
    StateStore(tmp_path).close()
    assert user_version(tmp_path / DATABASE) == SCHEMA_VERSION


def test_a_gateway_store_from_a_newer_tandem_stops_the_start(
    make_stack: Callable[..., FakeStack], tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / DATABASE) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match=f"did not start: .*schema version {SCHEMA_VERSION + 1}.*newer Tandem"):
        make_stack(batches={"data_dir": str(tmp_path)})


def test_a_gateway_store_of_version_1_keeps_its_keys_with_every_model(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DATABASE, isolation_level=None) as db:  # as issue 25's release wrote it
        migrate(db, state_store._MIGRATIONS[:1], tmp_path / DATABASE)
        db.execute(
            "INSERT INTO keys (name, digest, prefix, admin, created_at) VALUES ('ops', ?, 'tdm-abcd', 1, 1.0)",
            (key_digest("tdm-old-secret"),),
        )
    assert user_version(tmp_path / DATABASE) == 1
    store = StateStore(tmp_path)
    try:
        assert user_version(tmp_path / DATABASE) == SCHEMA_VERSION == 2
        (ops,) = store.keys()
        assert (ops.name, ops.admin, ops.models) == ("ops", True, None)
        ring = KeyRing([])
        KeyAdmin(ring, {"tandem-test"}).load(store)
        assert ring.authenticate("Bearer tdm-old-secret").may_use(["tandem-test"])
    finally:
        store.close()
