"""The `gateway` command's own answers to bad input: clear messages and exit codes, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.cli import app

runner = CliRunner(env={"COLUMNS": "240"})  # rich boxes wrap messages at narrow widths


def test_up_with_an_invalid_plan_names_the_problem(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("model: {source: demo, name: x}\nreplicas: []\n")
    result = runner.invoke(app, ["up", "--plan", str(plan)])
    assert result.exit_code == 2
    assert "replicas" in result.output and "at least 1 item" in result.output
    assert "Traceback" not in result.output


def test_up_with_a_model_dir_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["up", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_deploy_needs_a_cluster_address(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    plan = Path(__file__).parents[2] / "deploy" / "plans" / "cpu-demo.yaml"
    result = runner.invoke(app, ["deploy", str(plan)])
    assert result.exit_code == 2
    assert "--address" in result.output and "gateway up" in result.output


def test_serve_with_a_broken_config_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("model: m\nreplicas: [{name: a, traffic_class: sometimes, model: m}]\n")
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "replicas.0.traffic_class" in result.output


def test_the_stack_commands_say_what_to_install_without_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway-only install has no Ray: `gateway up` names what is missing instead of a traceback."""
    import importlib.util
    import sys

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a)
    )
    for module in ("ray", "deploy.stack"):  # importing them now fails, as it would without Ray
        monkeypatch.setitem(sys.modules, module, None)
    plan = str(Path(__file__).parents[2] / "deploy" / "plans" / "cpu-demo.yaml")
    for command in (["up"], ["status"], ["down"], ["deploy", plan, "--address", "127.0.0.1:1"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, command
        assert "needs ray" in result.output and "gateway serve" in result.output
        assert "Traceback" not in result.output


def test_the_gateway_layer_alone_offers_serve(tmp_path: Path) -> None:
    """gateway/cli.py (no deploy/ import) runs the same `serve` as a subcommand."""
    from gateway.cli import app as gateway_app

    config = tmp_path / "gateway.yaml"
    config.write_text("model: m\nreplicas: []\n")
    result = runner.invoke(gateway_app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "replicas" in result.output and "Traceback" not in result.output
