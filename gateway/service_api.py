"""The gateway's service routes, beside the generation and admin ones:

- GET /health: the process is alive; GET /ready: every replica answers;
- GET /v1/models: every served model once, its aliases as cards of their own whose `root` is the
  model (vLLM's way), only the models the client's key may use (a key, where keys are configured);
- POST /tokenize and /detokenize (gateway.tokenize), passed on to a replica;
- GET /metrics: the gateway's Prometheus page; GET /metrics/engines/{replica}: that replica's
  engine page, passed on as it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.auth import KeyRing
from gateway.backends.base import Backend, UpstreamUnavailable
from gateway.contract.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.model_groups import ModelGroups
from gateway.tokenize import TOKENIZER_PATHS, forward_to_tokenizer


def service_routes(
    config: GatewayConfig,
    backends: Mapping[str, Backend],
    models: ModelGroups,
    keyring: KeyRing,
    metrics: GatewayMetrics,
) -> APIRouter:
    routes = APIRouter()

    @routes.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @routes.get("/ready")
    async def ready() -> Response:
        names = list(backends)
        answers = await asyncio.gather(*(backends[n].ready() for n in names))
        down = [n for n, ok in zip(names, answers, strict=True) if not ok]
        if down:
            raise GatewayError(503, f"replica(s) not answering: {', '.join(down)}")
        return JSONResponse({"ready": True, "replicas": names})

    @routes.get("/v1/models")
    async def list_models(request: Request) -> Response:
        client = keyring.authenticate(request.headers.get("authorization"))
        created = int(time.time())
        cards = [
            {"id": name, "object": "model", "created": created, "owned_by": "tandem", "root": group.name}
            for group in models
            if client.may_use(group.config.served_names)
            for name in group.config.served_names
        ]
        return Response(orjson.dumps({"object": "list", "data": cards}), media_type="application/json")

    async def tokenizer(request: Request) -> Response:
        client = keyring.authenticate(request.headers.get("authorization"))
        status, body = await forward_to_tokenizer(request.url.path, await request.body(), client, models, backends)
        return Response(body, status_code=status, media_type="application/json")

    for path in TOKENIZER_PATHS:
        routes.add_api_route(path, tokenizer, methods=["POST"])

    @routes.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @routes.get("/metrics/engines/{replica}")
    async def engine_prometheus(replica: str) -> Response:
        """The replica's own engine metrics, passed on as they are: engines listen on free ports of
        the cluster's nodes, which a Prometheus elsewhere cannot know or may not reach; the gateway
        knows where each one is now (docs/operations.md, Dashboards)."""
        backend = backends.get(replica)
        if backend is None:
            raise GatewayError(404, f"no replica named {replica!r}; replicas: {', '.join(sorted(backends))}")
        try:
            text = await backend.engine_metrics()
        except (TimeoutError, UpstreamUnavailable) as exc:
            raise GatewayError(502, f"replica {replica} did not give its metrics: {type(exc).__name__}") from None
        return Response(text, media_type=CONTENT_TYPE)

    return routes
