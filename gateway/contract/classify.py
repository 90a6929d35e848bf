"""Which traffic class a request belongs to: interactive (someone is waiting on each token) or
batch (throughput matters, latency does not).

Pure, like the rest of gateway.contract, so the perf model's traffic simulation classifies the same way.
Order of evidence: the client's explicit X-Tandem-Class header, then its API key's default
class, then the request's shape against the thresholds in RoutingSettings.
"""

from __future__ import annotations

from gateway.contract.config import RoutingSettings, TrafficClass
from gateway.contract.policy import RequestFeatures

CLASS_HEADER = "x-tandem-class"
"""The request header naming a request's class (the gateway reads it; tuner bench sends it), and the
response header where the gateway says which class it applied."""


def classify(
    request: RequestFeatures,
    settings: RoutingSettings,
    requested: TrafficClass | None = None,
    key_default: TrafficClass | None = None,
) -> TrafficClass:
    """The request's class: `requested` (header) wins, then `key_default`, then its shape."""
    if requested is not None:
        return requested
    if key_default is not None:
        return key_default
    return classify_shape(request, settings)


def classify_shape(request: RequestFeatures, settings: RoutingSettings) -> TrafficClass:
    """Several prompts or choices are batch work. Otherwise the length decides: up to
    `interactive_max_tokens` is interactive; no max_tokens at all means "until the model stops",
    which a streaming client watches (interactive) and a non-streaming one waits out (batch)."""
    if request.prompts >= settings.classify.batch_min_prompts or request.n > 1:
        return "batch"
    if request.max_tokens is None:
        return "interactive" if request.stream else "batch"
    return "interactive" if request.max_tokens <= settings.classify.interactive_max_tokens else "batch"
