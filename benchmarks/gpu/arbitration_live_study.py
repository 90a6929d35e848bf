"""The arbitration study scored live on a running stack whose replicas share one GPU (issue 23).

    PYTHONPATH=$PWD python benchmarks/gpu/arbitration_live_study.py --out $OUT/arbitration-live-study.json \\
        [--url http://127.0.0.1:8000/v1] [--model llama-3.1-8b-dummy] [--trials 6] [--duration 40] \\
        [--users 4] [--think 1.0] [--batch-streams 64]

What `tuner optimize --arbitration-live-url` runs (tuner/optimize/arbitration_live.py), without the
per-class studies around it: the references (the chat load alone, the batch load alone, arbitration
off), then --trials points of the study (the first "off"), each with the routing switched through
PUT /admin/routing and the chat load beside the batch load for --duration seconds, and the point kept
scored again. The routing in force is restored at the end. The engines never restart: the step
budget is the one the stack started with. About (trials + 3) x duration seconds.

The study's own chat load (twenty users thinking 120 s) needs minutes a phase for a p99; this takes
a denser one by default (--users thinking --think s) so that a phase of 40 s holds a few hundred
chats on an H100 (TTFT 14 ms, TPOT 6 ms alone). The batch load is --batch-streams closed-loop
streams of the study's batch shape (prefill-heavy).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import optuna

from tuner.optimize.arbitration_live import LiveJudge, LiveLoads
from tuner.optimize.arbitration_search import CHAT_LOADS, tune_arbitration
from tuner.policy_eval.scenarios import without_arbitration
from tuner.workloads import get_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1", help="the gateway's OpenAI base URL")
    parser.add_argument("--model", default="llama-3.1-8b-dummy", help="the model name the gateway serves")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds per measured phase")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--think", type=float, default=1.0)
    parser.add_argument("--batch-streams", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loads = LiveLoads(
        chat_users=args.users,
        think_time_s=args.think,
        chat_shape=CHAT_LOADS["team"].shape,
        batch_streams=args.batch_streams,
        batch_shape=get_workload("prefill-heavy"),
    )
    storage = optuna.storages.InMemoryStorage()
    with LiveJudge(args.url, args.model, loads, duration_s=args.duration, seed=args.seed) as judge:
        base = without_arbitration(judge.routing())
        kept, outcome, trial = tune_arbitration("live", storage, judge, base, args.trials, args.seed)
    ran = [
        {"params": t.params, "ttft_p99_vs_alone": t.value, **t.user_attrs}
        for t in optuna.load_study(study_name="live", storage=storage).trials
        if t.value is not None
    ]
    report = {
        "machine": platform.node(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "chosen": kept.label(),
        "found_by_trial": None if trial is None else trial.number,
        "outcome": vars(outcome),
        "meets_targets": outcome.meets_targets,
        "trials": ran,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for t in ran:
        print(
            f"{t['params']}: TTFT p99 {t['ttft_p99_vs_alone']:.2f}x, TPOT p50 {t['tpot_p50_vs_alone']:.2f}x, "
            f"batch {t['batch_vs_floor']:.2f}x its floor"
        )
    print(f"chosen: {kept.label()} (meets the targets: {outcome.meets_targets}); results: {args.out}")


if __name__ == "__main__":
    main()
