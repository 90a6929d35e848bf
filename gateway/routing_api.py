"""The routing admin routes (admin key required; without keys, loopback only):

- GET /admin/routing: the routing settings in force;
- PUT or PATCH /admin/routing: merge the body into them (gateway.routing_update: what it leaves
  out stays) and switch; the router tells every part that reads them (gateway.router.on_update).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from gateway.errors import GatewayError, invalid_field
from gateway.router import Router
from gateway.routing_update import NotAnObject, merge_routing

log = logging.getLogger("tandem.gateway")


def routing_routes(router: Router, require_admin: Callable[[Request], object]) -> APIRouter:
    routes = APIRouter()

    @routes.get("/admin/routing")
    async def get_routing(request: Request) -> Response:
        require_admin(request)
        return Response(router.settings.model_dump_json(), media_type="application/json")

    @routes.api_route("/admin/routing", methods=["PUT", "PATCH"])
    async def put_routing(request: Request) -> Response:
        require_admin(request)
        try:
            new = merge_routing(router.settings, orjson.loads(await request.body()))
        except (orjson.JSONDecodeError, NotAnObject) as exc:
            raise GatewayError(400, f"request body: {exc}") from None
        except ValidationError as exc:
            raise invalid_field(exc) from None
        router.update(new)
        log.info("routing switched to policy %s", new.policy)
        return Response(new.model_dump_json(), media_type="application/json")

    return routes
