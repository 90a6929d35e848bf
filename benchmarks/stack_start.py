"""The embedded CPU stack on this machine: how long `gateway up` takes to serve, and what the demo
model does through it, per replica, measured with `tuner bench`.

    .venv/bin/python benchmarks/stack_start.py [--concurrency 1,8,32] [--num-requests 64]

Prints the time from the start of Ray to the gateway's /ready, then output tok/s, TTFT p50 and
TPOT p50 for each replica (the class header pins the replica) at each concurrency, random
128 in / 64 out. The TP=2 and PP=2 engines are measured one after the other on the same two
cores, so each figure is one engine with the other idle.
"""

from __future__ import annotations

import argparse
import time

from deploy.demo_model import ensure_demo_model
from deploy.plan import load_plan, shipped_plan
from deploy.stack import running_stack
from tuner.bench import (
    BenchConfig,
    Bounds,
    ClosedLoop,
    Endpoint,
    LatencyStats,
    TrafficStream,
    WorkloadSpec,
    run_benchmark,
)


def _median(stats: LatencyStats | None) -> float:
    """A run that completed nothing has no latency: NaN in the table."""
    return stats.median if stats is not None else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--num-requests", type=int, default=64)
    args = parser.parse_args()
    plan = load_plan(shipped_plan("cpu-demo"))
    tokenizer = str(ensure_demo_model())
    started = time.perf_counter()
    with running_stack(plan) as stack:
        ready_s = time.perf_counter() - started
        print(f"gateway up -> /ready: {ready_s:.1f} s (Ray start, two engines, gateway)", flush=True)
        print(
            f"{'replica':<12}{'layout':<9}{'c':>4}{'out tok/s':>11}{'TTFT p50 ms':>13}{'TPOT p50 ms':>13}{'errors':>8}"
        )
        for replica in plan.replicas:
            for concurrency in args.concurrency:
                config = BenchConfig(
                    endpoint=Endpoint(url=stack.base_url, model=stack.model),
                    streams=[
                        TrafficStream(
                            traffic_class=replica.traffic_class,
                            workload=WorkloadSpec(input_len=128, output_len=64),
                            load=ClosedLoop(concurrency=concurrency),
                        )
                    ],
                    bounds=Bounds(num_requests=max(args.num_requests, 2 * concurrency), warmup_requests=concurrency),
                    tokenizer=tokenizer,
                )
                m = run_benchmark(config).overall
                print(
                    f"{replica.name:<12}{replica.layout:<9}{concurrency:>4}{m.output_throughput:>11.0f}"
                    f"{_median(m.ttft_ms):>13.1f}{_median(m.tpot_ms):>13.1f}{m.failed:>8}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
