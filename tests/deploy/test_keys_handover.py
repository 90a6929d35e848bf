"""API keys in a plan reach the deployed gateway intact (issue 14, defect 1), and never a dump.

The gateway replica is built the way `gateway up/deploy` builds it (deploy.builder.build_app),
its arguments go through Ray's own pickler as Serve ships them to the replica's actor, and the
GatewayServer then runs its real gateway in front of fake engines: the plan's key must answer
200, and the mask a JSON dump writes (`**********`) must answer 401. No Ray cluster is started.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr, ValidationError
from ray import cloudpickle

from deploy.builder import build_app, gateway_config
from deploy.cli import _load
from deploy.gateway_server import GatewayServer
from deploy.plan import PlanError, ServingPlan, dump_plan, load_plan, parse_plan, shipped_plan
from deploy.ports import free_port
from tuner.optimize.compose import compose_plan

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/fake_upstream.py
from fake_upstream import FakeUpstream

SECRET = "sk-team-4f9c2a7e51d0b8c3"
ADMIN_SECRET = "sk-admin-9e8d7c6b5a4f3e2d"
MASK = "**********"


def keyed_plan(**gateway: Any) -> ServingPlan:
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    data["gateway"] = {
        "port": free_port(),
        "auth": {
            "keys": [{"name": "team", "key": SECRET}, {"name": "ops", "key": ADMIN_SECRET, "admin": True}],
        },
        **gateway,
    }
    return parse_plan(data)


class _Remote:
    """Stands for `handle.url`: `.remote()` answers the fake engine's base URL."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def remote(self) -> str:
        return self._url


class _FakeEngineHandle:
    def __init__(self, url: str) -> None:
        self.url = _Remote(url)


def _post(base_url: str, key: str) -> httpx.Response:
    body = {"model": "tandem-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"{base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def test_the_deployed_gateway_accepts_the_plans_key_and_refuses_the_mask() -> None:
    plan = keyed_plan()
    gateway_args = build_app(plan, {"tandem-demo": "demo"}, "/tmp/tandem-logs")._bound_deployment.init_args
    (config,) = cloudpickle.loads(cloudpickle.dumps(gateway_args[:1]))
    with (
        FakeUpstream(model="tandem-demo").running() as interactive,
        FakeUpstream(model="tandem-demo").running() as batch,
    ):
        engines = {"interactive": _FakeEngineHandle(interactive.base_url), "batch": _FakeEngineHandle(batch.base_url)}
        server = asyncio.run(_start(GatewayServer, config, engines))
        try:
            base_url = f"http://127.0.0.1:{server._server.port}/v1"
            assert _post(base_url, SECRET).status_code == 200
            assert _post(base_url, MASK).status_code == 401
            admin = httpx.get(
                f"{base_url.removesuffix('/v1')}/admin/routing", headers={"Authorization": f"Bearer {MASK}"}
            )
            assert admin.status_code == 401
        finally:
            server._server.stop()


async def _start(cls: type[GatewayServer], *args: Any) -> GatewayServer:
    server = cls.__new__(cls)
    await server.__init__(*args)  # Serve awaits an async __init__ the same way
    return server


def test_a_json_dump_of_the_settings_cannot_become_a_key() -> None:
    settings = keyed_plan().gateway
    dumped = settings.model_dump(mode="json")
    assert SECRET not in str(dumped)
    with pytest.raises(ValidationError, match="mask a dump writes") as info:
        type(settings).model_validate(dumped)
    assert SECRET not in str(info.value)


def test_cli_port_and_model_options_keep_the_keys(tmp_path: Path) -> None:
    path = dump_plan(keyed_plan(), tmp_path / "plan.yaml")
    text = path.read_text()
    path.write_text(text.replace(MASK, SECRET, 1).replace(MASK, ADMIN_SECRET, 1))
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    plan = _load(path, model_dir, 9123)
    assert plan.gateway.port == 9123 and plan.models[0].name == "my-model"
    keys = [k.key.get_secret_value() for k in plan.gateway.auth.keys]
    assert keys == [SECRET, ADMIN_SECRET]


def test_keys_file_and_variable_are_read_where_the_command_runs(tmp_path: Path, monkeypatch) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump([{"name": "filed", "key": "sk-from-a-file-0123456"}]))
    monkeypatch.setenv("TEAM_KEYS", "envy:sk-from-the-env-0123456:batch")
    plan = keyed_plan(auth={"keys_file": str(keys_file), "keys_env": "TEAM_KEYS"})
    config = gateway_config(plan)
    auth = cloudpickle.loads(cloudpickle.dumps(config)).settings.auth
    assert auth.keys_file is None and auth.keys_env is None  # nothing left to read on the replica's node
    assert {k.name: k.key.get_secret_value() for k in auth.keys} == {
        "filed": "sk-from-a-file-0123456",
        "envy": "sk-from-the-env-0123456",
    }
    assert "sk-from" not in repr(config) and "sk-from" not in config.model_dump_json()


def test_a_plan_written_by_the_tuner_never_holds_a_secret(tmp_path: Path) -> None:
    template = keyed_plan()
    tuned = compose_plan(template, template.replicas, template.gateway.routing)
    assert [k.key.get_secret_value() for k in tuned.gateway.auth.keys] == [SECRET, ADMIN_SECRET]
    text = dump_plan(tuned, tmp_path / "tuned.yaml", header="tuned by tuner optimize").read_text()
    assert SECRET not in text and ADMIN_SECRET not in text
    assert "inline key(s) are masked" in text.splitlines()[1]
    with pytest.raises(PlanError, match="mask a dump writes") as info:
        load_plan(tmp_path / "tuned.yaml")
    assert MASK in text and "**" not in str(info.value).split("\n", 1)[0]


@pytest.mark.parametrize("key", ["", "sk-tiny7", "sk-fifteen-char"])
def test_an_empty_or_short_key_is_a_plan_error_that_does_not_echo_it(key: str) -> None:
    data = keyed_plan().model_dump()
    data["gateway"]["auth"]["keys"][0]["key"] = SecretStr(key) if key else ""
    with pytest.raises(PlanError, match="gateway.auth.keys.0.key: must be at least 16 characters") as info:
        parse_plan(data)
    if key:
        assert key not in str(info.value)
    with pytest.raises(ValidationError) as raw:
        ServingPlan.model_validate({**data, "gateway": {"auth": {"keys": [{"name": "k", "key": key}]}}})
    assert not key or key not in str(raw.value)


def test_up_warns_when_the_plan_listens_beyond_loopback_without_keys(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TANDEM_API_KEYS", raising=False)
    data = yaml.safe_load(shipped_plan("cpu-demo").read_text())
    data["gateway"] = {"host": "0.0.0.0", "port": 8000}
    path = tmp_path / "open.yaml"
    path.write_text(yaml.safe_dump(data))
    _load(path, None, None)
    warned = capsys.readouterr().err
    assert "warning" in warned and "0.0.0.0:8000 with no API keys" in " ".join(warned.split())
    monkeypatch.setenv("TANDEM_API_KEYS", f"team:{SECRET}")
    _load(path, None, None)
    assert "warning" not in capsys.readouterr().err
    _load(shipped_plan("cpu-demo"), None, None)  # loopback: no warning
    assert "warning" not in capsys.readouterr().err
