"""The batch store's guarantees, without a gateway: a line is counted once however often its
answer is recorded, a finalisation redone after a crash writes the same files with each line once,
one process owns a data directory, and an upload cut short by a crash leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.batches.objects import BatchError, BatchObject
from gateway.batches.store import BatchStore, LineResult, PendingLine, StoreBusy, now, output_file_ids


class Lines:
    def __init__(self, count: int) -> None:
        self.count = count
        self.errors: list[BatchError] = []
        self.model: str | None = "m"

    def lines(self) -> Iterator[PendingLine]:
        for i in range(1, self.count + 1):
            yield PendingLine(i, f"id-{i}", b"{}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BatchStore]:
    opened = BatchStore(tmp_path)
    yield opened
    opened.close()


def started_batch(store: BatchStore, lines: int) -> str:
    batch = BatchObject(
        id="batch_abc",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="validating",
        created_at=now(),
    )
    store.create_batch(batch, "owner")
    assert store.start_lines(batch.id, Lines(lines)).status == "in_progress"
    return batch.id


def answer(custom_id: str, status: int) -> LineResult:
    record = {"id": "r", "custom_id": custom_id, "response": {"status_code": status, "body": {}}, "error": None}
    return LineResult(orjson.dumps(record), status, input_tokens=3, output_tokens=5)


def test_a_line_is_counted_once(store: BatchStore) -> None:
    batch_id = started_batch(store, 3)
    assert store.record(batch_id, 1, answer("id-1", 200))
    assert not store.record(batch_id, 1, answer("id-1", 200))  # a second answer is not counted
    assert store.record(batch_id, 2, answer("id-2", 400))
    stored = store.get_batch(batch_id)
    assert stored is not None
    counts = stored.batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (3, 1, 1)
    assert stored.batch.usage.output_tokens == 10
    assert [line.line_no for line in store.pending_lines(batch_id, 0, 10)] == [3]


def test_finalising_again_writes_the_same_files(store: BatchStore) -> None:
    batch_id = started_batch(store, 3)
    store.record(batch_id, 1, answer("id-1", 200))
    store.record(batch_id, 2, answer("id-2", 500))
    first = store.finalize(batch_id, "expired", ("batch_expired", "late"))
    content = {f: store.file_path(f).read_bytes() for f in output_file_ids(batch_id)}
    again = store.finalize(batch_id, "expired", ("batch_expired", "late"))  # a crash before the status was kept
    assert (first.output_file_id, first.error_file_id) == (again.output_file_id, again.error_file_id)
    assert first.output_file_id is not None and first.error_file_id is not None
    assert store.file_path(first.output_file_id).read_bytes() == content[first.output_file_id]
    errors = [orjson.loads(line) for line in store.file_path(first.error_file_id).read_bytes().splitlines()]
    assert [(e["custom_id"], e["error"] and e["error"]["code"]) for e in errors] == [
        ("id-2", None),
        ("id-3", "batch_expired"),
    ]
    assert again.status == "expired" and again.expired_at
    assert not list(store.files_dir.glob(".upload-*"))


def test_one_process_owns_a_data_directory(store: BatchStore, tmp_path: Path) -> None:
    with pytest.raises(StoreBusy):
        BatchStore(tmp_path)


def test_an_unfinished_upload_is_removed_at_open(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    leftover = tmp_path / "files" / ".upload-0123"
    leftover.write_bytes(b"half a file")
    BatchStore(tmp_path).close()
    assert not leftover.exists()


def test_lines_past_one_chunk_are_all_kept_in_order(store: BatchStore) -> None:
    batch_id = started_batch(store, 1203)  # written and read back in chunks of 500
    assert [line.line_no for line in store.pending_lines(batch_id, 498, 4)] == [499, 500, 501, 502]
    done = store.finalize(batch_id, "cancelled", ("batch_cancelled", "cancelled"))
    assert done.error_file_id is not None and done.output_file_id is None
    ids = [orjson.loads(line)["custom_id"] for line in store.file_path(done.error_file_id).read_bytes().splitlines()]
    assert ids == [f"id-{i}" for i in range(1, 1204)]
