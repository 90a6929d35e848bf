"""`gateway up`'s first line says which start this is: the first on the machine (vLLM compiles the
model's kernels, minutes) or a repeat (about 75 s on 2 cores)."""

from __future__ import annotations

from pathlib import Path

from deploy.plan import load_plan, shipped_plan
from deploy.start_time import has_compiled_before, start_time_hint, vllm_compile_cache


def test_the_hint_tells_a_first_start_from_a_repeat(tmp_path: Path) -> None:
    plan = load_plan(shipped_plan("cpu-demo"))
    cache = tmp_path / "torch_compile_cache"
    assert not has_compiled_before(cache)
    assert "first start" in start_time_hint(plan, cache)
    (cache / "torch_aot_compile" / "0123abcd" / "rank_0_0").mkdir(parents=True)
    assert has_compiled_before(cache)
    hint = start_time_hint(plan, cache)
    assert "75 s" in hint and "first start" not in hint


def test_a_gpu_plan_is_not_given_the_cpu_figures(tmp_path: Path) -> None:
    plan = load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair"))
    assert "75 s" not in start_time_hint(plan, tmp_path) and "GPU" in start_time_hint(plan, tmp_path)


def test_the_cache_follows_vllms_own_setting(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))
    assert vllm_compile_cache() == tmp_path / "torch_compile_cache"
    monkeypatch.delenv("VLLM_CACHE_ROOT")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert vllm_compile_cache() == tmp_path / "xdg" / "vllm" / "torch_compile_cache"
