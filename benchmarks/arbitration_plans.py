"""The arbitration study on each shipped co-resident plan: the mode and budgets the plans carry.

    .venv/bin/python benchmarks/arbitration_plans.py [--plans llama-3.1-8b.dgx-spark-pair ...]
        [--trials 24] [--seed 0] [--out benchmarks/results/arbitration-plans.json]

For each plan (default: every shipped plan of one model whose cluster has a performance-model hardware profile,
the Spark plans), the same study `tuner optimize` runs (tuner.optimize.arbitration_search: the
team of twenty beside the saturating batch load, simulated for SIM_DURATION_S, one seed), on the
plan as shipped: the chosen mode, its settings and its outcome as ratios against each class alone
in the same simulation, and the plan fields that carry it (gateway.routing's arbitration fields, the
batch engine's max_num_batched_tokens). The simulation times nothing: any machine gives the same
figures for the same seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from deploy.plan import SHIPPED_PLANS_DIR, ServingPlan, load_plan, shipped_plan
from tuner.optimize.arbitration_search import (
    SIM_DURATION_S,
    SimulatedJudge,
    arbitration_scenarios,
    tune_arbitration,
)
from tuner.perfmodel.hardware import load_hardware
from tuner.policy_eval.scenarios import arbitration_off

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "arbitration-plans.json"


def has_profile(plan: ServingPlan) -> bool:
    try:
        load_hardware(plan.cluster.name)
    except ValueError:
        return False
    return True


def studied(plan: ServingPlan) -> bool:
    """The study's plans: one model (its scenarios size one model's traffic) on a profiled cluster."""
    return len(plan.models) == 1 and has_profile(plan)


def study(name: str, trials: int, seed: int) -> dict[str, object]:
    plan = load_plan(shipped_plan(name))
    scenarios = arbitration_scenarios(plan, "team", "saturating", SIM_DURATION_S, plan.cluster.name)
    base = arbitration_off(plan)  # the plan's own choice (written from this study) never biases the next run
    judge = SimulatedJudge(scenarios, base, seed)
    storage = optuna.storages.InMemoryStorage()
    chosen, outcome, trial = tune_arbitration(f"{name}.arbitration", storage, judge, base, trials, seed)
    ran = optuna.load_study(study_name=f"{name}.arbitration", storage=storage).trials
    return {
        "plan": name,
        "trials": trials,
        "seed": seed,
        "chosen": chosen.label(),
        "found_by_trial": None if trial is None else trial.number,
        "routing": chosen.routing.model_dump(include={"yielding", "arbitration"}),
        "batch_max_num_batched_tokens": chosen.batch_tokens,
        "ttft_p99_vs_alone": outcome.ttft_p99,
        "tpot_p50_vs_alone": outcome.tpot_p50,
        "batch_vs_alone": outcome.batch_vs_alone,
        "batch_vs_floor": outcome.batch_vs_floor,
        "batch_step_p99_ms": outcome.batch_step_p99_ms,
        "meets_targets": outcome.meets_targets,
        "trials_run": [
            {"params": t.params, "ttft_p99_vs_alone": t.value, **t.user_attrs} for t in ran if t.value is not None
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--plans", nargs="+", help="shipped plan names (default: those of one model with a hardware profile)"
    )
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = args.plans or [
        p.name.removesuffix(".yaml") for p in sorted(SHIPPED_PLANS_DIR.glob("*.yaml")) if studied(load_plan(p))
    ]
    results = []
    for name in names:
        result = study(name, args.trials, args.seed)
        results.append(result)
        print(
            f"{name}: {result['chosen']}: TTFT p99 {result['ttft_p99_vs_alone']:.2f}x, "
            f"TPOT p50 {result['tpot_p50_vs_alone']:.2f}x, batch {result['batch_vs_floor']:.2f}x its floor",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
