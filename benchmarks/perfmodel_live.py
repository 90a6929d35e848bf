"""Predicted vs measured output tok/s for the CPU demo stack (TP=2 and PP=2 at c = 1, 8, 32), and
the shipped Spark plans' predictions under the nominal and a degraded link.

This is the one place where a TP-vs-PP prediction can be checked against real engines on this
machine. The prediction uses the `cpu-2core-vm` hardware profile (or `--hardware FILE`, e.g. one
`tuner probe-link` wrote): one core per worker, GEMM and copy bandwidth from
`python -m tuner.perfmodel.host_bench`, the link between the workers from `tuner probe-link` on a
local two-node Ray cluster (gloo over loopback), and the `vllm-cpu` engine constants (its per-step
host cost calibrated on one point, PP=2 at c=1; every other point is out of sample). The measured
side is the live table of docs/benchmarks.md ("The CPU stack": `tuner bench`, random 128 in / 64 out,
each engine measured with the other idle), or `--measured FILE` with the same rows as JSON.

Target (issue 16): output tok/s within 30% at each concurrency, and the winning layout right at each.

    .venv/bin/python benchmarks/perfmodel_live.py [--hardware cpu-2core-vm] [--json out.json]

Pure computation over recorded figures (no engines): no heavy lock needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from deploy.demo_model import ensure_demo_model
from deploy.plan import load_plan, shipped_plan
from tuner.perfmodel import EngineSettings, Layout, ModelConstants, load_engine, load_hardware, resolve_model
from tuner.perfmodel.hardware import HardwareProfile, with_link
from tuner.perfmodel.link_sweep import scaled_link
from tuner.perfmodel.predict import build_replica, predict_replica
from tuner.workloads import Workload

SHAPE = Workload(input_len=128, output_len=64)
LEVELS = (1, 8, 32)
RECORDED = {
    # docs/benchmarks.md, "The CPU stack", measured 2026-11-29 (output tok/s, TPOT p50 ms).
    "tp2-pp1": {1: (52.0, 16.4), 8: (254.0, 23.2), 32: (160.0, 23.2)},
    "tp1-pp2": {1: (99.0, 6.9), 8: (334.0, 14.0), 32: (431.0, 34.8)},
}
DEGRADED = {"latency": 1.0, "bandwidth": 3 / 22}
"""The misconfigured pair of NVIDIA/dgx-spark-playbooks issue #102: about 3 GB/s instead of 22."""


def _cpu_constants() -> ModelConstants:
    base = ModelConstants()
    fp32 = base.activation_bytes.model_copy(update={"value": 4, "source": "the demo model runs float32"})
    return base.model_copy(update={"activation_bytes": fp32})


def cpu_predictions(hardware: HardwareProfile) -> dict[str, dict[int, tuple[float, float]]]:
    """(output tok/s, TPOT ms) per layout and concurrency, with the demo plan's engine settings."""
    arch = resolve_model(str(ensure_demo_model()))
    plan = load_plan(shipped_plan("cpu-demo"))
    engine = load_engine("vllm-cpu")
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for replica in plan.replicas:
        layout = Layout(tp=replica.tensor_parallel_size, pp=replica.pipeline_parallel_size)
        settings = EngineSettings(
            max_num_seqs=replica.engine.max_num_seqs,
            max_num_batched_tokens=replica.engine.max_num_batched_tokens or 4096,
        )
        model = build_replica(arch, hardware, layout, SHAPE, settings, engine, _cpu_constants())
        rows = {}
        for c in LEVELS:
            p = predict_replica(model, SHAPE, c)
            rows[c] = (p.output_tok_s or 0.0, p.tpot_ms or 0.0)
        out[layout.name] = rows
    return out


def _fit(engine: Any, field: str, hardware: HardwareProfile, concurrency: int, target_ms: float) -> Any:
    """`engine` with `field` set so PP=2 at `concurrency` predicts `target_ms` TPOT (bisection)."""
    arch = resolve_model(str(ensure_demo_model()))
    replica = next(r for r in load_plan(shipped_plan("cpu-demo")).replicas if r.pipeline_parallel_size == 2)
    settings = EngineSettings(max_num_seqs=replica.engine.max_num_seqs, max_num_batched_tokens=4096)
    lo, hi = 0.0, 100_000.0
    for _ in range(50):
        mid = (lo + hi) / 2
        trial = engine.model_copy(update={field: getattr(engine, field).model_copy(update={"value": mid})})
        model = build_replica(arch, hardware, Layout(pp=2), SHAPE, settings, trial, _cpu_constants())
        tpot = predict_replica(model, SHAPE, concurrency).tpot_ms or 0.0
        lo, hi = (mid, hi) if tpot < target_ms else (lo, mid)
    return engine.model_copy(update={field: getattr(engine, field).model_copy(update={"value": round((lo + hi) / 2)})})


def calibrate(hardware: HardwareProfile, measured: dict[str, dict[int, tuple[float, float]]]) -> dict[str, float]:
    """The two vllm-cpu constants fitted to PP=2's measured TPOT: the per-step cost at c=1 (one
    sequence), then the per-sequence cost at c=8 with it. Everything else is out of sample."""
    engine = load_engine("vllm-cpu")
    engine = engine.model_copy(
        update={"sequence_step_overhead_us": engine.sequence_step_overhead_us.model_copy(update={"value": 0})}
    )
    for _ in range(3):  # the two interact a little (c=1 samples one sequence per step)
        engine = _fit(engine, "step_overhead_us", hardware, 1, measured["tp1-pp2"][1][1])
        engine = _fit(engine, "sequence_step_overhead_us", hardware, 8, measured["tp1-pp2"][8][1])
    return {
        "step_overhead_us": engine.step_overhead_us.value,
        "sequence_step_overhead_us": engine.sequence_step_overhead_us.value,
    }


def compare(hardware: HardwareProfile, measured: dict[str, dict[int, tuple[float, float]]]) -> list[dict[str, Any]]:
    predicted = cpu_predictions(hardware)
    rows = []
    for c in LEVELS:
        row: dict[str, Any] = {"concurrency": c}
        for layout in ("tp2-pp1", "tp1-pp2"):
            p_rate, p_tpot = predicted[layout][c]
            m_rate, m_tpot = measured[layout][c]
            row[layout] = {
                "predicted_tok_s": round(p_rate, 1),
                "measured_tok_s": m_rate,
                "ratio": round(p_rate / m_rate, 2),
                "predicted_tpot_ms": round(p_tpot, 2),
                "measured_tpot_ms": m_tpot,
            }
        row["predicted_winner"] = max(("tp2-pp1", "tp1-pp2"), key=lambda k: predicted[k][c][0])
        row["measured_winner"] = max(("tp2-pp1", "tp1-pp2"), key=lambda k: measured[k][c][0])
        rows.append(row)
    return rows


def shipped_plans(levels: tuple[int, ...] = LEVELS) -> list[dict[str, Any]]:
    """Each Spark plan's replicas as shipped (their engine settings), nominal vs degraded link."""
    pair = load_hardware("dgx-spark-pair")
    nominal = pair.link_for(2)
    assert nominal is not None  # the pair's ConnectX-7 link
    slow = with_link(pair, 2, scaled_link(nominal, DEGRADED["latency"], DEGRADED["bandwidth"]))
    rows = []
    for path in sorted(shipped_plan("x").parent.glob("*.dgx-spark-pair.yaml")):
        plan = load_plan(path)
        alias = path.name.removesuffix(".dgx-spark-pair.yaml")
        for group in plan.models:
            arch = resolve_model(group.source)
            for replica in group.replicas:
                layout = Layout(tp=replica.tensor_parallel_size, pp=replica.pipeline_parallel_size)
                settings = EngineSettings(
                    max_num_seqs=replica.engine.max_num_seqs,
                    max_num_batched_tokens=replica.engine.max_num_batched_tokens,
                    gpu_memory_utilization=replica.engine.gpu_memory_utilization,
                )
                row: dict[str, Any] = {"plan": alias, "replica": replica.name, "layout": layout.name}
                for label, hw in (("nominal", pair), ("degraded", slow)):
                    model = build_replica(arch, hw, layout, Workload(1024, 1024), settings)
                    row[label] = {
                        c: round(predict_replica(model, Workload(1024, 1024), c).output_tok_s or 0.0, 1) for c in levels
                    }
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hardware", default="cpu-2core-vm", help="Hardware profile name or file.")
    parser.add_argument("--measured", type=Path, help="JSON {layout: {concurrency: [tok/s, tpot ms]}}.")
    parser.add_argument("--json", type=Path, help="Write the comparison as JSON.")
    parser.add_argument("--calibrate", action="store_true", help="Print the fitted vllm-cpu step_overhead_us and stop.")
    args = parser.parse_args()
    measured = RECORDED
    if args.measured is not None:
        raw = json.loads(args.measured.read_text())
        measured = {k: {int(c): (float(v[0]), float(v[1])) for c, v in rows.items()} for k, rows in raw.items()}
    hardware = load_hardware(args.hardware)
    if args.calibrate:
        print(f"vllm-cpu: {calibrate(hardware, measured)}")
        return
    rows = compare(hardware, measured)
    print(f"CPU demo stack on {hardware.name}: predicted / measured output tok/s (TPOT ms)")
    print("| c | TP=2 predicted | measured | ratio | PP=2 predicted | measured | ratio | winner predicted / measured |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        tp, pp = r["tp2-pp1"], r["tp1-pp2"]
        print(
            f"| {r['concurrency']} | {tp['predicted_tok_s']} ({tp['predicted_tpot_ms']}) | {tp['measured_tok_s']} "
            f"({tp['measured_tpot_ms']}) | {tp['ratio']} | {pp['predicted_tok_s']} ({pp['predicted_tpot_ms']}) | "
            f"{pp['measured_tok_s']} ({pp['measured_tpot_ms']}) | {pp['ratio']} | "
            f"{r['predicted_winner']} / {r['measured_winner']} |"
        )
    within = all(0.7 <= r[k]["ratio"] <= 1.3 for r in rows for k in ("tp2-pp1", "tp1-pp2"))
    winners = all(r["predicted_winner"] == r["measured_winner"] for r in rows)
    print(f"within 30% everywhere: {within}; winner right everywhere: {winners}")
    plans = shipped_plans()
    print("\nShipped Spark plans, predicted output tok/s (equal 1024/1024), nominal 22 GB/s vs degraded 3 GB/s link:")
    print("| plan | replica | layout | " + " | ".join(f"c={c} nominal / degraded" for c in LEVELS) + " |")
    print("|---|---|---|" + "---|" * len(LEVELS))
    for p in plans:
        cells = " | ".join(f"{p['nominal'][c]} / {p['degraded'][c]}" for c in LEVELS)
        print(f"| {p['plan']} | {p['replica']} | {p['layout']} | {cells} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu": rows, "shipped_plans": plans, "hardware": hardware.name}, indent=2))


if __name__ == "__main__":
    main()
