"""Keys limited to models (issue 27): a key may use only the models it names (by name or alias),
wherever it comes from (the plan, the admin routes, the store); `gateway keys add --model` and
`gateway keys models` set the list over the admin routes, which refuse a model the gateway does
not serve; the list outlives a restart; no secret is in any answer but the one that issues it.

The admin routes run here on their own (gateway.admin_api over a KeyAdmin and a store, under
uvicorn), not inside a whole gateway: what a limited key gets from the generation routes is the
proxy's part (Client.may_use)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner, Result

from deploy.cli import app as cli_app
from deploy.ports import free_port
from gateway.admin_api import admin_routes
from gateway.asgi import answer_errors_in_the_envelope
from gateway.auth import Client, KeyRing
from gateway.contract.config import ApiKey, AuthSettings, GatewayConfig
from gateway.key_admin import KeyAdmin, NewKey
from gateway.state_store import StateStore
from gateway.usage import UsageLedger

ADMIN_KEY = "sk-admin-0123456789"
SERVED = frozenset({"big", "big-alias", "small"})  # two models: `big` (alias `big-alias`) and `small`
PLAN_KEYS = [
    ApiKey(name="admin", key=SecretStr(ADMIN_KEY), admin=True),
    ApiKey(name="small-only", key=SecretStr("sk-small-0123456789"), models=["small"]),
]


def test_may_use_a_model_by_any_of_its_names() -> None:
    limited = Client(name="k", models=frozenset({"big-alias"}))
    assert limited.may_use(["big", "big-alias"])  # named by its alias: the model, by every name
    assert not limited.may_use(["small"])
    assert Client(name="k").may_use(["small"])  # no list: every model
    assert not Client(name="k", models=frozenset()).may_use(["small"])  # an empty list: none


def test_plan_keys_carry_their_models_and_the_anonymous_client_may_use_every_model() -> None:
    ring = KeyRing.from_settings(AuthSettings(keys=PLAN_KEYS, keys_env=None))
    small = ring.authenticate("Bearer sk-small-0123456789")
    assert small.models == frozenset({"small"})
    assert small.may_use(["small"]) and not small.may_use(["big", "big-alias"])
    assert ring.authenticate(f"Bearer {ADMIN_KEY}").may_use(["big", "big-alias"])
    anonymous = KeyRing([]).authenticate(None)
    assert anonymous.may_use(["big"]) and anonymous.may_use(["small"])


def test_keys_from_the_environment_carry_models_after_an_optional_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TEAM_KEYS",
        "ci:sk-ci-0123456789abcdef, coder:sk-coder-0123456789::small, bulk:sk-bulk-0123456789:batch:big+small",
    )
    keys = {k.name: k for k in AuthSettings(keys_env="TEAM_KEYS").resolved_keys()}
    assert (keys["ci"].models, keys["ci"].default_class) == (None, None)  # no field: every model
    assert (keys["coder"].models, keys["coder"].default_class) == (["small"], None)
    assert (keys["bulk"].models, keys["bulk"].default_class) == (["big", "small"], "batch")
    ring = KeyRing.from_settings(AuthSettings(keys_env="TEAM_KEYS"))
    coder = ring.authenticate("Bearer sk-coder-0123456789")
    assert coder.may_use(["small"]) and not coder.may_use(["big", "big-alias"])


def test_a_plan_key_naming_a_model_not_served_is_refused_where_the_plan_is_read() -> None:
    served = {
        "name": "big",
        "aliases": ["big-alias"],
        "replicas": [
            {"name": "r", "traffic_class": "interactive", "base_url": "http://127.0.0.1:1/v1", "model": "big"}
        ],
    }
    auth = {"keys": [{"name": "typo", "key": "sk-typo-0123456789", "models": ["big-alais"]}], "keys_env": None}
    with pytest.raises(ValidationError, match=r"'typo' names models this gateway does not serve: \['big-alais'\]"):
        GatewayConfig.model_validate({"models": [served], "settings": {"auth": auth}})
    auth["keys"][0]["models"] = ["big-alias"]  # type: ignore[index]
    assert GatewayConfig.model_validate({"models": [served], "settings": {"auth": auth}}).settings.auth.keys[
        0
    ].models == ["big-alias"]


@dataclass
class AdminServer:
    """The admin routes on a port, over a key ring and the store in `data`."""

    url: str
    keyring: KeyRing

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        )

    def client(self, name: str) -> Client:
        return next(client for client in self.keyring.clients if client.name == name)


def serve_admin(data: Path) -> Iterator[AdminServer]:
    keyring = KeyRing(PLAN_KEYS)
    keys = KeyAdmin(keyring, SERVED)
    store = StateStore(data)
    keys.load(store)

    def require_admin(request: Request) -> None:
        keyring.authorize_admin(request.headers.get("authorization"), None)

    app = FastAPI()
    app.include_router(admin_routes(keys, UsageLedger(), require_admin))
    answer_errors_in_the_envelope(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the admin server did not start"
        time.sleep(0.02)
    try:
        yield AdminServer(f"http://127.0.0.1:{port}", keyring)
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[AdminServer]:
    yield from serve_admin(tmp_path / "data")


def cli(server: AdminServer, *args: str) -> Result:
    env = {"TANDEM_URL": server.url, "TANDEM_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "240"}
    return CliRunner(env=env).invoke(cli_app, ["keys", *args])


def listed(server: AdminServer) -> dict[str, Any]:
    result = cli(server, "list", "--format", "json")
    assert result.exit_code == 0, result.output
    return {key["name"]: key["models"] for key in json.loads(result.stdout)}


def test_keys_add_with_models_then_change_and_lift_the_limit(admin: AdminServer) -> None:
    added = cli(admin, "add", "carol", "--model", "big-alias", "--model", "small")
    assert added.exit_code == 0, added.output
    assert listed(admin) == {"admin": None, "small-only": ["small"], "carol": ["big-alias", "small"]}
    assert admin.client("carol").may_use(["big", "big-alias"])  # the ring has it from the next request
    table = cli(admin, "list")
    assert table.exit_code == 0 and "big-alias small" in table.stdout

    limited = cli(admin, "models", "carol", "--model", "small")
    assert limited.exit_code == 0 and "may use small" in limited.stderr
    assert not admin.client("carol").may_use(["big", "big-alias"]) and admin.client("carol").may_use(["small"])

    lifted = cli(admin, "models", "carol", "--all")
    assert lifted.exit_code == 0 and "may use every model" in lifted.stderr
    assert listed(admin)["carol"] is None and admin.client("carol").may_use(["big"])

    for neither_or_both in ([], ["--all", "--model", "small"]):
        refused = cli(admin, "models", "carol", *neither_or_both)
        assert refused.exit_code == 2 and "--model NAME" in refused.output


def test_an_unknown_model_is_refused_naming_it_and_nothing_changes(admin: AdminServer) -> None:
    typo = admin.call("POST", "/admin/keys", {"name": "dave", "models": ["small", "smal"]})
    assert typo.status_code == 400
    error = typo.json()["error"]
    assert error["param"] == "models" and "'smal'" in error["message"] and "big-alias" in error["message"]
    assert "dave" not in listed(admin)

    assert admin.call("POST", "/admin/keys", {"name": "dave", "models": ["small"]}).status_code == 201
    changed = admin.call("PATCH", "/admin/keys/dave", {"models": ["bigg"]})
    assert changed.status_code == 400 and "'bigg'" in changed.json()["error"]["message"]
    assert listed(admin)["dave"] == ["small"]

    empty = admin.call("POST", "/admin/keys", {"name": "erin", "models": []})  # null means every model
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "models"
    no_field = admin.call("PATCH", "/admin/keys/dave", {})  # an empty body must not lift the limit
    assert no_field.status_code == 400 and no_field.json()["error"]["param"] == "models"


def test_only_stored_keys_are_changed_here(admin: AdminServer) -> None:
    plan = admin.call("PATCH", "/admin/keys/small-only", {"models": None})
    assert plan.status_code == 409 and "comes from the plan" in plan.json()["error"]["message"]
    missing = admin.call("PATCH", "/admin/keys/nobody", {"models": ["small"]})
    assert missing.status_code == 404
    assert admin.client("small-only").models == frozenset({"small"})


def test_models_outlive_a_restart_and_no_answer_but_the_issuing_one_holds_the_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = serve_admin(data)
    server = next(first)
    issued = server.call("POST", "/admin/keys", {"name": "frank", "models": ["big"]})
    secret = issued.json()["key"]
    answers = [
        server.call("PATCH", "/admin/keys/frank", {"models": ["big", "small", "big"]}),  # each name once
        server.call("PATCH", "/admin/keys/frank", {"models": ["nope"]}),
        server.call("GET", "/admin/keys"),
    ]
    assert all(secret not in answer.text for answer in answers)
    assert answers[0].json()["models"] == ["big", "small"]
    first.close()

    second = serve_admin(data)
    again = next(second)
    try:
        assert again.client("frank").models == frozenset({"big", "small"})
        assert again.client("frank") is again.keyring.authenticate(f"Bearer {secret}")
    finally:
        second.close()


def test_a_stored_key_naming_a_model_no_longer_served_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    try:
        keys = KeyAdmin(KeyRing(PLAN_KEYS), SERVED)
        keys.load(store)
        keys.add(NewKey(name="gina", models=["small"]))
        smaller = KeyRing(PLAN_KEYS)
        KeyAdmin(smaller, {"big"}).load(store)  # a later config serves `big` only
    finally:
        store.close()
    gina = next(client for client in smaller.clients if client.name == "gina")
    assert not gina.may_use(["big"])  # still limited: it does not widen to every model
    assert any("'gina'" in r.message and "small" in r.message for r in caplog.records if r.levelno == logging.WARNING)
