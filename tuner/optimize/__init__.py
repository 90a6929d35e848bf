"""`tuner optimize`: one Optuna study per model x cluster x traffic class, evaluated by the
performance model or live on Ray, ending in a ServingPlan that `gateway deploy` runs.

Public API:
  optimize(OptimizeRequest, reporter) -> OptimizeResult   (the whole run; the CLI is a thin layer)
  optimize_split(SplitRequest, reporter) -> SplitResult   (several models: which get a pair, which one replica)
  SearchSpace / Candidate, ClassObjective / Measurement, ModelEvaluator / LiveEvaluator,
  make_sampler, resolve_model_choice, resolve_target       (the parts, for benchmarks and tests)
"""

from __future__ import annotations

from tuner.optimize.compose import NoFeasibleTrial
from tuner.optimize.evaluators import Infeasible, LiveEvaluator, ModelEvaluator
from tuner.optimize.objectives import ClassObjective, Measurement, parse_slo
from tuner.optimize.request import OptimizeRequest, OptimizeResult, SplitRequest, SplitResult
from tuner.optimize.runner import optimize
from tuner.optimize.space import Candidate, SearchSpace
from tuner.optimize.split import optimize_split
from tuner.optimize.study import make_sampler, study_name
from tuner.optimize.targets import ClusterTarget, TargetError, resolve_model_choice, resolve_target

__all__ = [
    "Candidate",
    "ClassObjective",
    "ClusterTarget",
    "Infeasible",
    "LiveEvaluator",
    "Measurement",
    "ModelEvaluator",
    "NoFeasibleTrial",
    "OptimizeRequest",
    "OptimizeResult",
    "SearchSpace",
    "SplitRequest",
    "SplitResult",
    "TargetError",
    "make_sampler",
    "optimize",
    "optimize_split",
    "parse_slo",
    "resolve_model_choice",
    "resolve_target",
    "study_name",
]
