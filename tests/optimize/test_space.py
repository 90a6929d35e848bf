"""The search space: conditional knobs, exhaustive enumeration, the coarse grid, enqueueable points."""

from __future__ import annotations

import optuna

from tuner.optimize.space import BATCHED_TOKENS, MEMORY_SHARE, IntRange, SearchSpace, ShareRange

SHARES = ShareRange(0.1, 0.3)


def _space(shares: ShareRange | None = SHARES) -> SearchSpace:
    return SearchSpace(
        layouts=("tp1-pp1", "tp2-pp1", "tp1-pp2"),
        max_num_seqs=IntRange(16, 64, step=16),
        max_num_batched_tokens=IntRange(1024, 4096, step=1024),
        max_model_len=8192,
        memory_share=shares,
    )


def test_enumeration_matches_size_without_duplicates() -> None:
    space = _space()
    points = list(space.candidates())
    assert len(points) == space.size() == 3 * 4 * (4 + 1) * 5
    assert len(set(points)) == len(points)


def test_token_budget_is_sampled_only_with_chunked_prefill() -> None:
    space = _space(shares=None)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(30):
        trial = study.ask()
        candidate = space.suggest(trial)
        assert (BATCHED_TOKENS in trial.params) == candidate.enable_chunked_prefill
        if not candidate.enable_chunked_prefill:
            assert candidate.max_num_batched_tokens == space.max_model_len
        assert MEMORY_SHARE not in trial.params and candidate.memory_share is None
        assert space.from_params(trial.params) == candidate
        study.tell(trial, 0.0)


def test_enqueued_point_is_the_point_evaluated() -> None:
    space = _space()
    wanted = list(space.candidates())[37]
    study = optuna.create_study()
    study.enqueue_trial(wanted.params())
    assert space.suggest(study.ask()) == wanted


def test_grid_spreads_each_numeric_knob_over_its_range() -> None:
    grid = _space().grid(points_per_knob=3)
    assert grid["max_num_seqs"] == [16, 48, 64]
    assert grid["max_num_batched_tokens"] == [1024, 3072, 4096]
    assert grid["memory_share"] == [0.1, 0.2, 0.3]
