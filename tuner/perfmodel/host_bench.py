"""Micro-benchmark of one CPU worker: GEMM throughput and memory bandwidth, as profile figures.

The CPU demo stack binds each vLLM worker to one core (VLLM_CPU_OMP_THREADS_BIND=0|1), so a
"device" of the CPU hardware profile is one core: this measures with one torch thread. GEMMs run in
float32 (the demo model's dtype) at the shapes a decode and a prefill step of a small model use;
memory bandwidth is a large tensor copy (bytes read + written over time). Each figure is the best
of several repetitions: on a shared machine noise only ever adds time.

`python -m tuner.perfmodel.host_bench` prints the figures as profile YAML.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from collections.abc import Callable

import yaml
from pydantic import BaseModel, ConfigDict

REPETITIONS = 7


class HostFigures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gemm_tflops: float
    memory_bandwidth_gbs: float
    cpu: str
    date: str
    threads: int


def _best(run: Callable[[], None], calls: int) -> float:
    """Fastest mean time per call over REPETITIONS runs of `calls` calls."""
    best = float("inf")
    for _ in range(REPETITIONS):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure_host(threads: int = 1, gemm_size: int = 512, copy_mb: int = 256) -> HostFigures:
    """GEMM TFLOPS (float32, `gemm_size` square) and copy bandwidth (GB/s) on `threads` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(gemm_size, gemm_size)
        b = torch.randn(gemm_size, gemm_size)
        out = torch.empty(gemm_size, gemm_size)
        torch.matmul(a, b, out=out)
        gemm_s = _best(lambda: torch.matmul(a, b, out=out), calls=10)
        src = torch.ones(copy_mb * 2**20 // 4)
        dst = torch.empty_like(src)
        dst.copy_(src)
        copy_s = _best(lambda: dst.copy_(src), calls=3)
    finally:
        torch.set_num_threads(previous)
    return HostFigures(
        gemm_tflops=2 * gemm_size**3 / gemm_s / 1e12,
        memory_bandwidth_gbs=2 * src.numel() * 4 / copy_s / 1e9,
        cpu=platform.processor() or platform.machine(),
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        threads=threads,
    )


def device_yaml(figures: HostFigures) -> str:
    """The `device:` block of a hardware profile from measured figures."""
    source = f"tuner/perfmodel/host_bench.py, {figures.date}, {figures.threads} thread(s)"
    device = {
        "tflops": {
            "bf16": {
                "value": round(figures.gemm_tflops, 4),
                "kind": "measured",
                "source": source,
                "note": "float32 GEMM (the demo model's dtype), stored under bf16: the model uses it for every non-FP8/FP4 format.",
            }
        },
        "memory_bandwidth_gbs": {"value": round(figures.memory_bandwidth_gbs, 2), "kind": "measured", "source": source},
    }
    return yaml.safe_dump({"device": device}, sort_keys=False)


if __name__ == "__main__":
    print(device_yaml(measure_host()))
