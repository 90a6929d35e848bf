"""API keys cross Ray Serve intact (issue 14, defect 1), on a real Ray cluster: the gateway's
deployment exactly as `gateway up` binds it (deploy.builder.gateway_app), in front of two small
stand-in engines (a Serve deployment with EngineServer's `url()` and `check_health()`) that point
at fake replicas, so that no vLLM starts. The plan's key must be served, the mask refused."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.builder import engine_deployment_name, gateway_app
from deploy.plan import ServingPlan, parse_plan, shipped_plan
from deploy.ports import free_port

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/fake_upstream.py
from fake_upstream import FakeUpstream
from local_serve import local_serve

pytestmark = pytest.mark.ray

SECRET = "sk-serve-7c1d9e2f4a6b8c0d"
READY_WITHIN_S = 180.0  # a loaded 2-core machine starts Serve's actors slowly


def stand_in_engine() -> type:  # built here, so that Ray pickles the class by value
    class StandInEngine:
        def __init__(self, base_url: str) -> None:
            self.base_url = base_url

        async def url(self) -> str:
            return self.base_url

        async def check_health(self) -> None:
            return None

    return StandInEngine


def keyed_plan() -> ServingPlan:
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    data["gateway"] = {"port": free_port(), "auth": {"keys": [{"name": "team", "key": SECRET}], "keys_env": None}}
    return parse_plan(data)


@pytest.fixture
def serve_app() -> Iterator[None]:
    with local_serve():
        yield


def wait_ready(root: str) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{root}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the deployed gateway was not ready within {READY_WITHIN_S:g} s")


def test_a_key_in_the_plan_works_on_the_deployed_gateway(serve_app: None) -> None:
    from ray import serve

    plan = keyed_plan()
    engine = serve.deployment(stand_in_engine()).options(ray_actor_options={"num_cpus": 0})
    with FakeUpstream(model="tandem-demo").running() as first, FakeUpstream(model="tandem-demo").running() as second:
        engines = {
            replica.name: engine.options(name=engine_deployment_name(replica)).bind(upstream.base_url)
            for replica, upstream in zip(plan.replicas, (first, second), strict=True)
        }
        serve.run(gateway_app(plan, engines), name="tandem-keys", route_prefix=None)
        root = f"http://127.0.0.1:{plan.gateway.port}"
        wait_ready(root)
        body = {"model": "tandem-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

        def post(key: str) -> int:
            reply = httpx.post(f"{root}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            return reply.status_code

        assert post(SECRET) == 200
        assert post("**********") == 401
        serve.delete("tandem-keys")
