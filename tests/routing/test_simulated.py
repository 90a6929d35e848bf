"""The simulated grid: every policy on the plan-sized scenarios, seeded, in seconds."""

from __future__ import annotations

from deploy.plan import load_plan, shipped_plan
from tuner.policy_eval.scenarios import SCENARIOS, plan_routing, simulated_scenarios
from tuner.policy_eval.simulated import YIELD_POINTS, run_setting, run_yield_sweep

PLAN = load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair"))


def test_scenarios_are_sized_from_the_plan() -> None:
    scenarios = simulated_scenarios(PLAN, 60)
    assert set(scenarios) == set(SCENARIOS)
    assert scenarios["steady"].interactive.users == 8  # half the interactive replica's 16 slots
    assert scenarios["burst"].batch.burst_size == 256 and scenarios["burst"].batch.burst_start_s == 20
    assert scenarios["interactive-only"].batch.rate_per_s == 0 and scenarios["batch-only"].interactive.users == 0
    assert scenarios["failure"].failures[0].replica == "interactive"
    batch = next(r for r in scenarios["steady"].replicas if r.traffic_class == "batch")
    assert batch.settings.max_num_seqs == 256 and batch.layout.pp == 2


def test_every_policy_runs_with_the_plan_thresholds_and_replays_by_seed() -> None:
    scenarios = {name: s.model_copy(update={"duration_s": 120}) for name, s in simulated_scenarios(PLAN, 120).items()}
    results = run_setting(
        "sim", PLAN, scenarios, seeds=2, policies=("class-aware", "all-batch"), only=("steady", "failure")
    )
    assert [r.scenario for r in results] == ["steady", "failure"]
    steady = results[0]
    assert [p.policy for p in steady.policies] == ["class-aware", "all-batch"]
    ours = steady.policy("class-aware")
    assert ours is not None and len(ours.samples) == 2
    assert ours.samples[0] != ours.samples[1]
    assert ours.estimate("interactive_ttft_p99_ms").mean is not None
    assert ours.estimate("batch_output_tok_s").mean > 0
    again = run_setting("sim", PLAN, scenarios, seeds=2, policies=("class-aware",), only=("steady",))
    assert again[0].policies[0].samples == ours.samples
    failure = results[1].policy("class-aware")
    assert failure is not None and failure.estimate("failed").mean > 0
    assert plan_routing(PLAN).spill.target_headroom == 32


def test_the_yield_sweep_runs_every_point_of_the_lever() -> None:
    steady = simulated_scenarios(PLAN, 60)["steady"]
    points = run_yield_sweep("sim", PLAN, steady, seeds=1)
    assert [(p.fraction, p.max_hold_s) for p in points] == list(YIELD_POINTS)
    off, longest = points[0], points[-1]
    assert off.fraction == 1.0 and off.result.estimate("batch_held_fraction").mean == 0.0
    assert longest.result.estimate("batch_held_fraction").mean > 0.5
    assert longest.result.estimate("interactive_replica_busy").mean > 0.9  # the users keep it busy
