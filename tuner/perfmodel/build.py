"""Engine builds: which kernels a vLLM build runs on a chip, as sourced data (data/builds.yaml).

The same vLLM version runs gpt-oss-120b's experts through Marlin's weight-only kernels on an
upstream sm_121 wheel, through CUTLASS on an sm_121a build, through Triton on Hopper; what a TP
shard costs, what running eager costs and how long a layer's small kernels take follow from the
build, not from the model or the link. So the build is an input: `EngineSettings.build`, or the
hardware profile's `default_build`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuner.perfmodel.sourced import DATA_DIR, Figure, NamedEntries

BUILDS_FILE = DATA_DIR / "builds.yaml"

MoEBackend = Literal["marlin", "triton", "cutlass"]


class EngineBuild(BaseModel):
    """One vLLM build on one kind of chip: its MoE kernel backend and the per-layer costs it brings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    source: str = Field(min_length=1)
    moe_backend: MoEBackend
    eager_layer_overhead_us: Figure = Field(
        description="Host launch time per layer and step without CUDA graphs (--enforce-eager), for this build's kernels."
    )
    layer_floor_us: Figure = Field(
        description="Shortest time a layer's latency-bound kernels take on one GPU, however few bytes its shard reads."
    )
    async_scheduling: bool = Field(
        True,
        description="Whether this build's single-node executors overlap host and GPU by default (vLLM made async "
        "scheduling the default after the gpt-oss launch images).",
    )


_BUILDS = NamedEntries(BUILDS_FILE, EngineBuild, "engine build")
known_builds = _BUILDS.names


def load_build(name: str) -> EngineBuild:
    """The named build from data/builds.yaml."""
    return _BUILDS.load(name)
