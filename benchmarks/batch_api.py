"""The Batch API's throughput on the real CPU stack against `tuner bench` sending the same requests
at the same concurrency, in the same run (issue 15's target: lines/s and output tok/s >= 0.95x).

    .venv/bin/python benchmarks/batch_api.py [--lines 2000] [--input-len 128] [--output-len 32]
        [--concurrency 64] [--repeats 1] [--json out.json]

One stack (deploy/plans/cpu-demo.yaml, its batch data in a temporary directory). The requests are
made once, with tuner bench's own prompt factory (the demo tokenizer, exact prompt lengths, fixed
seed, stream 0): `tuner bench` (Python API, chat API, batch class, closed loop at `--concurrency`,
ignore_eos) sends them; the Batch API gets the same ones as a JSONL file (`max_completion_tokens`,
`ignore_eos`), with `per_batch_concurrency` and `global_concurrency` set to the same concurrency.
The batch is timed from `batches.create` to `completed` as its user sees it (validation and the
output file included). Runs alternate (bench first on even repeats, batch first on odd ones).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from openai import OpenAI

from deploy.demo_model import ensure_demo_model
from deploy.plan import load_plan, shipped_plan
from deploy.stack import running_stack
from tuner.bench.config import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec
from tuner.bench.prompts import PromptFactory, load_tokenizer
from tuner.bench.runner import run_benchmark

TARGET = 0.95
SEED = 15


def batch_file(workload: WorkloadSpec, lines: int, model: str, tokenizer: Path) -> bytes:
    """The JSONL of the prompts `tuner bench` sends for this seed (stream 0), in its order."""
    prompts = PromptFactory(workload, seed=SEED, stream=0, tokenizer=load_tokenizer(str(tokenizer)))
    out = io.BytesIO()
    for i in range(lines):
        prompt = prompts.next()
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt.text}],
            "max_completion_tokens": prompt.output_len,
            "ignore_eos": True,
        }
        out.write(
            orjson.dumps({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
        out.write(b"\n")
    return out.getvalue()


def run_bench(url: str, model: str, workload: WorkloadSpec, args: argparse.Namespace, tokenizer: Path) -> dict:
    config = BenchConfig(
        endpoint=Endpoint(url=url, model=model, api="chat"),
        streams=[
            TrafficStream(traffic_class="batch", workload=workload, load=ClosedLoop(concurrency=args.concurrency))
        ],
        bounds=Bounds(num_requests=args.lines),
        seed=SEED,
        tokenizer=str(tokenizer),
    )
    metrics = run_benchmark(config).overall
    return {
        "completed": metrics.completed,
        "lines_per_s": metrics.request_throughput,
        "output_tok_per_s": metrics.output_throughput,
    }


def run_batch(client: OpenAI, data: bytes) -> dict:
    file_id = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch").id
    started = time.perf_counter()
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    elapsed = time.perf_counter() - started
    if batch.status != "completed" or batch.request_counts is None or batch.usage is None:
        raise RuntimeError(f"batch ended {batch.status}: {batch}")
    return {
        "completed": batch.request_counts.completed,
        "failed": batch.request_counts.failed,
        "seconds": elapsed,
        "lines_per_s": batch.request_counts.completed / elapsed,
        "output_tok_per_s": batch.usage.output_tokens / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=64, help="tuner bench's and the batch's concurrency")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tokenizer = ensure_demo_model()
    workload = WorkloadSpec(input_len=args.input_len, output_len=args.output_len, ignore_eos=True)
    data_dir = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    plan = load_plan(shipped_plan("cpu-demo"))
    batches = plan.gateway.batches.model_copy(
        update={"data_dir": data_dir, "per_batch_concurrency": args.concurrency, "global_concurrency": args.concurrency}
    )
    plan = plan.model_copy(update={"gateway": plan.gateway.model_copy(update={"batches": batches})})
    runs: dict[str, list[dict]] = {"bench": [], "batch": []}
    with running_stack(plan) as stack:
        data = batch_file(workload, args.lines, stack.model, tokenizer)
        client = OpenAI(base_url=stack.base_url, api_key="unused", max_retries=2)
        for repeat in range(args.repeats):
            for name in ("bench", "batch") if repeat % 2 == 0 else ("batch", "bench"):
                result = (
                    run_bench(stack.base_url, stack.model, workload, args, tokenizer)
                    if name == "bench"
                    else run_batch(client, data)
                )
                runs[name].append(result)
                print(f"  repeat {repeat} {name}: {json.dumps(result)}", flush=True)
    summary = {
        key: statistics.median(r[key] for r in runs["batch"]) / statistics.median(r[key] for r in runs["bench"])
        for key in ("lines_per_s", "output_tok_per_s")
    }
    print(
        f"\nBatch API / tuner bench, {args.lines} lines, c={args.concurrency}, {args.input_len} in / {args.output_len} out:"
    )
    met = True
    for key, ratio in summary.items():
        ok = ratio >= TARGET
        met &= ok
        print(f"  {key}: {ratio:.3f}x  (target >= {TARGET}x: {'met' if ok else 'MISSED'})")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs, "ratios": summary}, indent=2)
        )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
