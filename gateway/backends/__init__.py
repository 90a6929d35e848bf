"""How the gateway reaches a replica: over HTTP (any OpenAI-compatible server) or through a Ray
Serve deployment handle (an LLMServer). Both implement `Backend` (see .base)."""

from gateway.backends.base import (
    Backend,
    EngineLoad,
    UpstreamBroken,
    UpstreamLost,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.backends.handle import HandleBackend
from gateway.backends.http import HttpBackend

__all__ = [
    "Backend",
    "EngineLoad",
    "HandleBackend",
    "HttpBackend",
    "UpstreamBroken",
    "UpstreamLost",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
