"""`gateway service install` (issue 25): systemd units for the Ray head, a Ray worker and the deploy,
with the venv's own binaries and the environment from an EnvironmentFile (secrets never in a
unit), checked by systemd's own `systemd-analyze verify` where it exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.cli import app
from deploy.service import DEPLOY_UNIT, HEAD_UNIT, WORKER_UNIT

PLAN = Path(__file__).parents[2] / "deploy" / "plans" / "cpu-demo.yaml"
BIN = Path(sys.executable).parent
SECRET = "hf_secret_never_in_a_unit_0123"


def install(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    folder = tmp_path / "units"
    result = CliRunner(env={"HF_TOKEN": SECRET, "COLUMNS": "200", **(env or {})}).invoke(
        app,
        ["service", "install", "--plan", str(PLAN), "--dir", str(folder), "--env-file", str(tmp_path / "t.env"), *args],
    )
    units = {p.name: p.read_text() for p in folder.glob("*.service")} if folder.exists() else {}
    return result.exit_code, result.output, units


def directives(unit: str, name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{name}=")]


def test_the_head_gets_ray_and_the_deploy_after_it(tmp_path: Path) -> None:
    code, output, units = install(tmp_path, "--node-ip", "10.0.0.1")
    assert code == 0, output
    assert set(units) == {HEAD_UNIT, DEPLOY_UNIT}
    head, deploy = units[HEAD_UNIT], units[DEPLOY_UNIT]
    assert directives(head, "ExecStart") == [
        f"{BIN}/ray start --head --port=6379 --dashboard-host=127.0.0.1 --node-ip-address=10.0.0.1 --block"
    ]
    assert directives(head, "Restart") == ["on-failure"]
    assert directives(deploy, "Type") == ["oneshot"] and directives(deploy, "RemainAfterExit") == ["yes"]
    assert directives(deploy, "After")[0].startswith(HEAD_UNIT) and directives(deploy, "Requires") == [HEAD_UNIT]
    assert directives(deploy, "ExecStart") == [
        f"{BIN}/gateway deploy {PLAN.resolve()} --address=10.0.0.1:6379 --timeout=900"
    ]
    assert int(directives(deploy, "TimeoutStartSec")[0]) > 900  # systemd's 90 s default would kill the deploy
    for unit in units.values():
        assert directives(unit, "EnvironmentFile") == [f"-{tmp_path / 't.env'}"]
        assert "RAY_memory_usage_threshold=0.98" in directives(unit, "Environment")
        assert SECRET not in unit and "HF_TOKEN" not in unit
    assert "TANDEM_DATA_DIR=/var/lib/tandem" in directives(head, "Environment")  # kept across reboots
    assert f"systemctl enable --now {HEAD_UNIT} {DEPLOY_UNIT}" in output
    assert SECRET not in output and "HF_TOKEN=hf_..." in output  # the env file's template, no real value


def test_a_worker_joins_the_head_and_needs_its_address(tmp_path: Path) -> None:
    code, output, units = install(tmp_path, "--role", "worker")
    assert code == 2 and "--head" in output and not units
    code, output, units = install(tmp_path, "--role", "worker", "--head", "10.0.0.1", "--node-ip", "10.0.0.2")
    assert code == 0, output
    assert set(units) == {WORKER_UNIT}
    assert directives(units[WORKER_UNIT], "ExecStart") == [
        f"{BIN}/ray start --address=10.0.0.1:6379 --node-ip-address=10.0.0.2 --block"
    ]
    assert directives(units[WORKER_UNIT], "Restart") == ["always"]  # until the head answers
    assert f"systemctl enable --now {WORKER_UNIT}" in output


def test_enable_runs_systemctl(tmp_path: Path) -> None:
    """--enable runs the printed lines (a recording `systemctl` stands in for systemd's)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "systemctl.log"
    systemctl = fake_bin / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    systemctl.chmod(0o755)
    code, output, _ = install(tmp_path, "--enable", env={"PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert code == 0, output
    assert log.read_text().splitlines() == ["daemon-reload", f"enable --now {HEAD_UNIT} {DEPLOY_UNIT}"]
    deploy = (tmp_path / "units" / DEPLOY_UNIT).read_text()  # no --node-ip: the cluster started on this box
    assert "--address=auto" in deploy and f"{BIN}/ray status >/dev/null" in deploy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd's systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    code, output, _ = install(tmp_path, "--node-ip", "10.0.0.1")
    assert code == 0, output
    code, output, _ = install(tmp_path, "--role", "worker", "--head", "10.0.0.1:6379")
    assert code == 0, output
    units = sorted(str(p) for p in (tmp_path / "units").glob("*.service"))
    assert len(units) == 3
    verified = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stderr
    assert "tandem" not in verified.stderr, verified.stderr  # no warning about our units
