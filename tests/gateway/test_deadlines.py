"""Deadlines once a replica has the request (defect 3 of issue 14): a stalled replica used to hold
its class slot and in-flight count forever. Each deadline must end the request with an OpenAI
error (an error event inside a started stream), abort the generation upstream, and free the slot
and the in-flight count, so that the next request runs."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Callable

import httpx
import openai
import orjson
import pytest
from gateway_support import PUBLIC_MODEL, FakeStack

CHAT = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
STALL_S = 30.0  # how long the fake replica stalls: far past every deadline under test
ABORT_WITHIN_S = 10.0


def deadline_stack(make_stack: Callable[..., FakeStack], **interactive: float) -> FakeStack:
    """One interactive slot (so a leaked slot blocks the next request) and the given deadlines."""
    idle = interactive.pop("idle", 60.0)
    limits = {"max_concurrency": 1, "max_queue": 4, **interactive}
    return make_stack(routing={"limits": {"interactive": limits}}, limits={"stream_idle_timeout_s": idle})


def gauges(stack: FakeStack) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{stack.root_url}/metrics").text.splitlines():
        if line.startswith(("tandem_gateway_class_", "tandem_gateway_replica_in_flight")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def deadlines_fired(stack: FakeStack, kind: str) -> float:
    for line in httpx.get(f"{stack.root_url}/metrics").text.splitlines():
        if line.startswith("tandem_gateway_deadlines_total{") and f'kind="{kind}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_freed(stack: FakeStack) -> None:
    """No slot or in-flight count left, the stalled generation aborted, and the next request runs."""
    assert all(value == 0 for value in gauges(stack).values()), gauges(stack)
    deadline = time.monotonic() + ABORT_WITHIN_S
    while not stack.tp.aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stack.tp.aborted, "the replica's generation was not aborted"
    stack.tp.first_token_delay_s = stack.tp.token_delay_s = 0.0
    reply = httpx.post(f"{stack.base_url}/chat/completions", json=CHAT, timeout=30)
    assert reply.status_code == 200, reply.text


def stream_lines(stack: FakeStack, body: dict) -> tuple[int, list[str], float]:
    start = time.monotonic()
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body | {"stream": True}, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line]
        return r.status_code, lines, time.monotonic() - start


def test_stream_without_a_first_token_ends_with_an_error_event(make_stack) -> None:
    stack = deadline_stack(make_stack, first_token_timeout_s=0.5)
    stack.tp.first_token_delay_s = STALL_S
    status, lines, took = stream_lines(stack, CHAT)
    assert status == 200 and took < STALL_S / 2
    assert lines[-1] == "data: [DONE]"
    error = orjson.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["code"] == 504 and "first token" in error["message"]
    assert deadlines_fired(stack, "first_token") == 1
    assert_freed(stack)


def test_stream_that_goes_silent_ends_with_an_error_event_through_the_sdk(make_stack) -> None:
    stack = deadline_stack(make_stack, idle=0.5)
    stack.tp.token_delay_s = STALL_S  # the first token comes at once, then nothing
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model=PUBLIC_MODEL, messages=CHAT["messages"], max_tokens=4, stream=True)
    start = time.monotonic()
    with pytest.raises(openai.APIError, match="sent nothing for 0.5 s"):
        for _ in stream:
            pass
    assert time.monotonic() - start < STALL_S / 2
    assert deadlines_fired(stack, "idle") == 1
    assert_freed(stack)


def test_non_streamed_answer_past_the_total_deadline_is_504(make_stack) -> None:
    stack = deadline_stack(make_stack, total_timeout_s=0.5)
    stack.tp.first_token_delay_s = STALL_S
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=PUBLIC_MODEL, messages=CHAT["messages"], max_tokens=4)
    assert info.value.status_code == 504 and "total deadline" in info.value.message
    assert deadlines_fired(stack, "total") == 1
    assert_freed(stack)


def test_a_stream_that_keeps_going_past_the_total_deadline_is_cut(make_stack) -> None:
    """Each event in time (no idle timeout), but the whole answer too long."""
    stack = deadline_stack(make_stack, total_timeout_s=1.0, idle=5.0)
    stack.tp.token_delay_s = 0.1
    status, lines, _ = stream_lines(stack, CHAT | {"max_tokens": 400})
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert 1 < len(lines) < 400  # some tokens arrived before the cut
    assert orjson.loads(lines[-2].removeprefix("data: "))["error"]["code"] == 504
    assert_freed(stack)


def test_waiting_in_the_class_queue_is_bounded(make_stack) -> None:
    stack = deadline_stack(make_stack, queue_timeout_s=0.5, total_timeout_s=STALL_S)
    stack.tp.first_token_delay_s = 3.0  # holds the one slot while the second request waits
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        holder = pool.submit(httpx.post, f"{stack.base_url}/chat/completions", json=CHAT, timeout=60)
        deadline = time.monotonic() + 30
        while gauges(stack).get('tandem_gateway_class_in_flight{model="tandem-test",traffic_class="interactive"}') != 1:
            assert time.monotonic() < deadline, "the first request never took its slot"
            time.sleep(0.02)
        queued = httpx.post(f"{stack.base_url}/chat/completions", json=CHAT, timeout=60)
        assert queued.status_code == 429 and int(queued.headers["retry-after"]) >= 1
        assert "queue" in queued.json()["error"]["message"]
        assert holder.result().status_code == 200
    assert gauges(stack)['tandem_gateway_class_queued{model="tandem-test",traffic_class="interactive"}'] == 0
    assert len(stack.tp.requests) == 1  # the timed-out one never reached the replica


def test_a_body_trickled_past_its_deadline_is_408_and_frees_the_key(make_stack) -> None:
    """A slow body (a client sending a few bytes, then nothing) would otherwise hold its key's
    concurrency slot and a connection for as long as it likes."""
    key = "sk-one-at-a-time-0123"
    stack = make_stack(
        limits={"body_timeout_s": 0.5}, auth={"keys": [{"name": "one", "key": key, "max_concurrent": 1}]}
    )
    with socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"model": '
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert orjson.loads(body)["error"]["code"] == 408
    reply = httpx.post(f"{stack.base_url}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 200, reply.text
