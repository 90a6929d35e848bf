"""/metrics needs no key, so it names no key unless told to (issue 14, defect 7): with
auth.per_key_metrics off (the default) request and token series carry key="-"; on, the key's
name (never the secret)."""

from __future__ import annotations

import httpx
from gateway_support import KEYS, PUBLIC_MODEL, USER_KEY, FakeStack

CHAT_BODY = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
SECRETS = [k["key"] for k in KEYS["keys"]]  # type: ignore[index]
NAMES = [k["name"] for k in KEYS["keys"]]  # type: ignore[index]


def scrape_after_traffic(stack: FakeStack) -> str:
    reply = httpx.post(
        f"{stack.base_url}/chat/completions", json=CHAT_BODY, headers={"Authorization": f"Bearer {USER_KEY}"}
    )
    assert reply.status_code == 200
    refused = httpx.post(f"{stack.base_url}/chat/completions", json=CHAT_BODY)
    assert refused.status_code == 401
    return httpx.get(f"{stack.root_url}/metrics").text


def test_metrics_name_no_key_by_default(make_stack) -> None:
    keys = {"keys": KEYS["keys"]}
    text = scrape_after_traffic(make_stack(auth=keys))
    assert 'key="-"' in text and "tandem_gateway_tokens_total" in text
    for name in NAMES:
        assert f'key="{name}"' not in text
    assert not any(secret in text for secret in SECRETS)


def test_per_key_series_once_switched_on(make_stack) -> None:
    assert KEYS["per_key_metrics"] is True
    text = scrape_after_traffic(make_stack(auth=KEYS))
    assert 'key="user"' in text
    tokens = [line for line in text.splitlines() if line.startswith("tandem_gateway_tokens_total{")]
    assert tokens and all('key="user"' in line for line in tokens)
    assert not any(secret in text for secret in SECRETS)
