"""The handle backend over real Ray Serve: two deployments with LLMServer's calling convention
(`.chat` / `.completions` taking vLLM's request models and yielding a response object, an
ErrorResponse, or lists of SSE strings), each relaying to a fake upstream. The same requests as
the HTTP path must give the same answers, and a client that hangs up must cancel the call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_support import PUBLIC_MODEL, gateway_config, sent_as

pytestmark = pytest.mark.ray

MESSAGES = [{"role": "user", "content": "hi"}]


def llm_server_like() -> type:  # a Serve deployment class, built where Ray is imported
    import aiohttp
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import (
        ChatCompletionResponse,
        CompletionResponse,
        ErrorResponse,
    )

    @serve.deployment(max_ongoing_requests=64)
    class LLMServerLike:
        """Speaks LLMServer's handle protocol, generating with a fake upstream behind it."""

        def __init__(self, upstream_url: str) -> None:
            self._url = upstream_url
            self._session: aiohttp.ClientSession | None = None

        async def _call(self, path: str, request: Any, info: Any, response_type: type) -> AsyncIterator[Any]:
            self._session = self._session or aiohttp.ClientSession()
            body = request.model_dump(mode="json", exclude_unset=True)
            headers = {"X-Request-Id": info.headers["x-request-id"]}
            async with self._session.post(self._url + path, json=body, headers=headers) as reply:
                if reply.status != 200:
                    yield ErrorResponse.model_validate(await reply.json())
                    return
                if not body.get("stream"):
                    yield response_type.model_validate(await reply.json())
                    return
                while event := await reply.content.readuntil(b"\n\n"):
                    yield [event.decode()]  # batched-stream shape, one event per batch

        async def chat(self, request: Any, info: Any = None) -> AsyncIterator[Any]:
            async for item in self._call("/chat/completions", request, info, ChatCompletionResponse):
                yield item

        async def completions(self, request: Any, info: Any = None) -> AsyncIterator[Any]:
            async for item in self._call("/completions", request, info, CompletionResponse):
                yield item

        async def check_health(self) -> None:
            return None

    return LLMServerLike


@pytest.fixture(scope="module")
def handle_stack() -> Iterator[tuple[str, FakeUpstream]]:
    ray = pytest.importorskip("ray")
    from ray import serve

    from deploy.stack import start_local_head
    from gateway.backends import HandleBackend
    from gateway.server import start_in_thread

    with FakeUpstream(model="upstream-tp").running() as tp, FakeUpstream(model="upstream-pp").running() as pp:
        start_local_head(num_cpus=2)
        try:
            server = llm_server_like()
            handles = {
                name: serve.run(server.bind(up.base_url), name=f"llm-{name}", route_prefix=None)
                for name, up in (("tp", tp), ("pp", pp))
            }
            config = gateway_config(tp, pp)
            for replica in config.replicas:
                replica.base_url = None
                replica.scheduling_policy = "fcfs"
            gateway = start_in_thread(config, {name: HandleBackend(h) for name, h in handles.items()})
            try:
                yield gateway.base_url, tp
            finally:
                gateway.stop()
        finally:
            serve.shutdown()
            ray.shutdown()


def test_chat_completions_and_streams(handle_stack: tuple[str, FakeUpstream]) -> None:
    base_url, _ = handle_stack
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=4)
    assert reply.model == PUBLIC_MODEL and reply.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 "
    assert chunks[-1].usage.completion_tokens == 3 and {c.model for c in chunks} == {PUBLIC_MODEL}
    batch = client.completions.create(model=PUBLIC_MODEL, prompt=["a", "b"], max_tokens=2)
    assert sorted(c.index for c in batch.choices) == [0, 1]


def test_replica_errors_keep_their_status(handle_stack: tuple[str, FakeUpstream]) -> None:
    base_url, tp = handle_stack
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    tp.fail_next(400)
    with pytest.raises(openai.BadRequestError, match="injected failure"):
        client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=2)


def test_hang_up_cancels_the_call(handle_stack: tuple[str, FakeUpstream]) -> None:
    import httpx

    base_url, tp = handle_stack
    tp.token_delay_s = 0.05
    try:
        body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "max_tokens": 200, "stream": True}
        with httpx.stream(
            "POST", f"{base_url}/chat/completions", json=body, headers={"X-Request-Id": "handle-gone"}
        ) as r:
            next(r.iter_lines())
        hung_up = time.monotonic()
        assert tp.wait_for_abort(sent_as(tp, "handle-gone"), 5.0) is not None  # not aborted: 10 s of tokens
        assert time.monotonic() - hung_up < 5.0
    finally:
        tp.token_delay_s = 0
