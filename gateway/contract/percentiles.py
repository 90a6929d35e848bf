"""The one percentile definition behind every latency figure Tandem reports.

vLLM's benchmark client (`vllm bench serve`, vllm/benchmarks/serve.py) reports its percentiles with
`numpy.percentile`'s default method: linear interpolation between the two closest ranks (type 7 of
Hyndman & Fan, "Sample Quantiles in Statistical Packages", 1996; also what
`statistics.quantiles(method="inclusive")` computes). `tuner bench`, the perf model's traffic
simulation and the benchmark scripts all call `percentile` below, so a simulated p99 and a measured
one differ by what happened, never by how the order statistic was picked, and both compare one to one
with vLLM's own numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of `values`, linearly interpolated between ranks
    (numpy.percentile's default). An empty sample has no percentile: ValueError."""
    if not values:
        raise ValueError("the percentile of an empty sample is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile_or_none(values: Sequence[float], q: float) -> float | None:
    """`percentile`, with None for an empty sample (a class that completed nothing has no p99)."""
    return percentile(values, q) if values else None
