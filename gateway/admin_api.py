"""The admin routes for keys and usage (admin key required; without keys, loopback only):

- GET /admin/keys: every key, by name, with its source, limits and expiry (never a secret);
- POST /admin/keys: add a key (gateway.key_admin.NewKey); the answer holds the key, once;
- PATCH /admin/keys/{name}: change a stored key's models (gateway.key_admin.KeyChange);
- POST /admin/keys/{name}/rotate: a new secret for a stored key, the old one refused from now on;
- DELETE /admin/keys/{name}: revoke a stored key;
- GET /admin/usage?since=T[&until=T]: the usage ledger's totals per key, model and class.

Answers that carry a secret are marked `Cache-Control: no-store`, so no proxy or client cache
keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from gateway.errors import GatewayError, invalid_field
from gateway.key_admin import IssuedKey, KeyAdmin, KeyChange, NewKey
from gateway.usage import UsageLedger

_MAX_BODY_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store"}
Body = TypeVar("Body", bound=BaseModel)


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _dump(model: BaseModel) -> dict[str, object]:
    return model.model_dump(mode="json")


def _issued(issued: IssuedKey, status: int = 200) -> Response:
    """The one answer that reveals a key: its holder must get it, and nothing may keep it."""
    return _json({**_dump(issued), "key": issued.key.get_secret_value()}, status=status, headers=_NO_STORE)


async def _body(request: Request, model: type[Body]) -> Body:
    body = await request.body()
    if len(body) > _MAX_BODY_BYTES:
        raise GatewayError(413, f"request body is over the limit of {_MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate(orjson.loads(body or b"{}"))
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"request body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise invalid_field(exc) from None


def admin_routes(keys: KeyAdmin, ledger: UsageLedger, require_admin: Callable[[Request], object]) -> APIRouter:
    router = APIRouter()

    @router.get("/admin/keys")
    async def list_keys(request: Request) -> Response:
        require_admin(request)
        return _json({"object": "list", "data": [_dump(info) for info in keys.list()]})

    @router.post("/admin/keys")
    async def add_key(request: Request) -> Response:
        require_admin(request)
        return _issued(keys.add(await _body(request, NewKey)), status=201)

    @router.patch("/admin/keys/{name}")
    async def change_key(request: Request, name: str) -> Response:
        require_admin(request)
        return _json(_dump(keys.change(name, await _body(request, KeyChange))))

    @router.post("/admin/keys/{name}/rotate")
    async def rotate_key(request: Request, name: str) -> Response:
        require_admin(request)
        return _issued(keys.rotate(name))

    @router.delete("/admin/keys/{name}")
    async def revoke_key(request: Request, name: str) -> Response:
        require_admin(request)
        return _json({**_dump(keys.revoke(name)), "revoked": True})

    @router.get("/admin/usage")
    async def usage(
        request: Request,
        since: float = Query(0.0, ge=0, description="Unix time; the ledger counts by the hour."),
        until: float | None = Query(None, ge=0),
    ) -> Response:
        require_admin(request)
        rows = await ledger.report(since, until)
        data = [
            {
                "key": r.key,
                "model": r.model,
                "traffic_class": r.traffic_class,
                "requests": r.requests,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "errors": r.errors,
            }
            for r in rows
        ]
        return _json({"object": "list", "since": since, "until": until or time.time(), "data": data})

    return router
