"""Gateway settings: the routing part of a ServingPlan and the gateway's own limits.

These models are the one place where routing thresholds are defined; deploy/plan.py embeds
`GatewaySettings` in the ServingPlan, the gateway reads it, and the tuner writes it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from gateway.contract.batch_settings import BatchSettings
from gateway.contract.policies import policy_modules

TrafficClass = Literal["interactive", "batch"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
TRAFFIC_CLASSES: tuple[TrafficClass, ...] = ("interactive", "batch")


class ClassLimits(BaseModel):
    """Admission control for one traffic class: requests running at once, and a bounded queue."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int = Field(64, ge=1, description="Requests of this class in flight at once.")
    max_queue: int = Field(256, ge=0, description="Requests waiting for a slot; past this: 429.")
    priority: int = Field(
        0,
        description="vLLM request priority for this class (lower runs first); sent only to "
        "replicas whose engine uses scheduling_policy=priority.",
    )
    # Deadlines (gateway.deadlines): each ends the request with an OpenAI error (an error event in
    # a started stream), closes the upstream answer (the engine aborts) and frees its slot.
    queue_timeout_s: float = Field(
        60.0, gt=0, description="Waiting in this class's queue for a slot; past it: 429 with Retry-After."
    )
    first_token_timeout_s: float = Field(
        300.0,
        gt=0,
        description="From sending to a replica until a stream's first event (or a non-streamed answer's "
        "headers); past it: 504.",
    )
    total_timeout_s: float = Field(
        1800.0, gt=0, description="From arrival to the answer's last byte, queue included; past it: 504."
    )


def _default_class_limits() -> dict[TrafficClass, ClassLimits]:
    """Each class's limits unless the plan sets them (a function, so the dict's keys are typed)."""
    return {
        "interactive": ClassLimits(
            max_concurrency=32,
            max_queue=128,
            priority=0,
            queue_timeout_s=30.0,
            first_token_timeout_s=60.0,
            total_timeout_s=600.0,
        ),
        "batch": ClassLimits(
            max_concurrency=128,
            max_queue=1024,
            priority=10,
            queue_timeout_s=600.0,
            first_token_timeout_s=900.0,
            total_timeout_s=3600.0,
        ),
    }


class ClassifyRules(BaseModel):
    """Which class a request belongs to (gateway.contract.classify)."""

    model_config = ConfigDict(extra="forbid")

    interactive_max_tokens: int = Field(
        1024, ge=1, description="A streamed single-choice chat asking for at most this many tokens is interactive."
    )
    batch_min_prompts: int = Field(2, ge=2, description="A completion with this many prompts or more is batch.")


class SpillRules(BaseModel):
    """When a class may run on the other class's replica (the class-aware policy): interactive
    spilling onto the batch replica, batch borrowing an idle interactive one."""

    model_config = ConfigDict(extra="forbid")

    queue_threshold: int = Field(
        4, ge=1, description="Interactive spills to the batch replica once its own replica has this many waiting."
    )
    release_threshold: int = Field(
        1, ge=0, description="Spilling stops once the interactive replica's queue is back at or below this."
    )
    target_headroom: int = Field(
        8, ge=0, description="The batch replica must have at least this many free sequence slots to take spill."
    )
    batch_borrows_idle_interactive: bool = Field(
        True, description="Batch may run on the interactive replica while that replica is idle."
    )

    @model_validator(mode="after")
    def _hysteresis_is_ordered(self) -> SpillRules:
        if self.release_threshold >= self.queue_threshold:
            raise ValueError(
                f"release_threshold ({self.release_threshold}) must be below "
                f"queue_threshold ({self.queue_threshold}), or spilling would never stop"
            )
        return self


class BatchYieldSettings(BaseModel):
    """Batch admissions held back while interactive work runs (gateway.contract.yielding.batch_yield)."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description="While interactive requests are in flight (and settle_s after), batch may have at most this "
        "fraction of its max_concurrency in flight (0: no new batch request starts); 1: batch never yields. With "
        "arbitration mode 'freeze' it is the bounded step's batch cap: fewer batch sequences make the batch step a "
        "freeze waits for shorter (docs/routing.md).",
    )
    settle_s: float = Field(
        2.0, ge=0, description="A hold ends once interactive has had nothing in flight for this long (hysteresis)."
    )
    max_hold_s: float = Field(
        30.0, gt=0, description="Starvation bound: a hold lasts at most this long, then release_s follows."
    )
    release_s: float = Field(
        10.0, gt=0, description="After a hold cut short by the bound, batch runs at its full limit at least this long."
    )


class GpuArbitrationSettings(BaseModel):
    """How replicas that share devices share them (gateway.contract.freezing, gateway.freezing)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["admission", "freeze"] = Field(
        "admission",
        description="'admission': only batch yielding at admission, by yielding.fraction (1: off). 'freeze': the "
        "batch engine is paused in place (requests and KV cache kept) while interactive work runs beside it, "
        "within the bounds below; with yielding.fraction below 1 as well, batch admissions are capped too (the "
        "bounded step).",
    )
    settle_s: float = Field(
        0.5, ge=0, description="A freeze ends once interactive work beside the batch replica has been gone this long."
    )
    max_s: float = Field(
        10.0, gt=0, description="Starvation bound: a freeze lasts at most this long, then release_s follows."
    )
    release_s: float = Field(
        2.5, gt=0, description="After a freeze cut short by the bound, the batch engine runs at least this long."
    )
    lease_s: float = Field(
        5.0,
        gt=0,
        description="A paused engine resumes by itself unless the gateway renews its pause within this time "
        "(a lost gateway never leaves an engine frozen).",
    )


FLAT_ROUTING_KEYS: dict[str, tuple[str, str]] = {
    "interactive_max_tokens": ("classify", "interactive_max_tokens"),
    "batch_min_prompts": ("classify", "batch_min_prompts"),
    "spill_queue_threshold": ("spill", "queue_threshold"),
    "spill_release_threshold": ("spill", "release_threshold"),
    "spill_target_headroom": ("spill", "target_headroom"),
    "batch_borrows_idle_interactive": ("spill", "batch_borrows_idle_interactive"),
    "batch_yield_fraction": ("yielding", "fraction"),
    "batch_yield_settle_s": ("yielding", "settle_s"),
    "batch_yield_max_hold_s": ("yielding", "max_hold_s"),
    "batch_yield_release_s": ("yielding", "release_s"),
    "gpu_arbitration": ("arbitration", "mode"),
    "freeze_settle_s": ("arbitration", "settle_s"),
    "freeze_max_s": ("arbitration", "max_s"),
    "freeze_release_s": ("arbitration", "release_s"),
    "freeze_lease_s": ("arbitration", "lease_s"),
}
"""The flat routing form (every setting at the top level, as plans of format 3 and earlier and
existing PUT /admin/routing clients write it): each flat key and the group and field it names now."""


def nest_flat_routing(data: dict[str, Any]) -> dict[str, Any]:
    """Routing data with every flat key (FLAT_ROUTING_KEYS) moved into its group; nested data is
    returned as it is. A flat key wins over the same field of its group given beside it: a client
    that adds one flat key to the nested settings it read (GET, then PUT /admin/routing) changes it."""
    nested = {name: value for name, value in data.items() if name not in FLAT_ROUTING_KEYS}
    for flat, (group, field) in FLAT_ROUTING_KEYS.items():
        if flat in data:
            inner = nested.get(group)
            nested[group] = {**(inner if isinstance(inner, dict) else {}), field: data[flat]}
    return nested


def merged_settings(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """`base` with `change` merged in, object by object: a nested object replaces only what it names."""
    merged = dict(base)
    for name, value in change.items():
        inner = base.get(name)
        merged[name] = merged_settings(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
    return merged


def named_routing(routing: RoutingSettings) -> dict[str, Any]:
    """The settings `routing` was given rather than defaulted, dumped: within a group only the
    fields named (so a plan naming one freeze bound keeps the rest of its derived settings)."""
    named = routing.model_dump(include=routing.model_fields_set)
    for name in named:
        value = getattr(routing, name)
        if isinstance(value, BaseModel):
            named[name] = value.model_dump(exclude_unset=True)
    return named


class RoutingSettings(BaseModel):
    """How requests are classified and where each class may run, by concern: the policy's name,
    classification, spilling between replicas, batch yielding, GPU arbitration and each class's
    admission limits. The flat form (FLAT_ROUTING_KEYS) is read too."""

    model_config = ConfigDict(extra="forbid")

    policy: str = Field(
        "class-aware",
        description="Routing policy name: a module of gateway/contract/policies/ (gateway.contract.router.POLICIES).",
    )
    classify: ClassifyRules = Field(default_factory=ClassifyRules)
    spill: SpillRules = Field(default_factory=SpillRules)
    yielding: BatchYieldSettings = Field(default_factory=BatchYieldSettings)
    arbitration: GpuArbitrationSettings = Field(default_factory=GpuArbitrationSettings)
    limits: dict[TrafficClass, ClassLimits] = Field(default_factory=_default_class_limits)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_keys(cls, data: Any) -> Any:
        return nest_flat_routing(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _policy_is_known(self) -> RoutingSettings:
        known = policy_modules()
        if self.policy not in known:
            raise ValueError(f"unknown routing policy {self.policy!r}; choose one of {sorted(known)}")
        return self

    def replacing(
        self,
        *,
        spill: SpillRules | None = None,
        yielding: BatchYieldSettings | None = None,
        arbitration: GpuArbitrationSettings | None = None,
    ) -> RoutingSettings:
        """These settings with the groups given replaced (each a whole, validated group)."""
        return self.model_copy(
            update={
                "spill": spill or self.spill,
                "yielding": yielding or self.yielding,
                "arbitration": arbitration or self.arbitration,
            }
        )


MIN_KEY_LENGTH = 16
"""Shortest key a plan may hold: 16 random characters are about 95 bits, out of reach of guessing;
an empty or short key is a typo or a placeholder, and is refused rather than served."""
_MASK_CHARACTERS = frozenset("*")


class ApiKey(BaseModel):
    """One client key: the secret, a name for metrics and logs, and what the key may do.

    The secret is a SecretStr: repr, logs and every JSON/YAML dump show `**********`. A key made of
    asterisks only is that mask coming back from a dump (the real key was lost on the way), so it
    is refused instead of becoming a key that anyone can guess."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    key: SecretStr = Field(
        description=f"The bearer token clients send, {MIN_KEY_LENGTH} characters or more; never logged or dumped."
    )
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Shown in metrics and logs instead of the key.")
    default_class: TrafficClass | None = Field(
        None, description="Class of this key's requests unless they send X-Tandem-Class."
    )
    requests_per_minute: int | None = Field(None, ge=1, description="Past this rate: 429.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Prompt + completion tokens per minute, taken as requests end; past it: 429."
    )
    max_concurrent: int | None = Field(None, ge=1, description="Requests in flight at once; past this: 429.")
    admin: bool = Field(
        False, description="May use the admin routes: routing (PUT /admin/routing), keys and usage (/admin/keys)."
    )
    models: list[str] | None = Field(
        None,
        min_length=1,
        description="The models (names or aliases) this key may use; null or absent: every model. Other models "
        "answer 404 as if not served, and /v1/models lists only these.",
    )

    @field_validator("key")
    @classmethod
    def _a_real_key(cls, key: SecretStr) -> SecretStr:
        secret = key.get_secret_value()
        if secret and set(secret) <= _MASK_CHARACTERS:
            raise ValueError(
                "is the mask a dump writes in place of a key, not a key: the real key was lost on the way; "
                "give the key itself (here, in auth.keys_file or in the auth.keys_env variable)"
            )
        if len(secret) < MIN_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_KEY_LENGTH} characters, got {'an empty key' if not secret else 'fewer'}: "
                "an empty or short key is guessable; generate one, e.g. `openssl rand -hex 24`"
            )
        return key


class AuthSettings(BaseModel):
    """Optional API keys. No keys (and no keys file) means the generation endpoints are open, like
    `vllm serve` without --api-key; the admin routes then answer on loopback only."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    keys: list[ApiKey] = Field(default_factory=list)
    keys_file: Path | None = Field(
        None, description="YAML list of keys (same fields as `keys`), read at start; kept out of the plan."
    )
    keys_env: str | None = Field(
        "TANDEM_API_KEYS",
        description="Environment variable holding comma-separated `name:key[:class[:model+model]]` entries "
        "(class may be empty: `ci:KEY::coder`), added to the others; null: none is read.",
    )
    per_key_metrics: bool = Field(
        False,
        description="Label request and token counters in /metrics with each key's name. Off: the label is '-', "
        "so /metrics, which needs no key, does not tell anyone who uses the gateway or how much.",
    )

    def resolved(self) -> AuthSettings:
        """These settings with the keys file and the environment read now, into `keys`: what a
        deployment hands to the gateway replica, whose process may have neither the file nor the
        variable (another node, another working directory)."""
        return self.model_copy(update={"keys": self.resolved_keys(), "keys_file": None, "keys_env": None})

    def resolved_keys(self) -> list[ApiKey]:
        """Keys from the config, the keys file and the environment, in that order; names unique."""
        keys = list(self.keys)
        if self.keys_file is not None:
            data = yaml.safe_load(self.keys_file.expanduser().read_text()) or []
            keys += [ApiKey.model_validate(item) for item in data]
        entries = os.environ.get(self.keys_env, "") if self.keys_env else ""
        keys += [_env_key(entry, self.keys_env) for entry in filter(None, (e.strip() for e in entries.split(",")))]
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ValueError(f"API key names must be unique, got {sorted(names)}")
        return keys


def unserved_models(models: Iterable[str] | None, served_names: Collection[str]) -> list[str]:
    """The names of a key's model list that no served model has (as its name or an alias), each
    once, in the list's order; none for a key without a list (every model)."""
    return [name for name in dict.fromkeys(models or ()) if name not in served_names]


def check_key_models(keys: Iterable[ApiKey], served_names: Collection[str]) -> None:
    """Refuses a key limited to a model not served (by name or alias), naming both: a typo there
    would answer 404 to every request the key makes."""
    for key in keys:
        unknown = unserved_models(key.models, served_names)
        if unknown:
            raise ValueError(
                f"API key {key.name!r} names models this gateway does not serve: {unknown}; "
                f"served: {sorted(served_names)} (names or aliases)"
            )


def _env_key(entry: str, variable: str | None) -> ApiKey:
    """One `name:key[:class[:model+model]]` entry of the keys variable: a key from the environment
    can be limited to models like any other (an empty class field keeps the default class)."""
    name, _, rest = entry.partition(":")
    secret, _, rest = rest.partition(":")
    default_class, _, models = rest.partition(":")
    if not secret:
        raise ValueError(f"{variable}: entries are name:key[:class[:model+model]], got one without a key")
    return ApiKey(
        name=name,
        key=SecretStr(secret),
        default_class=default_class or None,
        models=[m for m in models.split("+") if m] or None,
    )


class RequestLimits(BaseModel):
    """What one request may ask for; past these the gateway answers itself (413 / 400 / 504)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Larger bodies: 413.")
    max_tokens_cap: int | None = Field(None, ge=1, description="max_tokens / max_completion_tokens above this: 400.")
    upstream_connect_timeout_s: float = Field(
        5.0, gt=0, description="Connecting to a replica; past it: retry elsewhere."
    )
    upstream_first_byte_timeout_s: float = Field(
        600.0, gt=0, description="Waiting for a replica's response headers; past it: 504."
    )
    load_poll_interval_s: float = Field(
        0.5, gt=0, description="How often each engine's /metrics is read for its queue lengths."
    )
    load_probe_misses: int = Field(
        3,
        ge=1,
        description="Load probes in a row that time out before a replica takes no new traffic (a refused "
        "or failed probe counts at once): a generating CPU engine answers its own /metrics seconds late.",
    )
    stream_idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest silence between two events of a started stream; past it the stream ends "
        "with an error event (a stalled replica frees its slot).",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Reading a request's body; past it: 408 (a client trickling its body would hold its "
        "key's concurrency slot and a connection).",
    )


class ResponseStateSettings(BaseModel):
    """The gateway's map from Responses API response id to the replica whose engine stored it
    (previous_response_id, GET /v1/responses/{id} and cancel must reach that replica). Bounded
    and expiring, as vLLM's own store is neither: past these, the gateway answers 404."""

    model_config = ConfigDict(extra="forbid")

    max_ids: int = Field(100_000, ge=1, description="Ids remembered; the least recently used go first.")
    ttl_s: float = Field(24 * 3600.0, gt=0, description="Seconds an id is remembered after its last use.")


class TlsSettings(BaseModel):
    """HTTPS on the gateway's own port (uvicorn's ssl_certfile / ssl_keyfile): PEM files on the
    machine the gateway runs on (the head node of a cluster)."""

    model_config = ConfigDict(extra="forbid")

    cert_file: Path = Field(description="PEM certificate chain: the server's certificate first.")
    key_file: Path = Field(description="PEM private key of that certificate (kept readable by the gateway only).")


class LogSettings(BaseModel):
    """The gateway's log output (gateway.logs): one line per request at `info`."""

    model_config = ConfigDict(extra="forbid")

    format: LogFormat = Field("text", description="text, or one JSON object per line.")
    level: LogLevel = Field("info", description="info logs one line per request; warning leaves them out.")


class GatewaySettings(BaseModel):
    """Where the gateway listens and how it routes."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors never echo a key

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    tls: TlsSettings | None = Field(None, description="Serve HTTPS with these files; none: plain HTTP.")
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Addresses (or networks) whose X-Forwarded-For names the real client: a reverse proxy in "
        "front of the gateway. From anyone else the header is ignored.",
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    responses: ResponseStateSettings = Field(default_factory=ResponseStateSettings)
    log: LogSettings = Field(
        default_factory=LogSettings, description="`gateway serve --log-format/--log-level` take precedence."
    )


class ReplicaEndpoint(BaseModel):
    """One replica as the gateway sees it: how to reach it and what its engine accepts."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    traffic_class: TrafficClass
    model: str = Field(description="The model name the replica's engine serves (sent upstream in `model`).")
    max_num_seqs: int = Field(64, ge=1, description="The engine's batch size: the load snapshot's capacity.")
    engine: str = Field(
        "vllm",
        pattern=r"^[a-z][a-z0-9-]*$",
        description="The engine the replica runs (its adapter in gateway.engines): where its health and load "
        "are read, and whether it takes a request `priority`.",
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs", description="Sent a request `priority` only where the engine's adapter accepts it under this policy."
    )
    base_url: str | None = Field(
        None, description="OpenAI base URL for the HTTP backend, e.g. http://127.0.0.1:8001/v1."
    )
    device_group: str | None = Field(
        None,
        description="Replicas with the same group share devices (co-resident engines): the batch ones among "
        "them are frozen while interactive work runs on the others (routing.gpu_arbitration 'freeze').",
    )


def check_names_unique(replicas: list[str], served_names: list[list[str]]) -> None:
    """Replica names unique across every model, and each model name or alias naming one model
    only (a plan and a gateway config both check it: a request's `model` must pick one group).
    ValueError naming the repeats."""
    if len(set(replicas)) != len(replicas):
        raise ValueError(f"replica names must be unique across models, got {replicas}")
    served = [name for names in served_names for name in set(names)]
    repeated = sorted({name for name in served if served.count(name) > 1})
    if repeated:
        raise ValueError(f"a model name or alias may name one model only: {repeated} name several")


class ServedModel(BaseModel):
    """One public model and the replicas that serve it: a model group. A request's `model` picks
    the group (its name or an alias); the group's own router, class gates and batch yielding then
    pick one of its replicas, so one group's traffic never lands on another's engines."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Public model name, shown in /v1/models and in every response.")
    aliases: list[str] = Field(default_factory=list, description="Other names clients may send.")
    replicas: list[ReplicaEndpoint] = Field(min_length=1)
    limits: dict[TrafficClass, ClassLimits] = Field(
        default_factory=dict,
        description="This model's own admission limits per class, in place of settings.routing.limits for that "
        "class (a small model beside a large one takes more requests at once).",
    )

    @model_validator(mode="after")
    def _aliases_once(self) -> ServedModel:
        """Each alias once and never the name itself (some plans list the name among the aliases):
        /v1/models, the status page and every name check then see each name once."""
        self.aliases = [a for a in dict.fromkeys(self.aliases) if a != self.name]
        return self

    @property
    def served_names(self) -> list[str]:
        return [self.name, *self.aliases]

    def routing(self, settings: RoutingSettings) -> RoutingSettings:
        """The gateway's routing settings with this model's own class limits in force."""
        if not self.limits:
            return settings
        return settings.model_copy(update={"limits": {**settings.limits, **self.limits}})


class GatewayConfig(BaseModel):
    """Everything one gateway process needs: the models it serves, their replicas, and its settings.

    One model may be written in the short form of earlier configs (`model`, `aliases`, `replicas` at
    the top level); it is read as `models: [{name, aliases, replicas}]`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors never echo a key

    models: list[ServedModel] = Field(min_length=1, description="The first one serves requests that name no model.")
    settings: GatewaySettings = Field(default_factory=GatewaySettings)

    @model_validator(mode="before")
    @classmethod
    def _one_model_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" in data and "models" not in data:
            data = dict(data)
            group = {"name": data.pop("model"), "replicas": data.pop("replicas", [])}
            if "aliases" in data:
                group["aliases"] = data.pop("aliases")
            data["models"] = [group]
        return data

    @model_validator(mode="after")
    def _names_unique(self) -> GatewayConfig:
        check_names_unique([r.name for r in self.replicas], [group.served_names for group in self.models])
        return self

    @model_validator(mode="after")
    def _keys_name_served_models(self) -> GatewayConfig:
        """A key limited to a model this gateway does not serve is a typo that would answer 404 to
        every request the key makes: refused here, where the plan is read (the keys file's and the
        variable's keys too, once deploy has resolved them)."""
        check_key_models(self.settings.auth.keys, self.served_names)
        return self

    @property
    def replicas(self) -> list[ReplicaEndpoint]:
        """Every model's replicas."""
        return [r for group in self.models for r in group.replicas]

    @property
    def served_names(self) -> frozenset[str]:
        """Every model's name and aliases."""
        return frozenset(name for group in self.models for name in group.served_names)

    def model_named(self, name: str) -> ServedModel | None:
        """The model a request's `model` names (its name or an alias); None for one not served."""
        return next((group for group in self.models if name in group.served_names), None)


class ConfigError(ValueError):
    """A gateway config that cannot be loaded; the message names each bad field."""


def load_config(path: str | Path) -> GatewayConfig:
    """Read a GatewayConfig from YAML (`gateway serve --config gateway.yaml`), its keys file and
    keys variable read into `settings.auth.keys` (AuthSettings.resolved), as deploy hands them over."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        config = GatewayConfig.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"no gateway config at {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a valid gateway config:\n{describe_fields(exc)}") from None
    try:  # the keys file's and the variable's keys, read once, now: their errors stop the start here
        auth = config.settings.auth.resolved()
        check_key_models(auth.keys, config.served_names)
    except ValidationError as exc:
        raise ConfigError(f"{path}: the API keys:\n{describe_fields(exc)}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: the API keys: {exc}") from None
    return config.model_copy(update={"settings": config.settings.model_copy(update={"auth": auth})})


def describe_fields(error: ValidationError) -> str:
    """One line per bad field, `  where.in.the.file: what is wrong`, for config-file errors."""
    return "\n".join(
        f"  {'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )
