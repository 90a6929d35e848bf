"""The v3 terms of one replica's step model, each with its value and source, for `tuner predict`.

A prediction is only as good as the figures behind it; printing them beside the table lets a reader
see which build, kernel figures and host costs a layout was priced with, and how far to trust each.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.perfmodel.host import load_host_costs
from tuner.perfmodel.moe import load_moe_kernels
from tuner.perfmodel.step import StepModel


@dataclass(frozen=True)
class Term:
    """One term of the model as a replica uses it."""

    name: str
    value: str
    kind: str
    source: str


def replica_terms(steps: StepModel) -> list[Term]:
    """The build-dependent terms of `steps` (none for a build-free model: llama.cpp, SGLang, CPU)."""
    build = steps.build
    if build is None:
        return []
    terms = [
        Term("engine build", f"{build.name}: {build.description}", "input", build.source),
        Term(
            "layer floor",
            f"{build.layer_floor_us.value:g} us per layer, on every TP rank",
            build.layer_floor_us.kind,
            build.layer_floor_us.source,
        ),
    ]
    if steps.model.is_moe:
        table = load_moe_kernels()
        figure = table.cost(build.moe_backend)
        exponent = table.exponent(build.moe_backend)
        shard = "whole experts (EP)" if steps.ep else f"1/{steps.tp} of each expert"
        terms += [
            Term(
                f"MoE pair cost ({build.moe_backend})",
                f"{steps.pair_seconds * 1e6:.2f} us per (token, expert) on this device, {shard}",
                figure.pair_us.kind,
                figure.pair_us.source,
            ),
            Term("pair cost vs shard size", f"exponent {exponent.value:g}", exponent.kind, exponent.source),
        ]
        if steps.ep:
            imbalance = steps.constants.ep_imbalance
            terms.append(Term("EP imbalance", f"{imbalance.value:g}x the mean rank", imbalance.kind, imbalance.source))
    host = load_host_costs()
    factor = host.speed_factor(steps.hardware.device.name)
    who = "overlapped with the GPU" if steps.host_overlapped else "serial after every step (Ray, one batch in flight)"
    terms += [
        Term(
            "host per step",
            f"({host.step_us.value:g} + {host.per_sequence_us.value:g} x sequences) us x {factor.value:g}, {who}",
            host.step_us.kind,
            f"{host.step_us.source}; per sequence: {host.per_sequence_us.source}",
        ),
        Term("host CPU speed", f"x{factor.value:g} of {host.reference_cpu}", factor.kind, factor.source),
    ]
    return terms
