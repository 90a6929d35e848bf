"""The Responses API on the real CPU stack, the checks only real engines can answer: a client that
leaves a Responses event stream stops the engine's work, as for chat; and a stored response is
found on the one engine that made it, through the gateway, whatever class the follow-up reads as.
(The SDK contract and the comparisons with vLLM's own answers are in
tests/gateway/test_responses_contract.py, which runs against this stack too.)"""

from __future__ import annotations

import httpx
import openai
import pytest
from stack_support import EngineTally, frozen, gateway_lets_go

pytestmark = pytest.mark.stack


def test_client_leaving_a_responses_stream_stops_the_engine(cpu_stack) -> None:
    most = 2000  # with ignore_eos the engine would make them all; it must stop short
    body = {
        "model": cpu_stack.model,
        "input": "write a long story",
        "max_output_tokens": most,
        "ignore_eos": True,  # vLLM's extra field: the random demo model would otherwise stop at once
        "stream": True,
    }
    engine = cpu_stack.replica_urls["interactive"]
    tally = EngineTally(engine)
    # Frozen while the client leaves, so the abort cannot race the answer (tests/stack/stack_support.py).
    with frozen(engine), httpx.Client(timeout=60) as http:
        with http.stream(
            "POST", f"{cpu_stack.base_url}/responses", json=body, headers={"X-Tandem-Class": "interactive"}
        ) as r:
            assert r.status_code == 200
            assert r.headers["x-tandem-replica"] == "interactive"
        gateway_lets_go(cpu_stack.base_url, "interactive")
    tally.stopped_short(most)


def test_stored_response_is_found_only_on_its_engine(cpu_stack) -> None:
    client = openai.OpenAI(base_url=cpu_stack.base_url, api_key="unused", max_retries=0, timeout=120)
    first = client.responses.with_raw_response.create(
        model=cpu_stack.model, input="hello", max_output_tokens=4, extra_headers={"X-Tandem-Class": "batch"}
    )
    assert first.headers["x-tandem-replica"] == "batch"
    response_id = first.parse().id
    # vLLM keeps it in the batch engine's memory only: the other engine does not know it.
    assert httpx.get(f"{cpu_stack.replica_urls['interactive']}/responses/{response_id}").status_code == 404
    assert httpx.get(f"{cpu_stack.replica_urls['batch']}/responses/{response_id}").status_code == 200
    follow = client.responses.with_raw_response.create(
        model=cpu_stack.model, input="and then?", max_output_tokens=4, previous_response_id=response_id
    )
    assert follow.headers["x-tandem-class"] == "interactive"
    assert follow.headers["x-tandem-replica"] == "batch"
    assert client.responses.retrieve(follow.parse().id).previous_response_id == response_id
