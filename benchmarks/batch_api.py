"""The Batch API's throughput on the real CPU stack against `tuner bench` sending the same requests
at the same concurrency, in the same run (issue 15's target: lines/s and output tok/s >= 0.95x).

    .venv/bin/python benchmarks/batch_api.py [--lines 2000] [--input-len 128] [--output-len 32]
        [--concurrency 64] [--repeats 1] [--interactive-users 2] [--json out.json]

One stack (deploy/plans/cpu-demo.yaml, its batch data in a temporary directory). Each run's requests
are made with tuner bench's own prompt factory (the demo tokenizer, exact prompt lengths): `tuner
bench` (Python API, chat API, batch class, closed loop at `--concurrency`, ignore_eos) sends them
as it always does; the Batch API gets the requests tuner bench makes for that seed as a JSONL file
(`max_completion_tokens`, `ignore_eos`), with `per_batch_concurrency` and `global_concurrency` set
to the same concurrency. Every run (and every phase below) has a seed of its own: the same shapes,
never the same prompts, since a prompt seen before hits vLLM's prefix cache and skips its prefill
(a first version of this script reused the prompts and measured the second run 1.8x faster).
The batch is timed from `batches.create` to `completed` as its user sees it (validation and the
output file included). Runs alternate (bench first on even repeats, batch first on odd ones).

With `--interactive-users N` (default 2; 0 skips it) a second phase measures what a batch does to
interactive users (chat, 128 in / 64 out, closed loop, `--interactive-requests` of them): alone,
beside the same batch submitted to the Batch API, and beside the same batch sent live by
`tuner bench` (batch class, same concurrency). The Batch API should cost interactive users no more
than live batch traffic does: its interactive TTFT and TPOT are printed as ratios to the live ones.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import orjson
from openai import OpenAI

from deploy.demo_model import ensure_demo_model
from deploy.plan import load_plan, shipped_plan
from deploy.stack import running_stack
from tuner.bench.config import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec
from tuner.bench.metrics import Metrics
from tuner.bench.prompts import PromptFactory, load_tokenizer
from tuner.bench.runner import run_benchmark

TARGET = 0.95
SEED = 15
_seeds = itertools.count(SEED)
END_STATES = ("completed", "failed", "expired", "cancelled")
INTERACTIVE = WorkloadSpec(input_len=128, output_len=64, ignore_eos=True)


def batch_file(workload: WorkloadSpec, lines: int, model: str, tokenizer: Path, seed: int) -> bytes:
    """The JSONL of the prompts `tuner bench` sends for this seed (stream 0), in its order."""
    prompts = PromptFactory(workload, seed=seed, stream=0, tokenizer=load_tokenizer(str(tokenizer)))
    out = io.BytesIO()
    for i in range(lines):
        prompt = prompts.next()
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt.text}],
            "max_completion_tokens": prompt.output_len,
            "ignore_eos": True,
        }
        line = {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        out.write(orjson.dumps(line) + b"\n")
    return out.getvalue()


def bench_metrics(
    url: str, model: str, workload: WorkloadSpec, traffic_class: str, concurrency: int, bounds: Bounds, tokenizer: Path
) -> Metrics:
    """One closed-loop `tuner bench` run of one class (chat API), prompts from a fresh seed."""
    stream = TrafficStream(traffic_class=traffic_class, workload=workload, load=ClosedLoop(concurrency=concurrency))
    config = BenchConfig(
        endpoint=Endpoint(url=url, model=model, api="chat"),
        streams=[stream],
        bounds=bounds,
        seed=next(_seeds),
        tokenizer=str(tokenizer),
    )
    return run_benchmark(config).overall


def run_bench(url: str, model: str, workload: WorkloadSpec, args: argparse.Namespace, tokenizer: Path) -> dict:
    metrics = bench_metrics(url, model, workload, "batch", args.concurrency, Bounds(num_requests=args.lines), tokenizer)
    return {
        "completed": metrics.completed,
        "lines_per_s": metrics.request_throughput,
        "output_tok_per_s": metrics.output_throughput,
    }


def wait_ended(client: OpenAI, batch_id: str) -> None:
    while client.batches.retrieve(batch_id).status not in END_STATES:
        time.sleep(0.5)


def run_batch(client: OpenAI, data: bytes) -> dict:
    """The batch from upload to completed; timed from `batches.create`."""
    file_id = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch").id
    started = time.perf_counter()
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_ended(client, batch.id)
    elapsed = time.perf_counter() - started
    batch = client.batches.retrieve(batch.id)
    if batch.status != "completed" or batch.request_counts is None or batch.usage is None:
        raise RuntimeError(f"batch ended {batch.status}: {batch}")
    return {
        "completed": batch.request_counts.completed,
        "failed": batch.request_counts.failed,
        "seconds": elapsed,
        "lines_per_s": batch.request_counts.completed / elapsed,
        "output_tok_per_s": batch.usage.output_tokens / elapsed,
    }


def interactive_figures(metrics: Metrics) -> dict:
    if metrics.ttft_ms is None or metrics.tpot_ms is None:
        raise RuntimeError("no interactive request completed")
    return {
        "completed": metrics.completed,
        "ttft_p50_ms": metrics.ttft_ms.median,
        "ttft_p99_ms": metrics.ttft_ms.p99,
        "tpot_p50_ms": metrics.tpot_ms.median,
    }


def interactive_phase(
    url: str, model: str, client: OpenAI, args: argparse.Namespace, tokenizer: Path
) -> dict[str, dict]:
    """Interactive figures alone, beside the Batch API, and beside live batch traffic."""
    bounds = Bounds(num_requests=args.interactive_requests)

    def interactive() -> dict:
        users = args.interactive_users
        return interactive_figures(bench_metrics(url, model, INTERACTIVE, "interactive", users, bounds, tokenizer))

    phases: dict[str, dict] = {"alone": interactive()}
    print(f"  interactive alone: {json.dumps(phases['alone'])}", flush=True)

    data = batch_file(args.workload, args.lines, model, tokenizer, next(_seeds))
    file_id = client.files.create(file=("beside.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    while client.batches.retrieve(batch.id).status == "validating":
        time.sleep(0.2)
    time.sleep(2.0)  # the batch is up to its concurrency
    started = time.perf_counter()
    phases["beside_batch_api"] = interactive()
    window = time.perf_counter() - started
    client.batches.cancel(batch.id)
    wait_ended(client, batch.id)
    print(f"  interactive beside the Batch API: {json.dumps(phases['beside_batch_api'])}", flush=True)

    live_bounds = Bounds(num_requests=args.lines, duration_s=window + 4.0)
    live = threading.Thread(
        target=bench_metrics,
        args=(url, model, args.workload, "batch", args.concurrency, live_bounds, tokenizer),
        daemon=True,
    )
    live.start()
    time.sleep(2.0)  # the live batch stream is up to its concurrency
    phases["beside_live_batch"] = interactive()
    live.join()
    print(f"  interactive beside live batch traffic: {json.dumps(phases['beside_live_batch'])}", flush=True)
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=64, help="tuner bench's and the batch's concurrency")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--interactive-users", type=int, default=2, help="0: skip the interactive phase")
    parser.add_argument("--interactive-requests", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tokenizer = ensure_demo_model()
    args.workload = WorkloadSpec(input_len=args.input_len, output_len=args.output_len, ignore_eos=True)
    plan = load_plan(shipped_plan("cpu-demo"))
    batches = plan.gateway.batches.model_copy(
        update={
            "data_dir": Path(tempfile.mkdtemp(prefix="batch-bench-")),
            "per_batch_concurrency": args.concurrency,
            "global_concurrency": args.concurrency,
        }
    )
    plan = plan.model_copy(update={"gateway": plan.gateway.model_copy(update={"batches": batches})})
    runs: dict[str, list[dict]] = {"bench": [], "batch": []}
    interactive: dict[str, dict] = {}
    with running_stack(plan) as stack:
        client = OpenAI(base_url=stack.base_url, api_key="unused", max_retries=2)
        for repeat in range(args.repeats):
            for name in ("bench", "batch") if repeat % 2 == 0 else ("batch", "bench"):
                if name == "bench":
                    result = run_bench(stack.base_url, stack.model, args.workload, args, tokenizer)
                else:
                    result = run_batch(
                        client, batch_file(args.workload, args.lines, stack.model, tokenizer, next(_seeds))
                    )
                runs[name].append(result)
                print(f"  repeat {repeat} {name}: {json.dumps(result)}", flush=True)
        if args.interactive_users:
            interactive = interactive_phase(stack.base_url, stack.model, client, args, tokenizer)
    ratios = {
        key: statistics.median(r[key] for r in runs["batch"]) / statistics.median(r[key] for r in runs["bench"])
        for key in ("lines_per_s", "output_tok_per_s")
    }
    shape = f"{args.lines} lines, c={args.concurrency}, {args.input_len} in / {args.output_len} out"
    print(f"\nBatch API / tuner bench, {shape}:")
    met = True
    for key, ratio in ratios.items():
        met &= ratio >= TARGET
        print(f"  {key}: {ratio:.3f}x  (target >= {TARGET}x: {'met' if ratio >= TARGET else 'MISSED'})")
    if interactive:
        api, live, alone = interactive["beside_batch_api"], interactive["beside_live_batch"], interactive["alone"]
        print(f"Interactive ({args.interactive_users} users), beside the Batch API / beside live batch (alone):")
        for key in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms"):
            print(
                f"  {key}: {api[key] / live[key]:.3f}x  ({api[key]:.1f} vs {live[key]:.1f} ms; alone {alone[key]:.1f})"
            )
    if args.json:
        saved = {k: v for k, v in vars(args).items() if k not in ("json", "workload")}
        report = {"args": saved, "runs": runs, "ratios": ratios, "interactive": interactive}
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
