"""What `optimize()` is asked (OptimizeRequest, the CLI's flags one to one) and what it answers
(OptimizeResult), apart from the run itself so the report can read them without importing the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


# ---- several models (tuner.optimize.split) ------------------------------------------------------------

Role = Literal["pair", "single"]
"""A model's part of a split: an interactive and a batch replica, or one replica serving both classes."""


class SplitRequest(BaseModel):
    """`tuner optimize` with several `--model`s: the models, the budget, the traffic shares; `base`
    holds every other flag (its `model` is replaced by each model in turn)."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=2)
    memory_per_box_gb: float | None = Field(
        None, gt=0, description="Memory every engine of every model may take on each box; default: the template's."
    )
    traffic_shares: dict[str, float] = Field(
        default_factory=dict, description="Share of the traffic per model (as named in `models`); default: equal."
    )
    base: OptimizeRequest

    @model_validator(mode="after")
    def _names_and_shares(self) -> SplitRequest:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"each model once: got {self.models}")
        if self.base.evaluate != "model":
            raise ValueError(
                "several models are split with --evaluate model only (a live study per model would deploy each "
                "in turn; tune them one at a time with --evaluate live)"
            )
        unknown = set(self.traffic_shares) - set(self.models)
        if unknown:
            raise ValueError(f"traffic shares name {sorted(unknown)}, not among the models {self.models}")
        if self.traffic_shares and set(self.traffic_shares) != set(self.models):
            missing = sorted(set(self.models) - set(self.traffic_shares))
            raise ValueError(f"give a traffic share for every model or none: missing {missing}")
        if any(v <= 0 for v in self.traffic_shares.values()):
            raise ValueError("traffic shares must be positive")
        return self

    def share_of(self, model: str) -> float:
        """The model's traffic share, normalised over the models."""
        if not self.traffic_shares:
            return 1 / len(self.models)
        return self.traffic_shares[model] / sum(self.traffic_shares.values())


class ModelScore(BaseModel):
    """One model's part of an assignment, with the figures its score comes from."""

    model: str
    role: Role
    traffic_share: float
    replicas: dict[str, str] = Field(description="Replica name -> its settings.")
    trials: dict[str, int] = Field(description="Replica name -> the study trial its settings come from.")
    share_from: dict[str, float] = Field(
        default_factory=dict,
        description="Replica name -> its trial's share, where the plan gives it the fit check's minimum instead.",
    )
    gb_per_box: float
    batch_tok_s: float = Field(description="Predicted output tok/s of what serves the batch class.")
    batch_ratio: float = Field(description="batch_tok_s over the fastest point of the model's batch frontier.")
    chat_tpot_ms: float = Field(description="Predicted TPOT p50 of chat in this assignment.")
    chat_ratio: float = Field(description="Chat TPOT alone over chat_tpot_ms (1.0: as alone).")
    score: float = Field(description="traffic_share x (batch_ratio + chat_ratio) / 2.")


class Alternative(BaseModel):
    """One assignment of roles, priced, and its verdict."""

    roles: dict[str, Role]
    fits: bool
    gb_per_box: float = Field(description="What it takes on each box; where it does not fit, the least it needs.")
    score: float | None = None
    models: list[ModelScore] = Field(default_factory=list)
    verdict: str = ""

    def label(self) -> str:
        return ", ".join(f"{model} {role}" for model, role in self.roles.items())


class SplitResult(BaseModel):
    models: list[str]
    cluster: str
    workload: str
    storage: str
    memory_per_box_gb: float
    plan_path: Path
    report_path: Path | None = None
    chosen: Alternative
    alternatives: list[Alternative] = Field(description="Every assignment, the chosen one included, best first.")
    classes: dict[str, dict[str, ClassSummary]] = Field(description="Per model, its class studies.")
    notes: list[str] = Field(default_factory=list)
