"""A fast fake of vLLM's OpenAI server, for gateway tests and the overhead benchmark.

It answers /v1/chat/completions and /v1/completions (streaming or not, n > 1, several prompts,
stream_options.include_usage), the Responses API (/v1/responses: plain, streamed, background,
previous_response_id; retrieval and cancel by id, see FakeResponses), /v1/models, /health and a /metrics page with vLLM's
`vllm:num_requests_running` / `vllm:num_requests_waiting` gauges (with `serving_metrics=True`, also
vLLM's token counters, latency histograms and KV-cache gauge, for the dashboards' test). Like vLLM it answers errors in
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
from fake_vllm_metrics import FakeVllmMetrics

_ids = itertools.count()
MAX_N = 16384  # vLLM's default VLLM_MAX_N_SEQUENCES


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
    serves_tokenize: bool = True  # vLLM's /tokenize; off: a server without it
    metrics_status: int = 200  # another status: the load probe fails (the replica leaves routing)
    active: int = 0
    serving_metrics: bool = False  # vLLM's serving metrics on /metrics too (tests/fake_vllm_metrics.py)
    _failures: list[InjectedFailure] = field(default_factory=list)
    port: int = 0
    _responses: FakeResponses = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._responses = FakeResponses(self)
        self._vllm = FakeVllmMetrics(self.model) if self.serving_metrics else None

    @property
    def stored_responses(self) -> dict[str, dict[str, Any]]:
        """Responses API objects this engine stored, by id (vLLM keeps them in the engine's memory)."""
        return self._responses.store

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
        app.router.add_post("/v1/responses", self._responses.create)
        app.router.add_get("/v1/responses/{response_id}", self._responses.retrieve)
        app.router.add_post("/v1/responses/{response_id}/cancel", self._responses.cancel)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        if self.serves_tokenize:
            app.router.add_post("/tokenize", self._tokenize)
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
        if self.metrics_status != 200:
            return web.Response(status=self.metrics_status, text="unavailable")
        running = min(self.active, self.max_num_seqs)
        labels = f'{{engine="0",model_name="{self.model}"}}'
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{labels} {float(running)}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{labels} {float(self.active - running)}\n"
        )
        if self._vllm is not None:
            text += self._vllm.render().decode()
        return web.Response(text=text, content_type="text/plain")

    async def _receive(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        """A generation request's id and body, recorded; or the answer when it fails to parse or
        a failure was injected for it."""
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
        return request_id, body

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        received = await self._receive(request)
        if isinstance(received, web.Response):
            return received
        request_id, body = received
        chat = request.path.endswith("/chat/completions")
        problem = _invalid_field(body, chat)
        if problem is not None:
            return _error(400, f"1 validation error: {problem}", "Bad Request")
        if body.get("n", 1) < 1:  # vLLM checks values after its request model, with this type
            return _error(400, f"n must be at least 1, got {body['n']}.")
        if body.get("n", 1) > MAX_N:  # vLLM's cap (VLLM_MAX_N_SEQUENCES), same wording
            return _error(400, f"n must be at most {MAX_N}, got {body['n']}.")
        if body.get("model", self.model) != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if body.get("priority", 0) != 0 and self.scheduling_policy != "priority":
            return _error(400, "Priority scheduling is not enabled.")
        self.active += 1
        started = time.perf_counter()
        try:
            if body.get("stream"):
                response = await self._stream(request, body, chat, request_id)
            else:
                response = await self._complete(body, chat, request_id)
            self.completed.append(request_id)
            if self._vllm is not None:
                choices, tokens, prompt_tokens = self._shape(body, chat)
                elapsed = time.perf_counter() - started
                self._vllm.finished(prompt_tokens, choices * tokens, elapsed, self.active, self.max_num_seqs)
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

    async def _tokenize(self, request: web.Request) -> web.Response:
        """vLLM's /tokenize answer, counted by `fake_token_count` (the model name is checked)."""
        body = await request.json()
        if body.get("model") != self.model:
            return web.json_response({"error": {"message": "unknown model", "code": 404}}, status=404)
        count = fake_token_count(body.get("prompt", ""))
        return web.json_response({"count": count, "max_model_len": 4096, "tokens": list(range(count))})

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
        last_token_at = time.perf_counter()  # the request's arrival, then each token's
        await asyncio.sleep(self.first_token_delay_s)
        for step in range(tokens):
            if step:
                await asyncio.sleep(self.token_delay_s)
            if self._vllm is not None:
                now = time.perf_counter()
                if step:
                    self._vllm.next_token(now - last_token_at)
                else:
                    self._vllm.first_token(now - last_token_at)
                last_token_at = now
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


class FakeResponses:
    """The Responses API as vLLM serves it with VLLM_ENABLE_RESPONSES_API_STORE=1: create (plain,
    streamed as vLLM's event stream, background), `previous_response_id` read from this engine's
    own store, retrieval and cancel by id, vLLM's 404 for an id it does not hold."""

    def __init__(self, engine: FakeUpstream) -> None:
        self.engine = engine
        self.store: dict[str, dict[str, Any]] = {}
        self._background: dict[str, asyncio.Task[None]] = {}

    async def create(self, request: web.Request) -> web.StreamResponse:
        engine = self.engine
        received = await engine._receive(request)
        if isinstance(received, web.Response):
            return received
        request_id, body = received
        problem = _invalid_response_field(body)
        if problem is not None:
            return _error(400, f"1 validation error: {problem}", "Bad Request")
        if body.get("model", engine.model) != engine.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if body.get("priority", 0) != 0 and engine.scheduling_policy != "priority":
            return _error(400, "Priority scheduling is not enabled.")
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.store:
            return _not_found(previous)
        tokens = body.get("max_output_tokens") or engine.default_max_tokens
        response = self._response(body, f"resp_{request_id}", tokens)
        if previous is not None:
            response["usage"]["input_tokens"] += self.store[previous]["usage"]["total_tokens"]
            response["usage"]["total_tokens"] += self.store[previous]["usage"]["total_tokens"]
        stored = body.get("store", True)
        if body.get("background") and stored:
            return self._start_background(response, tokens)
        engine.active += 1
        try:
            if body.get("stream"):
                answer: web.StreamResponse = await self._stream(request, response, tokens)
            else:
                await asyncio.sleep(engine.first_token_delay_s + engine.token_delay_s * tokens)
                answer = _json(response)
            engine.completed.append(request_id)
        except (asyncio.CancelledError, ConnectionResetError):
            engine.aborted.append(request_id)
            raise
        finally:
            engine.active -= 1
        if stored:
            self.store[response["id"]] = response
        return answer

    async def retrieve(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        if response_id not in self.store:
            return _not_found(response_id)
        return _json(self.store[response_id])

    async def cancel(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        response = self.store.get(response_id)
        if response is None:
            return _not_found(response_id)
        if response["status"] not in ("queued", "in_progress"):
            return _error(400, "Cannot cancel a synchronous response.", "invalid_request_error", "response_id")
        response["status"] = "cancelled"
        task = self._background.pop(response_id, None)
        if task is not None:
            task.cancel()
        return _json(response)

    def _response(self, body: dict[str, Any], response_id: str, tokens: int) -> dict[str, Any]:
        prompt_tokens = max(len(str(body.get("input", "")).split()), 1)
        text = "".join(f"tok{i} " for i in range(tokens))
        message = {
            "id": f"msg_{response_id}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": None}],
        }
        return {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "model": self.engine.model,
            "status": "completed",
            "background": bool(body.get("background")),
            "max_output_tokens": tokens,
            "previous_response_id": body.get("previous_response_id"),
            "instructions": body.get("instructions"),
            "output": [message],
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "service_tier": "auto",
            "truncation": "disabled",
            "incomplete_details": None,
            "usage": {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt_tokens + tokens,
            },
        }

    def _start_background(self, response: dict[str, Any], tokens: int) -> web.Response:
        final = dict(response)
        response |= {"status": "queued", "output": [], "usage": None}
        self.store[response["id"]] = response

        async def run() -> None:
            await asyncio.sleep(self.engine.first_token_delay_s + self.engine.token_delay_s * tokens)
            self.store[response["id"]] = final
            self._background.pop(response["id"], None)

        self._background[response["id"]] = asyncio.create_task(run())
        return _json(response)

    async def _stream(self, request: web.Request, response: dict[str, Any], tokens: int) -> web.StreamResponse:
        """vLLM's event stream: each event named in an `event:` line and in its `type`, numbered."""
        engine = self.engine
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        sequence = itertools.count()
        started = response | {"status": "in_progress", "output": [], "usage": None}
        message = response["output"][0]
        part = {"type": "output_text", "text": "", "annotations": []}

        async def event(kind: str, **fields: Any) -> None:
            data = {"type": kind, "sequence_number": next(sequence)} | fields
            await answer.write(f"event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")

        await event("response.created", response=started)
        await event("response.in_progress", response=started)
        await asyncio.sleep(engine.first_token_delay_s)
        item = {"id": message["id"], "output_index": 0}
        await event(
            "response.output_item.added", output_index=0, item=message | {"status": "in_progress", "content": []}
        )
        await event("response.content_part.added", **item, content_index=0, part=part)
        for step in range(tokens):
            if step:
                await asyncio.sleep(engine.token_delay_s)
            await event(
                "response.output_text.delta",
                item_id=message["id"],
                output_index=0,
                content_index=0,
                delta=f"tok{step} ",
                logprobs=[],
            )
        text = message["content"][0]["text"]
        await event(
            "response.output_text.done", item_id=message["id"], output_index=0, content_index=0, text=text, logprobs=[]
        )
        await event("response.content_part.done", **item, content_index=0, part=part | {"text": text})
        await event("response.output_item.done", output_index=0, item=message)
        await event("response.completed", response=response)
        await answer.write_eof()
        return answer


def _invalid_response_field(body: dict[str, Any]) -> str | None:
    """The first field vLLM's ResponsesRequest would refuse, among those the tests send wrong."""
    if not isinstance(body.get("input"), (str, list)):
        return "input: Field required" if "input" not in body else "input: not a string or a list"
    value = body.get("max_output_tokens")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        return "max_output_tokens: not an integer"
    return None


def _not_found(response_id: str) -> web.Response:
    return _error(404, f"Response with id '{response_id}' not found.", "invalid_request_error", "response_id")


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


def fake_token_count(text: str) -> int:
    """The fake tokenizer of /tokenize: a word costs one token per started four letters, so word
    counts and token counts differ, as they do in a small real vocabulary."""
    return sum(-(-len(word) // 4) for word in text.split())


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str, err_type: str = "BadRequestError", param: str | None = None) -> web.Response:
    return _json({"error": {"message": message, "type": err_type, "param": param, "code": status}}, status)


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
