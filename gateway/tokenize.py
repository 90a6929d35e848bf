"""`POST /tokenize` and `POST /detokenize` for the public model name, passed to a replica.

vLLM's server answers both at its root (not under /v1) with the engine's own tokenizer; the
gateway offers them at its root too, so a client that knows only the gateway (`tuner bench`
without `--tokenizer`, to make prompts of exact token lengths) counts tokens the way the engine
does. Both replicas serve the same model, so any healthy one answers; these requests are tiny and
take no class slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.backends.base import Backend, UpstreamUnavailable
from gateway.contract.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.load import LoadBoard

TOKENIZER_PATHS = ("/tokenize", "/detokenize")


async def forward_to_tokenizer(
    path: str, raw: bytes, config: GatewayConfig, backends: Mapping[str, Backend], board: LoadBoard
) -> tuple[int, bytes]:
    """Send a /tokenize or /detokenize body to a healthy replica under its own model name."""
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object")
    public = body.get("model", config.model)
    if public not in (config.model, *config.aliases):
        raise GatewayError(404, f"The model `{public}` does not exist.", param="model")
    healthy = [load.name for load in board.snapshot() if load.healthy]
    if not healthy:
        raise GatewayError(503, "no replica is answering", headers={"Retry-After": "5"})
    last = ""
    for name in healthy:
        replica = next(r for r in config.replicas if r.name == name)
        try:
            return await backends[name].post_utility(path, {**body, "model": replica.model})
        except (UpstreamUnavailable, TimeoutError, ConnectionError) as exc:
            last = f"{type(exc).__name__}"
    raise GatewayError(502, f"no replica answered {path} ({last})")
