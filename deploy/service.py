"""systemd units that bring a Tandem cluster back after a reboot (`gateway service install`).

Three units, rendered from a plan:

- `tandem-ray-head.service` (the head box): `ray start --head --block`, restarted on failure;
- `tandem-ray-worker.service` (every other box): `ray start --address HEAD --block`, retried until
  the head answers;
- `tandem-deploy.service` (the head box): a oneshot after the head that waits for Ray, then runs
  `gateway deploy PLAN`; Ray Serve then keeps the app up, and the gateway reopens its data
  directory, so keys and usage come back as they were.

Every command is the venv's own binary (the directory of the Python running this), since the
nodes must run the venv's Ray and vLLM (docs/cluster.md, step 5). The engines and the gateway are
Ray workers: they inherit the environment of `ray start`, not of the deploy. So every unit reads the
same EnvironmentFile (HF_TOKEN, the link's NCCL variables), which holds the secrets; a unit file
never does (it is world-readable). Values in that file win over the units' defaults (systemd reads
EnvironmentFile= after Environment=).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["head", "worker"]

HEAD_UNIT = "tandem-ray-head.service"
WORKER_UNIT = "tandem-ray-worker.service"
DEPLOY_UNIT = "tandem-deploy.service"
DEFAULT_ENV_FILE = Path("/etc/tandem/tandem.env")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
STATE_DIRECTORY = "tandem"  # systemd's StateDirectory=: /var/lib/tandem, kept across reboots
RAY_PORT = 6379
# Ray kills workers past 95% used memory by default; on a GB10's unified memory the KV caches count
# as used, so a box holding both replicas sits near that line by design (docs/cluster.md, step 4).
RAY_MEMORY_THRESHOLD = "0.98"
RAY_READY_WAIT_S = 600  # how long the deploy unit waits for the head to answer after a boot


@dataclass(frozen=True)
class ServiceSpec:
    """What the units need to know: the plan, this box's role and where things are."""

    plan: Path
    role: Role
    head: str | None = None  # the head's address (host or host:port), required on a worker
    node_ip: str | None = None  # this box's address on the cluster's link (ray start --node-ip-address)
    bin_dir: Path = Path(sys.executable).parent
    env_file: Path = DEFAULT_ENV_FILE
    user: str | None = None
    deploy_timeout_s: int = 900

    def __post_init__(self) -> None:
        if self.role == "worker" and not self.head:
            raise ValueError("a worker needs the head's address (--head HOST[:PORT])")

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)


def render_units(spec: ServiceSpec) -> dict[str, str]:
    """The unit files for this box, by file name."""
    if spec.role == "worker":
        return {WORKER_UNIT: _worker_unit(spec)}
    return {HEAD_UNIT: _head_unit(spec), DEPLOY_UNIT: _deploy_unit(spec)}


def enable_commands(units: dict[str, str]) -> list[list[str]]:
    """What turns the units on now and at every boot."""
    return [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *units]]


def env_file_template() -> str:
    """What the EnvironmentFile holds: the secrets and the link's settings, never in a unit."""
    return (
        "# Tandem's environment, read by every tandem-*.service unit (chmod 600: it holds HF_TOKEN)\n"
        "HF_TOKEN=hf_...\n"
        "# The direct cable's interfaces on the Spark pair (docs/cluster.md, step 3)\n"
        "NCCL_SOCKET_IFNAME=enp1s0f0np0,enp1s0f1np1\n"
        "NCCL_IB_HCA=rocep1s0f0,rocep1s0f1\n"
        "NCCL_IB_GID_INDEX=3\n"
        "GLOO_SOCKET_IFNAME=enp1s0f0np0\n"
    )


def _exec(args: list[str]) -> str:
    """A command line for Exec*=: shell-quoted, with systemd's own specifiers (%) and variable
    references ($) escaped so that they reach the program as written."""
    return shlex.join(args).replace("%", "%%").replace("$", "$$")


def _ray_address(spec: ServiceSpec) -> str:
    """The head's GCS address; on the head without --node-ip, "auto" (the cluster started on
    this machine: Ray registers the head on the host's outward address, not on loopback)."""
    head = spec.head or spec.node_ip
    if head is None:
        return "auto"
    return head if ":" in head else f"{head}:{RAY_PORT}"


def _service_section(spec: ServiceSpec, *, state_directory: bool = False) -> list[str]:
    """What every unit's [Service] shares: the user, the venv first on PATH, the defaults and the
    EnvironmentFile ('-': a missing file is no error; deploy's checks say what is missing)."""
    lines = []
    if spec.user:
        lines.append(f"User={spec.user}")
    lines += [
        f"Environment=PATH={spec.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"Environment=RAY_memory_usage_threshold={RAY_MEMORY_THRESHOLD}",
    ]
    if state_directory:  # the gateway's keys, usage and batches (a plan's batches.data_dir wins)
        lines += [f"StateDirectory={STATE_DIRECTORY}", f"Environment=TANDEM_DATA_DIR=/var/lib/{STATE_DIRECTORY}"]
    lines.append(f"EnvironmentFile=-{spec.env_file}")
    return lines


def _unit(description: str, after: list[str], service: list[str], *, requires: list[str] | None = None) -> str:
    unit = [f"Description={description}", f"After={' '.join(after)}", "Wants=network-online.target"]
    if requires:
        unit.append(f"Requires={' '.join(requires)}")
    sections = [
        "# Written by `gateway service install`; install again to change it.",
        "[Unit]",
        *unit,
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(sections) + "\n"


def _ray_start(spec: ServiceSpec, *args: str) -> str:
    node_ip = [f"--node-ip-address={spec.node_ip}"] if spec.node_ip else []
    return _exec([spec.binary("ray"), "start", *args, *node_ip, "--block"])


def _head_unit(spec: ServiceSpec) -> str:
    start = _ray_start(spec, "--head", f"--port={RAY_PORT}", "--dashboard-host=127.0.0.1")
    service = [
        "Type=simple",
        *_service_section(spec, state_directory=True),
        f"ExecStart={start}",
        f"ExecStop={_exec([spec.binary('ray'), 'stop'])}",
        "Restart=on-failure",
        "RestartSec=10",
        "TimeoutStopSec=120",
    ]
    return _unit("Tandem: Ray head node", ["network-online.target"], service)


def _worker_unit(spec: ServiceSpec) -> str:
    start = _ray_start(spec, f"--address={_ray_address(spec)}")
    service = [
        "Type=simple",
        *_service_section(spec),
        f"ExecStart={start}",
        f"ExecStop={_exec([spec.binary('ray'), 'stop'])}",
        "Restart=always",  # the head may boot later: retry until it answers
        "RestartSec=15",
        "TimeoutStopSec=120",
    ]
    return _unit("Tandem: Ray worker node", ["network-online.target"], service)


def _deploy_unit(spec: ServiceSpec) -> str:
    address = _ray_address(spec)
    ray_status = shlex.join([spec.binary("ray"), "status", *([] if address == "auto" else [f"--address={address}"])])
    wait = f"for i in $(seq {RAY_READY_WAIT_S // 5}); do {ray_status} >/dev/null 2>&1 && exit 0; sleep 5; done; exit 1"
    deploy = [
        spec.binary("gateway"),
        "deploy",
        str(spec.plan.resolve()),
        f"--address={address}",
        f"--timeout={spec.deploy_timeout_s}",
    ]
    service = [
        "Type=oneshot",
        "RemainAfterExit=yes",
        *_service_section(spec, state_directory=True),
        f"ExecStartPre={_exec(['/bin/sh', '-c', wait])}",
        f"ExecStart={_exec(deploy)}",
        f"ExecStop={_exec([spec.binary('gateway'), 'down', f'--address={address}'])}",
        f"TimeoutStartSec={RAY_READY_WAIT_S + spec.deploy_timeout_s + 120}",
    ]
    return _unit(
        "Tandem: deploy the plan onto the cluster", [HEAD_UNIT, "network-online.target"], service, requires=[HEAD_UNIT]
    )
