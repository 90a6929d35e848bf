"""vLLM's serving metrics for the fake engine (tests/fake_upstream.py, `serving_metrics=True`).

The names, types and labels (`model_name`, `engine`) are those of vLLM's own Prometheus logger
(vllm/v1/metrics/loggers.py); the dashboards read them (deploy/observability/), and
tests/deploy/test_observability.py checks every vLLM name a panel uses against the installed
vLLM's source. prometheus_client writes them, as it does in vLLM, so counters get `_total` and
histograms `_bucket`/`_sum`/`_count` exactly as a real engine's page has them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FakeVllmMetrics:
    """The serving metrics of one fake engine, fed by its request handlers."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        values = (model, "0")
        r = self.registry
        self.kv_cache_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full", labels, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed", labels, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generation tokens", labels, registry=r)
        self.preemptions = Counter("vllm:num_preemptions", "Preemptions", labels, registry=r)
        self.prefix_queries = Counter("vllm:prefix_cache_queries", "Prefix cache queries", labels, registry=r)
        self.prefix_hits = Counter("vllm:prefix_cache_hits", "Prefix cache hits", labels, registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", labels, buckets=_LATENCY, registry=r)
        self.inter_token = Histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency", labels, buckets=_LATENCY, registry=r
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "Request latency", labels, buckets=_LATENCY, registry=r
        )
        self.children = {
            metric: metric.labels(*values)
            for metric in (
                self.kv_cache_usage,
                self.prompt_tokens,
                self.generation_tokens,
                self.preemptions,
                self.prefix_queries,
                self.prefix_hits,
                self.ttft,
                self.inter_token,
                self.e2e,
            )
        }
        self.children[self.preemptions].inc(0)

    def finished(self, prompt_tokens: int, generation_tokens: int, elapsed_s: float, active: int, seats: int) -> None:
        """One request done: its tokens and latency, the cache as full as the engine is busy."""
        c = self.children
        c[self.prompt_tokens].inc(prompt_tokens)
        c[self.generation_tokens].inc(generation_tokens)
        c[self.prefix_queries].inc(prompt_tokens)
        c[self.prefix_hits].inc(prompt_tokens // 2)
        c[self.e2e].observe(elapsed_s)
        c[self.kv_cache_usage].set(min(active / seats, 1.0))

    def first_token(self, seconds: float) -> None:
        self.children[self.ttft].observe(seconds)

    def next_token(self, seconds: float) -> None:
        self.children[self.inter_token].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
