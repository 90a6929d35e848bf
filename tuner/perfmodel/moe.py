"""vLLM's fused MoE kernels: what a (token, expert) pair costs per backend and per shard shape.

A MoE layer on one rank takes the larger of two times: streaming the touched experts' bytes, and
working through its (token, expert) pairs. The pairs' work does not shrink with the shard as the
bytes do: each pair still gathers its token, runs a tile padded to the kernel's block of rows and
scatters its output, whatever slice of N or K the rank holds. So

    pair cost = pair_us x (expert params on the rank / expert_params) ^ size_exponent
                        x (device_bf16_tflops / the target device's bf16 peak)

with the figures per backend in data/moe_kernels.yaml (public kernel benchmarks until
benchmarks/gpu/moe_kernels.py has measured them; `measured` entries, when present, replace the
public ones for their backend). TP=2 halves every expert's params and leaves every rank all the
pairs; PP leaves the shape whole and gives each stage half the layers; EP leaves the shape whole
and gives each rank the pairs of its own experts.
"""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel, ConfigDict, Field

from tuner.perfmodel.build import MoEBackend
from tuner.perfmodel.sourced import DATA_DIR, Figure, read_yaml

MOE_KERNELS_FILE = DATA_DIR / "moe_kernels.yaml"


class BackendPairCost(BaseModel):
    """One backend's pair cost at one expert size on one device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pair_us: Figure
    expert_params: float = Field(gt=0, description="Params of one expert (as the rank holds it) the figure is for.")
    device_bf16_tflops: float = Field(gt=0, description="BF16 dense peak of the GPU the figure was taken on.")
    size_exponent: Figure | None = Field(None, description="This backend's own exponent, when measured.")


class MeasuredPairCost(BackendPairCost):
    """A `moe_fit` result: the backend it is for, replacing the public figure."""

    backend: MoEBackend


class MoEKernelTable(BaseModel):
    """Every backend's pair cost, and how it scales with the shard (data/moe_kernels.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size_exponent: Figure
    backends: dict[MoEBackend, BackendPairCost]
    measured: tuple[MeasuredPairCost, ...] = ()

    def cost(self, backend: MoEBackend) -> BackendPairCost:
        """The backend's figure: a measured one when there is one, else the public one."""
        for entry in self.measured:
            if entry.backend == backend:
                return entry
        if backend not in self.backends:
            raise ValueError(f"no MoE kernel figure for backend {backend!r}")
        return self.backends[backend]

    def exponent(self, backend: MoEBackend) -> Figure:
        return self.cost(backend).size_exponent or self.size_exponent

    def pair_seconds(self, backend: MoEBackend, expert_params_on_rank: float, device_bf16_tflops: float) -> float:
        """Seconds one (token, expert) pair costs on a rank holding `expert_params_on_rank` of each expert."""
        figure = self.cost(backend)
        size = (expert_params_on_rank / figure.expert_params) ** self.exponent(backend).value
        return figure.pair_us.value * 1e-6 * size * figure.device_bf16_tflops / device_bf16_tflops


@cache
def load_moe_kernels() -> MoEKernelTable:
    return MoEKernelTable.model_validate(read_yaml(MOE_KERNELS_FILE))
