"""conversation-affinity: class-aware, except that a conversation's next turn returns to the replica
that holds its prefix in the engine's cache, where the class allows."""

from __future__ import annotations

from dataclasses import replace

from gateway.contract.policies import class_aware
from gateway.contract.policies.class_aware import Spilling
from gateway.contract.policy import Choice, PolicyContext, PolicySpec


def choose(ctx: PolicyContext[Spilling]) -> Choice[Spilling]:
    """Class-aware, except that a follow-up turn goes back to the replica that served the
    conversation's previous turn while that replica serves this class and has a free slot: its
    engine still holds the conversation's prefix in its cache, so the turn skips most of its
    prefill. A replica of the other class is followed only where class-aware sends the turn anyway
    (spilling or borrowing), so affinity never moves work across classes by itself."""
    choice = class_aware.choose(ctx)
    previous = next((r for r in ctx.replicas if r.name == ctx.request.previous_replica), None)
    if previous is not None and previous.traffic_class == ctx.traffic_class and previous.free_slots > 0:
        return replace(choice, replica=previous, spilled=False)
    return choice


POLICY = PolicySpec(choose, Spilling(), reads_conversation=True)
