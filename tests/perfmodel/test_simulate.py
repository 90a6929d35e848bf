"""The traffic simulation: seeded, bounded, routed by gateway.contract.router, and able to lose a replica."""

from __future__ import annotations

from gateway.contract.config import RoutingSettings
from tuner.perfmodel.simulate import BatchLoad, ClassSLO, InteractiveLoad, ReplicaFailure, Scenario, simulate

SHORT = Scenario(
    duration_s=120, interactive=InteractiveLoad(users=6, think_time_s=1.0), batch=BatchLoad(rate_per_s=0.3)
)


def test_same_seed_same_result_and_other_seed_differs() -> None:
    first = simulate(SHORT, seed=3)
    assert simulate(SHORT, seed=3) == first
    assert simulate(SHORT, seed=4) != first
    assert first.classes["interactive"].completed > 0 and first.classes["batch"].completed > 0


def test_the_gateway_policy_decides_where_requests_run() -> None:
    pinned = simulate(SHORT, RoutingSettings(policy="all-interactive"), seed=1)
    spread = simulate(SHORT, RoutingSettings(policy="round-robin"), seed=1)
    assert pinned.replica_busy_fraction["batch"] == 0.0
    assert spread.replica_busy_fraction["batch"] > 0.3
    assert pinned.policy == "all-interactive"


def test_a_failed_replica_loses_its_requests_and_traffic_moves_to_the_other() -> None:
    failing = SHORT.model_copy(update={"failures": (ReplicaFailure(replica="interactive", at_s=40),)})
    result = simulate(failing, RoutingSettings(policy="class-aware"), seed=1)
    healthy = simulate(SHORT, RoutingSettings(policy="class-aware"), seed=1)
    interactive = result.classes["interactive"]
    assert interactive.failed > 0
    # Two thirds of the run without its own replica: interactive users are still served, by the batch replica.
    assert interactive.completed > healthy.classes["interactive"].completed * 0.4
    assert result.replica_busy_fraction["interactive"] < 0.4


def test_goodput_counts_only_requests_within_slo() -> None:
    impossible = ClassSLO(ttft_ms=1, tpot_ms=1)
    strict = SHORT.model_copy(update={"slo": {"interactive": impossible, "batch": impossible}})
    result = simulate(strict, seed=2)
    assert all(c.goodput_req_s == 0 for c in result.classes.values())
    assert simulate(SHORT, seed=2).classes["batch"].goodput_req_s > 0


def _batch_engine(scenario: Scenario, **update: object) -> Scenario:
    """`scenario` with its batch replica's step budget (`tokens`) or per-request prefill cap set."""
    replicas = []
    for r in scenario.replicas:
        if r.traffic_class == "batch":
            tokens = update.pop("tokens", None)
            if tokens is not None:
                r = r.model_copy(update={"settings": r.settings.model_copy(update={"max_num_batched_tokens": tokens})})
            r = r.model_copy(update=update)
        replicas.append(r)
    return scenario.model_copy(update={"replicas": tuple(replicas)})


def test_the_batch_step_budget_and_the_prefill_cap_shorten_the_steps_a_freeze_waits_for() -> None:
    """The bounded step (docs/routing.md): the batch cycles the simulation runs follow the engine's
    token budget, and its per-request prefill cap."""
    freeze = RoutingSettings(gpu_arbitration="freeze")
    wide = simulate(_batch_engine(SHORT, tokens=16384), freeze, seed=2)
    narrow = simulate(_batch_engine(SHORT, tokens=512), freeze, seed=2)
    capped = simulate(_batch_engine(SHORT, tokens=16384, long_prefill_token_threshold=256), freeze, seed=2)
    assert wide.batch_step_p99_ms is not None and narrow.batch_step_p99_ms is not None
    assert narrow.batch_step_p99_ms < wide.batch_step_p99_ms  # same seed: equal if the budget were ignored
    assert capped.batch_step_p99_ms is not None and capped.batch_step_p99_ms < wide.batch_step_p99_ms


def test_a_running_cap_steps_fewer_batch_sequences_while_batch_yields_and_only_then() -> None:
    """SimReplica.held_running (docs/routing.md, running cap): while the batch yield holds, the batch
    engine steps at most that many of its sequences; the others wait, none is lost."""
    busy = SHORT.model_copy(update={"batch": BatchLoad(rate_per_s=0.3, burst_size=64, burst_every_s=30)})
    yielding = RoutingSettings(batch_yield_fraction=0.5, batch_yield_settle_s=30, batch_yield_max_hold_s=3600)
    free = simulate(busy, yielding, seed=3)
    held = simulate(_batch_engine(busy, held_running=4), yielding, seed=3)
    assert held.batch_step_p50_ms is not None and free.batch_step_p50_ms is not None
    assert held.batch_step_p50_ms < free.batch_step_p50_ms
    assert held.classes["batch"].completed > 0 and held.classes["batch"].failed == 0
    off = RoutingSettings()  # no yield, so no hold: the cap never applies
    assert simulate(_batch_engine(busy, held_running=4), off, seed=3) == simulate(busy, off, seed=3)
