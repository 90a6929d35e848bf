"""The Responses API's gateway behaviour over fake replicas: follow-ups pinned to the replica that
holds the state, the id map's bound and expiry, usage counted per key, unknown fields passed on,
the model name put back in every event, disconnects, and the pure pieces (ResponseIdMap, route_to).
The SDK contract (compared with the replica's own server) is test_responses_contract.py."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from gateway_support import KEYS, PUBLIC_MODEL, USER_KEY, FakeStack
from test_disconnect import ABORT_WITHIN_S

from gateway.contract.config import RoutingSettings
from gateway.contract.policy import ReplicaLoad, RequestFeatures
from gateway.contract.router import Reject, Route, route_to
from gateway.response_ids import ResponseIdMap


def sdk(stack: FakeStack, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)


def create(stack: FakeStack, traffic_class: str | None = None, **fields: object) -> httpx.Response:
    headers = {"X-Tandem-Class": traffic_class} if traffic_class else {}
    body = {"model": PUBLIC_MODEL, "input": "hello there", "max_output_tokens": 3} | fields
    return httpx.post(f"{stack.base_url}/responses", json=body, headers=headers, timeout=30)


def metric(stack: FakeStack, prefix: str) -> float:
    lines = httpx.get(f"{stack.root_url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


# ---- pure pieces ---------------------------------------------------------------------------------
def test_id_map_is_bounded_least_recently_used_first() -> None:
    ids = ResponseIdMap(max_ids=2, ttl_s=60, clock=lambda: 0.0)
    ids.remember("a", "tp")
    ids.remember("b", "pp")
    assert ids.replica_of("a") == "tp"  # a use: "b" is now the least recently used
    ids.remember("c", "tp")
    assert (ids.replica_of("a"), ids.replica_of("b"), ids.replica_of("c")) == ("tp", None, "tp")
    assert len(ids) == 2


def test_id_map_forgets_ids_unused_for_the_ttl() -> None:
    now = [0.0]
    ids = ResponseIdMap(max_ids=10, ttl_s=5, clock=lambda: now[0])
    ids.remember("a", "tp")
    ids.remember("b", "pp")
    now[0] = 4.0
    assert ids.replica_of("a") == "tp"  # used at 4: kept until 9
    now[0] = 6.0
    assert ids.replica_of("b") is None
    assert ids.replica_of("a") == "tp"
    now[0] = 11.5
    assert ids.replica_of("a") is None
    assert len(ids) == 0


def test_route_to_keeps_the_class_priority_and_refuses_a_down_replica() -> None:
    settings = RoutingSettings()
    request = RequestFeatures(endpoint="responses", stream=False, max_tokens=4)
    loads = [
        ReplicaLoad("tp", "interactive"),
        ReplicaLoad("pp", "batch", accepts_priority=True),
    ]
    assert route_to(request, "interactive", loads, "pp", settings) == Route(
        "pp", settings.limits["interactive"].priority
    )
    assert route_to(request, "batch", loads, "tp", settings) == Route("tp", None)
    down = [ReplicaLoad("tp", "interactive", healthy=False)]
    decision = route_to(request, "interactive", down, "tp", settings)
    assert isinstance(decision, Reject) and decision.status == 503
    assert isinstance(route_to(request, "interactive", loads, "gone", settings), Reject)


# ---- through the gateway -------------------------------------------------------------------------
def test_follow_ups_reach_the_replica_that_holds_the_response(make_stack) -> None:
    stack = make_stack()
    first = create(stack, "batch")
    assert first.headers["x-tandem-replica"] == "pp"
    response_id = first.json()["id"]
    assert response_id in stack.pp.stored_responses and response_id not in stack.tp.stored_responses

    follow = create(stack, "interactive", previous_response_id=response_id)
    assert follow.status_code == 200, follow.text
    assert follow.headers["x-tandem-replica"] == "pp"
    assert follow.headers["x-tandem-class"] == "interactive"
    # The class's priority still applies on the priority-scheduled batch engine.
    assert stack.pp.requests[-1]["priority"] == stack.config.settings.routing.limits["interactive"].priority
    assert not any(r.get("previous_response_id") for r in stack.tp.requests)

    got = httpx.get(f"{stack.base_url}/responses/{response_id}")
    assert got.status_code == 200 and got.headers["x-tandem-replica"] == "pp"
    assert got.json()["id"] == response_id and got.json()["model"] == PUBLIC_MODEL


def test_an_evicted_id_is_not_found_without_reaching_a_replica(make_stack) -> None:
    stack = make_stack(responses={"max_ids": 1})
    old = create(stack).json()["id"]
    create(stack)  # evicts the first id from the gateway's map
    sent = len(stack.tp.requests) + len(stack.pp.requests)
    for answer in (
        create(stack, previous_response_id=old),
        httpx.get(f"{stack.base_url}/responses/{old}"),
        httpx.post(f"{stack.base_url}/responses/{old}/cancel"),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"] == {
            "message": f"Response with id '{old}' not found.",
            "type": "invalid_request_error",
            "param": "response_id",
            "code": 404,
        }
    assert len(stack.tp.requests) + len(stack.pp.requests) == sent


def test_the_holding_replica_down_is_an_error_not_another_replica(make_stack) -> None:
    stack = make_stack()
    response_id = create(stack, "batch").json()["id"]
    stack.pp.fail_next(None)  # the connection drops: the replica lost it, nobody else has the state
    answer = create(stack, "interactive", previous_response_id=response_id)
    assert answer.status_code == 502
    assert not any(r.get("previous_response_id") for r in stack.tp.requests)


def test_classification_reads_max_output_tokens_and_stream(make_stack) -> None:
    stack = make_stack()
    assert create(stack, stream=True).headers["x-tandem-class"] == "interactive"
    assert create(stack, max_output_tokens=64).headers["x-tandem-class"] == "interactive"
    limit = stack.config.settings.routing.classify.interactive_max_tokens
    assert create(stack, max_output_tokens=limit + 1).headers["x-tandem-class"] == "batch"
    assert create(stack, max_output_tokens=None).headers["x-tandem-class"] == "batch"  # nobody watching
    assert create(stack, max_output_tokens=None, stream=True).headers["x-tandem-class"] == "interactive"


def test_unknown_fields_pass_and_nothing_is_added(make_stack) -> None:
    stack = make_stack()
    extra = {"top_k": 5, "ignore_eos": True, "vllm_xargs": {"a": 1}, "instructions": "be brief", "store": False}
    assert create(stack, stream=True, **extra).status_code == 200
    received = stack.tp.requests[-1]
    assert {k: received[k] for k in extra} == extra
    assert received["model"] == stack.tp.model
    assert "stream_options" not in received  # the Responses stream carries usage without asking


def test_every_event_names_the_public_model_and_usage_is_counted_per_key(make_stack) -> None:
    stack = make_stack(auth=KEYS)
    events = list(
        sdk(stack, USER_KEY).responses.create(
            model=PUBLIC_MODEL, input="one two three", max_output_tokens=4, stream=True
        )
    )
    assert {e.response.model for e in events if hasattr(e, "response")} == {PUBLIC_MODEL}
    usage = events[-1].response.usage
    reply = sdk(stack, USER_KEY).responses.create(model=PUBLIC_MODEL, input="four five", max_output_tokens=2)
    assert reply.usage is not None and usage is not None
    counted = 'tandem_gateway_tokens_total{key="user",kind='
    assert metric(stack, counted + '"prompt"') == usage.input_tokens + reply.usage.input_tokens
    assert metric(stack, counted + '"completion"') == usage.output_tokens + reply.usage.output_tokens
    assert metric(stack, 'tandem_gateway_requests_total{endpoint="responses"') == 2


def test_background_response_can_be_retrieved_and_cancelled(make_stack) -> None:
    stack = make_stack()
    stack.tp.token_delay_s = 0.5
    queued = create(stack, background=True, max_output_tokens=20)
    assert queued.status_code == 200 and queued.json()["status"] == "queued"
    response_id = queued.json()["id"]
    assert httpx.get(f"{stack.base_url}/responses/{response_id}").json()["status"] == "queued"
    cancelled = httpx.post(f"{stack.base_url}/responses/{response_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["model"] == PUBLIC_MODEL
    assert metric(stack, 'tandem_gateway_requests_total{endpoint="responses.cancel"') == 1


def test_a_client_leaving_the_event_stream_aborts_upstream(make_stack) -> None:
    stack = make_stack()
    stack.tp.token_delay_s = 0.05
    body = {"model": PUBLIC_MODEL, "input": "hi", "max_output_tokens": 200, "stream": True}
    with httpx.stream(
        "POST", f"{stack.base_url}/responses", json=body, headers={"X-Request-Id": "responses-gone"}
    ) as response:
        lines = response.iter_lines()
        while next(lines) != "event: response.output_text.delta":
            pass
    hung_up = time.monotonic()
    aborted = [rid for rid in stack.tp.request_ids if rid.startswith("responses-gone")]
    assert aborted
    assert stack.tp.wait_for_abort(aborted[0], ABORT_WITHIN_S) is not None, "upstream kept generating"
    assert time.monotonic() - hung_up < ABORT_WITHIN_S
    assert aborted[0] not in stack.tp.completed


@pytest.mark.parametrize("path", ["/responses/resp_x", "/responses/resp_x/cancel"])
def test_retrieval_needs_a_key_when_keys_are_on(make_stack, path: str) -> None:
    stack = make_stack(auth=KEYS)
    answer = httpx.request("GET" if path.endswith("resp_x") else "POST", f"{stack.base_url}{path}")
    assert answer.status_code == 401
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_the_token_cap_names_max_output_tokens(make_stack) -> None:
    stack = make_stack(limits={"max_tokens_cap": 100})
    answer = create(stack, max_output_tokens=101)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "max_output_tokens"
    assert "max_output_tokens 101" in answer.json()["error"]["message"]
    assert create(stack, max_output_tokens=100).status_code == 200
