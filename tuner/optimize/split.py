"""Several models on one cluster: which get a co-resident pair, which one replica, within a memory
budget per box (`tuner optimize --model A --model B --memory-per-box GB`).

1. Each model's class studies run as for one model (the same studies: the performance model
   prices every trial).
2. Per model, the points they offer: the interactive point (chosen as one model's run chooses it)
   and the batch frontier (for each memory share, the fastest batch trial meeting the SLOs). A
   point's share is raised, where needed, to what the fit check asks of it (tuner.plan_fit:
   weights + runtime reserve + 4 of its longest sequences) and priced again at that share; each
   point is also priced at that minimum where its own share is more (the interactive point takes
   it where its chat figures stay within 2%; the batch frontier holds both).
3. Every assignment is tried (each model a `pair`: its interactive replica and a batch replica, or
   a `single`: its interactive replica serving both classes; 2^n of them). Memory: a plan's shares
   add up on every GPU, so every engine is counted on every box, at its share of the box's memory
   (on the Spark pair, one GPU a box: what tuner.plan_fit.box_memory_gb finds on the busiest box);
   an assignment fits when they add up to at most the budget. The pairs' batch replicas take the
   frontier points that score best in what the interactive replicas leave.
4. Score, per model, weighted by its traffic share: half the batch figure plus half the chat figure.
   - batch: predicted output tok/s of what serves the model's batch class (its batch replica, or
     its single replica) at the batch concurrency, over the fastest point of its batch frontier;
   - chat: TPOT p50 of its interactive replica serving chat alone, over its TPOT in the assignment:
     1.0 for a pair (the gateway keeps batch work off the chat engine: docs/routing.md), and for a
     single the TPOT at chat + batch concurrency (its chat decodes in the steps its batch work fills).
   The best score among the assignments that fit wins (ties: the one using less memory); the
   report gives every figure and why each other assignment lost.

Not priced: engines of different models share each GPU's compute, as a pair's two engines do;
the score reads each engine alone, as the one-model run does (docs/tuner.md, "What is not done").
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace

from optuna.trial import FrozenTrial

from deploy.placement import Placement
from deploy.plan import Replica, ServingPlan, dump_plan
from deploy.plan_report import HEADROOM
from gateway.contract.config import TrafficClass
from tuner.optimize.compose import NoFeasibleTrial, feasible_trials, pick_interactive, tuned_replica
from tuner.optimize.evaluators import Infeasible
from tuner.optimize.objectives import Measurement, Metric
from tuner.optimize.report import write_split_report
from tuner.optimize.request import Alternative, ModelScore, Role, SplitRequest, SplitResult
from tuner.optimize.runner import ModelStudies, Reporter, class_summary, run_class_studies, storage_folder
from tuner.optimize.space import MEMORY_SHARE_STEP, Candidate
from tuner.optimize.targets import ClusterTarget, TargetError, resolve_model_choice, resolve_target
from tuner.plan_fit import Architectures, box_memory_gb, fit_problems, fitting_share, with_kv_budgets

ROLES: tuple[Role, ...] = ("pair", "single")
TRIM_TOLERANCE = 0.02
"""How much worse an interactive point's chat figures may get when its share is lowered to the fit
check's minimum (the tolerance the one-model run picks its interactive point with)."""
CHAT_FIGURES: tuple[Metric, ...] = ("ttft_p90_ms", "tpot_p50_ms")


@dataclass(frozen=True)
class Point:
    """A replica's settings and what the performance model predicts for it at its class's concurrency."""

    candidate: Candidate
    measured: Measurement
    trial: FrozenTrial
    """The study's trial it comes from."""
    share_from: float | None
    """The trial's memory share where the plan's differs (the fit check's minimum), else None."""


@dataclass(frozen=True)
class ModelOptions:
    """What the split can give one model: its interactive point, what that replica does as a
    single (serving the batch class too), and the batch frontier a pair draws from."""

    name: str
    run: ModelStudies
    traffic_share: float
    interactive: Point
    single_batch_tok_s: float
    single_chat_tpot_ms: float
    batch: tuple[Point, ...]
    """Ascending memory share, each faster than every smaller one."""
    no_pair: str | None
    """Why the model cannot have a pair (no batch trial met the SLOs), or None."""

    @property
    def best_batch_tok_s(self) -> float:
        return max([p.measured.output_tok_s for p in self.batch] + [self.single_batch_tok_s])


def _grid_up(share: float) -> float:
    """The share rounded up to the search grid (the plan's shares stay on it)."""
    return round(math.ceil(share / MEMORY_SHARE_STEP - 1e-9) * MEMORY_SHARE_STEP, 4)


def _priced(run: ModelStudies, traffic_class: TrafficClass, trial: FrozenTrial, per_device_gb: float) -> list[Point]:
    """The trial's point at the shares the plan may give it: its own, raised to what the fit check
    asks where it had less, then the fit check's minimum where that is lower (the memory other
    models could use). Each priced at its share; an unpriceable one is left out."""
    predictor = run.predictor
    assert predictor is not None  # several models are split with --evaluate model only
    objective = run.objectives[traffic_class]
    candidate = run.spaces[traffic_class].from_params(trial.params)
    replica = tuned_replica(run.template, traffic_class, candidate)
    share = candidate.memory_share
    if share is None:
        return [Point(candidate, predictor.evaluate(candidate, replica, objective), trial, None)]
    needed = _grid_up(fitting_share(replica, run.model.architecture, per_device_gb))
    points = []
    for plan_share in sorted({max(share, needed), needed}, reverse=True):
        at = replace(candidate, memory_share=plan_share)
        try:
            points.append(
                Point(at, predictor.evaluate(at, replica, objective), trial, None if plan_share == share else share)
            )
        except Infeasible:
            continue
    return points


def _frontier(points: list[Point]) -> tuple[Point, ...]:
    """For each share, the fastest point; then only those faster than every smaller share."""
    best: dict[float, Point] = {}
    for point in points:
        share = point.candidate.memory_share or 0.0
        if share not in best or point.measured.output_tok_s > best[share].measured.output_tok_s:
            best[share] = point
    frontier: list[Point] = []
    for share in sorted(best):
        if not frontier or best[share].measured.output_tok_s > frontier[-1].measured.output_tok_s:
            frontier.append(best[share])
    return tuple(frontier)


def model_options(run: ModelStudies, traffic_share: float, per_device_gb: float) -> ModelOptions:
    predictor = run.predictor
    assert predictor is not None
    objectives, spaces = run.objectives, run.spaces
    chosen = pick_interactive(run.studies["interactive"].study, objectives["interactive"], spaces["interactive"])
    # Chat at low concurrency gains nothing from memory: the least share whose figures stay within 2%.
    priced = _priced(run, "interactive", chosen, per_device_gb)
    if not priced:
        raise NoFeasibleTrial(f"{run.model.key}: the interactive point (trial {chosen.number}) cannot be priced")
    interactive = next(
        p
        for p in reversed(priced)
        if all(p.measured.value(m) <= priced[0].measured.value(m) * (1 + TRIM_TOLERANCE) for m in CHAT_FIGURES)
    )
    batch_objective = objectives["batch"]
    points = [
        point
        for trial in feasible_trials(run.studies["batch"].study, batch_objective)
        for point in _priced(run, "batch", trial, per_device_gb)
        if all(v <= 0 for v in batch_objective.constraints(point.measured).values())
    ]
    mixed = predictor.predict(
        interactive.candidate, objectives["interactive"].concurrency + batch_objective.concurrency
    )
    return ModelOptions(
        name=run.model.key,
        run=run,
        traffic_share=traffic_share,
        interactive=interactive,
        single_batch_tok_s=predictor.predict(interactive.candidate, batch_objective.concurrency).output_tok_s or 0.0,
        single_chat_tpot_ms=mixed.tpot_ms or math.inf,
        batch=_frontier(points),
        no_pair=None if points else f"no batch trial of {run.model.key} met {batch_objective.slo_text()}",
    )


def _score(option: ModelOptions, role: Role, batch: Point | None, gb_per_share: float) -> ModelScore:
    interactive = option.interactive
    served = (interactive,) if batch is None else (interactive, batch)
    points = dict(zip(replica_names(option.name, role), served, strict=True))
    replicas = {name: p.candidate.label() for name, p in points.items()}
    share = sum((p.candidate.memory_share or 0.0) for p in points.values())
    if batch is not None:
        batch_tok_s, chat_tpot = batch.measured.output_tok_s, interactive.measured.tpot_p50_ms
    else:
        batch_tok_s, chat_tpot = option.single_batch_tok_s, option.single_chat_tpot_ms
    batch_ratio = batch_tok_s / option.best_batch_tok_s if option.best_batch_tok_s > 0 else 0.0
    chat_ratio = interactive.measured.tpot_p50_ms / chat_tpot
    return ModelScore(
        model=option.name,
        role=role,
        traffic_share=option.traffic_share,
        replicas=replicas,
        trials={name: p.trial.number for name, p in points.items()},
        share_from={name: p.share_from for name, p in points.items() if p.share_from is not None},
        gb_per_box=share * gb_per_share,
        batch_tok_s=batch_tok_s,
        batch_ratio=batch_ratio,
        chat_tpot_ms=chat_tpot,
        chat_ratio=chat_ratio,
        score=option.traffic_share * (batch_ratio + chat_ratio) / 2,
    )


def _least_gb(options: list[ModelOptions], roles: dict[str, Role], gb_per_share: float) -> tuple[float, str]:
    """What an assignment needs at least per box (each interactive point, and each pair's smallest
    batch point), and each model's part of it, for the message of one that does not fit."""
    total, parts = 0.0, []
    for option in options:
        gb = (option.interactive.candidate.memory_share or 0.0) * gb_per_share
        if roles[option.name] == "pair" and option.batch:
            batch_gb = (option.batch[0].candidate.memory_share or 0.0) * gb_per_share
            total += gb + batch_gb
            parts.append(f"{option.name} pair {gb:.1f} + {batch_gb:.1f} GB")
        else:
            total += gb
            parts.append(f"{option.name} {roles[option.name]} {gb:.1f} GB")
    return total, "; ".join(parts)


def assess(options: list[ModelOptions], budget_gb: float, gb_per_share: float) -> list[Alternative]:
    """Every assignment of roles, priced where it fits; best first, each with its verdict."""
    alternatives = []
    for roles_tuple in itertools.product(ROLES, repeat=len(options)):
        roles = {o.name: r for o, r in zip(options, roles_tuple, strict=True)}
        pairs = [o for o in options if roles[o.name] == "pair"]
        blocked = [o.no_pair for o in pairs if o.no_pair]
        least, parts = _least_gb(options, roles, gb_per_share)
        if blocked:
            alternatives.append(Alternative(roles=roles, fits=False, gb_per_box=least, verdict="; ".join(blocked)))
            continue
        if least > budget_gb + 1e-6:
            alternatives.append(
                Alternative(
                    roles=roles,
                    fits=False,
                    gb_per_box=least,
                    verdict=f"does not fit: needs at least {least:.1f} GB per box ({parts}), "
                    f"{least - budget_gb:.1f} GB over the {budget_gb:.1f} GB budget",
                )
            )
            continue
        best: tuple[float, float, list[ModelScore]] | None = None
        for batches in itertools.product(*(o.batch for o in pairs)):
            chosen = dict(zip((o.name for o in pairs), batches, strict=True))
            scores = [_score(o, roles[o.name], chosen.get(o.name), gb_per_share) for o in options]
            gb = sum(s.gb_per_box for s in scores)
            if gb > budget_gb + 1e-6:
                continue
            total = sum(s.score for s in scores)
            if best is None or (total, -gb) > (best[0], -best[1]):
                best = (total, gb, scores)
        assert best is not None  # the smallest batch points fit: `least` is within the budget
        alternatives.append(Alternative(roles=roles, fits=True, gb_per_box=best[1], score=best[0], models=best[2]))
    fitting = sorted((a for a in alternatives if a.fits), key=lambda a: (-(a.score or 0.0), a.gb_per_box))
    if not fitting:
        cheapest = min(alternatives, key=lambda a: a.gb_per_box)
        raise NoFeasibleTrial(
            f"no split of {', '.join(o.name for o in options)} fits {budget_gb:.1f} GB per box: the smallest "
            f"({cheapest.label()}) needs {cheapest.gb_per_box:.1f} GB, {cheapest.gb_per_box - budget_gb:.1f} GB over; "
            "raise --memory-per-box or drop a model"
        )
    winner = fitting[0]
    verdicts = {id(winner): "chosen: the best score that fits"}
    for other in fitting[1:]:
        assert other.score is not None and winner.score is not None
        verdicts[id(other)] = f"lower score: {other.score:.3f} < {winner.score:.3f}"
    ranked = fitting + sorted((a for a in alternatives if not a.fits), key=lambda a: a.gb_per_box)
    return [a if not a.fits else a.model_copy(update={"verdict": verdicts[id(a)]}) for a in ranked]


def replica_names(model: str, role: Role) -> tuple[str, ...]:
    """Replica names unique across the plan's models (a lower-case slug of the model's name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    slug = slug if slug[:1].isalpha() else f"m-{slug}"
    return (f"{slug}-interactive", f"{slug}-batch") if role == "pair" else (f"{slug}-single",)


def _placed(replica: Replica, name: str, gpus_per_worker: float) -> Replica:
    """The replica renamed for the plan of several models, with its Ray GPU share of each worker."""
    placement = Placement.model_validate({**replica.placement.model_dump(), "gpus_per_worker": gpus_per_worker})
    return replica.model_copy(update={"name": name, "placement": placement})


def compose_split_plan(options: list[ModelOptions], alternative: Alternative) -> ServingPlan:
    """The plan of several models: a group per model, in the order given, with the assignment's
    replicas. Every engine may share a GPU with every other, so each worker asks Ray for an equal
    part of one; the gateway's settings are the first model's template's."""
    scores = {s.model: s for s in alternative.models}
    engines = sum(len(s.replicas) for s in alternative.models)
    gpus = math.floor(100 / engines) / 100
    groups = []
    for option in options:
        role = alternative.roles[option.name]
        names = replica_names(option.name, role)
        template = option.run.template
        replicas = [_placed(tuned_replica(template, "interactive", option.interactive.candidate), names[0], gpus)]
        if role == "pair":
            batch = chosen_batch(option, scores[option.name])
            replicas.append(_placed(tuned_replica(template, "batch", batch.candidate), names[1], gpus))
        spec = option.run.model.spec
        groups.append({**spec.model_dump(), "replicas": [r.model_dump() for r in replicas]})
    first = options[0].run.template
    # Python-mode dumps: a JSON dump would turn the template's API keys into their mask.
    data = {"models": groups, "cluster": first.cluster.model_dump(), "gateway": first.gateway.model_dump()}
    plan = ServingPlan.model_validate(data)
    return with_kv_budgets(plan, _architectures(options))


def chosen_batch(option: ModelOptions, score: ModelScore) -> Point:
    """The batch frontier point a pair's score was made with."""
    trial = score.trials[replica_names(option.name, "pair")[1]]
    return next(p for p in option.batch if p.trial.number == trial)


def _architectures(options: list[ModelOptions]) -> Architectures:
    by_name = {o.run.model.spec.name: o.run.model.architecture for o in options}
    return lambda group: by_name[group.name]


def budget_gb(request: SplitRequest, target: ClusterTarget, first: ServingPlan) -> float:
    """The memory per box the engines may take: the request's, or the template's share of the box.
    More than the fit check leaves beside the OS is bad input."""
    room = (1 - HEADROOM) * target.cluster.memory_per_node_gb
    if request.memory_per_box_gb is None:
        share = target.resolved_memory_budget(first)
        return room if share is None else share * target.cluster.memory_per_node_gb
    if request.memory_per_box_gb > room + 1e-9:
        raise TargetError(
            f"--memory-per-box {request.memory_per_box_gb:g} GB is more than the {room:.1f} GB the engines may take on "
            f"a {target.cluster.memory_per_node_gb:g} GB box of {target.name} ({HEADROOM:.0%} stays for the OS)"
        )
    return request.memory_per_box_gb


def optimize_split(request: SplitRequest, reporter: Reporter | None = None) -> SplitResult:
    """Tune several models and split the boxes between them; see the module docstring."""
    reporter = reporter or Reporter()
    base = request.base
    storage_folder(base.storage)
    target = resolve_target(base.cluster)
    if target.cluster.is_cpu:
        raise TargetError(f"cluster {target.name!r} has no GPUs: several models are split by GPU memory")
    choices = [resolve_model_choice(name) for name in request.models]
    keys = [choice.key for choice in choices]
    if len(set(keys)) != len(keys):
        raise TargetError(f"the models name the same model twice: {request.models} -> {keys}")
    node_gb = target.cluster.memory_per_node_gb
    budget = budget_gb(request, target, target.template_plan(choices[0]))
    runs = [
        run_class_studies(base.model_copy(update={"model": name}), target, reporter, label=f"{name} ")
        for name in request.models
    ]
    per_device_gb = node_gb / target.cluster.devices_per_node
    options = [
        model_options(run, request.share_of(name), per_device_gb)
        for run, name in zip(runs, request.models, strict=True)
    ]
    alternatives = assess(options, budget, node_gb)
    chosen = alternatives[0]
    plan = compose_split_plan(options, chosen)
    # The shares were raised to the fit check's minimum and summed as it sums them: a problem here is a bug.
    problems = fit_problems(plan, _architectures(options))
    busiest = max(box_memory_gb(plan).values())
    if busiest > budget + 1e-6:
        problems.append(f"a box holds {busiest:.1f} GB of engines, over the {budget:.1f} GB budget")
    if problems:
        raise NoFeasibleTrial(f"the chosen split does not pass the fit check: {'; '.join(problems)}")
    notes = [note for run in runs for note in run.notes]
    notes.append(
        f"spill thresholds and GPU arbitration: {request.models[0]}'s template's (not tuned for several models)"
    )
    stem = f"{'+'.join(keys)}.{target.name}"
    plan_path = base.out / f"{stem}.yaml"
    dump_plan(plan, plan_path, header=_plan_header(request, chosen))
    classes = {}
    for option in options:
        run, score = option.run, next(m for m in chosen.models if m.model == option.name)
        summaries = {
            "interactive": class_summary(run.studies["interactive"], option.interactive.trial, run.ran["interactive"])
        }
        if score.role == "pair":
            batch = chosen_batch(option, score)
            summaries["batch"] = class_summary(run.studies["batch"], batch.trial, run.ran["batch"])
        classes[option.name] = summaries
    result = SplitResult(
        models=keys,
        cluster=target.name,
        workload=base.workload,
        storage=base.storage,
        memory_per_box_gb=budget,
        plan_path=plan_path,
        chosen=chosen,
        alternatives=alternatives,
        classes=classes,
        notes=notes,
    )
    report = base.out / f"{stem}.report.md"
    return result.model_copy(update={"report_path": write_split_report(result, report)})


def _plan_header(request: SplitRequest, chosen: Alternative) -> str:
    base = request.base
    models = " ".join(f"--model {m}" for m in request.models)
    shares = (
        f" --share {','.join(f'{m}={v:g}' for m, v in request.traffic_shares.items())}"
        if request.traffic_shares
        else ""
    )
    budget = f" --memory-per-box {request.memory_per_box_gb:g}" if request.memory_per_box_gb is not None else ""
    return (
        f"Written by `tuner optimize {models}{budget}{shares} --cluster {base.cluster} --trials {base.trials} "
        f"--workload {base.workload} --seed {base.seed}`.\n"
        f"Split: {chosen.label()} ({chosen.gb_per_box:.1f} GB per box, score {chosen.score:.3f}); the report beside "
        "this file gives every alternative and why it lost."
    )
