"""What each traffic class wants, and the figures a trial is judged on.

- interactive: minimise TTFT p90 and TPOT p50 at low concurrency; two objectives, so the study
  returns a Pareto front and the plan takes its balanced point.
- batch: maximise output tok/s at the target concurrency, subject to latency SLOs (TPOT p99,
  TTFT p99 by default), given to Optuna as trial constraints (`Trial.set_constraint`, which
  Optuna 5 reads in place of the deprecated `constraints_func`).

A `Measurement` carries the same figures whichever evaluator produced them. The performance
model predicts the steady state of a closed loop, where every request sees the same cycle: its
TTFT and TPOT stand for every percentile, which the trial records by saying where they came from.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.contract.config import TrafficClass

Metric = Literal[
    "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms", "output_tok_s"
]
LATENCY_METRICS: tuple[Metric, ...] = (
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "tpot_p90_ms",
    "tpot_p99_ms",
)
Direction = Literal["minimize", "maximize"]

DEFAULT_BATCH_SLO: dict[Metric, float] = {"tpot_p99_ms": 200.0, "ttft_p99_ms": 10_000.0}
"""Batch work tolerates latency, not stalls: 5 tok/s per stream at worst, first token within 10 s."""
DEFAULT_INTERACTIVE_CONCURRENCY = 4
DEFAULT_BATCH_CONCURRENCY = 64


class Measurement(BaseModel):
    """One trial's figures (ms and tok/s), from the performance model or a live benchmark."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["model", "live"]
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p90_ms: float
    tpot_p99_ms: float
    output_tok_s: float
    completed: int | None = Field(None, description="Requests completed (live only).")

    def value(self, metric: Metric) -> float:
        return float(getattr(self, metric))


def parse_slo(text: str) -> dict[Metric, float]:
    """`tpot_p99:80,ttft_p99:2000` -> {'tpot_p99_ms': 80, 'ttft_p99_ms': 2000}."""
    slo: dict[Metric, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, number = part.partition(":")
        metric = f"{name.strip()}_ms"
        if not sep or metric not in LATENCY_METRICS:
            names = ", ".join(m.removesuffix("_ms") for m in LATENCY_METRICS)
            raise ValueError(f"bad SLO {part!r}: expected METRIC:MS with METRIC one of {names}")
        try:
            limit = float(number)
        except ValueError:
            raise ValueError(f"bad SLO {part!r}: {number!r} is not a number of milliseconds") from None
        if not limit > 0:
            raise ValueError(f"bad SLO {part!r}: the limit must be positive")
        slo[metric] = limit
    return slo


class ClassObjective(BaseModel):
    """What one class's study optimises, at which concurrency, under which SLOs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    traffic_class: TrafficClass
    concurrency: int = Field(ge=1)
    targets: tuple[tuple[Metric, Direction], ...]
    slo: dict[Metric, float] = Field(default_factory=dict)

    @classmethod
    def interactive(
        cls, concurrency: int = DEFAULT_INTERACTIVE_CONCURRENCY, slo: dict[Metric, float] | None = None
    ) -> ClassObjective:
        targets = (("ttft_p90_ms", "minimize"), ("tpot_p50_ms", "minimize"))
        return cls(traffic_class="interactive", concurrency=concurrency, targets=targets, slo=slo or {})

    @classmethod
    def batch(
        cls, concurrency: int = DEFAULT_BATCH_CONCURRENCY, slo: dict[Metric, float] | None = None
    ) -> ClassObjective:
        return cls(
            traffic_class="batch",
            concurrency=concurrency,
            targets=(("output_tok_s", "maximize"),),
            slo=DEFAULT_BATCH_SLO if slo is None else slo,
        )

    @property
    def directions(self) -> list[Direction]:
        return [direction for _, direction in self.targets]

    @property
    def is_multi_objective(self) -> bool:
        return len(self.targets) > 1

    def values(self, measurement: Measurement) -> list[float]:
        return [measurement.value(metric) for metric, _ in self.targets]

    def constraints(self, measurement: Measurement | None) -> dict[str, float]:
        """Optuna's convention (`Trial.set_constraint`): each value <= 0 when met. An unmeasured
        trial violates them all."""
        if measurement is None:
            return {metric: math.inf for metric in self.slo}
        return {metric: measurement.value(metric) - limit for metric, limit in self.slo.items()}

    def violations(self, measurement: Measurement) -> list[str]:
        """The SLOs a measurement misses, in words."""
        return [
            f"{metric.removesuffix('_ms')} {measurement.value(metric):.0f} ms > {limit:g} ms"
            for metric, limit in self.slo.items()
            if measurement.value(metric) > limit
        ]

    def slo_text(self) -> str:
        return ", ".join(f"{m.removesuffix('_ms')} <= {v:g} ms" for m, v in self.slo.items())

    def describe(self) -> str:
        goal = " and ".join(f"{d[:3]} {m.removesuffix('_ms')}" for m, d in self.targets)
        return f"{goal} at concurrency {self.concurrency}" + (f" subject to {self.slo_text()}" if self.slo else "")
