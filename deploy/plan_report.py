"""What each box of a plan's cluster will hold (`gateway plan validate`): which replica's workers
land on which node, and the memory each replica may take there, from the plan alone (no cluster,
no model download).

Where the workers go follows the placement strategy as Ray applies it to one bundle per worker
(docs.ray.io, placement groups): STRICT_SPREAD and SPREAD put them on different nodes in turn,
PACK and STRICT_PACK fill one node's device slots before the next (PACK is best effort: Ray may
spread when a node is busy). The memory is what vLLM is allowed, not what it will use:
- on GPUs, gpu_memory_utilization is each worker's share of its GPU (weights, activations and
  the KV cache all come out of it), a GPU here being memory_per_node_gb / devices_per_node;
- on the CPU, the KV cache is VLLM_CPU_KVCACHE_SPACE GiB per worker (vLLM's CPU backend), the
  weights come on top, and an unset variable leaves the size to vLLM's default.
Whether the weights and a long sequence's KV cache fit inside a share is the tuner's performance
model's question (`tuner predict`); this report is the plan's own arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.plan import Replica, ServingPlan

HEADROOM = 0.10
"""Of each box's memory left to the OS and other processes before the report warns."""
CPU_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"


@dataclass(frozen=True)
class Share:
    """One replica's workers on one node and the memory they may take there."""

    node: int
    replica: str
    workers: int
    memory_gb: float | None  # None: left to vLLM's default (a CPU plan without VLLM_CPU_KVCACHE_SPACE)
    what: str


def worker_nodes(replica: Replica, nodes: int, devices_per_node: int) -> list[int]:
    """The node index of each of the replica's workers, as its placement strategy puts them."""
    if replica.placement.strategy in ("STRICT_SPREAD", "SPREAD"):
        return [worker % nodes for worker in range(replica.world_size)]
    return [min(worker // devices_per_node, nodes - 1) for worker in range(replica.world_size)]


def box_shares(plan: ServingPlan) -> list[Share]:
    """Every (node, replica) pair with workers, node by node."""
    cluster = plan.cluster
    shares = []
    for replica in plan.replicas:
        placed = worker_nodes(replica, cluster.nodes, cluster.devices_per_node)
        for node in sorted(set(placed)):
            workers = placed.count(node)
            if cluster.is_cpu:
                kv = replica.env.get(CPU_KV_ENV)
                memory = float(kv) * workers * 1.073741824 if kv else None  # GiB -> GB
                what = (
                    f"KV cache ({CPU_KV_ENV}={kv} GiB per worker); weights on top" if kv else "vLLM's default KV cache"
                )
            else:
                gpu_gb = cluster.memory_per_node_gb / cluster.devices_per_node
                memory = replica.engine.gpu_memory_utilization * gpu_gb * workers
                what = f"gpu_memory_utilization {replica.engine.gpu_memory_utilization:g} of a {gpu_gb:.1f} GB GPU per worker"
            shares.append(Share(node, replica.name, workers, memory, what))
    return sorted(shares, key=lambda s: (s.node, s.replica))


def box_warnings(plan: ServingPlan, shares: list[Share]) -> list[str]:
    """A line per node whose shares leave less than HEADROOM of its memory, or overrun it."""
    box_gb = plan.cluster.memory_per_node_gb
    warnings = []
    for node in sorted({s.node for s in shares}):
        total = sum(s.memory_gb or 0.0 for s in shares if s.node == node)
        if total > box_gb:
            warnings.append(f"node {node}: the replicas may take {total:.1f} GB, more than its {box_gb:g} GB")
        elif total > (1 - HEADROOM) * box_gb:
            warnings.append(
                f"node {node}: the replicas may take {total:.1f} GB of its {box_gb:g} GB, leaving under "
                f"{HEADROOM:.0%} to the OS and everything else"
            )
    return warnings
