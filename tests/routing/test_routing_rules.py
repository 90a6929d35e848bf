"""The routing thresholds each plan ships with, derived from its replicas' batch sizes."""

from __future__ import annotations

import pytest

from deploy.plan import load_plan, shipped_plan
from gateway.contract.config import RoutingSettings
from gateway.contract.policy import ReplicaLoad, RequestFeatures
from gateway.contract.router import PolicyState, route
from gateway.contract.routing_rules import routing_for, routing_for_replicas
from tuner.policy_eval.scenarios import plan_routing


def test_thresholds_scale_with_the_replicas_batch_sizes() -> None:
    small, large = routing_for(8, 32), routing_for(64, 512)
    assert small.spill.queue_threshold == 2 and large.spill.queue_threshold == 16
    assert large.spill.target_headroom == 64 and small.spill.target_headroom == 4
    assert small.spill.release_threshold < small.spill.queue_threshold
    # Interactive may run its own replica's slots plus what it may spill; batch its own plus the borrowed ones.
    assert large.limits["interactive"].max_concurrency == 64 + 64
    assert large.limits["batch"].max_concurrency == 512 + 64
    assert large.limits["batch"].max_queue == 8 * (512 + 64)


def test_batch_admission_leaves_no_room_to_borrow_when_borrowing_is_off() -> None:
    no_borrow = routing_for(16, 64, RoutingSettings(batch_borrows_idle_interactive=False, policy="round-robin"))
    assert no_borrow.limits["batch"].max_concurrency == 64
    assert no_borrow.policy == "round-robin"  # what the rule does not set is kept


def test_the_derived_settings_are_valid_and_keep_priorities() -> None:
    base = RoutingSettings()
    derived = routing_for(1, 1)
    RoutingSettings.model_validate(derived.model_dump())  # hysteresis ordered, policy known
    assert derived.limits["batch"].priority == base.limits["batch"].priority


def test_each_shipped_plan_gets_its_own_rule() -> None:
    spark = plan_routing(load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair")))
    cpu = plan_routing(load_plan(shipped_plan("cpu-demo")))
    assert spark.limits["batch"].max_concurrency == 256 + 16
    assert cpu.limits["batch"].max_concurrency == 64 + 16
    assert spark != cpu


def test_a_plan_without_both_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="batch"):
        routing_for_replicas([("interactive", 16), ("interactive", 32)])


def test_spilling_starts_at_the_derived_threshold() -> None:
    settings = routing_for(16, 128)
    batch = ReplicaLoad(name="batch", traffic_class="batch", max_num_seqs=128)
    chat = RequestFeatures(endpoint="chat", stream=True)

    def to(queue: int) -> str:
        interactive = ReplicaLoad(
            name="interactive", traffic_class="interactive", in_flight=16 + queue, max_num_seqs=16
        )
        decision, _ = route(chat, "interactive", [interactive, batch], settings, PolicyState())
        return decision.replica

    assert to(settings.spill.queue_threshold - 1) == "interactive"
    assert to(settings.spill.queue_threshold) == "batch"


def test_the_rule_keeps_batch_yielding_off_and_a_plan_that_sets_it_keeps_it() -> None:
    """The rule's choice from the simulated trade-off (docs/routing.md): no hold beat "off" on
    goodput for either Spark plan, so the rule adds no yielding; a plan that asks for it keeps it,
    as the bounded-step plans do for their batch cap beside the freeze."""
    assert routing_for(16, 128).yielding.fraction == 1.0
    for name in ("gpt-oss-120b.dgx-spark-pair", "cpu-demo"):  # no cap of their own
        assert plan_routing(load_plan(shipped_plan(name))).yielding.fraction == 1.0
    bounded = plan_routing(load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair")))
    assert (bounded.arbitration.mode, bounded.yielding.fraction) == ("freeze", 0.25)
    held = routing_for(16, 128, RoutingSettings(batch_yield_fraction=0.0, batch_yield_max_hold_s=45.0))
    assert (held.yielding.fraction, held.yielding.max_hold_s) == (0.0, 45.0)
