"""Who may change routing (issue 14, defect 2): an admin key when keys are configured; with no
keys, callers on loopback only, so a gateway on 0.0.0.0 does not hand its routing to the network.

The caller's address is set through httpx's ASGI transport, which passes it to the app as the
ASGI `client`, exactly where uvicorn puts a connection's peer address.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gateway_support import ADMIN_KEY, KEYS, USER_KEY

from gateway.app import create_app
from gateway.auth import exposure_warning, is_loopback
from gateway.contract.config import GatewayConfig, GatewaySettings

NETWORK_PEER = ("10.20.30.40", 51000)


def config(**settings: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "model": "tandem-test",
            "replicas": [
                {"name": "tp", "traffic_class": "interactive", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
                {"name": "pp", "traffic_class": "batch", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
            ],
            "settings": settings,
        }
    )


async def admin_calls(gateway: GatewayConfig, peer: tuple[str, int], key: str | None = None) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=create_app(gateway), client=peer)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        current = await client.get("/admin/routing", headers=headers)
        changed = await client.put("/admin/routing", json={"policy": "all-batch"}, headers=headers)
    return [current, changed]


@pytest.mark.parametrize("peer", [("127.0.0.1", 40000), ("::1", 40000), ("::ffff:127.0.0.1", 40000)])
async def test_without_keys_loopback_callers_may_change_routing(peer: tuple[str, int]) -> None:
    current, changed = await admin_calls(config(), peer)
    assert current.status_code == 200 and changed.status_code == 200
    assert changed.json()["policy"] == "all-batch"


async def test_without_keys_network_callers_may_not_change_routing() -> None:
    for reply in await admin_calls(config(host="0.0.0.0"), NETWORK_PEER):
        assert reply.status_code == 403
        error = reply.json()["error"]
        assert error["code"] == 403 and "only on loopback" in error["message"]


@pytest.mark.parametrize("peer", [NETWORK_PEER, ("127.0.0.1", 40000)])
async def test_with_keys_only_an_admin_key_may_change_routing(peer: tuple[str, int]) -> None:
    keyed = config(auth=KEYS)
    assert [r.status_code for r in await admin_calls(keyed, peer)] == [401, 401]  # loopback is no key
    assert [r.status_code for r in await admin_calls(keyed, peer, USER_KEY)] == [403, 403]
    assert [r.status_code for r in await admin_calls(keyed, peer, ADMIN_KEY)] == [200, 200]


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.org", "", None]))


def test_exposure_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_API_KEYS", raising=False)
    assert exposure_warning(GatewaySettings(host="127.0.0.1")) is None
    warning = exposure_warning(GatewaySettings(host="0.0.0.0", port=8000))
    assert warning is not None and "0.0.0.0:8000 with no API keys" in warning
    assert exposure_warning(GatewaySettings.model_validate({"host": "0.0.0.0", "auth": KEYS})) is None
    monkeypatch.setenv("TANDEM_API_KEYS", f"team:{USER_KEY}")
    assert exposure_warning(GatewaySettings(host="0.0.0.0")) is None
