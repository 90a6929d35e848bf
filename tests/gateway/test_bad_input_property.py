"""Bad input, generated (issue 14's fault suite, the fast part): hypothesis makes malformed and
hostile requests (wrong types, huge numbers, deep nesting, invalid UTF-8, odd headers) and every
answer must be an OpenAI error envelope with a 4xx (or a real answer, when the generated request
happens to be valid), never a 5xx; a good request still works afterwards. The volume run (10,000
and more, against the real stack) is benchmarks/bad_input.py with the same strategies."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_support import KEYS, PUBLIC_MODEL, USER_KEY, FakeStack, gateway_config
from hypothesis import HealthCheck, given, settings

from gateway.server import start_in_thread
from tuner.bench.hostile import HostileRequest, check_answer, hostile_requests


@pytest.fixture(scope="module")
def stack() -> Iterator[FakeStack]:
    with FakeUpstream(model="upstream-tp").running() as tp, FakeUpstream(model="upstream-pp").running() as pp:
        tp.record = pp.record = False
        # A cap keeps a generated max_tokens from making the fake replica write for minutes (vLLM
        # refuses one past the model's context length).
        config = gateway_config(tp, pp, auth=KEYS, limits={"max_tokens_cap": 64})
        gateway = start_in_thread(config)
        try:
            yield FakeStack(gateway, tp, pp, config)
        finally:
            gateway.stop()


@pytest.fixture(scope="module")
def client(stack: FakeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.root_url, timeout=30) as http:
        yield http


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=hostile_requests(model=PUBLIC_MODEL, key=USER_KEY))
def test_every_generated_bad_request_gets_an_openai_4xx(client: httpx.Client, request: HostileRequest) -> None:
    reply = client.request(request.method, request.path, content=request.body, headers=request.headers)
    problem = check_answer(reply.status_code, reply.headers.get("content-type", ""), reply.content)
    assert problem is None, f"{problem}\nrequest: {request}"


def test_good_requests_still_work_after_the_junk(client: httpx.Client) -> None:
    body = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    reply = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {USER_KEY}"})
    assert reply.status_code == 200 and reply.json()["choices"]
