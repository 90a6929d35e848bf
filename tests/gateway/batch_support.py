"""Helpers for the Batch API tests: input files, waiting on a batch, reading its output."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from openai import OpenAI
from openai.types import Batch

BATCH_DEADLINE_S = 300.0
START_DEADLINE_S = 120.0
# `gateway serve --config FILE --port P`, through the function behind the command.
_SERVE = (
    "import sys; from gateway.server import run_serve_command; run_serve_command(sys.argv[1], port=int(sys.argv[2]))"
)
END_STATES = frozenset({"completed", "failed", "expired", "cancelled"})


def chat_line(custom_id: str, model: str, text: str = "hello", max_tokens: int = 8, **body: Any) -> dict[str, Any]:
    """One input line; `body` adds fields to the request (e.g. vLLM's `ignore_eos`)."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]} | body,
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


@contextmanager
def gateway_process(config_file: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`gateway serve` on `config_file` in a subprocess (one a test can SIGKILL), serving on
    `port` until the block ends; stopped with SIGTERM if it still runs."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(config_file), str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"gateway not serving after {START_DEADLINE_S} s"
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
