"""Durable state of the Files and Batch APIs: one SQLite database and a `files/` folder in the
data directory (gateway.contract.batch_settings.resolve_data_dir).

Why SQLite: a batch's per-line progress must survive a SIGKILL of the gateway. Each line's result
is written in one transaction together with the batch's counters (WAL journal: committed means on
disk, even if the process dies the next instant), and a line is only ever moved from `pending` to
`done` once, so a resumed batch neither runs a finished line again nor counts it twice. Output and
error files are written from the database at the end, in line order, one record per line: a
`custom_id` cannot appear twice. Their ids are derived from the batch id, so a finalisation cut
short by a crash is simply redone.

One gateway process owns a data directory at a time (an exclusive flock on `lock`): a second
one would resume the same batches and run their lines twice. It answers 503 instead.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from gateway.batches.objects import (
    UNFINISHED,
    BatchError,
    BatchErrors,
    BatchObject,
    BatchStatus,
    BatchUsage,
    FileObject,
    new_id,
)
from gateway.sqlite_schema import SchemaTooNew, migrate

# Migration 1 is the schema of the first release, whose databases have no version (0): IF NOT
# EXISTS lets it apply to them as well as to a new database (gateway.sqlite_schema).
_MIGRATIONS = (
    """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    body BLOB NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER,
    result BLOB,
    PRIMARY KEY (batch_id, line_no),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS lines_pending ON lines (batch_id, done, line_no);
""",
)
SCHEMA_VERSION = len(_MIGRATIONS)


_CHUNK = 500  # lines per write transaction and per page read
_COUNTS = "doc, total, completed, failed, input_tokens, output_tokens"


class LineSource(Protocol):
    """What start_lines reads: valid lines as they are checked, then the problems and the model."""

    errors: list[BatchError]
    model: str | None

    def lines(self) -> Iterator[PendingLine]: ...


class StoreBusy(RuntimeError):
    """Another gateway process holds the data directory, or a newer Tandem wrote it."""


@dataclass(frozen=True)
class StoredFile:
    file: FileObject
    owner: str
    path: Path


@dataclass(frozen=True)
class StoredBatch:
    batch: BatchObject
    owner: str


@dataclass(frozen=True)
class PendingLine:
    line_no: int
    custom_id: str
    body: bytes


@dataclass(frozen=True)
class LineResult:
    """What one line ended with: the output record (OpenAI's line format) and its token usage."""

    record: bytes
    status_code: int | None
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def now() -> int:
    return int(time.time())


def output_file_ids(batch_id: str) -> tuple[str, str]:
    """The output and error file ids of a batch: fixed, so finalising twice writes the same files."""
    suffix = batch_id.removeprefix("batch_")
    return f"file-out-{suffix}", f"file-err-{suffix}"


class BatchStore:
    """All reads and writes of batch state. Thread-safe (one connection behind a lock): the
    validator and the finaliser run in worker threads, everything else on the event loop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = (data_dir / "lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreBusy(f"the batch data directory {data_dir} is in use by another gateway process") from None
        for leftover in self.files_dir.glob(".upload-*"):
            leftover.unlink(missing_ok=True)  # an upload cut short by a crash: never acknowledged
        self._mutex = threading.RLock()
        self._db = sqlite3.connect(data_dir / "batches.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
        try:
            migrate(self._db, _MIGRATIONS, data_dir / "batches.sqlite3")
        except SchemaTooNew as exc:
            self.close()
            raise StoreBusy(str(exc)) from None

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction under the lock: committed whole, or not at all."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- files -------------------------------------------------------------------------------

    def upload_path(self) -> Path:
        """A temporary path in the files folder for an upload in progress."""
        return self.files_dir / f".upload-{os.urandom(8).hex()}"

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.jsonl"

    def add_file(self, file: FileObject, owner: str, written: Path) -> None:
        """Move a fully written upload into place and record it."""
        os.replace(written, self.file_path(file.id))
        with self._mutex:
            self._db.execute(
                "INSERT OR REPLACE INTO files (id, owner, purpose, doc) VALUES (?, ?, ?, ?)",
                (file.id, owner, file.purpose, file.model_dump_json()),
            )

    def get_file(self, file_id: str) -> StoredFile | None:
        with self._mutex:
            row = self._db.execute("SELECT doc, owner FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            return None
        return StoredFile(FileObject.model_validate_json(row[0]), row[1], self.file_path(file_id))

    def list_files(
        self, owner: str | None, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileObject], bool]:
        rows = self._page("files", owner, after, limit, order, ("purpose", purpose))
        return [FileObject.model_validate_json(r[0]) for r in rows[:limit]], len(rows) > limit

    def delete_file(self, file_id: str) -> None:
        with self._mutex:
            self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.file_path(file_id).unlink(missing_ok=True)

    def _page(
        self, table: str, owner: str | None, after: str | None, limit: int, order: str, extra: tuple[str, Any]
    ) -> list[tuple[Any, ...]]:
        """One page of `table` (newest first for 'desc'), starting after the object `after`."""
        where, args = ["1 = 1"], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if extra[1] is not None:
            where.append(f"{extra[0]} = ?")
            args.append(extra[1])
        direction, compare = ("DESC", "<") if order == "desc" else ("ASC", ">")
        if after is not None:
            where.append(f"seq {compare} COALESCE((SELECT seq FROM {table} WHERE id = ?), -1)")
            args.append(after)
        select = "doc" if table == "files" else _COUNTS
        query = f"SELECT {select} FROM {table} WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT ?"
        with self._mutex:
            return list(self._db.execute(query, (*args, limit + 1)).fetchall())

    # -- batches -----------------------------------------------------------------------------

    def create_batch(self, batch: BatchObject, owner: str) -> None:
        with self._mutex:
            self._db.execute(
                "INSERT INTO batches (id, owner, status, doc) VALUES (?, ?, ?, ?)",
                (batch.id, owner, batch.status, batch.model_dump_json(exclude={"request_counts", "usage"})),
            )

    def get_batch(self, batch_id: str) -> StoredBatch | None:
        with self._mutex:
            row = self._db.execute(
                f"SELECT {_COUNTS}, owner FROM batches WHERE id = ?",
                (batch_id,),
            ).fetchone()
        return None if row is None else StoredBatch(_batch_of(row), row[6])

    def list_batches(self, owner: str | None, after: str | None, limit: int) -> tuple[list[BatchObject], bool]:
        rows = self._page("batches", owner, after, limit, "desc", ("status", None))
        return [_batch_of(r) for r in rows[:limit]], len(rows) > limit

    def unfinished(self) -> list[str]:
        """Ids of every batch not yet at an end state, oldest first (resumed in that order)."""
        marks = ",".join("?" * len(UNFINISHED))
        with self._mutex:
            rows = self._db.execute(f"SELECT id FROM batches WHERE status IN ({marks}) ORDER BY seq", UNFINISHED)
            return [r[0] for r in rows]

    def count_by_status(self) -> dict[str, int]:
        with self._mutex:
            return dict(self._db.execute("SELECT status, COUNT(*) FROM batches GROUP BY status").fetchall())

    def update(self, batch_id: str, **fields: Any) -> BatchObject:
        """Set fields of a batch (status and timestamps); returns it as now stored."""
        with self._transaction():
            return self._update_locked(batch_id, fields)

    def _update_locked(self, batch_id: str, fields: dict[str, Any]) -> BatchObject:
        row = self._db.execute(f"SELECT {_COUNTS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
        batch = _batch_of(row).model_copy(update=fields)
        batch = BatchObject.model_validate(batch.model_dump())
        self._db.execute(
            "UPDATE batches SET status = ?, doc = ? WHERE id = ?",
            (batch.status, batch.model_dump_json(exclude={"request_counts", "usage"}), batch_id),
        )
        return batch

    def start_lines(self, batch_id: str, source: LineSource) -> BatchObject:
        """Record a validated batch's lines and move it to in_progress, or (when the validator,
        which yields the lines and collects the errors, found problems) to failed with those
        errors. The lines are written in short transactions of `_CHUNK` while the validator runs
        outside the lock, so the event loop's own store calls never wait for a whole file. The
        batch stays `validating` until the last transaction: after a crash validation is redone,
        and starts by deleting what the cut-short attempt wrote."""
        with self._transaction():
            self._db.execute("DELETE FROM lines WHERE batch_id = ?", (batch_id,))
        total = 0
        chunk: list[PendingLine] = []
        for line in source.lines():
            chunk.append(line)
            if len(chunk) == _CHUNK:
                total += self._insert_lines(batch_id, chunk)
                chunk = []
        total += self._insert_lines(batch_id, chunk)
        errors = source.errors
        fields: dict[str, Any] = {"status": "in_progress", "in_progress_at": now(), "model": source.model}
        if errors:
            fields = {"status": "failed", "failed_at": now(), "errors": BatchErrors(data=errors)}
        with self._transaction():
            if errors:
                self._db.execute("DELETE FROM lines WHERE batch_id = ?", (batch_id,))
            self._db.execute("UPDATE batches SET total = ? WHERE id = ?", (0 if errors else total, batch_id))
            return self._update_locked(batch_id, fields)

    def _insert_lines(self, batch_id: str, lines: list[PendingLine]) -> int:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO lines (batch_id, line_no, custom_id, body) VALUES (?, ?, ?, ?)",
                [(batch_id, line.line_no, line.custom_id, line.body) for line in lines],
            )
        return len(lines)

    def pending_lines(self, batch_id: str, after_line: int, limit: int) -> list[PendingLine]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT line_no, custom_id, body FROM lines WHERE batch_id = ? AND done = 0 AND line_no > ? "
                "ORDER BY line_no LIMIT ?",
                (batch_id, after_line, limit),
            ).fetchall()
        return [PendingLine(r[0], r[1], bytes(r[2])) for r in rows]

    def record(self, batch_id: str, line_no: int, result: LineResult) -> bool:
        """Store one line's result and count it, once: False if the line was already done."""
        with self._transaction():
            changed = self._db.execute(
                "UPDATE lines SET done = 1, status_code = ?, result = ? "
                "WHERE batch_id = ? AND line_no = ? AND done = 0",
                (result.status_code, result.record, batch_id, line_no),
            ).rowcount
            if changed:
                column = "completed" if result.ok else "failed"
                self._db.execute(
                    f"UPDATE batches SET {column} = {column} + 1, input_tokens = input_tokens + ?, "
                    "output_tokens = output_tokens + ? WHERE id = ?",
                    (result.input_tokens, result.output_tokens, batch_id),
                )
        return bool(changed)

    def finalize(self, batch_id: str, end: BatchStatus, unfinished: tuple[str, str] | None) -> BatchObject:
        """Write the output file (2xx answers) and the error file (other answers, and each line not
        run, recorded with `unfinished` = (code, message)), then move the batch to `end`."""
        output_id, error_id = output_file_ids(batch_id)
        stored = self.get_batch(batch_id)
        assert stored is not None
        tmp_out, tmp_err = self.upload_path(), self.upload_path()
        with tmp_out.open("wb") as out, tmp_err.open("wb") as err:
            counts = self._write_results(batch_id, out, err, unfinished)
            for f in (out, err):
                f.flush()
                os.fsync(f.fileno())
        created = now()
        files: dict[str, str | None] = {"output_file_id": None, "error_file_id": None}
        for field, file_id, tmp, count in (
            ("output_file_id", output_id, tmp_out, counts[0]),
            ("error_file_id", error_id, tmp_err, counts[1]),
        ):
            if count == 0:
                tmp.unlink()
                continue
            name = f"{batch_id}_{'output' if field == 'output_file_id' else 'error'}.jsonl"
            self.add_file(
                FileObject(
                    id=file_id, bytes=tmp.stat().st_size, created_at=created, filename=name, purpose="batch_output"
                ),
                stored.owner,
                tmp,
            )
            files[field] = file_id
        stamp = {
            "completed": "completed_at",
            "expired": "expired_at",
            "cancelled": "cancelled_at",
            "failed": "failed_at",
        }
        return self.update(batch_id, status=end, **files, **{stamp[end]: created})

    def _write_results(
        self, batch_id: str, out: IO[bytes], err: IO[bytes], unfinished: tuple[str, str] | None
    ) -> tuple[int, int]:
        """Every line's record in line order, read a page at a time (the lock is held per page)."""
        written = [0, 0]
        last = 0
        while True:
            with self._mutex:
                rows = self._db.execute(
                    "SELECT line_no, custom_id, done, status_code, result FROM lines "
                    "WHERE batch_id = ? AND line_no > ? ORDER BY line_no LIMIT ?",
                    (batch_id, last, _CHUNK),
                ).fetchall()
            if not rows:
                return written[0], written[1]
            last = rows[-1][0]
            for _, custom_id, done, status_code, result in rows:
                if done:
                    ok = status_code is not None and 200 <= status_code < 300
                    (out if ok else err).write(bytes(result) + b"\n")
                    written[0 if ok else 1] += 1
                elif unfinished is not None:
                    err.write(error_record(custom_id, *unfinished) + b"\n")
                    written[1] += 1


def error_record(custom_id: str, code: str, message: str) -> bytes:
    """An output line for a request that got no answer (OpenAI: `response` null, `error` set)."""
    return orjson.dumps(
        {
            "id": new_id("batch_req_"),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


def _batch_of(row: tuple[Any, ...]) -> BatchObject:
    doc = orjson.loads(row[0])
    total, completed, failed, input_tokens, output_tokens = row[1:6]
    doc["request_counts"] = {"total": total, "completed": completed, "failed": failed}
    doc["usage"] = BatchUsage(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    ).model_dump()
    return BatchObject.model_validate(doc)
