"""One batch line sent through the gateway's own generation path, in process.

The line goes to the same GenerationProxy as a live request, as an ASGI call marked batch
(X-Tandem-Class: batch) on behalf of the batch's owner: the same key limits and token usage,
the batch class's gate (so interactive work keeps priority and batch yielding applies), the
same routing policy and replica retries, the same metrics. Aborting a line is a client
disconnect as the proxy sees it: it closes the upstream answer and the engine aborts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.auth import Client
from gateway.proxy import INTERNAL_CLIENT, GenerationProxy, Message


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


class Dispatch(Protocol):
    async def __call__(
        self, url: str, body: bytes, client: Client, request_id: str, abort: asyncio.Event
    ) -> Reply | None: ...


class InProcessDispatch:
    """Calls the proxy of `url` directly; None when the line was aborted before its answer."""

    def __init__(self, proxies: Mapping[str, GenerationProxy]) -> None:
        self._proxies = proxies

    async def __call__(
        self, url: str, body: bytes, client: Client, request_id: str, abort: asyncio.Event
    ) -> Reply | None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": url,
            "raw_path": url.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-tandem-class", b"batch"),
                (b"x-request-id", request_id.encode()),
            ],
            "client": None,
            "server": None,
            INTERNAL_CLIENT: client,
        }
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await abort.wait()
            return {"type": "http.disconnect"}

        status: int | None = None
        chunks: list[bytes] = []
        complete = False

        async def send(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                complete = not message.get("more_body", False)

        await self._proxies[url](scope, receive, send)
        if status is None or not complete:
            return None
        return Reply(status, b"".join(chunks))
