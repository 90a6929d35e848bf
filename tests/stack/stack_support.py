"""What the real-stack tests read and do on the engines and the gateway: the engines' own
Prometheus counters, the gateway's gauges, and Tandem's pause lease on an engine.

Why the pause matters to these tests: on two cores, an engine that generates starves its own HTTP
server (its workers' gloo threads fill the run queue: up to 160 runnable threads counted with
vmstat). On the CI machine kind, a pause sent to an engine 5 chunks into a stream was served up to
10 s later, after the whole 2,000-token answer in 3 of 5 trials on TP=2 (benchmarks/engine_stall.py,
docs/benchmarks.md); aborts wait in the same queue. A test that needs "the request is still in
the engine" therefore freezes the engine first: then nothing generates, its server answers at
once, and no race decides the outcome."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from gateway.engine_pause import PAUSE_PATH, RESUME_PATH, PauseStatus

WAIT_S = 180.0  # bound on any wait here: a loaded 2-core machine, never a target
GENERATED = "vllm:generation_tokens_total"
SUCCEEDED = "vllm:request_success_total"


def root_of(url: str) -> str:
    return url.removesuffix("/v1")


def metrics_text(url: str, http: httpx.Client | None = None) -> str:
    """A server's Prometheus page (an engine's or the gateway's; base URL or root)."""
    return (http or httpx).get(root_of(url) + "/metrics", timeout=30).text


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of one metric over its label sets (those holding every `labels` pair)."""
    total = 0.0
    for found, value in re.findall(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        if all(f'{key}="{want}"' in found for key, want in labels.items()):
            total += float(value)
    return total


def read_metric(url: str, name: str, **labels: str) -> float:
    return metric_sum(metrics_text(url), name, **labels)


def eventually(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S, every_s: float = 0.1) -> float:
    """Poll every `every_s` until `condition` holds; the seconds it took. Fails past the (generous) bound."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s:g} s")
        time.sleep(every_s)
    return time.monotonic() - start


def wait_until_idle(url: str, timeout_s: float = WAIT_S) -> float:
    """Seconds from now until a poll of the engine's /metrics found it running and queuing
    nothing, counted to the start of that poll (a busy engine's page can take seconds to come
    back here; it was idle when the page was rendered); fails past the timeout."""
    start = time.monotonic()
    with httpx.Client() as http:
        while (asked := time.monotonic()) - start < timeout_s:
            text = metrics_text(url, http)
            if metric_sum(text, "vllm:num_requests_running") + metric_sum(text, "vllm:num_requests_waiting") == 0:
                return asked - start
    pytest.fail(f"engine at {url} still busy after {timeout_s} s")


def pause(url: str, lease_s: float = 120.0) -> PauseStatus:
    answer = httpx.post(f"{root_of(url)}{PAUSE_PATH}", params={"lease_s": lease_s, "seq": time.time_ns()}, timeout=60)
    assert answer.status_code == 200, answer.text
    return PauseStatus.model_validate_json(answer.content)


def resume(url: str) -> PauseStatus:
    answer = httpx.post(f"{root_of(url)}{RESUME_PATH}", params={"seq": time.time_ns()}, timeout=60)
    assert answer.status_code == 200, answer.text
    return PauseStatus.model_validate_json(answer.content)


def pause_status(url: str) -> PauseStatus:
    return PauseStatus.model_validate_json(httpx.get(f"{root_of(url)}{PAUSE_PATH}", timeout=30).content)


@contextmanager
def frozen(engine_url: str) -> Iterator[None]:
    """The engine paused (Tandem's lease, mode keep) for the block, resumed after it whatever happened."""
    status = pause(engine_url)
    assert status.paused and status.applied
    try:
        yield
    finally:
        resume(engine_url)


def gateway_lets_go(base_url: str, replica: str) -> float:
    """Wait until the gateway holds no request on `replica` (its in-flight gauge back to 0)."""
    return eventually(
        lambda: read_metric(base_url, "tandem_gateway_replica_in_flight", replica=replica) == 0,
        f"the gateway letting go of its request on {replica}",
    )


class EngineTally:
    """The engine's token and success counters before a test's request; `stopped_short` checks
    them after the client left.

    Taken once the engine is idle (a precondition: it has finished what earlier tests left it, a
    restarted engine's first requests or a flood's tail), so the counters count this request alone."""

    def __init__(self, url: str) -> None:
        wait_until_idle(url)
        self.url = url
        self.text = metrics_text(url)

    def grown(self, name: str) -> float:
        return metric_sum(metrics_text(self.url), name) - metric_sum(self.text, name)

    def stopped_short(self, asked_tokens: int) -> None:
        """Once the engine is idle again: it made fewer than `asked_tokens` and finished nothing,
        so the request was aborted."""
        took = wait_until_idle(self.url)
        generated = self.grown(GENERATED)
        assert generated < asked_tokens, f"the engine made {generated:g} of {asked_tokens} tokens: it did not stop"
        assert self.grown(SUCCEEDED) == 0, "the engine finished the request the client left"
        print(f"engine idle {took:.2f} s after the check began, {generated:g} of {asked_tokens} tokens made")
