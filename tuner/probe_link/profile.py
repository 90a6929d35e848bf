"""From a link probe's samples to a hardware profile the performance model reads.

The measured link replaces the base profile's link (compute and memory figures stay the base's):
each operation's regimes are fitted to its points (`fit_regimes`), the points kept beside them,
with the date, backend, nodes and the NCCL/gloo environment in force. `check_link` compares the
measured link with the base profile's nominal one and names the usual causes of a slow link.
"""

from __future__ import annotations

from typing import Any

import yaml

from deploy.link_probe import LinkSamples, Operation
from tuner.perfmodel.collectives import CollectiveModel, CollectivePoint, LinkMeasurement, LinkProfile, fit_regimes
from tuner.perfmodel.hardware import HardwareProfile, load_hardware, profile_data
from tuner.perfmodel.sourced import Figure

NAMES: dict[str, tuple[str, ...]] = {
    "nccl": ("LL", "LL128", "Simple"),
    "gloo": ("small", "mid", "large"),
}
"""Regime names by backend: NCCL's protocols, in the order NCCL switches between them."""

LATENCY_TOLERANCE = 1.5
"""A measured 8 KB all-reduce above this multiple of the nominal one is flagged."""
BANDWIDTH_TOLERANCE = 0.5
"""A measured large-message bandwidth below this share of the nominal one is flagged."""

LIKELY_CAUSES: tuple[str, ...] = (
    "MTU 1500 instead of 9000 on the link's interfaces (ip link set <if> mtu 9000, on both boxes)",
    "only one of the two RoCE interfaces / NIC functions in use (NCCL_IB_HCA and NCCL_SOCKET_IFNAME should list both)",
    "NCCL fell back to TCP sockets (NCCL_IB_DISABLE=1, or NCCL_IB_HCA / NCCL_IB_GID_INDEX not matching the RoCE devices)",
    "a ConnectX-7 port that came up degraded (ethtool <if>: Speed well below 200000Mb/s; re-seat the cable, restart the link)",
    "an NCCL development or mismatched build (about 3 GB/s all-reduce reported with one: NVIDIA/dgx-spark-playbooks issue #102)",
    "the wrong interface: the probe's traffic (or Ray's) took the management network instead of the direct cable",
)
"""What public reports from two-Spark owners traced slow links to (docs/cluster.md keeps the same list)."""


def _points(samples: LinkSamples, op: Operation, source: str) -> tuple[CollectivePoint, ...]:
    return tuple(
        CollectivePoint(bytes=s.bytes, microseconds=s.microseconds, kind="measured", source=source)
        for s in samples.results[op]
    )


def measured_link(samples: LinkSamples, name: str | None = None) -> LinkProfile:
    """The link the samples describe: each operation's regimes fitted to its measured points."""
    source = f"tuner probe-link {samples.date} ({samples.backend}, {' <-> '.join(samples.nodes)})"
    names = NAMES.get(samples.backend, NAMES["gloo"])

    def fit(op: Operation) -> CollectiveModel:
        return fit_regimes(_points(samples, op, source), source=source, names=names)

    control = (
        Figure(
            value=round(samples.control_roundtrip_us, 1),
            kind="measured",
            source=source,
            note="Median no-op Ray call from the driver to the far node's actor and back (deploy/link_probe.py).",
        )
        if samples.control_roundtrip_us is not None
        else None
    )
    return LinkProfile(
        name=name or f"measured {samples.backend} link, {samples.date}",
        control_roundtrip_us=control,
        allreduce=fit("allreduce"),
        p2p=fit("p2p"),
        allgather=fit("allgather") if "allgather" in samples.results else None,
        measured=LinkMeasurement(
            date=samples.date,
            backend=samples.backend,
            nodes=samples.nodes,
            environment=samples.environment,
            torch_version=samples.torch_version,
            nccl_version=samples.nccl_version,
            transport=samples.transport,
        ),
    )


def default_base(samples: LinkSamples) -> str:
    """The shipped profile matching the probed nodes: the Spark pair on GB10s, H100/H200 nodes by
    name, this machine's CPU profile on CPUs."""
    if samples.device == "cpu":
        return "cpu-2core-vm"
    name = samples.device_name.upper()
    for marker, profile in (("GB10", "dgx-spark-pair"), ("H200", "h200-sxm-node"), ("H100", "h100-sxm-node")):
        if marker in name:
            return profile
    raise ValueError(f"no shipped profile matches {samples.device_name!r}: pass --base NAME")


def _link_slot(base: HardwareProfile, samples: LinkSamples) -> str:
    """Where the measured link goes: between nodes when the probe's two ends were two hosts (or the
    base has one device per node), else inside a node."""
    hosts = {node.split(" ")[0] for node in samples.nodes}
    return "inter_node_link" if len(hosts) > 1 or base.devices_per_node < 2 else "intra_node_link"


def profile_from_samples(samples: LinkSamples, base: str, name: str) -> dict[str, Any]:
    """A complete hardware profile (as the YAML mapping) with the base's device and the measured link."""
    base_profile = load_hardware(base)
    data = profile_data(base)
    slot = _link_slot(base_profile, samples)
    link = measured_link(samples)
    data.update(
        name=name,
        description=f"{base_profile.description}, with the link measured by tuner probe-link on {samples.date}",
        base=base_profile.name,
        nodes=max(base_profile.nodes, 2) if slot == "inter_node_link" else base_profile.nodes,
    )
    data[slot] = link.model_dump(mode="json", exclude_defaults=True)
    data["notes"] = [
        *data.get("notes", []),
        f"Link measured with {samples.backend} between {' and '.join(samples.nodes)} on {samples.date}; "
        "device figures are the base profile's.",
    ]
    HardwareProfile.model_validate(data)  # what --hardware will read must load
    return data


def dump_profile(data: dict[str, Any]) -> str:
    header = "# Written by `tuner probe-link`: the base profile's device figures and the measured link.\n"
    return header + yaml.safe_dump(data, sort_keys=False, width=120)


class LinkCheck:
    """The measured link against the nominal one: the headline figures and what is off."""

    def __init__(self, measured: LinkProfile, nominal: LinkProfile | None) -> None:
        self.measured, self.nominal = measured, nominal
        self.latency_us = measured.allreduce.small_message_latency_us
        self.bandwidth_gbs = measured.allreduce.large_message_bandwidth_gbs
        self.problems: list[str] = []
        if nominal is None:
            return
        nominal_latency = nominal.allreduce.small_message_latency_us
        nominal_bandwidth = nominal.allreduce.large_message_bandwidth_gbs
        if self.latency_us > LATENCY_TOLERANCE * nominal_latency:
            self.problems.append(
                f"8 KB all-reduce {self.latency_us:.1f} us, {self.latency_us / nominal_latency:.1f}x the nominal "
                f"{nominal_latency:.1f} us"
            )
        if self.bandwidth_gbs < BANDWIDTH_TOLERANCE * nominal_bandwidth:
            self.problems.append(
                f"large-message all-reduce {self.bandwidth_gbs:.2f} GB/s, {self.bandwidth_gbs / nominal_bandwidth:.0%} "
                f"of the nominal {nominal_bandwidth:.1f} GB/s"
            )

    @property
    def degraded(self) -> bool:
        return bool(self.problems)


def check_link(measured: LinkProfile, base: str) -> LinkCheck:
    """Compare with the base profile's link for two workers (None when the base has none)."""
    hardware = load_hardware(base)
    slot = hardware.intra_node_link if hardware.devices_per_node >= 2 else hardware.inter_node_link
    return LinkCheck(measured, slot)
