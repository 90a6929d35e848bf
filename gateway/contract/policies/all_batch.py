"""all-batch, a baseline: everything to the batch replica (to any healthy one while it is down)."""

from __future__ import annotations

from gateway.contract.policy import Choice, PolicyContext, PolicySpec, of_class


def choose(ctx: PolicyContext[None]) -> Choice[None]:
    return Choice(of_class(ctx.replicas, "batch") or ctx.replicas[0], None)


POLICY = PolicySpec(choose, None)
