"""A fast fake of vLLM's OpenAI server, for gateway tests and the overhead benchmark.

It answers /v1/chat/completions and /v1/completions (streaming or not, n > 1, several prompts,
stream_options.include_usage), /v1/models, /health and a /metrics page with vLLM's
`vllm:num_requests_running` / `vllm:num_requests_waiting` gauges. Like vLLM it answers errors in
the OpenAI envelope, rejects unknown models (404) and a non-zero `priority` unless it was started
with scheduling_policy=priority (400).

What it records for tests: every request body and X-Request-Id it received, and the ids of
requests whose client went away before the answer was complete (`aborted`), which is what vLLM
does on disconnect: abort the generation. Errors can be injected for the next requests, either an
HTTP status with vLLM's error body or a dropped connection with no answer at all.

In-process (tests): `with FakeUpstream(model="m").running() as up: up.base_url ...`
As a process (benchmarks): `python tests/fake_upstream.py --port 9001 --model m`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_ids = itertools.count()


@dataclass
class InjectedFailure:
    status: int | None  # None: close the connection without answering
    remaining: int


@dataclass
class FakeUpstream:
    """One fake engine. Knobs may be changed while it runs (tests do so between requests)."""

    model: str = "fake-model"
    scheduling_policy: str = "fcfs"
    max_num_seqs: int = 64
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    default_max_tokens: int = 16
    requests: list[dict[str, Any]] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    record: bool = True
    active: int = 0
    _failures: list[InjectedFailure] = field(default_factory=list)
    port: int = 0

    # ---- test controls ------------------------------------------------------------------
    def fail_next(self, status: int | None, count: int = 1) -> None:
        """The next `count` generation requests fail: with `status`, or (None) by a dropped connection."""
        self._failures.append(InjectedFailure(status, count))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_for_abort(self, request_id: str, timeout_s: float = 2.0) -> float | None:
        """Seconds until `request_id` was seen aborted, or None if it was not within the timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if request_id in self.aborted:
                return time.monotonic() - start
            time.sleep(0.01)
        return None

    # ---- server -------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
        # handler_cancellation: a client that goes away cancels its handler, as vLLM aborts.
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeUpstream]:
        """Serve from a background thread with its own event loop, for the life of the block."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        runner_box: list[web.AppRunner] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            runner_box.append(loop.run_until_complete(self.serve()))
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name=f"fake-upstream-{self.model}", daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # ---- handlers -----------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _models(self, request: web.Request) -> web.Response:
        card = {"id": self.model, "object": "model", "created": 0, "owned_by": "vllm"}
        return _json({"object": "list", "data": [card]})

    async def _metrics(self, request: web.Request) -> web.Response:
        running = min(self.active, self.max_num_seqs)
        labels = f'{{engine="0",model_name="{self.model}"}}'
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{labels} {float(running)}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{labels} {float(self.active - running)}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        request_id = request.headers.get("X-Request-Id") or f"fake-{next(_ids)}"
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _error(400, f"invalid JSON: {exc}")
        if self.record:
            self.requests.append(body)
            self.request_ids.append(request_id)
        failure = self._take_failure()
        if failure is not None:
            if failure.status is None:
                request.transport.abort()  # type: ignore[union-attr]
                return web.Response()
            return _error(failure.status, "injected failure")
        chat = request.path.endswith("/chat/completions")
        problem = _invalid_field(body, chat)
        if problem is not None:
            return _error(400, f"1 validation error: {problem}", "Bad Request")
        if body.get("n", 1) < 1:  # vLLM checks values after its request model, with this type
            return _error(400, f"n must be at least 1, got {body['n']}.")
        if body.get("model", self.model) != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if body.get("priority", 0) != 0 and self.scheduling_policy != "priority":
            return _error(400, "Priority scheduling is not enabled.")
        self.active += 1
        try:
            if body.get("stream"):
                response = await self._stream(request, body, chat, request_id)
            else:
                response = await self._complete(body, chat, request_id)
            self.completed.append(request_id)
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.aborted.append(request_id)
            raise
        finally:
            self.active -= 1

    def _take_failure(self) -> InjectedFailure | None:
        if not self._failures:
            return None
        failure = self._failures[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            self._failures.pop(0)
        return failure

    def _shape(self, body: dict[str, Any], chat: bool) -> tuple[int, int, int]:
        """(choices, tokens per choice, prompt tokens) for a request body."""
        prompt = body.get("prompt", "")
        prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
        n = body.get("n") or 1
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens
        text = str(body.get("messages") if chat else prompt)
        return prompts * n, max_tokens, max(len(text.split()), 1)

    async def _complete(self, body: dict[str, Any], chat: bool, request_id: str) -> web.Response:
        choices, tokens, prompt_tokens = self._shape(body, chat)
        await asyncio.sleep(self.first_token_delay_s + self.token_delay_s * tokens)
        text = "".join(f"tok{i} " for i in range(tokens))
        items = [
            {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "length"}
            if chat
            else {"index": i, "text": text, "logprobs": None, "finish_reason": "length"}
            for i in range(choices)
        ]
        return _json(
            {
                "id": f"{'chatcmpl' if chat else 'cmpl'}-{request_id}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": items,
                "usage": _usage(prompt_tokens, tokens * choices),
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chat: bool, request_id: str
    ) -> web.StreamResponse:
        choices, tokens, prompt_tokens = self._shape(body, chat)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{request_id}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
        }
        await asyncio.sleep(self.first_token_delay_s)
        for step in range(tokens):
            if step:
                await asyncio.sleep(self.token_delay_s)
            last = step == tokens - 1
            items = []
            for i in range(choices):
                item: dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": "length" if last else None}
                if chat:
                    item["delta"] = {"content": f"tok{step} "} | ({"role": "assistant"} if step == 0 else {})
                else:
                    item["text"] = f"tok{step} "
                items.append(item)
            await response.write(b"data: " + orjson.dumps(base | {"choices": items}) + b"\n\n")
        if include_usage:
            usage_chunk = base | {"choices": [], "usage": _usage(prompt_tokens, tokens * choices)}
            await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _invalid_field(body: dict[str, Any], chat: bool) -> str | None:
    """The first field vLLM's request model would refuse, among those the tests send wrong."""
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"{name}: not an integer"
    if not isinstance(body.get("stream", False), bool):
        return "stream: not a boolean"
    if chat and not isinstance(body.get("messages"), list):
        return "messages: not a list"
    return None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str, err_type: str = "BadRequestError") -> web.Response:
    return _json({"error": {"message": message, "type": err_type, "param": None, "code": status}}, status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--max-tokens", type=int, default=16, help="Tokens per answer when the request names none.")
    parser.add_argument("--scheduling-policy", choices=["fcfs", "priority"], default="fcfs")
    args = parser.parse_args()
    upstream = FakeUpstream(
        model=args.model,
        token_delay_s=args.token_delay_ms / 1000,
        default_max_tokens=args.max_tokens,
        scheduling_policy=args.scheduling_policy,
        record=False,
    )

    async def run() -> None:
        await upstream.serve(args.host, args.port)
        print(f"fake upstream serving {args.model} on http://{args.host}:{upstream.port}/v1", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
