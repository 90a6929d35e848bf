"""Freezing the batch engine on the real CPU stack (gateway.contract.freezing, gateway.freezing and the
replica's pause lease, deploy.engine_lease): what only real vLLM engines can answer. Reached with
the official OpenAI SDK; the engine's own /metrics and /tandem/pause say what the engine did.

Every test leaves the session stack as it found it: the engine resumed and the routing settings
put back (in `finally`). The gateway-killed test kills a gateway of its own, started in front of
the session stack's engines, never the session's gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from stack_support import (
    GENERATED,
    WAIT_S,
    eventually,
    frozen,
    pause,
    pause_status,
    read_metric,
    resume,
    root_of,
    wait_until_idle,
)

from deploy.ports import free_port

pytestmark = pytest.mark.stack

BATCH = {"X-Tandem-Class": "batch"}
PROMPT = "The history of the two boxes, told slowly:"


def generated_tokens(root: str) -> float:
    return read_metric(root, GENERATED)


def holds_still(read: Callable[[], float], seconds: float) -> tuple[float, float]:
    """(first, last) reading over an observation window of `seconds`: the frozen engine's counter
    must not move within it. A window, not a wait for something to happen."""
    first = read()
    end = time.monotonic() + seconds
    last = first
    while time.monotonic() < end:
        last = read()
        time.sleep(0.2)
    return first, last


def batch_stream(client: openai.OpenAI, model: str, max_tokens: int, **options: Any) -> Any:
    """A streamed batch-class completion of exactly `max_tokens` tokens (the demo model's EOS ignored)."""
    return client.completions.create(
        model=model,
        prompt=PROMPT,
        max_tokens=max_tokens,
        stream=True,
        extra_body={"ignore_eos": True},
        extra_headers=BATCH,
        **options,
    )


@pytest.fixture
def client(cpu_stack: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=cpu_stack.base_url, api_key="unused", max_retries=0, timeout=WAIT_S)


@pytest.fixture
def batch_root(cpu_stack: Any) -> Iterator[str]:
    """The batch engine's server root; resumed after the test whatever happened."""
    root = root_of(cpu_stack.replica_urls["batch"])
    yield root
    resume(root)


def test_a_stream_held_by_the_frozen_batch_engine_makes_no_progress_and_finishes_intact_after_resume(
    client: openai.OpenAI, batch_root: str, cpu_stack: Any
) -> None:
    """Frozen before the stream reaches it: a generating CPU engine serves a pause seconds late
    (tests/stack/stack_support.py), under a CPU hog after the whole 1,900-token answer in 6 of 6
    attempts, so a freeze mid-answer cannot be a deterministic test on this machine. The gateway's
    freezes of a running batch flood are the next test (every request intact)."""
    max_tokens = 200
    received: list[str] = []
    finish: list[str | None] = []
    usage: list[int] = []

    def consume() -> None:
        for chunk in batch_stream(client, cpu_stack.model, max_tokens, stream_options={"include_usage": True}):
            if chunk.choices:
                received.append(chunk.choices[0].text)
                finish.append(chunk.choices[0].finish_reason)
            if chunk.usage is not None:
                usage.append(chunk.usage.completion_tokens)

    wait_until_idle(batch_root)
    start = generated_tokens(batch_root)
    reader = threading.Thread(target=consume, daemon=True)
    with frozen(batch_root):
        reader.start()
        eventually(
            lambda: read_metric(cpu_stack.base_url, "tandem_gateway_replica_in_flight", replica="batch") == 1,
            "the gateway sending the stream to the frozen engine",
        )
        first, last = holds_still(lambda: generated_tokens(batch_root), 4.0)
        assert first == last == start, f"the frozen engine generated {last - start:g} tokens"
        assert reader.is_alive() and not usage and not received, "the frozen stream moved"
    reader.join(WAIT_S)
    assert not reader.is_alive(), "the stream did not finish after the resume"
    # intact: every token, once, one answer (a lagging reader gets some tokens merged in one chunk)
    assert usage == [max_tokens] and 0 < len(received) <= max_tokens and finish[-1] == "length"
    assert generated_tokens(batch_root) - start == max_tokens


def test_an_interactive_request_in_a_batch_flood_freezes_the_batch_engine_and_releases_it(
    client: openai.OpenAI, batch_root: str, cpu_stack: Any
) -> None:
    routing_url = cpu_stack.base_url.removesuffix("/v1") + "/admin/routing"
    before = httpx.get(routing_url, timeout=30).json()
    freeze = before | {"gpu_arbitration": "freeze", "batch_yield_fraction": 1.0, "freeze_settle_s": 0.5}
    assert httpx.put(routing_url, json=freeze, timeout=30).status_code == 200
    freezes_before = read_metric(cpu_stack.base_url, "tandem_gateway_engine_freezes_total", replica="batch")
    results: list[tuple[int, str | None]] = []

    def batch_request() -> None:
        reply = client.completions.create(
            model=cpu_stack.model,
            prompt=PROMPT,
            max_tokens=96,
            extra_body={"ignore_eos": True},
            extra_headers=BATCH,
        )
        assert reply.usage is not None
        results.append((reply.usage.completion_tokens, reply.choices[0].finish_reason))

    flood = [threading.Thread(target=batch_request, daemon=True) for _ in range(4)]
    try:
        start_tokens = generated_tokens(batch_root)
        for thread in flood:
            thread.start()
        eventually(lambda: generated_tokens(batch_root) > start_tokens + 8, "the batch flood running")
        stream = client.chat.completions.create(
            model=cpu_stack.model,
            messages=[{"role": "user", "content": "Hello, who is there?"}],
            max_tokens=24,
            stream=True,
        )
        seen_frozen = False
        chunks = 0
        for _chunk in stream:
            chunks += 1
            seen_frozen = seen_frozen or pause_status(batch_root).paused
        assert chunks > 0
        eventually(
            lambda: (
                read_metric(cpu_stack.base_url, "tandem_gateway_engine_freezes_total", replica="batch") > freezes_before
            ),
            "the gateway counting the freeze",
        )
        # released once interactive work has been gone for the settle time
        eventually(lambda: not pause_status(batch_root).paused, "the batch engine resumed")
        eventually(
            lambda: read_metric(cpu_stack.base_url, "tandem_gateway_engine_frozen", replica="batch") == 0,
            "the gateway's frozen gauge back to 0",
        )
        for thread in flood:
            thread.join(WAIT_S)
        assert results == [(96, "length")] * 4  # no batch request lost, failed or cut short
        assert (
            seen_frozen
            or read_metric(cpu_stack.base_url, "tandem_gateway_engine_frozen_seconds_total", replica="batch") > 0
        )
        pause_latency = read_metric(
            cpu_stack.base_url, "tandem_gateway_engine_control_seconds_count", replica="batch", command="pause"
        )
        assert pause_latency >= 1
    finally:
        httpx.put(routing_url, json=before, timeout=30)
        for thread in flood:
            thread.join(WAIT_S)


def test_a_disconnect_while_frozen_aborts_the_request(client: openai.OpenAI, batch_root: str, cpu_stack: Any) -> None:
    max_tokens = 200
    assert pause(batch_root, lease_s=120).paused
    before = generated_tokens(batch_root)
    stream = batch_stream(client, cpu_stack.model, max_tokens)
    eventually(
        lambda: read_metric(cpu_stack.base_url, "tandem_gateway_replica_in_flight", replica="batch") == 1,
        "the gateway sending the request to the frozen engine",
    )
    stream.close()  # the client goes away while its request is frozen
    eventually(
        lambda: read_metric(cpu_stack.base_url, "tandem_gateway_replica_in_flight", replica="batch") == 0,
        "the gateway letting the request go",
    )
    # the abort reaches the paused engine (it handles aborts between steps, paused or not)
    assert resume(batch_root).paused is False

    wait_until_idle(batch_root, WAIT_S)
    generated = generated_tokens(batch_root) - before
    assert generated < max_tokens / 2, f"the aborted request still generated {generated:g} tokens"


def test_a_killed_gateway_leaves_the_frozen_engine_running_again_within_the_lease(
    cpu_stack: Any, batch_root: str, tmp_path: Path
) -> None:
    """A gateway of its own (the session's keeps serving), in front of the session's engines, with
    the freeze on and a short lease: it freezes the batch engine for an interactive request, is
    killed with SIGKILL (no goodbye), and the engine resumes by itself once the lease runs out."""
    lease_s = 4.0
    port = free_port()
    config = {
        "model": cpu_stack.model,
        "replicas": [
            {
                "name": name,
                "traffic_class": name,
                "model": cpu_stack.model,
                "base_url": cpu_stack.replica_urls[name],
                "device_group": "shared",
            }
            for name in ("interactive", "batch")
        ],
        "settings": {
            "port": port,
            "routing": {
                "gpu_arbitration": "freeze",
                "freeze_lease_s": lease_s,
                "freeze_settle_s": 60,
                "freeze_max_s": 600,
            },
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "gateway.log").open("w")
    code = "import sys; from gateway.contract.config import load_config; from gateway.server import serve; serve(load_config(sys.argv[1]))"
    gateway = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ})  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(up, "the gateway of this test serving")
        expiries = pause_status(batch_root).lease_expiries
        own = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=WAIT_S)
        reply = own.chat.completions.create(
            model=cpu_stack.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        assert reply.choices[0].message.content is not None
        # settle is 60 s: the engine stays frozen (renewed) after the request, until the gateway dies
        eventually(lambda: pause_status(batch_root).paused, "the batch engine frozen by this gateway")
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(30)
        took = eventually(lambda: not pause_status(batch_root).paused, "the engine resuming by itself")
        status = pause_status(batch_root)
        assert status.lease_expiries == expiries + 1  # the lease resumed it, nobody else
        # within the lease (plus the machine's slowness: the lease is checked on the replica)
        assert took <= lease_s + 30, f"resumed {took:.1f} s after the kill, lease {lease_s} s"
        before = generated_tokens(batch_root)
        client = openai.OpenAI(base_url=cpu_stack.base_url, api_key="unused", max_retries=0, timeout=WAIT_S)
        done = client.completions.create(
            model=cpu_stack.model, prompt=PROMPT, max_tokens=8, extra_headers=BATCH, extra_body={"ignore_eos": True}
        )
        assert done.usage is not None and done.usage.completion_tokens == 8  # the engine runs
        assert generated_tokens(batch_root) >= before + 8
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(30)
        log.close()
