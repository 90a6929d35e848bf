"""Gateway behaviour over real sockets, fake replicas behind it: routing, priority, failover,
limits, keys, runtime policy switch, metrics."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_support import ADMIN_KEY, PUBLIC_MODEL, USER_KEY, FakeStack, free_port_refusing, gateway_config

from gateway.backends.http import HttpBackend
from gateway.server import start_in_thread

CHAT = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
BATCH = CHAT | {"n": 2}


def post(stack: FakeStack, body: dict, key: str | None = None, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=30)


def metric(stack: FakeStack, name: str, **labels: str) -> float:
    """Sum of a Prometheus series' samples whose labels include `labels`."""
    total = 0.0
    for line in httpx.get(f"{stack.root_url}/metrics").text.splitlines():
        if line.split("{", 1)[0].split(" ", 1)[0] == name and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_classes_reach_their_replicas_with_priority_only_where_scheduled(fake_stack: FakeStack) -> None:
    interactive = post(fake_stack, CHAT, USER_KEY)
    batch = post(fake_stack, BATCH, USER_KEY)
    assert (interactive.headers["x-tandem-replica"], batch.headers["x-tandem-replica"]) == ("tp", "pp")
    assert "priority" not in fake_stack.tp.requests[-1]
    assert fake_stack.pp.requests[-1]["priority"] == 10
    client_priority = post(fake_stack, BATCH | {"priority": 3}, USER_KEY)
    assert client_priority.status_code == 200 and fake_stack.pp.requests[-1]["priority"] == 3
    assert interactive.json()["model"] == batch.json()["model"] == PUBLIC_MODEL


def test_header_and_key_default_choose_the_class(fake_stack: FakeStack) -> None:
    assert post(fake_stack, CHAT, USER_KEY, **{"X-Tandem-Class": "batch"}).headers["x-tandem-class"] == "batch"
    assert post(fake_stack, CHAT, "sk-batch-0123456789").headers["x-tandem-class"] == "batch"
    bad = post(fake_stack, CHAT, USER_KEY, **{"X-Tandem-Class": "urgent"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-tandem-class"


def test_alias_is_accepted_and_answered_with_the_public_name(fake_stack: FakeStack) -> None:
    reply = post(fake_stack, CHAT | {"model": "tandem-alias"}, USER_KEY)
    assert reply.status_code == 200 and reply.json()["model"] == PUBLIC_MODEL


def test_client_request_id_is_kept_and_sent_upstream(fake_stack: FakeStack) -> None:
    reply = post(fake_stack, CHAT, USER_KEY, **{"X-Request-Id": "my-id-42"})
    assert reply.headers["x-request-id"] == "my-id-42"
    assert fake_stack.tp.request_ids[-1].startswith("my-id-42.")  # the client's id, made unique
    assert httpx.get(f"{fake_stack.root_url}/health").headers["x-request-id"]


def test_clients_sending_the_same_request_id_never_collide_upstream(fake_stack: FakeStack) -> None:
    """Issue 14, defect 5: vLLM makes X-Request-Id its own request id, so two requests with one id
    must reach the engine under two ids, while each client still sees its own id."""
    sent = len(fake_stack.tp.request_ids)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: post(fake_stack, CHAT, USER_KEY, **{"X-Request-Id": "same-id"}), range(4)))
    assert [r.headers["x-request-id"] for r in replies] == ["same-id"] * 4
    upstream = fake_stack.tp.request_ids[sent:]
    assert len(upstream) == 4 and len(set(upstream)) == 4
    assert all(i.startswith("same-id.") for i in upstream)
    mine = post(fake_stack, CHAT, USER_KEY)  # no id sent: the gateway's own, the same on both sides
    assert fake_stack.tp.request_ids[-1] == mine.headers["x-request-id"]


def test_usage_is_counted_per_key(fake_stack: FakeStack) -> None:
    before = metric(fake_stack, "tandem_gateway_tokens_total", key="user", kind="completion")
    post(fake_stack, CHAT | {"max_tokens": 7}, USER_KEY)
    with httpx.stream(
        "POST", f"{fake_stack.base_url}/chat/completions", json=CHAT | {"max_tokens": 5, "stream": True},
        headers={"Authorization": f"Bearer {USER_KEY}"},
    ) as stream:  # fmt: skip
        lines = [line for line in stream.iter_lines() if line]
    assert not any('"usage"' in line for line in lines)  # not asked for: not shown...
    assert fake_stack.tp.requests[-1]["stream_options"] == {"include_usage": True}  # ...but counted
    after = metric(fake_stack, "tandem_gateway_tokens_total", key="user", kind="completion")
    assert after - before == 12


def test_replica_refusing_connections_is_skipped_invisibly(make_stack) -> None:
    stack = make_stack(tp_url=f"http://127.0.0.1:{free_port_refusing()}/v1")
    reply = post(stack, CHAT | {"stream": False})
    assert reply.status_code == 200 and reply.headers["x-tandem-replica"] == "pp"
    assert reply.json()["model"] == PUBLIC_MODEL


def test_replica_dropping_the_request_after_it_was_sent_is_not_sent_again(make_stack) -> None:
    """The replica had the request (it may have run it, or died of it): a 502, never a second run."""
    stack = make_stack()
    stack.tp.fail_next(None)
    reply = post(stack, CHAT)
    assert reply.status_code == 502 and reply.json()["error"]["code"] == 502
    assert (len(stack.tp.requests), len(stack.pp.requests)) == (1, 0)
    assert metric(stack, "tandem_gateway_retries_total", replica="tp") == 0
    assert post(stack, CHAT).headers["x-tandem-replica"] == "tp"  # a drop is not a dead replica


def test_upstream_errors_pass_through(make_stack) -> None:
    stack = make_stack()
    stack.tp.fail_next(500)
    reply = post(stack, CHAT)
    assert reply.status_code == 500
    assert reply.json() == {
        "error": {"message": "injected failure", "type": "BadRequestError", "param": None, "code": 500}
    }


class _BuggyOnce(HttpBackend):
    """An HTTP backend whose first send fails with an error no one planned for."""

    failed = False

    async def send(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug")
        return await super().send(*args, **kwargs)


def test_a_bug_inside_the_gateway_is_a_500_envelope_and_the_next_request_is_served() -> None:
    with FakeUpstream(model="upstream-tp").running() as tp, FakeUpstream(model="upstream-pp").running() as pp:
        config = gateway_config(tp, pp)
        gateway = start_in_thread(config, backends={"tp": _BuggyOnce(tp.base_url), "pp": HttpBackend(pp.base_url)})
        try:
            stack = FakeStack(gateway, tp, pp, config)
            broken = post(stack, CHAT, **{"X-Request-Id": "bug-1"})
            assert broken.status_code == 500 and broken.headers["x-request-id"] == "bug-1"
            assert broken.json()["error"]["message"] == "internal gateway error (RuntimeError)"
            assert post(stack, CHAT).status_code == 200
        finally:
            gateway.stop()


def test_no_ready_replica_is_503(make_stack) -> None:
    stack = make_stack()
    dead = f"http://127.0.0.1:{free_port_refusing()}/v1"
    for replica in stack.config.replicas:
        replica.base_url = dead
    from gateway.server import start_in_thread

    gateway = start_in_thread(stack.config)
    try:
        reply = httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT)
        assert reply.status_code == 503 and reply.headers["retry-after"]
        assert reply.json()["error"]["type"] == "ServiceUnavailable"
        assert httpx.get(f"{gateway.base_url.removesuffix('/v1')}/ready").status_code == 503
    finally:
        gateway.stop()


def test_slow_upstream_is_504(make_stack) -> None:
    stack = make_stack(limits={"upstream_first_byte_timeout_s": 0.2})
    stack.tp.first_token_delay_s = 2
    reply = post(stack, CHAT)
    assert reply.status_code == 504 and reply.json()["error"]["code"] == 504


def test_limits(make_stack) -> None:
    stack = make_stack(
        limits={"max_body_bytes": 2048, "max_tokens_cap": 100},
        auth={"keys": [{"name": "slow", "key": "sk-slow-0123456789", "requests_per_minute": 3}]},
    )
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-slow-0123456789", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="cap of 100"):
        client.chat.completions.create(model=PUBLIC_MODEL, messages=CHAT["messages"], max_tokens=101)
    huge = CHAT | {"messages": [{"role": "user", "content": "x" * 4096}]}
    too_big = post(stack, huge, "sk-slow-0123456789")
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == 413
    client.chat.completions.create(model=PUBLIC_MODEL, messages=CHAT["messages"], max_tokens=2)
    with pytest.raises(openai.RateLimitError) as info:  # refused requests count against the rate too
        client.chat.completions.create(model=PUBLIC_MODEL, messages=CHAT["messages"], max_tokens=2)
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_concurrency_limits_answer_429(make_stack) -> None:
    stack = make_stack(
        routing={"limits": {"interactive": {"max_concurrency": 1, "max_queue": 1}, "batch": {"max_concurrency": 1}}},
        auth={
            "keys": [
                {"name": "two", "key": "sk-two-0123456789", "max_concurrent": 2},
                {"name": "free", "key": USER_KEY},
            ]
        },
    )
    stack.tp.first_token_delay_s = 1.5  # long enough that all four overlap on a loaded machine
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: post(stack, CHAT, "sk-two-0123456789"), range(3)))
        assert sorted(r.status_code for r in replies) == [200, 200, 429]  # the key: two at once
        replies = list(pool.map(lambda _: post(stack, CHAT, USER_KEY), range(4)))
        assert sorted(r.status_code for r in replies) == [200, 200, 429, 429]  # the class: one runs, one queued
    assert all(r.json()["error"]["type"] == "RateLimitError" for r in replies if r.status_code == 429)


def test_policy_switch_at_runtime(make_stack) -> None:
    stack = make_stack(
        auth={"keys": [{"name": "admin", "key": ADMIN_KEY, "admin": True}, {"name": "user", "key": USER_KEY}]}
    )
    url = f"{stack.root_url}/admin/routing"
    assert httpx.put(url, json={"policy": "all-batch"}).status_code == 401
    assert (
        httpx.put(url, json={"policy": "all-batch"}, headers={"Authorization": f"Bearer {USER_KEY}"}).status_code == 403
    )
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    bad = httpx.put(url, json={"policy": "fastest"}, headers=admin)
    assert bad.status_code == 400 and "unknown routing policy" in bad.json()["error"]["message"]
    assert post(stack, CHAT, USER_KEY).headers["x-tandem-replica"] == "tp"
    assert httpx.put(url, json={"policy": "all-batch"}, headers=admin).json()["policy"] == "all-batch"
    assert post(stack, CHAT, USER_KEY).headers["x-tandem-replica"] == "pp"
    assert httpx.get(url, headers=admin).json()["policy"] == "all-batch"


def _batch_beside_interactive(stack: FakeStack) -> tuple[float, float]:
    """(seconds from the interactive reply to the batch reply, tandem_gateway_batch_held while the
    batch request waited): the batch request is sent 0.2 s into an interactive one that runs for
    2 s. Negative: batch was answered first."""

    def timed(body: dict) -> tuple[httpx.Response, float]:
        return post(stack, body), time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        interactive = pool.submit(timed, CHAT)
        time.sleep(0.2)
        batch = pool.submit(timed, BATCH)
        time.sleep(0.2)
        held = metric(stack, "tandem_gateway_batch_held")
        (reply, batch_done), (answered, interactive_done) = batch.result(), interactive.result()
    assert reply.status_code == answered.status_code == 200 and reply.headers["x-tandem-replica"] == "pp"
    return batch_done - interactive_done, held


def test_batch_yields_to_interactive_work_once_switched_on(make_stack) -> None:
    stack = make_stack()
    stack.tp.first_token_delay_s = 2.0
    after, held = _batch_beside_interactive(stack)
    assert after < 0 and held == 0  # off by default: batch runs beside interactive
    url = f"{stack.root_url}/admin/routing"
    settings = httpx.get(url).json() | {"batch_yield_fraction": 0, "batch_yield_settle_s": 0.3}
    assert httpx.put(url, json=settings).status_code == 200
    after, held = _batch_beside_interactive(stack)
    # held until the interactive request ended and interactive work had settled for 0.3 s (less
    # 0.1 s for the client's threads seeing the two replies late or early on a busy machine)
    assert after >= 0.2 and held == 1
    assert metric(stack, "tandem_gateway_batch_held") == 0


def test_engine_load_is_polled(make_stack) -> None:
    stack = make_stack(limits={"load_poll_interval_s": 0.05})
    stack.tp.active = 70  # what the fake reports: 64 running, 6 waiting
    deadline = time.monotonic() + 30
    while metric(stack, "tandem_gateway_replica_waiting", replica="tp") != 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(stack, "tandem_gateway_replica_running", replica="tp") == 64
    assert metric(stack, "tandem_gateway_replica_waiting", replica="tp") == 6
    # a long interactive queue on tp: interactive traffic spills to pp
    assert post(stack, CHAT).headers["x-tandem-replica"] == "pp"
    stack.tp.active = 0


def test_request_metrics_per_class_and_replica(make_stack) -> None:
    stack = make_stack()
    post(stack, CHAT)
    post(stack, BATCH)
    post(stack, CHAT | {"model": "nope"})
    assert metric(stack, "tandem_gateway_requests_total", traffic_class="interactive", replica="tp", status="200") == 1
    assert metric(stack, "tandem_gateway_requests_total", traffic_class="batch", replica="pp", status="200") == 1
    assert metric(stack, "tandem_gateway_errors_total", status="404", origin="gateway") == 1
    assert metric(stack, "tandem_gateway_added_seconds_count", replica="tp") == 1
