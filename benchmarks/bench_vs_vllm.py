"""Does `tuner bench` measure what vLLM's own `vllm bench serve` measures?

Against a vLLM OpenAI server (a running one at --url, e.g. an engine of a GPU stack; or, without
--url, one this script starts on the demo model), for each concurrency runs vLLM's benchmark
client (`vllm bench serve`, in a subprocess through its module: benchmarks/vllm_client.py) and
`tuner bench` (in this process) with the same request shape, count and concurrency, alternating
which goes first on each repeat. Prints output tok/s, median TTFT and median TPOT (and more) side
by side with tandem/vLLM ratios of the medians over repeats; within 5% is agreement. --out keeps
every run and the verdict as JSON.

Prompts: every run gets prompts of its own (tuner bench's random-token prompts, seed = run
number; vLLM's client is handed the same kind as its `custom` dataset), so no run is served from
the prefix cache a previous run filled (vLLM caches prefixes by default); the two clients' prompt
sets are drawn the same way, exact in length with the tokenizer. The metric definitions
themselves are compared exactly, on recorded vLLM streams, in tests/bench/test_vllm_definitions.py.

    # this machine: starts vLLM's CPU server on the demo model
    .venv/bin/python benchmarks/bench_vs_vllm.py --concurrency 4 --num-requests 32 --repeats 2
    # a running server (GPU box), the demo tokenizer by default
    python benchmarks/bench_vs_vllm.py --url http://127.0.0.1:8100 --model llama-3.1-8b-dummy \
        --concurrency 1,8,32 --num-requests 200 --input-len 1024 --output-len 256 --out $OUT/bench-vs-vllm.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from deploy.demo_model import ensure_demo_model
from deploy.ports import free_port
from tuner.bench import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec, run_benchmark
from tuner.bench.client import served_models
from tuner.bench.prompts import PromptFactory, load_tokenizer

from vllm_client import custom_dataset, run_vllm_bench

FIGURES = {  # name -> (vLLM result key, tuner-bench Metrics accessor)
    "output tok/s": ("output_throughput", lambda m: m.output_throughput),
    "requests/s": ("request_throughput", lambda m: m.request_throughput),
    "TTFT p50 ms": ("median_ttft_ms", lambda m: m.ttft_ms.median),
    "TPOT p50 ms": ("median_tpot_ms", lambda m: m.tpot_ms.median),
    "ITL p50 ms": ("median_itl_ms", lambda m: m.itl_ms.median),
    "ITL mean ms": ("mean_itl_ms", lambda m: m.itl_ms.mean),
    "E2EL p50 ms": ("median_e2el_ms", lambda m: m.e2el_ms.median),
}
TOLERANCE = 0.05
CHECKED = {"output tok/s", "TTFT p50 ms", "TPOT p50 ms"}
"""The figures that must agree (issue 22). The others are shown: ITL depends on how the server
splits tokens into stream events (see tokens per event), which differs between prompt sets."""


@contextmanager
def vllm_server(model_dir: Path, port: int, log: Path) -> Iterator[str]:
    """vLLM's OpenAI server in its own process group, stopped (group and all) on exit."""
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--max-model-len",
        "2048",
    ]
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("wb") as sink:
        server = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {server.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"vLLM server not healthy after 300 s; see {log}") from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def write_prompts(workload: WorkloadSpec, count: int, tokenizer: Path, out: Path, seed: int = 0) -> Path:
    """The prompts `tuner bench` would send with `seed` (stream 0), as vLLM's custom-dataset JSONL."""
    factory = PromptFactory(workload, seed=seed, stream=0, tokenizer=load_tokenizer(str(tokenizer)))
    path = out / f"prompts-{workload.input_len}-{workload.output_len}-{count}-seed{seed}.jsonl"
    path.write_text("".join(json.dumps({"prompt": factory.next().text}) + "\n" for _ in range(count)))
    return path


def run_tandem_client(
    base: str, model: str, tokenizer: Path, concurrency: int, workload: WorkloadSpec, count: int, seed: int
) -> dict:
    config = BenchConfig(
        endpoint=Endpoint(url=f"{base}/v1", model=model),
        streams=[TrafficStream(workload=workload, load=ClosedLoop(concurrency=concurrency))],
        # vLLM's client sends one unmeasured test request first; so does this warm-up.
        bounds=Bounds(num_requests=count, warmup_requests=1),
        tokenizer=str(tokenizer),
        seed=seed,
    )
    metrics = run_benchmark(config).overall
    if metrics.failed:
        raise RuntimeError(f"tuner bench saw errors: {metrics.errors}")
    return {key: read(metrics) for key, read in FIGURES.values()} | {
        "total_input_tokens": metrics.total_input_tokens,
        "total_output_tokens": metrics.total_output_tokens,
        "tokens_per_event": metrics.tokens_per_event,
    }


def compare(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per figure: each client's median over its runs, every run's value, and the ratio."""
    table = {}
    for name, (key, _) in FIGURES.items():
        theirs = statistics.median(run[key] for run in runs["vllm"])
        ours = statistics.median(run[key] for run in runs["tandem"])
        ratio = ours / theirs if theirs else float("nan")
        table[name] = {
            "vllm": theirs,
            "tandem": ours,
            "ratio": ratio,
            "checked": name in CHECKED,
            "agrees": abs(ratio - 1) <= TOLERANCE,
            "runs": {client: [run[key] for run in client_runs] for client, client_runs in runs.items()},
        }
    return table


def print_table(concurrency: int, table: dict[str, dict], runs: dict[str, list[dict]]) -> None:
    print(f"\nconcurrency {concurrency}")
    print(f"  {'figure':<14}{'vllm bench':>12}{'tuner bench':>13}{'ratio':>8}")
    for name, row in table.items():
        flag = "" if not row["checked"] or row["agrees"] else f"  <-- beyond {TOLERANCE:.0%}"
        each = " | ".join(" ".join(f"{value:.1f}" for value in values) for values in row["runs"].values())
        print(f"  {name:<14}{row['vllm']:>12.2f}{row['tandem']:>13.2f}{row['ratio']:>8.3f}{flag}   runs: {each}")
    for client, client_runs in runs.items():
        tokens = sorted({(run["total_input_tokens"], run["total_output_tokens"]) for run in client_runs})
        print(f"  {client} tokens in/out (server usage): {tokens}")
    per_event = [run["tokens_per_event"] for run in runs["tandem"]]
    print(f"  tokens per stream event (tuner bench): {' '.join(f'{value:.2f}' for value in per_event)}")


def vllm_version() -> str:
    for package in ("vllm", "vllm-cpu"):
        try:
            return f"{package} {importlib.metadata.version(package)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running vLLM server (scheme://host:port, with or without /v1).")
    parser.add_argument("--model", help="Model name at --url (default: the first it lists).")
    parser.add_argument("--tokenizer", type=Path, help="Tokenizer directory (default: the demo model's).")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON with every run, the medians, ratios and verdict.")
    args = parser.parse_args()
    demo = ensure_demo_model()
    tokenizer = args.tokenizer or demo
    out = Path(tempfile.mkdtemp(prefix="bench-vs-vllm-"))
    workload = WorkloadSpec(input_len=args.input_len, output_len=args.output_len)
    summary: dict[str, object] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()},
        "vllm": vllm_version(),
        "workload": {"input_len": args.input_len, "output_len": args.output_len, "num_requests": args.num_requests},
        "tolerance": TOLERANCE,
        "by_concurrency": {},
    }
    disagreements = 0
    run_number = 0
    with ExitStack() as stack:
        if args.url:
            base = args.url.rstrip("/").removesuffix("/v1")
            model = args.model or asyncio.run(served_models(f"{base}/v1"))[0]
        else:
            base = stack.enter_context(vllm_server(demo, free_port(), out / "server.log"))
            model = str(demo)
        summary["server"] = {"url": base, "model": model}
        print(
            f"vLLM server at {base} ({model}); {args.input_len} in / {args.output_len} out, "
            f"{args.num_requests} requests, {args.repeats} repeats; work dir {out}"
        )
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            runs: dict[str, list[dict]] = {"vllm": [], "tandem": []}
            for repeat in range(args.repeats):
                order = ("vllm", "tandem") if repeat % 2 == 0 else ("tandem", "vllm")
                for client in order:
                    run_number += 1  # prompts of its own: no run served from another's prefix cache
                    if client == "vllm":
                        prompts = write_prompts(workload, args.num_requests, tokenizer, out, seed=run_number)
                        dataset = custom_dataset(prompts, args.output_len)
                        result = run_vllm_bench(base, model, tokenizer, concurrency, args.num_requests, dataset, out)
                    else:
                        result = run_tandem_client(
                            base, model, tokenizer, concurrency, workload, args.num_requests, run_number
                        )
                    runs[client].append(result | {"order": repeat * 2 + order.index(client)})
            table = compare(runs)
            print_table(concurrency, table, runs)
            disagreements += sum(row["checked"] and not row["agrees"] for row in table.values())
            summary["by_concurrency"][str(concurrency)] = {"figures": table, "runs": runs}  # type: ignore[index]
    summary["agrees"] = disagreements == 0
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"written {args.out}")
    return 1 if disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
