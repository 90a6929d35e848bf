"""The OpenAI contract, checked with the official `openai` SDK: what works against vLLM's own
server must work the same through the gateway. Runs against every `endpoint` (the fake stack, and
the real CPU stack under -m stack)."""

from __future__ import annotations

import httpx
import openai
import pytest
from gateway_support import Endpoint

MESSAGES = [{"role": "user", "content": "Say something short."}]


@pytest.fixture
def client(endpoint: Endpoint) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=60)


def test_chat_completion(client: openai.OpenAI, endpoint: Endpoint) -> None:
    # 16 tokens: the random demo model's 5 once decoded to "" (byte tokens of an unfinished character)
    raw = client.chat.completions.with_raw_response.create(model=endpoint.model, messages=MESSAGES, max_tokens=16)
    reply = raw.parse()
    assert reply.model == endpoint.model
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert raw.headers["x-tandem-class"] == "interactive"
    assert raw.headers["x-request-id"]


def test_completion(client: openai.OpenAI, endpoint: Endpoint) -> None:
    reply = client.completions.create(model=endpoint.model, prompt="Once upon a time", max_tokens=5)
    assert reply.model == endpoint.model
    assert reply.choices[0].text
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream(client: openai.OpenAI, endpoint: Endpoint, include_usage: bool) -> None:
    stream = client.chat.completions.create(
        model=endpoint.model,
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True} if include_usage else None,
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {endpoint.model}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1
    with_usage = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1].choices == []
        assert with_usage[0].usage.completion_tokens > 0
    else:
        assert with_usage == []


def test_completion_stream(client: openai.OpenAI, endpoint: Endpoint) -> None:
    stream = client.completions.create(
        model=endpoint.model,
        prompt="Once upon a time",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_n_choices_read_as_batch(client: openai.OpenAI, endpoint: Endpoint) -> None:
    raw = client.chat.completions.with_raw_response.create(model=endpoint.model, messages=MESSAGES, max_tokens=4, n=2)
    reply = raw.parse()
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert raw.headers["x-tandem-class"] == "batch"


def test_several_prompts(client: openai.OpenAI, endpoint: Endpoint) -> None:
    raw = client.completions.with_raw_response.create(
        model=endpoint.model, prompt=["One", "Two", "Three"], max_tokens=3
    )
    assert sorted(c.index for c in raw.parse().choices) == [0, 1, 2]
    assert raw.headers["x-tandem-class"] == "batch"


def test_vllm_extra_fields_pass(client: openai.OpenAI, endpoint: Endpoint) -> None:
    extra = {"top_k": 5, "min_tokens": 2, "repetition_penalty": 1.1, "ignore_eos": True}
    reply = client.chat.completions.create(model=endpoint.model, messages=MESSAGES, max_tokens=4, extra_body=extra)
    assert reply.choices[0].message.content
    if endpoint.fake is not None:
        received = endpoint.fake.tp.requests[-1]
        assert {k: received[k] for k in extra} == extra
        assert received["model"] == endpoint.fake.tp.model


def test_models_lists_public_names(client: openai.OpenAI, endpoint: Endpoint) -> None:
    ids = [m.id for m in client.models.list().data]
    assert endpoint.model in ids
    assert not set(ids) & set(endpoint.replica_models.values()) - {endpoint.model}


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=2)
    assert info.value.body["type"] == "NotFoundError"


@pytest.mark.parametrize(
    "fields",
    [{"messages": []}, {"max_tokens": "many"}, {"n": 0}, {"stream": "yes"}, {"messages": "hello"}],
    ids=["empty-messages", "max-tokens-type", "n-zero", "stream-type", "messages-type"],
)
def test_bad_request(client: openai.OpenAI, endpoint: Endpoint, fields: dict) -> None:
    body = {"model": endpoint.model, "messages": MESSAGES, "max_tokens": 2} | fields
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", body=body, cast_to=httpx.Response)
    assert set(info.value.body) == {"message", "type", "param", "code"}
    assert info.value.body["code"] == 400


@pytest.mark.parametrize(
    "fields",
    [{"messages": []}, {"max_tokens": "many"}, {"model": "no-such-model"}, {"n": 0}],
    ids=["empty-messages", "max-tokens-type", "unknown-model", "n-zero"],
)
def test_errors_match_the_upstream_server(endpoint: Endpoint, fields: dict) -> None:
    """Drop-in: a request the replica's own server refuses gets the same status and envelope."""
    name, url = next(iter(endpoint.replica_urls.items()))
    base = {"messages": MESSAGES, "max_tokens": 2}
    direct = httpx.post(f"{url}/chat/completions", json=base | {"model": endpoint.replica_models[name]} | fields)
    through = httpx.post(
        f"{endpoint.base_url}/chat/completions",
        json=base | {"model": endpoint.model} | fields,
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
    )
    if endpoint.fake is not None and direct.status_code == 200:
        pytest.skip("the fake upstream does not validate this field; vLLM does (checked under -m stack)")
    assert through.status_code == direct.status_code
    assert set(through.json()["error"]) == set(direct.json()["error"]) == {"message", "type", "param", "code"}
    assert through.json()["error"]["type"] == direct.json()["error"]["type"]


def test_wrong_api_key_is_authentication_error(endpoint: Endpoint) -> None:
    if endpoint.fake is None:
        pytest.skip("the real stack runs without API keys")
    client = openai.OpenAI(base_url=endpoint.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=endpoint.model, messages=MESSAGES, max_tokens=2)
