"""The model against every single-box measurement in data/calibration.yaml: within 25%.

The points marked `holdout` were fitted to nothing (the llama.cpp runs at 4096- and
8192-token prompts and at depth up to 32k): they check that the constants fitted at 512 tokens
carry over to long contexts. See docs/perfmodel.md for the table.
"""

from __future__ import annotations

import pytest

from tuner.perfmodel.calibration import CALIBRATION_HARDWARE, Comparison, calibration_points, compare
from tuner.perfmodel.hardware import load_hardware

TOLERANCE = 0.25

RESULTS = compare()


@pytest.mark.parametrize("result", RESULTS, ids=[f"{i}: {c.point.label}" for i, c in enumerate(RESULTS)])
def test_within_25_percent_of_measurement(result: Comparison) -> None:
    assert abs(result.ratio - 1) <= TOLERANCE, (
        f"{result.point.label}: model {result.predicted_tok_s:.1f} vs measured {result.point.measured_tok_s}"
    )


def test_every_point_has_a_source_and_the_set_uses_one_box_only() -> None:
    assert load_hardware(CALIBRATION_HARDWARE).devices == 1
    assert all(p.source for p in calibration_points())


def test_holdout_points_check_every_calibrated_model_at_long_context() -> None:
    holdout = [p for p in calibration_points() if p.holdout]
    fitted = {p.model for p in calibration_points() if not p.holdout and p.engine == "llama.cpp"}
    assert {p.model for p in holdout} == fitted
    assert min(p.context for p in holdout) > 4096 and max(p.batch for p in holdout) == 32
