"""Bad input never takes the gateway down: every answer is the OpenAI envelope with the right
status, good requests are still served afterwards, and memory does not grow with junk."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc

import aiohttp
import httpx
import orjson
import pytest
from gateway_support import PUBLIC_MODEL, FakeStack

GOOD = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
JSON = {"Content-Type": "application/json"}

CASES: list[tuple[str, str, str, bytes, int]] = [
    ("malformed-json", "POST", "/v1/chat/completions", b'{"model": ', 400),
    ("not-an-object", "POST", "/v1/chat/completions", b"[1, 2]", 400),
    ("empty-body", "POST", "/v1/chat/completions", b"", 400),
    ("invalid-utf8", "POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
    ("wrong-type-messages", "POST", "/v1/chat/completions", orjson.dumps(GOOD | {"messages": {"a": 1}}), 400),
    ("wrong-type-n", "POST", "/v1/chat/completions", orjson.dumps(GOOD | {"n": "two"}), 400),
    ("negative-max-tokens", "POST", "/v1/chat/completions", orjson.dumps(GOOD | {"max_tokens": -1}), 400),
    ("empty-messages", "POST", "/v1/chat/completions", orjson.dumps(GOOD | {"messages": []}), 400),
    ("missing-prompt", "POST", "/v1/completions", orjson.dumps({"model": PUBLIC_MODEL}), 400),
    ("prompt-type", "POST", "/v1/completions", orjson.dumps({"prompt": {"x": 1}}), 400),
    (
        "stream-options-type",
        "POST",
        "/v1/chat/completions",
        orjson.dumps(GOOD | {"stream": True, "stream_options": 3}),
        400,
    ),
    ("unknown-model", "POST", "/v1/chat/completions", orjson.dumps(GOOD | {"model": "gpt-9"}), 404),
    ("unknown-route", "POST", "/v1/embeddings/x", b"{}", 404),
    ("wrong-method", "GET", "/v1/chat/completions", b"", 405),
    ("wrong-method-models", "DELETE", "/v1/models", b"", 405),
    ("huge-body", "POST", "/v1/chat/completions", b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}', 413),
    ("admin-bad-json", "PUT", "/admin/routing", b"{", 400),
]


@pytest.fixture(scope="module")
def stack() -> FakeStack:
    from fake_upstream import FakeUpstream
    from gateway_support import gateway_config

    from gateway.server import start_in_thread

    with FakeUpstream(model="upstream-tp").running() as tp, FakeUpstream(model="upstream-pp").running() as pp:
        tp.record = pp.record = False
        config = gateway_config(tp, pp)
        gateway = start_in_thread(config)
        try:
            yield FakeStack(gateway, tp, pp, config)
        finally:
            gateway.stop()


def assert_envelope(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["message"]
    assert "detail" not in response.json()


@pytest.mark.parametrize(("name", "method", "path", "content", "status"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_answered_with_envelope(
    stack: FakeStack, name: str, method: str, path: str, content: bytes, status: int
) -> None:
    response = httpx.request(method, stack.root_url + path, content=content, headers=JSON, timeout=30)
    assert_envelope(response, status)


def test_unknown_fields_pass_through(stack: FakeStack) -> None:
    response = httpx.post(f"{stack.base_url}/chat/completions", json=GOOD | {"some_future_vllm_field": {"a": [1]}})
    assert response.status_code == 200


def test_thousand_concurrent_junk_requests_then_good_ones(stack: FakeStack) -> None:
    """1,000 junk requests at once (64 connections), then the gateway still serves, and a second
    round of junk leaves no memory behind (traced in this process, where the gateway runs)."""
    junk = [c for c in CASES if c[0] != "huge-body"]

    async def flood(count: int) -> None:
        rng = random.Random(count)
        cases = [rng.choice(junk) for _ in range(count)]
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(stack.root_url, connector=connector) as session:

            async def one(method: str, path: str, content: bytes) -> tuple[int, dict]:
                async with session.request(method, path, data=content, headers=JSON) as reply:
                    assert reply.headers["x-request-id"]
                    return reply.status, orjson.loads(await reply.read())

            replies = await asyncio.gather(*(one(method, path, content) for _, method, path, content, _ in cases))
        for (_, _, _, _, status), (got, payload) in zip(cases, replies, strict=True):
            assert got == status and set(payload["error"]) == {"message", "type", "param", "code"}

    asyncio.run(flood(1000))  # warm-up: caches, metric label sets, connection pools
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    asyncio.run(flood(1000))
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if "gateway" in (stat.traceback[0].filename or "")
    )
    assert grown < 64 * 1024, f"gateway code kept {grown} bytes after 1,000 junk requests"
    for _ in range(3):
        assert httpx.post(f"{stack.base_url}/chat/completions", json=GOOD).status_code == 200
