"""The Batch API in /metrics: batches by status (read from the store at scrape time), lines
finished by outcome and key (the key's name only with auth.per_key_metrics on, as for live
requests), and lines per second over the last minute."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.batches.objects import BatchStatus
from gateway.metrics import UNLABELLED_KEY, GatewayMetrics

RATE_WINDOW_S = 60.0
_STATUSES: tuple[BatchStatus, ...] = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)


class BatchObserver(Collector):
    """Registered on the gateway's registry; `line_done` is called once per recorded line."""

    def __init__(self, metrics: GatewayMetrics, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts
        self._per_key = metrics.per_key
        self._finished: deque[float] = deque()
        self.lines = Counter(
            "tandem_gateway_batch_lines",
            "Batch lines finished, by outcome (completed: 2xx answer; failed: any other) and API key name",
            ["outcome", "key"],
            registry=metrics.registry,
        )
        metrics.registry.register(self)

    def line_done(self, key: str, ok: bool) -> None:
        self.lines.labels("completed" if ok else "failed", key if self._per_key else UNLABELLED_KEY).inc()
        now = time.monotonic()
        self._finished.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._finished and self._finished[0] < now - RATE_WINDOW_S:
            self._finished.popleft()

    def lines_per_second(self) -> float:
        self._trim(time.monotonic())
        return len(self._finished) / RATE_WINDOW_S

    def collect(self) -> Iterable[Metric]:
        batches = GaugeMetricFamily("tandem_gateway_batches", "Batches by status", labels=["status"])
        counts = self._counts()
        for status in _STATUSES:
            batches.add_metric([status], counts.get(status, 0))
        yield batches
        yield GaugeMetricFamily(
            "tandem_gateway_batch_lines_per_second",
            f"Batch lines finished per second over the last {RATE_WINDOW_S:g} s",
            value=self.lines_per_second(),
        )
