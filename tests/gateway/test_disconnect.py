"""A client that goes away stops the generation upstream: mid-stream, before the first token,
while a non-streamed answer is being made, and while still queued for a class slot. The fake
replica records an abort when its client (the gateway) closes the connection, as vLLM does."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import orjson
from gateway_support import PUBLIC_MODEL, FakeStack, sent_as

ABORT_WITHIN_S = 5.0  # an upstream that is not aborted runs for 10 s (200 tokens, 0.05 s each) or completes


def body(**fields: object) -> dict:
    return {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200} | fields


def raw_request(stack: FakeStack, payload: dict, request_id: str) -> socket.socket:
    """Send a request on a bare socket, so that the test decides exactly when to hang up."""
    data = orjson.dumps(payload)
    sock = socket.create_connection(("127.0.0.1", stack.gateway.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-Request-Id: {request_id}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_mid_stream(make_stack) -> None:
    stack = make_stack()
    stack.tp.token_delay_s = 0.05
    with httpx.stream(
        "POST", f"{stack.base_url}/chat/completions", json=body(stream=True), headers={"X-Request-Id": "mid-stream"}
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    hung_up = time.monotonic()
    assert stack.tp.wait_for_abort(sent_as(stack.tp, "mid-stream"), ABORT_WITHIN_S) is not None, (
        "upstream kept generating"
    )
    assert time.monotonic() - hung_up < ABORT_WITHIN_S
    assert sent_as(stack.tp, "mid-stream") not in stack.tp.completed


def test_before_first_token(make_stack) -> None:
    stack = make_stack()
    stack.tp.first_token_delay_s = 5
    sock = raw_request(stack, body(stream=True), "before-first-token")
    assert wait_until(lambda: sent_as(stack.tp, "before-first-token"))
    sock.close()
    assert stack.tp.wait_for_abort(sent_as(stack.tp, "before-first-token"), ABORT_WITHIN_S) is not None


def test_non_streaming(make_stack) -> None:
    stack = make_stack()
    stack.tp.first_token_delay_s = 5
    sock = raw_request(stack, body(), "non-streaming")
    assert wait_until(lambda: sent_as(stack.tp, "non-streaming"))
    sock.close()
    assert stack.tp.wait_for_abort(sent_as(stack.tp, "non-streaming"), ABORT_WITHIN_S) is not None


def queued_now(stack: FakeStack) -> float:
    metrics = httpx.get(f"{stack.root_url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics if line.startswith("tandem_gateway_class_queued"))


def test_while_queued_never_reaches_a_replica(make_stack) -> None:
    stack = make_stack(routing={"limits": {"interactive": {"max_concurrency": 1, "max_queue": 4}}})
    stack.tp.first_token_delay_s = 2.0
    holder = threading.Thread(target=httpx.post, args=(f"{stack.base_url}/chat/completions",), kwargs={"json": body()})
    holder.start()
    assert wait_until(lambda: len(stack.tp.request_ids) == 1)
    sock = raw_request(stack, body(), "queued")
    assert wait_until(lambda: queued_now(stack) == 1)  # waiting for the class's one slot
    sock.close()
    assert wait_until(lambda: queued_now(stack) == 0)  # the gateway noticed, while the slot is still taken
    holder.join()
    time.sleep(0.2)
    assert not sent_as(stack.tp, "queued") and not sent_as(stack.pp, "queued")


def test_gateway_serves_on_after_disconnects(make_stack) -> None:
    stack = make_stack()
    stack.tp.first_token_delay_s = 5
    for i in range(20):
        raw_request(stack, body(stream=bool(i % 2)), f"gone-{i}").close()
    assert wait_until(lambda: stack.tp.active == 0)
    stack.tp.first_token_delay_s = 0
    reply = httpx.post(f"{stack.base_url}/chat/completions", json=body(max_tokens=3))
    assert reply.status_code == 200
    in_flight = [
        line
        for line in httpx.get(f"{stack.root_url}/metrics").text.splitlines()
        if line.startswith("tandem_gateway_replica_in_flight")
    ]
    assert all(line.endswith(" 0.0") for line in in_flight)
