"""Running the deployed stack as a service (issue 25), on a real Ray cluster, without vLLM:

- keys added with `gateway keys add` to the gateway's Serve deployment (in front of stand-in
  engines pointing at fake replicas) work at once, beside the plan's key, and survive Serve
  restarting the gateway replica (they live in its data directory, not in the replica);
- `gateway deploy --timeout` on a plan whose engines can never be placed shows each deployment's
  state, gives up at the timeout, says why and removes the app it started.

One local Ray head for the module; the CLI's own connection step is skipped, since this process
is the one connected (everything after it runs as `gateway deploy` runs it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from deploy.builder import engine_deployment_name, gateway_app
from deploy.cli import app
from deploy.plan import ServingPlan, parse_plan, shipped_plan
from deploy.ports import free_port

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/fake_upstream.py
sys.path.insert(0, str(Path(__file__).parent))  # test_keys_on_serve's stand-in engine
from fake_upstream import FakeUpstream
from local_serve import local_serve
from test_keys_on_serve import stand_in_engine, wait_ready

pytestmark = pytest.mark.ray

PLAN_KEY = "sk-plan-admin-7c1d9e2f4a6b"
runner = CliRunner(env={"COLUMNS": "240"})


@pytest.fixture(scope="module")
def serve_cluster() -> Iterator[None]:
    with local_serve():
        yield


def plan_with(tmp_path: Path, **gateway: object) -> ServingPlan:
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    data["gateway"] = {"port": free_port(), **gateway}
    (tmp_path / "model").mkdir(exist_ok=True)
    data["model"]["source"] = str(tmp_path / "model")
    return parse_plan(data)


def test_keys_added_to_the_deployed_gateway_work_and_outlive_its_restart(serve_cluster: None, tmp_path: Path) -> None:
    from ray import serve

    auth = {"keys": [{"name": "ops", "key": PLAN_KEY, "admin": True}], "keys_env": None}
    plan = plan_with(tmp_path, auth=auth, batches={"data_dir": str(tmp_path / "data")}, log={"format": "json"})
    engine = serve.deployment(stand_in_engine()).options(ray_actor_options={"num_cpus": 0})
    root = f"http://127.0.0.1:{plan.gateway.port}"
    env = {"TANDEM_URL": root, "TANDEM_ADMIN_KEY": PLAN_KEY, "COLUMNS": "240"}
    body = {"model": plan.models[0].name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    def status(key: str) -> int:
        return httpx.post(
            f"{root}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ).status_code

    with (
        FakeUpstream(model=plan.models[0].name).running() as first,
        FakeUpstream(model=plan.models[0].name).running() as second,
    ):
        engines = {
            replica.name: engine.options(name=engine_deployment_name(replica)).bind(upstream.base_url)
            for replica, upstream in zip(plan.replicas, (first, second), strict=True)
        }
        serve.run(gateway_app(plan, engines), name="tandem-ops", route_prefix=None)
        try:
            wait_ready(root)
            added = CliRunner(env=env).invoke(app, ["keys", "add", "teammate"])
            assert added.exit_code == 0, added.output
            teammate = added.stdout.strip()
            assert status(teammate) == 200 and status(PLAN_KEY) == 200 and status("tdm-not-a-key") == 401
            lines = request_lines(deadline=time.monotonic() + 30)  # the replica's log, one JSON line each
            assert {line["key"] for line in lines} >= {"teammate", "ops"}
            assert all(teammate not in json.dumps(line) for line in lines)

            # a new gateway replica (the app removed and deployed again): the key is still there
            serve.delete("tandem-ops")
            serve.run(gateway_app(plan, engines), name="tandem-ops", route_prefix=None)
            wait_ready(root)
            assert status(teammate) == 200
        finally:
            serve.delete("tandem-ops")


def request_lines(deadline: float) -> list[dict[str, object]]:
    """The gateway replica's per-request JSON lines, from the Ray session's worker logs (stderr of
    the replica's process), once there are some."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    while True:
        found = [
            json.loads(line)
            for path in logs.glob("worker-*.err")
            for line in path.read_text(errors="replace").splitlines()
            if line.startswith("{") and '"tandem.gateway.requests"' in line
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_deploy_that_times_out_says_why_and_removes_what_it_started(
    serve_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy import stack

    data = plan_with(tmp_path, batches={"data_dir": str(tmp_path / "data")}).model_dump(mode="json")
    for replica in (r for group in data["models"] for r in group["replicas"]):
        replica["placement"]["cpus_per_worker"] = 64  # no node has 64 CPUs: the engines are never placed
    path = tmp_path / "unplaceable.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setattr(stack.RayConnection, "__enter__", lambda self: self)  # this process is connected
    monkeypatch.setattr(stack.RayConnection, "__exit__", lambda self, *exc: None)
    started = time.monotonic()
    result = runner.invoke(app, ["deploy", str(path), "--address", "connected", "--timeout", "20"])
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 180  # gave up near its timeout (Serve's deletion included)
    assert "engine-interactive" in result.output and "DEPLOYING" in result.output  # progress, by deployment
    assert "not running after 20 s" in result.output
    assert "removed the app this deploy started" in result.output
    assert stack.app_status() is None  # nothing left deployed
