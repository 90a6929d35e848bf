"""Cost of one collective (all-reduce, all-gather, point-to-point send) as a function of message size.

The model is physical, in the spirit of NCCL's own protocol model (src/graph/tuning.cc): a
collective runs in one of a few *regimes* (NCCL's LL, LL128 and Simple protocols, or gloo's
algorithms on CPUs), each costing a fixed latency plus the message over that regime's bandwidth:

    t(n) = latency_r + n / bandwidth_r      for the regime r whose size range holds n

Small messages take a low-latency, low-bandwidth regime (LL sends 4 bytes of flag with every 4
bytes of data); large ones a high-bandwidth regime with a larger start-up cost (Simple). A regime's
two figures are fitted only to measurements of that topology (its `points`, each with its source),
and past the last measured point the cost grows by the last regime's bandwidth alone: nothing
is interpolated across sizes nobody measured, and no point from another topology bends the curve.
Points kept for reference (another topology, a misconfigured link) carry `fitted: false`.

Bandwidths are algorithm bandwidths (message bytes / time). For a two-rank all-reduce that equals
NCCL's bus bandwidth (busbw = algbw x 2(n-1)/n, nccl-tests doc/PERFORMANCE.md).

`fit_regimes` is the fit `tuner probe-link` runs on its measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.perfmodel.sourced import Figure, FigureKind

CONTINUITY_TOLERANCE = 0.02
"""How far (relative) a regime may start below where the previous one ends: measurement noise,
not a faster protocol (a collective never gets cheaper by growing)."""


class CollectivePoint(BaseModel):
    """One measured (or derived) collective time for one message size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: float = Field(gt=0)
    microseconds: float = Field(gt=0)
    kind: FigureKind
    source: str
    note: str = ""
    fitted: bool = Field(True, description="False for a reference point the regimes were not fitted to.")


class Regime(BaseModel):
    """One protocol's cost line, used from `from_bytes` up to the next regime's start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: str = Field(min_length=1, description="NCCL's LL / LL128 / Simple, or the fit's name for it.")
    from_bytes: float = Field(0.0, ge=0)
    latency_us: Figure = Field(
        description="The line's intercept: the start-up cost for the first regime. A later regime's may be "
        "below it, even negative, where caches overflow and the cost per byte rises past a kink."
    )
    bandwidth_gbs: Figure

    def seconds(self, nbytes: float) -> float:
        return self.latency_us.value * 1e-6 + nbytes / (self.bandwidth_gbs.value * 1e9)


class CollectiveModel(BaseModel):
    """Time of one collective vs message size: regimes of latency + size / bandwidth."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regimes: tuple[Regime, ...] = Field(min_length=1)
    points: tuple[CollectivePoint, ...] = ()

    @model_validator(mode="after")
    def _physical(self) -> CollectiveModel:
        starts = [r.from_bytes for r in self.regimes]
        if starts[0] != 0 or starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ValueError("regimes must start at 0 bytes and at distinct, ascending sizes")
        if self.regimes[0].latency_us.value < 0:
            raise ValueError(f"regime {self.regimes[0].protocol}: the smallest messages' latency must be >= 0")
        for r in self.regimes:
            if r.bandwidth_gbs.value <= 0 or r.seconds(r.from_bytes) <= 0:
                raise ValueError(f"regime {r.protocol}: bandwidth must be > 0 and its cost positive where it starts")
        for before, after in zip(self.regimes, self.regimes[1:], strict=False):
            edge = after.from_bytes
            if after.seconds(edge) < before.seconds(edge) * (1 - CONTINUITY_TOLERANCE):
                raise ValueError(
                    f"regime {after.protocol} starts at {edge:.0f} bytes below where {before.protocol} ends: "
                    "a larger message cannot take less time"
                )
        sizes = [p.bytes for p in self.points]
        if sizes != sorted(sizes):
            raise ValueError("collective points must be in ascending size order")
        return self

    def regime_for(self, nbytes: float) -> Regime:
        chosen = self.regimes[0]
        for regime in self.regimes:
            if nbytes >= regime.from_bytes:
                chosen = regime
        return chosen

    def seconds(self, nbytes: float) -> float:
        """Time of one collective moving `nbytes` (0 bytes costs nothing: no call is made)."""
        if nbytes <= 0:
            return 0.0
        return self.regime_for(nbytes).seconds(nbytes)

    @property
    def large_message_bandwidth_gbs(self) -> float:
        """The bandwidth the cost grows by past the last regime's start (the largest messages)."""
        return self.regimes[-1].bandwidth_gbs.value

    @property
    def small_message_latency_us(self) -> float:
        """What an 8 KB message costs, the size nccl-tests and the public Spark figures quote first."""
        return self.seconds(8192) * 1e6

    def fitted_points(self) -> list[CollectivePoint]:
        return [p for p in self.points if p.fitted]

    def scaled(self, latency: float = 1.0, bandwidth: float = 1.0, note: str = "") -> CollectiveModel:
        """The same regimes with every latency times `latency` and every bandwidth times `bandwidth`
        (what-if links for `tuner predict --link-sweep`); measured points are dropped (they no
        longer describe this curve). Regime starts move so that each still begins where the
        scaled lines meet, keeping the curve continuous and monotone."""
        source = note or f"scaled: latency x{latency:g}, bandwidth x{bandwidth:g}"
        regimes = [
            r.model_copy(
                update={
                    "latency_us": Figure(value=r.latency_us.value * latency, kind="derived", source=source),
                    "bandwidth_gbs": Figure(value=r.bandwidth_gbs.value * bandwidth, kind="derived", source=source),
                }
            )
            for r in self.regimes
        ]
        return CollectiveModel(regimes=tuple(_reconnect(regimes)))


class LinkMeasurement(BaseModel):
    """Where a measured link profile came from (written by `tuner probe-link`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    date: str
    backend: str
    nodes: tuple[str, ...] = ()
    environment: dict[str, str] = Field(default_factory=dict, description="NCCL_*/GLOO_* variables in force.")
    iterations: int = 0
    torch_version: str = ""
    nccl_version: str = ""
    transport: str = Field("", description="NET/IB, NET/Socket, P2P, SHM (NCCL's log) or gloo/TCP.")


class LinkProfile(BaseModel):
    """A link between devices, described by its collective models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    allreduce: CollectiveModel
    p2p: CollectiveModel
    allgather: CollectiveModel | None = None
    control_roundtrip_us: Figure | None = Field(
        None,
        description="A driver-to-worker Ray call and back across this link: the per-step control cost of a layout "
        "spanning nodes (vLLM's Ray executor). None where unmeasured: not charged.",
    )
    measured: LinkMeasurement | None = None


# ---- fitting -------------------------------------------------------------------------------------

FIT_GOOD_ENOUGH = 0.05
"""The fewest regimes whose worst point is within this relative error wins (Occam: a protocol
switch is only claimed where one regime cannot explain the points)."""
MAX_REGIMES = 3
"""NCCL has three protocols."""


def _line(points: Sequence[tuple[float, float]], first: bool) -> tuple[float, float]:
    """(intercept s, seconds per byte) minimizing the squared *relative* error over the points,
    with a positive per-byte cost (a collective cannot speed up with size) and, for the first
    regime, a latency >= 0 (later regimes' intercepts are where their line would cross 0 bytes)."""
    if len(points) == 1:
        n, t = points[0]
        return t, 1e-15
    # Weighted least squares of t = a + c n with weights 1/t^2.
    sw = sum(1 / t**2 for _, t in points)
    sn = sum(n / t**2 for n, t in points)
    snn = sum(n * n / t**2 for n, t in points)
    st = sum(1 / t for _, t in points)
    snt = sum(n / t for n, t in points)
    det = sw * snn - sn * sn
    a, c = ((snn * st - sn * snt) / det, (sw * snt - sn * st) / det) if det > 0 else (-1.0, -1.0)
    if a < 0 and first:  # bandwidth-bound through the origin
        a, c = 0.0, snt / snn
    if c <= 0:  # flat: latency-bound
        a, c = st / sw, 1e-15
    return a, c


def _round(value: float, digits: int = 4) -> float:
    """`digits` significant digits: what a measurement supports, and a readable data file."""
    return float(f"{value:.{digits}g}")


def _worst_error(model: CollectiveModel, points: Sequence[tuple[float, float]]) -> float:
    return max(abs(model.seconds(n) - t) / t for n, t in points)


def _reconnect(regimes: list[Regime]) -> list[Regime]:
    """Start each regime where its line meets the previous one, so the curve is continuous: a
    faster-per-byte regime takes over past the crossing (a protocol switch: the curve bends down),
    a slower-per-byte one too (caches overflowing: it bends up). A regime parallel to the previous
    one is dropped (it would never meet it)."""
    kept = [regimes[0].model_copy(update={"from_bytes": 0.0})]
    for regime in regimes[1:]:
        prev = kept[-1]
        lat_gap = regime.latency_us.value - prev.latency_us.value  # us
        inv_gap = 1 / (prev.bandwidth_gbs.value * 1e3) - 1 / (regime.bandwidth_gbs.value * 1e3)  # us per byte
        if inv_gap == 0:
            continue
        meet = float(math.ceil(lat_gap / inv_gap))
        if meet <= prev.from_bytes:
            raise ValueError(f"regime {regime.protocol} would take over before {prev.protocol} starts")
        kept.append(regime.model_copy(update={"from_bytes": meet}))
    return kept


NOISE_NOTE = "above the fitted curve: taken as noise (on a shared machine noise only adds time), not fitted"
"""The note on a measured point the fit set aside."""


def _fit_once(ordered: Sequence[CollectivePoint], source: str, names: Sequence[str]) -> tuple[float, CollectiveModel]:
    """Every split of the fitted points into 1-3 contiguous runs, fitted run by run; the fewest
    regimes within FIT_GOOD_ENOUGH (else the best) and its worst relative error."""
    data = [(p.bytes, p.microseconds * 1e-6) for p in ordered if p.fitted]
    if not data:
        raise ValueError("no fitted points to fit regimes to")
    best: tuple[float, CollectiveModel] | None = None
    for count in range(1, min(MAX_REGIMES, len(data)) + 1):
        for cuts in combinations(range(2, len(data) - 1), count - 1):
            bounds = (0, *cuts, len(data))
            runs = [data[lo:hi] for lo, hi in zip(bounds, bounds[1:], strict=False)]
            if any(len(run) < 2 for run in runs) and len(data) > 1:
                continue
            regimes = []
            for i, run in enumerate(runs):
                a, c = _line(run, first=i == 0)
                regimes.append(
                    Regime(
                        protocol=names[i] if count > 1 else "single",
                        from_bytes=run[0][0] if i else 0.0,
                        latency_us=Figure(value=_round(a * 1e6), kind="measured", source=source),
                        bandwidth_gbs=Figure(value=_round(1 / c / 1e9), kind="measured", source=source),
                    )
                )
            try:
                model = CollectiveModel(regimes=tuple(_reconnect(regimes)), points=tuple(ordered))
            except ValueError:
                continue
            if model.regimes[-1].from_bytes > data[-1][0]:
                continue  # past the last point the cost must grow by one bandwidth alone
            error = _worst_error(model, data)
            if best is None or error < best[0] - 1e-12:
                best = (error, model)
        if best is not None and best[0] <= FIT_GOOD_ENOUGH:
            break
    assert best is not None
    return best


def fit_regimes(
    points: Sequence[CollectivePoint], source: str, names: Sequence[str] = ("small", "mid", "large")
) -> CollectiveModel:
    """Regimes fitted to measured points: every split of the sorted points into 1-3 contiguous
    runs is fitted run by run (latency + size / bandwidth, least relative squares), regimes meet
    where their lines cross, and the fewest regimes within FIT_GOOD_ENOUGH (else the best) win.

    While some point is off by more than twice that, the one furthest *above* the curve (if more
    than twice that above) is set aside as noise (`fitted: false`, with a note) and the rest
    refitted, at most half the points: a loaded machine only ever adds time, so the lower
    envelope is the link. Points the caller marked `fitted: false` stay out of the fit."""
    ordered = sorted(points, key=lambda p: p.bytes)
    budget = len([p for p in ordered if p.fitted]) // 2
    error, model = _fit_once(ordered, source, names)
    while error > 2 * FIT_GOOD_ENOUGH and budget > 0:
        fitted = [p for p in ordered if p.fitted]
        worst = max(fitted, key=lambda p: p.microseconds / (model.seconds(p.bytes) * 1e6))
        if worst.microseconds <= (1 + 2 * FIT_GOOD_ENOUGH) * model.seconds(worst.bytes) * 1e6:
            break  # the miss is a point below the curve: not noise, so keep it and the fit as they are
        ordered = [p.model_copy(update={"fitted": False, "note": NOISE_NOTE}) if p is worst else p for p in ordered]
        error, model = _fit_once(ordered, source, names)
        budget -= 1
    return model
