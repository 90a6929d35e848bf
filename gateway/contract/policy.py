"""What a routing policy is: the request and load it reads, the context of one decision, its
answer, and the declaration (`PolicySpec`) each module of gateway/contract/policies/ exposes as `POLICY`.

Pure, like every routing function of the contract layer: the gateway fills these with live numbers,
the perf model's traffic simulation with simulated ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from gateway.contract.config import RoutingSettings, TrafficClass

Endpoint = Literal["chat", "completions", "responses"]
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """The parts of a request that classification and routing look at."""

    endpoint: Endpoint
    stream: bool
    n: int = 1
    prompts: int = 1
    max_tokens: int | None = None
    client_priority: int | None = None
    # The conversation, for policies that read it (PolicySpec.reads_conversation; None otherwise,
    # as computing them costs the gateway CPU per request):
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
class PolicyContext(Generic[S]):
    """Everything a policy may read for one decision; `state` is the policy's own, as its previous
    decision left it (its spec's initial_state before the first)."""

    request: RequestFeatures
    traffic_class: TrafficClass
    replicas: Sequence[ReplicaLoad]  # the healthy ones, never empty
    settings: RoutingSettings
    state: S
    rng: random.Random


@dataclass(frozen=True, slots=True)
class Choice(Generic[S]):
    """A policy's answer: the replica, the state for the next decision, and whether the request
    left its class's own replica (spilled interactive work, or batch work borrowing)."""

    replica: ReplicaLoad
    state: S
    spilled: bool = False


@dataclass(frozen=True, slots=True)
class PolicySpec(Generic[S]):
    """One policy, as its module in gateway/contract/policies/ declares it (`POLICY = PolicySpec(...)`); its
    name is the module's, with hyphens for underscores.

    choose              the policy: a pure function of one decision's context
    initial_state       its own state before its first decision (immutable; None for a policy
                        that carries nothing between decisions)
    reads_conversation  the router then hashes each chat's opening and remembers each
                        conversation's last replica for it (RequestFeatures' conversation fields);
                        other policies cost nothing for it
    """

    choose: Callable[[PolicyContext[S]], Choice[S]]
    initial_state: S
    reads_conversation: bool = False


def least_loaded(replicas: Sequence[ReplicaLoad]) -> ReplicaLoad | None:
    """The replica with the most free slots, then the fewest requests in flight (the first of
    equals, so a plan with one replica per class always gets the same one); None for none."""
    return min(replicas, key=lambda r: (-r.free_slots, r.in_flight), default=None)


def of_class(replicas: Sequence[ReplicaLoad], traffic_class: TrafficClass) -> ReplicaLoad | None:
    """The least loaded replica serving `traffic_class`, if any is among `replicas`: a model with
    several replicas of a class spreads that class's work over them."""
    return least_loaded([r for r in replicas if r.traffic_class == traffic_class])
