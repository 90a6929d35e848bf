"""The Responses API through the gateway: POST /v1/responses, GET /v1/responses/{id} and
POST /v1/responses/{id}/cancel.

Creating a response is a generation like a chat completion and goes through the same proxy
(gateway.proxy.GenerationProxy: key limits, classification on `max_output_tokens` and `stream`,
class admission, routing, disconnect abort, model-name rewrite, error envelope) with its own
strategy, ResponsesGeneration, for three differences:

- the event stream (`event: response.created` ... `response.completed`) always carries usage, in
  the final response object as input/output tokens, so nothing is added to the request for it;
- the id of every response a replica answers is remembered with that replica (a bounded,
  expiring `ResponseIdMap`), because vLLM keeps a stored response in that one engine's memory;
- a request naming `previous_response_id` goes to the replica that holds that response, whatever
  the routing policy prefers; an id the gateway does not know is answered with vLLM's own 404.

Retrieval and cancel (ResponseRetrieval) carry no body to classify: they are sent to the replica
holding the id and its answer is relayed (as an event stream for `?stream=true` on a background response).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from gateway.auth import KeyRing
from gateway.backends.base import Backend, UpstreamBroken, UpstreamFailed, UpstreamResponse, UpstreamUnavailable
from gateway.contract.config import GatewayConfig
from gateway.contract.router import Reject, Route, route_to
from gateway.errors import GatewayError, error_body
from gateway.load import LoadBoard
from gateway.metrics import GatewayMetrics
from gateway.model_groups import ModelGroups
from gateway.proxy import RouteQuery, UsageSink, model_rewrites, new_request_id, routed_payload, upstream_failure
from gateway.response_ids import ResponseIdMap

log = logging.getLogger("tandem.gateway")

RESPONSES_PATH = "/v1/responses"
_CREATED = b'"response.created"'
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def response_not_found(response_id: str) -> GatewayError:
    """vLLM's answer for a response id it does not hold (OpenAI's wording), made by the gateway."""
    return GatewayError(
        404, f"Response with id '{response_id}' not found.", param="response_id", err_type="invalid_request_error"
    )


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """The Responses API's usage (input/output tokens) in the names the token counters read."""
    return {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")}


@dataclass(frozen=True, slots=True)
class ResponsesGeneration:
    """POST /v1/responses, a strategy of GenerationProxy: a follow-up goes to the replica holding
    its previous response, every response id is remembered with its replica, and usage comes in
    the response object (nothing is added to the request for it, nothing taken out of the stream)."""

    ids: ResponseIdMap
    endpoint: Literal["responses"] = "responses"
    tokens_field: str = "max_output_tokens"

    def route(self, query: RouteQuery) -> Route:
        previous = query.body.get("previous_response_id")
        router = query.router
        if previous is None:
            return router.route(query.features, query.traffic_class, exclude=query.exclude)
        replica = self.ids.replica_of(previous)
        if replica is None:
            raise response_not_found(previous)
        if replica in query.exclude:  # the one replica that can answer failed before answering
            raise GatewayError(502, f"replica {replica}, which holds response '{previous}', is not answering")
        # Only the request's own model's replicas: a response of another model is not this one's to continue.
        decision = route_to(query.features, query.traffic_class, router.snapshot(), replica, router.settings)
        if isinstance(decision, Reject):
            raise GatewayError(decision.status, decision.message, headers={"Retry-After": "1"})
        return decision

    def payload(self, body: dict[str, Any], model: str, decision: Route, stream: bool) -> dict[str, Any]:
        return routed_payload(body, model, decision)

    def whole_answer(self, data: bytes, replica: str, usage: UsageSink) -> None:
        """A whole response (200): remember where it lives and count its tokens."""
        try:
            response = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(response, dict):
            self._remember_and_count(response, replica, usage)

    def events(self, chunk: bytes, replica: str, keep_usage: bool, usage: UsageSink) -> bytes:
        """Events holding a response object: its id is remembered from `response.created` on (so
        a background response can be retrieved or cancelled while it runs), its tokens counted
        from the final event. Every event is passed on: usage is part of the Responses stream."""
        for event in chunk.split(b"\n\n"):
            start = event.find(b"data: {")
            if start < 0 or (_CREATED not in event and b'"usage":{' not in event):
                continue
            try:
                payload = orjson.loads(event[start + 6 :])
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict) and isinstance(payload.get("response"), dict):
                response = payload["response"]
                if payload.get("type") in _FINAL_EVENTS or payload.get("type") == "response.created":
                    self._remember_and_count(response, replica, usage)
        return chunk

    def _remember_and_count(self, response: dict[str, Any], replica: str, usage: UsageSink) -> None:
        response_id = response.get("id")
        if isinstance(response_id, str):
            self.ids.remember(response_id, replica)
        counts = response.get("usage")
        if isinstance(counts, dict):
            usage(responses_usage(counts))


class ResponseRetrieval:
    """GET /v1/responses/{id} and POST /v1/responses/{id}/cancel: no body to classify, so no
    class, admission or routing; sent to the replica holding the id, its answer relayed."""

    def __init__(
        self,
        ids: ResponseIdMap,
        *,
        config: GatewayConfig,
        groups: ModelGroups,
        backends: Mapping[str, Backend],
        board: LoadBoard,
        keyring: KeyRing,
        metrics: GatewayMetrics,
    ) -> None:
        self.ids = ids
        self._backends = backends
        self._board = board
        self._keyring = keyring
        self._metrics = metrics
        self._rewrites = model_rewrites(config)
        self._groups = groups

    async def retrieve(self, request: Request, response_id: str) -> Response:
        """GET /v1/responses/{id}[?stream=true&starting_after=N], from the replica holding it."""
        path = f"/responses/{quote(response_id, safe='')}"
        if request.url.query:
            path += f"?{request.url.query}"
        return await self._to_holder(request, response_id, "GET", path, "responses.retrieve")

    async def cancel(self, request: Request, response_id: str) -> Response:
        """POST /v1/responses/{id}/cancel, on the replica running it."""
        path = f"/responses/{quote(response_id, safe='')}/cancel"
        return await self._to_holder(request, response_id, "POST", path, "responses.cancel")

    async def _to_holder(self, request: Request, response_id: str, method: str, path: str, label: str) -> Response:
        client = self._keyring.authenticate(request.headers.get("authorization"))
        status = "-"
        replica = "-"
        try:
            with client.admitted():
                holder = self.ids.replica_of(response_id)
                if holder is None or not client.may_use(
                    self._groups.by_replica[holder].config.served_names
                ):  # another model's: not this key's
                    raise response_not_found(response_id)
                replica = holder
                request_id = request.scope.get("state", {}).get("request_id") or new_request_id([])
                upstream = await self._call(replica, method, path, request_id)
                status = str(upstream.status)
                headers = {"X-Tandem-Replica": replica}
                if not upstream.streaming:
                    try:
                        data = await upstream.read()
                    except UpstreamBroken:
                        raise GatewayError(502, f"replica {replica} ended the answer early") from None
                    finally:
                        await upstream.aclose()
                    if upstream.status == 200:
                        data = self._rewrites[replica](data)
                    return Response(data, status_code=upstream.status, media_type="application/json", headers=headers)
                return StreamingResponse(
                    self._relay_events(upstream, replica), media_type="text/event-stream", headers=headers
                )
        except GatewayError as exc:
            status = str(exc.status)
            raise
        finally:
            self._metrics.requests(label, "-", replica, status, client.name).inc()

    async def _call(self, replica: str, method: str, path: str, request_id: str) -> UpstreamResponse:
        try:
            return await self._backends[replica].call(method, path, request_id)
        except UpstreamUnavailable as exc:
            if exc.down:
                self._board.mark_down(replica)
            raise GatewayError(502, f"replica {replica}, which holds this response, is not answering") from None
        except UpstreamFailed as exc:
            raise upstream_failure(replica, exc) from None

    async def _relay_events(self, upstream: UpstreamResponse, replica: str) -> AsyncIterator[bytes]:
        """A retrieved event stream (background responses), model name rewritten; a client that
        leaves closes the upstream stream."""
        rewrite = self._rewrites[replica]
        try:
            async for chunk in upstream.events():
                yield rewrite(chunk)
        except UpstreamBroken:
            yield b"data: " + error_body(502, f"replica {replica} ended the stream early") + b"\n\n"
        finally:
            with contextlib.suppress(Exception):
                await upstream.aclose()


def add_responses_routes(app: FastAPI, retrieval: ResponseRetrieval) -> None:
    """The retrieval and cancel routes (FastAPI routes: they carry path parameters and no body)."""

    @app.get(RESPONSES_PATH + "/{response_id}")
    async def retrieve_response(request: Request, response_id: str) -> Response:
        return await retrieval.retrieve(request, response_id)

    @app.post(RESPONSES_PATH + "/{response_id}/cancel")
    async def cancel_response(request: Request, response_id: str) -> Response:
        return await retrieval.cancel(request, response_id)
