"""`POST /tokenize` and `POST /detokenize` for the public model name, passed to a replica.

vLLM's server answers both at its root (not under /v1) with the engine's own tokenizer; the
gateway offers them at its root too, so a client that knows only the gateway (`tuner bench`
without `--tokenizer`, to make prompts of exact token lengths) counts tokens the way the engine
does. Every replica of a model serves the same weights, so any healthy one answers; these requests are tiny and
take no class slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.auth import Client
from gateway.backends.base import Backend, UpstreamUnavailable
from gateway.errors import GatewayError
from gateway.model_groups import ModelGroups

TOKENIZER_PATHS = ("/tokenize", "/detokenize")


async def forward_to_tokenizer(
    path: str, raw: bytes, client: Client, models: ModelGroups, backends: Mapping[str, Backend]
) -> tuple[int, bytes]:
    """Send a /tokenize or /detokenize body to a healthy replica of the model it names (the
    default model for none), under the replica's own model name."""
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object")
    requested = body.get("model")
    group = models.for_request(None if requested is None else str(requested), client)
    healthy = [load.name for load in group.router.snapshot() if load.healthy]
    if not healthy:
        raise GatewayError(503, "no replica is answering", headers={"Retry-After": "5"})
    last = ""
    for name in healthy:
        try:
            return await backends[name].post_utility(path, {**body, "model": group.replicas[name].model})
        except (UpstreamUnavailable, TimeoutError, ConnectionError) as exc:
            last = f"{type(exc).__name__}"
    raise GatewayError(502, f"no replica answered {path} ({last})")
