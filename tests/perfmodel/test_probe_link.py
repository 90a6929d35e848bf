"""`tuner probe-link` on a two-node local Ray cluster (gloo; both "nodes" on this machine), and its
profile read back by `tuner predict --hardware FILE`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.link_probe import LinkSamples, slow_link_warning
from deploy.stack import ray_on_loopback_only
from tuner.perfmodel import load_hardware

pytestmark = pytest.mark.ray
TUNER = [str(Path(sys.executable).parent / "tuner")]


@pytest.fixture(scope="module")
def two_node_address() -> Iterator[str]:
    from ray.cluster_utils import Cluster

    ray_on_loopback_only()  # both "nodes" on 127.0.0.1, as tests/deploy/test_placement.py
    loopback = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, **loopback})
    try:
        cluster.add_node(num_cpus=2, **loopback)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def test_probe_writes_a_profile_that_predict_reads_and_flags_a_slow_link(two_node_address: str, tmp_path: Path) -> None:
    out, samples_file = tmp_path / "measured.yaml", tmp_path / "samples.json"
    run = subprocess.run(
        [*TUNER, "probe-link", "--address", two_node_address, "--out", str(out), "--base", "dgx-spark-pair",
         "--samples-out", str(samples_file)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    samples = LinkSamples.model_validate_json(samples_file.read_text())
    assert samples.backend == "gloo" and len(samples.nodes) == 2
    assert samples.transport == "gloo/TCP" and "transport: gloo/TCP" in run.stdout
    for op in ("allreduce", "allgather", "p2p"):
        assert [s.bytes for s in samples.results[op]] == [2**k for k in range(13, 27)]  # 8 KB .. 64 MB

    hardware = load_hardware(str(out))
    link = hardware.inter_node_link
    assert hardware.base == "dgx-spark-pair" and hardware.device == load_hardware("dgx-spark-pair").device
    assert link.measured is not None and link.measured.backend == "gloo" and link.measured.transport == "gloo/TCP"
    assert samples.control_roundtrip_us is not None and link.control_roundtrip_us is not None
    assert [p.microseconds for p in link.allreduce.points] == [s.microseconds for s in samples.results["allreduce"]]
    # A loopback gloo link is far below the Spark pair's 22 GB/s: flagged, with causes.
    assert "degraded link" in run.stdout and "MTU" in run.stdout
    assert slow_link_warning(samples) is not None
    assert out.with_suffix(".png").stat().st_size > 0

    predicted = subprocess.run(
        [*TUNER, "predict", "--model", "llama-3.1-8b", "--hardware", str(out), "--tp", "2", "--concurrency", "1",
         "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    row = json.loads(predicted.stdout.splitlines()[0])
    nominal = subprocess.run(
        [*TUNER, "predict", "--model", "llama-3.1-8b", "--tp", "2", "--concurrency", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # The same device over a slower link: TP=2's TPOT grows.
    assert row["tpot_ms"] > json.loads(nominal.stdout.splitlines()[0])["tpot_ms"]


def test_probe_refuses_a_one_node_cluster_clearly(tmp_path: Path) -> None:
    run = subprocess.run(
        [*TUNER, "probe-link", "--out", str(tmp_path / "x.yaml")], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and "--address" in run.stdout + run.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_deploy_probe_warns_before_tp_spans_a_slow_link(two_node_address: str) -> None:
    """`gateway deploy --probe-link`'s check, on the Spark plan (TP=2 over the two nodes); the
    deploy itself needs GPUs, so it is not run here."""
    from deploy.link_probe import check_before_deploy, replicas_with_tp_across_nodes
    from deploy.plan import load_plan, shipped_plan
    from deploy.stack import RayConnection

    spark = load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair"))
    assert replicas_with_tp_across_nodes(spark) == ["interactive"]
    assert replicas_with_tp_across_nodes(load_plan(shipped_plan("cpu-demo"))) == []  # TP inside one node
    with RayConnection(two_node_address):
        samples, warning = check_before_deploy(spark)
        assert check_before_deploy(load_plan(shipped_plan("cpu-demo"))) == (None, None)
    assert samples is not None and samples.backend == "gloo"
    assert warning is not None and "interactive" in warning and "slow link" in warning
