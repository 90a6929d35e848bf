"""power-of-two, a baseline and Ray Serve's default router: two random replicas, the one with fewer
requests in flight wins."""

from __future__ import annotations

from gateway.contract.policy import Choice, PolicyContext, PolicySpec


def choose(ctx: PolicyContext[None]) -> Choice[None]:
    """Random draws come from ctx.rng only, so a seeded run replays."""
    if len(ctx.replicas) == 1:
        return Choice(ctx.replicas[0], None)
    first, second = ctx.rng.sample(list(ctx.replicas), 2)
    return Choice(second if second.in_flight < first.in_flight else first, None)


POLICY = PolicySpec(choose, None)
