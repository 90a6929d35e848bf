"""Hardware profiles: devices, how many per node, and the links between them, as sourced data.

Profiles live in data/hardware/<name>.yaml. A profile may `extends:` another (the Spark pair is
one Spark, twice, plus a link), merged key by key.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.contract.config import merged_settings
from tuner.perfmodel.collectives import LinkProfile
from tuner.perfmodel.sourced import DATA_DIR, Figure, read_yaml

HARDWARE_DIR = DATA_DIR / "hardware"

ComputeDtype = Literal["bf16", "fp8", "fp4"]


class DeviceProfile(BaseModel):
    """One GPU: memory, memory bandwidth (nominal and, where known, measured), dense peak compute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    memory_gb: Figure
    memory_bandwidth_gbs: Figure
    measured_memory_bandwidth_gbs: Figure | None = None
    tflops: dict[ComputeDtype, Figure]

    def peak_tflops(self, dtype: ComputeDtype) -> float:
        """Dense peak for `dtype`; a format the chip has no tensor cores for runs at BF16 speed."""
        figure = self.tflops.get(dtype) or self.tflops["bf16"]
        return figure.value


class HardwareProfile(BaseModel):
    """A cluster shape: `nodes` x `devices_per_node` identical devices and the links between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    nodes: int = Field(ge=1)
    devices_per_node: int = Field(ge=1)
    device: DeviceProfile
    intra_node_link: LinkProfile | None = None
    inter_node_link: LinkProfile | None = None
    base: str | None = Field(
        None, description="The shipped profile whose nominal link a measured one is compared with (probe-link)."
    )
    default_build: str | None = Field(
        None, description="The vLLM build (data/builds.yaml) this hardware runs unless a replica names another."
    )
    notes: tuple[str, ...] = ()

    @property
    def devices(self) -> int:
        return self.nodes * self.devices_per_node

    def link_for(self, world_size: int) -> LinkProfile | None:
        """The link a replica of `world_size` workers talks over: inside a node while it fits
        in one, else between nodes (the slowest hop sets the pace of a collective)."""
        if world_size <= 1:
            return None
        link = self.intra_node_link if world_size <= self.devices_per_node else self.inter_node_link
        if link is None:
            raise ValueError(f"hardware {self.name!r} has no link for {world_size} workers")
        return link

    def nodes_spanned(self, world_size: int) -> int:
        """Nodes a replica of `world_size` workers occupies, packed onto as few nodes as possible."""
        return -(-world_size // self.devices_per_node)


def known_hardware() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))


def _profile_path(name: str) -> Path:
    """A profile by name from data/hardware, or a YAML file by path (what `tuner probe-link` writes)."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ValueError(f"hardware profile file {name!r} does not exist")
        return path
    path = HARDWARE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown hardware {name!r}; known profiles: {', '.join(known_hardware())} (or a .yaml file)")
    return path


def profile_data(name: str) -> dict[str, Any]:
    """A profile's mapping as read, `extends:` resolved (a fresh copy: callers may change it)."""
    data = read_yaml(_profile_path(name))
    parent = data.pop("extends", None)
    return merged_settings(profile_data(parent), data) if parent else data


@cache
def load_hardware(name: str) -> HardwareProfile:
    """The named profile from data/hardware (e.g. 'dgx-spark-pair'), or a profile file by path."""
    try:
        return HardwareProfile.model_validate(profile_data(name))
    except ValidationError as exc:
        raise ValueError(f"hardware profile {name!r} is malformed: {exc}") from None


def with_link(hardware: HardwareProfile, world_size: int, link: LinkProfile) -> HardwareProfile:
    """`hardware` with the link a replica of `world_size` workers talks over replaced by `link`."""
    field = "intra_node_link" if world_size <= hardware.devices_per_node else "inter_node_link"
    return hardware.model_copy(update={field: link})
