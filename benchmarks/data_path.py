"""What the gateway costs on the real CPU stack: vLLM's own benchmark client, direct to an engine's
own OpenAI server and through the gateway, on the same engine in the same run.

    .venv/bin/python benchmarks/data_path.py [--concurrency 1,8] [--num-requests 64] [--repeats 2]
        [--replica interactive] [--plan deploy/plans/cpu-demo.yaml]

The stack of the plan (the CPU demo by default): the gateway speaks HTTP to vLLM's own server
inside each replica. Direct and gateway runs alternate on the same engine.

Random 128 in / 64 out (vLLM's `random` dataset shape used across docs/benchmarks.md). Targets (issue 3): through the gateway, TTFT p50 <= 1.3x
and output tok/s >= 0.9x of direct, at concurrency 1 and 8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from deploy.demo_model import ensure_demo_model
from deploy.plan import ServingPlan, load_plan, shipped_plan
from deploy.stack import running_stack

from vllm_client import random_dataset, run_vllm_bench

TARGETS = {"median_ttft_ms": 1.3, "output_throughput": 0.9}  # gateway / direct
FIGURES = ["median_ttft_ms", "median_tpot_ms", "output_throughput"]


def medians(runs: list[dict]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in FIGURES}


def measure(plan: ServingPlan, args: argparse.Namespace, out: Path) -> dict:
    """{concurrency: {"direct": medians, "gateway": medians}} for one stack."""
    tokenizer = ensure_demo_model()
    figures: dict[int, dict[str, dict[str, float]]] = {}
    with running_stack(plan) as stack:
        gateway = stack.base_url.removesuffix("/v1")
        engine = (stack.replica_urls.get(args.replica) or "").removesuffix("/v1")
        header: dict[str, str] = {"X-Tandem-Class": plan.replica_for_name(args.replica).traffic_class}
        for concurrency in args.concurrency:
            runs: dict[str, list[dict]] = {"direct": [], "gateway": []}
            for repeat in range(args.repeats):
                order = ["direct", "gateway"] if repeat % 2 == 0 else ["gateway", "direct"]
                for target in order:
                    base, headers = (engine, None) if target == "direct" else (gateway, header)
                    dataset = random_dataset(args.input_len, args.output_len)
                    runs[target].append(
                        run_vllm_bench(
                            base, stack.model, tokenizer, concurrency, args.num_requests, dataset, out, headers
                        )
                    )
            figures[concurrency] = {name: medians(r) for name, r in runs.items() if r}
            print(f"  c={concurrency}: " + json.dumps(figures[concurrency]), flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=shipped_plan("cpu-demo"))
    parser.add_argument("--concurrency", default="1,8", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--replica", default="interactive", help="The replica whose engine is measured.")
    parser.add_argument("--json", type=Path, help="Write all figures here as JSON.")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="data-path-"))
    print(f"{args.plan}: starting the stack...", flush=True)
    results = measure(load_plan(args.plan), args, out)
    missed = 0
    print(
        f"\nrandom {args.input_len} in / {args.output_len} out, {args.num_requests} requests, "
        f"median of {args.repeats} repeats, replica {args.replica!r}"
    )
    print(f"{'c':>4}{'TTFT p50 ms':>14}{'direct':>9}{'ratio':>8}{'out tok/s':>12}{'direct':>9}{'ratio':>8}")
    for concurrency, figures in results.items():
        ours, ref = figures["gateway"], figures["direct"]
        ttft_ratio = ours["median_ttft_ms"] / ref["median_ttft_ms"]
        tput_ratio = ours["output_throughput"] / ref["output_throughput"]
        ok = ttft_ratio <= TARGETS["median_ttft_ms"] and tput_ratio >= TARGETS["output_throughput"]
        missed += not ok
        print(
            f"{concurrency:>4}{ours['median_ttft_ms']:>14.1f}{ref['median_ttft_ms']:>9.1f}"
            f"{ttft_ratio:>8.2f}{ours['output_throughput']:>12.1f}{ref['output_throughput']:>9.1f}"
            f"{tput_ratio:>8.2f}{'' if ok else '  <-- misses the target'}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
