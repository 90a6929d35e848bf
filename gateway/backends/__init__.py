"""How the gateway reaches a replica: over HTTP, to any OpenAI-compatible server (vLLM's own in a
deployed stack). `Backend` (see .base) is the interface the gateway's parts are written against."""

from gateway.backends.base import (
    Backend,
    EngineLoad,
    UpstreamBroken,
    UpstreamLost,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.backends.http import HttpBackend

__all__ = [
    "Backend",
    "EngineLoad",
    "HttpBackend",
    "UpstreamBroken",
    "UpstreamLost",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
