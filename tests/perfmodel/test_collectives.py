"""The physical collective model: regimes of latency + size / bandwidth, fitted to measured points."""

from __future__ import annotations

import pytest

from tuner.perfmodel import known_hardware, load_hardware
from tuner.perfmodel.collectives import CollectiveModel, CollectivePoint, Regime, fit_regimes
from tuner.perfmodel.sourced import Figure

SIZES = [2**k for k in range(10, 31)]


def _models() -> list[tuple[str, CollectiveModel]]:
    found = []
    for name in known_hardware():
        hw = load_hardware(name)
        for link in (hw.intra_node_link, hw.inter_node_link):
            if link is not None:
                found += [(f"{name} all-reduce", link.allreduce), (f"{name} p2p", link.p2p)]
    return found


@pytest.mark.parametrize(("label", "model"), _models(), ids=[label for label, _ in _models()])
def test_shipped_models_reproduce_their_fitted_points_are_monotone_and_linear_past_the_last(
    label: str, model: CollectiveModel
) -> None:
    for point in model.fitted_points():
        assert model.seconds(point.bytes) == pytest.approx(point.microseconds * 1e-6, rel=0.10), label
    times = [model.seconds(s) for s in SIZES]
    assert times == sorted(times)
    last = max([p.bytes for p in model.fitted_points()] + [model.regimes[-1].from_bytes])
    step = 2**24
    slope = [(model.seconds(last + (i + 1) * step) - model.seconds(last + i * step)) / step for i in range(4)]
    assert slope == pytest.approx([1 / (model.large_message_bandwidth_gbs * 1e9)] * 4, rel=1e-6)


def test_spark_pair_prices_mid_size_messages_at_latency_plus_bandwidth() -> None:
    """The issue's example: a 5.9 MB all-reduce at 22 GB/s is about 0.3 ms, not 1.7 ms."""
    allreduce = load_hardware("dgx-spark-pair").inter_node_link.allreduce
    assert allreduce.seconds(5.9e6) == pytest.approx(63.5e-6 + 5.9e6 / 22e9, rel=1e-3)
    assert [r.protocol for r in allreduce.regimes] == ["LL", "Simple"]
    assert not any(p.fitted for p in allreduce.points if p.bytes > 65536)  # other topologies: reference only


def _synthetic(regimes: list[tuple[float, float, float]]) -> list[CollectivePoint]:
    """Points from an NCCL-like curve: (from_bytes, latency us, GB/s) regimes, cheapest wins."""
    points = []
    for k in range(13, 27):  # 8 KB .. 64 MB, as the probe measures
        n = 2**k
        us = min(lat + n / (bw * 1e3) for start, lat, bw in regimes if n >= start)
        points.append(CollectivePoint(bytes=n, microseconds=us, kind="measured", source="synthetic"))
    return points


@pytest.mark.parametrize(
    "truth",
    [
        [(0, 30, 22)],  # one protocol
        [(0, 20, 2), (0, 60, 20)],  # LL then Simple
        [(0, 8, 0.8), (0, 25, 6), (0, 120, 40)],  # LL, LL128, Simple
    ],
)
def test_fit_recovers_each_point_within_ten_percent(truth: list[tuple[float, float, float]]) -> None:
    points = _synthetic(truth)
    model = fit_regimes(points, source="test")
    for p in points:
        assert model.seconds(p.bytes) == pytest.approx(p.microseconds * 1e-6, rel=0.10)
    assert len(model.regimes) <= len(truth)
    assert model.large_message_bandwidth_gbs == pytest.approx(truth[-1][2], rel=0.10)
    times = [model.seconds(s) for s in SIZES]
    assert times == sorted(times)


def test_fit_bends_up_where_bandwidth_falls_with_size() -> None:
    """A CPU link whose messages outgrow the caches slows per byte: the fit follows it up."""
    points = _synthetic([(0, 40, 8)])
    points = [
        p if p.bytes <= 2**21 else p.model_copy(update={"microseconds": 40 + 2**21 / 8e3 + (p.bytes - 2**21) / 2e3})
        for p in points
    ]
    model = fit_regimes(points, source="test")
    for p in points:
        assert model.seconds(p.bytes) == pytest.approx(p.microseconds * 1e-6, rel=0.10)
    assert model.large_message_bandwidth_gbs == pytest.approx(2, rel=0.10)


def test_noisy_points_still_give_a_monotone_curve() -> None:
    points = _synthetic([(0, 30, 10)])
    wobble = [1.0, 1.08, 0.93, 1.05, 0.95, 1.1, 0.9, 1.0, 1.04, 0.97, 1.02, 0.99, 1.0, 1.01]
    noisy = [p.model_copy(update={"microseconds": p.microseconds * w}) for p, w in zip(points, wobble, strict=True)]
    model = fit_regimes(noisy, source="test")
    times = [model.seconds(s) for s in SIZES]
    assert times == sorted(times)


def _figure(value: float) -> Figure:
    return Figure(value=value, kind="assumed", source="test")


def test_a_regime_that_starts_cheaper_than_the_last_one_ends_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot take less time"):
        CollectiveModel(
            regimes=(
                Regime(protocol="LL", latency_us=_figure(30), bandwidth_gbs=_figure(1)),
                Regime(protocol="Simple", from_bytes=1e6, latency_us=_figure(10), bandwidth_gbs=_figure(20)),
            )
        )
    with pytest.raises(ValueError, match="start at 0"):
        CollectiveModel(regimes=(Regime(protocol="x", from_bytes=5, latency_us=_figure(1), bandwidth_gbs=_figure(1)),))


def test_scaled_link_moves_latency_and_bandwidth_and_stays_continuous() -> None:
    allreduce = load_hardware("dgx-spark-pair").inter_node_link.allreduce
    slow = allreduce.scaled(latency=2.0, bandwidth=0.25)
    assert slow.small_message_latency_us == pytest.approx(2 * 26.5 + 8192 / (0.25 * 1.638e3), rel=1e-3)
    assert slow.large_message_bandwidth_gbs == pytest.approx(5.5)
    for s in SIZES:
        assert slow.seconds(s) > allreduce.seconds(s)


def test_spikes_above_the_curve_are_set_aside_as_noise_not_fitted() -> None:
    """A loaded machine adds time to some sizes: those points are kept, marked, and not fitted."""
    points = _synthetic([(0, 20, 2), (0, 60, 20)])
    spiked = [
        p.model_copy(update={"microseconds": p.microseconds * 4}) if i in (2, 7, 11) else p
        for i, p in enumerate(points)
    ]
    model = fit_regimes(spiked, source="test")
    set_aside = [p.bytes for p in model.points if not p.fitted]
    assert set_aside == [spiked[i].bytes for i in (2, 7, 11)]
    for p in model.fitted_points():
        assert model.seconds(p.bytes) == pytest.approx(p.microseconds * 1e-6, rel=0.10)
    assert len(model.points) == len(spiked)  # nothing a probe measured is dropped
