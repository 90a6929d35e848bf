"""How fast can `tuner bench` itself go? Its ceiling against a fake upstream that answers at once.

The fake vLLM upstream (tests/fake_upstream.py, its own process, no token delay) stands in for
a server faster than any real one, so what limits the figures is the client (and, on a small
machine, the fake sharing the cores). Two shapes:

- requests/s: 1 output token per request, so the cost per request dominates;
- chunks/s: 256 output tokens (one SSE chunk each), so stream parsing dominates.

Baseline measured in the same run against the same upstream: vLLM's own benchmark client
(`vllm bench serve`, run through its module). Also printed: this client's CPU time per request
and per chunk (whole run: prompt building with the tokenizer, warm-up and measured phase), the
cost that would otherwise be taken from the server under test.

    .venv/bin/python benchmarks/bench_client_ceiling.py [--concurrency 1,16,64] [--num-requests 2000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy.demo_model import ensure_demo_model
from deploy.ports import free_port
from tuner.bench import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec, run_benchmark

from bench_vs_vllm import write_prompts
from vllm_client import custom_dataset, run_vllm_bench

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"requests/s": (16, 1), "chunks/s": (16, 256)}  # figure -> (input_len, output_len)


def fake_upstream(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port), "--model", "m"],
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    server.stdout.readline()  # "fake upstream serving ..." once it listens
    return server


def tandem(
    base: str, concurrency: int, shape: tuple[int, int], num_requests: int, tokenizer: Path
) -> tuple[float, float, float]:
    """(requests/s, chunks/s, client CPU seconds) of one tuner-bench run."""
    config = BenchConfig(
        endpoint=Endpoint(url=f"{base}/v1", model="m"),
        streams=[
            TrafficStream(
                workload=WorkloadSpec(input_len=shape[0], output_len=shape[1]), load=ClosedLoop(concurrency=concurrency)
            )
        ],
        bounds=Bounds(num_requests=num_requests, warmup_requests=concurrency),
        tokenizer=str(tokenizer),
    )
    cpu = time.process_time()
    metrics = run_benchmark(config).overall
    cpu = time.process_time() - cpu
    if metrics.failed:
        raise RuntimeError(f"errors against the fake upstream: {metrics.errors}")
    return metrics.request_throughput, metrics.output_throughput, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--num-requests", type=int, default=2000, help="per run for requests/s; a quarter for chunks/s")
    args = parser.parse_args()
    tokenizer = ensure_demo_model()  # both clients build prompts with the same tokenizer
    port = free_port()
    server = fake_upstream(port)
    base = f"http://127.0.0.1:{port}"
    out = Path(tempfile.mkdtemp(prefix="client-ceiling-"))
    try:
        for figure, shape in SHAPES.items():
            count = args.num_requests if shape[1] == 1 else max(args.num_requests // 4, 64)
            print(f"\n{figure} ({shape[0]} in / {shape[1]} out, {count} requests per run)")
            print(f"  {'conc':>5}{'vllm bench':>12}{'tuner bench':>13}{'ratio':>8}{'CPU/request':>14}{'CPU/chunk':>12}")
            prompts = write_prompts(WorkloadSpec(input_len=shape[0], output_len=shape[1]), count, tokenizer, out)
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                theirs = run_vllm_bench(
                    base, "m", tokenizer, concurrency, count, custom_dataset(prompts, shape[1]), out
                )
                requests_s, chunks_s, cpu = tandem(base, concurrency, shape, count, tokenizer)
                ours, baseline = (
                    (requests_s, theirs["request_throughput"])
                    if shape[1] == 1
                    else (chunks_s, theirs["output_throughput"])
                )
                print(
                    f"  {concurrency:>5}{baseline:>12,.0f}{ours:>13,.0f}{ours / baseline:>8.2f}"
                    f"{cpu / count * 1e3:>12.3f}ms{cpu / (count * shape[1]) * 1e6:>10.1f}us"
                )
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
