"""The real CPU stack end to end: two vLLM engines (TP=2 interactive, PP=2 batch) behind the
gateway, reached with the official OpenAI SDK. The contract tests in tests/gateway run against
this stack too; these are the checks only real engines can answer."""

from __future__ import annotations

import httpx
import openai
import pytest
from stack_support import EngineTally, frozen, gateway_lets_go, read_metric
from status_page import cells, rendered

pytestmark = pytest.mark.stack

# Disconnects: the gateway closes the upstream request at once (tests/gateway/test_disconnect.py
# holds it to 1 s against the fake upstream); the engine then aborts once its HTTP server notices.
# These tests check what the engine did, not how fast: it went idle having made fewer tokens than
# asked for and counted no success. The engine is frozen while the client leaves (see
# stack_support: a generating engine's server answers seconds late here), so the abort never races
# the answer.
LONG_TOKENS = 1500


@pytest.fixture
def client(cpu_stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=cpu_stack.base_url, api_key="unused", max_retries=0, timeout=120)


def test_the_stack_serves_both_layouts(cpu_stack) -> None:
    assert set(cpu_stack.replica_urls) == {"interactive", "batch"}
    assert all(url.startswith("http://127.0.0.1:") for url in cpu_stack.replica_urls.values())  # loopback only
    fingerprints = {}
    for name, url in cpu_stack.replica_urls.items():
        reply = openai.OpenAI(base_url=url, api_key="unused").completions.create(
            model=cpu_stack.model, prompt="hello", max_tokens=2
        )
        fingerprints[name] = reply.system_fingerprint or ""
    # vLLM's fingerprint names the tensor-parallel size when it is above 1.
    assert "tp2" in fingerprints["interactive"]
    assert "tp2" not in fingerprints["batch"]


def test_each_class_lands_on_its_engine(cpu_stack, client: openai.OpenAI) -> None:
    urls = cpu_stack.replica_urls
    before = {name: read_metric(url, "vllm:request_success_total") for name, url in urls.items()}

    stream = client.chat.completions.with_raw_response.create(
        model=cpu_stack.model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
    )
    assert stream.headers["x-tandem-class"] == "interactive"
    assert stream.headers["x-tandem-replica"] == "interactive"
    assert sum(1 for _ in stream.parse()) > 0

    batch = client.completions.with_raw_response.create(
        model=cpu_stack.model, prompt=["one", "two", "three"], max_tokens=8
    )
    assert batch.headers["x-tandem-class"] == "batch"
    assert batch.headers["x-tandem-replica"] == "batch"
    assert len(batch.parse().choices) == 3

    after = {name: read_metric(url, "vllm:request_success_total") for name, url in urls.items()}
    assert after["interactive"] - before["interactive"] == 1
    assert after["batch"] - before["batch"] == 3  # vLLM counts each prompt


def long_generation(cpu_stack, stream: bool) -> dict:
    return {
        "model": cpu_stack.model,
        "messages": [{"role": "user", "content": "write a long story"}],
        "max_tokens": LONG_TOKENS,
        "ignore_eos": True,
        "stream": stream,
    }


def post_long_generation(http: httpx.Client, cpu_stack, traffic_class: str, stream: bool):
    return http.stream(
        "POST",
        f"{cpu_stack.base_url}/chat/completions",
        json=long_generation(cpu_stack, stream),
        headers={"X-Tandem-Class": traffic_class},
    )


def test_client_leaving_a_stream_stops_the_engine(cpu_stack) -> None:
    engine, gateway = cpu_stack.replica_urls["interactive"], cpu_stack.base_url
    disconnects = read_metric(gateway, "tandem_gateway_client_disconnects_total", traffic_class="interactive")
    tally = EngineTally(engine)
    with frozen(engine), httpx.Client(timeout=60) as http:
        with post_long_generation(http, cpu_stack, "interactive", stream=True) as r:
            assert r.status_code == 200  # the stream has begun; the client reads nothing and leaves
            assert r.headers["x-tandem-replica"] == "interactive"
        gateway_lets_go(gateway, "interactive")
    tally.stopped_short(LONG_TOKENS)
    assert read_metric(gateway, "tandem_gateway_client_disconnects_total", traffic_class="interactive") == (
        disconnects + 1
    )


def test_client_giving_up_on_a_non_streamed_request_stops_the_engine(cpu_stack) -> None:
    engine = cpu_stack.replica_urls["batch"]
    tally = EngineTally(engine)
    with frozen(engine):
        with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=1.0) as http:
            with post_long_generation(http, cpu_stack, "batch", stream=False) as r:
                r.read()
        gateway_lets_go(cpu_stack.base_url, "batch")
    tally.stopped_short(LONG_TOKENS)


def test_the_status_page_shows_both_replicas_and_follows_a_request_in_a_browser(cpu_stack) -> None:
    """/status on the real stack, rendered by headless Chromium: both replicas healthy, and the
    page's usage and per-class figures move when a chat runs (a keyless gateway on loopback)."""
    root = cpu_stack.base_url.removesuffix("/v1")
    before = rendered(root)
    replicas = {row[0]: row[1:4] for row in cells(before, "replicas")}
    assert replicas == {r.name: [cpu_stack.model, r.traffic_class, "healthy"] for r in cpu_stack.plan.replicas}

    def interactive_chats(dom: str) -> int:
        rows = [row for row in cells(dom, "usage") if row[1:3] == [cpu_stack.model, "interactive"]]
        return sum(int(row[3]) for row in rows)

    client = openai.OpenAI(base_url=cpu_stack.base_url, api_key="unused", max_retries=0, timeout=300)
    for _ in client.chat.completions.create(
        model=cpu_stack.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    ):
        pass
    after = rendered(root)
    assert interactive_chats(after) == interactive_chats(before) + 1
    interactive = next(row for row in cells(after, "classes") if row[0] == "interactive")
    assert interactive[4] != "-"  # a TTFT over the last minutes
