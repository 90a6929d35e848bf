"""Turn benchmarks/gpu/moe_kernels.py's measurements into the model's MoE kernel figures.

For each backend the pair cost is read where the kernel is pair-bound (64-256 tokens: 256-1024
pairs over 128 experts): the median of time / pairs at each shape. The whole shape's figure is
`pair_us`; the TP=2 shard's over it gives the backend's own size exponent (1 = the cost halves
with the shard, 0 = every TP rank keeps all of it). Prints the `measured:` entries for
data/moe_kernels.yaml, with the run's GPU, versions and date as their source.

    python -m tuner.perfmodel.moe_fit "$OUT/moe_kernels.json"
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import yaml

PAIR_BOUND_TOKENS = (64, 128, 256)
WEIGHTS = {
    "triton": "BF16 weights (the Triton fused_experts kernel, not its MXFP4 variant)",
    "marlin": "4-bit uint4b8 weights, group 32 (Marlin W4A16, as MXFP4 runs on sm_121 and sm_80)",
}
BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "GB10": 213.0}
"""Dense BF16 peaks by GPU name fragment (datasheets; GB10: aiconfigurator's mmapeak), to scale to other devices."""


def _peak(gpu: str) -> float:
    for fragment, tflops in BF16_TFLOPS.items():
        if fragment in gpu:
            return tflops
    raise ValueError(f"no BF16 peak on file for GPU {gpu!r}; add it to BF16_TFLOPS")


def fit(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One `measured` entry per backend that has pair-bound points at both shapes."""
    meta = result["meta"]
    rows = [r for r in result["results"] if r.get("status") == "ok" and r["backend"] != "topk"]
    entries = []
    for backend in sorted({r["backend"] for r in rows}):
        per_shape: dict[str, tuple[float, float]] = {}
        for shape in ("tp1", "tp2"):
            points = [r for r in rows if r["backend"] == backend and r["shape"] == shape]
            costs = [r["us"] / r["pairs"] for r in points if r["tokens"] in PAIR_BOUND_TOKENS]
            if costs:
                per_shape[shape] = (statistics.median(costs), float(points[0]["expert_params"]))
        if len(per_shape) < 2:
            continue
        (whole, whole_params), (shard, shard_params) = per_shape["tp1"], per_shape["tp2"]
        exponent = math.log(whole / shard) / math.log(whole_params / shard_params)
        source = (
            f"benchmarks/gpu/moe_kernels.py on {meta['gpu']} (vLLM {meta['vllm']}, torch {meta['torch']}, "
            f"{meta['date']}), {WEIGHTS.get(backend, backend)}: median time / pairs at "
            f"{', '.join(map(str, PAIR_BOUND_TOKENS))} tokens"
        )
        entries.append(
            {
                "backend": backend,
                "pair_us": {"value": round(whole, 3), "kind": "measured", "source": source + ", whole shape"},
                "size_exponent": {
                    "value": round(exponent, 3),
                    "kind": "measured",
                    "source": source + f", TP=2 shard {shard:.3f} us vs whole {whole:.3f} us",
                },
                "expert_params": whole_params,
                "device_bf16_tflops": _peak(meta["gpu"]),
            }
        )
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path, help="The JSON benchmarks/gpu/moe_kernels.py wrote.")
    args = parser.parse_args()
    entries = fit(json.loads(args.result.read_text()))
    if not entries:
        raise SystemExit("no backend has pair-bound measurements at both shapes; nothing to fit")
    print(yaml.safe_dump({"measured": entries}, sort_keys=False, width=120))


if __name__ == "__main__":
    main()
