"""What Ray places for a plan on a two-node cluster (both "nodes" on this machine).

On GPUs, vLLM's Ray executor runs one worker per bundle of the replica's placement group. On
the CPU vLLM refuses that executor, so its workers stay in the replica's process; what is
tested here is what Ray reserves (each replica's placement group, bundle by bundle, on the nodes
the plan says) and, on a cluster whose nodes declare one GPU each (Ray's resources are logical,
so no GPU is needed), what every engine and worker of each shipped GPU plan is given: the
engine's environment and command line as deploy.engine_server builds them, and worker actors
asked for exactly as vLLM's Ray executor asks (`num_gpus=VLLM_RAY_PER_WORKER_GPUS`, one per
bundle of the group the replica hands over). The engine class is swapped for a probe behind the
same deployment options the builder gives the real one, so the tests need no vLLM start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from ray import cloudpickle

from deploy.builder import engine_app
from deploy.engine_process import PLACEMENT_GROUP_ENV
from deploy.engine_server import engine_launch
from deploy.placement import executor
from deploy.plan import SHIPPED_PLANS_DIR, Replica, load_plan, parse_plan, shipped_plan
from deploy.stack import ray_on_loopback_only

pytestmark = pytest.mark.ray


class PlacementProbe:
    """Stands where EngineServer stands; reports where Ray put it and its placement group."""

    def __init__(self, model_source: str, served_name: str, replica: dict[str, Any], log_dir: str, *_: Any) -> None:
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()
        self.group = ray.util.get_current_placement_group()

    def placement(self) -> dict[str, Any]:
        import ray

        table = ray.util.placement_group_table(self.group)
        return {
            "actor_node": self.node_id,
            "strategy": table["strategy"],
            "bundles": [table["bundles_to_node_id"][i] for i in sorted(table["bundles_to_node_id"])],
            "resources": [table["bundles"][i] for i in sorted(table["bundles"])],
        }


class WorkerProbe:
    """Stands where one of vLLM's Ray workers stands: reports its node and the GPU Ray gave it."""

    def where(self) -> tuple[str, list[str]]:
        import ray

        return ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]


def vllm_style_workers(group_hex: str, count: int, gpus_per_worker: float) -> list[Any]:
    """Worker actors asked for as vLLM's Ray executor asks: no CPU, `gpus_per_worker` GPU
    (VLLM_RAY_PER_WORKER_GPUS), bundle i of the placement group it was handed."""
    import ray
    from ray import PlacementGroupID
    from ray.util.placement_group import PlacementGroup
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = PlacementGroup(PlacementGroupID(bytes.fromhex(group_hex)))
    worker = ray.remote(WorkerProbe)
    return [
        worker.options(
            num_cpus=0,
            num_gpus=gpus_per_worker,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=i),
        ).remote()
        for i in range(count)
    ]


class EngineProbe:
    """Stands where EngineServer stands on a GPU cluster: builds the engine's command line and
    environment as EngineServer does (deploy.engine_server.engine_launch), then places the
    workers as vLLM would."""

    def __init__(
        self,
        model_source: str,
        served_name: str,
        replica: dict[str, Any],
        log_dir: str,
        accelerator: str | None,
        *_: Any,
    ) -> None:
        import os

        import ray

        self.replica = Replica.model_validate(replica)
        self.executor = executor(self.replica, accelerator)
        self.args, self.env = engine_launch(model_source, served_name, self.replica, accelerator, "127.0.0.1", 8000)
        context = ray.get_runtime_context()
        self.actor = {"GPU": context.get_assigned_resources().get("GPU", 0.0), "node": context.get_node_id()}
        self.visible = os.environ.get("CUDA_VISIBLE_DEVICES")

    def report(self) -> dict[str, Any]:
        import ray

        workers: list[Any] = []
        if self.executor == "ray":
            gpus = float(self.env["VLLM_RAY_PER_WORKER_GPUS"])
            actors = vllm_style_workers(self.env[PLACEMENT_GROUP_ENV], self.replica.world_size, gpus)
            workers = ray.get([a.where.remote() for a in actors], timeout=120)
        return {
            "executor": self.executor,
            "env": self.env,
            "args": self.args,
            "actor": self.actor,
            "visible": self.visible,
            "workers": workers,
        }

    def try_whole_gpu_workers(self) -> str:
        """vLLM's default, one whole GPU per worker, in this replica's 0.5-GPU bundles."""
        try:
            vllm_style_workers(self.env[PLACEMENT_GROUP_ENV], 1, 1.0)
        except Exception as exc:
            return str(exc)
        return "scheduled"


# Ray's workers cannot import this test module: ship the probe classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@contextmanager
def serving_on_two_nodes(**node: Any) -> Iterator[list[str]]:
    """Two Ray nodes on this machine (each with `node`'s resources) and Serve on them; their ids."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    ray_on_loopback_only()  # both "nodes" on 127.0.0.1, like deploy.stack's local head
    loopback = {"node_ip_address": "127.0.0.1", **node}
    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **loopback})
    cluster.add_node(**loopback)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        serve.start(proxy_location="Disabled")
        yield [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def two_node_cluster() -> Iterator[list[str]]:
    with serving_on_two_nodes(num_cpus=2) as nodes:
        yield nodes


def two_node_plan() -> Any:
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    data["cluster"]["nodes"] = 2
    data["cluster"]["devices_per_node"] = 1
    for replica in data["replicas"]:
        replica["placement"]["strategy"] = "STRICT_SPREAD"
    return parse_plan(data)


def test_each_replica_spreads_one_bundle_per_node_and_both_are_co_resident(two_node_cluster: list[str]) -> None:
    from ray import serve

    plan = two_node_plan()
    seen = {}
    for replica in plan.replicas:
        app = engine_app(plan, replica, "unused", "unused", engine_cls=PlacementProbe)
        handle = serve.run(app, name=f"probe-{replica.name}", route_prefix=None)
        seen[replica.name] = handle.placement.remote().result()

    assert len(two_node_cluster) == 2
    for name, placement in seen.items():
        assert placement["strategy"] == "STRICT_SPREAD", name
        assert sorted(placement["bundles"]) == sorted(two_node_cluster), name  # one bundle on each node
        assert placement["resources"] == [{"CPU": 0.5}, {"CPU": 0.5}], name
        assert placement["actor_node"] == placement["bundles"][0], name  # the replica sits in bundle 0
    # Both replicas hold a bundle on both nodes at once: co-resident, as on the Spark pair.
    assert sorted(seen["interactive"]["bundles"]) == sorted(seen["batch"]["bundles"])


def test_a_layout_that_cannot_be_spread_is_refused_before_ray_is_asked() -> None:
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    data["replicas"][0]["placement"]["strategy"] = "STRICT_SPREAD"
    with pytest.raises(ValueError, match="STRICT_SPREAD needs one node per worker"):
        parse_plan(data)


@pytest.fixture(scope="module")
def two_gpu_nodes() -> Iterator[list[str]]:
    """Two Ray nodes on this machine that declare one GPU each, as the two Sparks do."""
    with serving_on_two_nodes(num_cpus=6, num_gpus=1) as nodes:
        yield nodes


GPU_PLANS = sorted(p for p in SHIPPED_PLANS_DIR.glob("*.yaml") if not load_plan(p).cluster.is_cpu)


@pytest.mark.parametrize("path", GPU_PLANS, ids=lambda p: p.name.removesuffix(".yaml"))
def test_every_engine_and_worker_of_a_gpu_plan_gets_what_vllm_needs(two_gpu_nodes: list[str], path: Any) -> None:
    from ray import serve

    plan = load_plan(path)
    reports = {}
    for replica in plan.replicas:
        app = engine_app(plan, replica, "unused", "unused", engine_cls=EngineProbe)
        handle = serve.run(app, name=f"gpu-{path.stem}-{replica.name}", route_prefix=None)
        reports[replica.name] = (replica, handle, handle.report.remote().result(timeout_s=180))
    try:
        for name, (replica, handle, report) in reports.items():
            share = replica.placement.gpus_per_worker
            backend = report["args"][report["args"].index("--distributed-executor-backend") + 1]
            assert backend == report["executor"], name
            if replica.world_size > 1:
                # One worker actor per bundle, each with the bundle's GPU share, on both nodes.
                assert report["executor"] == "ray", name
                assert report["env"]["VLLM_RAY_PER_WORKER_GPUS"] == str(share), name
                assert report["actor"]["GPU"] == 0.0, name  # the replica leaves bundle 0's GPU to worker 0
                nodes = [node for node, _ in report["workers"]]
                assert sorted(nodes) == sorted(two_gpu_nodes), name
                assert all(len(gpus) == 1 for _, gpus in report["workers"]), name
                # vLLM's default of one whole GPU per worker fits no bundle: Ray refuses it at once.
                assert "cannot fit into any bundles" in handle.try_whole_gpu_workers.remote().result(), name
            else:
                # One worker in the engine's own process, on the GPU share Ray gave the replica.
                assert report["executor"] == "uni", name
                assert report["actor"]["GPU"] == share, name
                assert report["visible"] not in (None, ""), name
            budget = replica.engine.kv_cache_memory_bytes
            assert budget is not None and report["args"][report["args"].index("--kv-cache-memory-bytes") + 1] == str(
                budget
            ), name
    finally:
        for replica in plan.replicas:
            serve.delete(f"gpu-{path.stem}-{replica.name}")
