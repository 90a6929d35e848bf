"""Closed-loop prediction: what vLLM will do for a model, hardware, layout, workload and concurrency.

`predict()` is the one entry point the CLI and the tuner use. For a closed loop of `concurrency`
clients (each sends its next request when the previous one ends), in steady state:

  running    R = min(concurrency, max_num_seqs, sequences whose KV cache fits) sequences decode;
             they are split into min(pp, R) micro-batches (vLLM keeps pp batches in flight).
  decode     a decode-only cycle (every running sequence advances one token) takes T_d,
             from the step model (per layer, per stage, with TP all-reduces and PP hand-offs).
  prefill    each new request's prompt is processed in chunks of what max_num_batched_tokens
             leaves beside the decode tokens; a chunk rides in one micro-batch and lengthens
             that cycle. R / output_len requests start per cycle, so a cycle averages
             T = T_d + (R / output_len) * (extra time of one request's prefill chunks).
  outputs    TPOT = T; output tok/s = R / T; request/s = output tok/s / output_len;
             TTFT = the prompt's chunk cycles plus half a cycle of waiting for the step in
             progress. Clients beyond R wait in the queue: by Little's law their latency is
             concurrency / request rate, and the wait is added to TTFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from tuner.perfmodel.architecture import ModelArchitecture, resolve_model
from tuner.perfmodel.build import EngineBuild, load_build
from tuner.perfmodel.coresidence import load_coresidence
from tuner.perfmodel.engine import EngineProfile, EngineSettings, ModelConstants, load_engine
from tuner.perfmodel.hardware import HardwareProfile, load_hardware
from tuner.perfmodel.moe import MoEKernelTable
from tuner.perfmodel.step import StepBatch, StepModel
from tuner.workloads import Workload


class Layout(BaseModel):
    """A replica's parallel layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    ep: bool = Field(False, description="Expert parallel over the TP ranks (vLLM's enable_expert_parallel).")

    @property
    def name(self) -> str:
        return f"tp{self.tp}-pp{self.pp}" + ("-ep" if self.ep else "")


class Capacity(BaseModel):
    """Memory on the most loaded device of a replica, and how many sequences its KV cache holds."""

    model_config = ConfigDict(frozen=True)

    weights_gb: float
    kv_pool_gb: float
    kv_per_sequence_gb: float
    max_sequences: int
    """Sequences of the workload's full length whose KV cache fits (0 when the weights do not)."""

    @property
    def fits(self) -> bool:
        return self.max_sequences >= 1


class Prediction(BaseModel):
    """The model's answer for one (layout, concurrency). Latencies in ms; None when it does not fit."""

    model_config = ConfigDict(frozen=True)

    layout: str
    tp: int
    pp: int
    ep: bool = False
    concurrency: int
    fits: bool
    running: int
    max_concurrency: int
    """The most sequences that run at once (max_num_seqs, or the KV cache, whichever is smaller)."""
    ttft_ms: float | None
    tpot_ms: float | None
    output_tok_s: float | None
    request_s: float | None
    weights_per_device_gb: float

    def as_row(self) -> dict[str, object]:
        """The flat record `tuner predict --json` prints."""
        return self.model_dump(
            include={"layout", "tp", "pp", "ep", "concurrency", "ttft_ms", "tpot_ms", "output_tok_s", "fits"}
        )


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    """A replica's step model plus its memory capacity: what `predict` and the simulator share."""

    steps: StepModel
    capacity: Capacity
    max_num_seqs: int
    max_num_batched_tokens: int
    contention: float

    @property
    def max_running(self) -> int:
        return min(self.max_num_seqs, self.capacity.max_sequences)

    def cycle_seconds(
        self,
        decode: float,
        context: float,
        prefill: float = 0.0,
        prefill_context: float = 0.0,
        prefill_sequences: float = 1.0,
    ) -> float:
        """One cycle: `decode` sequences at mean `context` advance one token, and `prefill` prompt
        tokens (chunks of `prefill_sequences` prompts, each reaching `prefill_context` on average)
        ride along. One prompt's chunk rides in the first micro-batch; several prompts are shared
        out over up to pp micro-batches, as vLLM schedules each micro-batch with its own budget."""
        pp = self.steps.pp
        groups = max(1, min(pp, math.ceil(decode))) if decode > 0 else 1
        parts = max(1, min(pp, math.floor(prefill_sequences))) if prefill > 0 else 1
        batches = [
            StepBatch(
                decode_tokens=decode / groups if i < groups else 0.0,
                decode_context=context,
                prefill_tokens=prefill / parts if i < parts else 0.0,
                prefill_context=prefill_context if i < parts else 0.0,
                prefill_sequences=prefill_sequences / parts if i < parts and prefill > 0 else 0.0,
            )
            for i in range(max(groups, parts))
        ]
        return self.steps.cycle_seconds(batches) * self.contention

    def prefill_chunks(self, prompt: int, decode: float) -> list[int]:
        """How a prompt is split: each chunk is what max_num_batched_tokens leaves beside the decode tokens."""
        room = max(
            1, self.max_num_batched_tokens - math.ceil(decode / max(1, min(self.steps.pp, math.ceil(decode) or 1)))
        )
        count = math.ceil(prompt / room)
        return [min(room, prompt - i * room) for i in range(count)]


def build_replica(
    model: ModelArchitecture,
    hardware: HardwareProfile,
    layout: Layout,
    workload: Workload,
    settings: EngineSettings | None = None,
    engine: EngineProfile | None = None,
    constants: ModelConstants | None = None,
    moe_kernels: MoEKernelTable | None = None,
) -> ReplicaModel:
    """Everything about a replica that does not depend on the load (`moe_kernels`: another kernel
    table than data/moe_kernels.yaml, for fits and what-ifs)."""
    settings = settings or EngineSettings()
    engine = engine or load_engine("vllm")
    constants = constants or ModelConstants()
    steps = StepModel(
        model,
        hardware,
        engine,
        layout.tp,
        layout.pp,
        constants,
        enforce_eager=settings.enforce_eager,
        build=resolve_build(settings, hardware, engine),
        ep=layout.ep,
        moe_kernels=moe_kernels,
    )
    max_num_seqs, max_tokens = settings.resolved(hardware)
    # A step beside a busy co-resident replica: the measured slowdown of a latency-bound step next to
    # a decoding engine (tuner.perfmodel.coresidence), in proportion to how busy the other one is.
    slowed = load_coresidence().interactive_next_to_decode.value
    contention = 1.0 + settings.other_replica_busy * (slowed - 1.0)
    capacity = _capacity(steps, hardware, settings, engine, workload.input_len + workload.output_len)
    return ReplicaModel(steps, capacity, max_num_seqs, max_tokens, contention)


NO_BUILD = "none"
"""`EngineSettings.build` value that leaves the build's terms out (bytes, FLOPs and the link alone)."""


def resolve_build(settings: EngineSettings, hardware: HardwareProfile, engine: EngineProfile) -> EngineBuild | None:
    """The vLLM build a replica runs: the settings' own, else the hardware's default; 'none' prices bytes,
    FLOPs and the link alone (the model before builds). Builds are vLLM builds: other engines (and vLLM
    on hardware with no build on file) keep the build-free model."""
    if engine.name != "vllm":
        if settings.build not in (None, NO_BUILD):
            raise ValueError(f"engine builds are vLLM builds; engine {engine.name!r} takes none")
        return None
    name = settings.build or hardware.default_build
    return load_build(name) if name and name != NO_BUILD else None


def _capacity(
    steps: StepModel, hardware: HardwareProfile, settings: EngineSettings, engine: EngineProfile, length: int
) -> Capacity:
    """KV-cache room on the tightest device. A sequence is counted at its full length (prompt
    plus output) so that admitted sequences are never preempted; sliding layers hold their window."""
    model, tp = steps.model, steps.tp
    budget = hardware.device.memory_gb.value * settings.gpu_memory_utilization - engine.runtime_reserve_gb.value
    weights = model.stage_weight_bytes(tp, steps.pp)
    tightest = None
    for stage_bytes, layers in zip(weights, steps.stages, strict=True):
        pool = budget - stage_bytes / 1e9
        per_sequence = model.kv_bytes_for_sequence(length, layers, tp) / 1e9
        fit = max(0, math.floor(pool / per_sequence)) if pool > 0 else 0
        if tightest is None or fit < tightest.max_sequences:
            tightest = Capacity(
                weights_gb=stage_bytes / 1e9,
                kv_pool_gb=max(pool, 0.0),
                kv_per_sequence_gb=per_sequence,
                max_sequences=fit,
            )
    assert tightest is not None
    return tightest


def predict_replica(replica: ReplicaModel, workload: Workload, concurrency: int) -> Prediction:
    """Steady-state closed-loop figures for an already-built replica (the tuner's fast path)."""
    steps = replica.steps
    common = dict(
        layout=f"tp{steps.tp}-pp{steps.pp}" + ("-ep" if steps.ep else ""),
        tp=steps.tp,
        pp=steps.pp,
        ep=steps.ep,
        concurrency=concurrency,
        max_concurrency=replica.max_running,
        weights_per_device_gb=round(replica.capacity.weights_gb, 3),
    )
    if not replica.capacity.fits:
        return Prediction(
            fits=False, running=0, ttft_ms=None, tpot_ms=None, output_tok_s=None, request_s=None, **common
        )
    running = min(concurrency, replica.max_running)
    prompt, output = workload.input_len, workload.output_len
    context = prompt + output / 2
    decode_cycle = replica.cycle_seconds(running, context)
    chunk_cycles, reached = [], 0
    for chunk in replica.prefill_chunks(prompt, running):
        reached += chunk
        chunk_cycles.append(replica.cycle_seconds(running, context, chunk, reached))
    prefill_extra = sum(c - decode_cycle for c in chunk_cycles)
    cycle = decode_cycle + running / output * prefill_extra
    output_rate = running / cycle
    request_rate = output_rate / output
    ttft = sum(chunk_cycles) + cycle / 2
    latency = ttft + (output - 1) * cycle
    if concurrency > running:  # the rest queue: Little's law gives their latency
        ttft += concurrency / request_rate - latency
    return Prediction(
        fits=True,
        running=running,
        ttft_ms=ttft * 1e3,
        tpot_ms=cycle * 1e3,
        output_tok_s=output_rate,
        request_s=request_rate,
        **common,
    )


def predict(
    model: str | ModelArchitecture,
    hardware: str | HardwareProfile,
    layout: Layout,
    workload: Workload,
    concurrency: int,
    settings: EngineSettings | None = None,
    engine: str | EngineProfile = "vllm",
    constants: ModelConstants | None = None,
) -> Prediction:
    """Predict vLLM's steady-state TTFT, TPOT and throughput for a closed loop of `concurrency` clients."""
    arch = resolve_model(model) if isinstance(model, str) else model
    hw = load_hardware(hardware) if isinstance(hardware, str) else hardware
    profile = load_engine(engine) if isinstance(engine, str) else engine
    replica = build_replica(arch, hw, layout, workload, settings, profile, constants)
    return predict_replica(replica, workload, concurrency)
