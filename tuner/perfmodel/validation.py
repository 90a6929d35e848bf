"""Out-of-sample check: the model's predictions for public multi-GPU runs (data/validation.yaml).

Every constant the model uses comes from kernel benchmarks, single-GPU or single-box runs, or
datasheets; the cases here are two-node and multi-GPU runs the model never saw (the few
single-box points of a case that constants were derived from are marked `calibration` and
reported apart). Run `python -m tuner.perfmodel.validation` for the table docs/perfmodel.md
shows; `--fit-cutlass` re-derives the CUTLASS pair cost from its single-box points.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from tuner.perfmodel.architecture import ModelArchitecture, from_hf_config, resolve_model
from tuner.perfmodel.engine import EngineSettings, load_engine
from tuner.perfmodel.hardware import load_hardware
from tuner.perfmodel.predict import Layout, ReplicaModel, build_replica, predict_replica
from tuner.perfmodel.sourced import DATA_DIR, read_yaml
from tuner.workloads import Workload

VALIDATION_FILE = DATA_DIR / "validation.yaml"
TOLERANCE = 0.25
"""The target: every prediction within 25% of the published figure."""


@dataclass(frozen=True)
class Row:
    """One published figure and the model's prediction of it."""

    case: str
    label: str
    predicted: float
    published: float
    calibration: bool = False
    held_out: bool = False

    @property
    def ratio(self) -> float:
        return self.predicted / self.published

    @property
    def within(self) -> bool:
        return abs(self.ratio - 1) <= TOLERANCE


@dataclass(frozen=True)
class WinnerCheck:
    """Which of two or more layouts a case's published figures put ahead, and which the model does."""

    case: str
    label: str
    predicted: str
    published: str
    held_out: bool = False

    @property
    def right(self) -> bool:
        return self.predicted == self.published


@cache
def _data() -> dict[str, Any]:
    return read_yaml(VALIDATION_FILE)


def _architecture(case: dict[str, Any]) -> ModelArchitecture:
    name = case["model"]
    inline = _data().get("models", {}).get(name)
    arch = from_hf_config(inline["config"], name=name) if inline else resolve_model(name)
    if case.get("weights"):
        arch = arch.with_weights(**case["weights"])
    if case.get("kv_cache_dtype"):
        arch = arch.model_copy(update={"kv_cache_dtype": case["kv_cache_dtype"]})
    return arch


def _replica(case: dict[str, Any], layout: dict[str, Any], workload: Workload, **overrides: Any) -> ReplicaModel:
    settings = EngineSettings(build=case.get("build"), enforce_eager=case.get("enforce_eager", False))
    engine = load_engine("vllm")
    return build_replica(
        _architecture(case), load_hardware(case["hardware"]), Layout(**layout), workload, settings, engine, **overrides
    )


def _workload(case: dict[str, Any], entry: dict[str, Any]) -> Workload:
    return Workload(**(entry.get("workload") or case["workload"]))


def measure(
    case: dict[str, Any], layout: dict[str, Any], concurrency: int, workload: Workload, **overrides: Any
) -> float:
    """The case's metric for one layout at one concurrency."""
    replica = _replica(case, layout, workload, **overrides)
    if case["metric"] == "decode_tok_s":
        running = min(concurrency, replica.max_running)
        context = workload.input_len + workload.output_len / 2
        return running / replica.cycle_seconds(running, context)
    prediction = predict_replica(replica, workload, concurrency)
    return prediction.output_tok_s or 0.0


def _name(layout: dict[str, Any]) -> str:
    return Layout(**layout).name


def case_rows(case: dict[str, Any]) -> tuple[list[Row], list[WinnerCheck]]:
    """Predicted vs published for every point, ratio and winner of one case."""
    rows: list[Row] = []
    checks: list[WinnerCheck] = []
    by_concurrency: dict[int, list[tuple[str, float, float]]] = {}
    for point in case.get("points", []):
        value = measure(case, point["layout"], point["concurrency"], _workload(case, point))
        label = f"{_name(point['layout'])} c={point['concurrency']} tok/s"
        rows.append(Row(case["name"], label, value, point["published"], point.get("calibration", False)))
        by_concurrency.setdefault(point["concurrency"], []).append((_name(point["layout"]), value, point["published"]))
    for level, entries in sorted(by_concurrency.items()):
        if len(entries) > 1:
            predicted = max(entries, key=lambda e: e[1])[0]
            published = max(entries, key=lambda e: e[2])[0]
            checks.append(WinnerCheck(case["name"], f"c={level}", predicted, published))
    over_one_box: dict[tuple[int, str], list[tuple[str, float, float]]] = {}
    for ratio in case.get("ratios", []):
        workload = _workload(case, ratio)
        top = measure(case, ratio["layout"], ratio["concurrency"], workload)
        bottom = measure(case, ratio["over"], ratio["concurrency"], workload)
        shape = f"{workload.input_len}/{workload.output_len}"
        label = f"{_name(ratio['layout'])} / {_name(ratio['over'])} c={ratio['concurrency']} ({shape})"
        rows.append(Row(case["name"], label, top / bottom, ratio["published"]))
        if Layout(**ratio["over"]).tp * Layout(**ratio["over"]).pp > 1:  # two multi-GPU layouts: who is ahead
            names = (_name(ratio["layout"]), _name(ratio["over"]))
            predicted = names[0] if top > bottom else names[1]
            published = names[0] if ratio["published"] > 1 else names[1]
            checks.append(WinnerCheck(case["name"], label, predicted, published))
        else:  # both over one box: compare the multi-GPU layouts with each other below
            key = (ratio["concurrency"], shape)
            over_one_box.setdefault(key, []).append((_name(ratio["layout"]), top / bottom, ratio["published"]))
    for (level, shape), entries in over_one_box.items():
        if len(entries) > 1:
            predicted = max(entries, key=lambda e: e[1])[0]
            published = max(entries, key=lambda e: e[2])[0]
            checks.append(WinnerCheck(case["name"], f"c={level} ({shape})", predicted, published))
    for winner in case.get("winners", []):
        workload = _workload(case, winner)
        for level in winner["concurrency"]:
            values = {_name(layout): measure(case, layout, level, workload) for layout in winner["layouts"]}
            checks.append(
                WinnerCheck(case["name"], f"c={level}", max(values, key=values.__getitem__), winner["published"])
            )
    return rows, checks


def validate() -> tuple[list[Row], list[WinnerCheck]]:
    rows: list[Row] = []
    checks: list[WinnerCheck] = []
    for case in _data()["cases"]:
        case_row, case_checks = case_rows(case)
        if case.get("held_out"):
            case_row = [replace(r, held_out=True) for r in case_row]
            case_checks = [replace(c, held_out=True) for c in case_checks]
        rows += case_row
        checks += case_checks
    return rows, checks


def fit_cutlass_pair_us() -> float:
    """The CUTLASS pair cost (us, on GB10) that best fits the kubis Solo points at c >= 8 (log error)."""
    from tuner.perfmodel.moe import load_moe_kernels

    case = next(c for c in _data()["cases"] if "kubis" in c["name"])
    points = [p for p in case["points"] if p.get("calibration") and p["concurrency"] >= 8]
    table = load_moe_kernels()
    best = (math.inf, 0.0)
    for tenths in range(1, 200):
        candidate = tenths / 10
        figure = table.backends["cutlass"].model_copy(
            update={"pair_us": table.backends["cutlass"].pair_us.model_copy(update={"value": candidate})}
        )
        kernels = table.model_copy(update={"backends": {**table.backends, "cutlass": figure}})
        error = sum(
            math.log(
                measure(case, p["layout"], p["concurrency"], _workload(case, p), moe_kernels=kernels) / p["published"]
            )
            ** 2
            for p in points
        )
        best = min(best, (error, candidate))
    return best[1]


def not_predicted() -> list[tuple[str, str, str]]:
    """(case, figure, why) for every published figure a case lists but the model cannot price."""
    return [(c["name"], n["figure"], n["why"]) for c in _data()["cases"] for n in c.get("not_predicted", [])]


def markdown(rows: list[Row], checks: list[WinnerCheck]) -> str:
    """The validation table, then the winners; held-out cases (checked separately) after a divider."""
    lines: list[str] = []
    for held_out in (False, True):
        section_rows = [r for r in rows if r.held_out == held_out]
        section_checks = [c for c in checks if c.held_out == held_out]
        if not section_rows and not section_checks:
            continue
        if held_out:
            lines += ["", "Held out (checked separately):", ""]
        lines += ["| case | figure | predicted | published | predicted / published |", "|---|---|---|---|---|"]
        for row in section_rows:
            mark = " (calibration)" if row.calibration else ("" if row.within else " **out**")
            lines.append(
                f"| {row.case} | {row.label} | {row.predicted:.2f} | {row.published:g} | {row.ratio:.2f}{mark} |"
            )
        lines += ["", "| case | where | predicted winner | published winner |", "|---|---|---|---|"]
        for check in section_checks:
            mark = "" if check.right else " **wrong**"
            lines.append(f"| {check.case} | {check.label} | {check.predicted}{mark} | {check.published} |")
    for case, figure, why in not_predicted():
        lines += ["", f"Not predicted ({case}): {figure}. {why}"]
    return "\n".join(lines)


def summary(rows: list[Row], checks: list[WinnerCheck], held_out: bool) -> str:
    """'N of M figures within 25%; K wrong winner(s)' for the validated or the held-out cases."""
    counted = [r for r in rows if r.held_out == held_out and not r.calibration]
    wrong = [c for c in checks if c.held_out == held_out and not c.right]
    within = sum(r.within for r in counted)
    name = "held out" if held_out else "out of sample"
    return f"{name}: {within} of {len(counted)} figures within {TOLERANCE:.0%}; {len(wrong)} wrong winner(s)."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fit-cutlass", action="store_true", help="Re-derive the CUTLASS pair cost (us on GB10).")
    args = parser.parse_args()
    if args.fit_cutlass:
        print(f"cutlass pair_us on GB10: {fit_cutlass_pair_us():.1f}")
        return
    rows, checks = validate()
    print(markdown(rows, checks))
    print()
    print(summary(rows, checks, held_out=False))
    print(summary(rows, checks, held_out=True))


if __name__ == "__main__":
    main()
