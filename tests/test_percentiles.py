"""gateway.contract.percentiles is numpy.percentile's default (linear) definition, the one vLLM's benchmark uses."""

from __future__ import annotations

import ast
import random
import statistics
from pathlib import Path

import numpy as np
import pytest

from gateway.contract.percentiles import percentile, percentile_or_none


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 997])
def test_matches_numpy_linear_interpolation(size: int) -> None:
    rng = random.Random(size)
    values = [rng.expovariate(1 / 50) for _ in range(size)]
    for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


def test_matches_statistics_inclusive_quantiles() -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert [percentile(values, q) for q in range(1, 100)] == pytest.approx(cuts)


def test_interpolates_between_ranks_not_nearest_rank() -> None:
    # 10 and 20: the median is halfway, where a nearest-rank rule would answer 10 or 20.
    assert percentile([20.0, 10.0], 50) == 15.0
    assert percentile([0.0, 100.0], 99) == pytest.approx(99.0)


def test_an_empty_sample_or_a_bad_q_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)
    assert percentile_or_none([], 99) is None
    assert percentile_or_none([4.0], 99) == 4.0


# Estimates from a Prometheus histogram's buckets (PromQL's histogram_quantile interpolation within
# a bucket): no sample to take a percentile of, so not a second definition of one.
NOT_SAMPLE_PERCENTILES = {"benchmarks/gpu/arbitration_gpu.py:histogram_quantile"}


def test_no_module_defines_its_own_percentile() -> None:
    """One definition: a second one (nearest rank, say) makes two reports' p99 differ by method."""
    root = Path(__file__).resolve().parents[1]
    own = root / "gateway" / "contract" / "percentiles.py"
    twins = [
        f"{path.relative_to(root)}:{node.lineno} {node.name}"
        for folder in ("gateway", "deploy", "tuner", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        if path != own
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and ("percentile" in node.name.lower() or "quantile" in node.name.lower())
        and f"{path.relative_to(root)}:{node.name}" not in NOT_SAMPLE_PERCENTILES
    ]
    assert not twins, "use gateway.contract.percentiles instead:\n" + "\n".join(twins)
