"""Batch work under load either succeeds or is shed where a plan's limits say so (issue 23).

An independent check on the CPU stack saw 2 batch requests fail beside 16 batch streams and
interactive chats. The answers a batch request can get under load, read from the code: 429 from
its class queue (full, or `queue_timeout_s` waited: the plan's limits), 504 from its deadlines
(`first_token_timeout_s`, `total_timeout_s`: the plan's limits too), 502 from a replica that drops
the connection or breaks off (a fault, not load), and 503 when no replica is in routing. The last
is what load alone could cause: a replica leaves routing when its load probe is refused, fails or
is late three times in a row, and on two shared cores both generating engines answered theirs
late. Batch requests now wait for a replica to come back, as they wait for a queue slot."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
from gateway_support import FakeStack

CHAT = {"model": "tandem-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
BATCH = CHAT | {"n": 2}


def post(stack: FakeStack, body: dict) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/chat/completions", json=body, timeout=60)


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_batch_waits_for_a_replica_while_none_is_in_routing_and_interactive_fails_fast(make_stack) -> None:
    stack = make_stack(routing={"limits": {"interactive": {}, "batch": {"queue_timeout_s": 60}}})
    stack.tp.metrics_status = stack.pp.metrics_status = 503  # both load probes fail: both leave routing
    wait_until(lambda: post(stack, CHAT).status_code == 503)
    chat = post(stack, CHAT)
    assert chat.status_code == 503 and chat.headers["retry-after"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        batches = [pool.submit(post, stack, BATCH) for _ in range(4)]
        time.sleep(1.5)  # three polls: the batch requests are waiting, not failed
        assert not any(b.done() for b in batches)
        stack.tp.metrics_status = stack.pp.metrics_status = 200
        answers = [b.result(timeout=30) for b in batches]
    assert [a.status_code for a in answers] == [200] * 4
    assert {a.headers["x-tandem-class"] for a in answers} == {"batch"}


def test_batch_that_waited_its_queue_time_for_a_replica_gets_503_with_retry_after(make_stack) -> None:
    stack = make_stack(routing={"limits": {"interactive": {}, "batch": {"queue_timeout_s": 1.0}}})
    stack.tp.metrics_status = stack.pp.metrics_status = 503
    wait_until(lambda: post(stack, CHAT).status_code == 503)
    started = time.monotonic()
    answer = post(stack, BATCH)
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert time.monotonic() - started >= 1.0  # it waited its class's queue time first
