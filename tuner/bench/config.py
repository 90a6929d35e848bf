"""What a benchmark run is: endpoint, traffic streams, bounds and SLOs, as pydantic models.

The whole configuration is written into every result file, so two runs can be compared later
knowing exactly what each one did. A run is one or more *traffic streams* sent at the same
time: a plain run has one stream, a mixed-traffic run has an interactive and a batch stream.
Each stream has its own request shape (workload) and its own load pattern, and tags its
requests with its traffic class.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.contract.config import TrafficClass
from tuner.workloads import get_workload


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Model):
    """An OpenAI-compatible server and the model to ask for."""

    url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:8000/v1")
    model: str
    api: Literal["completions", "chat"] = "completions"
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers on every request")
    timeout_s: float = Field(default=600.0, gt=0, description="Whole-request timeout")

    @property
    def request_url(self) -> str:
        suffix = "completions" if self.api == "completions" else "chat/completions"
        return f"{self.url.rstrip('/')}/{suffix}"


class WorkloadSpec(_Model):
    """Request shape: prompt length (ISL) and generated length (OSL) in tokens.

    With ``range_ratio`` r > 0 each request's lengths are drawn uniformly from
    [floor(L*(1-r)), ceil(L*(1+r))], as vLLM's random dataset does.
    """

    input_len: int = Field(ge=1)
    output_len: int = Field(ge=1)
    range_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    ignore_eos: bool = Field(default=True, description="Ask the server to generate exactly output_len")
    preset: str | None = Field(default=None, description="Preset name these lengths came from")

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> WorkloadSpec:
        shape = get_workload(name)
        values: dict[str, object] = {"input_len": shape.input_len, "output_len": shape.output_len}
        return cls(preset=name, **(values | overrides))


class ClosedLoop(_Model):
    """``concurrency`` users, each sending its next request when the last one ends (plus think time)."""

    kind: Literal["closed"] = "closed"
    concurrency: int = Field(ge=1)
    think_time_s: float = Field(default=0.0, ge=0.0)

    @property
    def max_in_flight(self) -> int:
        return self.concurrency

    @property
    def label(self) -> str:
        think = f" think={self.think_time_s:g}s" if self.think_time_s else ""
        return f"c={self.concurrency}{think}"


class OpenLoop(_Model):
    """Requests arriving at ``request_rate`` per second whatever the server does.

    Gaps are gamma-distributed with shape ``burstiness`` (1 = Poisson; lower is burstier,
    higher is more regular), as in ``vllm bench serve``. ``max_concurrency`` caps requests in
    flight; arrivals beyond it wait in the client.
    """

    kind: Literal["open"] = "open"
    request_rate: float = Field(gt=0)
    burstiness: float = Field(default=1.0, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)

    @property
    def max_in_flight(self) -> int | None:
        return self.max_concurrency

    @property
    def label(self) -> str:
        burst = f" burst={self.burstiness:g}" if self.burstiness != 1.0 else ""
        cap = f" max={self.max_concurrency}" if self.max_concurrency else ""
        return f"rate={self.request_rate:g}/s{burst}{cap}"


Load = Annotated[ClosedLoop | OpenLoop, Field(discriminator="kind")]


class TrafficStream(_Model):
    """One source of requests: its class tag, request shape and load pattern."""

    traffic_class: TrafficClass | None = Field(
        default=None, description="Sent as the X-Tandem-Class header; None sends no header"
    )
    workload: WorkloadSpec
    load: Load

    @property
    def name(self) -> str:
        return self.traffic_class or "all"


class Bounds(_Model):
    """When a run stops issuing requests: after ``num_requests`` or ``duration_s``, whichever first.

    Requests already in flight at the bound are awaited and counted. Warm-up requests are
    sent before the measured phase and excluded from every metric.
    """

    num_requests: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    warmup_requests: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> Bounds:
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("a run needs num_requests or duration_s (or both)")
        return self


class SLO(_Model):
    """Per-request latency targets in milliseconds; a request meeting all given ones is 'good'."""

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2el_ms: float | None = Field(default=None, gt=0)

    @classmethod
    def parse(cls, text: str) -> SLO:
        """Parse ``ttft:MS,tpot:MS,e2el:MS`` (any subset)."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition(":")
            if not sep or name not in ("ttft", "tpot", "e2el"):
                raise ValueError(f"bad SLO {part!r}: expected ttft:MS, tpot:MS or e2el:MS")
            values[f"{name}_ms"] = float(number)
        if not values:
            raise ValueError("empty SLO: expected e.g. ttft:500,tpot:50")
        return cls(**values)


class BenchConfig(_Model):
    """Everything that defines one measured run."""

    endpoint: Endpoint
    streams: list[TrafficStream] = Field(min_length=1)
    bounds: Bounds
    slo: SLO | None = None
    seed: int = 0
    tokenizer: str | None = Field(default=None, description="Local tokenizer directory for exact prompt lengths")

    @model_validator(mode="after")
    def _distinct_streams(self) -> BenchConfig:
        names = [stream.name for stream in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"traffic streams need distinct classes, got {names}")
        return self

    @property
    def load_label(self) -> str:
        return " + ".join(f"{s.name} {s.load.label}" if len(self.streams) > 1 else s.load.label for s in self.streams)
