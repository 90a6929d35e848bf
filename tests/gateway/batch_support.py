"""Helpers for the Batch API tests: input files, waiting on a batch, reading its output."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import orjson
from openai import OpenAI
from openai.types import Batch

BATCH_DEADLINE_S = 300.0
END_STATES = frozenset({"completed", "failed", "expired", "cancelled"})


def chat_line(custom_id: str, model: str, text: str = "hello", max_tokens: int = 8) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def upload(client: OpenAI, data: bytes, name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="batch").id


def wait_for(
    client: OpenAI, batch_id: str, done: Callable[[Batch], bool], deadline_s: float = BATCH_DEADLINE_S
) -> Batch:
    """Poll the batch until `done` holds (generous deadline: the machine may be loaded)."""
    end = time.monotonic() + deadline_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        if time.monotonic() > end:
            raise AssertionError(f"batch {batch_id} still {batch.status} ({batch.request_counts}) after {deadline_s} s")
        time.sleep(0.2)


def wait_until_ended(client: OpenAI, batch_id: str, deadline_s: float = BATCH_DEADLINE_S) -> Batch:
    return wait_for(client, batch_id, lambda b: b.status in END_STATES, deadline_s)


def records(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines() if line.strip()]


def all_records(client: OpenAI, batch: Batch) -> list[dict[str, Any]]:
    """Output and error file records of an ended batch, together."""
    return records(client, batch.output_file_id) + records(client, batch.error_file_id)
