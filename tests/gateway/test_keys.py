"""Keys without redeploys (issue 25): `gateway keys add|list|rotate|revoke` against a running
gateway (over fake replicas), checked with the official openai SDK: a change counts from the next
request, keys from the plan and TANDEM_API_KEYS keep working beside the stored ones, per-key
limits and expiry hold, stored keys outlive a restart, and no secret is ever in the store, a
listing, a log line or an error."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from gateway_support import ADMIN_KEY, KEYS, PUBLIC_MODEL, USER_KEY, FakeStack
from typer.testing import CliRunner, Result

from deploy.cli import app

WAIT_S = 30.0  # condition waits: generous for a loaded 2-core machine


def cli(stack: FakeStack, *args: str, admin_key: str | None = None) -> Result:
    env = {"TANDEM_URL": stack.root_url, "COLUMNS": "240"}
    if admin_key is not None:
        env["TANDEM_ADMIN_KEY"] = admin_key
    return CliRunner(env=env).invoke(app, list(args))


def issued(result: Result) -> str:
    """The key an add or rotate printed: alone on stdout."""
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def chat(stack: FakeStack, key: str, **options: Any) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    return client.chat.completions.create(
        model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, **options
    )


def works(stack: FakeStack, key: str) -> bool:
    try:
        chat(stack, key)
    except openai.AuthenticationError:
        return False
    return True


@pytest.fixture
def keyless(make_stack: Callable[..., FakeStack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeStack:
    monkeypatch.delenv("TANDEM_API_KEYS", raising=False)
    return make_stack(batches={"data_dir": str(tmp_path / "data")})


@pytest.fixture
def keyed(make_stack: Callable[..., FakeStack], tmp_path: Path) -> FakeStack:
    return make_stack(auth=KEYS, batches={"data_dir": str(tmp_path / "data")})


def test_a_keyless_gateway_takes_an_admin_key_first_then_serves_only_keys(keyless: FakeStack) -> None:
    assert works(keyless, "anything")  # no keys: open, as `vllm serve` without --api-key
    refused = cli(keyless, "keys", "add", "alice")
    assert refused.exit_code == 1 and "add an admin key first" in refused.output
    assert works(keyless, "anything")  # the refusal changed nothing

    admin = issued(cli(keyless, "keys", "add", "ops", "--admin"))  # loopback, no key yet: allowed
    assert admin.startswith("tdm-") and len(admin) > 40
    with pytest.raises(openai.AuthenticationError):  # from the very next request
        chat(keyless, "anything")
    alice = issued(cli(keyless, "keys", "add", "alice", admin_key=admin))
    assert works(keyless, alice) and works(keyless, admin)
    # once keys exist, the admin routes want the admin key, even on loopback
    assert cli(keyless, "keys", "list").exit_code == 1
    no_admin = cli(keyless, "keys", "list", admin_key=alice)
    assert no_admin.exit_code == 1 and "403" in no_admin.output


def test_plan_and_environment_keys_keep_working_beside_stored_ones(
    make_stack: Callable[..., FakeStack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_key = "sk-env-key-0123456789abcdef"
    monkeypatch.setenv("TANDEM_API_KEYS", f"ci:{env_key}")
    stack = make_stack(auth=KEYS, batches={"data_dir": str(tmp_path / "data")})
    carol = issued(cli(stack, "keys", "add", "carol", "--class", "batch", admin_key=ADMIN_KEY))
    assert works(stack, carol) and works(stack, USER_KEY) and works(stack, env_key)
    reply = httpx.post(
        f"{stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {carol}"},
        json={"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert reply.headers["x-tandem-class"] == "batch"  # the stored key's default class

    listed = cli(stack, "keys", "list", "--format", "json", admin_key=ADMIN_KEY)
    assert listed.exit_code == 0
    sources = {k["name"]: k["source"] for k in __import__("json").loads(listed.stdout)}
    assert sources == {"admin": "plan", "user": "plan", "batcher": "plan", "ci": "plan", "carol": "store"}
    for command in (["revoke", "user"], ["rotate", "ci"]):
        refused = cli(stack, "keys", *command, admin_key=ADMIN_KEY)
        assert refused.exit_code == 1 and "comes from the plan" in refused.output
    taken = cli(stack, "keys", "add", "user", admin_key=ADMIN_KEY)
    assert taken.exit_code == 1 and "comes from the plan" in taken.output
    assert works(stack, USER_KEY)


def test_rotate_and_revoke_count_from_the_next_request(keyed: FakeStack) -> None:
    old = issued(cli(keyed, "keys", "add", "dave", admin_key=ADMIN_KEY))
    assert works(keyed, old)
    new = issued(cli(keyed, "keys", "rotate", "dave", admin_key=ADMIN_KEY))
    assert new != old and works(keyed, new) and not works(keyed, old)
    revoked = cli(keyed, "keys", "revoke", "dave", admin_key=ADMIN_KEY)
    assert revoked.exit_code == 0, revoked.output
    assert not works(keyed, new)
    missing = cli(keyed, "keys", "revoke", "dave", admin_key=ADMIN_KEY)
    assert missing.exit_code == 1 and "no key named 'dave'" in missing.output


def test_the_last_admin_key_and_the_last_key_cannot_be_revoked(keyless: FakeStack) -> None:
    ops = issued(cli(keyless, "keys", "add", "ops", "--admin"))
    last = cli(keyless, "keys", "revoke", "ops", admin_key=ops)
    assert last.exit_code == 1 and "last key" in last.output
    issued(cli(keyless, "keys", "add", "erin", admin_key=ops))
    last_admin = cli(keyless, "keys", "revoke", "ops", admin_key=ops)
    assert last_admin.exit_code == 1 and "last admin key" in last_admin.output
    second = issued(cli(keyless, "keys", "add", "ops2", "--admin", admin_key=ops))
    assert cli(keyless, "keys", "revoke", "ops", admin_key=second).exit_code == 0
    assert not works(keyless, ops) and works(keyless, second)


def test_request_and_token_limits_answer_429(keyed: FakeStack) -> None:
    limited = issued(cli(keyed, "keys", "add", "rate", "--rpm", "1", admin_key=ADMIN_KEY))
    chat(keyed, limited)
    with pytest.raises(openai.RateLimitError, match="1 requests per minute"):
        chat(keyed, limited)

    # tokens are known once a request ends: a request is admitted while the budget is above zero
    budget = issued(cli(keyed, "keys", "add", "tokens", "--tpm", "2", admin_key=ADMIN_KEY))
    used = chat(keyed, budget).usage
    assert used is not None and used.total_tokens > 2  # the budget is overdrawn now
    with pytest.raises(openai.RateLimitError, match="2 tokens per minute") as refused:
        chat(keyed, budget)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert works(keyed, USER_KEY)  # other keys are not limited by it


def test_concurrency_limit(keyed: FakeStack) -> None:
    key = issued(cli(keyed, "keys", "add", "one-at-a-time", "--concurrency", "1", admin_key=ADMIN_KEY))
    keyed.tp.token_delay_s = 0.2
    client = openai.OpenAI(base_url=keyed.base_url, api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=50, stream=True
    )
    next(iter(stream))  # the first request is in flight
    with pytest.raises(openai.RateLimitError, match="already has 1 requests in flight"):
        chat(keyed, key)
    stream.close()


def test_an_expired_key_is_refused(keyed: FakeStack) -> None:
    key = issued(cli(keyed, "keys", "add", "temp", "--expires", "2s", admin_key=ADMIN_KEY))
    listed = cli(keyed, "keys", "list", admin_key=ADMIN_KEY)
    assert "temp" in listed.stdout and "UTC" in listed.stdout
    deadline = time.monotonic() + WAIT_S
    while works(keyed, key):
        assert time.monotonic() < deadline, "the key still works after its expiry"
        time.sleep(0.5)
    with pytest.raises(openai.AuthenticationError, match="'temp' has expired"):
        chat(keyed, key)
    past = cli(keyed, "keys", "add", "late", "--expires", "2020-01-01", admin_key=ADMIN_KEY)
    assert past.exit_code == 1 and "in the past" in past.output


def test_stored_keys_outlive_a_restart_and_are_stored_hashed(
    make_stack: Callable[..., FakeStack], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = make_stack(auth=KEYS, batches={"data_dir": str(data)})
    frank = issued(cli(first, "keys", "add", "frank", "--rpm", "100", admin_key=ADMIN_KEY))
    first.gateway.stop()
    second = make_stack(auth=KEYS, batches={"data_dir": str(data)})
    assert works(second, frank)
    stored = b"".join(path.read_bytes() for path in data.iterdir() if path.name.startswith("gateway.sqlite3"))
    assert b"frank" in stored  # the key's row is there...
    assert frank.encode() not in stored and frank[8:].encode() not in stored  # ...its secret is not


def test_secrets_are_never_in_a_listing_a_log_or_an_error(keyed: FakeStack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = issued(cli(keyed, "keys", "add", "grace", admin_key=ADMIN_KEY))
    rotated = issued(cli(keyed, "keys", "rotate", "grace", admin_key=ADMIN_KEY))
    chat(keyed, rotated)
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(keyed, key)  # the old secret: refused, and not echoed
    listing = cli(keyed, "keys", "list", "--format", "json", admin_key=ADMIN_KEY).stdout
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    bad = httpx.post(f"{keyed.root_url}/admin/keys", headers=headers, json={"name": "h", "key": rotated})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "key"
    text = "\n".join([caplog.text, listing, bad.text, str(refused.value), refused.value.response.text])
    for secret in (key, rotated, ADMIN_KEY):
        assert secret not in text
    assert "grace" in caplog.text  # the log names the key
    added = httpx.post(f"{keyed.root_url}/admin/keys", headers=headers, json={"name": "henry"})
    assert added.status_code == 201 and added.headers["cache-control"] == "no-store"
