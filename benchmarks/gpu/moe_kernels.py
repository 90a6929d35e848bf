"""Time vLLM's fused MoE kernels at gpt-oss-120b's whole and TP=2 shard shapes, M = 1..256 tokens.

What the performance model needs from a GPU (tuner/perfmodel/moe.py): how much one (token, expert)
pair costs per backend, and how much of that a TP=2 shard keeps. gpt-oss-120b: 128 experts, top-4,
hidden 2880, expert width 2880, so w13 is N=5760 x K=2880 whole and N=2880 under TP=2, w2 is
N=2880 x K=2880 whole and K=1440 under TP=2.

Backends (each guarded: one that is missing or fails is recorded with its error, the rest run):
  triton   vLLM's Triton `fused_experts`, BF16 weights (the path every build has)
  marlin   vLLM's `fused_marlin_moe`, 4-bit weights (uint4b8, group 32: the Marlin W4A16 kernels the
           MXFP4 path runs on sm_121 and Ampere; the scale format differs from MXFP4's e8m0, the
           tiling does not), expert width padded to a multiple of 128 as vLLM pads it
  topk     vLLM's `fused_topk` over the router logits: work every TP rank replicates
Routing is uniform random (softmax over random logits): vLLM-style random prompts, not a trace.
Each (backend, shape, M) is timed as the replay of a CUDA graph of 10 calls (vLLM graphs its
decode steps), median of 5 replays, events on the GPU; without graphs, a plain loop.

Run on one H100/H200 with vLLM 0.26 (about 1-2 minutes; --budget-s caps it):
    python benchmarks/gpu/moe_kernels.py --out "$OUT/moe_kernels.json"
then on any machine:
    python -m tuner.perfmodel.moe_fit "$OUT/moe_kernels.json"
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPERTS, TOP_K, HIDDEN, WIDTH = 128, 4, 2880, 2880
SHAPES = {"tp1": 1, "tp2": 2}
TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CALLS_PER_GRAPH, REPLAYS = 10, 5


def _import_first(candidates: list[tuple[str, str]]) -> Callable[..., Any]:
    """The first of (module, name) that imports: vLLM moves these between releases."""
    errors = []
    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{module}.{name}: {exc}")
    raise ImportError("; ".join(errors))


def _time_us(torch: Any, fn: Callable[[], Any]) -> tuple[float, str]:
    """Median microseconds of one call: CUDA-graph replay when capture works, else a plain loop."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(CALLS_PER_GRAPH):
                fn()
        run, how = graph.replay, "cuda-graph"
    except Exception:
        torch.cuda.synchronize()

        def run() -> None:
            for _ in range(CALLS_PER_GRAPH):
                fn()

        how = "eager"
    samples = []
    for _ in range(REPLAYS):
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / CALLS_PER_GRAPH)
    return statistics.median(samples), how


class Bench:
    """One GPU's inputs and the vLLM entry points, built once."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.device = torch.device("cuda")
        self.dtype = torch.bfloat16
        self.fused_topk = _import_first(
            [
                ("vllm.model_executor.layers.fused_moe", "fused_topk"),
                ("vllm.model_executor.layers.fused_moe.router.fused_topk_router", "fused_topk"),
                ("vllm.model_executor.layers.fused_moe.fused_moe", "fused_topk"),
            ]
        )

    def routing(self, tokens: int) -> tuple[Any, Any, Any, Any]:
        """Hidden states, router logits and the top-k weights and ids of `tokens` random tokens."""
        torch = self.torch
        hidden = torch.randn(tokens, HIDDEN, device=self.device, dtype=self.dtype) / 10
        logits = torch.randn(tokens, EXPERTS, device=self.device, dtype=torch.float32)
        routed = self.fused_topk(hidden, logits, TOP_K, True)
        return hidden, logits, routed[0], routed[1]

    def topk(self, tp: int, tokens: int) -> Callable[[], Any]:
        hidden, logits, _, _ = self.routing(tokens)
        return lambda: self.fused_topk(hidden, logits, TOP_K, True)

    def triton(self, tp: int, tokens: int) -> Callable[[], Any]:
        fused_experts = _import_first(
            [
                ("vllm.model_executor.layers.fused_moe", "fused_experts"),
                ("vllm.model_executor.layers.fused_moe.fused_moe", "fused_experts"),
            ]
        )
        torch = self.torch
        width = WIDTH // tp
        if getattr(self, "_triton_tp", None) != tp:  # weights per shape, reused across M
            self._w13 = torch.randn(EXPERTS, 2 * width, HIDDEN, device=self.device, dtype=self.dtype) / 50
            self._w2 = torch.randn(EXPERTS, HIDDEN, width, device=self.device, dtype=self.dtype) / 50
            self._triton_tp = tp
        hidden, _, weights, ids = self.routing(tokens)
        return lambda: fused_experts(hidden, self._w13, self._w2, weights, ids)

    def marlin(self, tp: int, tokens: int) -> Callable[[], Any]:
        fused_marlin_moe = _import_first(
            [
                ("vllm.model_executor.layers.fused_moe.experts.marlin_moe", "fused_marlin_moe"),
                ("vllm.model_executor.layers.fused_moe.fused_marlin_moe", "fused_marlin_moe"),
            ]
        )
        marlin_quantize = _import_first(
            [("vllm.model_executor.layers.quantization.utils.marlin_utils_test", "marlin_quantize")]
        )
        workspace_for = _import_first(
            [("vllm.model_executor.layers.quantization.utils.marlin_utils", "marlin_make_workspace_new")]
        )
        scalar_types: Any = _import_first([("vllm.scalar_type", "scalar_types")])
        torch = self.torch
        # vLLM's MXFP4 method pads each shard's expert width to a multiple of 128 for Marlin
        # (2880 -> 2944 whole, 1440 -> 1536 under TP=2); Marlin's K tiles need it too.
        width = -(-(WIDTH // tp) // 128) * 128
        if getattr(self, "_marlin_tp", None) != tp:
            quant = scalar_types.uint4b8

            def packed(size_k: int, size_n: int) -> tuple[Any, Any]:
                # One expert quantized, repeated E times: the values do not change the kernel's time.
                w = torch.randn(size_k, size_n, device=self.device, dtype=self.dtype) / 50
                extra = {"act_order": False} if "act_order" in inspect.signature(marlin_quantize).parameters else {}
                _, q, s, *_ = marlin_quantize(w, quant, 32, **extra)
                return (
                    q.unsqueeze(0).expand(EXPERTS, *q.shape).contiguous(),
                    s.unsqueeze(0).expand(EXPERTS, *s.shape).contiguous(),
                )

            self._mw13, self._ms13 = packed(HIDDEN, 2 * width)
            self._mw2, self._ms2 = packed(width, HIDDEN)
            self._workspace = workspace_for(self.device, 4)
            self._quant_id = quant.id
            self._marlin_tp = tp
        hidden, logits, weights, ids = self.routing(tokens)
        kwargs: dict[str, Any] = dict(
            hidden_states=hidden,
            w1=self._mw13,
            w2=self._mw2,
            bias1=None,
            bias2=None,
            w1_scale=self._ms13,
            w2_scale=self._ms2,
            topk_weights=weights,
            topk_ids=ids,
            quant_type_id=self._quant_id,
            workspace=self._workspace,
        )
        parameters = inspect.signature(fused_marlin_moe).parameters
        if "gating_output" in parameters:  # older releases took the router logits too
            kwargs["gating_output"] = logits
        kwargs = {k: v for k, v in kwargs.items() if k in parameters}
        return lambda: fused_marlin_moe(**kwargs)


def run(out: Path, budget_s: float, backends: list[str]) -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        raise SystemExit(f"error: torch is not importable ({exc}); run where torch + vLLM are installed") from None
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible; this script times GPU kernels")
    try:
        import vllm
    except ImportError as exc:
        raise SystemExit(f"error: vLLM is not importable ({exc}); put vLLM 0.26 on PYTHONPATH") from None
    props = torch.cuda.get_device_properties(0)
    result: dict[str, Any] = {
        "meta": {
            "gpu": props.name,
            "sm": f"{props.major}.{props.minor}",
            "sms": props.multi_processor_count,
            "torch": torch.__version__,
            "vllm": getattr(vllm, "__version__", "unknown"),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "model": "gpt-oss-120b MoE shapes",
            "experts": EXPERTS,
            "top_k": TOP_K,
            "hidden": HIDDEN,
            "expert_width": WIDTH,
            "routing": "uniform random (softmax of random logits)",
            "timing": f"median of {REPLAYS} replays of a CUDA graph of {CALLS_PER_GRAPH} calls",
        },
        "results": [],
    }
    try:
        bench = Bench(torch)
    except Exception as exc:
        result["meta"]["error"] = f"vLLM's fused_topk is not importable: {exc}"
        return result
    deadline = time.monotonic() + budget_s
    for backend in backends:
        for shape, tp in SHAPES.items():
            for tokens in TOKENS:
                row: dict[str, Any] = {
                    "backend": backend,
                    "shape": shape,
                    "tp": tp,
                    "w13_n": 2 * WIDTH // tp,
                    "w13_k": HIDDEN,
                    "w2_n": HIDDEN,
                    "w2_k": WIDTH // tp,
                    "expert_params": 3 * HIDDEN * WIDTH // tp,
                    "tokens": tokens,
                    "pairs": tokens * TOP_K,
                }
                if time.monotonic() > deadline:
                    row["status"] = f"skipped: past the {budget_s:.0f} s budget"
                else:
                    try:
                        fn = getattr(bench, backend)(tp, tokens)
                        row["us"], row["timing"] = _time_us(torch, fn)
                        row["status"] = "ok"
                    except Exception as exc:
                        row["status"] = f"error: {type(exc).__name__}: {exc}"
                        row["traceback"] = traceback.format_exc(limit=3)
                        torch.cuda.synchronize()
                result["results"].append(row)
                print(json.dumps({k: row.get(k) for k in ("backend", "shape", "tokens", "us", "status")}), flush=True)
        out.write_text(json.dumps(result, indent=1))  # partial results survive a later crash
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(os.environ.get("OUT", ".")) / "moe_kernels.json"
    parser.add_argument(
        "--out", type=Path, default=default_out, help="JSON file to write (default $OUT/moe_kernels.json)"
    )
    parser.add_argument("--budget-s", type=float, default=150.0, help="Stop starting new measurements after this.")
    parser.add_argument("--backends", default="topk,triton,marlin", help="Comma-separated: topk, triton, marlin.")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - {"topk", "triton", "marlin"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args.out, args.budget_s, backends)
    args.out.write_text(json.dumps(result, indent=1))
    ok = sum(r.get("status") == "ok" for r in result["results"])
    print(f"{ok} of {len(result['results'])} measurements ok; wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
