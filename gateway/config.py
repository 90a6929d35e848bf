"""Gateway settings: the routing part of a ServingPlan and the gateway's own limits.

These models are the one place where routing thresholds are defined; deploy/plan.py embeds
`GatewaySettings` in the ServingPlan, the gateway reads it, and the tuner writes it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TrafficClass = Literal["interactive", "batch"]
TRAFFIC_CLASSES: tuple[TrafficClass, ...] = ("interactive", "batch")


class ClassLimits(BaseModel):
    """Admission control for one traffic class: requests running at once, and a bounded queue."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int = Field(64, ge=1, description="Requests of this class in flight at once.")
    max_queue: int = Field(256, ge=0, description="Requests waiting for a slot; past this: 429.")
    priority: int = Field(
        0,
        description="vLLM request priority for this class (lower runs first); sent only to "
        "replicas whose engine uses scheduling_policy=priority.",
    )


class RoutingSettings(BaseModel):
    """How requests are classified and where each class may run."""

    model_config = ConfigDict(extra="forbid")

    policy: str = Field("class-aware", description="Routing policy name (see gateway.policy).")
    interactive_max_tokens: int = Field(
        1024, ge=1, description="A streamed single-choice chat asking for at most this many tokens is interactive."
    )
    batch_min_prompts: int = Field(2, ge=2, description="A completion with this many prompts or more is batch.")
    spill_queue_threshold: int = Field(
        4, ge=1, description="Interactive spills to the batch replica once its own replica has this many waiting."
    )
    spill_release_threshold: int = Field(
        1, ge=0, description="Spilling stops once the interactive replica's queue is back at or below this."
    )
    spill_target_headroom: int = Field(
        8, ge=0, description="The batch replica must have at least this many free sequence slots to take spill."
    )
    batch_borrows_idle_interactive: bool = Field(
        True, description="Batch may run on the interactive replica while that replica is idle."
    )
    limits: dict[TrafficClass, ClassLimits] = Field(
        default_factory=lambda: {
            "interactive": ClassLimits(max_concurrency=32, max_queue=128, priority=0),
            "batch": ClassLimits(max_concurrency=128, max_queue=1024, priority=10),
        }
    )

    @model_validator(mode="after")
    def _hysteresis_is_ordered(self) -> RoutingSettings:
        if self.spill_release_threshold >= self.spill_queue_threshold:
            raise ValueError(
                f"spill_release_threshold ({self.spill_release_threshold}) must be below "
                f"spill_queue_threshold ({self.spill_queue_threshold}), or spilling would never stop"
            )
        return self


class GatewaySettings(BaseModel):
    """Where the gateway listens and how it routes."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
