"""Gateway test fixtures: fake upstreams, a gateway in front of them, and the `endpoint` fixture
that the contract tests run against (the fake stack; and the real CPU stack, from the session
fixture `cpu_stack` in tests/conftest.py, under @pytest.mark.stack)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/fake_upstream.py, whatever the import mode

from fake_upstream import FakeUpstream
from gateway_support import KEYS, PUBLIC_MODEL, USER_KEY, Endpoint, FakeStack, gateway_config

from gateway.server import start_in_thread


@pytest.fixture
def make_stack() -> Iterator[Callable[..., FakeStack]]:
    """Build a fake stack with the given gateway settings (and fake-upstream knobs)."""
    with contextlib.ExitStack() as stack:

        def make(*, tp_url: str | None = None, **settings: Any) -> FakeStack:
            tp = stack.enter_context(FakeUpstream(model="upstream-tp").running())
            pp = stack.enter_context(FakeUpstream(model="upstream-pp", scheduling_policy="priority").running())
            config = gateway_config(tp, pp, **settings)
            if tp_url is not None:
                config.replicas[0].base_url = tp_url
            gateway = start_in_thread(config)
            stack.callback(gateway.stop)
            return FakeStack(gateway, tp, pp, config)

        yield make


@pytest.fixture(scope="module")
def fake_stack() -> Iterator[FakeStack]:
    """One shared keyed stack for tests that do not change settings or upstream knobs."""
    with (
        FakeUpstream(model="upstream-tp").running() as tp,
        FakeUpstream(model="upstream-pp", scheduling_policy="priority").running() as pp,
    ):
        config = gateway_config(tp, pp, auth=KEYS)
        gateway = start_in_thread(config)
        try:
            yield FakeStack(gateway, tp, pp, config)
        finally:
            gateway.stop()


@pytest.fixture(
    params=[
        "fake",
        pytest.param("stack", marks=pytest.mark.stack),
        pytest.param("stack-two-nodes", marks=pytest.mark.stack),
    ]
)
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    """The server the contract tests talk to: the fake upstreams, the real stack (`gateway up`), or
    the real stack deployed onto two Ray nodes as on the Spark pair (`gateway deploy --address`)."""
    if request.param == "fake":
        fake: FakeStack = request.getfixturevalue("fake_stack")
        return Endpoint(
            base_url=fake.base_url,
            model=PUBLIC_MODEL,
            api_key=USER_KEY,
            replica_urls={"tp": fake.tp.base_url, "pp": fake.pp.base_url},
            replica_models={"tp": fake.tp.model, "pp": fake.pp.model},
            fake=fake,
        )
    stack = request.getfixturevalue("cpu_stack" if request.param == "stack" else "two_node_stack")
    models = {name: httpx.get(f"{url}/models").json()["data"][0]["id"] for name, url in stack.replica_urls.items()}
    return Endpoint(
        base_url=stack.base_url,
        model=stack.model,
        replica_urls=dict(stack.replica_urls),
        replica_models=models,
    )
