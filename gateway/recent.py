"""Time to first token and time per output token of the last minutes, per traffic class, for the
status page (gateway.status). Prometheus histograms (gateway.metrics) hold the same latencies
since the start, in buckets; a status page wants "now" without a Prometheus to compute rates,
so the streamed requests of a sliding window are kept here (bounded: at most `max_samples`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from gateway.contract.percentiles import percentile

WINDOW_S = 300.0


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    traffic_class: str
    ttft_s: float
    tpot_s: float | None


class RecentLatency:
    def __init__(self, window_s: float = WINDOW_S, max_samples: int = 20_000) -> None:
        self.window_s = window_s
        self._samples: deque[_Sample] = deque(maxlen=max_samples)

    def record(self, traffic_class: str, ttft_s: float, duration_s: float, completion_tokens: int) -> None:
        """One streamed request: its TTFT, and its TPOT (the time after the first token over the
        tokens after it) when it produced two tokens or more."""
        tpot = (duration_s - ttft_s) / (completion_tokens - 1) if completion_tokens > 1 else None
        self._samples.append(_Sample(time.monotonic(), traffic_class, ttft_s, tpot))

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """Per class: streamed requests in the window, TTFT and TPOT medians and 95th percentiles (ms)."""
        since = time.monotonic() - self.window_s
        while self._samples and self._samples[0].at < since:
            self._samples.popleft()
        by_class: dict[str, list[_Sample]] = {}
        for sample in self._samples:
            by_class.setdefault(sample.traffic_class, []).append(sample)
        return {
            name: {
                "streams": len(samples),
                **_in_ms("ttft", [s.ttft_s for s in samples]),
                **_in_ms("tpot", [s.tpot_s for s in samples if s.tpot_s is not None]),
            }
            for name, samples in by_class.items()
        }


def _in_ms(name: str, values: list[float]) -> dict[str, float | None]:
    """p50 and p95 of `values` (seconds) in ms, by the one percentile definition."""
    return {f"{name}_p{q}_ms": None if not values else round(percentile(values, q) * 1000, 1) for q in (50, 95)}
