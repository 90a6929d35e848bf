"""What Ray places for a plan on a two-node cluster (both "nodes" on this machine).

On GPUs, vLLM's Ray executor runs one worker per bundle of the replica's placement group. On
the CPU vLLM refuses that executor, so its workers stay in the replica's process; what can be
tested here is what Ray reserves: each replica's placement group, bundle by bundle, on the
nodes the plan says. The engine class is swapped for a probe behind the same deployment options
the builder gives the real one, so the test needs no vLLM start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from ray import cloudpickle

from deploy.builder import http_engine
from deploy.plan import parse_plan, shipped_plan
from deploy.stack import ray_on_loopback_only

pytestmark = pytest.mark.ray


class PlacementProbe:
    """Stands where EngineServer stands; reports where Ray put it and its placement group."""

    def __init__(self, model_source: str, served_name: str, replica: dict[str, Any], log_dir: str) -> None:
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


# Ray's workers cannot import this test module: ship the probe class by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[list[str]]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    ray_on_loopback_only()  # both "nodes" on 127.0.0.1, like deploy.stack's local head
    loopback = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, **loopback})
    cluster.add_node(num_cpus=2, **loopback)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        serve.start(proxy_location="Disabled")
        yield [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


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
        app = http_engine(plan, replica, "unused", "unused", engine_cls=PlacementProbe)
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
