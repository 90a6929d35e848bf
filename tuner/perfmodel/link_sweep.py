"""Where the TP-vs-PP decision flips as the link between the two halves of a replica changes.

TP=2 pays two all-reduces per layer on the link; PP=2 pays one hand-off per step but runs its
stages one after the other for a single micro-batch. Which wins therefore depends on the link's
small-message latency (decode: a few KB per all-reduce) and its bandwidth (prefill: megabytes).
`sweep_link` scales the TP link's all-reduce and send/recv models, latency and bandwidth apart,
around a reference link and reports, per concurrency, PP/TP output throughput and TP/PP TPOT:
above 1 the first layout wins. `tuner predict --link-sweep` prints and plots it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from tuner.perfmodel.architecture import ModelArchitecture
from tuner.perfmodel.collectives import LinkProfile
from tuner.perfmodel.engine import EngineProfile, EngineSettings
from tuner.perfmodel.hardware import HardwareProfile, with_link
from tuner.perfmodel.predict import Layout, build_replica, predict_replica
from tuner.workloads import Workload

LATENCY_SCALES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
BANDWIDTH_SCALES: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0)

Axis = Literal["latency", "bandwidth"]


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """PP=2 vs TP=2 at one link and one concurrency (None where a layout does not fit)."""

    axis: Axis
    scale: float
    latency_us: float
    """The link's 8 KB all-reduce time."""
    bandwidth_gbs: float
    """The link's large-message all-reduce bandwidth."""
    concurrency: int
    pp_over_tp_throughput: float | None
    tp_over_pp_tpot: float | None


LayoutRow = tuple[int, float | None, float | None]
"""(concurrency, PP/TP output tok/s, TP/PP TPOT); None where a layout cannot serve it."""


def scaled_link(link: LinkProfile, latency: float = 1.0, bandwidth: float = 1.0) -> LinkProfile:
    """`link` with every latency times `latency` and every bandwidth times `bandwidth`."""
    note = f"what-if: {link.name}, latency x{latency:g}, bandwidth x{bandwidth:g}"
    update: dict[str, object] = {
        "name": note,
        "allreduce": link.allreduce.scaled(latency, bandwidth, note),
        "p2p": link.p2p.scaled(latency, bandwidth, note),
        "measured": None,
    }
    if link.allgather is not None:
        update["allgather"] = link.allgather.scaled(latency, bandwidth, note)
    return link.model_copy(update=update)


def compare_layouts(
    model: ModelArchitecture,
    hardware: HardwareProfile,
    workload: Workload,
    levels: Sequence[int],
    settings: EngineSettings | None = None,
    engine: EngineProfile | None = None,
) -> list[LayoutRow]:
    """(concurrency, PP/TP output tok/s, TP/PP TPOT) for TP=2 vs PP=2 on `hardware`."""
    tp = build_replica(model, hardware, Layout(tp=2), workload, settings, engine)
    pp = build_replica(model, hardware, Layout(pp=2), workload, settings, engine)
    rows: list[LayoutRow] = []
    for c in levels:
        t, p = predict_replica(tp, workload, c), predict_replica(pp, workload, c)
        if t.output_tok_s is None or p.output_tok_s is None or t.tpot_ms is None or p.tpot_ms is None:
            rows.append((c, None, None))
        else:
            rows.append((c, p.output_tok_s / t.output_tok_s, t.tpot_ms / p.tpot_ms))
    return rows


def sweep_link(
    hardware: HardwareProfile,
    compare: Callable[[HardwareProfile], list[LayoutRow]],
    latency_scales: Sequence[float] = LATENCY_SCALES,
    bandwidth_scales: Sequence[float] = BANDWIDTH_SCALES,
) -> list[SweepPoint]:
    """PP/TP ratios with the TP=2 link's latency scaled (bandwidth as is), then its bandwidth
    scaled (latency as is), around `hardware`'s own link; `compare` answers for one hardware
    (compare_layouts with the model, workload and levels bound)."""
    link = hardware.link_for(2)
    if link is None:
        raise ValueError(f"hardware {hardware.name!r} has fewer than two devices: nothing to sweep")
    points = []
    sweeps: tuple[tuple[Axis, Sequence[float]], ...] = (("latency", latency_scales), ("bandwidth", bandwidth_scales))
    for axis, scales in sweeps:
        for scale in scales:
            what_if = scaled_link(link, scale, 1.0) if axis == "latency" else scaled_link(link, 1.0, scale)
            for c, rate, tpot in compare(with_link(hardware, 2, what_if)):
                points.append(
                    SweepPoint(
                        axis=axis,
                        scale=scale,
                        latency_us=what_if.allreduce.small_message_latency_us,
                        bandwidth_gbs=what_if.allreduce.large_message_bandwidth_gbs,
                        concurrency=c,
                        pp_over_tp_throughput=rate,
                        tp_over_pp_tpot=tpot,
                    )
                )
    return points
