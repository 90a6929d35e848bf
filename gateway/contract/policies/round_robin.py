"""round-robin, a baseline: healthy replicas in turn, ignoring class and load."""

from __future__ import annotations

from gateway.contract.policy import Choice, PolicyContext, PolicySpec


def choose(ctx: PolicyContext[int]) -> Choice[int]:
    """The state is the cursor: the index, in name order, of the replica to take next."""
    ordered = sorted(ctx.replicas, key=lambda r: r.name)
    cursor = ctx.state % len(ordered)
    return Choice(ordered[cursor], (cursor + 1) % len(ordered))


POLICY = PolicySpec(choose, 0)
