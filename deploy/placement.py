"""Ray placement of a plan's replicas: the terms the model contract (deploy.plan) leaves to the
runtime that places workers. A replica's `placement:` in the plan is a `Placement`; what Ray is
asked for (one bundle per worker, the group's strategy, the actor's own share), how the engine
runs its workers there, and the checks that a placement fits the cluster live here, so the plan
describes the model and its layouts and deploy/ alone speaks Ray's terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from gateway.engines.base import Executor

PlacementStrategy = Literal["STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK"]


class Placement(BaseModel):
    """How one replica's workers are placed: one Ray bundle per worker (tp x pp of them)."""

    model_config = ConfigDict(extra="forbid")

    strategy: PlacementStrategy = Field(
        "STRICT_SPREAD", description="STRICT_SPREAD puts each worker on its own node (the two-box layout)."
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(
        1.0, ge=0, le=1, description="Fraction of a GPU per worker; below 1 lets two replicas share the GPUs."
    )


class Replica(Protocol):
    """What placement reads of a plan's replica (deploy.plan.Replica; a protocol, as the plan imports this module)."""

    @property
    def name(self) -> str: ...
    @property
    def placement(self) -> Placement: ...
    @property
    def world_size(self) -> int: ...


class Cluster(Protocol):
    """What placement reads of a plan's cluster (deploy.plan.Cluster)."""

    @property
    def nodes(self) -> int: ...
    @property
    def devices(self) -> int: ...
    @property
    def is_cpu(self) -> bool: ...


def bundles(replica: Replica, accelerator: str | None) -> list[dict[str, float]]:
    """The replica's placement group: one bundle per worker; a GPU share only where the cluster has GPUs."""
    bundle: dict[str, float] = {"CPU": replica.placement.cpus_per_worker}
    if accelerator is not None:
        bundle["GPU"] = replica.placement.gpus_per_worker
    return [dict(bundle) for _ in range(replica.world_size)]


def executor(replica: Replica, accelerator: str | None) -> Executor:
    """How the engine runs this replica's workers. On GPUs, a replica of several workers uses vLLM's
    Ray executor: one Ray actor per worker, each in its own bundle of the replica's placement
    group, so a layout spans nodes and every worker gets exactly its bundle's GPU share. A
    one-worker GPU replica runs in the engine's own process on the GPU share Ray gave the
    replica. vLLM refuses its Ray executor on the CPU, so CPU workers stay in the replica."""
    if accelerator is None:
        return "mp"
    return "ray" if replica.world_size > 1 else "uni"


def actor_resources(replica: Replica, accelerator: str | None) -> dict[str, float]:
    """The replica actor's own resources, taken from the first bundle of its placement group.
    Under vLLM's Ray executor the workers are actors of their own, one per bundle, and the first
    needs that bundle's GPU share: the replica takes none of it (as Ray Serve LLM's replicas do)."""
    first = bundles(replica, accelerator)[0]
    gpus = 0.0 if executor(replica, accelerator) == "ray" else first.get("GPU", 0.0)
    return {"num_cpus": first["CPU"], "num_gpus": gpus}


def placement_problems(replicas: Sequence[Replica], cluster: Cluster) -> list[str]:
    """What keeps these replicas' placements off the cluster, each with what to change: a strict
    spread wider than the nodes, GPU shares adding up past the cluster's GPUs."""
    problems = [
        f"replica {r.name!r}: STRICT_SPREAD needs one node per worker ({r.world_size}) but the cluster has "
        f"{cluster.nodes}; use PACK or SPREAD"
        for r in replicas
        if r.placement.strategy == "STRICT_SPREAD" and r.world_size > cluster.nodes
    ]
    if not cluster.is_cpu:
        gpu_use = sum(r.placement.gpus_per_worker * r.world_size for r in replicas)
        if gpu_use > cluster.devices + 1e-9:
            problems.append(
                f"the replicas ask for {gpu_use:g} GPUs in all but the cluster has {cluster.devices}; "
                "lower placement.gpus_per_worker so they can be co-resident"
            )
    return problems
