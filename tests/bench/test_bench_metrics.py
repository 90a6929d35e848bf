"""Metrics from known timings, with vLLM's definitions (benchmarks/serve.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.bench.client import RequestRecord
from tuner.bench.config import SLO
from tuner.bench.metrics import compute_metrics


def ok(
    ttft: float, itl: list[float], output_tokens: int, prompt_tokens: int = 10, stream: str = "all"
) -> RequestRecord:
    latency = ttft + sum(itl)
    return RequestRecord(
        stream=stream,
        start=0.0,
        end=latency,
        ttft=ttft,
        itl=itl,
        latency=latency,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
    )


def failed(error_type: str) -> RequestRecord:
    return RequestRecord(stream="all").fail(error_type, f"{error_type} happened")


def test_latencies_follow_vllm_definitions() -> None:
    # Request A: 0.1 s to first token, then 3 gaps of 0.02 s, 4 tokens -> TPOT = 0.06 / 3.
    # Request B: 0.3 s to first token, then 1 gap of 0.1 s, 2 tokens -> TPOT = 0.1 / 1.
    # Request C: a single token: no TPOT sample, no ITL gap.
    records = [ok(0.1, [0.02, 0.02, 0.02], 4), ok(0.3, [0.1], 2), ok(0.2, [], 1)]
    m = compute_metrics(records, duration_s=2.0)

    assert m.ttft_ms.mean == pytest.approx(200.0)
    assert m.ttft_ms.median == pytest.approx(200.0)
    assert m.tpot_ms.mean == pytest.approx((20.0 + 100.0) / 2)
    # ITL pools every gap of every request: [20, 20, 20, 100].
    assert m.itl_ms.mean == pytest.approx(40.0)
    assert m.itl_ms.p90 == pytest.approx(float(np.percentile([20, 20, 20, 100], 90)))
    assert m.e2el_ms.median == pytest.approx(200.0)  # latencies 160, 400, 200 ms
    assert m.e2el_ms.p99 == pytest.approx(float(np.percentile([160, 400, 200], 99)))


def test_throughputs_count_server_tokens_over_duration() -> None:
    records = [ok(0.1, [0.01] * 9, 10, prompt_tokens=100), ok(0.1, [0.01] * 4, 5, prompt_tokens=50)]
    m = compute_metrics(records, duration_s=0.5)
    assert m.request_throughput == pytest.approx(4.0)
    assert m.output_throughput == pytest.approx(30.0)
    assert m.total_token_throughput == pytest.approx(330.0)
    assert (m.mean_input_tokens, m.mean_output_tokens) == (75.0, 7.5)


def test_failures_are_counted_by_type_and_stay_in_the_denominator() -> None:
    records = [ok(0.05, [0.01], 2), failed("http_500"), failed("http_500"), failed("stream_cut")]
    m = compute_metrics(records, duration_s=1.0, slo=SLO(ttft_ms=100))
    assert (m.requests, m.completed, m.failed) == (4, 1, 3)
    assert m.errors == {"http_500": 2, "stream_cut": 1}
    assert m.error_samples["stream_cut"] == "stream_cut happened"
    assert m.request_throughput == pytest.approx(1.0)
    assert m.request_goodput == pytest.approx(1.0)
    assert m.slo_attainment == pytest.approx(0.25)


def test_goodput_needs_every_slo_and_treats_single_token_tpot_as_zero() -> None:
    fast = ok(0.05, [0.01] * 3, 4)  # TTFT 50 ms, TPOT 10 ms
    slow_decode = ok(0.05, [0.05] * 3, 4)  # TTFT 50 ms, TPOT 50 ms
    one_token = ok(0.05, [], 1)  # TPOT counts as 0
    slow_start = ok(0.5, [0.01] * 3, 4)  # TTFT 500 ms
    m = compute_metrics([fast, slow_decode, one_token, slow_start], duration_s=2.0, slo=SLO(ttft_ms=100, tpot_ms=20))
    assert m.request_goodput == pytest.approx(2 / 2.0)
    assert m.slo_attainment == pytest.approx(0.5)
    e2el = compute_metrics([fast, slow_decode], duration_s=1.0, slo=SLO(e2el_ms=100))
    assert e2el.request_goodput == pytest.approx(1.0)


def test_no_success_gives_empty_latencies_and_no_slo_means_no_goodput() -> None:
    m = compute_metrics([failed("connection")], duration_s=1.0)
    assert m.ttft_ms is None and m.tpot_ms is None and m.itl_ms is None and m.e2el_ms is None
    assert m.request_goodput is None and m.slo_attainment is None
    assert m.request_throughput == 0.0
