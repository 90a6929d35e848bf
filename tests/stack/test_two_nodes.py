"""The Spark pair's path on two Ray nodes of this machine (`gateway deploy --address`, each replica
holding one bundle on each node): where Ray put every replica, and the freeze, as on one node.
Chat, completions, the Responses API and errors on this stack are the contract tests'
`stack-two-nodes` endpoint (tests/gateway)."""

from __future__ import annotations

from typing import Any

import pytest
from test_freeze import (  # the same freeze test, here on the two-node stack  # noqa: F401
    batch_root,
    client,
    test_an_interactive_request_in_a_batch_flood_freezes_the_batch_engine_and_releases_it,
)

pytestmark = pytest.mark.stack


@pytest.fixture
def cpu_stack(two_node_stack: Any) -> Any:
    """test_freeze's stack, here the two-node one."""
    return two_node_stack


def test_each_replica_holds_a_bundle_on_each_node_and_the_gateway_is_on_the_head(two_node_stack: Any) -> None:
    import ray
    from ray._private.state import actors as actor_table  # from the GCS: the state API needs Ray's dashboard

    from deploy.builder import APP_NAME
    from deploy.stack import ray_on_loopback_only

    address = (two_node_stack.log.read_text().split("--address ", 1)[1]).split()[0]
    ray_on_loopback_only()  # both nodes registered on 127.0.0.1
    ray.init(address=address, namespace="tandem", log_to_driver=False)
    try:
        nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
        head = next(node for node, info in nodes.items() if "node:__internal_head__" in info["Resources"])
        groups = [g for g in ray.util.placement_group_table().values() if g["state"] == "CREATED"]
        actors = {a["ActorClassName"]: a for a in actor_table(actor_state_name="ALIVE").values()}
    finally:
        ray.shutdown()
    assert len(nodes) == 2
    spread = [g for g in groups if g["strategy"] == "STRICT_SPREAD"]
    assert len(spread) == 2, groups  # one placement group per replica
    for group in spread:
        assert sorted(group["bundles_to_node_id"].values()) == sorted(nodes), group  # one bundle on each node
    gateway = next(a for name, a in actors.items() if name and name.startswith(f"ServeReplica:{APP_NAME}:gateway"))
    assert gateway["Address"]["NodeID"] == head
