"""class-aware, Tandem's default: each traffic class to its own replica (the least loaded, where a
model has several of a class), with bounded exceptions (interactive spills while its queue is long;
batch borrows an idle interactive replica)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.contract.policy import Choice, PolicyContext, PolicySpec, least_loaded, of_class


@dataclass(frozen=True, slots=True)
class Spilling:
    """Whether interactive work spills to the batch replica now: the hysteresis between
    spill_queue_threshold and spill_release_threshold needs the previous answer. A policy whose
    state is this type shows in the gateway's spilling gauge and status."""

    spilling: bool = False


def choose(ctx: PolicyContext[Spilling]) -> Choice[Spilling]:
    """Each class to its own replica; interactive spills to the batch replica while its own queue is
    long (with hysteresis), batch borrows the interactive replica only while that one is idle, and
    never under gpu_arbitration "freeze": the freeze reserves the shared GPUs for chat, and a batch
    request on the chat engine sits ahead of the next chat request where no freeze can stop it (the
    simulated light chat load in docs/routing.md: interactive TTFT p99 748 ms with borrowing, 505 ms
    without)."""
    settings, state = ctx.settings, ctx.state
    interactive = of_class(ctx.replicas, "interactive")
    batch = of_class(ctx.replicas, "batch")
    if interactive is None or batch is None:  # one class has no replica (down, or none): the others take all
        return Choice(least_loaded(ctx.replicas) or ctx.replicas[0], Spilling(False))
    if ctx.traffic_class == "interactive":
        if state.spilling:
            spilling = interactive.queue > settings.spill.release_threshold
        else:
            spilling = interactive.queue >= settings.spill.queue_threshold
        state = Spilling(spilling)
        if spilling and batch.free_slots >= settings.spill.target_headroom:
            return Choice(batch, state, spilled=True)
        return Choice(interactive, state)
    borrow = (
        settings.spill.batch_borrows_idle_interactive
        and settings.arbitration.mode != "freeze"
        and interactive.idle
        and batch.free_slots == 0
        and not state.spilling
    )
    return Choice(interactive, state, spilled=True) if borrow else Choice(batch, state)


POLICY = PolicySpec(choose, Spilling())
