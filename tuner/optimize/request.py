"""What `optimize()` is asked (OptimizeRequest, the CLI's flags one to one) and what it answers
(OptimizeResult), apart from the run itself so the report can read them without importing the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuner.optimize.objectives import Measurement, Metric

DEFAULT_STORAGE = "sqlite:///tandem-studies.db"


class OptimizeRequest(BaseModel):
    """Everything `tuner optimize` takes (the CLI's flags, one to one)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    cluster: str = "dgx-spark-pair"
    hardware: str | None = Field(
        None,
        description="Performance-model profile (name or file, e.g. from tuner probe-link) instead of the cluster's.",
    )
    build: str | None = Field(
        None, description="vLLM build the model prices (tuner/perfmodel/data/builds.yaml); default: the hardware's."
    )
    evaluate: Literal["model", "live"] = "model"
    trials: int = Field(40, ge=1, description="Trials per class (the study's total, counting resumed ones).")
    workload: str = "equal"
    batch_slo: dict[Metric, float] | None = None
    interactive_slo: dict[Metric, float] = Field(default_factory=dict)
    interactive_concurrency: int = Field(4, ge=1)
    batch_concurrency: int = Field(64, ge=1)
    storage: str = DEFAULT_STORAGE
    out: Path = Path("plans")
    seed: int = 0
    routing_trials: int = Field(20, ge=0)
    arbitration_trials: int = Field(
        24, ge=0, description="Simulated trials for GPU arbitration of co-resident replicas (0: keep the template's)."
    )
    arbitration_chat_load: str = Field("team", description="Named chat load of the arbitration study.")
    arbitration_batch_load: str = Field("saturating", description="Named batch load of the arbitration study.")
    arbitration_live_url: str | None = Field(
        None,
        description="Score the arbitration study on the stack behind this gateway URL (its routing switched per "
        "trial, restored after) instead of the simulation.",
    )
    arbitration_live_duration_s: float = Field(
        600.0, gt=0, description="Live arbitration: seconds each measured phase (references, trials) runs."
    )
    warm_start: int = Field(2, ge=0, description="Model-ranked points queued first in a live study.")
    live_requests: int = Field(64, ge=1, description="Measured requests per live trial (at most).")
    live_duration_s: float = Field(60.0, gt=0, description="Longest measured phase of a live trial.")
    trial_timeout_s: float = Field(
        600.0, gt=0, description="A live trial not served and measured by then is infeasible."
    )
    ray_address: str | None = None


class ChosenPoint(BaseModel):
    trial: int
    settings: str
    params: dict[str, object]
    measured: Measurement
    predicted: Measurement | None = None


class ClassSummary(BaseModel):
    study: str
    objective: str
    trials: int
    ran_now: int
    infeasible: int
    chosen: ChosenPoint
    baseline: ChosenPoint | None
    baseline_ratio: dict[str, float] = Field(description="Chosen / baseline for each objective figure.")
    pareto_front: list[dict[str, float]] = Field(default_factory=list)
    model_error: dict[str, float] = Field(
        default_factory=dict, description="Median measured / predicted per figure over live trials."
    )


class OptimizeResult(BaseModel):
    model: str
    cluster: str
    evaluate: str
    workload: str
    storage: str
    plan_path: Path
    report_path: Path | None = None
    classes: dict[str, ClassSummary]
    routing: dict[str, object]
    notes: list[str] = Field(default_factory=list)
