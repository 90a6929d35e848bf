"""Turn request records into metrics, with the definitions of vLLM's `benchmarks/serve.py`.

- TTFT, E2EL: per successful request; E2EL ends at the last token chunk.
- TPOT: (E2EL - TTFT) / (output_tokens - 1), for requests with more than one output token.
- ITL: every gap between token chunks of every successful request, pooled.
- Throughputs: successful requests' counts over the measured duration (first send to last end).
- Goodput: successful requests meeting every SLO, per second; TPOT counts as 0 for requests
  with a single output token (as vLLM does).
- Percentiles: gateway.contract.percentiles (numpy's linear interpolation, as vLLM).

Beyond vLLM, ``tokens_per_event``: output tokens per streamed token event. 1.0 means the server
sent each token as it came; above 1 it merged tokens into one event (vLLM does when its API server
falls behind its engine), which shortens ITL and, in the limit of a whole answer in one event,
makes TTFT the whole latency and TPOT 0, under vLLM's definitions as under these.

Beyond vLLM: failed requests are counted by error type, and ``slo_attainment`` is good
requests over *all* requests sent, failures included, so errors cannot flatter it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from gateway.contract.percentiles import percentile
from tuner.bench.client import RequestRecord
from tuner.bench.config import SLO


class LatencyStats(BaseModel):
    """Milliseconds."""

    mean: float
    std: float
    median: float
    p90: float
    p99: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencyStats | None:
        if not seconds:
            return None
        ms = np.asarray(seconds) * 1000.0
        values = ms.tolist()
        p50, p90, p99 = (percentile(values, q) for q in (50, 90, 99))
        return cls(mean=float(ms.mean()), std=float(ms.std()), median=p50, p90=p90, p99=p99)


class Metrics(BaseModel):
    """One traffic class's (or the whole run's) figures over the measured phase."""

    requests: int
    completed: int
    failed: int
    errors: dict[str, int]
    error_samples: dict[str, str]
    total_input_tokens: int
    total_output_tokens: int
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    request_goodput: float | None
    slo_attainment: float | None
    ttft_ms: LatencyStats | None
    tpot_ms: LatencyStats | None
    itl_ms: LatencyStats | None
    e2el_ms: LatencyStats | None
    tokens_per_event: float | None = None


def _tpot(record: RequestRecord) -> float:
    if record.output_tokens <= 1:
        return 0.0
    return (record.latency - record.ttft) / (record.output_tokens - 1)


def _meets(record: RequestRecord, slo: SLO) -> bool:
    checks = ((slo.ttft_ms, record.ttft), (slo.tpot_ms, _tpot(record)), (slo.e2el_ms, record.latency))
    return all(limit is None or value * 1000.0 <= limit for limit, value in checks)


def compute_metrics(records: Sequence[RequestRecord], duration_s: float, slo: SLO | None = None) -> Metrics:
    done = [r for r in records if r.success]
    failed = [r for r in records if not r.success]
    errors = Counter(r.error_type for r in failed)
    samples: dict[str, str] = {}
    for record in failed:
        samples.setdefault(str(record.error_type), record.error)
    input_tokens = sum(r.prompt_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    events = sum(len(r.itl) + 1 for r in done)  # every gap follows one token event; the first has none
    good = sum(_meets(r, slo) for r in done) if slo is not None else None
    return Metrics(
        requests=len(records),
        completed=len(done),
        failed=len(failed),
        errors=dict(sorted((str(k), v) for k, v in errors.items())),
        error_samples=samples,
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        mean_input_tokens=input_tokens / len(done) if done else None,
        mean_output_tokens=output_tokens / len(done) if done else None,
        request_throughput=len(done) * per_s,
        output_throughput=output_tokens * per_s,
        total_token_throughput=(input_tokens + output_tokens) * per_s,
        request_goodput=None if good is None else good * per_s,
        slo_attainment=None if good is None or not records else good / len(records),
        ttft_ms=LatencyStats.of([r.ttft for r in done]),
        tpot_ms=LatencyStats.of([_tpot(r) for r in done if r.output_tokens > 1]),
        itl_ms=LatencyStats.of([gap for r in done for gap in r.itl]),
        e2el_ms=LatencyStats.of([r.latency for r in done]),
        tokens_per_event=output_tokens / events if events else None,
    )
