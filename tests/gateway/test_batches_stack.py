"""The Batch API on the real CPU stack (`gateway up`, two vLLM engines), with the official
openai SDK: the SDK's batch example end to end, cancel (the engine aborts what ran), and, on a
second gateway (`gateway serve` with a test config) in front of the same engines, a short
completion window that expires and validation errors. Kept small: the engines are slow here."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Protocol

import httpx
import pytest
import yaml
from batch_support import all_records, chat_line, gateway_process, jsonl, records, upload, wait_for, wait_until_ended
from openai import OpenAI

from deploy.builder import gateway_config
from deploy.plan import ServingPlan
from deploy.ports import free_port


class CpuStack(Protocol):
    """What these tests read of tests/conftest.py's `cpu_stack` fixture."""

    base_url: str
    model: str
    replica_urls: dict[str, str]
    plan: ServingPlan


pytestmark = pytest.mark.stack
STACK_BATCH_DEADLINE_S = 900.0


def test_sdk_batch_example_on_the_cpu_stack(cpu_stack: CpuStack) -> None:
    client = OpenAI(base_url=cpu_stack.base_url, api_key="unused", max_retries=0)
    lines = [chat_line(f"s{i}", cpu_stack.model, f"Write a line about {i}.", max_tokens=12) for i in range(24)]
    batch_input_file = client.files.create(file=("batchinput.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=batch_input_file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"description": "nightly eval job"},
    )
    batch = wait_until_ended(client, batch.id, STACK_BATCH_DEADLINE_S)
    assert batch.status == "completed", batch
    out = records(client, batch.output_file_id)
    assert collections.Counter(r["custom_id"] for r in out) == {f"s{i}": 1 for i in range(24)}
    for record in out:
        assert record["response"]["status_code"] == 200
        body = record["response"]["body"]
        assert body["model"] == cpu_stack.model and body["choices"][0]["message"]["content"] is not None
        assert body["usage"]["completion_tokens"] > 0
    assert batch.usage is not None and batch.usage.output_tokens == sum(
        r["response"]["body"]["usage"]["completion_tokens"] for r in out
    )
    metrics = httpx.get(cpu_stack.base_url.removesuffix("/v1") + "/metrics").text
    # The demo plan keeps auth.per_key_metrics off: the key label is "-", as for live requests.
    assert 'tandem_gateway_batch_lines_total{key="-",model="tandem-demo",outcome="completed"}' in metrics


def _batch_engine_running(cpu_stack: CpuStack) -> float:
    url = cpu_stack.replica_urls["batch"].removesuffix("/v1") + "/metrics"
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("vllm:num_requests_running not in the engine's metrics")


# Work that outlasts the race it stands in, on a fast idle machine too: each line runs to
# max_tokens (the demo model's EOS ignored). On CI's idle 2 cores the batch engine made 48 lines of
# 400 tokens, run together, in under 6 s, before the cancel reached them. The lines' length does
# not make the tests slower: the cancel or the window's end aborts them.
LONG_LINE = {"max_tokens": 1500, "ignore_eos": True}


def test_cancel_on_the_cpu_stack_aborts_on_the_engine(cpu_stack: CpuStack) -> None:
    client = OpenAI(base_url=cpu_stack.base_url, api_key="unused", max_retries=0)
    count = 2 * cpu_stack.plan.gateway.batches.per_batch_concurrency  # two rounds: the second waits on the first
    lines = [chat_line(f"c{i}", cpu_stack.model, f"Tell a long story {i}.", **LONG_LINE) for i in range(count)]
    batch = client.batches.create(
        input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(client, batch.id, lambda b: b.status == "in_progress", STACK_BATCH_DEADLINE_S)
    deadline = time.monotonic() + STACK_BATCH_DEADLINE_S
    while _batch_engine_running(cpu_stack) == 0:  # lines are on the engine
        assert time.monotonic() < deadline, "no batch line ever ran on the batch engine"
        time.sleep(0.2)
    client.batches.cancel(batch.id)
    batch = wait_until_ended(client, batch.id, STACK_BATCH_DEADLINE_S)
    assert batch.status == "cancelled"
    every = all_records(client, batch)
    assert collections.Counter(r["custom_id"] for r in every) == {f"c{i}": 1 for i in range(count)}
    assert any(r["error"] and r["error"]["code"] == "batch_cancelled" for r in every)
    while _batch_engine_running(cpu_stack) > 0:  # the aborts reached the engine
        assert time.monotonic() < deadline, "the batch engine still runs lines of a cancelled batch"
        time.sleep(0.5)


def test_expiry_and_validation_on_real_engines(cpu_stack: CpuStack, tmp_path: Path) -> None:
    """A second gateway with a 20 s window in front of the stack's own engines."""
    config = gateway_config(cpu_stack.plan, cpu_stack.replica_urls)
    config.settings.batches = config.settings.batches.model_copy(
        update={"data_dir": tmp_path / "data", "completion_window_s": 20.0, "per_batch_concurrency": 4}
    )
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    port = free_port()
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    with gateway_process(config_file, port, tmp_path / "gateway.log"):
        bad = jsonl([chat_line("v0", cpu_stack.model), chat_line("v1", "gpt-4o"), chat_line("v0", cpu_stack.model)])
        invalid = client.batches.create(
            input_file_id=upload(client, bad), endpoint="/v1/chat/completions", completion_window="24h"
        )
        # 200 lines of 400 tokens, 4 at a time: about 2 minutes of decode on CI's idle machine, so
        # the 20 s window ends with some lines answered and the rest expired.
        lines = [
            chat_line(f"e{i}", cpu_stack.model, f"Story {i}.", max_tokens=400, ignore_eos=True) for i in range(200)
        ]
        batch = client.batches.create(
            input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
        )
        invalid = wait_until_ended(client, invalid.id, STACK_BATCH_DEADLINE_S)
        assert invalid.status == "failed" and invalid.errors and invalid.errors.data
        assert [(e.line, e.code) for e in invalid.errors.data] == [(2, "model_not_found"), (3, "duplicate_custom_id")]
        batch = wait_until_ended(client, batch.id, STACK_BATCH_DEADLINE_S)
        assert batch.status == "expired", batch
        done, expired = records(client, batch.output_file_id), records(client, batch.error_file_id)
    assert all(r["response"]["status_code"] == 200 for r in done)
    assert expired and all(r["error"]["code"] == "batch_expired" for r in expired)
    assert collections.Counter(r["custom_id"] for r in done + expired) == {f"e{i}": 1 for i in range(200)}
