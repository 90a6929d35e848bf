"""One Optuna study per model x cluster x traffic class: open or resume it, seed it, run its trials.

Studies live in an RDB storage (SQLite by default), named `<model>.<cluster>.<class>`, so the
same command resumes an interrupted run and optuna-dashboard can open it. The trial budget is
the study's total: a resumed study runs only what is missing, and a trial left RUNNING by an
interrupted process is marked FAIL and its point queued again.

Every trial records what it was (user attrs): the figures measured, the model's prediction of
them when the evaluator is live, the SLO constraints, and for an infeasible point its reason.
Infeasible points are PRUNED (TPE then steers away from them); points whose weights cannot fit
their memory share are pruned before the evaluator is called, so no live trial is spent on them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from deploy.plan import ServingPlan
from tuner.optimize.compose import (
    BASELINE,
    INFEASIBLE,
    MEASURED,
    PREDICTED,
    ROLE,
    WARM_START,
    tuned_replica,
)
from tuner.optimize.evaluators import Evaluator, Infeasible, ModelEvaluator, measurement_from_prediction
from tuner.optimize.objectives import ClassObjective
from tuner.optimize.space import Candidate, SearchSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STARTUP_TRIALS = 8
"""Random trials before TPE models the space: enough to see every layout, few enough to pay off early."""

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def study_name(model: str, cluster: str, traffic_class: str) -> str:
    return f"{model}.{cluster}.{traffic_class}"


def make_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    """Multivariate TPE, grouped for the conditional knobs. It reads each trial's constraints
    (`Trial.set_constraint`) and ranks infeasible trials after feasible ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group`, stable since 2.8
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, group=True)


def open_study(
    name: str,
    storage: str | optuna.storages.BaseStorage,
    objective: ClassObjective,
    sampler: optuna.samplers.BaseSampler,
) -> optuna.Study:
    """Create the study, or load it to resume; its directions must match the objective's."""
    study = optuna.create_study(
        study_name=name, storage=storage, directions=objective.directions, sampler=sampler, load_if_exists=True
    )
    wanted = [
        optuna.study.StudyDirection.MINIMIZE if d == "minimize" else optuna.study.StudyDirection.MAXIMIZE
        for d in objective.directions
    ]
    if study.directions != wanted:
        raise ValueError(
            f"study {name!r} in the storage optimises {study.directions}, not {wanted}; use another --storage"
        )
    study.set_user_attr("objective", objective.model_dump(mode="json"))
    return study


def recover_interrupted(study: optuna.Study) -> int:
    """Trials a killed run left RUNNING: mark them FAIL and queue their points again."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        # Optuna has no public call to fail a trial it no longer runs: its storage API does it
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(
            trial.params, user_attrs={k: v for k, v in trial.user_attrs.items() if k == ROLE}, skip_if_exists=True
        )
    return len(stale)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def warm_start(space: SearchSpace, objective: ClassObjective, predictor: ModelEvaluator, count: int) -> list[Candidate]:
    """The `count` best points of the space by the model's prediction (for a live study's first trials)."""
    scored: list[tuple[float, Candidate]] = []
    for candidate in space.candidates():
        prediction = predictor.predict(candidate, objective.concurrency)
        if not prediction.fits:
            continue
        measured = measurement_from_prediction(prediction)
        if any(c > 0 for c in objective.constraints(measured).values()):
            continue
        # Lower is better: log-figures added, so each objective weighs by ratio, not by unit.
        score = sum(
            math.log(max(v, 1e-9)) * (1 if d == "minimize" else -1)
            for v, d in zip(objective.values(measured), objective.directions, strict=True)
        )
        scored.append((score, candidate))
    scored.sort(key=lambda sc: sc[0])
    picked: list[Candidate] = []
    for _, candidate in scored:
        if all(candidate.layout != p.layout or candidate.max_num_seqs != p.max_num_seqs for p in picked):
            picked.append(candidate)  # distinct enough to be worth a deployment each
        if len(picked) == count:
            break
    return picked


def _set_constraints(trial: optuna.Trial, constraints: dict[str, float]) -> None:
    for name, value in constraints.items():
        trial.set_constraint(name, value)


@dataclass
class ClassStudy:
    """Everything one class's study needs to run a trial."""

    study: optuna.Study
    space: SearchSpace
    objective: ClassObjective
    template: ServingPlan
    evaluator: Evaluator
    predictor: ModelEvaluator | None
    """Prices every point (memory check before the trial; predicted figures beside live ones)."""

    def enqueue(self, candidate: Candidate, role: str) -> None:
        self.study.enqueue_trial(candidate.params(), user_attrs={ROLE: role}, skip_if_exists=True)

    def seed_new_study(self, baseline: Candidate | None, warm: list[Candidate]) -> None:
        """Queue the template's own settings (the baseline to beat) and the warm-start points,
        only when the study has no trials yet (a resumed study keeps its history)."""
        if self.study.get_trials(deepcopy=False):
            return
        if baseline is not None:
            self.enqueue(baseline, BASELINE)
        for candidate in warm:
            self.enqueue(candidate, WARM_START)

    def run_trial(self, trial: optuna.Trial) -> float | list[float]:
        candidate = self.space.suggest(trial)
        trial.set_user_attr("candidate", candidate.label())
        reason = self.predictor.memory_check(candidate) if self.predictor is not None else None
        if reason is None and self.predictor is not None and self.evaluator is not self.predictor:
            predicted = measurement_from_prediction(self.predictor.predict(candidate, self.objective.concurrency))
            trial.set_user_attr(PREDICTED, predicted.model_dump(mode="json"))
        if reason is None:
            try:
                replica = tuned_replica(self.template, self.objective.traffic_class, candidate)
                measured = self.evaluator.evaluate(candidate, replica, self.objective)
            except Infeasible as exc:
                reason = exc.reason
        if reason is not None:
            trial.set_user_attr(INFEASIBLE, reason)
            _set_constraints(trial, self.objective.constraints(None))
            raise optuna.TrialPruned(reason)
        trial.set_user_attr(MEASURED, measured.model_dump(mode="json"))
        _set_constraints(trial, self.objective.constraints(measured))
        values = self.objective.values(measured)
        return values if self.objective.is_multi_objective else values[0]

    def run(self, n_trials: int, callbacks: list[TrialCallback] | None = None) -> int:
        """Run until the study holds `n_trials` finished trials; returns how many ran now."""
        missing = max(0, n_trials - finished_count(self.study))
        if missing:
            self.study.optimize(self.run_trial, n_trials=missing, callbacks=callbacks or [], catch=())
        return missing
