"""`tuner bench`: a load generator and metrics for any OpenAI-compatible endpoint.

It knows nothing about the rest of Tandem. The tuner and the routing evaluation call
`run_benchmark(config)` or `run_mix(...)` and get typed `BenchResult`s; the CLI is a thin
layer over the same calls. Metric definitions are vLLM's (`vllm bench serve`).
"""

from __future__ import annotations

from tuner.bench.config import (
    SLO,
    BenchConfig,
    Bounds,
    ClosedLoop,
    Endpoint,
    OpenLoop,
    TrafficStream,
    WorkloadSpec,
)
from tuner.bench.metrics import LatencyStats, Metrics
from tuner.bench.mix import MixSpec
from tuner.bench.results import SCHEMA_VERSION, BenchResult, ResultSet
from tuner.bench.runner import benchmark, run_benchmark, run_mix

__all__ = [
    "SCHEMA_VERSION",
    "SLO",
    "BenchConfig",
    "BenchResult",
    "Bounds",
    "ClosedLoop",
    "Endpoint",
    "LatencyStats",
    "Metrics",
    "MixSpec",
    "OpenLoop",
    "ResultSet",
    "TrafficStream",
    "WorkloadSpec",
    "benchmark",
    "run_benchmark",
    "run_mix",
]
