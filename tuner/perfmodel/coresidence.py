"""How much two co-resident replicas slow each other, from measurement (data/coresidence/).

Two engines on one GPU without MPS are time-sliced by the driver. Measured on an H200 by
benchmarks/coresidence/ (the figures and their caveats are in the data file): a latency-bound
interactive step runs 2.23x slower next to a batch decode and 2.59x next to a prefill chunk, and
the batch engine keeps 0.48x of its decode throughput (0.57x of its prefill) beside the interactive
stream. The simulation (tuner/perfmodel/simulate.py) slows each replica's cycle by the factor for
its role and for what the other replica's cycle holds, instead of one assumed factor for both.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from gateway.contract.config import TrafficClass
from tuner.perfmodel.sourced import DATA_DIR, Figure, read_yaml

CORESIDENCE_DIR = DATA_DIR / "coresidence"
DEFAULT = "h200-time-sliced"


class CoResidence(BaseModel):
    """Slowdowns of time-sliced co-resident engines, each a sourced figure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interactive_next_to_decode: Figure
    interactive_next_to_decode_p99: Figure
    interactive_next_to_prefill: Figure
    decode_kept_next_to_interactive: Figure
    prefill_kept_next_to_interactive: Figure

    def slowdown(self, role: TrafficClass, own_prefill: bool, other_prefill: bool) -> float:
        """The factor a cycle of a replica serving `role` takes longer while another replica on
        its devices runs a cycle: an interactive cycle by what the other runs (decode or a
        prefill chunk), a batch cycle by what it runs itself (its kept share of throughput)."""
        if role == "interactive":
            figure = self.interactive_next_to_prefill if other_prefill else self.interactive_next_to_decode
            return figure.value
        kept = self.prefill_kept_next_to_interactive if own_prefill else self.decode_kept_next_to_interactive
        return 1.0 / kept.value


@cache
def load_coresidence(name: str = DEFAULT) -> CoResidence:
    """The named measurement set from data/coresidence/NAME.yaml."""
    path: Path = CORESIDENCE_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CORESIDENCE_DIR.glob("*.yaml"))
        raise ValueError(f"unknown co-residence measurement {name!r}; known: {', '.join(known)}")
    return CoResidence.model_validate(read_yaml(path))
