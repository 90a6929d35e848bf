"""The ServingPlan: the one contract between the tuner, deploy/ and the gateway.

A plan names its models, each a model group with the replicas that serve it (one per traffic class,
each with its own parallel layout, its engine (gateway.engines; vLLM unless named) and that engine's
arguments) and its own admission limits, the cluster they all run on, and the gateway's routing
settings. A plan of one model may keep the short form of earlier formats (`model:` and `replicas:` at
the top level). The tuner writes plans, deploy/ runs them, the gateway reads their routing part.
Plans are YAML on disk; every check that can be made without starting anything is made here,
with a message that says what to change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deploy.demo_model import SHAPES
from deploy.placement import Placement, placement_problems
from deploy.plan_version import PLAN_VERSION, PlanVersionError, one_model_form, upgrade_plan_data
from gateway.contract.config import (
    ClassLimits,
    GatewaySettings,
    RoutingSettings,
    ServedModel,
    TrafficClass,
    check_names_unique,
    describe_fields,
    merged_settings,
    named_routing,
)
from gateway.contract.routing_rules import routing_for_replicas
from gateway.engines import DEFAULT_ENGINE, EngineAdapter, EngineArguments, engine_adapter

DEMO_SOURCE = "demo"
"""`source: demo` means the locally generated demo model (see deploy.demo_model)."""
DEMO_SOURCES = tuple(SHAPES)
"""Every generated demo model's `source` (`demo-small`: a second, smaller shape, for a plan of two models)."""


class PlanError(ValueError):
    """A plan that cannot be loaded or run; the message says what to change."""


class ModelSpec(BaseModel):
    """What is served: a local HF-format directory, a hub id, or the generated demo model."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Local model directory, hub id (org/name), or 'demo'.")
    name: str = Field(description="Public model name clients send in `model` and see in /v1/models.")
    aliases: list[str] = Field(default_factory=list, description="Other names clients may use.")

    @property
    def is_local_path(self) -> bool:
        return self.source.startswith(("/", "./", "../", "~"))

    @property
    def is_demo(self) -> bool:
        """One of the generated demo models (deploy.demo_model), made on the machine that runs it."""
        return self.source in DEMO_SOURCES

    @model_validator(mode="after")
    def _local_path_exists(self) -> ModelSpec:
        if self.is_local_path and not Path(self.source).expanduser().is_dir():
            raise ValueError(f"model.source {self.source!r} is not a directory (expected an HF-format model dir)")
        return self

    @property
    def served_names(self) -> list[str]:
        return [self.name, *self.aliases]


class Replica(BaseModel):
    """One engine serving one traffic class with one parallel layout."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    traffic_class: TrafficClass
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    engine_kind: str = Field(
        DEFAULT_ENGINE,
        description="The engine that runs this replica: an adapter in gateway.engines; "
        "`engine` holds its arguments, in that adapter's argument model.",
    )
    # SerializeAsAny: a dump writes the adapter's own fields too, not only the common ones.
    engine: SerializeAsAny[EngineArguments] = Field(default_factory=dict, validate_default=True)
    placement: Placement = Field(default_factory=Placement)
    env: dict[str, str] = Field(default_factory=dict, description="Environment for the engine's processes.")

    @field_validator("engine_kind")
    @classmethod
    def _engine_has_an_adapter(cls, kind: str) -> str:
        engine_adapter(kind)  # UnknownEngine (a ValueError) names the known ones
        return kind

    @field_validator("engine", mode="before")
    @classmethod
    def _arguments_of_the_named_engine(cls, data: Any, info: ValidationInfo) -> Any:
        """The `engine:` mapping is read with the argument model of the adapter `engine_kind` names,
        so an engine brings its own arguments and checks; a bad `engine_kind` is reported on its own."""
        kind = info.data.get("engine_kind")
        if kind is None:
            return data
        model = engine_adapter(kind).args_model
        if isinstance(data, EngineArguments) and not isinstance(data, model):
            data = data.model_dump(exclude_unset=True)  # another engine's arguments: read as this one's
        return model.model_validate(data)

    @property
    def adapter(self) -> EngineAdapter:
        return engine_adapter(self.engine_kind)

    @property
    def accepts_request_priority(self) -> bool:
        """Whether this replica's engine may be sent a request's `priority` (its adapter decides)."""
        return self.adapter.accepts_request_priority(self.engine.scheduling_policy)

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def layout(self) -> str:
        return f"tp{self.tensor_parallel_size}-pp{self.pipeline_parallel_size}"


class ModelGroup(ModelSpec):
    """One served model and the replicas that serve it (gateway.contract.config.ServedModel is the
    gateway's view of it): a request's `model` picks the group, the group's router picks a replica."""

    replicas: list[Replica] = Field(min_length=1)
    # The gateway's ServedModel.limits, handed over as they are (deploy.builder.gateway_config).
    limits: dict[TrafficClass, ClassLimits] = Field(
        default_factory=dict, description=ServedModel.model_fields["limits"].description
    )

    @property
    def spec(self) -> ModelSpec:
        """What is served, without the replicas."""
        return ModelSpec.model_construct(source=self.source, name=self.name, aliases=list(self.aliases))


class Cluster(BaseModel):
    """The machines a plan runs on."""

    model_config = ConfigDict(extra="forbid")

    name: str = "local-cpu"
    nodes: int = Field(1, ge=1)
    devices_per_node: int = Field(1, ge=1, description="GPUs per node; on a CPU cluster, worker slots per node.")
    accelerator: str | None = Field(None, description="e.g. 'GB10'; None runs vLLM on the CPU.")
    memory_per_node_gb: float = Field(119.7, gt=0, description="Memory the engines may use on each node.")

    @property
    def is_cpu(self) -> bool:
        return self.accelerator is None

    @property
    def devices(self) -> int:
        return self.nodes * self.devices_per_node


class ServingPlan(BaseModel):
    """The models, their replicas, the cluster and the gateway's settings: everything deploy/ runs.

    One model may be written in the short form of earlier formats, `model: {source, name, aliases}`
    and `replicas:` at the top level; it is read as `models: [{source, name, aliases, replicas}]`,
    and a plan is always written with `models:`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors never echo a key

    version: int = Field(PLAN_VERSION, ge=1, le=PLAN_VERSION, description="Plan format version (deploy.plan_version).")
    models: list[ModelGroup] = Field(
        min_length=1, description="The model groups; the first serves requests that name no model."
    )
    cluster: Cluster = Field(default_factory=Cluster)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @model_validator(mode="before")
    @classmethod
    def _one_model_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "models" not in data and ("model" in data or "replicas" in data):
            return one_model_form(dict(data))
        return data

    @model_validator(mode="after")
    def _fits_cluster(self) -> ServingPlan:
        check_names_unique([r.name for r in self.replicas], [group.served_names for group in self.models])
        cluster = self.cluster
        for r in self.replicas:
            where = f"replica {r.name!r}"
            if r.world_size > cluster.devices:
                raise ValueError(
                    f"{where}: tensor_parallel_size x pipeline_parallel_size = {r.world_size} is larger than "
                    f"the cluster's {cluster.devices} devices ({cluster.nodes} node(s) x {cluster.devices_per_node})"
                )
            problem = r.adapter.layout_problem(r.pipeline_parallel_size, r.engine, cluster.is_cpu)
            if problem is not None:
                raise ValueError(f"{where}: {problem}")
        if not cluster.is_cpu:
            shares = sum(r.engine.gpu_memory_utilization for r in self.replicas)
            if shares > 1.0 + 1e-9:
                raise ValueError(
                    "the replicas' gpu_memory_utilization add up to "
                    f"{shares:.2f}, past 1.0 of each GPU they share; lower them"
                )
        problems = placement_problems(self.replicas, cluster)
        if problems:
            raise ValueError(problems[0])
        return self

    @model_validator(mode="after")
    def _routing_from_replicas(self) -> ServingPlan:
        """The routing settings a plan does not name get the rule derived from its replicas' batch
        sizes (gateway.contract.routing_rules), so every plan ships with thresholds that fit it; the ones it
        names (e.g. only its GPU arbitration) are kept as written. The routing settings are the
        gateway's, one set for every model, so they are derived from the first model group that has
        a replica of each class (a group's own admission limits are its `limits`); a plan with no
        such group keeps the settings' defaults."""
        group = next(
            (g for g in self.models if {r.traffic_class for r in g.replicas} == {"interactive", "batch"}), None
        )
        if group is None:
            return self
        routing = self.gateway.routing
        derived = routing_for_replicas(((r.traffic_class, r.engine.max_num_seqs) for r in group.replicas), routing)
        if "routing" in self.gateway.model_fields_set:
            derived = RoutingSettings.model_validate(merged_settings(derived.model_dump(), named_routing(routing)))
        self.gateway.routing = derived
        return self

    @property
    def replicas(self) -> list[Replica]:
        """Every model's replicas, model by model (read-only: a change goes through the groups, e.g.
        `with_each_replica`)."""
        return [r for group in self.models for r in group.replicas]

    def group_of(self, replica_name: str) -> ModelGroup:
        """The model group a replica serves."""
        for group in self.models:
            if any(r.name == replica_name for r in group.replicas):
                return group
        raise KeyError(f"no replica named {replica_name!r}; the plan has {[r.name for r in self.replicas]}")

    def only_model(self, purpose: str) -> ModelGroup:
        """The plan's one model group, for what works on one model only (`purpose` says what);
        PlanError for a plan of several."""
        if len(self.models) != 1:
            names = ", ".join(g.name for g in self.models)
            raise PlanError(f"{purpose} works on a plan of one model; this one serves {len(self.models)} ({names})")
        return self.models[0]

    def with_each_replica(self, change: Callable[[Replica], Replica]) -> ServingPlan:
        """The plan with `change` applied to every replica of every group (not validated again)."""
        groups = [g.model_copy(update={"replicas": [change(r) for r in g.replicas]}) for g in self.models]
        return self.model_copy(update={"models": groups})

    def with_one_model(
        self, purpose: str, replicas: list[Replica] | None = None, spec: ModelSpec | None = None
    ) -> ServingPlan:
        """A one-model plan with its replicas replaced by `replicas` and its model by `spec` (each
        where given), not validated again; PlanError for a plan of several models (only_model)."""
        group = self.only_model(purpose)
        update: dict[str, Any] = {}
        if replicas is not None:
            update["replicas"] = replicas
        if spec is not None:
            update |= {"source": spec.source, "name": spec.name, "aliases": list(spec.aliases)}
        return self.model_copy(update={"models": [group.model_copy(update=update)]})

    def replica_for(self, traffic_class: TrafficClass) -> Replica | None:
        return next((r for r in self.replicas if r.traffic_class == traffic_class), None)

    def replica_for_name(self, name: str) -> Replica:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        raise KeyError(f"no replica named {name!r}; the plan has {[r.name for r in self.replicas]}")


def parse_plan(data: Any, origin: str = "plan") -> ServingPlan:
    """Validate plan data, turning pydantic's errors into a PlanError that names each field. Data
    of an older plan format is upgraded first, with a logged note (deploy.plan_version)."""
    if isinstance(data, dict):
        data = dict(data)
        try:
            for note in upgrade_plan_data(data):
                logging.getLogger("tandem.deploy.plan").warning("note: %s: %s", origin, note)
        except PlanVersionError as exc:
            raise PlanError(f"{origin} cannot be read: {exc}") from None
    try:
        return ServingPlan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"{origin} is not a valid serving plan:\n{describe_fields(exc)}") from None


def load_plan(path: str | Path) -> ServingPlan:
    """Read a plan from YAML. Relative local model paths resolve against the plan's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"no plan at {path}") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path} must hold a mapping (models, cluster, gateway)")
    models = data.get("models")
    for model in [data.get("model"), *(models if isinstance(models, list) else [])]:
        source = model.get("source") if isinstance(model, dict) else None
        if isinstance(source, str) and source.startswith(("./", "../")):
            model["source"] = str((path.parent / source).resolve())
    return parse_plan(data, origin=str(path))


def dump_plan(plan: ServingPlan, path: str | Path, header: str | None = None) -> Path:
    """Write a plan as YAML (unset defaults included, so the file says everything that runs).
    Inline API keys are never written: each shows as the mask `**********`, which a plan refuses
    at load, and the header says so, so a written plan never holds a secret nor a guessable key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False)
    if plan.gateway.auth.keys:
        masked = (
            f"gateway.auth.keys: the {len(plan.gateway.auth.keys)} inline key(s) are masked (secrets are never "
            "written); put them back, or move them to auth.keys_file or the auth.keys_env variable, before deploying"
        )
        header = f"{header}\n{masked}" if header else masked
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    path.write_text(text)
    return path


SHIPPED_PLANS_DIR = Path(__file__).parent / "plans"


def shipped_plan(name: str) -> Path:
    """Path of a plan shipped with Tandem, e.g. 'cpu-demo'."""
    return SHIPPED_PLANS_DIR / f"{name}.yaml"


def gpu_answers() -> bool:
    """Whether an NVIDIA GPU answers on this machine: `nvidia-smi -L` lists one (the Makefile asks
    the same to choose vLLM's CUDA build)."""
    import subprocess

    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and listed.stdout.lstrip().startswith("GPU")


def default_plan() -> Path:
    """The embedded default (`make up`, `gateway up` without --plan, the test stack): both replicas
    on one GPU where a GPU answers (the CPU demo's TP=2 replica cannot start on one GPU), the
    CPU demo elsewhere."""
    return shipped_plan("one-gpu" if gpu_answers() else "cpu-demo")
