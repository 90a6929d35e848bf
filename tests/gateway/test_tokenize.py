"""POST /tokenize through the gateway: the engine's own token count for the public model name, so
a client that only knows the gateway (tuner bench) can size prompts in the engine's tokens."""

from __future__ import annotations

import httpx
from fake_upstream import fake_token_count
from gateway_support import PUBLIC_MODEL, USER_KEY, FakeStack

AUTH = {"Authorization": f"Bearer {USER_KEY}"}


def test_tokenize_answers_with_the_engine_count_for_the_public_name(fake_stack: FakeStack) -> None:
    text = " the interactive replica tokenizes"
    answer = httpx.post(f"{fake_stack.root_url}/tokenize", json={"model": PUBLIC_MODEL, "prompt": text}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == fake_token_count(text)  # the replica saw its own model name


def test_tokenize_refuses_an_unknown_model_and_a_missing_key_in_the_openai_envelope(fake_stack: FakeStack) -> None:
    unknown = httpx.post(f"{fake_stack.root_url}/tokenize", json={"model": "nope", "prompt": "x"}, headers=AUTH)
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    anonymous = httpx.post(f"{fake_stack.root_url}/tokenize", json={"model": PUBLIC_MODEL, "prompt": "x"})
    assert anonymous.status_code == 401 and "error" in anonymous.json()
    junk = httpx.post(f"{fake_stack.root_url}/tokenize", content=b"[1, 2", headers=AUTH)
    assert junk.status_code == 400 and junk.json()["error"]["code"] == 400
