"""The Responses API contract, checked with the official `openai` SDK against every `endpoint` (the
fake stack; the real stacks under -m stack, on one node and on two): what vLLM's own server
answers, the gateway answers, each case compared with the replica's own server in the same test."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from gateway_support import Endpoint

INPUT = "Say something short."


@pytest.fixture
def client(endpoint: Endpoint) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=120)


def direct_client(endpoint: Endpoint, replica: str) -> openai.OpenAI:
    """The replica's own server (vLLM's, or the fake's), to compare answers with."""
    return openai.OpenAI(base_url=endpoint.replica_urls[replica], api_key="unused", max_retries=0, timeout=120)


def event_kinds(events: list[Any]) -> list[str]:
    """Event types in order, a run of the same type (the text deltas) counted once."""
    kinds: list[str] = []
    for event in events:
        if not kinds or kinds[-1] != event.type:
            kinds.append(event.type)
    return kinds


def test_create(client: openai.OpenAI, endpoint: Endpoint) -> None:
    raw = client.responses.with_raw_response.create(model=endpoint.model, input=INPUT, max_output_tokens=8)
    reply = raw.parse()
    assert raw.headers["x-tandem-class"] == "interactive"
    assert reply.model == endpoint.model
    assert reply.status in ("completed", "incomplete")
    assert reply.output_text
    assert reply.usage is not None and reply.usage.output_tokens > 0 and reply.usage.input_tokens > 0

    replica = raw.headers["x-tandem-replica"]
    direct = direct_client(endpoint, replica).responses.with_raw_response.create(
        model=endpoint.replica_models[replica], input=INPUT, max_output_tokens=8
    )
    assert set(raw.http_response.json()) == set(direct.http_response.json())  # the same fields, no more
    assert [item.type for item in reply.output] == [item.type for item in direct.parse().output]


def test_stream(client: openai.OpenAI, endpoint: Endpoint) -> None:
    with client.responses.with_streaming_response.create(
        model=endpoint.model, input=INPUT, max_output_tokens=6, stream=True
    ) as raw:
        assert raw.headers["x-tandem-class"] == "interactive"  # streamed, moderate max_output_tokens
        replica = raw.headers["x-tandem-replica"]
        events = list(raw.parse())
    kinds = event_kinds(events)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1].response
    assert completed.usage is not None and completed.usage.output_tokens > 0
    assert {e.response.model for e in events if hasattr(e, "response")} == {endpoint.model}
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == completed.output_text

    direct = direct_client(endpoint, replica).responses.create(
        model=endpoint.replica_models[replica], input=INPUT, max_output_tokens=6, stream=True
    )
    assert kinds == event_kinds(list(direct))


def test_previous_response_id_reaches_the_replica_holding_it(client: openai.OpenAI, endpoint: Endpoint) -> None:
    first = client.responses.with_raw_response.create(
        model=endpoint.model, input=INPUT, max_output_tokens=4, extra_headers={"X-Tandem-Class": "batch"}
    )
    holder = first.headers["x-tandem-replica"]
    # An interactive follow-up would go to the other replica by class; it must go where the state is.
    follow = client.responses.with_raw_response.create(
        model=endpoint.model,
        input="And then?",
        max_output_tokens=4,
        previous_response_id=first.parse().id,
        extra_headers={"X-Tandem-Class": "interactive"},
    )
    assert follow.headers["x-tandem-replica"] == holder
    reply = follow.parse()
    assert reply.previous_response_id == first.parse().id
    assert reply.usage is not None and reply.usage.input_tokens > first.parse().usage.input_tokens  # type: ignore[union-attr]


def test_retrieve(client: openai.OpenAI, endpoint: Endpoint) -> None:
    raw = client.responses.with_raw_response.create(model=endpoint.model, input=INPUT, max_output_tokens=4)
    created = raw.parse()
    got = client.responses.retrieve(created.id)
    assert got.id == created.id
    assert got.model == endpoint.model
    assert got.output_text == created.output_text
    direct = direct_client(endpoint, raw.headers["x-tandem-replica"]).responses.retrieve(created.id)
    assert got.model_dump(exclude={"model"}) == direct.model_dump(exclude={"model"})


def compare_errors(endpoint: Endpoint, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The same request to the gateway and to a replica's own server: same status and envelope."""
    name, url = next(iter(endpoint.replica_urls.items()))
    direct_body = body and body | {"model": endpoint.replica_models[name]}
    direct = httpx.request(method, f"{url}{path}", json=direct_body)
    through = httpx.request(
        method,
        f"{endpoint.base_url}{path}",
        json=body and body | {"model": endpoint.model},
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
    )
    assert direct.status_code >= 400, direct.text
    assert through.status_code == direct.status_code, through.text
    error = through.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == direct.json()["error"]["type"]
    return error


def test_unknown_id_is_not_found(client: openai.OpenAI, endpoint: Endpoint) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve("resp_unknown")
    assert info.value.body["param"] == "response_id"  # type: ignore[index]
    retrieved = compare_errors(endpoint, "GET", "/responses/resp_unknown")
    chained = compare_errors(endpoint, "POST", "/responses", {"input": INPUT, "previous_response_id": "resp_unknown"})
    cancelled = compare_errors(endpoint, "POST", "/responses/resp_unknown/cancel")
    name, url = next(iter(endpoint.replica_urls.items()))
    assert retrieved == chained == cancelled == httpx.get(f"{url}/responses/resp_unknown").json()["error"]


def test_cancel_of_a_finished_response_is_refused_as_by_vllm(client: openai.OpenAI, endpoint: Endpoint) -> None:
    created = client.responses.create(model=endpoint.model, input=INPUT, max_output_tokens=2)
    error = compare_errors(endpoint, "POST", f"/responses/{created.id}/cancel")
    assert error["code"] == 400


@pytest.mark.parametrize(
    "fields",
    [{"input": None}, {"input": 5}, {"max_output_tokens": "many"}, {"model": "no-such-model"}],
    ids=["no-input", "input-type", "max-output-tokens-type", "unknown-model"],
)
def test_bad_request(endpoint: Endpoint, fields: dict[str, Any]) -> None:
    body = {k: v for k, v in ({"input": INPUT, "max_output_tokens": 2} | fields).items() if v is not None}
    name, url = next(iter(endpoint.replica_urls.items()))
    direct = httpx.post(f"{url}/responses", json={"model": endpoint.replica_models[name]} | body)
    through = httpx.post(
        f"{endpoint.base_url}/responses",
        json={"model": endpoint.model} | body,
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
    )
    assert through.status_code == direct.status_code, (through.text, direct.text)
    assert through.status_code in (400, 404)
    assert set(through.json()["error"]) == {"message", "type", "param", "code"}
    assert through.json()["error"]["type"] == direct.json()["error"]["type"]


def test_lax_booleans_as_vllm_reads_them(endpoint: Endpoint) -> None:
    """vLLM's ResponsesRequest reads `stream: "yes"` as true (pydantic's lax booleans): so does the gateway."""
    name, url = next(iter(endpoint.replica_urls.items()))
    body = {"input": INPUT, "max_output_tokens": 2, "stream": "yes"}
    direct = httpx.post(f"{url}/responses", json=body | {"model": endpoint.replica_models[name]})
    through = httpx.post(
        f"{endpoint.base_url}/responses",
        json=body | {"model": endpoint.model},
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
    )
    assert through.status_code == direct.status_code == 200
    assert through.headers["content-type"].startswith("text/event-stream")
    assert direct.headers["content-type"].startswith("text/event-stream")
    assert "event: response.completed" in through.text


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", "/responses/resp_x"), ("GET", "/responses/resp_x/input_items")]
)
def test_routes_vllm_does_not_serve(endpoint: Endpoint, method: str, path: str) -> None:
    """What vLLM's server does not serve, the gateway refuses with the same status (its own envelope)."""
    direct = httpx.request(method, f"{next(iter(endpoint.replica_urls.values()))}{path}")
    through = httpx.request(
        method, f"{endpoint.base_url}{path}", headers={"Authorization": f"Bearer {endpoint.api_key}"}
    )
    assert through.status_code == direct.status_code
    assert through.status_code in (404, 405)
    assert set(through.json()["error"]) == {"message", "type", "param", "code"}
