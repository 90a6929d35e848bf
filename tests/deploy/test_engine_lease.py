"""The replica's pause lease (deploy.engine_lease): ordered, idempotent, and never stuck paused.

The engine here is a recorder of pause/resume calls; the real engine's behaviour under a pause is
tested on the CPU stack (tests/stack/test_freeze.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from deploy.engine_lease import PauseLease, PauseLeaseMiddleware
from gateway.engine_pause import PAUSE_PATH, RESUME_PATH, PauseStatus


class Engine:
    """What vLLM's engine client offers for a pause, recording each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.paused = False

    async def pause_generation(self, *, mode: str, clear_cache: bool) -> None:
        assert (mode, clear_cache) == ("keep", False)
        self.calls.append("pause")
        self.paused = True

    async def resume_generation(self) -> None:
        self.calls.append("resume")
        self.paused = False


async def wait_for(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def lease_of(engine: Engine) -> PauseLease:
    async def pause() -> None:
        await engine.pause_generation(mode="keep", clear_cache=False)

    return PauseLease(pause, engine.resume_generation)


async def test_pause_and_resume_are_idempotent_and_renew_the_lease() -> None:
    engine = Engine()
    lease = lease_of(engine)
    first = await lease.pause(30, seq=1)
    again = await lease.pause(30, seq=2)  # a renewal: the engine is not paused twice
    assert first.paused and again.paused and engine.calls == ["pause"]
    assert (await lease.resume(seq=3)).paused is False
    assert (await lease.resume(seq=4)).paused is False
    assert engine.calls == ["pause", "resume"]


async def test_a_late_command_never_undoes_a_newer_one() -> None:
    engine = Engine()
    lease = lease_of(engine)
    await lease.pause(30, seq=10)
    await lease.resume(seq=12)
    stale = await lease.pause(30, seq=11)  # sent before the resume, arrived after it
    assert stale.applied is False and stale.paused is False and not engine.paused
    assert (await lease.resume(seq=11)).applied is False


async def test_an_unrenewed_lease_resumes_the_engine_by_itself() -> None:
    engine = Engine()
    lease = lease_of(engine)
    await lease.pause(0.3, seq=1)
    assert engine.paused
    await wait_for(lambda: not engine.paused)
    assert lease.status().lease_expiries == 1 and not lease.paused
    # renewed in time, it stays paused past the first lease's end
    await lease.pause(0.5, seq=2)
    for seq in range(3, 8):
        await asyncio.sleep(0.2)
        await lease.pause(0.5, seq=seq)
    assert engine.paused and lease.status().lease_expiries == 1
    await lease.resume(seq=9)


async def test_a_short_lease_after_a_long_one_is_watched_by_its_own_end() -> None:
    """A pause with a long lease, resumed, then a pause with a short one: the short one runs out on
    time (a watch still sleeping towards the long lease's end must not be the only one)."""
    engine = Engine()
    lease = lease_of(engine)
    await lease.pause(120, seq=1)
    await lease.resume(seq=2)
    await lease.pause(0.3, seq=3)
    await wait_for(lambda: not engine.paused, timeout_s=10)
    assert lease.status().lease_expiries == 1
    # and a renewal with a shorter lease while paused shortens the watch too
    await lease.pause(120, seq=4)
    await lease.pause(0.3, seq=5)
    await wait_for(lambda: not engine.paused, timeout_s=10)


@pytest.mark.parametrize("lease_s", [0, -1, 601, float("nan"), float("inf")])
async def test_a_lease_out_of_bounds_is_refused(lease_s: float) -> None:
    engine = Engine()
    with pytest.raises(ValueError):
        await lease_of(engine).pause(lease_s, seq=1)
    assert engine.calls == []


def app_with_lease(engine: Engine) -> Starlette:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("vllm")

    app = Starlette(routes=[Route("/v1/models", hello)])
    app.state.engine_client = engine
    app.add_middleware(PauseLeaseMiddleware)  # as vLLM's --middleware does
    return app


async def test_the_middleware_serves_the_commands_and_passes_everything_else() -> None:
    engine = Engine()
    transport = httpx.ASGITransport(app=app_with_lease(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
        assert (await client.get("/v1/models")).text == "vllm"
        paused = await client.post(PAUSE_PATH, params={"lease_s": 30, "seq": 5})
        assert paused.status_code == 200 and PauseStatus.model_validate_json(paused.content).paused
        status = PauseStatus.model_validate_json((await client.get(PAUSE_PATH)).content)
        assert status.paused and status.seq == 5 and 0 < (status.lease_left_s or 0) <= 30
        resumed = await client.post(RESUME_PATH, params={"seq": 6})
        assert PauseStatus.model_validate_json(resumed.content).paused is False
        assert engine.calls == ["pause", "resume"]


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (PAUSE_PATH, {"seq": 1}, "lease_s"),
        (PAUSE_PATH, {"lease_s": "soon", "seq": 1}, "could not convert"),
        (PAUSE_PATH, {"lease_s": 9999, "seq": 1}, "lease_s must be"),
        (RESUME_PATH, {}, "seq"),
        (RESUME_PATH, {"seq": "x"}, "invalid literal"),
    ],
)
async def test_bad_commands_get_an_openai_error_and_change_nothing(
    path: str, params: dict[str, Any], message: str
) -> None:
    engine = Engine()
    transport = httpx.ASGITransport(app=app_with_lease(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
        answer = await client.post(path, params=params)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert engine.calls == []
