"""What each replica of a plan holds on each box, and the KV cache budget that follows.

Per box, a replica's memory share (`gpu_memory_utilization` of the box) holds its slice of the
weights, a runtime reserve (activations, CUDA graphs, NCCL buffers: what vLLM's profile run
measures) and its KV cache. The tuner writes each replica's KV budget into the plan
(`kv_cache_memory_bytes`): vLLM then sizes its cache from the budget instead of profiling free
device memory, which two engines starting together on one GPU would each misread (each counts
the other's weights as its own use). Weights come from the performance model's architectures,
each model group's own (a plan of several models holds several). Per box, the shares of every
engine there, of every model, must leave the OS its headroom; a plan that does not is refused
with how many GB each box is over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deploy.plan import ModelGroup, Replica, ServingPlan
from deploy.plan_report import HEADROOM, box_shares
from tuner.perfmodel import ModelArchitecture, resolve_model

RUNTIME_RESERVE_GB = 4.0
"""Per engine and device: activations of the largest step, CUDA graphs, NCCL buffers, allocator slack."""
UNSET_LENGTH = 8192
"""The sequence length a replica without `max_model_len` is checked for."""

Architectures = Callable[[ModelGroup], ModelArchitecture]
"""The performance model's architecture of a model group."""


def group_architecture(group: ModelGroup) -> ModelArchitecture:
    """A group's architecture from its source: a known alias or hub id, a local model directory,
    or a demo model (made here if it is missing)."""
    if group.is_demo:
        from deploy.demo_model import ensure_demo_model

        return resolve_model(str(ensure_demo_model(group.source)))
    return resolve_model(group.source)


@dataclass(frozen=True)
class ReplicaMemory:
    """One replica's footprint on each device it uses, in GB (1e9 bytes)."""

    name: str
    share_gb: float
    weights_gb: float
    reserve_gb: float
    longest_sequence_gb: float

    @property
    def kv_gb(self) -> float:
        return self.share_gb - self.weights_gb - self.reserve_gb

    @property
    def kv_cache_bytes(self) -> int:
        """The budget a plan carries, whole MiB (vLLM's own reports are in GiB; a MiB leaves no doubt)."""
        mib = 1 << 20
        return max(0, int(self.kv_gb * 1e9) // mib * mib)


def replica_memory(replica: Replica, arch: ModelArchitecture, memory_per_device_gb: float) -> ReplicaMemory:
    tp, pp = replica.tensor_parallel_size, replica.pipeline_parallel_size
    layers = range(arch.num_layers // pp)
    return ReplicaMemory(
        name=replica.name,
        share_gb=replica.engine.gpu_memory_utilization * memory_per_device_gb,
        weights_gb=arch.weights_per_device_gb(tp, pp),
        reserve_gb=RUNTIME_RESERVE_GB,
        longest_sequence_gb=arch.kv_bytes_for_sequence(replica.engine.max_model_len or UNSET_LENGTH, layers, tp) / 1e9,
    )


def fitting_share(
    replica: Replica, arch: ModelArchitecture, memory_per_device_gb: float, min_sequences: int = 4
) -> float:
    """The smallest memory share (of a device) that `fit_problems` accepts for this replica: its
    weights, the runtime reserve and a KV cache of `min_sequences` of its longest sequences."""
    memory = replica_memory(replica, arch, memory_per_device_gb)
    need = memory.weights_gb + memory.reserve_gb + min_sequences * memory.longest_sequence_gb
    return need / memory_per_device_gb


def plan_memory(plan: ServingPlan, architecture: Architectures = group_architecture) -> list[ReplicaMemory]:
    """Every replica's footprint per device (in `plan.replicas`' order), each with its own model's
    architecture; a device is `memory_per_node_gb / devices_per_node`."""
    per_device = plan.cluster.memory_per_node_gb / plan.cluster.devices_per_node
    return [replica_memory(r, architecture(group), per_device) for group in plan.models for r in group.replicas]


def box_memory_gb(plan: ServingPlan) -> dict[int, float]:
    """The memory the engines' shares take on each node, every model's engines together (the
    shares `gateway plan validate` shows, deploy.plan_report.box_shares)."""
    taken = dict.fromkeys(range(plan.cluster.nodes), 0.0)
    for share in box_shares(plan):
        taken[share.node] += share.memory_gb or 0.0
    return taken


def fit_problems(
    plan: ServingPlan, architecture: Architectures = group_architecture, min_sequences: int = 4
) -> list[str]:
    """Why the plan does not fit its devices (empty when it does): a replica whose KV cache holds
    fewer than `min_sequences` of its longest sequences, a KV budget past what its share leaves, or
    a box whose engines' shares (of every model) leave the OS too little, by how many GB."""
    problems = []
    for memory, replica in zip(plan_memory(plan, architecture), plan.replicas, strict=True):
        if memory.kv_gb < min_sequences * memory.longest_sequence_gb:
            problems.append(
                f"{memory.name}: {memory.share_gb:.1f} GB share - {memory.weights_gb:.1f} GB weights - "
                f"{memory.reserve_gb:g} GB reserve leaves {memory.kv_gb:.1f} GB of KV cache, under {min_sequences} "
                f"sequences of {replica.engine.max_model_len} tokens ({memory.longest_sequence_gb:.2f} GB each)"
            )
        budget = replica.engine.kv_cache_memory_bytes
        if budget is not None and budget > memory.kv_cache_bytes:
            problems.append(
                f"{memory.name}: kv_cache_memory_bytes {budget / 1e9:.1f} GB is more than its share leaves "
                f"({memory.kv_gb:.1f} GB)"
            )
    if plan.cluster.is_cpu:
        return problems
    room = (1 - HEADROOM) * plan.cluster.memory_per_node_gb
    for node, taken in box_memory_gb(plan).items():
        if taken > room + 1e-6:
            problems.append(
                f"node {node}: the engines' shares take {taken:.1f} GB, {taken - room:.1f} GB over the {room:.1f} GB "
                f"its {plan.cluster.memory_per_node_gb:g} GB leave beside the OS ({HEADROOM:.0%}); "
                "lower their gpu_memory_utilization"
            )
    return problems


def with_kv_budgets(plan: ServingPlan, architecture: Architectures = group_architecture) -> ServingPlan:
    """The plan with each GPU replica's KV budget set from its share and its model's weights (CPU
    plans unchanged: vLLM's CPU build takes its cache size from VLLM_CPU_KVCACHE_SPACE)."""
    if plan.cluster.is_cpu:
        return plan
    budgets = {m.name: m.kv_cache_bytes for m in plan_memory(plan, architecture)}
    return plan.with_each_replica(
        lambda r: r.model_copy(
            update={"engine": r.engine.model_copy(update={"kv_cache_memory_bytes": budgets[r.name]})}
        )
    )
