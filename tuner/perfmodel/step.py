"""The cost of one engine step, layer by layer, for one parallel layout.

A step runs every layer once over the batch's tokens. For each layer on each device the model
takes the larger of two times (a roofline per layer, not per model, so that a MoE layer's expert
reads, which grow with the batch, are counted where they happen):

  memory   weight bytes read (attention, router, the experts the batch touches) plus KV-cache
           bytes read and written, over the engine's achieved share of memory bandwidth;
  compute  matmul and attention FLOPs over the engine's achieved share of the tensor peak.

A MoE layer's tokens each pick k of its E experts. Experts are not equally popular: expert i
(ranked by popularity) is chosen with a probability proportional to i^-s (Zipf, s =
`expert_popularity_skew`; s = 0 is uniform routing), capped at 1 (an expert cannot be chosen
twice by one token). T independently routed tokens then touch sum_i 1 - (1 - pi_i)^T distinct
experts, where pi_i is expert i's chance to be among a token's k (so one token touches exactly
k). With uniform routing this is E * (1 - (1 - k/E)^T).

A step of more than one token adds the engine's `multi_token_layer_overhead_us` per layer: the
host launching every kernel when the engine replays CUDA graphs only for single-token steps. An
engine run without CUDA graphs (`EngineSettings.enforce_eager`) adds `eager_layer_overhead_us` per
layer to every step, and a layout spanning nodes adds the link's measured control round trip
(vLLM's Ray executor sends each step's work to the workers and gathers their output) once per step.

TP splits every layer across ranks and adds two all-reduces of the step's activations per layer
(after attention and after the MLP), plus one for the vocab-parallel embedding and a gather of
the logits. PP splits the layers into stages and adds a point-to-point hand-off of the
activations between stages.

With an engine build (`EngineBuild`, vLLM on a GPU) three more terms apply (docs/perfmodel.md, "v3"):

  MoE kernels   a MoE layer takes max(touched expert bytes / bandwidth, decode pairs x pair cost):
                the pair cost depends on the build's kernel backend and falls less than the shard
                (tuner/perfmodel/moe.py), so TP, whose every rank sees every pair, keeps most of it
                while PP and EP split the pairs between GPUs. Prefill chunks run the kernels as
                GEMMs: the compute roofline holds them.
  layer floor   a layer never takes less than the build's latency-bound floor: work every TP rank
                replicates (router, top-k, alignment, norms), which PP splits by layers.
  host          a + b x sequences of host time per step (tuner/perfmodel/host.py), serial after
                the GPU's work where vLLM keeps one batch in flight (TP or EP over Ray), hidden
                behind it where it keeps several (PP, async scheduling).

Expert parallelism (`ep`, vLLM's enable_expert_parallel with TP ranks) keeps attention split as TP
does and gives each rank whole experts, E / tp of them: the busiest rank sees its share of the
pairs and touched experts times the routing imbalance (`ModelConstants.ep_imbalance`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.perfmodel.architecture import ModelArchitecture
from tuner.perfmodel.build import EngineBuild
from tuner.perfmodel.collectives import LinkProfile
from tuner.perfmodel.engine import EngineProfile, ModelConstants
from tuner.perfmodel.hardware import ComputeDtype, HardwareProfile
from tuner.perfmodel.host import host_overlaps, load_host_costs
from tuner.perfmodel.moe import MoEKernelTable, load_moe_kernels


@dataclass(frozen=True, slots=True)
class StepBatch:
    """What one step (one micro-batch) processes. Counts may be fractional: they are means."""

    decode_tokens: float = 0.0
    """Sequences generating one token this step."""
    decode_context: float = 0.0
    """Mean context length of those sequences."""
    prefill_tokens: float = 0.0
    """Prompt tokens processed this step (chunked prefill)."""
    prefill_context: float = 0.0
    """Context length reached by the end of the prefill chunk (what its queries attend to)."""
    prefill_sequences: float = 0.0
    """Sequences whose prompt chunk is in this step."""

    @property
    def tokens(self) -> float:
        return self.decode_tokens + self.prefill_tokens

    @property
    def sampled(self) -> float:
        """Rows the LM head is applied to: one per decoding sequence and per finished prompt."""
        return self.decode_tokens + self.prefill_sequences


class StepModel:
    """Per-stage time of one step for a model on a hardware profile with a tp x pp layout.

    Construction does the per-layout arithmetic once; `stage_seconds` is then cheap enough to
    call thousands of times (the traffic simulation does)."""

    def __init__(
        self,
        model: ModelArchitecture,
        hardware: HardwareProfile,
        engine: EngineProfile,
        tp: int = 1,
        pp: int = 1,
        constants: ModelConstants | None = None,
        enforce_eager: bool = False,
        build: EngineBuild | None = None,
        ep: bool = False,
        moe_kernels: MoEKernelTable | None = None,
    ) -> None:
        if tp * pp > hardware.devices:
            raise ValueError(f"tp {tp} x pp {pp} needs {tp * pp} devices; {hardware.name} has {hardware.devices}")
        if ep and (tp < 2 or not model.is_moe):
            raise ValueError("expert parallelism needs a MoE model and tp >= 2 (vLLM's EP size is the TP size)")
        self.model, self.hardware, self.engine, self.tp, self.pp = model, hardware, engine, tp, pp
        self.build, self.ep = build, ep
        self.constants = constants or ModelConstants()
        self.bandwidth = self.constants.achievable_bandwidth_gbs(hardware) * 1e9 * engine.bandwidth_efficiency.value
        peak = hardware.device.peak_tflops(_compute_dtype(model)) * 1e12
        self.decode_flops_rate = peak * engine.decode_compute_efficiency.value
        self.prefill_flops_rate = peak * engine.prefill_compute_efficiency.value
        # TP ranks sit together (inside a node if they fit); PP stages across nodes otherwise.
        self.tp_link: LinkProfile | None = hardware.link_for(tp) if tp > 1 else None
        self.pp_link: LinkProfile | None = hardware.link_for(tp * pp) if pp > 1 else None
        self.stages = model.stage_layers(pp)
        self._expert_inclusion = _expert_inclusion(model, self.constants.expert_popularity_skew.value)
        self._multi_token_overhead = engine.multi_token_layer_overhead_us.value * 1e-6
        eager = build.eager_layer_overhead_us if build is not None else engine.eager_layer_overhead_us
        self._eager_overhead = eager.value * 1e-6 if enforce_eager else 0.0
        # A layout spanning nodes is driven through vLLM's Ray executor: each step's scheduler
        # output goes to the workers and their results come back across the link, once per step.
        spans_nodes = hardware.nodes_spanned(tp * pp) > 1
        control = self.pp_link or self.tp_link
        self._control_overhead = (
            control.control_roundtrip_us.value * 1e-6
            if spans_nodes and control is not None and control.control_roundtrip_us is not None
            else 0.0
        )
        self._attention_bytes = model.attention_bytes(tp) + model.router_bytes
        # Under EP a rank holds whole experts (E / tp of them); under TP a 1/tp slice of every one.
        self._expert_split = 1 if ep else tp
        self._expert_bytes = model.expert_bytes(self._expert_split)
        self._expert_share = self.constants.ep_imbalance.value / tp if ep else 1.0
        """Share of the step's pairs and touched experts the busiest rank works on."""
        self.pair_seconds = 0.0
        """Cost of one (token, expert) pair on a rank (0 without a build, or for a dense model)."""
        self._layer_floor = 0.0
        self._host = None
        self.host_overlapped = True
        """Whether the host's step time hides behind the GPU's (vLLM's max_concurrent_batches > 1)."""
        if build is not None:
            self._layer_floor = build.layer_floor_us.value * 1e-6
            self._host = load_host_costs()
            self.host_overlapped = host_overlaps(
                pp, spans_nodes=hardware.nodes_spanned(tp * pp) > 1, async_scheduling=build.async_scheduling
            )
            if model.is_moe:
                self.pair_seconds = (moe_kernels or load_moe_kernels()).pair_seconds(
                    build.moe_backend, model.expert_params / self._expert_split, hardware.device.peak_tflops("bf16")
                )
        self._kv_token_bytes = model.kv_bytes_per_token_layer(tp)
        self._dense_params = (model.attention_params + model.router_params) / tp
        self._expert_params = model.expert_params / tp
        self._score_flops = 4 * model.num_attention_heads * model.head_dim / tp
        self._activation_bytes = model.hidden_size * self.constants.activation_bytes.value
        self._stage_layer_types = [
            (
                sum(model.layer_type(i) == "full_attention" for i in layers),
                sum(model.layer_type(i) == "sliding_attention" for i in layers),
            )
            for layers in self.stages
        ]

    # ---- one layer ------------------------------------------------------------------------------

    def distinct_experts(self, tokens: float) -> float:
        """Expected experts a layer touches when `tokens` each pick k of E by expert popularity."""
        if not self.model.is_moe:
            return 1.0
        if tokens <= 0:
            return 0.0
        return sum(1.0 - (1.0 - p) ** tokens for p in self._expert_inclusion)

    def layer_seconds(self, batch: StepBatch, sliding: bool) -> float:
        """Time of one layer on one device: the larger of its memory time and compute time, plus
        the engine's launch overhead when a multi-token step runs without CUDA graphs."""
        m = self.model
        expert_bytes = self.distinct_experts(batch.tokens) * self._expert_share * self._expert_bytes
        moe_seconds = 0.0
        if self.pair_seconds:  # the MoE kernel: its bytes, or its decode pairs' work, whichever is longer
            pairs = batch.decode_tokens * m.experts_per_token * self._expert_share
            moe_seconds = max(expert_bytes / self.bandwidth, pairs * self.pair_seconds)
            expert_bytes = 0.0
        weight_bytes = self._attention_bytes + expert_bytes
        window = float(m.sliding_window) if sliding and m.sliding_window else float("inf")
        decode_attended = min(batch.decode_context, window)
        prefill_attended = min(batch.prefill_context, window)
        kv_bytes = self._kv_token_bytes * (
            batch.decode_tokens * decode_attended + batch.prefill_sequences * prefill_attended + batch.tokens
        )
        active = self._dense_params + (m.experts_per_token if m.is_moe else 1) * self._expert_params
        # Prefill queries attend, on average, to half the chunk plus what came before it.
        prefill_mean_attended = min(
            batch.prefill_context - batch.prefill_tokens / max(batch.prefill_sequences, 1) / 2, window
        )
        decode_flops = batch.decode_tokens * (2 * active + self._score_flops * decode_attended)
        prefill_flops = batch.prefill_tokens * (2 * active + self._score_flops * max(prefill_mean_attended, 0.0))
        compute = decode_flops / self.decode_flops_rate + prefill_flops / self.prefill_flops_rate
        launches = (self._multi_token_overhead if batch.tokens > 1 else 0.0) + self._eager_overhead
        device = max(max((weight_bytes + kv_bytes) / self.bandwidth, compute) + moe_seconds, self._layer_floor)
        return device + launches

    # ---- one stage ------------------------------------------------------------------------------

    def allreduce_seconds(self, tokens: float) -> float:
        """One all-reduce of `tokens` hidden states across the TP ranks (0 without TP)."""
        if self.tp_link is None or tokens <= 0:
            return 0.0
        return self.tp_link.allreduce.seconds(tokens * self._activation_bytes)

    def handoff_seconds(self, tokens: float) -> float:
        """One PP stage-to-stage send: hidden states and residual of every token in the step."""
        if self.pp_link is None or tokens <= 0:
            return 0.0
        return self.pp_link.p2p.seconds(2 * tokens * self._activation_bytes)

    def stage_seconds(self, batch: StepBatch) -> list[float]:
        """Time each pipeline stage spends on this micro-batch (one entry per stage)."""
        m = self.model
        full = self.layer_seconds(batch, sliding=False)
        sliding = self.layer_seconds(batch, sliding=True) if m.sliding_window else full
        per_layer_comm = 2 * self.allreduce_seconds(batch.tokens)
        times = [
            n_full * full + n_sliding * sliding + (n_full + n_sliding) * per_layer_comm
            for n_full, n_sliding in self._stage_layer_types
        ]
        # First stage: engine overhead and the vocab-parallel embedding's all-reduce.
        times[0] += (
            self.engine.step_overhead_us.value * 1e-6
            + self.engine.sequence_step_overhead_us.value * 1e-6 * batch.sampled
            + self._control_overhead
            + self.allreduce_seconds(batch.tokens)
        )
        # Last stage: the LM head over the sampled rows, and gathering the vocab-split logits.
        head_bytes = m.lm_head_bytes(self.tp)
        head_flops = 2 * batch.sampled * m.vocab_size * m.hidden_size / self.tp
        times[-1] += max(head_bytes / self.bandwidth, head_flops / self.decode_flops_rate)
        if self.tp_link is not None and batch.sampled > 0:
            logits = batch.sampled * m.vocab_size / self.tp * self.constants.activation_bytes.value
            times[-1] += self.tp_link.allreduce.seconds(logits)
        return times

    def cycle_seconds(self, micro_batches: list[StepBatch]) -> float:
        """Time for every micro-batch in flight to advance one step through all stages.

        vLLM keeps up to pp micro-batches in flight. Each stage must work through all of them
        (the slowest stage sets the pace), and each micro-batch must pass every stage in turn
        plus the hand-offs (the pipeline's fill: with fewer micro-batches than stages, stages idle).
        """
        per_batch = [self.stage_seconds(b) for b in micro_batches]
        busiest_stage = max(sum(times[j] for times in per_batch) for j in range(self.pp))
        longest_pass = max(
            sum(times) + (self.pp - 1) * self.handoff_seconds(b.tokens)
            for times, b in zip(per_batch, micro_batches, strict=True)
        )
        device = max(busiest_stage, longest_pass)
        host = self.host_seconds(micro_batches)
        return max(device, host) if self.host_overlapped else device + host

    def host_seconds(self, micro_batches: list[StepBatch]) -> float:
        """The engine core's host time for one cycle (one step per micro-batch); 0 without a build."""
        if self._host is None:
            return 0.0
        device = self.hardware.device.name
        return sum(self._host.step_seconds(b.sampled, device) for b in micro_batches)


def _expert_inclusion(model: ModelArchitecture, skew: float) -> tuple[float, ...]:
    """Each expert's chance to be among one token's k, for Zipf popularity i^-skew: shares
    proportional to popularity, capped at 1, summing to k (water-filling: the experts a token
    would pick more than surely are capped and the rest share what is left)."""
    if not model.is_moe:
        return ()
    weights = [rank**-skew for rank in range(1, model.num_experts + 1)]  # descending
    k = model.experts_per_token
    for capped in range(k):
        rest = sum(weights[capped:])
        shares = [(k - capped) * w / rest for w in weights[capped:]]
        if shares[0] <= 1.0:
            return (1.0,) * capped + tuple(shares)
    return (1.0,) * k + (0.0,) * (model.num_experts - k)


def _compute_dtype(model: ModelArchitecture) -> ComputeDtype:
    """The tensor-core format the matmuls run in: FP8 and NVFP4 weights run natively (W8A8,
    W4A4); MXFP4 and int formats are dequantized into BF16 matmuls (Marlin-style W4A16)."""
    if model.weights.mlp == "fp8":
        return "fp8"
    if model.weights.mlp == "nvfp4":
        return "fp4"
    return "bf16"
