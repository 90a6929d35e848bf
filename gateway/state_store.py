"""The gateway's own durable state: API keys added at runtime and the usage ledger, in one SQLite
database (`gateway.sqlite3`) in the gateway's data directory (gateway.contract.batch_settings.resolve_data_dir,
the directory the Batch API keeps its state in).

Keys are stored as the SHA-256 digest of the secret, never the secret. A slow password hash
(scrypt, PBKDF2) exists to make guessing a low-entropy password expensive; these keys are 256
random bits made by the gateway (gateway.key_admin.new_secret), which no amount of guessing
reaches, so a slow hash would protect nothing and would cost every request milliseconds of CPU
(or a cache holding the secrets in memory). The digest is compared in constant time
(gateway.auth.KeyRing). Only the first characters of each key are kept besides, to tell keys apart
in `gateway keys list`.

The ledger adds up requests, tokens and errors per hour, key name, model and traffic class; the
gateway writes it in batches (gateway.usage), not per request. Schema versions and migrations:
gateway.sqlite_schema. One gateway process per data directory, as for the Batch API: a second
one would not see the keys the first one adds until it restarts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.sqlite_schema import migrate

DATABASE = "gateway.sqlite3"

_MIGRATIONS = (
    """
CREATE TABLE keys (
    name TEXT PRIMARY KEY,
    digest BLOB UNIQUE NOT NULL,
    prefix TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    default_class TEXT,
    requests_per_minute INTEGER,
    tokens_per_minute INTEGER,
    max_concurrent INTEGER,
    created_at REAL NOT NULL,
    expires_at REAL,
    rotated_at REAL
);
CREATE TABLE usage (
    hour INTEGER NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    traffic_class TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, key, model, traffic_class)
);
""",
    # 2: the models a key may use, a JSON list of names or aliases; NULL (every key stored before): every model.
    "ALTER TABLE keys ADD COLUMN models TEXT",
)
SCHEMA_VERSION = len(_MIGRATIONS)

_KEY_COLUMNS = (
    "name, digest, prefix, admin, default_class, requests_per_minute, tokens_per_minute, max_concurrent, "
    "created_at, expires_at, rotated_at, models"
)


@dataclass(frozen=True)
class StoredKey:
    """One key as stored: its digest and settings, never its secret."""

    name: str
    digest: bytes
    prefix: str
    admin: bool
    default_class: str | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    created_at: float
    expires_at: float | None
    rotated_at: float | None = None
    models: tuple[str, ...] | None = None  # None: every model


@dataclass(frozen=True)
class UsageRow:
    """Counts of one (key, model, class) over a period; `hour` is the period's start (unix s)."""

    key: str
    model: str
    traffic_class: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    hour: int = 0


class StateStore:
    """Reads and writes of `gateway.sqlite3`. Thread-safe (one connection behind a lock): the
    ledger is flushed from a worker thread, keys are changed on the event loop."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DATABASE
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
            migrate(self._db, _MIGRATIONS, self.path)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._mutex:
            self._db.close()

    # -- keys --------------------------------------------------------------------------------

    def keys(self) -> list[StoredKey]:
        with self._mutex:
            rows = self._db.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY name").fetchall()
        return [_key_of(row) for row in rows]

    def add_key(self, key: StoredKey) -> None:
        """Record a new key; sqlite3.IntegrityError if its name is taken."""
        with self._mutex:
            self._db.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({', '.join('?' * len(_KEY_COLUMNS.split(',')))})",
                (
                    key.name,
                    key.digest,
                    key.prefix,
                    int(key.admin),
                    key.default_class,
                    key.requests_per_minute,
                    key.tokens_per_minute,
                    key.max_concurrent,
                    key.created_at,
                    key.expires_at,
                    key.rotated_at,
                    _models_column(key.models),
                ),
            )

    def replace_secret(self, name: str, digest: bytes, prefix: str, when: float) -> bool:
        """Give the key `name` a new secret (rotation); False if there is no such key."""
        with self._mutex:
            changed = self._db.execute(
                "UPDATE keys SET digest = ?, prefix = ?, rotated_at = ? WHERE name = ?", (digest, prefix, when, name)
            ).rowcount
        return bool(changed)

    def set_models(self, name: str, models: tuple[str, ...] | None) -> bool:
        """Limit the key `name` to `models` (None: every model); False if there is no such key."""
        with self._mutex:
            changed = self._db.execute(
                "UPDATE keys SET models = ? WHERE name = ?", (_models_column(models), name)
            ).rowcount
        return bool(changed)

    def delete_key(self, name: str) -> bool:
        with self._mutex:
            return bool(self._db.execute("DELETE FROM keys WHERE name = ?", (name,)).rowcount)

    # -- usage -------------------------------------------------------------------------------

    def add_usage(self, rows: Iterable[UsageRow]) -> None:
        """Add counts to the ledger, in one transaction."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO usage (hour, key, model, traffic_class, requests, prompt_tokens, completion_tokens, "
                    "errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hour, key, model, traffic_class) DO UPDATE "
                    "SET requests = requests + excluded.requests, prompt_tokens = prompt_tokens + "
                    "excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens, "
                    "errors = errors + excluded.errors",
                    [
                        (
                            r.hour,
                            r.key,
                            r.model,
                            r.traffic_class,
                            r.requests,
                            r.prompt_tokens,
                            r.completion_tokens,
                            r.errors,
                        )
                        for r in rows
                    ],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def usage(self, since: float, until: float | None = None) -> list[UsageRow]:
        """Totals per (key, model, class) of the hours that start in [since rounded down to the
        hour, until), largest token use first."""
        start = int(since) // 3600 * 3600
        end = int(until) if until is not None else 2**62
        with self._mutex:
            rows = self._db.execute(
                "SELECT key, model, traffic_class, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
                "SUM(errors), MIN(hour) FROM usage WHERE hour >= ? AND hour < ? GROUP BY key, model, traffic_class "
                "ORDER BY SUM(prompt_tokens) + SUM(completion_tokens) DESC, key, model, traffic_class",
                (start, end),
            ).fetchall()
        return [UsageRow(*row) for row in rows]


def _models_column(models: tuple[str, ...] | None) -> str | None:
    return None if models is None else json.dumps(list(models))


def _key_of(row: tuple[Any, ...]) -> StoredKey:
    name, digest, prefix, admin, default_class, rpm, tpm, concurrent, created_at, expires_at, rotated_at, models = row
    return StoredKey(
        name,
        bytes(digest),
        prefix,
        bool(admin),
        default_class,
        rpm,
        tpm,
        concurrent,
        created_at,
        expires_at,
        rotated_at,
        None if models is None else tuple(json.loads(models)),
    )
