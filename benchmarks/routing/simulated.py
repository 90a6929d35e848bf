"""Every policy on every scenario in the perf model's traffic simulation, over several seeds.

The simulation routes with gateway.policy itself (tuner.perfmodel.simulate imports it), so the
policies measured here are the gateway's, byte for byte. The routing thresholds are the plan's
(scenarios.plan_routing); only the policy name changes between runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

from benchmarks.routing.report import PolicyResult, Sample, ScenarioResult
from benchmarks.routing.scenarios import DESCRIPTIONS, SCENARIOS, ScenarioName, plan_routing, simulated_scenarios
from deploy.plan import ServingPlan
from gateway.policy import POLICIES
from tuner.perfmodel.simulate import Scenario, SimResult, simulate

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
    routing = plan_routing(plan)
    results = []
    for name in only:
        outcomes = []
        for policy in policies:
            settings = routing.model_copy(update={"policy": policy})
            samples = [sample_of(simulate(scenarios[name], settings, seed)) for seed in range(seeds)]
            outcomes.append(PolicyResult(policy=policy, samples=samples))
            if progress:
                progress(f"{setting} {name} {policy}")
        results.append(ScenarioResult(setting=setting, scenario=name, description=DESCRIPTIONS[name], policies=outcomes))
    return results


def run_simulated(
    plans: dict[str, ServingPlan],
    seeds: int,
    duration_s: float,
    *,
    contention_off: bool = True,
    progress: ProgressFn | None = None,
) -> tuple[list[ScenarioResult], dict[str, dict[str, object]]]:
    """Every plan's five scenarios; and, with `contention_off`, the steady mix and its references
    again with co-residence contention turned off (the bound a perfect GPU partition would give).
    Returns the results and, per setting, what was run (thresholds, SLOs, load sizes)."""
    results: list[ScenarioResult] = []
    described: dict[str, dict[str, object]] = {}
    for key, plan in plans.items():
        variants = [(f"simulated {key}", True)]
        if contention_off:
            variants.append((f"simulated {key}, no co-residence contention", False))
        for setting, co_resident in variants:
            scenarios = simulated_scenarios(plan, duration_s, co_resident=co_resident)
            only = SCENARIOS if co_resident else ("steady", "interactive-only", "batch-only")
            results += run_setting(setting, plan, scenarios, seeds, only=only, progress=progress)
            steady = scenarios["steady"]
            described[setting] = {
                "routing": plan_routing(plan).model_dump(exclude={"policy"}),
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
    return results, described
