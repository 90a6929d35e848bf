"""Gateway test fixtures: fake upstreams, a gateway in front of them, and the `endpoint` fixture
that the contract tests run against (the fake stack here; the real CPU stack where the session
fixture `cpu_stack` from tests/conftest.py is available, under @pytest.mark.stack)."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/fake_upstream.py

from fake_upstream import FakeUpstream  # noqa: E402

from gateway.config import GatewayConfig  # noqa: E402
from gateway.server import GatewayThread, start_in_thread  # noqa: E402

PUBLIC_MODEL = "tandem-test"
ADMIN_KEY = "sk-admin-0123456789"
USER_KEY = "sk-user-0123456789"


@dataclass
class FakeStack:
    """A gateway over two fake replicas: `tp` (interactive, fcfs) and `pp` (batch, priority)."""

    gateway: GatewayThread
    tp: FakeUpstream
    pp: FakeUpstream
    config: GatewayConfig

    @property
    def base_url(self) -> str:
        return self.gateway.base_url

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")


@dataclass
class Endpoint:
    """What the contract tests need to know about the server under test."""

    base_url: str
    model: str
    api_key: str = "unused"
    replica_urls: dict[str, str] = field(default_factory=dict)
    replica_models: dict[str, str] = field(default_factory=dict)
    fake: FakeStack | None = None


def gateway_config(tp: FakeUpstream, pp: FakeUpstream, **settings: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "model": PUBLIC_MODEL,
            "aliases": ["tandem-alias"],
            "replicas": [
                {"name": "tp", "traffic_class": "interactive", "model": tp.model, "base_url": tp.base_url},
                {
                    "name": "pp",
                    "traffic_class": "batch",
                    "model": pp.model,
                    "base_url": pp.base_url,
                    "scheduling_policy": "priority",
                },
            ],
            "settings": settings,
        }
    )


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


KEYS = {
    "keys": [
        {"name": "admin", "key": ADMIN_KEY, "admin": True},
        {"name": "user", "key": USER_KEY},
        {"name": "batcher", "key": "sk-batch-0123456789", "default_class": "batch"},
    ]
}


@pytest.fixture(scope="module")
def fake_stack() -> Iterator[FakeStack]:
    """One shared keyed stack for tests that do not change settings or upstream knobs."""
    with FakeUpstream(model="upstream-tp").running() as tp, FakeUpstream(
        model="upstream-pp", scheduling_policy="priority"
    ).running() as pp:
        config = gateway_config(tp, pp, auth=KEYS)
        gateway = start_in_thread(config)
        try:
            yield FakeStack(gateway, tp, pp, config)
        finally:
            gateway.stop()


@pytest.fixture(params=["fake", pytest.param("stack", marks=pytest.mark.stack)])
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    """The server the contract tests talk to."""
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
    try:
        cpu_stack = request.getfixturevalue("cpu_stack")
    except pytest.FixtureLookupError:
        pytest.skip("the real CPU stack fixture (tests/conftest.py: cpu_stack) is not available")
    models = {name: httpx.get(f"{url}/models").json()["data"][0]["id"] for name, url in cpu_stack.replica_urls.items()}
    return Endpoint(
        base_url=cpu_stack.base_url,
        model=cpu_stack.model,
        replica_urls=dict(cpu_stack.replica_urls),
        replica_models=models,
    )


def free_port_refusing() -> int:
    """A loopback port with nothing listening on it (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
