"""What `gateway up` tells the user about how long the start will take, before it starts.

Measured on a 2-core machine with the CPU demo plan (docs/benchmarks.md, "Stack start"): a start
with vLLM's compile cache warm takes about 75 s on a quiet machine; the very first one on a
machine takes 3-5 minutes, because each engine worker compiles the model's CPU kernels with
torch Inductor (four compiles for a TP=2 and a PP=2 replica, about two minutes together on two
cores) before it serves. vLLM caches them under its cache root (`VLLM_CACHE_ROOT`, default
~/.cache/vllm), so later starts skip that step.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy.plan import ServingPlan


def vllm_compile_cache() -> Path:
    """Where vLLM keeps compiled models: vLLM's own rule (vllm/envs.py, VLLM_CACHE_ROOT)."""
    root = os.environ.get("VLLM_CACHE_ROOT")
    if root:
        return Path(root).expanduser() / "torch_compile_cache"
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache_home / "vllm" / "torch_compile_cache"


def has_compiled_before(cache: Path | None = None) -> bool:
    """Whether vLLM has compiled a model on this machine (its cache holds an entry)."""
    cache = cache or vllm_compile_cache()
    return cache.is_dir() and any(cache.rglob("rank_*"))


def start_time_hint(plan: ServingPlan, cache: Path | None = None) -> str:
    """One sentence on the start to expect: first start on this machine, or a repeat."""
    if plan.cluster.accelerator is not None:
        return "loading the model onto the GPUs takes minutes (the first time longer, while vLLM compiles it)."
    if has_compiled_before(cache):
        return "a start takes about 75 s on 2 quiet cores (a model or plan not started here before: minutes more)."
    return (
        f"this is the first start on this machine: about 3-5 minutes on 2 cores, while vLLM compiles the model's "
        f"CPU kernels once (cached in {vllm_compile_cache().parent}); later starts take about 75 s."
    )
