"""The routing report: one result model for simulated and live runs, the issue's targets, the
terminal tables, one chart per scenario, and the tables of docs/routing.md.

A *setting* is where the runs happened ("simulated gpt-oss-120b", "live cpu-demo"); each setting
has every scenario, each scenario every policy, each policy one sample per seed (or live run).
Figures are means with a 95% confidence interval over the samples (Student's t).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tuner.policy_eval.scenarios import REFERENCES

FIGURES: dict[str, str] = {
    "interactive_ttft_p50_ms": "int. TTFT p50 ms",
    "interactive_ttft_p99_ms": "int. TTFT p99 ms",
    "interactive_tpot_p50_ms": "int. TPOT p50 ms",
    "batch_output_tok_s": "batch out tok/s",
    "interactive_goodput_req_s": "int. goodput req/s",
    "batch_goodput_req_s": "batch goodput req/s",
    "goodput_req_s": "goodput req/s",
    "failed": "failed",
    "batch_held_fraction": "batch held",
    "interactive_replica_busy": "int. replica busy",
    "batch_replica_busy": "batch replica busy",
}
"""Every figure a run reports, with its column title. Goodput counts requests meeting their class's SLOs."""
Sample = dict[str, float | None]

_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
          2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)  # fmt: skip
"""Student's t 97.5% quantile for 1..20 degrees of freedom (1.96 beyond)."""


class Estimate(BaseModel):
    """Mean of the samples, and the 95% confidence interval's half-width (0 for one sample)."""

    mean: float | None
    half_width: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Estimate:
        present = [v for v in values if v is not None]
        if not present:
            return cls(mean=None, half_width=0.0, n=0)
        if len(present) == 1:
            return cls(mean=present[0], half_width=0.0, n=1)
        df = len(present) - 1
        t = _T_975[df - 1] if df <= len(_T_975) else 1.96
        return cls(
            mean=statistics.fmean(present),
            half_width=t * statistics.stdev(present) / math.sqrt(len(present)),
            n=len(present),
        )

    def text(self) -> str:
        if self.mean is None:
            return "-"
        digits = 0 if abs(self.mean) >= 100 else 1 if abs(self.mean) >= 10 else 2
        interval = f" ±{self.half_width:.{digits}f}" if self.n > 1 else ""
        return f"{self.mean:.{digits}f}{interval}"


class PolicyResult(BaseModel):
    policy: str
    samples: list[Sample]
    note: str | None = None

    def estimate(self, figure: str) -> Estimate:
        return Estimate.of(sample.get(figure) for sample in self.samples)


class ScenarioResult(BaseModel):
    setting: str
    scenario: str
    description: str
    policies: list[PolicyResult]

    def policy(self, name: str) -> PolicyResult | None:
        return next((p for p in self.policies if p.policy == name), None)


class YieldPoint(BaseModel):
    """Class-aware on the steady mix at one setting of batch yielding (gateway.contract.yielding.batch_yield)."""

    setting: str
    fraction: float
    max_hold_s: float
    release_s: float
    result: PolicyResult

    @property
    def label(self) -> str:
        if self.fraction >= 1:
            return "off"
        return f"{self.fraction:g} of slots, hold <= {self.max_hold_s:g} s"


class TargetCheck(BaseModel):
    setting: str
    target: str
    value: float | None
    bound: float
    met: bool | None
    """None when the figures to judge it are missing."""
    detail: str


class RoutingReport(BaseModel):
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    command: str
    machine: str
    settings: dict[str, dict[str, object]] = Field(
        default_factory=dict, description="Per setting: routing thresholds, SLOs, load sizes used."
    )
    scenarios: list[ScenarioResult] = Field(default_factory=list)
    yield_sweep: list[YieldPoint] = Field(default_factory=list, description="The batch-yield trade-off, per setting.")
    targets: list[TargetCheck] = Field(default_factory=list)

    def of_setting(self, setting: str) -> dict[str, ScenarioResult]:
        return {s.scenario: s for s in self.scenarios if s.setting == setting}

    @property
    def setting_names(self) -> list[str]:
        return list(dict.fromkeys(s.setting for s in self.scenarios))


# ---- targets -------------------------------------------------------------------------------------------

TANDEM = "class-aware"


def _mean(result: ScenarioResult | None, policy: str, figure: str) -> float | None:
    found = result.policy(policy) if result else None
    return found.estimate(figure).mean if found else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def alone(report: RoutingReport, setting: str, figure: str) -> float | None:
    """The figure's "alone" reference in the setting: interactive figures from the TP replica serving
    interactive alone, batch figures from the PP replica serving batch alone (REFERENCES)."""
    scenario, policy = REFERENCES["batch" if figure.startswith("batch") else "interactive"]
    return _mean(report.of_setting(setting).get(scenario), policy, figure)


def goodput_ranking(steady: ScenarioResult) -> list[str]:
    """Policies by mean goodput, best first."""
    return sorted((p.policy for p in steady.policies), key=lambda name: -(_mean(steady, name, "goodput_req_s") or 0.0))


def _versus_alone(report: RoutingReport, setting: str, figure: str, target: str, bound: float) -> TargetCheck:
    """`figure` on the steady mix under class-aware over its alone reference: a latency (`_ms`) is
    met at most `bound` times the reference, a throughput at least `bound` times it."""
    alone_scenario, alone_policy = REFERENCES["batch" if figure.startswith("batch") else "interactive"]
    value = _ratio(_mean(report.of_setting(setting).get("steady"), TANDEM, figure), alone(report, setting, figure))
    latency = figure.endswith("_ms")
    met = None if value is None else (value <= bound if latency else value >= bound)
    return TargetCheck(
        setting=setting,
        target=target,
        value=value,
        bound=bound,
        met=met,
        detail=f"steady mix under {TANDEM} vs {alone_scenario} under {alone_policy}; "
        f"{'at most' if latency else 'at least'} {bound:g}x",
    )


def check_targets(report: RoutingReport, setting: str) -> list[TargetCheck]:
    """The issue's targets for one setting: class-aware on the steady mix against the alone references
    and against every baseline's goodput."""
    steady = report.of_setting(setting).get("steady")
    checks = [
        _versus_alone(report, setting, "interactive_ttft_p99_ms", "interactive TTFT p99 / TP replica alone", 1.2),
        _versus_alone(report, setting, "batch_output_tok_s", "batch output tok/s / PP replica alone", 0.95),
    ]
    if steady is not None:
        ours = _mean(steady, TANDEM, "goodput_req_s")
        rivals = {p.policy: _mean(steady, p.policy, "goodput_req_s") for p in steady.policies if p.policy != TANDEM}
        best_name, best = max(rivals.items(), key=lambda item: item[1] or 0.0) if rivals else ("-", None)
        ratio = _ratio(ours, best)
        checks.append(
            TargetCheck(
                setting=setting,
                target="goodput / best baseline's",
                value=ratio,
                bound=1.0,
                met=None if ratio is None else ratio > 1.0,
                detail=f"steady mix; best baseline {best_name}; ranking: {' > '.join(goodput_ranking(steady))}",
            )
        )
    return checks


def ordering_check(report: RoutingReport, simulated: str, live: str) -> TargetCheck:
    """Live: the same ordering of policies by steady-mix goodput as simulated (Kendall's tau = 1)."""
    sim, real = report.of_setting(simulated).get("steady"), report.of_setting(live).get("steady")
    if sim is None or real is None:
        return TargetCheck(
            setting=live, target="policy ordering as simulated", value=None, bound=1.0, met=None, detail="missing runs"
        )
    sim_rank, live_rank = goodput_ranking(sim), goodput_ranking(real)
    common = [p for p in sim_rank if p in live_rank]
    tau = kendall_tau([sim_rank.index(p) for p in common], [live_rank.index(p) for p in common])
    return TargetCheck(
        setting=live,
        target=f"policy ordering as in {simulated}",
        value=tau,
        bound=1.0,
        met=None if tau is None else tau >= 1.0,
        detail=f"Kendall tau of goodput rankings; simulated {' > '.join(sim_rank)}; live {' > '.join(live_rank)}",
    )


def kendall_tau(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Rank agreement in [-1, 1]: 1 is the same order, -1 the reverse (ties count as neither)."""
    pairs = [(i, j) for i in range(len(first)) for j in range(i + 1, len(first))]
    if not pairs:
        return None
    score = sum(
        (
            1
            if (first[i] - first[j]) * (second[i] - second[j]) > 0
            else -1
            if (first[i] - first[j]) * (second[i] - second[j]) < 0
            else 0
        )
        for i, j in pairs
    )
    return score / len(pairs)


# ---- tables, markdown, plots ---------------------------------------------------------------------------

TABLE_FIGURES = (
    "interactive_ttft_p50_ms",
    "interactive_ttft_p99_ms",
    "interactive_tpot_p50_ms",
    "batch_output_tok_s",
    "interactive_goodput_req_s",
    "batch_goodput_req_s",
    "goodput_req_s",
    "failed",
)


def table_rows(result: ScenarioResult) -> list[list[str]]:
    return [[p.policy, *(p.estimate(f).text() for f in TABLE_FIGURES)] for p in result.policies]


def markdown_tables(report: RoutingReport) -> str:
    """One table per (setting, scenario), then the targets: what docs/routing.md embeds."""
    lines: list[str] = []
    header = "| policy | " + " | ".join(FIGURES[f] for f in TABLE_FIGURES) + " |"
    rule = "|" + "---|" * (len(TABLE_FIGURES) + 1)
    for setting in report.setting_names:
        lines.append(f"### {setting}\n")
        for scenario, result in report.of_setting(setting).items():
            n = max((p.estimate("goodput_req_s").n for p in result.policies), default=0)
            lines += [f"**{scenario}**: {result.description} (n={n}; mean ±95% CI)\n", header, rule]
            for policy, row in zip(result.policies, table_rows(result), strict=True):
                name = f"**{row[0]}**" if row[0] == TANDEM else row[0]
                lines.append("| " + " | ".join([name, *row[1:]]) + " |")
                if policy.note:
                    lines.append(f"| ↳ {policy.note} |" + " |" * len(TABLE_FIGURES))
            lines.append("")
    lines += yield_tables(report)
    if report.targets:
        lines += ["### Targets\n", "| setting | target | value | bound | met | how |", "|---|---|---|---|---|---|"]
        for t in report.targets:
            value = "-" if t.value is None else f"{t.value:.2f}"
            met = {True: "yes", False: "**no**", None: "-"}[t.met]
            lines.append(f"| {t.setting} | {t.target} | {value} | {t.bound:g} | {met} | {t.detail} |")
        lines.append("")
    return "\n".join(lines)


YIELD_FIGURES = (
    "interactive_tpot_p50_ms",
    "interactive_goodput_req_s",
    "batch_goodput_req_s",
    "goodput_req_s",
    "batch_held_fraction",
    "interactive_replica_busy",
    "batch_replica_busy",
)


def _times(value: float | None, reference: float | None) -> str:
    ratio = _ratio(value, reference)
    return "" if ratio is None else f" ({ratio:.2f}x)"


YIELD_COLUMNS = (
    "batch yield",
    "int. TTFT p99 ms (x alone)",
    "batch out tok/s (x alone)",
    *(FIGURES[f] for f in YIELD_FIGURES),
)


def yield_settings(report: RoutingReport) -> list[str]:
    return list(dict.fromkeys(p.setting for p in report.yield_sweep))


def yield_rows(report: RoutingReport, setting: str) -> list[list[str]]:
    """One row per batch-yield point of the setting (YIELD_COLUMNS); TTFT p99 and batch tok/s also
    as multiples of their "alone" references."""
    ttft_alone, tok_alone = (
        alone(report, setting, "interactive_ttft_p99_ms"),
        alone(report, setting, "batch_output_tok_s"),
    )
    rows = []
    for point in (p for p in report.yield_sweep if p.setting == setting):
        ttft, tok = point.result.estimate("interactive_ttft_p99_ms"), point.result.estimate("batch_output_tok_s")
        rows.append(
            [
                point.label,
                ttft.text() + _times(ttft.mean, ttft_alone),
                tok.text() + _times(tok.mean, tok_alone),
                *(point.result.estimate(f).text() for f in YIELD_FIGURES),
            ]
        )
    return rows


def yield_tables(report: RoutingReport) -> list[str]:
    """The batch-yield sweep as markdown, a table per setting."""
    lines: list[str] = []
    for setting in yield_settings(report):
        points = [p for p in report.yield_sweep if p.setting == setting]
        n = max(p.result.estimate("goodput_req_s").n for p in points)
        release = ", ".join(sorted({f"{p.release_s:g} s" for p in points}))
        lines += [
            f"**batch yielding, {setting}**: class-aware on the steady mix; a hold cut short by its bound "
            f"is followed by {release} at the full batch limit (n={n}; mean ±95% CI)\n",
            "| " + " | ".join(YIELD_COLUMNS) + " |",
            "|" + "---|" * len(YIELD_COLUMNS),
            *("| " + " | ".join(row) + " |" for row in yield_rows(report, setting)),
            "",
        ]
    return lines


BEGIN, END = "<!-- routing-results:begin -->", "<!-- routing-results:end -->"


def replace_results(document: str, tables: str) -> str:
    """docs/routing.md with the text between the results markers replaced by `tables`."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(document):
        raise ValueError(f"the document has no {BEGIN} ... {END} section to fill")
    return pattern.sub(lambda _: f"{BEGIN}\n{tables}\n{END}", document)


PLOT_FIGURES = ("interactive_ttft_p99_ms", "interactive_tpot_p50_ms", "batch_output_tok_s", "goodput_req_s")


def plot_scenario(report: RoutingReport, scenario: str, path: Path) -> Path:
    """One chart per scenario: a panel per figure, a bar per policy (with its CI), a group per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in report.setting_names if scenario in report.of_setting(s)]
    policies = list(dict.fromkeys(p.policy for s in settings for p in report.of_setting(s)[scenario].policies))
    fig, axes = plt.subplots(
        len(settings), len(PLOT_FIGURES), figsize=(4 * len(PLOT_FIGURES), 3 * len(settings)), squeeze=False
    )
    colors = plt.get_cmap("tab10")
    for row, setting in enumerate(settings):
        result = report.of_setting(setting)[scenario]
        for col, figure in enumerate(PLOT_FIGURES):
            ax = axes[row][col]
            for index, name in enumerate(policies):
                found = result.policy(name)
                estimate = found.estimate(figure) if found else Estimate.of([])
                if estimate.mean is None:
                    continue
                ax.bar(index, estimate.mean, yerr=estimate.half_width or None, color=colors(index), capsize=3,
                       edgecolor="black" if name == TANDEM else None, linewidth=1.5 if name == TANDEM else 0)  # fmt: skip
            if figure.endswith("_ms"):  # tails span 100 ms to minutes
                ax.set_yscale("log")
            ax.set_xticks(range(len(policies)), policies, rotation=35, ha="right", fontsize=7)
            ax.set_title(f"{FIGURES[figure]}\n{setting}", fontsize=8)
    fig.suptitle(f"{scenario}: {report.of_setting(settings[0])[scenario].description}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _draw_lever(
    ax: Any,  # a matplotlib Axes (matplotlib is not type-checked here: pyproject.toml)
    x: list[float],
    y: list[float],
    points: list[YieldPoint],
    color: str = "tab:blue",
    label: str | None = None,
) -> None:
    """The hold-to-zero points as a line in order of their hold bound, a fraction above zero as
    squares, "off" as a star."""
    held = sorted((p.max_hold_s, xi, yi) for xi, yi, p in zip(x, y, points, strict=True) if p.fraction == 0)
    ax.plot([h[1] for h in held], [h[2] for h in held], "o-", color=color, label=label)
    for xi, yi, point in zip(x, y, points, strict=True):
        if point.fraction > 0:
            ax.plot(
                xi, yi, "*" if point.fraction >= 1 else "s", color=color, markersize=10 if point.fraction >= 1 else 6
            )


def plot_yield(report: RoutingReport, path: Path) -> Path:
    """The batch-yield trade-off, a row per setting: interactive TTFT p99 and TPOT p50 (as multiples
    of the TP replica alone) and goodput, each against batch output (as a multiple of the PP replica
    alone); the issue's targets as dashed lines (the corner they bound is where both are met)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = yield_settings(report)
    fig, axes = plt.subplots(len(settings), 3, figsize=(14, 3.6 * len(settings)), squeeze=False)
    for row, setting in enumerate(settings):
        points = [p for p in report.yield_sweep if p.setting == setting]
        tok_alone = alone(report, setting, "batch_output_tok_s")
        x = [_ratio(p.result.estimate("batch_output_tok_s").mean, tok_alone) or 0.0 for p in points]
        panels = (
            ("interactive_ttft_p99_ms", "int. TTFT p99 / alone", 1.2),
            ("interactive_tpot_p50_ms", "int. TPOT p50 / alone", None),
        )
        for col, (figure, title, bound) in enumerate(panels):
            ax, reference = axes[row][col], alone(report, setting, figure)
            y = [_ratio(p.result.estimate(figure).mean, reference) or 0.0 for p in points]
            _draw_lever(ax, x, y, points)
            for xi, yi, point in zip(x, y, points, strict=True):
                ax.annotate("off" if point.fraction >= 1 else f"{point.fraction:g}/{point.max_hold_s:g}s", (xi, yi), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))  # fmt: skip
            if bound is not None:
                ax.axhline(bound, color="tab:red", linestyle="--", linewidth=1)
            ax.axvline(0.95, color="tab:red", linestyle="--", linewidth=1)
            ax.set_xlabel("batch output tok/s / PP replica alone")
            ax.set_title(f"{title}\n{setting}", fontsize=8)
        ax = axes[row][2]
        for figure, color in (
            ("goodput_req_s", "black"),
            ("batch_goodput_req_s", "tab:orange"),
            ("interactive_goodput_req_s", "tab:green"),
        ):
            estimates = [p.result.estimate(figure) for p in points]
            ax.errorbar(
                x,
                [e.mean or 0.0 for e in estimates],
                yerr=[e.half_width for e in estimates],
                fmt="none",
                ecolor=color,
                capsize=2,
            )
            _draw_lever(ax, x, [e.mean or 0.0 for e in estimates], points, color=color, label=FIGURES[figure])
        ax.axvline(0.95, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlabel("batch output tok/s / PP replica alone")
        ax.set_title(f"goodput req/s\n{setting}", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("batch yielding on the steady mix: held to 0 with the hold bound swept (line), held to a fraction (squares), "
                 "off (star); labels: fraction / longest hold", fontsize=9)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
