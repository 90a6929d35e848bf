"""Send one streaming completion and time it: the only code that touches the network per request.

Timing follows vLLM's `endpoint_request_func.py` so the two clients' numbers mean the same:
TTFT is the arrival of the first chunk carrying `choices`, each later such chunk adds one
inter-token gap (ITL), and the request's latency ends at its last `choices` chunk (the trailing
usage chunk carries no token). Token counts come only from the server's `usage`
(`stream_options.include_usage`). A request that fails in any way is returned as a record with
an error type, never raised and never dropped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from gateway.contract.classify import CLASS_HEADER
from tuner.bench.config import Endpoint
from tuner.bench.prompts import Prompt

_ERROR_TEXT_LIMIT = 300


@dataclass(slots=True)
class RequestRecord:
    """What one request did, in seconds of `time.perf_counter()`."""

    stream: str
    start: float = 0.0
    end: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    error_type: str | None = None
    error: str = ""

    @property
    def success(self) -> bool:
        return self.error_type is None

    def fail(self, error_type: str, message: str) -> RequestRecord:
        self.error_type = error_type
        self.error = message[:_ERROR_TEXT_LIMIT]
        return self


class _SSELines:
    """Incremental Server-Sent Events reader yielding each `data:` payload as bytes.

    OpenAI-compatible servers send one JSON object per `data:` line, so a line is an event.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        payloads: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            line = buffer[start:end]
            start = end + 1
            if line.startswith(b"data:"):
                payloads.append(line[5:].strip())
        self._buffer = buffer[start:]
        return payloads


class StreamingClient:
    """Builds requests for one endpoint and times them over a shared aiohttp session."""

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
        self._endpoint = endpoint
        self._session = session
        self._url = endpoint.request_url
        self.headers = {"Content-Type": "application/json", **_auth_headers(), **endpoint.headers}
        self._timeout = aiohttp.ClientTimeout(total=endpoint.timeout_s)

    def payload(self, prompt: Prompt, *, ignore_eos: bool) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self._endpoint.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._endpoint.api == "completions":
            body |= {"prompt": prompt.text, "max_tokens": prompt.output_len}
        else:
            body |= {
                "messages": [{"role": "user", "content": prompt.text}],
                "max_completion_tokens": prompt.output_len,
            }
        if ignore_eos:
            body["ignore_eos"] = True
        return body

    async def send(self, prompt: Prompt, *, stream: str, traffic_class: str | None, ignore_eos: bool) -> RequestRecord:
        record = await self._attempt(prompt, RequestRecord(stream=stream), traffic_class, ignore_eos)
        record.end = time.perf_counter()
        return record

    async def _attempt(
        self, prompt: Prompt, record: RequestRecord, traffic_class: str | None, ignore_eos: bool
    ) -> RequestRecord:
        headers = self.headers if traffic_class is None else {**self.headers, CLASS_HEADER: traffic_class}
        data = orjson.dumps(self.payload(prompt, ignore_eos=ignore_eos))
        responded = False
        record.start = time.perf_counter()
        try:
            async with self._session.post(self._url, data=data, headers=headers, timeout=self._timeout) as response:
                responded = True
                if response.status != 200:
                    return record.fail(f"http_{response.status}", _error_message(await response.read(), response))
                return await self._read_stream(response, record)
        except TimeoutError:
            return record.fail("timeout", f"no complete response within {self._endpoint.timeout_s:g} s")
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            kind = "stream_cut" if responded else "connection"
            return record.fail(kind, f"{type(exc).__name__}: {exc}")
        except aiohttp.ClientError as exc:
            return record.fail("connection", f"{type(exc).__name__}: {exc}")
        except orjson.JSONDecodeError as exc:
            return record.fail("bad_stream", f"unparseable stream event: {exc}")
        except Exception as exc:  # a benchmark counts what it did not foresee, it does not stop
            return record.fail("client_error", f"{type(exc).__name__}: {exc}")

    async def _read_stream(self, response: aiohttp.ClientResponse, record: RequestRecord) -> RequestRecord:
        lines = _SSELines()
        last_token = record.start
        first = True
        done = False
        usage: dict[str, int] | None = None
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            for payload in lines.feed(chunk):
                if payload == b"[DONE]":
                    done = True
                    continue
                event = orjson.loads(payload)
                if not isinstance(event, dict):
                    return record.fail("bad_stream", f"stream event is not a JSON object: {payload[:80]!r}")
                if error := event.get("error"):
                    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                    return record.fail("stream_error", message)
                if event.get("choices"):
                    if first:
                        record.ttft = now - record.start
                        first = False
                    else:
                        record.itl.append(now - last_token)
                    last_token = now
                if event.get("usage"):
                    usage = event["usage"]
        if not done:
            return record.fail("stream_cut", "stream ended before data: [DONE]")
        if first:
            return record.fail("no_tokens", "stream finished without a single token")
        if usage is None or usage.get("completion_tokens") is None:
            return record.fail("missing_usage", "no usage in the stream (stream_options.include_usage ignored?)")
        record.latency = last_token - record.start
        record.output_tokens = int(usage["completion_tokens"])
        record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        return record


def _auth_headers() -> dict[str, str]:
    """Bearer auth from OPENAI_API_KEY, as the OpenAI SDK and vLLM's client do; never logged."""
    api_key = os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _error_message(body: bytes, response: aiohttp.ClientResponse) -> str:
    """The OpenAI error envelope's message when there is one, else the start of the body."""
    try:
        error = orjson.loads(body).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return body.decode(errors="replace").strip() or (response.reason or f"HTTP {response.status}")


async def served_models(base_url: str, timeout_s: float = 10.0) -> list[str]:
    """Model ids the endpoint serves (GET /models), first one first."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
        async with session.get(f"{base_url.rstrip('/')}/models", headers=_auth_headers()) as response:
            response.raise_for_status()
            body = orjson.loads(await response.read())
    return [card["id"] for card in body.get("data", [])]
