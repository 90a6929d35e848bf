"""The model against every single-box measurement in data/calibration.yaml: within 25%.

llama.cpp's llama-batched-bench points at 2-16 sequences are known misses, kept and listed so
that a change that fixes (or worsens) them shows: that tool feeds every sequence the same token,
and at B=2 its step costs nearly twice a B=1 step although it reads the same weights, a kernel
switch (matrix-vector at B=1, tiled MMQ beyond) that a roofline cannot express. The three models'
B=32 points also disagree on the per-token cost of that kernel by 2x (0.011-0.021 of peak), more
than one engine constant can cover. See docs/perfmodel.md.
"""

from __future__ import annotations

import pytest

from tuner.perfmodel.calibration import calibration_points, compare

TOLERANCE = 0.25

KNOWN_MISSES = {
    f"llama.cpp {model} decode B={batch} ctx=528"
    for model, batches in {
        "gpt-oss-20b": (2, 4, 8, 32),
        "gpt-oss-120b": (2, 4, 8, 16),
        "qwen3-coder-30b-a3b": (2, 4, 8, 16, 32),
    }.items()
    for batch in batches
}

RESULTS = {c.point.label: c for c in compare()}


@pytest.mark.parametrize(
    "label",
    [
        pytest.param(p.label, marks=pytest.mark.xfail(strict=True, reason="llama-batched-bench kernel regime"))
        if p.label in KNOWN_MISSES
        else p.label
        for p in calibration_points()
    ],
)
def test_within_25_percent_of_measurement(label: str) -> None:
    result = RESULTS[label]
    assert abs(result.ratio - 1) <= TOLERANCE, f"{label}: model {result.predicted_tok_s:.1f} vs measured {result.point.measured_tok_s}"


def test_every_point_has_a_source_and_the_set_uses_one_box_only() -> None:
    from tuner.perfmodel.calibration import CALIBRATION_HARDWARE
    from tuner.perfmodel.hardware import load_hardware

    assert load_hardware(CALIBRATION_HARDWARE).devices == 1
    assert all(p.source for p in calibration_points())
    assert KNOWN_MISSES <= set(RESULTS), "a known miss names a point that no longer exists"
