"""The status page and `gateway status` (issue 25), on a gateway over fake replicas: the page is
self-contained (nothing fetched from outside the box), its facts need the admin key, show both
replicas, and change while a request runs and after it (load, then TTFT/TPOT and usage), in
headless Chromium too; the terminal command prints the same facts, on a gateway-only install too
(no Ray)."""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from gateway_support import ADMIN_KEY, KEYS, PUBLIC_MODEL, USER_KEY, FakeStack
from status_page import cells, rendered
from test_keys import cli

WAIT_S = 30.0


def facts(stack: FakeStack, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{stack.root_url}/admin/status", headers=headers, timeout=10)


def wait_for(condition: Callable[[dict[str, Any]], bool], stack: FakeStack) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        current = facts(stack).json()
        if condition(current):
            return current
        assert time.monotonic() < deadline, current
        time.sleep(0.1)


@pytest.fixture
def stack(make_stack: Callable[..., FakeStack], tmp_path: Path) -> FakeStack:
    return make_stack(auth=KEYS, batches={"data_dir": str(tmp_path / "data")})


def test_the_page_is_self_contained(stack: FakeStack) -> None:
    page = httpx.get(f"{stack.root_url}/status")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/admin/status" in page.text  # what it reads, from the same origin
    assert not re.search(r"(https?:)?//[a-z0-9]", page.text, re.I)  # no CDN, no outside URL
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import", page.text, re.I)  # no other file at all


def test_the_facts_need_an_admin_key(stack: FakeStack) -> None:
    assert facts(stack, None).status_code == 401
    assert facts(stack, USER_KEY).status_code == 403


def test_the_facts_follow_a_running_request(stack: FakeStack) -> None:
    start = facts(stack).json()
    assert {(r["name"], r["traffic_class"], r["healthy"]) for r in start["replicas"]} == {
        ("tp", "interactive", True),
        ("pp", "batch", True),
    }
    assert start["classes"]["interactive"]["streams"] == 0 and start["usage"] == []

    stack.tp.token_delay_s = 0.05
    client = openai.OpenAI(base_url=stack.base_url, api_key=USER_KEY, max_retries=0)

    def stream() -> None:
        for _ in client.chat.completions.create(
            model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=40, stream=True
        ):
            pass

    running = threading.Thread(target=stream)
    running.start()
    during = wait_for(lambda f: f["classes"]["interactive"]["in_flight"] == 1, stack)
    assert next(r for r in during["replicas"] if r["name"] == "tp")["in_flight"] == 1
    running.join(WAIT_S)
    after = wait_for(lambda f: f["classes"]["interactive"]["streams"] == 1, stack)
    interactive = after["classes"]["interactive"]
    assert interactive["in_flight"] == 0
    assert 0 < interactive["ttft_p50_ms"] <= interactive["ttft_p95_ms"]
    assert interactive["tpot_p50_ms"] >= 40  # 50 ms between tokens, less what a loaded machine shaves off
    assert [(u["key"], u["requests"], u["completion_tokens"]) for u in after["usage"]] == [("user", 1, 40)]


def test_gateway_status_prints_the_same_facts_without_ray(stack: FakeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a)
    )
    monkeypatch.setitem(sys.modules, "ray", None)
    openai.OpenAI(base_url=stack.base_url, api_key=USER_KEY, max_retries=0).chat.completions.create(
        model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    result = cli(stack, "status", admin_key=ADMIN_KEY)
    assert result.exit_code == 0, result.output
    for fact in ("tp", "pp", "healthy", "interactive", "ttft p50 ms", "usage, last 24 hours", "user"):
        assert fact in result.stdout, fact
    assert "Ray is not installed" in result.output
    refused = cli(stack, "status", admin_key=USER_KEY)
    assert refused.exit_code == 1 and "403" in refused.output


def test_the_page_shows_both_replicas_and_updates_in_a_browser(
    make_stack: Callable[..., FakeStack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TANDEM_API_KEYS", raising=False)
    keyless = make_stack(batches={"data_dir": str(tmp_path / "data")})  # loopback: no admin key needed
    before = rendered(keyless.root_url)
    assert [row[:4] for row in cells(before, "replicas")] == [
        ["tp", PUBLIC_MODEL, "interactive", "healthy"],
        ["pp", PUBLIC_MODEL, "batch", "healthy"],
    ]
    assert [row[:3] for row in cells(before, "models")] == [[PUBLIC_MODEL, "tandem-alias", "pp, tp"]]
    assert cells(before, "usage") == []
    for _ in openai.OpenAI(base_url=keyless.base_url, api_key="-", max_retries=0).chat.completions.create(
        model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
    ):
        pass
    after = rendered(keyless.root_url)
    assert [row[:4] for row in cells(after, "usage")] == [["anonymous", PUBLIC_MODEL, "interactive", "1"]]
    interactive = next(row for row in cells(after, "classes") if row[0] == "interactive")
    assert interactive[3] == "1" and interactive[4] != "-"  # one stream, with its TTFT


def test_the_page_asks_for_the_admin_key(stack: FakeStack) -> None:
    dom = rendered(stack.root_url)
    assert "missing or invalid API key" in dom and cells(dom, "replicas") == []
