"""Helpers for the gateway tests: a gateway over two fake replicas, and the `Endpoint` that the
contract tests run against. Fixtures built from these live in this folder's conftest.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fake_upstream import FakeUpstream

from deploy.ports import free_port
from gateway.backends.base import Backend, EngineLoad, UpstreamResponse
from gateway.backends.base import Endpoint as ApiEndpoint
from gateway.contract.config import GatewayConfig
from gateway.server import GatewayThread

PUBLIC_MODEL = "tandem-test"
ADMIN_KEY = "sk-admin-0123456789"
USER_KEY = "sk-user-0123456789"


class IdleBackend(Backend):
    """A replica that serves nothing (no requests, no load, always ready): the base of the tests
    that drive one part of a backend (engine control, load probes) and nothing else."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def send(self, endpoint: ApiEndpoint, body: dict[str, Any], request_id: str) -> UpstreamResponse:
        raise NotImplementedError

    async def call(self, method: str, path: str, request_id: str) -> UpstreamResponse:
        raise NotImplementedError

    async def post_utility(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        raise NotImplementedError

    async def engine_load(self) -> EngineLoad | None:
        return None

    async def ready(self) -> bool:
        return True


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


KEYS = {
    "keys": [
        {"name": "admin", "key": ADMIN_KEY, "admin": True},
        {"name": "user", "key": USER_KEY},
        {"name": "batcher", "key": "sk-batch-0123456789", "default_class": "batch"},
    ],
    "per_key_metrics": True,
}


def free_port_refusing() -> int:
    """A loopback port with nothing listening on it (connections are refused)."""
    return free_port()


def sent_as(upstream: FakeUpstream, client_id: str) -> str:
    """The request id `upstream` received for a request the client sent with X-Request-Id
    `client_id` (the gateway sends the client's id with a unique suffix); '' if none yet."""
    return next((i for i in upstream.request_ids if i.startswith(f"{client_id}.")), "")
