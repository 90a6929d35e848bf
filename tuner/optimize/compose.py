"""From tuned points to replicas, and from finished studies to the ServingPlan `gateway deploy` runs.

A tuned replica is the template's replica of the same class with the searched knobs set; the
placement follows the layout (one box when it fits in one, else spread over the boxes) and, on
the CPU, the worker thread binding follows the worker count. The plan keeps everything else of
the template: model, cluster, data path, gateway settings.

Choosing what goes in the plan:
- interactive: the Pareto front's balanced point (least worst ratio to the best TTFT and the best
  TPOT on the front); among trials within `tolerance` of it on both figures, the one with the
  smallest memory share, since at low concurrency memory buys the interactive class nothing.
- batch: the fastest trial meeting the SLOs whose memory share fits beside the interactive one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from deploy.placement import Placement
from deploy.plan import Replica, ServingPlan
from gateway.contract.config import RoutingSettings, TrafficClass
from tuner.optimize.objectives import ClassObjective, Measurement
from tuner.optimize.space import Candidate, SearchSpace

if TYPE_CHECKING:
    from tuner.perfmodel import Layout

MEASURED = "measured"
PREDICTED = "predicted"
INFEASIBLE = "infeasible"
ROLE = "role"
BASELINE = "baseline"
WARM_START = "warm-start"


class NoFeasibleTrial(RuntimeError):
    """A study ended without a trial the plan can use; the message says why."""


def template_replica(template: ServingPlan, traffic_class: TrafficClass) -> Replica:
    replica = template.replica_for(traffic_class)
    if replica is None:
        raise NoFeasibleTrial(f"the template plan has no {traffic_class} replica to take placement and env from")
    return replica


def _thread_binding(workers: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `workers` ranks over this machine's cores: '0|1' for two, '0-1' for one."""
    cores = os.cpu_count() or 1
    per = max(1, cores // workers)
    groups = [(i * per, min(cores, (i + 1) * per) - 1) for i in range(workers)]
    return "|".join(str(a) if a == b else f"{a}-{b}" for a, b in groups)


def tuned_replica(template: ServingPlan, traffic_class: TrafficClass, candidate: Candidate) -> Replica:
    """The template's replica of this class with the candidate's knobs set."""
    base = template_replica(template, traffic_class)
    cluster = template.cluster
    layout = candidate.layout
    workers = layout.tp * layout.pp
    if workers <= cluster.devices_per_node:
        strategy = "PACK"
    else:
        strategy = "STRICT_SPREAD" if workers <= cluster.nodes else "SPREAD"
    extra = {k: v for k, v in base.engine.extra.items() if k != EXPERT_PARALLEL}
    if layout.ep:
        extra[EXPERT_PARALLEL] = True
    engine = base.engine.model_copy(
        update={
            "max_num_seqs": candidate.max_num_seqs,
            "max_num_batched_tokens": candidate.max_num_batched_tokens,
            "enable_chunked_prefill": candidate.enable_chunked_prefill,
            "extra": extra,
            **({"gpu_memory_utilization": candidate.memory_share} if candidate.memory_share is not None else {}),
        }
    )
    env = dict(base.env)
    if cluster.is_cpu and "VLLM_CPU_OMP_THREADS_BIND" in env:
        env["VLLM_CPU_OMP_THREADS_BIND"] = _thread_binding(workers)
    return base.model_copy(
        update={
            "tensor_parallel_size": layout.tp,
            "pipeline_parallel_size": layout.pp,
            "engine": engine,
            "placement": Placement.model_validate({**base.placement.model_dump(), "strategy": strategy}),
            "env": env,
        }
    )


EXPERT_PARALLEL = "enable_expert_parallel"
"""vLLM's engine argument for expert parallelism (MoE layers split by experts over the TP ranks)."""


def replica_layout(replica: Replica) -> Layout:
    """The perf model's layout of a plan replica (expert parallel when its engine asks for it)."""
    from tuner.perfmodel import Layout

    return Layout(
        tp=replica.tensor_parallel_size,
        pp=replica.pipeline_parallel_size,
        ep=bool(replica.engine.extra.get(EXPERT_PARALLEL)),
    )


def baseline_candidate(
    template: ServingPlan, traffic_class: TrafficClass, space: SearchSpace, default_tokens: int
) -> Candidate:
    """The template replica's settings as a point of the space (unset values as vLLM resolves them)."""
    replica = template_replica(template, traffic_class)
    engine = replica.engine
    chunked = engine.enable_chunked_prefill is not False
    return Candidate(
        layout=replica_layout(replica),
        max_num_seqs=engine.max_num_seqs,
        enable_chunked_prefill=chunked,
        max_num_batched_tokens=(engine.max_num_batched_tokens or default_tokens) if chunked else space.max_model_len,
        memory_share=engine.gpu_memory_utilization if space.memory_share is not None else None,
    )


def single_replica_plan(template: ServingPlan, replica: Replica, port: int) -> ServingPlan:
    """A plan serving only `replica` (a live trial measures one class at a time)."""
    gateway = template.gateway.model_copy(update={"host": "127.0.0.1", "port": port})
    return template.with_one_model("a live trial", replicas=[replica]).model_copy(update={"gateway": gateway})


def compose_plan(template: ServingPlan, replicas: list[Replica], routing: RoutingSettings) -> ServingPlan:
    """The tuned plan: the template with its replicas and routing replaced, validated as any plan is.
    Python-mode dumps: a JSON dump would turn the template's API keys into their mask."""
    template.only_model("tuning")
    data = template.model_dump()
    data["models"][0]["replicas"] = [r.model_dump() for r in replicas]
    data["gateway"]["routing"] = routing.model_dump()
    return ServingPlan.model_validate(data)


# ---- choosing trials ------------------------------------------------------------------------------------


def measurement(trial: FrozenTrial, key: str = MEASURED) -> Measurement | None:
    data = trial.user_attrs.get(key)
    return None if data is None else Measurement.model_validate(data)


def feasible_trials(study: optuna.Study, objective: ClassObjective) -> list[FrozenTrial]:
    """Completed trials that met every SLO."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if all(c <= 0 for c in t.constraints.values())]


def infeasible_summary(study: optuna.Study, objective: ClassObjective) -> str:
    """Why no trial is usable: counts of each infeasibility reason and the closest miss of the SLOs."""
    trials = study.get_trials(deepcopy=False)
    reasons: dict[str, int] = {}
    for t in trials:
        reason = t.user_attrs.get(INFEASIBLE)
        if reason:
            key = reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    parts = [f"{len(trials)} trial(s) of the {objective.traffic_class} class"]
    parts += [f"{count} {reason}" for reason, count in sorted(reasons.items())]
    measured = [(t, m) for t in trials if (m := measurement(t)) is not None]
    if measured and objective.slo:
        closest_trial, closest = min(measured, key=lambda tm: max(objective.constraints(tm[1]).values()))
        parts.append(
            f"none met {objective.slo_text()}; closest (trial {closest_trial.number}): "
            + "; ".join(objective.violations(closest))
        )
    return ", ".join(parts)


def pick_interactive(
    study: optuna.Study, objective: ClassObjective, space: SearchSpace, tolerance: float = 0.02
) -> FrozenTrial:
    feasible = feasible_trials(study, objective)
    usable = {t.number for t in feasible}
    front = [t for t in study.best_trials if t.number in usable]
    if not front:
        raise NoFeasibleTrial(f"no usable interactive trial: {infeasible_summary(study, objective)}")
    best = [min(t.values[i] for t in front) for i in range(len(objective.targets))]
    balanced = min(front, key=lambda t: max(v / b for v, b in zip(t.values, best, strict=True)))
    near = [
        t for t in feasible if all(v <= bv * (1 + tolerance) for v, bv in zip(t.values, balanced.values, strict=True))
    ]
    return min(near, key=lambda t: (space.from_params(t.params).memory_share or 0.0, t.number))


def pick_batch(
    study: optuna.Study, objective: ClassObjective, space: SearchSpace, max_share: float | None
) -> FrozenTrial:
    feasible = feasible_trials(study, objective)
    if not feasible:
        raise NoFeasibleTrial(f"no batch trial is feasible: {infeasible_summary(study, objective)}")
    fitting = [
        t
        for t in feasible
        if max_share is None or (space.from_params(t.params).memory_share or 0.0) <= max_share + 1e-9
    ]
    if not fitting:
        raise NoFeasibleTrial(
            f"every feasible batch trial needs more than the {max_share:.2f} memory share left beside the interactive replica"
        )
    return max(fitting, key=lambda t: (t.values[0], -t.number))


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    return next((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ROLE) == BASELINE), None)
