"""Several models behind one gateway (gateway.model_groups), over fake upstreams: a request's
`model` picks the group, the group's router picks its replica; /v1/models lists each model once;
keys limited to models; one model's replica gone leaves the other serving; each model's own class
limits; the model on metrics and the status page."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_support import ADMIN_KEY, USER_KEY

from gateway.contract.config import GatewayConfig, TrafficClass
from gateway.load import LoadBoard
from gateway.model_groups import ModelGroups
from gateway.server import GatewayThread, start_in_thread

CODER_KEY = "sk-coder-0123456789"


@dataclass
class TwoModels:
    gateway: GatewayThread
    chat_tp: FakeUpstream
    chat_pp: FakeUpstream
    coder: FakeUpstream
    coder_server: contextlib.ExitStack  # closing it stops the coder's engine

    @property
    def base_url(self) -> str:
        return self.gateway.base_url

    def sdk(self, key: str = USER_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=60)


def two_model_config(chat_tp: FakeUpstream, chat_pp: FakeUpstream, coder: FakeUpstream) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "models": [
                {
                    "name": "chat",
                    "aliases": ["gpt-oss-20b"],
                    "replicas": [
                        {"name": "chat-tp", "traffic_class": "interactive", "model": chat_tp.model},
                        {"name": "chat-pp", "traffic_class": "batch", "model": chat_pp.model},
                    ],
                },
                {
                    "name": "coder",
                    "replicas": [{"name": "coder", "traffic_class": "interactive", "model": coder.model}],
                    # One request at a time, none waiting: the coder's queue fills on its own.
                    "limits": {"interactive": {"max_concurrency": 1, "max_queue": 0}},
                },
            ],
            "settings": {
                "auth": {
                    "keys": [
                        {"name": "admin", "key": ADMIN_KEY, "admin": True},
                        {"name": "user", "key": USER_KEY},
                        {"name": "coder-only", "key": CODER_KEY, "models": ["coder"]},
                    ]
                }
            },
        }
    )


@pytest.fixture
def fake_models() -> Iterator[TwoModels]:
    with contextlib.ExitStack() as stack:
        chat_tp = stack.enter_context(FakeUpstream(model="upstream-chat-tp").running())
        chat_pp = stack.enter_context(FakeUpstream(model="upstream-chat-pp").running())
        coder_server = stack.enter_context(contextlib.ExitStack())
        coder = coder_server.enter_context(FakeUpstream(model="upstream-coder").running())
        config = two_model_config(chat_tp, chat_pp, coder)
        urls = {"chat-tp": chat_tp.base_url, "chat-pp": chat_pp.base_url, "coder": coder.base_url}
        for replica in config.replicas:
            replica.base_url = urls[replica.name]
        gateway = start_in_thread(config)
        stack.callback(gateway.stop)
        yield TwoModels(gateway, chat_tp, chat_pp, coder, coder_server)


def test_the_sdk_talks_to_each_model_by_name_and_each_reaches_only_its_replicas(fake_models: TwoModels) -> None:
    sdk = fake_models.sdk()
    for name, upstream in (
        ("chat", fake_models.chat_tp),
        ("gpt-oss-20b", fake_models.chat_tp),
        ("coder", fake_models.coder),
    ):
        reply = sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        public = "coder" if name == "coder" else "chat"
        assert reply.model == public  # the public name, never the upstream's
        assert upstream.requests and upstream.requests[-1]["model"] == upstream.model
    batch = sdk.completions.create(model="chat", prompt=["a", "b", "c"], max_tokens=2)
    assert batch.model == "chat" and fake_models.chat_pp.requests  # the chat model's batch replica
    assert len(fake_models.coder.requests) == 1  # the coder got its own request only


def test_models_are_listed_once_with_aliases_as_aliases(fake_models: TwoModels) -> None:
    cards = fake_models.sdk().models.list().data
    assert [(c.id, c.model_extra["root"]) for c in cards] == [
        ("chat", "chat"),
        ("gpt-oss-20b", "chat"),
        ("coder", "coder"),
    ]


def test_an_unknown_model_gets_vllms_404(fake_models: TwoModels) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        fake_models.sdk().chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["message"] == "The model `gpt-9` does not exist."
    assert caught.value.body["param"] == "model"


def test_a_key_limited_to_a_model_sees_and_reaches_only_that_model(fake_models: TwoModels) -> None:
    sdk = fake_models.sdk(CODER_KEY)
    assert [c.id for c in sdk.models.list().data] == ["coder"]
    assert sdk.chat.completions.create(model="coder", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    for name in ("chat", "gpt-oss-20b"):
        with pytest.raises(openai.NotFoundError):  # as if not served: the key does not learn it is
            sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert not fake_models.chat_tp.requests
    tokenized = httpx.post(
        fake_models.base_url.removesuffix("/v1") + "/tokenize",
        json={"model": "chat", "prompt": "hi"},
        headers={"Authorization": f"Bearer {CODER_KEY}"},
    )
    assert tokenized.status_code == 404


def test_one_models_replica_gone_leaves_the_other_serving(fake_models: TwoModels) -> None:
    fake_models.coder_server.close()
    sdk = fake_models.sdk()
    with pytest.raises((openai.APIStatusError, openai.APIConnectionError)) as caught:
        sdk.chat.completions.create(model="coder", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert isinstance(caught.value, openai.APIStatusError) and caught.value.status_code in (502, 503)
    for _ in range(3):  # the chat model never routes to the coder's replica, so it is untouched
        reply = sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert reply.model == "chat"


def test_each_model_has_its_own_class_limits(fake_models: TwoModels) -> None:
    fake_models.coder.token_delay_s = 0.2
    started = threading.Event()
    errors: list[BaseException] = []

    def long_coder_request() -> None:
        try:
            started.set()
            fake_models.sdk().chat.completions.create(
                model="coder", messages=[{"role": "user", "content": "hi"}], max_tokens=20
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=long_coder_request)
    worker.start()
    started.wait(30)
    metrics = httpx.get(fake_models.base_url.removesuffix("/v1") + "/metrics")
    deadline = 300
    while 'tandem_gateway_class_in_flight{model="coder",traffic_class="interactive"} 1.0' not in metrics.text:
        deadline -= 1
        assert deadline > 0, "the coder request never got its slot"
        threading.Event().wait(0.1)
        metrics = httpx.get(fake_models.base_url.removesuffix("/v1") + "/metrics")
    sdk = fake_models.sdk()
    with pytest.raises(openai.RateLimitError):  # the coder's one slot is taken and it queues none
        sdk.chat.completions.create(model="coder", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    chat = sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert chat.model == "chat"  # the chat model's own limits (the gateway's) are untouched
    worker.join(60)
    assert not errors


def test_metrics_and_status_carry_the_model(fake_models: TwoModels) -> None:
    sdk = fake_models.sdk()
    sdk.chat.completions.create(model="coder", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    text = httpx.get(fake_models.base_url.removesuffix("/v1") + "/metrics").text
    requests = [line for line in text.splitlines() if line.startswith("tandem_gateway_requests_total{")]
    assert any('model="coder"' in line and 'replica="coder"' in line for line in requests)
    assert 'tandem_gateway_replica_healthy{model="chat",replica="chat-pp"}' in text
    assert 'tandem_gateway_class_queued{model="chat",traffic_class="batch"}' in text
    status = httpx.get(
        fake_models.base_url.removesuffix("/v1") + "/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ).json()
    assert [(m["name"], m["replicas"]) for m in status["models"]] == [
        ("chat", ["chat-pp", "chat-tp"]),
        ("coder", ["coder"]),
    ]
    assert {r["name"]: r["model"] for r in status["replicas"]} == {
        "chat-tp": "chat",
        "chat-pp": "chat",
        "coder": "coder",
    }
    assert any(row["model"] == "coder" for row in status["usage"]) or status["usage"] == []  # flushed later


def _grouped(device_groups: dict[str, str | None]) -> GatewayConfig:
    """Chat (tp + pp) and coder (one interactive replica), on the device groups given per replica,
    batch yielding on (a batch class held to none while interactive work runs)."""
    replicas = {"chat-tp": "interactive", "chat-pp": "batch", "coder": "interactive"}

    def endpoint(name: str) -> dict[str, object]:
        traffic_class: TrafficClass = "interactive" if replicas[name] == "interactive" else "batch"
        return {"name": name, "traffic_class": traffic_class, "model": name, "device_group": device_groups[name]}

    return GatewayConfig.model_validate(
        {
            "models": [
                {"name": "chat", "replicas": [endpoint("chat-tp"), endpoint("chat-pp")]},
                {"name": "coder", "replicas": [endpoint("coder")]},
            ],
            "settings": {"routing": {"yielding": {"fraction": 0.0, "settle_s": 30}}},
        }
    )


@pytest.mark.parametrize(("coder_group", "held"), [("box", True), ("other-box", False)])
async def test_batch_yields_to_another_models_chat_only_on_shared_devices(coder_group: str, held: bool) -> None:
    config = _grouped({"chat-tp": "box", "chat-pp": "box", "coder": coder_group})
    groups = ModelGroups(config, LoadBoard(config.replicas, 3))
    chat, coder = groups.groups
    async with coder.gates["interactive"].slot():  # a coder request in flight
        await asyncio.sleep(0)
        assert chat.yielding.holding is held
    await asyncio.sleep(0)
    assert chat.yielding.holding is held  # a hold keeps until interactive work has settled
