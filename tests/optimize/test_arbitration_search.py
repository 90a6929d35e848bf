"""The arbitration study (issue 23): each mode's settings, the references, and what is kept."""

from __future__ import annotations

import optuna
import pytest

from deploy.plan import load_plan, shipped_plan
from gateway.contract.config import RoutingSettings
from tuner.optimize.arbitration_search import (
    CAP_HOLD_S,
    References,
    SimulatedJudge,
    _suggest,
    arbitration_scenarios,
    missed_by,
    tune_arbitration,
    with_batch_budget,
)

PLAN = load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair"))


def test_each_mode_sets_only_its_own_settings() -> None:
    base = RoutingSettings(batch_yield_fraction=0.5)
    off = _suggest(optuna.trial.FixedTrial({"mode": "off"}), base, 256)
    assert (off.routing.arbitration.mode, off.routing.yielding.fraction, off.batch_tokens) == ("admission", 1.0, None)
    freeze = _suggest(optuna.trial.FixedTrial({"mode": "freeze", "freeze_max_s": 30.0}), base, 256)
    assert (freeze.routing.arbitration.mode, freeze.routing.yielding.fraction) == ("freeze", 1.0)
    assert freeze.routing.arbitration.max_s == 30.0 and freeze.batch_tokens is None
    params = {"mode": "bounded", "freeze_max_s": 10.0, "cap_fraction": 0.0625, "cap_settle_s": 5.0, "batch_tokens": 512}
    bounded = _suggest(optuna.trial.FixedTrial(params), base, 256)
    r = bounded.routing
    assert (r.arbitration.mode, r.yielding.fraction, r.yielding.settle_s) == ("freeze", 0.0625, 5.0)
    assert r.yielding.max_hold_s == CAP_HOLD_S and bounded.batch_tokens == 512
    assert "step budget 512" in bounded.label()


def test_a_budget_below_the_batch_size_is_never_tried() -> None:
    """vLLM refuses a step budget below max_num_seqs (deploy.plan checks it too)."""
    params = {"mode": "bounded", "freeze_max_s": 10.0, "cap_fraction": 0.0625, "cap_settle_s": 5.0, "batch_tokens": 256}
    with pytest.raises(ValueError):
        _suggest(optuna.trial.FixedTrial(params), RoutingSettings(), 512)


def test_named_loads_and_the_budget_reach_the_scenarios() -> None:
    scenarios = arbitration_scenarios(PLAN, "team", "saturating", 60)
    half = arbitration_scenarios(PLAN, "team", "half", 60)
    assert scenarios["mixed"].interactive.users == 20 and scenarios["mixed"].interactive.think_time_s == 120
    assert scenarios["mixed"].batch.rate_per_s == pytest.approx(2.5 * half["mixed"].batch.rate_per_s)
    assert scenarios["batch-only"].interactive.users == 0 and scenarios["interactive-only"].batch.rate_per_s == 0
    budgeted = with_batch_budget(scenarios["mixed"], 1024)
    assert {r.traffic_class: r.settings.max_num_batched_tokens for r in budgeted.replicas}["batch"] == 1024
    with pytest.raises(ValueError, match="unknown batch load"):
        arbitration_scenarios(PLAN, "team", "flood", 60)


def test_the_study_starts_from_off_and_keeps_the_point_nearest_the_targets() -> None:
    scenarios = arbitration_scenarios(PLAN, "team", "saturating", 240)
    base = RoutingSettings.model_validate(PLAN.gateway.routing.model_dump())
    storage = optuna.storages.InMemoryStorage()
    judge = SimulatedJudge(scenarios, base, seed=1)
    kept, outcome, trial = tune_arbitration("t.arbitration", storage, judge, base, n_trials=4, seed=1)
    study = optuna.load_study(study_name="t.arbitration", storage=storage)
    assert study.trials[0].params == {"mode": "off"}
    assert all(set(t.constraints) == {"tpot_p50_over_target", "batch_under_floor"} for t in study.trials)
    assert {t.user_attrs["judge"] for t in study.trials} == {"simulated"}
    if trial is not None:
        misses = [missed_by(t) for t in study.trials]
        assert missed_by(trial) == min(misses)  # the point nearest the targets (all met: 0)
        assert kept == _suggest(optuna.trial.FixedTrial(trial.params), base, 256)
        assert outcome.ttft_p99 == pytest.approx(trial.value)
    refs = References.simulated(scenarios, base, 1)
    assert 0 < refs.interactive_busy < 1 and refs.batch_floor_tok_s < refs.batch_tok_s


def test_missing_the_floor_by_a_tenth_is_nearer_than_slowing_every_chat_token() -> None:
    def trial(tpot_over: float, under_floor: float, ttft: float) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(
            value=ttft,
            system_attrs={"constraints": (tpot_over, under_floor)},
            params={},
            distributions={},
        )

    freeze, admission, met = trial(-0.1, 0.14, 2.3), trial(1.37, -1.3, 2.6), trial(-0.05, -0.2, 2.9)
    assert missed_by(met) == 0 and missed_by(freeze) == pytest.approx(0.14)
    assert missed_by(freeze) < missed_by(admission) == pytest.approx(1.37)
