"""The usage ledger (issue 25): requests, prompt and completion tokens and errors per key, model
and traffic class, as the openai SDK's own usage reports them, through `gateway usage` (table,
CSV, JSON) and GET /admin/usage (admin only); kept across a restart."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import ADMIN_KEY, KEYS, PUBLIC_MODEL, USER_KEY, FakeStack
from test_keys import cli

MESSAGES = [{"role": "user", "content": "how many tokens is this"}]


def ledger(stack: FakeStack) -> dict[tuple[str, str, str], dict[str, int]]:
    result = cli(stack, "usage", "--since", "1h", "--format", "json", admin_key=ADMIN_KEY)
    assert result.exit_code == 0, result.output
    return {(r["key"], r["model"], r["traffic_class"]): r for r in json.loads(result.stdout)}


def test_usage_per_key_model_and_class(make_stack: Callable[..., FakeStack], tmp_path: Path) -> None:
    data = {"data_dir": str(tmp_path / "data")}
    stack = make_stack(auth=KEYS, batches=data)
    user = openai.OpenAI(base_url=stack.base_url, api_key=USER_KEY, max_retries=0)
    prompt = completion = 0
    for _ in range(2):
        usage = user.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES, max_tokens=5).usage
        assert usage is not None
        prompt, completion = prompt + usage.prompt_tokens, completion + usage.completion_tokens
    stream = user.chat.completions.create(
        model="tandem-alias", messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    streamed = [chunk.usage for chunk in stream if chunk.usage is not None][0]
    with pytest.raises(openai.NotFoundError):
        user.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=5)
    batcher = openai.OpenAI(base_url=stack.base_url, api_key="sk-batch-0123456789", max_retries=0)
    batch_usage = batcher.completions.create(model=PUBLIC_MODEL, prompt="a b c", max_tokens=7).usage
    assert batch_usage is not None

    rows = ledger(stack)
    plain = rows[("user", PUBLIC_MODEL, "interactive")]
    assert (plain["requests"], plain["prompt_tokens"], plain["completion_tokens"], plain["errors"]) == (
        2,
        prompt,
        completion,
        0,
    )
    alias = rows[("user", "tandem-alias", "interactive")]
    assert (alias["prompt_tokens"], alias["completion_tokens"]) == (streamed.prompt_tokens, streamed.completion_tokens)
    assert rows[("user", "-", "-")]["errors"] == 1  # the unknown model: answered by the gateway, counted
    batch = rows[("batcher", PUBLIC_MODEL, "batch")]
    assert (batch["requests"], batch["completion_tokens"]) == (1, batch_usage.completion_tokens)

    table = cli(stack, "usage", admin_key=ADMIN_KEY)
    assert table.exit_code == 0 and "batcher" in table.stdout and "completion tokens" in table.stdout
    as_csv = list(csv.DictReader(io.StringIO(cli(stack, "usage", "--format", "csv", admin_key=ADMIN_KEY).stdout)))
    assert {(r["key"], r["model"], r["traffic_class"]) for r in as_csv} == set(rows)
    refused = httpx.get(f"{stack.root_url}/admin/usage", headers={"Authorization": f"Bearer {USER_KEY}"})
    assert refused.status_code == 403

    stack.gateway.stop()  # the ledger is written at shutdown too
    again = make_stack(auth=KEYS, batches=data)
    assert ledger(again)[("user", PUBLIC_MODEL, "interactive")]["requests"] == 2


def test_usage_since_must_be_a_duration(make_stack: Callable[..., FakeStack], tmp_path: Path) -> None:
    stack = make_stack(auth=KEYS, batches={"data_dir": str(tmp_path / "data")})
    result = cli(stack, "usage", "--since", "last week", admin_key=ADMIN_KEY)
    assert result.exit_code == 2 and "not a duration" in result.output
