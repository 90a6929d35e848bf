"""A replica that restarts at a new address takes traffic again (issue 14: after SIGCONT,
interactive traffic stayed on the batch replica). On the http data path Serve restarts an engine
that failed its health checks, and the new engine listens on a new port; the gateway must ask
where the replica is now rather than keep probing the old address."""

from __future__ import annotations

import contextlib
import time

import httpx
from fake_upstream import FakeUpstream
from gateway_support import PUBLIC_MODEL, gateway_config

from gateway.backends.http import HttpBackend
from gateway.backends.relocating import RelocatingHttpBackend
from gateway.server import start_in_thread

CHAT = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
HEAL_WITHIN_S = 30.0


def test_a_restarted_replica_is_followed_to_its_new_address() -> None:
    with contextlib.ExitStack() as stack:
        pp = stack.enter_context(FakeUpstream(model="upstream-pp", scheduling_policy="priority").running())
        first = FakeUpstream(model="upstream-tp")
        first_running = first.running()
        first_running.__enter__()
        where = {"url": first.base_url}

        async def resolve() -> str:
            return where["url"]

        config = gateway_config(first, pp, limits={"load_poll_interval_s": 0.1})
        backends = {"tp": RelocatingHttpBackend(first.base_url, resolve), "pp": HttpBackend(pp.base_url)}
        gateway = start_in_thread(config, backends)
        stack.callback(gateway.stop)
        url = f"{gateway.base_url}/chat/completions"
        assert httpx.post(url, json=CHAT, timeout=30).headers["x-tandem-replica"] == "tp"

        first_running.__exit__(None, None, None)  # the engine dies; Serve starts another elsewhere
        restarted = stack.enter_context(FakeUpstream(model="upstream-tp").running())
        assert restarted.port != first.port
        while_down = httpx.post(url, json=CHAT, timeout=30)
        assert while_down.status_code == 200  # refused by the dead one: sent to pp, once
        where["url"] = restarted.base_url

        deadline = time.monotonic() + HEAL_WITHIN_S
        replica = ""
        while replica != "tp":
            assert time.monotonic() < deadline, "the restarted replica never took traffic again"
            time.sleep(0.1)
            replica = httpx.post(url, json=CHAT, timeout=30).headers["x-tandem-replica"]
        assert restarted.requests and backends["tp"].base_url == restarted.base_url
