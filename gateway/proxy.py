"""The generation endpoints (/v1/chat/completions, /v1/completions), as one raw ASGI app.

Per request: authenticate, read the body (bounded), check the few fields routing needs, classify,
take a class slot, route, send to the replica and relay its answer. Raw ASGI rather than a
FastAPI route because the gateway must watch the client while it waits: a client that goes away
at any point (before the answer's headers, before the first token, mid-stream) cancels the work
here, and closing the upstream response aborts the generation on the engine.

Replies are the replica's own bytes: the only change is the `model` field, put back to the public
name when the replica serves the model under another name. For streamed requests the gateway asks
the replica for usage (stream_options.include_usage) so that tokens can be counted per key, and
drops that final usage event again for a client that did not ask for it: the client sees what vLLM
would have sent it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from gateway.auth import Client, KeyRing
from gateway.backends.base import (
    Backend,
    UpstreamBroken,
    UpstreamFailed,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.contract.classify import CLASS_HEADER, classify
from gateway.contract.config import TRAFFIC_CLASSES, GatewayConfig, ReplicaEndpoint, TrafficClass
from gateway.contract.policy import Endpoint, RequestFeatures
from gateway.contract.router import Route
from gateway.deadlines import DEADLINE_STATUS, DeadlineExceeded, DeadlineKind, Deadlines
from gateway.errors import GatewayError, error_body, internal_error
from gateway.logs import REQUEST_LOGGER
from gateway.metrics import GatewayMetrics
from gateway.model_groups import ModelGroup, ModelGroups
from gateway.protocol import features_of, parse_view
from gateway.router import Router
from gateway.usage import UsageLedger

log = logging.getLogger("tandem.gateway")
request_log = logging.getLogger(REQUEST_LOGGER)

# The ASGI types, as Starlette (whose app hands requests to the proxy) declares them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_CLASS_HEADER = CLASS_HEADER.encode()  # read from the request, and set on the answer with the class applied
_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_USAGE = b'"usage"'
# Scope key under which an in-process caller (gateway.batches.dispatch) passes the already
# authenticated Client on whose behalf it sends; the server never puts it in a client's scope.
INTERNAL_CLIENT = "tandem.client"
# A request goes to a second replica at most once, and only when the first cannot have started it.
MAX_RESENDS = 1


class ClientGone(Exception):
    """The client disconnected; there is nobody left to answer."""


_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def new_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id if it sent one, else one unique per process start and request
    (a random prefix and a counter: no syscall)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and 0 < len(value) <= 128:
            return value.decode("latin-1")
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


def upstream_request_id(request_id: str, headers: list[tuple[bytes, bytes]]) -> str:
    """The id a replica is sent for `request_id`: vLLM makes X-Request-Id its own request id, and
    two clients may send the same one (or one client twice), which must not collide inside the
    engine. The client's id gets a unique suffix, so vLLM's logs still show it; an id the gateway
    made is unique already."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and value.decode("latin-1") == request_id:
            return f"{request_id}.{_ID_PREFIX}{next(_id_counter):08x}"
    return request_id


@dataclass(frozen=True, slots=True)
class ModelRewrite:
    """Puts the public model name back into a replica's answer, byte for byte otherwise."""

    pattern: re.Pattern[bytes] | None
    replacement: bytes

    @classmethod
    def for_replica(cls, replica: ReplicaEndpoint, public: str) -> ModelRewrite:
        if replica.model == public:
            return cls(None, b"")
        upstream = re.escape(orjson.dumps(replica.model))
        return cls(re.compile(rb'"model"\s*:\s*' + upstream), b'"model":' + orjson.dumps(public))

    def __call__(self, data: bytes) -> bytes:
        return data if self.pattern is None else self.pattern.sub(self.replacement, data)


def model_rewrites(config: GatewayConfig) -> dict[str, ModelRewrite]:
    """Each replica's rewrite of its answers to its model's public name."""
    return {r.name: ModelRewrite.for_replica(r, group.name) for group in config.models for r in group.replicas}


UsageSink = Callable[[Mapping[str, Any]], None]
"""Takes a replica's token counts for the request (chat/completions names)."""


@dataclass(frozen=True, slots=True)
class RouteQuery:
    """What a strategy routes one request on: its body, features and class, the replicas that
    failed it already (`exclude`), and the router of the model it names."""

    body: dict[str, Any]
    features: RequestFeatures
    traffic_class: TrafficClass
    exclude: frozenset[str]
    router: Router


class EndpointStrategy(Protocol):
    """What differs between the generation endpoints; GenerationProxy does the rest (keys, body,
    classification, admission, deadlines, sending, relaying, accounting) the same for each."""

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def tokens_field(self) -> str:
        """The body field max_tokens_cap refuses a request by."""
        ...

    def route(self, query: RouteQuery) -> Route:
        """The replica for this request among its model's, never one that failed it already."""
        ...

    def payload(self, body: dict[str, Any], model: str, decision: Route, stream: bool) -> dict[str, Any]:
        """The body sent to the routed replica, which serves the model as `model`."""
        ...

    def whole_answer(self, data: bytes, replica: str, usage: UsageSink) -> None:
        """A whole 200 answer from `replica`: its usage handed to `usage`."""
        ...

    def events(self, chunk: bytes, replica: str, keep_usage: bool, usage: UsageSink) -> bytes:
        """Stream events holding usage: their usage handed to `usage`; the bytes to relay."""
        ...


def routed_payload(body: dict[str, Any], model: str, decision: Route) -> dict[str, Any]:
    """The client's body for the replica: its model name and the class priority routing chose."""
    payload = body | {"model": model}
    if decision.priority is not None:
        payload["priority"] = decision.priority
    return payload


@dataclass(frozen=True, slots=True)
class OpenAIGeneration:
    """/v1/chat/completions and /v1/completions: routed by the policy; a stream asks the replica
    for usage, and the usage-only event is dropped again for a client that did not ask for it."""

    endpoint: Literal["chat", "completions"]
    tokens_field: str = "max_tokens"

    def route(self, query: RouteQuery) -> Route:
        return query.router.route(query.features, query.traffic_class, exclude=query.exclude)

    def payload(self, body: dict[str, Any], model: str, decision: Route, stream: bool) -> dict[str, Any]:
        payload = routed_payload(body, model, decision)
        if stream:
            payload["stream_options"] = (body.get("stream_options") or {}) | {"include_usage": True}
        return payload

    def whole_answer(self, data: bytes, replica: str, usage: UsageSink) -> None:
        try:
            counts = orjson.loads(data).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(counts, dict):
            usage(counts)

    def events(self, chunk: bytes, replica: str, keep_usage: bool, usage: UsageSink) -> bytes:
        """Count the usage event's tokens; drop the event unless the client asked for usage."""
        kept: list[bytes] = []
        for event in chunk.split(b"\n\n"):
            if not event:
                continue
            usage_only = False
            if _USAGE in event and event.startswith(b"data: {"):
                try:
                    payload = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    payload = None
                if isinstance(payload, dict) and isinstance(payload.get("usage"), dict):
                    usage(payload["usage"])
                    usage_only = not payload.get("choices")
            if keep_usage or not usage_only:
                kept.append(event + b"\n\n")
        return b"".join(kept)


@dataclass(slots=True)
class _Exchange:
    """What is known about one request as it goes through, for its accounting: a request can end
    before it has a client (an unknown key) or a class (a bad body), so those start as None."""

    endpoint: Endpoint
    request_id: str  # the client's (response header, logs)
    started: float
    client: Client | None = None
    traffic_class: TrafficClass | None = None
    replica: str = "-"
    status: int = 0
    responding: bool = False  # response headers sent: errors can no longer be an HTTP status
    finished: bool = False  # last byte handed to the server: a disconnect now is the normal end
    upstream_id: str = ""  # what the replica is sent: unique (upstream_request_id)
    model: str = "-"  # the served name the client asked for (a name or an alias), once checked
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # streams: request received to first event sent


@dataclass(frozen=True, slots=True)
class _Classified:
    """A request past its key and its classification: what forwarding and relaying read."""

    exchange: _Exchange
    client: Client
    group: ModelGroup
    traffic_class: TrafficClass
    deadlines: Deadlines


def upstream_failure(replica: str, exc: UpstreamFailed) -> GatewayError:
    """What the client hears when a replica took a request and then failed or fell silent: the
    replica's name, never its address (the log keeps that). Neither is sent again: it may have run."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayError(504, f"replica {replica} sent no answer in time")
    return GatewayError(502, f"replica {replica} failed before answering")


def _every_replica_failed(last: str) -> GatewayError:
    # Names, not addresses: a replica's host and port stay in the gateway's log.
    return GatewayError(502, f"every replica failed before answering; last: replica {last} was unreachable")


class GenerationProxy:
    """ASGI app for one generation endpoint, whose own parts are its strategy's."""

    def __init__(
        self,
        strategy: EndpointStrategy,
        *,
        config: GatewayConfig,
        backends: Mapping[str, Backend],
        groups: ModelGroups,
        keyring: KeyRing,
        metrics: GatewayMetrics,
        ledger: UsageLedger,
    ) -> None:
        self.strategy = strategy
        self.endpoint = strategy.endpoint
        self._limits = config.settings.limits
        self._backends = backends
        self._rewrites = model_rewrites(config)
        self._groups = groups
        self._keyring = keyring
        self._metrics = metrics
        self._ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request. The app calls this ahead of the framework's middleware (see
        gateway.asgi), so it answers every failure itself, in the OpenAI envelope."""
        headers = scope["headers"]
        request_id = new_request_id(headers)
        exchange = _Exchange(
            self.endpoint, request_id, time.perf_counter(), upstream_id=upstream_request_id(request_id, headers)
        )
        task = asyncio.current_task()
        assert task is not None
        watcher: asyncio.Task[None] | None = None
        try:
            exchange.client = client = scope.get(INTERNAL_CLIENT) or self._keyring.authenticate(
                _header(headers, b"authorization")
            )
            with client.admitted():  # the key's rate and concurrency limits count every request
                try:
                    async with asyncio.timeout(self._limits.body_timeout_s):
                        body = await self._read_body(headers, receive)
                except TimeoutError:
                    raise GatewayError(
                        408, f"the request body did not arrive within {self._limits.body_timeout_s:g} s"
                    ) from None
                watcher = asyncio.create_task(self._watch_disconnect(receive, task, exchange))
                await self._handle(exchange, client, headers, body, send)
        except GatewayError as exc:
            if exchange.responding:
                raise
            await self._send_error(exchange, exc, send)
        except (ClientGone, asyncio.CancelledError):
            if task.cancelling() and not exchange.finished:
                if watcher is None or not watcher.done():
                    raise  # cancelled by the server, not by our watcher
                task.uncancel()
            exchange.status = 499  # nginx's "client closed request": nothing was sent
            self._metrics.disconnects(exchange.traffic_class or "-").inc()
        except Exception as exc:
            log.exception("request %s failed inside the gateway", exchange.request_id)
            if exchange.responding:
                raise  # headers are out: the server can only drop the connection
            await self._send_error(exchange, internal_error(exc), send)
        finally:
            if watcher is not None:
                watcher.cancel()
            self._account(exchange)

    async def _watch_disconnect(self, receive: Receive, task: asyncio.Task[Any], exchange: _Exchange) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not exchange.finished:
                    task.cancel()
                return

    async def _read_body(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        limit = self._limits.max_body_bytes
        declared = _header(headers, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise GatewayError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _handle(
        self, exchange: _Exchange, client: Client, headers: list[tuple[bytes, bytes]], raw: bytes, send: Send
    ) -> None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"request body is not valid JSON: {exc}") from None
        view = parse_view(self.endpoint, body)
        group = self._groups.for_request(view.model, client)
        exchange.model = view.model or group.name
        router = group.router
        features = features_of(self.endpoint, view, conversation=router.follows_conversations)
        cap = self._limits.max_tokens_cap
        if cap is not None and features.max_tokens is not None and features.max_tokens > cap:
            field = self.strategy.tokens_field
            raise GatewayError(400, f"{field} {features.max_tokens} is over this gateway's cap of {cap}", param=field)
        exchange.traffic_class = traffic_class = classify(
            features, router.settings, _requested_class(headers), client.default_class
        )
        wants_usage = bool(view.stream_options and view.stream_options.include_usage)
        deadlines = Deadlines.start(
            router.settings.limits[traffic_class],
            self._limits.stream_idle_timeout_s,
            elapsed_s=time.perf_counter() - exchange.started,
        )
        request = _Classified(exchange, client, group, traffic_class, deadlines)
        queued_at = time.perf_counter()
        async with group.gates[traffic_class].slot():
            queue_wait = time.perf_counter() - queued_at
            self._metrics.queue_wait(group.name, traffic_class).observe(queue_wait)
            await self._forward(request, features, body, wants_usage, queue_wait, send)

    async def _forward(
        self,
        request: _Classified,
        features: RequestFeatures,
        body: dict[str, Any],
        wants_usage: bool,
        queue_wait: float,
        send: Send,
    ) -> None:
        """Send to the routed replica. One that cannot have started the work (no connection) is
        skipped for another, once; one that took the request and failed is never sent it again."""
        exchange, traffic_class, deadlines = request.exchange, request.traffic_class, request.deadlines
        router = request.group.router
        failed: frozenset[str] = frozenset()
        last_failure = ""
        while True:
            try:
                decision = self.strategy.route(RouteQuery(body, features, traffic_class, failed, router))
            except GatewayError as exc:
                if failed:
                    raise _every_replica_failed(last_failure) from None
                if exc.status == 503 and await self._wait_for_a_replica(router, traffic_class, deadlines):
                    continue
                raise
            exchange.replica = decision.replica
            upstream_model = request.group.replicas[decision.replica].model
            payload = self.strategy.payload(body, upstream_model, decision, features.stream)
            board = router.board
            with board.tracking(decision.replica, traffic_class):
                self._metrics.overhead(traffic_class, decision.replica).observe(
                    time.perf_counter() - exchange.started - queue_wait
                )
                # Streams: the first token's deadline covers the headers and the first event.
                # Not streamed: vLLM sends the headers with the whole answer, so the total bounds it.
                first_at, first_kind = deadlines.first_token() if features.stream else (deadlines.total_at, "total")
                try:
                    async with asyncio.timeout_at(first_at):
                        upstream = await self._backends[decision.replica].send(
                            self.endpoint, payload, exchange.upstream_id
                        )
                except UpstreamUnavailable as exc:
                    # The client hears the replica's name; its address stays in the log.
                    log.warning("request %s: replica %s unreachable: %s", exchange.request_id, decision.replica, exc)
                    if exc.down:
                        board.mark_down(decision.replica)
                    failed |= {decision.replica}
                    last_failure = decision.replica
                    if len(failed) > MAX_RESENDS:
                        raise _every_replica_failed(last_failure) from None
                    self._metrics.retries(decision.replica).inc()
                    continue
                except UpstreamFailed as exc:
                    log.warning("request %s: replica %s: %s", exchange.request_id, decision.replica, exc)
                    raise upstream_failure(decision.replica, exc) from None
                except TimeoutError:
                    raise self._deadline_error(request, first_kind) from None
                exchange.status = upstream.status
                try:
                    if upstream.streaming:
                        await self._relay_stream(request, upstream, wants_usage, send, (first_at, first_kind))
                    else:
                        await self._relay_whole(request, upstream, send)
                finally:
                    await upstream.aclose()
            return

    async def _wait_for_a_replica(self, router: Router, traffic_class: TrafficClass, deadlines: Deadlines) -> bool:
        """A batch request that finds no replica in routing waits for one, as it would for a slot in
        its class queue (queue_timeout_s, within its total deadline), instead of failing at once:
        replicas leave routing when their load probe is refused or late, which a busy engine on a
        loaded machine can be for seconds. Interactive requests fail at once (503 + Retry-After),
        as a person is waiting. True: a replica is in routing again, route anew."""
        if traffic_class != "batch":
            return False
        wait_s = router.settings.limits[traffic_class].queue_timeout_s
        deadline_at = min(asyncio.get_running_loop().time() + wait_s, deadlines.total_at)
        return await router.board.wait_for_a_replica(deadline_at)

    def _deadline_error(self, request: _Classified, kind: DeadlineKind) -> GatewayError:
        """Count a deadline that fired before the answer's headers went out, as the error to send."""
        self._metrics.deadlines(request.traffic_class, kind).inc()
        return GatewayError(DEADLINE_STATUS, str(request.deadlines.exceeded(kind, request.exchange.replica)))

    def _response_headers(self, exchange: _Exchange) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-request-id", exchange.request_id.encode("latin-1")),
            (_CLASS_HEADER, (exchange.traffic_class or "-").encode()),
            (b"x-tandem-replica", exchange.replica.encode()),
        ]

    async def _relay_whole(self, request: _Classified, upstream: UpstreamResponse, send: Send) -> None:
        """A whole answer: read within the total deadline, usage counted, model name rewritten,
        then sent with its length."""
        exchange = request.exchange
        rewrite = self._rewrites[exchange.replica]
        try:
            async with asyncio.timeout_at(request.deadlines.total_at):
                data = await upstream.read()
        except TimeoutError:
            raise self._deadline_error(request, "total") from None
        except UpstreamBroken as exc:
            log.warning("request %s: replica %s broke off: %s", exchange.request_id, exchange.replica, exc)
            raise GatewayError(502, f"replica {exchange.replica} ended the answer early") from None
        if upstream.status == 200:
            self.strategy.whole_answer(data, exchange.replica, lambda usage: self._record_usage(request, usage))
            data = rewrite(data)
        else:
            self._metrics.errors(str(upstream.status), "upstream").inc()
        headers = [_JSON, (b"content-length", str(len(data)).encode()), *self._response_headers(exchange)]
        exchange.responding = True
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        exchange.finished = True
        await send({"type": "http.response.body", "body": data})

    async def _relay_stream(
        self,
        request: _Classified,
        upstream: UpstreamResponse,
        wants_usage: bool,
        send: Send,
        first: tuple[float, DeadlineKind],
    ) -> None:
        """An event stream, event by event: `first` bounds the first event, the idle timeout each
        later one, the total deadline everything (sends to a slow client included); usage taken out
        unless the client asked for it, a broken or late stream ended with an error event."""
        exchange, deadlines, traffic_class = request.exchange, request.deadlines, request.traffic_class
        rewrite = self._rewrites[exchange.replica]

        def record_usage(usage: Mapping[str, Any]) -> None:
            self._record_usage(request, usage)

        exchange.responding = True
        await send(
            {
                "type": "http.response.start",
                "status": upstream.status,
                "headers": _SSE + self._response_headers(exchange),
            }
        )
        events = upstream.events()
        when, kind = first
        started = False
        inter_token: Any = None  # the inter-token histogram's child, looked up at the first event
        last_sent_at = 0.0
        try:
            while True:
                try:
                    async with asyncio.timeout_at(when):
                        chunk = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise deadlines.exceeded(kind, exchange.replica) from None
                if _USAGE in chunk:
                    chunk = self.strategy.events(chunk, exchange.replica, wants_usage, record_usage)
                    if not chunk:
                        when, kind = deadlines.next_event()
                        continue
                try:
                    async with asyncio.timeout_at(deadlines.total_at):
                        await send({"type": "http.response.body", "body": rewrite(chunk), "more_body": True})
                except TimeoutError:
                    # A client too slow to take the answer within the total deadline: stop here,
                    # since nothing more (an error event included) can reach it in time.
                    self._metrics.deadlines(traffic_class, "total").inc()
                    exchange.status = DEADLINE_STATUS
                    return
                sent_at = time.perf_counter()
                if not started:
                    started = True
                    exchange.ttft_s = sent_at - exchange.started
                    self._metrics.ttft(traffic_class, exchange.replica).observe(exchange.ttft_s)
                    inter_token = self._metrics.inter_token(traffic_class, exchange.replica)
                else:
                    inter_token.observe(sent_at - last_sent_at)
                last_sent_at = sent_at
                when, kind = deadlines.next_event()
        except UpstreamBroken as exc:
            # The replica broke off mid-stream: the status is sent, so say it the way vLLM does.
            log.warning("request %s: replica %s broke off the stream: %s", exchange.request_id, exchange.replica, exc)
            await self._send_stream_error(exchange, 502, f"replica {exchange.replica} ended the stream early", send)
        except DeadlineExceeded as exc:
            log.warning("request %s on replica %s: %s", exchange.request_id, exchange.replica, exc)
            self._metrics.deadlines(traffic_class, exc.kind).inc()
            await self._send_stream_error(exchange, DEADLINE_STATUS, str(exc), send)
        exchange.finished = True
        await send({"type": "http.response.body", "body": b""})

    async def _send_stream_error(self, exchange: _Exchange, status: int, message: str, send: Send) -> None:
        """An error inside a started stream: an error event, then [DONE], as vLLM ends its own."""
        exchange.status = status
        self._metrics.errors(str(status), "gateway").inc()
        event = b"data: " + error_body(status, message) + b"\n\ndata: [DONE]\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})

    def _record_usage(self, request: _Classified, usage: Mapping[str, Any]) -> None:
        """A replica's token counts for this request (chat/completions names): metrics now, the
        ledger and the key's token budget when the request ends (`_account`)."""
        exchange = request.exchange
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        exchange.prompt_tokens = prompt if isinstance(prompt, int) and prompt > 0 else 0
        exchange.completion_tokens = completion if isinstance(completion, int) and completion > 0 else 0
        self._metrics.count_usage(request.client.name, request.group.name, request.traffic_class, usage)

    async def _send_error(self, exchange: _Exchange, exc: GatewayError, send: Send) -> None:
        exchange.status = exc.status
        self._metrics.errors(str(exc.status), "gateway").inc()
        body = exc.body()
        headers = [
            _JSON,
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
            *self._response_headers(exchange),
        ]
        exchange.responding = exchange.finished = True
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _account(self, exchange: _Exchange) -> None:
        """The request's metrics, usage ledger entry, token charge and log line, once it ended."""
        traffic_class = exchange.traffic_class or "-"
        client = exchange.client
        key = client.name if client else "-"
        self._metrics.requests(self.endpoint, traffic_class, exchange.replica, str(exchange.status), key).inc()
        elapsed = time.perf_counter() - exchange.started
        if exchange.replica != "-":
            self._metrics.latency(traffic_class, exchange.replica).observe(elapsed)
        if exchange.ttft_s is not None:
            self._metrics.recent.record(traffic_class, exchange.ttft_s, elapsed, exchange.completion_tokens)
        if client is not None:  # an unknown key is in the log, not in anybody's usage
            error = exchange.status >= 400 and exchange.status != 499  # 499: the client left
            tokens = (exchange.prompt_tokens, exchange.completion_tokens)
            self._ledger.record(key, exchange.model, traffic_class, *tokens, error)
            client.charge_tokens(sum(tokens))
        if request_log.isEnabledFor(logging.INFO):  # costs ~10% of the gateway's CPU: --log-level warning skips it
            fields = {
                "request_id": exchange.request_id,
                "upstream_id": exchange.upstream_id,
                "endpoint": self.endpoint,
                "key": key,
                "model": exchange.model,
                "class": traffic_class,
                "replica": exchange.replica,
                "status": exchange.status,
                "ttft_ms": None if exchange.ttft_s is None else round(exchange.ttft_s * 1000, 1),
                "prompt_tokens": exchange.prompt_tokens,
                "completion_tokens": exchange.completion_tokens,
                "duration_ms": round(elapsed * 1000, 1),
            }
            request_log.info(" ".join(f"{name}=%s" for name in fields), *fields.values(), extra={"fields": fields})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _requested_class(headers: list[tuple[bytes, bytes]]) -> TrafficClass | None:
    value = _header(headers, _CLASS_HEADER)
    if value is None:
        return None
    value = value.strip().lower()
    if value not in TRAFFIC_CLASSES:
        raise GatewayError(
            400, f"X-Tandem-Class must be one of {list(TRAFFIC_CLASSES)}, got {value!r}", param=CLASS_HEADER
        )
    return value
