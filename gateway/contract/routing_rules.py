"""The routing thresholds a plan ships with, derived from its replicas' batch sizes.

Class-aware routing has five numbers to set (spill on, spill off, spill headroom, and each class's
admission limit), and one switch (batch yielding). They are not free constants: each is a fraction of what an engine can run at
once (`max_num_seqs`), so the same rule fits a 16-slot TP replica on the CPU and a 256-slot PP
replica on the Spark pair. The rule, and why:

  spill_queue_threshold    a quarter of the interactive replica's slots waiting (at least 2).
                           One or two queued requests clear within a step or two; a queue of a
                           quarter of the batch means each newcomer waits for a quarter of the
                           running requests to finish, a whole answer's time, which is what the
                           TTFT target cannot absorb.
  spill_release_threshold  a quarter of that (below it): hysteresis, so spilling does not flap.
  spill_target_headroom    an eighth of the batch replica's slots: spill only into a batch
                           replica that still has room, so interactive work never queues behind
                           batch work there.
  interactive admission    the interactive replica's slots plus the spill headroom may run; the
                           rest wait in the gateway (4x as many), where they can still be routed.
  batch admission          the batch replica's slots, plus the interactive replica's while batch
                           may borrow it when idle, may run (no request waits inside the batch
                           engine, where the gateway could no longer move it); 8x as many wait.

  batch yielding           off (batch_yield_fraction 1, the base's), for every shipped plan. The
                           rule picks, on the plan's simulated steady mix, the setting with the
                           best goodput, and yields only where a setting beats "off" beyond its
                           95% interval; none does (docs/routing.md, "Batch yielding"). Why: the
                           replicas time-slice the same GPUs, and holding admissions cannot keep
                           a steadily fed batch replica off them (admitted batch requests run to
                           the end), so every hold costs batch goodput, and the interactive TTFT
                           tail stays 2.1-2.7x whatever the hold. A plan that weighs interactive
                           latency above the total sets it (0 with a hold bound), or lets the
                           tuner's routing study search it.
  GPU arbitration          "admission" (no freeze; the base's), for every shipped plan. Freezing
                           the batch engine while interactive work runs (gateway.contract.freezing)
                           gives interactive steps their alone speed, but on the plans' simulated
                           steady mix the TP replica is busy all the time, so the batch replica
                           is frozen for all but the starvation bound's share and its goodput
                           goes, and the TTFT tail stays above 2x (a freeze waits for the batch
                           step in flight) (docs/routing.md, "GPU arbitration"); a plan whose chat load
                           leaves the GPUs idle between turns, or that weighs interactive latency
                           above batch work, sets gpu_arbitration: freeze.

An engine-side queue is invisible to routing: a request vLLM holds in its waiting queue cannot be
sent elsewhere when a replica frees up or fails. Admission limits at the engine's own batch size
keep the queue in the gateway. The tuner may search around these values (tuner/optimize); this
rule is the default each plan gets.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.contract.config import RoutingSettings, TrafficClass


def routing_for(
    interactive_max_num_seqs: int, batch_max_num_seqs: int, base: RoutingSettings | None = None
) -> RoutingSettings:
    """Class-aware thresholds and class limits for replicas of these batch sizes; every other
    setting (policy name, classification, batch yielding) is kept from `base`."""
    spill_on = max(2, interactive_max_num_seqs // 4)
    headroom = max(1, batch_max_num_seqs // 8)
    base = base or RoutingSettings()
    interactive_running = interactive_max_num_seqs + headroom
    batch_running = batch_max_num_seqs + (interactive_max_num_seqs if base.spill.batch_borrows_idle_interactive else 0)
    return base.model_copy(
        update={
            "spill": base.spill.model_copy(
                update={"queue_threshold": spill_on, "release_threshold": spill_on // 4, "target_headroom": headroom}
            ),
            "limits": {
                # Sizes from the replicas; priority and deadlines kept from the base.
                "interactive": base.limits["interactive"].model_copy(
                    update={"max_concurrency": interactive_running, "max_queue": 4 * interactive_running}
                ),
                "batch": base.limits["batch"].model_copy(
                    update={"max_concurrency": batch_running, "max_queue": 8 * batch_running}
                ),
            },
        }
    )


def routing_for_replicas(
    replicas: Iterable[tuple[TrafficClass, int]], base: RoutingSettings | None = None
) -> RoutingSettings:
    """`routing_for` replicas given as (traffic class, max_num_seqs): the largest batch size serving
    each class counts. For a plan: `((r.traffic_class, r.engine.max_num_seqs) for r in plan.replicas)`."""
    sizes: dict[TrafficClass, int] = {}
    for traffic_class, max_num_seqs in replicas:
        sizes[traffic_class] = max(sizes.get(traffic_class, 0), max_num_seqs)
    missing = {"interactive", "batch"} - sizes.keys()
    if missing:
        raise ValueError(f"routing rules need an interactive and a batch replica; none serves {sorted(missing)}")
    return routing_for(sizes["interactive"], sizes["batch"], base)
