"""The `gateway` command's own answers to bad input: clear messages and exit codes, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deploy.cli import app
from deploy.plan import load_plan, shipped_plan
from deploy.plan_version import PLAN_VERSION
from gateway.batches.store import SCHEMA_VERSION as BATCH_SCHEMA
from gateway.state_store import SCHEMA_VERSION as STORE_SCHEMA

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/fake_upstream.py
sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))  # tests/gateway/gateway_support.py
from fake_upstream import FakeUpstream

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


def test_up_with_a_model_dir_swaps_the_model_of_a_one_model_plan_only(tmp_path: Path) -> None:
    from deploy.cli import _load

    plan = _load(shipped_plan("cpu-demo"), tmp_path, 9100)
    assert [(g.source, g.name, g.aliases) for g in plan.models] == [(str(tmp_path), tmp_path.name, [])]
    assert [r.name for r in plan.replicas] == ["interactive", "batch"] and plan.gateway.port == 9100
    result = runner.invoke(app, ["up", "--plan", str(shipped_plan("cpu-two-models")), "--model", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "--model works on a plan of one model; this one serves 2" in result.output


def test_up_refuses_a_key_limited_to_a_model_not_served_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TANDEM_API_KEYS", "coder:sk-coder-0123456789::demo-small+coder")
    monkeypatch.setattr("deploy.stack.running_stack", lambda *a, **k: pytest.fail("the stack was started"))
    result = runner.invoke(app, ["up", "--plan", str(shipped_plan("cpu-two-models"))])
    assert result.exit_code == 2, result.output
    assert "API key 'coder' names models this gateway does not serve: ['coder']" in result.output
    assert "sk-coder" not in result.output and "Traceback" not in result.output


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


def test_serve_reads_the_keys_variable_before_it_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable's keys meet the same checks as the config's, as the config is read: a key
    limited to a model not served, or a key too short to be one, stops the start, naming it."""
    config = tmp_path / "gateway.yaml"
    config.write_text("model: m\nreplicas: [{name: a, traffic_class: interactive, model: m}]\n")
    monkeypatch.setattr("gateway.server.serve", lambda *a, **k: pytest.fail("the gateway was started"))
    for name, secret, models, says in [
        (
            "coder",
            "sk-coder-0123456789",
            "coder",
            "API key 'coder' names models this gateway does not serve: ['coder']",
        ),
        ("ci", "sk-tiny", "", "at least 16 characters"),
    ]:
        monkeypatch.setenv("TANDEM_API_KEYS", f"{name}:{secret}::{models}")
        result = runner.invoke(app, ["serve", "--config", str(config)])
        assert result.exit_code == 2, result.output
        assert "the API keys" in result.output and says in result.output, result.output
        assert secret not in result.output


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
    for command in (["up"], ["down"], ["deploy", plan, "--address", "127.0.0.1:1"]):
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


def test_version_names_the_release_and_the_formats() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("tandem ") and f"plan format {PLAN_VERSION}" in result.stdout
    assert (
        f"gateway store schema {STORE_SCHEMA}" in result.stdout
        and f"batch store schema {BATCH_SCHEMA}" in result.stdout
    )


def test_plan_validate_shows_what_each_box_holds() -> None:
    result = runner.invoke(app, ["plan", "validate", str(shipped_plan("llama-3.1-8b.dgx-spark-pair"))])
    assert result.exit_code == 0, result.output
    plan = load_plan(shipped_plan("llama-3.1-8b.dgx-spark-pair"))
    per_worker = {r.name: r.engine.gpu_memory_utilization * plan.cluster.memory_per_node_gb for r in plan.replicas}
    rows = [line.split("│") for line in result.stdout.splitlines() if line.count("│") > 5]
    cells = [[cell.strip() for cell in row[1:-1]] for row in rows]
    for node in ("0", "1"):  # STRICT_SPREAD: one worker of each replica on each box
        held = {c[1]: float(c[5]) for c in cells if c[0] == node and c[1] in per_worker}
        assert held == pytest.approx({name: round(gb, 1) for name, gb in per_worker.items()}, abs=0.06)
        total = next(float(c[5]) for c in cells if c[0] == node and c[1] == "all")
        assert total == pytest.approx(sum(per_worker.values()), abs=0.1)


def test_plan_validate_warns_when_a_box_is_overcommitted(tmp_path: Path) -> None:
    data = yaml.safe_load(shipped_plan("llama-3.1-8b.dgx-spark-pair").read_text())
    for replica in data["replicas"]:
        replica["engine"]["gpu_memory_utilization"] = 0.48  # 0.96 of each box: no room for the OS
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["plan", "validate", str(path)])
    assert result.exit_code == 0 and "leaving under 10%" in result.output


def test_plan_validate_refuses_a_plan_from_a_newer_tandem(tmp_path: Path) -> None:
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text()) | {"version": PLAN_VERSION + 1}
    path = tmp_path / "future.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["plan", "validate", str(path)])
    assert result.exit_code == 2 and "newer Tandem" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("keyed", [False, True])
def test_the_welcome_message_says_how_to_send_a_key(
    keyed: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked of a running gateway (over fake replicas): a keyed one gets the Authorization header and
    the SDK reading the key from the environment, an open one api_key="unused" and how to add keys."""
    from gateway_support import KEYS, gateway_config

    from deploy.cli import _print_welcome
    from deploy.stack import Deployed
    from gateway.server import start_in_thread

    monkeypatch.delenv("TANDEM_API_KEYS", raising=False)
    with FakeUpstream(model="a").running() as tp, FakeUpstream(model="b").running() as pp:
        config = gateway_config(tp, pp, auth=KEYS if keyed else {}, batches={"data_dir": str(tmp_path)})
        gateway = start_in_thread(config)
        base_url = gateway.base_url
        try:
            deployed = Deployed(base_url=base_url, models=("tandem-test",), replica_urls={})
            _print_welcome(deployed, config.settings.model_copy(update={"host": "0.0.0.0"}), foreground=False)
        finally:
            gateway.stop()
    out = capsys.readouterr().out
    assert base_url in out and "for the team, from other machines" in out
    assert "Press Ctrl-C" not in out  # `gateway deploy` returns; only `gateway up` runs in the foreground
    if keyed:
        assert "Authorization: Bearer $OPENAI_API_KEY" in out and 'api_key=os.environ["OPENAI_API_KEY"]' in out
        assert 'api_key="unused"' not in out
    else:
        assert 'api_key="unused"' in out and "gateway keys add ops --admin" in out


def test_the_tuner_has_the_same_version_flag() -> None:
    from tuner.cli import app as tuner_app

    gateway_says = runner.invoke(app, ["--version"]).stdout
    result = runner.invoke(tuner_app, ["--version"])
    assert result.exit_code == 0 and result.stdout == gateway_says
