"""Routing, pure: the functions from (request, replica load, settings, state) to a decision.

No I/O and no clock here: the gateway calls these with live numbers, and the perf model's traffic
simulation (tuner/perfmodel) calls the very same functions with simulated ones.

Inputs (gateway.contract.policy)
  RequestFeatures  what the router may know about a request (gateway.contract.classify builds it from the
                   body): endpoint, stream, n, number of prompts, max_tokens, client's priority;
                   for conversation policies, its prefix hash, session and previous replica.
  TrafficClass     "interactive" | "batch", from gateway.contract.classify.classify().
  ReplicaLoad      one per replica: name, traffic_class, in_flight (requests this gateway has
                   sent and not finished), running / waiting (the engine's own counts, from
                   its metrics page, read by its engine adapter), max_num_seqs, healthy, accepts_priority
                   (the engine adapter allows a request priority under its scheduling policy).
  RoutingSettings  gateway.contract.config; `settings.policy` names the policy in POLICIES.
  PolicyState      each policy's own state between decisions (the round-robin cursor, class-aware's
                   spilling flag). Immutable: pass the returned state to the next call.
  rng              a random.Random, used by "power-of-two" only (seed it to replay a run).

Output of route()
  (Route(replica, priority, spilled) | Reject(status, message), new PolicyState)
  `priority` is the vLLM request priority to add, or None to send the request as it came.

POLICIES, the registry: one PolicySpec per module of gateway/contract/policies/ (the module's name is the
policy's). A policy is a function of one PolicyContext (the inputs above, the replicas narrowed to
the healthy ones, the policy's own state) to a Choice (replica, next state, spilled); route() adds
the priority. "class-aware" is Tandem's default; "conversation-affinity" is class-aware that keeps a
conversation's turns on the replica holding its prefix cache where the class allows; the others are
the baselines they are measured against ("power-of-two" is Ray Serve's default).
Every policy sends a request only to a healthy replica, so a replica that is down is routed
around whatever the policy prefers; with none healthy the answer is Reject(503).

Admission (gateway.contract.admission) decides before routing whether a request runs now; batch
yielding (gateway.contract.yielding) narrows the batch class's admission while interactive work runs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, TypeVar, cast

from gateway.contract.config import RoutingSettings, TrafficClass
from gateway.contract.policies import policy_modules
from gateway.contract.policy import PolicyContext, PolicySpec, ReplicaLoad, RequestFeatures

S = TypeVar("S")


def _load_policies() -> dict[str, PolicySpec[Any]]:
    """Every module of gateway/contract/policies/, by policy name; a module without a PolicySpec named
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
