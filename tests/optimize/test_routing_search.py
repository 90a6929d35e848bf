"""The routing study searches batch yielding beside the spill thresholds, and keeps what it found."""

from __future__ import annotations

import optuna

from gateway.contract.config import RoutingSettings
from tuner.optimize.routing_search import _suggest, tune_routing
from tuner.perfmodel.predict import Layout
from tuner.perfmodel.simulate import BatchLoad, InteractiveLoad, Scenario, SimReplica
from tuner.workloads import Workload

SCENARIO = Scenario(
    model="llama-3.1-8b",
    replicas=(
        SimReplica(name="interactive", traffic_class="interactive", layout=Layout(tp=2)),
        SimReplica(name="batch", traffic_class="batch", layout=Layout(pp=2)),
    ),
    interactive=InteractiveLoad(users=4, think_time_s=0.5, shape=Workload(input_len=256, output_len=64)),
    batch=BatchLoad(rate_per_s=1.0, shape=Workload(input_len=1024, output_len=64)),
    duration_s=40,
)


def test_a_trial_sets_batch_yielding_and_the_hold_only_while_batch_yields() -> None:
    spill = {"spill_queue_threshold": 4, "spill_release_threshold": 1, "spill_target_headroom": 8}
    held = _suggest(
        optuna.trial.FixedTrial({**spill, "batch_yield_fraction": 0.0, "batch_yield_max_hold_s": 45.0}),
        RoutingSettings(),
    )
    assert (held.yielding.fraction, held.yielding.max_hold_s) == (0.0, 45.0)
    free = _suggest(
        optuna.trial.FixedTrial({**spill, "batch_yield_fraction": 1.0}), RoutingSettings(batch_yield_max_hold_s=12.0)
    )
    assert (free.yielding.fraction, free.yielding.max_hold_s) == (1.0, 12.0)  # no hold asked for: the base's


def test_the_study_starts_from_the_base_and_returns_the_trial_it_kept() -> None:
    base = RoutingSettings(batch_yield_fraction=0.0, batch_yield_max_hold_s=30.0)
    storage = optuna.storages.InMemoryStorage()
    tuned, best = tune_routing("t.routing", storage, SCENARIO, base, n_trials=5, seed=3)
    study = optuna.load_study(study_name="t.routing", storage=storage)
    assert (
        study.trials[0].params["batch_yield_fraction"] == 0.0
        and study.trials[0].params["batch_yield_max_hold_s"] == 30.0
    )
    assert all("batch_yield_fraction" in t.params for t in study.trials)
    assert best is not None
    assert tuned == _suggest(optuna.trial.FixedTrial(best.params), base)
