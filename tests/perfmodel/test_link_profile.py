"""From probe samples to a profile that `--hardware FILE` reads; the degraded-link check; the
link sweep of `tuner predict --link-sweep`; `tuner optimize --hardware FILE`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deploy.link_probe import LinkSamples, Sample, slow_link_warning
from tuner.cli import app
from tuner.optimize import OptimizeRequest, optimize
from tuner.optimize.targets import TargetError
from tuner.perfmodel import load_hardware, resolve_model
from tuner.perfmodel.link_sweep import compare_layouts, sweep_link
from tuner.probe_link.profile import LIKELY_CAUSES, check_link, default_base, dump_profile, profile_from_samples
from tuner.workloads import get_workload

runner = CliRunner()
SIZES = [2**k for k in range(13, 27)]


def _samples(latency_us: float, gbs: float, device: str = "cuda", name: str = "NVIDIA GB10") -> LinkSamples:
    """An NCCL-like two-node measurement: LL below 64 KB, then Simple at `gbs`."""

    def curve(n: int) -> float:
        return min(latency_us + n / 1.6e3, 2 * latency_us + n / (gbs * 1e3))

    return LinkSamples(
        date="2026-11-30T10:00:00+00:00",
        backend="nccl" if device == "cuda" else "gloo",
        device=device,
        device_name=name,
        nodes=("spark-a (10.0.0.1)", "spark-b (10.0.0.2)"),
        environment={"NCCL_IB_HCA": "rocep1s0f0,rocep1s0f1", "NCCL_SOCKET_IFNAME": "enp1s0f0np0"},
        torch_version="2.9.0",
        nccl_version="2.27.7",
        results={
            op: tuple(Sample(bytes=n, microseconds=curve(n) * (2 if op == "p2p" else 1), calls=10) for n in SIZES)
            for op in ("allreduce", "allgather", "p2p")
        },
    )


def _write(tmp_path: Path, samples: LinkSamples, base: str = "dgx-spark-pair") -> Path:
    path = tmp_path / "measured-pair.yaml"
    path.write_text(dump_profile(profile_from_samples(samples, base, name=path.stem)))
    return path


def test_profile_round_trips_with_points_fit_and_conditions(tmp_path: Path) -> None:
    samples = _samples(30, 22)
    hardware = load_hardware(str(_write(tmp_path, samples)))
    base = load_hardware("dgx-spark-pair")
    assert hardware.device == base.device and hardware.nodes == 2 and hardware.base == "dgx-spark-pair"
    link = hardware.inter_node_link
    assert link.measured.environment["NCCL_IB_HCA"] == "rocep1s0f0,rocep1s0f1" and link.measured.nccl_version
    assert link.allgather is not None
    for op in ("allreduce", "p2p", "allgather"):
        model = getattr(link, op)
        for measured in samples.results[op]:
            assert model.seconds(measured.bytes) == pytest.approx(measured.microseconds * 1e-6, rel=0.10)
    assert [r.protocol for r in link.allreduce.regimes][0] == "LL"  # NCCL's names on an NCCL link


def test_a_healthy_link_passes_and_a_slow_one_is_flagged_with_causes() -> None:
    from tuner.probe_link.profile import measured_link

    healthy = check_link(measured_link(_samples(30, 21)), "dgx-spark-pair")
    assert not healthy.degraded and slow_link_warning(_samples(30, 21)) is None
    slow = check_link(measured_link(_samples(60, 3)), "dgx-spark-pair")
    assert slow.degraded and any("GB/s" in p for p in slow.problems) and any("us" in p for p in slow.problems)
    assert any("MTU" in c for c in LIKELY_CAUSES)
    assert "slow link" in (slow_link_warning(_samples(60, 3)) or "")


def test_default_base_matches_the_nodes() -> None:
    assert default_base(_samples(30, 22)) == "dgx-spark-pair"
    assert default_base(_samples(30, 22, device="cpu", name="x86_64")) == "cpu-2core-vm"
    with pytest.raises(ValueError, match="--base"):
        default_base(_samples(30, 22, name="Some Other GPU"))


def test_sweep_moves_toward_pp_as_the_link_slows() -> None:
    model, workload = resolve_model("gpt-oss-120b"), get_workload("prefill-heavy")
    points = sweep_link(load_hardware("dgx-spark-pair"), lambda on: compare_layouts(model, on, workload, [32]))
    by_bandwidth = sorted((p for p in points if p.axis == "bandwidth"), key=lambda p: p.bandwidth_gbs)
    ratios = [p.pp_over_tp_throughput for p in by_bandwidth]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > 1 > ratios[-1]
    by_latency = sorted((p for p in points if p.axis == "latency"), key=lambda p: p.latency_us)
    assert [p.pp_over_tp_throughput for p in by_latency] == sorted(p.pp_over_tp_throughput for p in by_latency)


def test_predict_link_sweep_marks_nominal_and_measured_and_plots(tmp_path: Path) -> None:
    profile = _write(tmp_path, _samples(60, 3))
    plot = tmp_path / "sweep.png"
    args = ["predict", "--model", "llama-3.1-8b", "--hardware", str(profile), "--link-sweep", "--concurrency", "1,32"]
    result = runner.invoke(app, [*args, "--plot", str(plot)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "measured" in result.output and "nominal" in result.output and "bandwidth x0.0625" in result.output
    assert plot.stat().st_size > 0
    shipped = runner.invoke(app, ["predict", "--model", "llama-3.1-8b", "--link-sweep"], env={"COLUMNS": "220"})
    assert shipped.exit_code == 0 and "measured" not in shipped.output
    one_device = runner.invoke(
        app, ["predict", "--model", "llama-3.1-8b", "--hardware", "dgx-spark", "--link-sweep"], env={"COLUMNS": "400"}
    )
    assert one_device.exit_code == 2 and "2 workers" in one_device.output


def test_predict_names_a_missing_or_malformed_profile_file(tmp_path: Path) -> None:
    wide = {"COLUMNS": "400"}
    missing = runner.invoke(
        app, ["predict", "--model", "llama-3.1-8b", "--hardware", str(tmp_path / "no.yaml")], env=wide
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes: 0\n")
    malformed = runner.invoke(app, ["predict", "--model", "llama-3.1-8b", "--hardware", str(bad)], env=wide)
    assert malformed.exit_code == 2 and "malformed" in malformed.output


def test_optimize_prices_trials_on_the_profile_file_it_is_given(tmp_path: Path) -> None:
    common = dict(model="llama-3.1-8b", trials=4, routing_trials=0, out=tmp_path / "plans")
    measured = _write(tmp_path, _samples(400, 1))
    assert optimize(OptimizeRequest(**common, hardware=str(measured), storage=f"sqlite:///{tmp_path / 'a.db'}")).classes
    # The same profile with 5 GB per device cannot hold the model's 16 GB: refused, naming the 5 GB,
    # which only happens if the file's figures, not the cluster's own profile, priced the layouts.
    data = yaml.safe_load(measured.read_text())
    data["device"]["memory_gb"]["value"] = 5
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(data))
    with pytest.raises(TargetError, match=r"\(5 GB\)"):
        optimize(OptimizeRequest(**common, hardware=str(small), storage=f"sqlite:///{tmp_path / 'b.db'}"))
    with pytest.raises(TargetError, match="does not exist"):
        optimize(OptimizeRequest(**common, hardware=str(tmp_path / "none.yaml")))


def test_probe_says_which_layout_the_measured_link_favours(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tuner.probe_link.cli import _print_favoured

    _print_favoured("gpt-oss-120b", _write(tmp_path, _samples(60, 3)), "dgx-spark-pair")
    lines = capsys.readouterr().out.splitlines()
    prefill = [line.split("│") for line in lines if "prefill-heavy" in line]
    measured = next(cells for cells in prefill if "measured" in cells[2])
    nominal = next(cells for cells in prefill if "nominal" in cells[2])
    # At 3 GB/s PP=2 wins prefill-heavy traffic at C=128; at the nominal 22 GB/s TP=2 does.
    assert float(measured[-2]) > 1 > float(nominal[-2])


# ---- the transport NCCL chose (deploy.link_probe.nccl_transport) ------------------------------------

IB_LOG = [
    "spark-a:123:456 [0] NCCL INFO NET/IB : Using [0]rocep1s0f1:1/RoCE [1]roceP2p1s0f1:1/RoCE [RO]; OOB enp1s0f1np1",
    "spark-a:123:456 [0] NCCL INFO Using network IB",
    "spark-a:123:456 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0",
]
SOCKET_LOG = [
    "spark-a:123:456 [0] NCCL INFO NET/IB : No device found.",
    "spark-a:123:456 [0] NCCL INFO NET/Socket : Using [0]enp1s0f1np1:192.168.100.10<0>",
    "spark-a:123:456 [0] NCCL INFO Using network Socket",
    "spark-a:123:456 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/Socket/0",
]


def _with_transport(transport: str, evidence: tuple[str, ...] = (), backend: str = "nccl"):
    from deploy.link_probe import LinkSamples, Sample

    fast = {op: (Sample(bytes=8192, microseconds=30, calls=1), Sample(bytes=2**26, microseconds=3000, calls=1))
            for op in ("allreduce", "allgather", "p2p")}  # fmt: skip
    return LinkSamples(date="2026-12-07", backend=backend, device="cuda", nodes=("a", "b"), results=fast,
                       transport=transport, transport_evidence=evidence)  # fmt: skip


def test_nccl_transport_reads_rdma_and_the_socket_fallback_from_the_log() -> None:
    from deploy.link_probe import nccl_transport

    transport, evidence = nccl_transport(IB_LOG)
    assert transport == "NET/IB" and any("via NET/IB" in line for line in evidence)
    assert nccl_transport(SOCKET_LOG)[0] == "NET/Socket"
    assert nccl_transport(["NCCL INFO Channel 00 : 0[0] -> 1[1] via P2P/IPC"])[0] == "P2P"
    assert nccl_transport([], {"NCCL_IB_DISABLE": "1"}) == ("NET/Socket", ("environment: NCCL_IB_DISABLE=1",))
    assert nccl_transport(["NCCL INFO Bootstrap : Using eth0"]) == ("unknown", ())


def test_a_socket_fallback_is_warned_about_even_on_a_fast_link() -> None:
    from deploy.link_probe import slow_link_warning, socket_fallback_warning

    fallback = _with_transport("NET/Socket", ("NCCL INFO Using network Socket",))
    warning = socket_fallback_warning(fallback)
    assert warning is not None and "NET/Socket" in warning and "NCCL_IB_HCA" in warning
    assert "TCP sockets" in (slow_link_warning(fallback) or "")
    assert (
        socket_fallback_warning(_with_transport("NET/IB")) is None
        and slow_link_warning(_with_transport("NET/IB")) is None
    )
    assert socket_fallback_warning(_with_transport("gloo/TCP", backend="gloo")) is None
