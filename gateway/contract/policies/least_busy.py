"""least-busy, a baseline: the replica with the fewest requests in flight from this gateway."""

from __future__ import annotations

from gateway.contract.policy import Choice, PolicyContext, PolicySpec


def choose(ctx: PolicyContext[None]) -> Choice[None]:
    """Ties go to the first by name, so a replay picks the same."""
    return Choice(min(ctx.replicas, key=lambda r: (r.in_flight, r.name)), None)


POLICY = PolicySpec(choose, None)
