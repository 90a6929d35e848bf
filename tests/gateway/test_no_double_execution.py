"""No request runs twice (defect 4 of issue 14). The gateway sends a request to another replica
only when the first cannot have started it (no connection could be opened), and at most once; a
request the replica received and then lost (a dropped connection, maybe the request that killed
the engine) is answered 502 and never replayed (tests/gateway/test_gateway.py has that case)."""

from __future__ import annotations

from typing import Any

import httpx
from gateway_support import PUBLIC_MODEL, free_port_refusing

from gateway.backends.base import UpstreamResponse
from gateway.backends.http import HttpBackend
from gateway.contract.config import GatewayConfig
from gateway.contract.policy import Endpoint
from gateway.server import start_in_thread

CHAT = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class _CountingBackend(HttpBackend):
    """An HTTP backend that counts the requests it was asked to send."""

    sends = 0

    async def send(self, endpoint: Endpoint, body: dict[str, Any], request_id: str) -> UpstreamResponse:
        type(self).sends += 1
        return await super().send(endpoint, body, request_id)


def test_a_refused_request_is_sent_to_one_other_replica_at_most() -> None:
    urls = {name: f"http://127.0.0.1:{free_port_refusing()}/v1" for name in ("a", "b", "c")}
    config = GatewayConfig.model_validate(
        {
            "model": PUBLIC_MODEL,
            "replicas": [
                {"name": name, "traffic_class": "interactive", "model": "m", "base_url": url}
                for name, url in urls.items()
            ],
            "settings": {"routing": {"policy": "least-busy"}, "limits": {"load_poll_interval_s": 3600}},
        }
    )
    gateway = start_in_thread(config, {name: _CountingBackend(url) for name, url in urls.items()})
    try:
        for stats in gateway._server.config.app.state.gateway.board._stats.values():
            stats.healthy = True  # the start-up poll found them refusing; let the request meet them
        reply = httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT, timeout=30)
    finally:
        gateway.stop()
    assert reply.status_code == 502 and reply.json()["error"]["code"] == 502
    assert _CountingBackend.sends == 2  # the first replica, then one other; never the third
    message = reply.json()["error"]["message"]
    # the client hears a replica's name, never its address
    assert "was unreachable" in message and any(f"replica {name} " in message for name in urls)
    assert "127.0.0.1" not in message and not any(
        url.rsplit(":", 1)[1].split("/")[0] in message for url in urls.values()
    )
