"""Every policy on every scenario in the perf model's traffic simulation, over several seeds; and the
batch-yield trade-off (class-aware on the steady mix with gateway.contract.yielding.batch_yield swept).

The simulation routes with gateway.contract.router itself (tuner.perfmodel.simulate imports it), so the
policies measured here are the gateway's, byte for byte. The routing thresholds are the plan's
(scenarios.arbitration_off: arbitration off); only the policy name changes between runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

from deploy.plan import ServingPlan
from gateway.contract.config import BatchYieldSettings
from gateway.contract.router import POLICIES
from tuner.perfmodel.simulate import Scenario, SimResult, simulate
from tuner.policy_eval.report import PolicyResult, Sample, ScenarioResult, YieldPoint
from tuner.policy_eval.scenarios import DESCRIPTIONS, SCENARIOS, ScenarioName, arbitration_off, simulated_scenarios

ProgressFn = Callable[[str], None]


def sample_of(result: SimResult) -> Sample:
    interactive, batch = result.classes["interactive"], result.classes["batch"]
    return {
        "interactive_ttft_p50_ms": interactive.ttft_p50_ms,
        "interactive_ttft_p99_ms": interactive.ttft_p99_ms,
        "interactive_tpot_p50_ms": interactive.tpot_p50_ms,
        "batch_output_tok_s": batch.output_tok_s,
        "interactive_goodput_req_s": interactive.goodput_req_s,
        "batch_goodput_req_s": batch.goodput_req_s,
        "goodput_req_s": interactive.goodput_req_s + batch.goodput_req_s,
        "failed": float(interactive.failed + batch.failed + interactive.rejected + batch.rejected),
        "batch_held_fraction": result.batch_held_fraction,
        "interactive_replica_busy": result.class_busy_fraction.get("interactive"),
        "batch_replica_busy": result.class_busy_fraction.get("batch"),
    }


def run_setting(
    setting: str,
    plan: ServingPlan,
    scenarios: dict[ScenarioName, Scenario],
    seeds: int,
    *,
    policies: Sequence[str] = tuple(POLICIES),
    only: Sequence[ScenarioName] = SCENARIOS,
    progress: ProgressFn | None = None,
) -> list[ScenarioResult]:
    """Each scenario in `only`, under each policy, for seeds 0..seeds-1."""
    routing = arbitration_off(plan)
    results = []
    for name in only:
        outcomes = []
        for policy in policies:
            settings = routing.model_copy(update={"policy": policy})
            samples = [sample_of(simulate(scenarios[name], settings, seed)) for seed in range(seeds)]
            outcomes.append(PolicyResult(policy=policy, samples=samples))
            if progress:
                progress(f"{setting} {name} {policy}")
        results.append(
            ScenarioResult(setting=setting, scenario=name, description=DESCRIPTIONS[name], policies=outcomes)
        )
    return results


def run_simulated(
    plans: dict[str, ServingPlan],
    seeds: int,
    duration_s: float,
    *,
    contention_off: bool = True,
    yield_sweep: bool = True,
    progress: ProgressFn | None = None,
) -> tuple[list[ScenarioResult], dict[str, dict[str, object]], list[YieldPoint]]:
    """Every plan's five scenarios; and, with `contention_off`, the steady mix and its references
    again with co-residence contention turned off (the bound a perfect GPU partition would give).
    With `yield_sweep`, also the batch-yield trade-off (sweep.YIELD_POINTS) on each contended
    steady mix. Returns the results, per setting what was run (thresholds, SLOs, load sizes), and
    the sweep's points."""
    results: list[ScenarioResult] = []
    sweep: list[YieldPoint] = []
    described: dict[str, dict[str, object]] = {}
    for key, plan in plans.items():
        variants = [(f"simulated {key}", True)]
        if contention_off:
            variants.append((f"simulated {key}, no co-residence contention", False))
        for setting, co_resident in variants:
            scenarios = simulated_scenarios(plan, duration_s, co_resident=co_resident)
            only = SCENARIOS if co_resident else ("steady", "interactive-only", "batch-only")
            results += run_setting(setting, plan, scenarios, seeds, only=only, progress=progress)
            if co_resident and yield_sweep:
                sweep += run_yield_sweep(setting, plan, scenarios["steady"], seeds, progress)
            steady = scenarios["steady"]
            described[setting] = {
                "routing": arbitration_off(plan).model_dump(exclude={"policy"}),
                "slo": {c: s.model_dump() for c, s in steady.slo.items()},
                "interactive_users": steady.interactive.users,
                "think_time_s": steady.interactive.think_time_s,
                "interactive_shape": asdict(steady.interactive.shape),
                "batch_rate_per_s": round(steady.batch.rate_per_s, 3),
                "batch_shape": asdict(steady.batch.shape),
                "burst_size": scenarios["burst"].batch.burst_size,
                "co_resident": co_resident,
                "duration_s": duration_s,
                "seeds": seeds,
            }
    return results, described, sweep


# ---- the batch-yield trade-off --------------------------------------------------------------------------

YIELD_RELEASE_S = 10.0
YIELD_POINTS: tuple[tuple[float, float], ...] = (
    (1.0, 30.0),  # off: the policy as it was
    (0.5, 30.0),
    (0.25, 30.0),
    (0.0, 10.0),
    (0.0, 20.0),
    (0.0, 30.0),
    (0.0, 45.0),
    (0.0, 60.0),
    (0.0, 90.0),
    (0.0, 120.0),
)
"""(yielding.fraction, yielding.max_hold_s); release fixed at YIELD_RELEASE_S. A fraction
above 0 keeps the batch replica busy (so, time-sliced, the interactive one still runs at half
speed); at 0 the hold bound is the lever: a longer hold gives interactive more time alone."""


def run_yield_sweep(
    setting: str, plan: ServingPlan, steady: Scenario, seeds: int, progress: ProgressFn | None = None
) -> list[YieldPoint]:
    """Every YIELD_POINTS setting of the plan's class-aware routing on the steady mix, seeds 0..seeds-1."""
    routing = arbitration_off(plan).model_copy(update={"policy": "class-aware"})
    points = []
    for fraction, max_hold_s in YIELD_POINTS:
        yielding = BatchYieldSettings(
            fraction=fraction, max_hold_s=max_hold_s, release_s=YIELD_RELEASE_S, settle_s=routing.yielding.settle_s
        )
        settings = routing.replacing(yielding=yielding)
        samples = [sample_of(simulate(steady, settings, seed)) for seed in range(seeds)]
        points.append(
            YieldPoint(
                setting=setting,
                fraction=fraction,
                max_hold_s=max_hold_s,
                release_s=YIELD_RELEASE_S,
                result=PolicyResult(policy="class-aware", samples=samples),
            )
        )
        if progress:
            progress(f"{setting} yield {fraction:g} / hold {max_hold_s:g} s")
    return points
