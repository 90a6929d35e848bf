"""Host time of an engine step, and who pays it serially.

vLLM's engine core schedules a step, hands it to the workers, waits for the sampled tokens and
processes them: a + b x sequences of host (CPU) time per step (data/host.yaml: measured on this
machine's CPU engine, scaled by a sourced per-thread speed factor for the device's host CPU).
Whether the GPU waits for it follows vLLM's `VllmConfig.max_concurrent_batches`
(vllm/config/vllm.py): with async scheduling, 2 batches are in flight and the host works while
the GPU runs; with pipeline parallelism, `pp` batches are in flight (async scheduling is off with
PP on the V1 model runner), so the host also overlaps; the Ray executor, which every layout spanning
nodes uses, does not support async scheduling (`RayDistributedExecutor` leaves
`supports_async_scheduling` False), so TP or EP over Ray without PP pays the host time serially,
after every step.
"""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel, ConfigDict

from tuner.perfmodel.sourced import DATA_DIR, Figure, read_yaml

HOST_FILE = DATA_DIR / "host.yaml"


class HostCosts(BaseModel):
    """Host time per step (reference CPU) and the speed of each device's host CPU relative to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_cpu: str
    step_us: Figure
    per_sequence_us: Figure
    cpu_speed: dict[str, Figure]

    def speed_factor(self, device_name: str) -> Figure:
        return self.cpu_speed.get(device_name) or self.cpu_speed["default"]

    def step_seconds(self, sequences: float, device_name: str) -> float:
        """Host time of one step of `sequences` sequences on the machine of `device_name`."""
        factor = self.speed_factor(device_name).value
        return (self.step_us.value + self.per_sequence_us.value * sequences) * 1e-6 * factor


def host_overlaps(pp: int, spans_nodes: bool, async_scheduling: bool) -> bool:
    """Whether the host's step time hides behind the GPU's (vLLM's max_concurrent_batches > 1)."""
    if pp > 1:
        return True
    return async_scheduling and not spans_nodes  # mp/uniproc executors support async scheduling; Ray does not


@cache
def load_host_costs() -> HostCosts:
    return HostCosts.model_validate(read_yaml(HOST_FILE))
