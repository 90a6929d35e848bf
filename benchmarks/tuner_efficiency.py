"""How many trials `tuner optimize` needs, against grid and random search, on the performance model.

On the performance model the exhaustive optimum is cheap: every point of the batch class's
search space is priced, and the best one meeting the SLOs is the target. Then each search
strategy runs the same trial function (`ClassStudy.run_trial`: memory pre-check, SLO
constraints, infeasible points pruned) over several seeds, and we count the trials until the
best feasible figure is within 2% of that optimum:

- tpe: the sampler `tuner optimize` uses (`make_sampler`: multivariate TPE, 8 random start-up trials);
- random: Optuna's RandomSampler over the same space;
- grid: a coarse Cartesian sweep (3 values per numeric knob, every layout, chunking on/off) in a
  seeded random order, as sweep tools run it. A grid that never gets within 2% is reported as such.

    .venv/bin/python benchmarks/tuner_efficiency.py [--seeds 10] [--budget 150]

Pure computation (no engines): no heavy lock needed, but figures are trial counts, not seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import optuna

from tuner.optimize.evaluators import ModelEvaluator, measurement_from_prediction
from tuner.optimize.objectives import ClassObjective
from tuner.optimize.runner import search_spaces
from tuner.optimize.space import SearchSpace
from tuner.optimize.study import ClassStudy, make_sampler
from tuner.optimize.targets import resolve_model_choice, resolve_target
from tuner.perfmodel import load_hardware
from tuner.workloads import get_workload

PROBLEMS = (
    # (model, workload, batch concurrency); default batch SLOs (TPOT p99 <= 200 ms, TTFT p99 <= 10 s).
    ("llama-3.1-8b", "prefill-heavy", 128),  # 1.2% of the points are within 2% of the optimum
    ("gpt-oss-120b", "equal", 64),  # 19%: an easy one
    ("gpt-oss-20b", "prefill-heavy", 256),  # 1.0%
)
WITHIN = 0.02


def exhaustive_best(space: SearchSpace, objective: ClassObjective, predictor: ModelEvaluator) -> float:
    best = 0.0
    for candidate in space.candidates():
        prediction = predictor.predict(candidate, objective.concurrency)
        if not prediction.fits:
            continue
        measured = measurement_from_prediction(prediction)
        if all(c <= 0 for c in objective.constraints(measured).values()):
            best = max(best, measured.output_tok_s)
    return best


def trials_to_target(study_parts: ClassStudy, target: float, budget: int) -> int | None:
    """Run trials one by one until the best feasible value reaches `target`; None if never."""
    study = study_parts.study
    for number in range(1, budget + 1):
        study.optimize(study_parts.run_trial, n_trials=1)
        feasible = [
            t.values[0]
            for t in study.get_trials(deepcopy=False)
            if t.values and all(c <= 0 for c in t.constraints.values())
        ]
        if feasible and max(feasible) >= target:
            return number
        if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
            return None
    return None


def sampler_for(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return make_sampler(seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler(space.grid(3), seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    target_cluster = resolve_target("dgx-spark-pair")
    hardware = load_hardware("dgx-spark-pair")
    rows = []
    for model_name, workload, concurrency in PROBLEMS:
        model = resolve_model_choice(model_name)
        template = target_cluster.template_plan(model)
        predictor = ModelEvaluator(model.architecture, hardware, get_workload(workload))
        space = search_spaces(target_cluster, template, predictor, model)["batch"]
        objective = ClassObjective.batch(concurrency)
        started = time.perf_counter()
        optimum = exhaustive_best(space, objective, predictor)
        exhaustive_s = time.perf_counter() - started
        result: dict[str, Any] = {"model": model_name, "workload": workload, "concurrency": concurrency, "space_size": space.size(),
                  "exhaustive_s": round(exhaustive_s, 1), "optimum_tok_s": round(optimum, 1), "samplers": {}}  # fmt: skip
        for name in ("tpe", "random", "grid"):
            counts = []
            for seed in range(args.seeds):
                study = optuna.create_study(direction="maximize", sampler=sampler_for(name, space, seed))
                parts = ClassStudy(study, space, objective, template, predictor, predictor)
                counts.append(trials_to_target(parts, (1 - WITHIN) * optimum, args.budget))
            reached = [c for c in counts if c is not None]
            # Seeds that never got there count as past the budget: the median stays honest.
            median = statistics.median(c if c is not None else math.inf for c in counts)
            result["samplers"][name] = {
                "trials": counts,
                "reached": f"{len(reached)}/{len(counts)}",
                "median": None if math.isinf(median) else median,
                "mean_of_reached": round(statistics.mean(reached), 1) if reached else None,
            }
        rows.append(result)
        tpe = result["samplers"]["tpe"]
        print(f"\n{model_name} / {workload} / batch c={concurrency}: {space.size():,} points, "
              f"optimum {optimum:,.1f} tok/s (exhaustive: {exhaustive_s:.1f} s)")  # fmt: skip
        print(f"{'sampler':8} {'reached':>8} {'median':>7} {'mean*':>6} {'vs tpe (median)':>16}  trials per seed")
        for name, figures in result["samplers"].items():
            ratio = f"x{figures['median'] / tpe['median']:.1f}" if figures["median"] and tpe["median"] else "n/a"
            shown = figures["median"] if figures["median"] is not None else f">{args.budget}"
            print(
                f"{name:8} {figures['reached']:>8} {shown!s:>7} {figures['mean_of_reached']!s:>6} {ratio:>16}  {figures['trials']}"
            )
    print(
        f"\nmedian: trials until within {WITHIN:.0%} of the exhaustive optimum (a seed that never got there counts as "
        f"past the budget of {args.budget}); mean*: over the seeds that got there"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
