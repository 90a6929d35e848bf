"""The real CPU stack end to end: two vLLM engines (TP=2 interactive, PP=2 batch) behind the
gateway, reached with the official OpenAI SDK. The contract tests in tests/gateway run against
this stack too; these are the checks only real engines can answer."""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.stack

# The gateway closes the upstream request at once (tests/gateway/test_disconnect.py holds it to
# 1 s against the fake upstream). The real engine then needs its API server to notice, and on two
# cores that server is starved by the engine's own TP workers, pinned to both cores while they
# generate: measured here between 0.1 s and about 1.3 s. The bound below is that measurement with
# margin, not the gateway's target.
ENGINE_STOPS_WITHIN_S = 2.0
PRECONDITION_S = 180.0


def metrics_text(base_url: str, http: httpx.Client | None = None) -> str:
    """The engine's own Prometheus page."""
    return (http or httpx).get(base_url.removesuffix("/v1") + "/metrics", timeout=5).text


def metric_sum(text: str, name: str) -> float:
    """Sum of one metric over its label sets."""
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def engine_metric(base_url: str, name: str) -> float:
    return metric_sum(metrics_text(base_url), name)


def wait_until_idle(base_url: str, timeout_s: float) -> float:
    """Seconds from now until a poll of the engine's /metrics found it running and queuing
    nothing, counted to the start of that poll; fails past the timeout.

    Counted to the poll's start because on two cores a busy engine's page can take a few hundred
    ms to come back (its TP workers spin for a second after their last step, and the page is
    rendered in the same process that streams): the engine was idle at the moment the page was
    rendered, somewhere within that poll."""
    start = time.monotonic()
    with httpx.Client() as http:
        while (asked := time.monotonic()) - start < timeout_s:
            text = metrics_text(base_url, http)
            if metric_sum(text, "vllm:num_requests_running") + metric_sum(text, "vllm:num_requests_waiting") == 0:
                return asked - start
    pytest.fail(f"engine at {base_url} still busy after {timeout_s} s")


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
    before = {name: engine_metric(url, "vllm:request_success_total") for name, url in urls.items()}

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

    after = {name: engine_metric(url, "vllm:request_success_total") for name, url in urls.items()}
    assert after["interactive"] - before["interactive"] == 1
    assert after["batch"] - before["batch"] == 3  # vLLM counts each prompt


def long_generation(cpu_stack, stream: bool) -> dict:
    return {
        "model": cpu_stack.model,
        "messages": [{"role": "user", "content": "write a long story"}],
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": stream,
    }


def post_long_generation(http: httpx.Client, cpu_stack, traffic_class: str, stream: bool):
    # Precondition: the engine has finished what earlier tests left it (a restarted engine's first
    # requests, a flood's tail), so "idle after the client left" measures this request alone.
    wait_until_idle(cpu_stack.replica_urls[traffic_class], timeout_s=PRECONDITION_S)
    return http.stream(
        "POST",
        f"{cpu_stack.base_url}/chat/completions",
        json=long_generation(cpu_stack, stream),
        headers={"X-Tandem-Class": traffic_class},
    )


def test_client_leaving_mid_stream_stops_the_engine(cpu_stack) -> None:
    engine = cpu_stack.replica_urls["interactive"]
    with httpx.Client(timeout=60) as http:
        with post_long_generation(http, cpu_stack, "interactive", stream=True) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for _ in range(5):
                next(lines)
            assert r.headers["x-tandem-replica"] == "interactive"
            assert engine_metric(engine, "vllm:num_requests_running") == 1
    assert wait_until_idle(engine, timeout_s=ENGINE_STOPS_WITHIN_S) < ENGINE_STOPS_WITHIN_S


def test_client_leaving_before_the_first_token_stops_the_engine(cpu_stack) -> None:
    engine = cpu_stack.replica_urls["interactive"]
    with httpx.Client(timeout=60) as http:
        with post_long_generation(http, cpu_stack, "interactive", stream=True) as r:
            assert r.status_code == 200  # headers only: no body read
    assert wait_until_idle(engine, timeout_s=ENGINE_STOPS_WITHIN_S) < ENGINE_STOPS_WITHIN_S


def test_client_giving_up_on_a_non_streamed_request_stops_the_engine(cpu_stack) -> None:
    engine = cpu_stack.replica_urls["batch"]
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=1.0) as http:
        with post_long_generation(http, cpu_stack, "batch", stream=False) as r:
            r.read()
    assert wait_until_idle(engine, timeout_s=ENGINE_STOPS_WITHIN_S) < ENGINE_STOPS_WITHIN_S
