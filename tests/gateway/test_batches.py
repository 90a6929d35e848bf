"""The OpenAI Batch API on the gateway, with the official openai SDK, over fake replicas:
round trip, validation errors, cancel, expiry, retries of refused lines, tenancy, limits and
malformed uploads. The same API on the real CPU stack: tests/stack/test_batches_stack.py."""

from __future__ import annotations

import collections
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import orjson
import pytest
from batch_support import all_records, chat_line, jsonl, records, upload, wait_for, wait_until_ended
from gateway_support import ADMIN_KEY, KEYS, PUBLIC_MODEL, USER_KEY, FakeStack
from openai import OpenAI

OTHER_KEY = "sk-batch-0123456789"  # the key named "batcher" in KEYS


@pytest.fixture
def batch_stack(make_stack: Callable[..., FakeStack], tmp_path: Path) -> Callable[..., FakeStack]:
    """A keyed fake stack whose Batch API keeps its state in this test's tmp_path."""

    def make(**batches: Any) -> FakeStack:
        return make_stack(auth=KEYS, batches={"data_dir": str(tmp_path / "data"), **batches})

    return make


def sdk(stack: FakeStack, key: str = USER_KEY) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/completions"])
def test_sdk_round_trip_every_custom_id_once(
    batch_stack: Callable[..., FakeStack], endpoint: Literal["/v1/chat/completions", "/v1/completions"]
) -> None:
    stack = batch_stack()
    client = sdk(stack)
    lines = [chat_line(f"req-{i}", PUBLIC_MODEL, f"line {i}") for i in range(30)]
    if endpoint == "/v1/completions":
        lines = [
            {**line, "url": endpoint, "body": {"model": PUBLIC_MODEL, "prompt": f"line {i}", "max_tokens": 4}}
            for i, line in enumerate(lines)
        ]
    file_id = upload(client, jsonl(lines))
    assert client.files.retrieve(file_id).purpose == "batch"
    batch = client.batches.create(
        input_file_id=file_id, endpoint=endpoint, completion_window="24h", metadata={"job": "nightly"}
    )
    assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
    batch = wait_until_ended(client, batch.id)

    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (30, 30, 0)
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.model == PUBLIC_MODEL
    assert batch.error_file_id is None
    out = records(client, batch.output_file_id)
    assert collections.Counter(r["custom_id"] for r in out) == {f"req-{i}": 1 for i in range(30)}
    for record in out:
        assert record["error"] is None and record["id"].startswith("batch_req_")
        assert record["response"]["status_code"] == 200
        assert record["response"]["body"]["model"] == PUBLIC_MODEL  # the public name, as live answers
    assert batch.usage is not None and batch.usage.output_tokens > 0
    # Sent as batch-class requests: the batch replica's priority went with every line.
    sent = [r for r in stack.pp.requests + stack.tp.requests if "line " in orjson.dumps(r).decode()]
    assert len(sent) == 30 and all(r.get("priority") == 10 for r in stack.pp.requests)
    metrics = httpx.get(f"{stack.root_url}/metrics").text
    assert 'tandem_gateway_batches{model="tandem-test",status="completed"} 1.0' in metrics
    assert 'tandem_gateway_batch_lines_total{key="user",model="tandem-test",outcome="completed"} 30.0' in metrics
    assert (
        'tandem_gateway_tokens_total{key="user",kind="completion",model="tandem-test",traffic_class="batch"}' in metrics
    )
    assert batch.id in [b.id for b in client.batches.list()]


def test_validation_errors_name_their_lines(batch_stack: Callable[..., FakeStack]) -> None:
    stack = batch_stack()
    client = sdk(stack)
    good = chat_line("a", PUBLIC_MODEL)
    data = b"\n".join(
        [
            orjson.dumps(good),
            b"{not json",
            orjson.dumps({**chat_line("b", PUBLIC_MODEL), "method": "GET"}),
            orjson.dumps({**chat_line("c", PUBLIC_MODEL), "url": "/v1/embeddings"}),
            orjson.dumps(chat_line("a", PUBLIC_MODEL)),
            orjson.dumps(chat_line("d", "no-such-model")),
            orjson.dumps({**chat_line("e", PUBLIC_MODEL), "url": "/v1/completions"}),
            orjson.dumps(
                {
                    "custom_id": "f",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": PUBLIC_MODEL, "messages": []},
                }
            ),
        ]
    )
    batch = client.batches.create(
        input_file_id=upload(client, data), endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_until_ended(client, batch.id)
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "invalid_method", "method"),
        (4, "invalid_url", "url"),
        (5, "duplicate_custom_id", "custom_id"),
        (6, "model_not_found", "body.model"),
        (7, "mismatched_endpoint", "url"),
        (8, "invalid_request", "body.messages"),
    ]
    assert not stack.pp.requests and not stack.tp.requests  # nothing of a failed file runs


def test_not_jsonl_and_empty_files_fail_validation(batch_stack: Callable[..., FakeStack]) -> None:
    client = sdk(batch_stack())
    for data, code in ((b"\x89PNG\r\n\x1a\n\x00\x00binary", "invalid_json_line"), (b"\n\n", "empty_file")):
        batch = client.batches.create(
            input_file_id=upload(client, data), endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_until_ended(client, batch.id)
        assert batch.status == "failed" and batch.errors and batch.errors.data
        assert (batch.errors.data[0].line, batch.errors.data[0].code) == (1, code)


def test_refused_lines_are_sent_again_and_errors_kept(batch_stack: Callable[..., FakeStack]) -> None:
    stack = batch_stack(per_batch_concurrency=1, global_concurrency=1)
    stack.pp.fail_next(400, 1)  # a final answer: the line fails, its body kept in the error file
    stack.pp.fail_next(503, 2)  # refusals: the next line is sent again until it is answered
    client = sdk(stack)
    lines = [chat_line(f"r{i}", PUBLIC_MODEL) for i in range(4)]
    batch = client.batches.create(
        input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_until_ended(client, batch.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 1)
    errors = records(client, batch.error_file_id)
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("r0", 400)]
    assert "error" in errors[0]["response"]["body"]
    assert sorted(r["custom_id"] for r in records(client, batch.output_file_id)) == ["r1", "r2", "r3"]


def test_cancel_stops_dispatch_and_aborts_running_lines(batch_stack: Callable[..., FakeStack]) -> None:
    stack = batch_stack(per_batch_concurrency=2, global_concurrency=2)
    stack.pp.first_token_delay_s = 0.3
    client = sdk(stack)
    lines = [chat_line(f"c{i}", PUBLIC_MODEL) for i in range(40)]
    batch = client.batches.create(
        input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(client, batch.id, lambda b: b.request_counts is not None and b.request_counts.completed >= 2)
    stack.pp.first_token_delay_s = 30.0  # the lines running now are still running when cancelled
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    batch = wait_until_ended(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    sent = len(stack.pp.requests)
    every = all_records(client, batch)
    assert collections.Counter(r["custom_id"] for r in every) == {f"c{i}": 1 for i in range(40)}
    cancelled = [r for r in every if r["error"] is not None]
    assert cancelled and all(r["error"]["code"] == "batch_cancelled" for r in cancelled)
    assert len(every) - len(cancelled) == batch.request_counts.completed  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while len(stack.pp.aborted) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.pp.aborted, "the lines running at cancel were not aborted on the replica"
    time.sleep(0.5)
    assert len(stack.pp.requests) == sent, "lines were sent after the batch was cancelled"
    with pytest.raises(openai.ConflictError):
        completed = client.batches.create(
            input_file_id=upload(client, jsonl(lines[:1])), endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_until_ended(client, completed.id)
        client.batches.cancel(completed.id)


def test_expired_batch_keeps_what_completed(batch_stack: Callable[..., FakeStack]) -> None:
    stack = batch_stack(per_batch_concurrency=1, global_concurrency=1, completion_window_s=3)
    stack.pp.first_token_delay_s = 0.25
    client = sdk(stack)
    lines = [chat_line(f"x{i}", PUBLIC_MODEL) for i in range(200)]
    batch = client.batches.create(
        input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.expires_at is not None and batch.expires_at - batch.created_at <= 4
    batch = wait_until_ended(client, batch.id)
    assert batch.status == "expired" and batch.expired_at
    done = records(client, batch.output_file_id)
    expired = records(client, batch.error_file_id)
    assert done and all(r["response"]["status_code"] == 200 for r in done)
    assert expired and all(r["error"]["code"] == "batch_expired" and r["response"] is None for r in expired)
    assert collections.Counter(r["custom_id"] for r in done + expired) == {f"x{i}": 1 for i in range(200)}


def test_keys_see_and_cancel_only_their_own(batch_stack: Callable[..., FakeStack]) -> None:
    stack = batch_stack()
    stack.pp.first_token_delay_s = 0.5
    user, other, admin = sdk(stack), sdk(stack, OTHER_KEY), sdk(stack, ADMIN_KEY)
    file_id = upload(user, jsonl([chat_line(f"t{i}", PUBLIC_MODEL) for i in range(4)]))
    batch = user.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    for call in (
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.delete(file_id),
        lambda: other.batches.retrieve(batch.id),
        lambda: other.batches.cancel(batch.id),
        lambda: other.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    own = upload(other, jsonl([chat_line("o", PUBLIC_MODEL)]))
    assert [f.id for f in other.files.list()] == [own]
    assert file_id not in [f.id for f in other.files.list()] and not list(other.batches.list())
    assert {file_id, own} <= {f.id for f in admin.files.list()}
    assert batch.id in [b.id for b in admin.batches.list()]
    assert admin.batches.retrieve(batch.id).id == batch.id
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=stack.base_url, api_key="sk-wrong", max_retries=0).files.list()
    wait_until_ended(user, batch.id)
    assert user.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        user.files.retrieve(file_id)


def test_list_pagination(batch_stack: Callable[..., FakeStack]) -> None:
    client = sdk(batch_stack())
    file_id = upload(client, jsonl([chat_line("p", PUBLIC_MODEL)]))
    ids = [
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK follows `after`
    for batch_id in ids:
        wait_until_ended(client, batch_id)


def test_limits_and_bad_uploads(batch_stack: Callable[..., FakeStack]) -> None:
    stack = batch_stack(max_file_bytes=4096, max_file_lines=3)
    client = sdk(stack)
    with pytest.raises(openai.APIStatusError) as too_big:
        upload(client, b"x" * 20_000)
    assert too_big.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="more than 3 lines"):
        upload(client, jsonl([chat_line(f"l{i}", PUBLIC_MODEL) for i in range(4)]))
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="fine-tune")
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    raw = httpx.post(f"{stack.base_url}/files", content=b"{}", headers={**headers, "content-type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == 400
    bad = httpx.post(
        f"{stack.base_url}/batches",
        json={"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "1h"},
        headers=headers,
    )
    assert bad.status_code == 400 and "completion_window" in bad.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.batches.create(
            input_file_id="file-x", endpoint="/v1/chat/completions", completion_window="24h", metadata={"k": "v" * 513}
        )
    huge = httpx.post(f"{stack.base_url}/batches", content=b"{" + b" " * 100_000 + b"}", headers=headers)
    assert huge.status_code == 413
    assert httpx.get(f"{stack.root_url}/health").status_code == 200  # nothing of this took it down


def test_a_huge_upload_is_refused_before_its_body_is_read(batch_stack: Callable[..., FakeStack]) -> None:
    """A client announcing 1 GB gets its 413 after sending a few bytes: the gateway answers
    from the Content-Length and never waits for (or reads) the rest."""
    stack = batch_stack()
    host, port = stack.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    request = (
        "POST /v1/files HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {USER_KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {1024**3}\r\n\r\n--xyz\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "connection closed without an answer"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_chunked_upload_over_the_limit_is_cut_off(make_stack: Callable[..., FakeStack], tmp_path: Path) -> None:
    """Without a Content-Length the 413 comes as soon as the bytes received pass the limit:
    the client is still sending (it would send 640 MB) when the answer arrives."""
    stack = make_stack(auth=KEYS, batches={"data_dir": str(tmp_path), "max_file_bytes": 100_000})
    host, port = stack.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    head = (
        "POST /v1/files HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {USER_KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    chunk = b"x" * 65536
    sent = 0
    answer = b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        while sent < 640 * 1024 * 1024:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answer = sock.recv(65536)
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                answer = sock.recv(65536)  # closed on us: the answer is already there
                break
            sent += len(chunk)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 50 * 1024 * 1024, f"{sent} bytes sent before the refusal"
    assert not [p for p in (tmp_path / "files").glob("*")], "a refused upload left a file behind"
