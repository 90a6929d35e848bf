"""Measure the link between two nodes: all-reduce, all-gather and send/recv from 8 KB to 64 MB.

Why: TP=2 across two boxes pays two all-reduces per layer on this link, and public reports show
two-Spark links coming up at a fraction of their rating (an NCCL development build at 3 GB/s, a
ConnectX-7 port at 13 Gb/s, one NIC function, MTU 1500): each moves TP=2's cost per token by
several times, and so the right layout. The performance model (tuner/perfmodel) fits its
collective regimes to what this measures (`tuner probe-link`), and `gateway deploy --probe-link`
warns before it puts a TP=2 replica on a slow link.

Three layers, so each can run alone:
- `measure_collectives`: plain torch.distributed, any backend (NCCL on GPUs, gloo on CPUs), called
  by every rank of an initialised process group;
- `probe_local`: two processes on this host via torch.multiprocessing (no Ray; a 2-GPU box runs the
  NCCL path this way: `python -m deploy.link_probe --backend nccl`);
- `probe_cluster`: two Ray actors placed one per node (STRICT_SPREAD) of the connected cluster.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deploy.ports import free_port

if TYPE_CHECKING:  # only for annotations: the probe itself runs where only torch and pydantic are
    from deploy.plan import ServingPlan

Operation = Literal["allreduce", "allgather", "p2p"]
OPERATIONS: tuple[Operation, ...] = ("allreduce", "allgather", "p2p")
DEFAULT_SIZES: tuple[int, ...] = tuple(2**k for k in range(13, 27))  # 8 KB .. 64 MB
ENV_PREFIXES = ("NCCL_", "GLOO_", "UCX_", "TP_SOCKET_IFNAME")
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")

TIME_PER_SIZE_S = 0.1
"""Each size is timed for about this long in all (at least REPETITIONS calls): enough to find a
quiet moment on a loaded machine, little enough that the probe ends in under a minute."""
REPETITIONS = 3
"""The fewest repetitions per size; the fastest is kept: on a loaded machine noise only ever adds
time, so the minimum is the best estimate of what the link can do (a busy core spoils one, not all)."""
MAX_REPETITIONS = 30
RUN_S = 0.005
"""Each repetition is about this long (at least one call): short runs, many of them, so that some
fall between the other processes' time slices."""
WARM_UP_UP_TO_BYTES = 2**20
"""Sizes up to this get an untimed warm-up call (connections, protocol set-up, buffers); larger
ones are bandwidth-bound, and the first timed call (used only to size the runs) warms them."""

SLOW_LINK_BANDWIDTH_GBS = 6.0
"""Below this large-message all-reduce bandwidth, `gateway deploy --probe-link` warns before a TP=2
replica spans nodes. The performance model's sweep (docs/perfmodel.md, "TP vs PP") shows TP=2 losing
to PP=2 for prefill-heavy traffic from concurrency 32 at 3 GB/s on the Spark pair, and not at 22 GB/s."""
SLOW_LINK_LATENCY_US = 100.0
"""Above this 8 KB all-reduce time the same warning: a decode step pays two of these per layer
(a healthy Spark pair: 28-35 us, NVIDIA/dgx-spark-playbooks PR #103)."""


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: int = Field(gt=0)
    microseconds: float = Field(gt=0)
    calls: int = Field(ge=1)


class LinkSamples(BaseModel):
    """What one probe measured, and the conditions it measured under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    date: str
    backend: str
    device: str
    device_name: str = Field("", description="The accelerator's name (torch.cuda.get_device_name), or the CPU's.")
    nodes: tuple[str, ...]
    environment: dict[str, str] = Field(default_factory=dict)
    torch_version: str = ""
    nccl_version: str = ""
    results: dict[Operation, tuple[Sample, ...]]
    control_roundtrip_us: float | None = Field(
        None, description="Median Ray call from the driver to the far node's actor and back (cluster probes only)."
    )
    transport: str = Field(
        "",
        description="What carried the collectives: NCCL's NET/IB (RDMA, RoCE included), NET/Socket (TCP fallback), "
        "P2P or SHM inside a node, from NCCL's INFO log; gloo/TCP for gloo; 'unknown' when the log said nothing.",
    )
    transport_evidence: tuple[str, ...] = Field((), description="The NCCL log lines the transport was read from.")

    def at(self, operation: Operation, nbytes: int) -> float:
        """Measured microseconds of `operation` at exactly `nbytes` (KeyError-free: nearest size)."""
        samples = self.results[operation]
        return min(samples, key=lambda s: abs(s.bytes - nbytes)).microseconds

    def large_message_bandwidth_gbs(self, operation: Operation = "allreduce") -> float:
        largest = max(self.results[operation], key=lambda s: s.bytes)
        return largest.bytes / (largest.microseconds * 1e3)


def link_environment() -> dict[str, str]:
    """NCCL/gloo/UCX settings in force in this process (never anything that looks like a secret)."""
    return {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith(ENV_PREFIXES) and not any(m in k.upper() for m in SECRET_MARKERS)
    }


NCCL_TRANSPORTS = ("NET/IB", "NET/Socket", "NVLS", "P2P", "SHM")
_VIA = re.compile(r"via (NET/IB|NET/Socket|NVLS|P2P|SHM)")
_NETWORK = re.compile(r"Using network (IB|Socket)")
MAX_EVIDENCE = 6


def nccl_transport(lines: Iterable[str], environment: dict[str, str] | None = None) -> tuple[str, tuple[str, ...]]:
    """The transport NCCL chose, read from its NCCL_DEBUG=INFO lines ('Using network IB', 'Channel 00/0 :
    0[0] -> 1[0] [send] via NET/IB/0'), with the lines that say so. Between nodes NCCL runs NET/IB (RDMA,
    RoCE included) or, when no RDMA device comes up, NET/Socket over TCP; inside a node P2P or SHM. With no
    such line, NCCL_IB_DISABLE=1 or NCCL_NET=Socket in the environment still tells the socket fallback."""
    seen: dict[str, list[str]] = {}
    for line in lines:
        for match in (_VIA.search(line), _NETWORK.search(line)):
            if match:
                name = match.group(1)
                seen.setdefault(name if "/" in name or name in NCCL_TRANSPORTS else f"NET/{name}", []).append(
                    line.strip()
                )
    for transport in NCCL_TRANSPORTS:  # the network transport wins: it is what crosses the link
        if transport in seen:
            return transport, tuple(seen[transport][:MAX_EVIDENCE])
    env = environment or {}
    if env.get("NCCL_IB_DISABLE") == "1" or env.get("NCCL_NET", "").lower() == "socket":
        setting = "NCCL_IB_DISABLE=1" if env.get("NCCL_IB_DISABLE") == "1" else f"NCCL_NET={env['NCCL_NET']}"
        return "NET/Socket", (f"environment: {setting}",)
    return "unknown", ()


def _nccl_log_to(directory: str) -> None:
    """Make NCCL write its INFO log (init and network lines only) under `directory`, where the probe reads
    the transport back; a user's own NCCL_DEBUG / NCCL_DEBUG_FILE is left as it is."""
    os.environ.setdefault("NCCL_DEBUG", "INFO")
    os.environ.setdefault("NCCL_DEBUG_SUBSYS", "INIT,NET")
    os.environ.setdefault("NCCL_DEBUG_FILE", str(Path(directory) / "nccl.%h.%p.log"))


def _nccl_log_lines(directory: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(Path(directory).glob("nccl.*.log")):
        lines += path.read_text(errors="replace").splitlines()
    return lines


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_collectives(
    sizes: Sequence[int] = DEFAULT_SIZES, operations: Sequence[Operation] = OPERATIONS
) -> dict[Operation, tuple[Sample, ...]]:
    """Time each operation at each size between ranks 0 and 1 of the default process group.

    Every rank calls this with the same arguments. all-reduce and all-gather follow nccl-tests'
    convention (size = the message / the gathered output); send/recv is a ping-pong between rank
    0 and 1, half the round trip. Calls per repetition are chosen from a first timed call (its
    maximum over the ranks, so both run the same number); each repetition's time is the slowest
    rank's (a collective is done when its slowest rank is), and the fastest repetition is kept."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.13
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    results: dict[Operation, tuple[Sample, ...]] = {}
    for op in operations:
        samples = []
        for nbytes in sizes:
            elements = max(1, nbytes // 4)
            data = torch.ones(elements, dtype=torch.float32, device=device)
            part = torch.ones(max(1, elements // world), dtype=torch.float32, device=device)
            gathered = torch.empty(part.numel() * world, dtype=torch.float32, device=device)

            def call(op: Operation = op, data: Any = data, part: Any = part, gathered: Any = gathered) -> None:
                if op == "allreduce":
                    dist.all_reduce(data)
                elif op == "allgather":
                    gather(gathered, part)
                elif rank == 0:
                    dist.send(data, 1)
                    dist.recv(data, 1)
                elif rank == 1:
                    dist.recv(data, 0)
                    dist.send(data, 0)

            def timed(calls: int) -> float:
                dist.barrier()
                _sync(device)
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                _sync(device)
                return (time.perf_counter() - start) / calls

            if nbytes <= WARM_UP_UP_TO_BYTES:
                call()
            first = torch.tensor([timed(1)], dtype=torch.float64, device=device)
            dist.all_reduce(first, op=dist.ReduceOp.MAX)
            once = max(first.item(), 1e-6)
            calls = int(min(20, max(1, RUN_S / once)))
            repetitions = int(min(MAX_REPETITIONS, max(REPETITIONS, TIME_PER_SIZE_S / (calls * once))))
            runs = torch.tensor([timed(calls) for _ in range(repetitions)], dtype=torch.float64, device=device)
            dist.all_reduce(runs, op=dist.ReduceOp.MAX)
            seconds = min(runs.tolist())
            if op == "p2p":
                seconds /= 2  # one way of the round trip
            samples.append(Sample(bytes=int(nbytes), microseconds=seconds * 1e6, calls=calls))
        results[op] = tuple(samples)
    return results


def _versions(backend: str) -> tuple[str, str, str]:
    """torch's version, NCCL's (NCCL backend only), and the device's name."""
    import platform

    import torch

    if backend == "nccl" and torch.cuda.is_available():
        version = torch.cuda.nccl.version()
        nccl = ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)
        return torch.__version__, nccl, torch.cuda.get_device_name()
    return torch.__version__, "", platform.processor() or platform.machine()


def _run_rank(
    rank: int, master: str, port: int, backend: str, sizes: Sequence[int], operations: Sequence[Operation]
) -> dict[str, Any]:
    """One rank's whole probe: join the group, measure, leave. Rank 0's return value is the result."""
    import torch
    import torch.distributed as dist

    log_dir = tempfile.mkdtemp(prefix="tandem-nccl-")
    if backend == "nccl":
        torch.cuda.set_device(rank % max(1, torch.cuda.device_count()))
        _nccl_log_to(log_dir)  # before the first communicator: NCCL reads it at init
    environment = link_environment()
    dist.init_process_group(
        backend, init_method=f"tcp://{master}:{port}", rank=rank, world_size=2, timeout=dt.timedelta(minutes=5)
    )
    try:
        results = measure_collectives(sizes, operations)
    finally:
        dist.destroy_process_group()
    torch_version, nccl_version, device_name = _versions(backend)
    if backend == "nccl":
        transport, evidence = nccl_transport(_nccl_log_lines(log_dir), environment)
    else:
        transport, evidence = "gloo/TCP", (f"GLOO_SOCKET_IFNAME={os.environ.get('GLOO_SOCKET_IFNAME', '(default)')}",)
    return {
        "transport": transport,
        "transport_evidence": list(evidence),
        "device_name": device_name,
        "results": {op: [s.model_dump() for s in samples] for op, samples in results.items()},
        "environment": environment,
        "torch_version": torch_version,
        "nccl_version": nccl_version,
        "host": socket.gethostname(),
    }


def _samples(rank0: dict[str, Any], backend: str, nodes: Sequence[str], control_us: float | None = None) -> LinkSamples:
    return LinkSamples(
        control_roundtrip_us=control_us,
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        backend=backend,
        device="cuda" if backend == "nccl" else "cpu",
        device_name=rank0["device_name"],
        nodes=tuple(nodes),
        environment=rank0["environment"],
        torch_version=rank0["torch_version"],
        nccl_version=rank0["nccl_version"],
        results=rank0["results"],
        transport=rank0.get("transport", ""),
        transport_evidence=tuple(rank0.get("transport_evidence", ())),
    )


def _spawned(
    rank: int,
    port: int,
    backend: str,
    sizes: Sequence[int],
    operations: Sequence[Operation],
    queue: Any,
) -> None:
    result = _run_rank(rank, "127.0.0.1", port, backend, sizes, operations)
    if rank == 0:
        queue.put(result)


def probe_local(
    backend: str = "gloo", sizes: Sequence[int] = DEFAULT_SIZES, operations: Sequence[Operation] = OPERATIONS
) -> LinkSamples:
    """Two processes on this host (torch.multiprocessing, no Ray): the two GPUs of one box over
    NCCL, or two CPU processes over gloo's loopback."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    port = free_port()
    mp.start_processes(
        _spawned, args=(port, backend, tuple(sizes), tuple(operations), queue), nprocs=2, start_method="spawn"
    )
    host = socket.gethostname()
    return _samples(queue.get(), backend, [host, host])


class _ProbeWorker:
    """One end of the link, in a Ray actor on its own node."""

    def where(self) -> dict[str, str]:
        import ray

        return {"ip": ray.util.get_node_ip_address(), "host": socket.gethostname()}

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def ping(self) -> None:
        """Nothing: the round trip of calling it is the measurement."""

    def port(self) -> int:
        import ray

        return free_port(ray.util.get_node_ip_address())

    def run(
        self, rank: int, master: str, port: int, backend: str, sizes: Sequence[int], operations: Sequence[Operation]
    ) -> dict[str, Any]:
        if backend == "gloo" and master.startswith("127.") and "GLOO_SOCKET_IFNAME" not in os.environ:
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # both ends on this machine: talk over loopback
        return _run_rank(rank, master, port, backend, sizes, operations)


def cluster_backend() -> str:
    """NCCL when at least two nodes each have a GPU, else gloo (CPU nodes, as in CI)."""
    import ray

    gpu_nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) >= 1]
    return "nccl" if len(gpu_nodes) >= 2 else "gloo"


def probe_cluster(
    sizes: Sequence[int] = DEFAULT_SIZES,
    operations: Sequence[Operation] = OPERATIONS,
    backend: str | None = None,
    timeout_s: float = 600.0,
) -> LinkSamples:
    """Measure the link between two nodes of the Ray cluster this process is connected to: two
    actors in a STRICT_SPREAD placement group (one per node), rank 0's node as the rendezvous."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) < 2:
        raise ValueError(f"the Ray cluster has {len(alive)} node(s); probing a link needs two")
    backend = backend or cluster_backend()
    bundle: dict[str, float] = {"CPU": 1.0, **({"GPU": 1.0} if backend == "nccl" else {})}
    group = placement_group([bundle, bundle], strategy="STRICT_SPREAD")
    try:
        if not group.wait(timeout_seconds=timeout_s):
            raise TimeoutError(f"no two nodes with {bundle} free each within {timeout_s:.0f} s")
        actor = ray.remote(num_cpus=1, num_gpus=1 if backend == "nccl" else 0)(_ProbeWorker)
        workers = [
            actor.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=i
                )
            ).remote()
            for i in range(2)
        ]
        try:
            places = ray.get([w.where.remote() for w in workers], timeout=timeout_s)
            master = places[0]["ip"]
            port = ray.get(workers[0].port.remote(), timeout=timeout_s)
            runs = [
                w.run.remote(i, master, port, backend, tuple(sizes), tuple(operations)) for i, w in enumerate(workers)
            ]
            rank0, _ = ray.get(runs, timeout=timeout_s)
            control_us = _control_roundtrip_us(workers)
        finally:
            for w in workers:
                ray.kill(w)
    finally:
        remove_placement_group(group)
    return _samples(rank0, backend, [f"{p['host']} ({p['ip']})" for p in places], control_us)


CONTROL_CALLS = 50


def _control_roundtrip_us(workers: Sequence[Any]) -> float:
    """Median time of a no-op call to the actor on the node the driver is not on (else the second):
    what vLLM's Ray executor pays per step to hand the workers their work and collect the output.
    An upper bound: vLLM's compiled-graph channels skip some of a plain call's bookkeeping."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    nodes = ray.get([w.node_id.remote() for w in workers])
    far = next((w for w, n in zip(workers, nodes, strict=True) if n != here), workers[1])
    ray.get(far.ping.remote())
    times = []
    for _ in range(CONTROL_CALLS):
        start = time.perf_counter()
        ray.get(far.ping.remote())
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e6


def socket_fallback_warning(samples: LinkSamples) -> str | None:
    """A warning when NCCL carried the collectives over TCP sockets between nodes instead of RDMA."""
    if samples.backend != "nccl" or samples.transport != "NET/Socket":
        return None
    evidence = f" ({samples.transport_evidence[0]})" if samples.transport_evidence else ""
    return (
        f"NCCL fell back to TCP sockets (NET/Socket){evidence}: the RDMA transport (NET/IB over RoCE) did not come "
        "up, which costs the mid-size messages of TP's decode steps most. Check that the RDMA devices are visible "
        "(ibv_devices, /dev/infiniband in containers), NCCL_IB_DISABLE is unset, and NCCL_IB_HCA names both "
        "halves of the ConnectX-7 (docs/cluster.md)."
    )


def slow_link_warning(samples: LinkSamples) -> str | None:
    """Why a TP=2 replica should not span this link, or None when it is fast enough."""
    latency = samples.at("allreduce", 8192)
    bandwidth = samples.large_message_bandwidth_gbs("allreduce")
    reasons = []
    if socket_fallback_warning(samples) is not None:
        reasons.append("NCCL runs over TCP sockets (NET/Socket), not RDMA")
    if bandwidth < SLOW_LINK_BANDWIDTH_GBS:
        reasons.append(f"all-reduce reaches {bandwidth:.2f} GB/s at 64 MB (below {SLOW_LINK_BANDWIDTH_GBS:g})")
    if latency > SLOW_LINK_LATENCY_US:
        reasons.append(f"an 8 KB all-reduce takes {latency:.0f} us (above {SLOW_LINK_LATENCY_US:g})")
    if not reasons:
        return None
    return (
        "slow link for TP across nodes: "
        + "; ".join(reasons)
        + ". TP=2 pays two all-reduces per layer on it; PP=2 may serve better "
        "(tuner probe-link and tuner predict --link-sweep say by how much; docs/cluster.md lists the usual causes)."
    )


def replicas_with_tp_across_nodes(plan: ServingPlan) -> list[str]:
    """Names of the plan's replicas whose TP group cannot fit in one node: their all-reduces cross the link."""
    per_node = plan.cluster.devices_per_node
    return [r.name for r in plan.replicas if r.tensor_parallel_size > 1 and r.tensor_parallel_size > per_node]


def check_before_deploy(plan: ServingPlan) -> tuple[LinkSamples | None, str | None]:
    """For `gateway deploy --probe-link` (connected to the cluster): probe the link when the plan has
    a TP replica spanning nodes; return the samples and a warning naming those replicas, if slow."""
    import ray

    spanning = replicas_with_tp_across_nodes(plan)
    if not spanning or len([n for n in ray.nodes() if n.get("Alive")]) < 2:
        return None, None
    samples = probe_cluster()
    warning = slow_link_warning(samples)
    if warning is not None:
        warning = f"replica(s) {', '.join(spanning)} put tensor-parallel all-reduces across nodes: {warning}"
    return samples, warning


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m deploy.link_probe`: the probe between two local processes, as JSON on stdout."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    args = parser.parse_args(argv)
    print(probe_local(args.backend).model_dump_json(indent=2))


if __name__ == "__main__":
    main()
