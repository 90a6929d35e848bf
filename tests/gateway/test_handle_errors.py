"""The handle path's 500 names no internals (issue 14, defect 8): when the replica's server
method raises, Ray's exception carries the replica's traceback, file paths, actor ids and node
addresses; the client gets a plain OpenAI 500 with the request id, and the full text goes to the
gateway's log only. The backend is the real HandleBackend over a stand-in handle (no cluster)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from ray.exceptions import RayTaskError

from gateway.backends.handle import HandleBackend

INTERNALS = "File /home/ops/venv/lib/python3.11/site-packages/vllm/engine.py, actor_id=9f3c1e, node 10.0.0.12"


class _RaisingCall:
    def __init__(self) -> None:
        self.cancelled = False

    def __aiter__(self) -> _RaisingCall:
        return self

    async def __anext__(self) -> Any:
        raise RayTaskError("chat", f"Traceback (most recent call last):\n  {INTERNALS}", RuntimeError(INTERNALS))

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    def remote(self, request: Any, info: Any) -> _RaisingCall:
        return _RaisingCall()


class _Handle:
    chat = _Method()

    def options(self, **_: Any) -> _Handle:
        return self


class _Records(logging.Handler):
    """Collects the gateway logger's records (caplog's root handler does not survive start():
    importing vLLM reconfigures logging)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += self.format(record) + "\n"


async def test_a_replica_exception_is_a_500_without_its_text() -> None:
    backend = HandleBackend(_Handle())
    await backend.start()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    records, logger = _Records(), logging.getLogger("tandem.gateway")
    logger.addHandler(records)
    try:
        upstream = await backend.send("chat", body, "req-7")
    finally:
        logger.removeHandler(records)
    error = orjson.loads(await upstream.read())["error"]
    assert upstream.status == 500 and error["code"] == 500
    assert "req-7" in error["message"]
    for leak in ("/home/ops", "actor_id", "10.0.0.12", "Traceback", "RayTaskError", "RuntimeError"):
        assert leak not in error["message"]
    assert INTERNALS in records.text and "req-7" in records.text  # the operator still has it all
