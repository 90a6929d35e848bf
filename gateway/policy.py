"""Routing: the pure functions from (request, replica load, settings, state) to a decision.

No I/O and no clock here: the gateway calls these with live numbers, and the perf model's traffic
simulation (tuner/perfmodel) calls the very same functions with simulated ones.

Inputs (gateway.policy_base)
  RequestFeatures  what the router may know about a request (gateway.classify builds it from the
                   body): endpoint, stream, n, number of prompts, max_tokens, client's priority;
                   for conversation policies, its prefix hash, session and previous replica.
  TrafficClass     "interactive" | "batch", from gateway.classify.classify().
  ReplicaLoad      one per replica: name, traffic_class, in_flight (requests this gateway has
                   sent and not finished), running / waiting (the engine's own counts, from
                   its metrics page, read by its engine adapter), max_num_seqs, healthy, accepts_priority
                   (the engine adapter allows a request priority under its scheduling policy).
  RoutingSettings  gateway.config; `settings.policy` names the policy in POLICIES.
  PolicyState      each policy's own state between decisions (the round-robin cursor, class-aware's
                   spilling flag). Immutable: pass the returned state to the next call.
  rng              a random.Random, used by "power-of-two" only (seed it to replay a run).

Output of route()
  (Route(replica, priority, spilled) | Reject(status, message), new PolicyState)
  `priority` is the vLLM request priority to add, or None to send the request as it came.

POLICIES, the registry: one PolicySpec per module of gateway/policies/ (the module's name is the
policy's). A policy is a function of one PolicyContext (the inputs above, the replicas narrowed to
the healthy ones, the policy's own state) to a Choice (replica, next state, spilled); route() adds
the priority. "class-aware" is Tandem's default; "conversation-affinity" is class-aware that keeps a
conversation's turns on the replica holding its prefix cache where the class allows; the others are
the baselines they are measured against ("power-of-two" is Ray Serve's default).
Every policy sends a request only to a healthy replica, so a replica that is down is routed
around whatever the policy prefers; with none healthy the answer is Reject(503).

Admission (per-class concurrency with a bounded queue) is the separate pure function admit():
  ClassLoad(in_flight, queued) + ClassLimits -> "run" | "queue" | "reject".

Batch yielding (for replicas that share GPUs; off unless set) adjusts the batch class's limits:
  batch_yield(interactive requests active, now, settings, YieldState) -> YieldState
  batch_limits(batch ClassLimits, settings, YieldState) -> the ClassLimits admit() applies now.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Literal, TypeVar, cast

from gateway.arbitration import HoldTimers, hold_next_change, hold_step
from gateway.config import ClassLimits, RoutingSettings, TrafficClass
from gateway.policies import policy_modules
from gateway.policy_base import PolicyContext, PolicySpec, ReplicaLoad, RequestFeatures

S = TypeVar("S")


def _load_policies() -> dict[str, PolicySpec[Any]]:
    """Every module of gateway/policies/, by policy name; a module without a PolicySpec named
    POLICY is a mistake to report at import, not at the first request it would route."""
    found: dict[str, PolicySpec[Any]] = {}
    for name, module in policy_modules().items():
        spec = getattr(import_module(module), "POLICY", None)
        if not isinstance(spec, PolicySpec):
            raise ImportError(f"{module} declares no POLICY = PolicySpec(...) for the policy {name!r}")
        found[name] = spec
    return found


POLICIES: Mapping[str, PolicySpec[Any]] = _load_policies()


@dataclass(frozen=True, slots=True)
class ClassLoad:
    """One traffic class's requests in the gateway: admitted and running, and waiting to be."""

    in_flight: int = 0
    queued: int = 0


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policies carry from one decision to the next: each policy's own state, by name.
    A policy that has not decided yet starts from its spec's initial_state, so a router or a
    simulation starts with PolicyState() whatever the policy."""

    by_policy: Mapping[str, object] = field(default_factory=dict)

    def of(self, name: str, spec: PolicySpec[S]) -> S:
        """The state of the policy `name` (declared by `spec`)."""
        # by_policy[name] was only ever set from spec.choose's Choice[S] (route below).
        return cast(S, self.by_policy.get(name, spec.initial_state))

    def with_state(self, name: str, state: object) -> PolicyState:
        return PolicyState({**self.by_policy, name: state})


@dataclass(frozen=True, slots=True)
class Route:
    replica: str
    priority: int | None = None
    spilled: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    message: str


Decision = Route | Reject
Admission = Literal["run", "queue", "reject"]


def admit(load: ClassLoad, limits: ClassLimits) -> Admission:
    """Run now if the class is under its concurrency limit, else queue while the queue has room."""
    if load.in_flight < limits.max_concurrency:
        return "run"
    if load.queued < limits.max_queue:
        return "queue"
    return "reject"


def route(
    request: RequestFeatures,
    traffic_class: TrafficClass,
    replicas: Sequence[ReplicaLoad],
    settings: RoutingSettings,
    state: PolicyState,
    rng: random.Random | None = None,
) -> tuple[Decision, PolicyState]:
    """Pick a replica for one admitted request with the policy `settings.policy` names."""
    healthy = [r for r in replicas if r.healthy]
    if not healthy:
        return Reject(503, "no replica is ready to serve this request"), state
    name = settings.policy
    spec = POLICIES[name]
    own = state.of(name, spec)
    choice = spec.choose(PolicyContext(request, traffic_class, healthy, settings, own, rng or random.Random()))
    decision = Route(choice.replica.name, _priority(request, traffic_class, choice.replica, settings), choice.spilled)
    return decision, state if choice.state == own else state.with_state(name, choice.state)


def route_to(
    request: RequestFeatures,
    traffic_class: TrafficClass,
    replicas: Sequence[ReplicaLoad],
    replica: str,
    settings: RoutingSettings,
) -> Decision:
    """Send a request to the one replica that holds its state (a Responses API follow-up names a
    response that only that replica's engine stored): no policy choice, the class's priority as
    route() would add it, and a 503 while that replica is down, since no other can answer."""
    held = next((r for r in replicas if r.name == replica), None)
    if held is None or not held.healthy:
        return Reject(503, f"replica {replica}, which holds this response's state, is not ready")
    return Route(held.name, _priority(request, traffic_class, held, settings))


def _priority(
    request: RequestFeatures, traffic_class: TrafficClass, replica: ReplicaLoad, settings: RoutingSettings
) -> int | None:
    """The class's priority, only where the engine schedules by priority (vLLM rejects a non-zero
    priority otherwise), and never over a priority the client chose."""
    if request.client_priority is not None or not replica.accepts_priority:
        return None
    return settings.limits[traffic_class].priority


# ---- batch yielding: admission that gives the shared GPUs to interactive work ----------------------------


@dataclass(frozen=True, slots=True)
class YieldState:
    """Whether batch admissions are held back for interactive work, and since when.

    Times are the caller's clock in seconds (the gateway's monotonic clock, or simulated time)."""

    holding: bool = False
    since: float = 0.0
    """When the current phase (holding, or free) began."""
    forced: bool = False
    """The current free phase was forced by the starvation bound: it lasts batch_yield_release_s."""
    interactive_idle_since: float | None = None
    """When interactive work last dropped to none in flight or queued; None while there is some."""

    def next_change(self, settings: RoutingSettings) -> float | None:
        """When this state changes by itself unless traffic changes it first: the caller re-evaluates
        `batch_yield` then (a timer in the simulation, the load poll in the gateway). None: never."""
        return hold_next_change(self, _yield_timers(settings))


def _yield_timers(settings: RoutingSettings) -> HoldTimers:
    return HoldTimers(settings.yielding.settle_s, settings.yielding.max_hold_s, settings.yielding.release_s)


def batch_yield(interactive_active: int, now: float, settings: RoutingSettings, state: YieldState) -> YieldState:
    """The next yield state, given the interactive requests in flight or queued in the gateway now.

    Why: two replicas on the same GPUs without MPS time-slice them, so while the batch replica has
    any work the interactive one runs at about half speed, whatever the batch size (a decode step
    streams all the weights either way). Routing cannot help (each class has its own replica); only
    keeping the batch replica idle while interactive work runs can, and the price is batch
    throughput. Running requests are never stopped: holding only keeps new batch requests in the
    gateway's queue, so the batch replica drains and goes idle.

      hold      as soon as any interactive request is in flight or queued;
      settle    release once interactive has had none for batch_yield_settle_s (hysteresis: a
                user thinking between turns does not let in a batch request that would then slow
                the next turn for its whole run);
      bound     a hold lasts at most batch_yield_max_hold_s, then batch runs at its full limit for
                at least batch_yield_release_s, whatever interactive does: batch is never held to
                zero for longer than max_hold_s, and gets its full limit at least
                release / (max_hold + release) of the time.
    batch_yield_fraction 1 turns yielding off (the state stays free)."""
    if settings.yielding.fraction >= 1:
        return YieldState()
    return hold_step(interactive_active > 0, now, _yield_timers(settings), state)


def batch_limits(limits: ClassLimits, settings: RoutingSettings, state: YieldState) -> ClassLimits:
    """The batch class's admission limits under the yield state: while holding, at most
    batch_yield_fraction of its max_concurrency may be in flight (0: no new batch request starts
    until the hold ends); the queue's size is unchanged, so held requests wait, not fail."""
    if not state.holding:
        return limits
    held = math.floor(settings.yielding.fraction * limits.max_concurrency)
    return limits.model_copy(update={"max_concurrency": held})  # 0 is a valid *held* limit: admit() queues
