"""Engine constants (per serving engine, sourced) and the engine settings a replica runs with.

`EngineProfile` holds what differs between vLLM, SGLang and llama.cpp on the same chip: how
close their kernels get to the memory bandwidth and the compute peak, and their fixed cost per
step. The values live in data/engines.yaml, each a `Figure` with its source; where one was fitted
to the single-box calibration set, its kind is `calibrated` and the points it was fitted to are
named. `ModelConstants` holds the few constants of the model itself. Every field can be
overridden by passing a modified copy (`profile.model_copy(update=...)`).

`EngineSettings` are the vLLM arguments the model reads (the ones the tuner turns).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tuner.perfmodel.hardware import HardwareProfile
from tuner.perfmodel.sourced import DATA_DIR, Figure, NamedEntries

ENGINES_FILE = DATA_DIR / "engines.yaml"


class EngineProfile(BaseModel):
    """How one serving engine's kernels perform, as fractions of the hardware's figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    bandwidth_efficiency: Figure = Field(
        description="Share of the device's achievable read bandwidth a weight-streaming step reaches."
    )
    prefill_compute_efficiency: Figure = Field(
        description="Share of the dense tensor peak reached by GEMMs over many tokens (prefill)."
    )
    decode_compute_efficiency: Figure = Field(
        description="Share of the dense tensor peak reached by GEMMs over decode tokens (one row per sequence)."
    )
    step_overhead_us: Figure = Field(description="Fixed cost of one engine step: scheduling, input prep, sampling.")
    multi_token_layer_overhead_us: Figure = Field(
        description=(
            "Host-side kernel-launch time per layer that a step of more than one token adds, for an engine "
            "that replays CUDA graphs only for single-token steps (0 when its batched steps are graphed too)."
        )
    )
    runtime_reserve_gb: Figure = Field(
        description="Device memory the engine takes besides weights and KV cache (activations, graphs, allocator)."
    )
    sequence_step_overhead_us: Figure = Field(
        description=(
            "Host time per sequence sampled in a step (input preparation, sampling, detokenizing and streaming its "
            "token): on a GPU it overlaps the device's work, on a CPU it competes with it for the cores."
        )
    )
    eager_layer_overhead_us: Figure = Field(
        description=(
            "Host-side time per layer and step that running without CUDA graphs (vLLM's --enforce-eager) adds: "
            "every kernel launched from Python instead of one graph replay."
        )
    )


class ModelConstants(BaseModel):
    """Constants of the performance model itself (not of an engine or a chip)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unmeasured_bandwidth_fraction: Figure = Figure(
        value=0.85,
        kind="derived",
        source="GB10: 232 GB/s measured saturating read / 273 GB/s nominal (see dgx-spark profile)",
        note="Applied to a device's nominal bandwidth when no measured read bandwidth is on file (H100, H200).",
    )
    activation_bytes: Figure = Figure(
        value=2, kind="nominal", source="vLLM exchanges BF16 hidden states between TP ranks and PP stages"
    )
    expert_popularity_skew: Figure = Figure(
        value=1.4,
        kind="calibrated",
        source="calibration.yaml: llama-batched-bench decode at 1-32 sequences of gpt-oss-20b, gpt-oss-120b, Qwen3-Coder-30B-A3B (one value for the three)",
        note=(
            "Zipf exponent of how often each expert of a MoE layer is chosen (0 = uniform). Needed by physics, "
            "not only by the fit: gpt-oss-120b at 32 sequences steps in 102 ms, in which 232 GB/s reads at most "
            "45 of the 82 experts per layer that uniform routing would touch. Fitted to random-token benchmark "
            "inputs; real traffic may route more evenly (override with 0 for uniform routing)."
        ),
    )

    ep_imbalance: Figure = Figure(
        value=1.17,
        kind="derived",
        source="ROCm/ATOM PR #1210: rearranging DeepSeek-V4-Pro's experts over 8 EP ranks (EPLB without replicas) raised "
        "throughput 16.7% on random 8192-token prompts: the busiest rank carried about 1.17x the mean",
        note=(
            "Work of the busiest expert-parallel rank over the mean: vLLM places experts in contiguous blocks "
            "and balances nothing unless EPLB is on. One source, eight ranks, another model: two ranks of 64 experts "
            "likely balance better. The expert-popularity skew above sets the bytes; this sets EP's imbalance."
        ),
    )

    def achievable_bandwidth_gbs(self, hardware: HardwareProfile) -> float:
        """Read bandwidth a device can sustain: measured if on file, else a share of nominal."""
        device = hardware.device
        if device.measured_memory_bandwidth_gbs is not None:
            return device.measured_memory_bandwidth_gbs.value
        return device.memory_bandwidth_gbs.value * self.unmeasured_bandwidth_fraction.value


class EngineSettings(BaseModel):
    """The vLLM engine arguments the model reads. None means vLLM's own default for the device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enforce_eager: bool = Field(
        False, description="No CUDA graphs (vLLM --enforce-eager): every step pays eager_layer_overhead_us per layer."
    )
    other_replica_busy: float = Field(
        0.0, ge=0, le=1, description="How busy a co-resident replica on the same GPUs is (0 = alone, 1 = always)."
    )
    build: str | None = Field(
        None,
        description="The vLLM build the replica runs (data/builds.yaml: MoE backend, floor, eager cost); "
        "None takes the hardware profile's default_build.",
    )

    def resolved(self, hardware: HardwareProfile) -> tuple[int, int]:
        """(max_num_seqs, max_num_batched_tokens) with vLLM's OpenAI-server defaults filled in,
        chosen by device memory as vllm/engine/arg_utils.py get_batch_defaults does (vLLM 0.32)."""
        memory_gib = hardware.device.memory_gb.value * 1e9 / 2**30
        if memory_gib >= 160:
            seqs, tokens = 1024, 16384
        elif memory_gib >= 70:
            seqs, tokens = 1024, 8192
        else:
            seqs, tokens = 256, 2048
        return self.max_num_seqs or seqs, self.max_num_batched_tokens or tokens


_ENGINES = NamedEntries(ENGINES_FILE, EngineProfile, "engine")
known_engines = _ENGINES.names


def load_engine(name: str = "vllm") -> EngineProfile:
    """The named engine's constants from data/engines.yaml."""
    return _ENGINES.load(name)
