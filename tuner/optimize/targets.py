"""What is tuned: a model (by alias, hub id, local directory, or the demo) on a cluster target.

A `ClusterTarget` is the plan's `Cluster` plus what the tuner needs beside it: the performance
model's hardware profile for that cluster (None where there is none, as for this machine's CPU),
the template plan whose replicas give placement, environment and engine defaults (the shipped
plans are the structure every tuned plan keeps), and the share of each device the replicas may
split between them. Built-in targets are the Spark pair and the local CPU demo cluster; any other
cluster is a YAML file with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploy.plan import DEMO_SOURCE, Cluster, ModelSpec, PlanError, ServingPlan, load_plan, shipped_plan
from tuner.perfmodel import Layout, ModelArchitecture, known_hardware, load_hardware, resolve_model

DEMO_MODEL = "demo"
SPARK_PAIR = "dgx-spark-pair"
LOCAL_CPU = "local-cpu"
_FALLBACK_SPARK_TEMPLATE = "llama-3.1-8b.dgx-spark-pair"
"""Template for models without a shipped Spark plan (local directories): same structure, model replaced."""


class TargetError(ValueError):
    """A model or cluster the tuner cannot work with; the message says what to change."""


@dataclass(frozen=True)
class ModelChoice:
    """The model being tuned: the name studies and plan files use, and what the plan serves."""

    key: str
    spec: ModelSpec
    source: str
    """Alias, hub id or directory the performance model resolves (the demo's directory is made on demand)."""

    @cached_property
    def architecture(self) -> ModelArchitecture:
        if self.source == DEMO_SOURCE:
            from deploy.demo_model import ensure_demo_model

            return resolve_model(str(ensure_demo_model()))
        return resolve_model(self.source)


def resolve_model_choice(name: str) -> ModelChoice:
    """An alias (`llama-3.1-8b`), its hub id, `demo`, or a local HF-format model directory."""
    if name == DEMO_MODEL:
        return ModelChoice(
            key=DEMO_MODEL,
            spec=load_plan(shipped_plan("cpu-demo")).only_model("the demo model").spec,
            source=DEMO_SOURCE,
        )
    path = Path(name).expanduser()
    if path.is_dir():
        resolve_model(str(path))  # fails clearly without a config.json
        source = str(path.resolve())
        return ModelChoice(key=path.name, spec=ModelSpec(source=source, name=path.name), source=source)
    try:
        architecture = resolve_model(name)
    except ValueError as exc:
        raise TargetError(f"{exc}; or '{DEMO_MODEL}' for the local demo model") from None
    alias = architecture.name
    shipped = shipped_plan(f"{alias}.{SPARK_PAIR}")
    spec = (
        load_plan(shipped).only_model(f"the {alias} model").spec
        if shipped.is_file()
        else ModelSpec(source=architecture.hub_id or alias, name=alias)
    )
    return ModelChoice(key=alias, spec=spec, source=alias)


class ClusterTarget(BaseModel):
    """A cluster the tuner can search: the plan's cluster, a perf-model profile, a template plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    cluster: Cluster
    hardware: str | None = Field(
        None, description="Performance-model hardware profile; None: only live evaluation (no predictions)."
    )
    template: Path | None = Field(
        None,
        description="Plan whose replicas give placement, env and engine defaults; default: the model's Spark plan.",
    )
    memory_budget: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of each device all replicas may take together; default: the template's sum.",
    )
    max_num_batched_tokens: tuple[int, int, int] = Field(
        (1024, 16384, 1024), description="(low, high, step) of the chunked-prefill token budget searched."
    )

    @model_validator(mode="after")
    def _hardware_is_known(self) -> ClusterTarget:
        if self.hardware is not None and self.hardware not in known_hardware():
            load_hardware(self.hardware)  # a profile file (tuner probe-link writes one); fails clearly if not
        return self

    def template_plan(self, model: ModelChoice) -> ServingPlan:
        """The plan the tuned one keeps the structure of, serving `model` on this cluster (a
        template of one model: tuning picks one model's replicas)."""
        if self.template is not None:
            path = self.template
        elif self.cluster.is_cpu:
            path = shipped_plan("cpu-demo")
        else:
            own = shipped_plan(f"{model.key}.{SPARK_PAIR}")
            path = own if own.is_file() else shipped_plan(_FALLBACK_SPARK_TEMPLATE)
        plan = load_plan(path)
        return plan.with_one_model("tuning", spec=model.spec).model_copy(update={"cluster": self.cluster})

    def resolved_memory_budget(self, template: ServingPlan) -> float | None:
        """What the replicas may split on each device; None on CPU clusters (no device memory share)."""
        if self.cluster.is_cpu:
            return None
        if self.memory_budget is not None:
            return self.memory_budget
        return round(sum(r.engine.gpu_memory_utilization for r in template.replicas), 4)

    def layouts(self, moe: bool = False) -> list[Layout]:
        """Every (tp, pp) of powers of two whose workers the cluster has; for a MoE model on GPUs also
        each TP layout with expert parallelism (vLLM's enable_expert_parallel over the TP ranks)."""
        sizes = [2**i for i in range(8) if 2**i <= self.cluster.devices]
        layouts = [Layout(tp=tp, pp=pp) for tp in sizes for pp in sizes if tp * pp <= self.cluster.devices]
        if moe and not self.cluster.is_cpu:
            layouts += [layout.model_copy(update={"ep": True}) for layout in layouts if layout.tp > 1]
        return layouts


BUILT_IN_TARGETS: dict[str, ClusterTarget] = {
    SPARK_PAIR: ClusterTarget(
        name=SPARK_PAIR,
        cluster=load_plan(shipped_plan(_FALLBACK_SPARK_TEMPLATE)).cluster,
        hardware=SPARK_PAIR,
    ),
    LOCAL_CPU: ClusterTarget(
        name=LOCAL_CPU,
        cluster=load_plan(shipped_plan("cpu-demo")).cluster,
        hardware=None,  # no perf-model profile for this CPU: live evaluation only
        max_num_batched_tokens=(256, 4096, 256),
    ),
}


def resolve_target(name_or_file: str) -> ClusterTarget:
    """A built-in target by name, or a YAML file holding a ClusterTarget."""
    if name_or_file in BUILT_IN_TARGETS:
        return BUILT_IN_TARGETS[name_or_file]
    path = Path(name_or_file).expanduser()
    if not path.is_file():
        raise TargetError(
            f"unknown cluster {name_or_file!r}: not one of {', '.join(BUILT_IN_TARGETS)} and not a YAML file"
        )
    try:
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and data.get("template"):
            data["template"] = str((path.parent / data["template"]).resolve())
        return ClusterTarget.model_validate(data)
    except yaml.YAMLError as exc:
        raise TargetError(f"{path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'target'}: {e['msg']}" for e in exc.errors())
        raise TargetError(f"{path} is not a cluster target ({problems})") from None
    except PlanError as exc:
        raise TargetError(str(exc)) from None


__all__ = [
    "BUILT_IN_TARGETS",
    "ClusterTarget",
    "DEMO_MODEL",
    "LOCAL_CPU",
    "ModelChoice",
    "SPARK_PAIR",
    "TargetError",
    "resolve_model_choice",
    "resolve_target",
]
