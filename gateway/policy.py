"""Routing policies: pure functions from (request, replica load, settings, state) to a decision.

No I/O and no clock here: the gateway calls these with live numbers, and the perf model's traffic
simulation (tuner/perfmodel) calls the very same functions with simulated ones.

Inputs
  RequestFeatures  what the router may know about a request (gateway.classify builds it from the
                   body): endpoint, stream, n, number of prompts, max_tokens, client's priority;
                   for conversation policies, its prefix hash, session and previous replica.
  TrafficClass     "interactive" | "batch", from gateway.classify.classify().
  ReplicaLoad      one per replica: name, traffic_class, in_flight (requests this gateway has
                   sent and not finished), running / waiting (the engine's own counts, from
                   its metrics page, read by its engine adapter), max_num_seqs, healthy, accepts_priority
                   (the engine adapter allows a request priority under its scheduling policy).
  RoutingSettings  gateway.config; `settings.policy` names the policy in POLICIES.
  PolicyState      what must persist between calls (round-robin cursor, the hysteresis
                   "spilling" flag). Immutable: pass the returned state to the next call.
  rng              a random.Random, used by "power-of-two" only (seed it to replay a run).

Output of route()
  (Route(replica, priority, spilled) | Reject(status, message), new PolicyState)
  `priority` is the vLLM request priority to add, or None to send the request as it came.

A policy (POLICIES) is a function of one PolicyContext (the inputs above, the replicas narrowed
to the healthy ones) to a Choice (replica, next state, spilled); route() adds the priority.

Admission (per-class concurrency with a bounded queue) is the separate pure function admit():
  ClassLoad(in_flight, queued) + ClassLimits -> "run" | "queue" | "reject".

Batch yielding (for replicas that share GPUs; off unless set) adjusts the batch class's limits:
  batch_yield(interactive requests active, now, settings, YieldState) -> YieldState
  batch_limits(batch ClassLimits, settings, YieldState) -> the ClassLimits admit() applies now.

Policies (POLICIES): "class-aware" (Tandem's default); "conversation-affinity", class-aware that
keeps a conversation's turns on the replica holding its prefix cache where the class allows; and
the baselines they are measured against: "all-interactive", "all-batch", "round-robin",
"least-busy", "power-of-two" (Ray Serve's default).
Every policy sends a request only to a healthy replica, so a replica that is down is routed
around whatever the policy prefers; with none healthy the answer is Reject(503).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gateway.arbitration import HoldTimers, hold_next_change, hold_step
from gateway.config import POLICY_NAMES, ClassLimits, RoutingSettings, TrafficClass

Endpoint = Literal["chat", "completions", "responses"]


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """The parts of a request that classification and routing look at."""

    endpoint: Endpoint
    stream: bool
    n: int = 1
    prompts: int = 1
    max_tokens: int | None = None
    client_priority: int | None = None
    # The conversation, for policies that keep one on a replica (CONVERSATION_POLICIES; None
    # otherwise, as computing them costs the gateway CPU per request):
    prefix_hash: int | None = None  # the opening of a chat (system and first user message), hashed
    session: str | None = None  # what the client names its session (`user`)
    previous_replica: str | None = None  # the replica that served this conversation's last turn


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """A snapshot of one replica's load, as fresh as the gateway knows it."""

    name: str
    traffic_class: TrafficClass
    in_flight: int = 0
    running: int = 0
    waiting: int = 0
    max_num_seqs: int = 64
    healthy: bool = True
    accepts_priority: bool = False

    @property
    def queue(self) -> int:
        """Requests waiting for a batch slot: the engine's count, or what this gateway alone has
        sent past max_num_seqs, whichever is larger (the engine's count lags by a poll)."""
        return max(self.waiting, self.in_flight - self.max_num_seqs, 0)

    @property
    def free_slots(self) -> int:
        return max(self.max_num_seqs - max(self.running + self.waiting, self.in_flight), 0)

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and self.queue == 0


@dataclass(frozen=True, slots=True)
class ClassLoad:
    """One traffic class's requests in the gateway: admitted and running, and waiting to be."""

    in_flight: int = 0
    queued: int = 0


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What a policy carries from one decision to the next."""

    spilling: bool = False
    round_robin_next: int = 0


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


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """Everything a policy may read for one decision."""

    request: RequestFeatures
    traffic_class: TrafficClass
    replicas: Sequence[ReplicaLoad]  # the healthy ones, never empty
    settings: RoutingSettings
    state: PolicyState
    rng: random.Random


@dataclass(frozen=True, slots=True)
class Choice:
    """A policy's answer: the replica, the state for the next decision, and whether the request
    left its class's own replica (spilled interactive work, or batch work borrowing)."""

    replica: ReplicaLoad
    state: PolicyState
    spilled: bool = False


Policy = Callable[[PolicyContext], Choice]


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
    choice = POLICIES[settings.policy](
        PolicyContext(request, traffic_class, healthy, settings, state, rng or random.Random())
    )
    decision = Route(choice.replica.name, _priority(request, traffic_class, choice.replica, settings), choice.spilled)
    return decision, choice.state


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


def _of_class(replicas: Sequence[ReplicaLoad], traffic_class: TrafficClass) -> ReplicaLoad | None:
    return next((r for r in replicas if r.traffic_class == traffic_class), None)


def _class_aware(ctx: PolicyContext) -> Choice:
    """Each class to its own replica; interactive spills to the batch replica while its own queue is
    long (with hysteresis), batch borrows the interactive replica only while that one is idle, and
    never under gpu_arbitration "freeze": the freeze reserves the shared GPUs for chat, and a batch
    request on the chat engine sits ahead of the next chat request where no freeze can stop it (the
    simulated light chat load in docs/routing.md: interactive TTFT p99 748 ms with borrowing, 505 ms
    without)."""
    settings, state = ctx.settings, ctx.state
    interactive = _of_class(ctx.replicas, "interactive")
    batch = _of_class(ctx.replicas, "batch")
    if interactive is None or batch is None:  # one class's replica is down: the other takes all
        return Choice(ctx.replicas[0], replace(state, spilling=False))
    if ctx.traffic_class == "interactive":
        if state.spilling:
            spilling = interactive.queue > settings.spill_release_threshold
        else:
            spilling = interactive.queue >= settings.spill_queue_threshold
        state = replace(state, spilling=spilling)
        if spilling and batch.free_slots >= settings.spill_target_headroom:
            return Choice(batch, state, spilled=True)
        return Choice(interactive, state)
    borrow = (
        settings.batch_borrows_idle_interactive
        and settings.gpu_arbitration != "freeze"
        and interactive.idle
        and batch.free_slots == 0
        and not state.spilling
    )
    return Choice(interactive, state, spilled=True) if borrow else Choice(batch, state)


def _fixed(traffic_class: TrafficClass) -> Policy:
    def policy(ctx: PolicyContext) -> Choice:
        return Choice(_of_class(ctx.replicas, traffic_class) or ctx.replicas[0], ctx.state)

    policy.__doc__ = f"Everything to the {traffic_class} replica (a baseline)."
    return policy


def _round_robin(ctx: PolicyContext) -> Choice:
    """Healthy replicas in turn, ignoring class and load (a baseline)."""
    ordered = sorted(ctx.replicas, key=lambda r: r.name)
    cursor = ctx.state.round_robin_next
    return Choice(ordered[cursor % len(ordered)], replace(ctx.state, round_robin_next=(cursor + 1) % len(ordered)))


def _least_busy(ctx: PolicyContext) -> Choice:
    """Fewest requests in flight from this gateway; ties to the first by name (a baseline)."""
    return Choice(min(ctx.replicas, key=lambda r: (r.in_flight, r.name)), ctx.state)


def _power_of_two(ctx: PolicyContext) -> Choice:
    """Two random replicas, the one with fewer in flight wins: Ray Serve's default router."""
    if len(ctx.replicas) == 1:
        return Choice(ctx.replicas[0], ctx.state)
    first, second = ctx.rng.sample(list(ctx.replicas), 2)
    return Choice(second if second.in_flight < first.in_flight else first, ctx.state)


def _conversation_affinity(ctx: PolicyContext) -> Choice:
    """Class-aware, except that a follow-up turn goes back to the replica that served the
    conversation's previous turn while that replica serves this class and has a free slot: its
    engine still holds the conversation's prefix in its cache, so the turn skips most of its
    prefill. A replica of the other class is followed only where class-aware sends the turn anyway
    (spilling or borrowing), so affinity never moves work across classes by itself."""
    choice = _class_aware(ctx)
    previous = next((r for r in ctx.replicas if r.name == ctx.request.previous_replica), None)
    if previous is not None and previous.traffic_class == ctx.traffic_class and previous.free_slots > 0:
        return replace(choice, replica=previous, spilled=False)
    return choice


POLICIES: dict[str, Policy] = {
    "class-aware": _class_aware,
    "conversation-affinity": _conversation_affinity,
    "all-interactive": _fixed("interactive"),
    "all-batch": _fixed("batch"),
    "round-robin": _round_robin,
    "least-busy": _least_busy,
    "power-of-two": _power_of_two,
}
CONVERSATION_POLICIES = frozenset({"conversation-affinity"})
"""Policies that read a request's conversation (prefix_hash, session, previous_replica)."""
if tuple(POLICIES) != POLICY_NAMES:  # settings are validated against the names in gateway.config
    raise ImportError(f"gateway.config.POLICY_NAMES {POLICY_NAMES} must list POLICIES {tuple(POLICIES)}")


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
    return HoldTimers(settings.batch_yield_settle_s, settings.batch_yield_max_hold_s, settings.batch_yield_release_s)


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
    if settings.batch_yield_fraction >= 1:
        return YieldState()
    return hold_step(interactive_active > 0, now, _yield_timers(settings), state)


def batch_limits(limits: ClassLimits, settings: RoutingSettings, state: YieldState) -> ClassLimits:
    """The batch class's admission limits under the yield state: while holding, at most
    batch_yield_fraction of its max_concurrency may be in flight (0: no new batch request starts
    until the hold ends); the queue's size is unchanged, so held requests wait, not fail."""
    if not state.holding:
        return limits
    held = math.floor(settings.batch_yield_fraction * limits.max_concurrency)
    return limits.model_copy(update={"max_concurrency": held})  # 0 is a valid *held* limit: admit() queues
