"""The routing admin routes (admin key required; without keys, loopback only):

- GET /admin/routing: the routing settings in force;
- PUT or PATCH /admin/routing: merge the body into them (gateway.routing_update: what it leaves
  out stays) and switch every model's router; each tells the parts that read them
  (gateway.model_groups.ModelGroups.update). A model's own class limits stay over them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from gateway.errors import GatewayError, invalid_field
from gateway.model_groups import ModelGroups
from gateway.routing_update import NotAnObject, merge_routing

log = logging.getLogger("tandem.gateway")


def routing_routes(models: ModelGroups, require_admin: Callable[[Request], object]) -> APIRouter:
    routes = APIRouter()

    @routes.get("/admin/routing")
    async def get_routing(request: Request) -> Response:
        require_admin(request)
        return Response(models.settings.model_dump_json(), media_type="application/json")

    @routes.api_route("/admin/routing", methods=["PUT", "PATCH"])
    async def put_routing(request: Request) -> Response:
        require_admin(request)
        try:
            new = merge_routing(models.settings, orjson.loads(await request.body()))
        except (orjson.JSONDecodeError, NotAnObject) as exc:
            raise GatewayError(400, f"request body: {exc}") from None
        except ValidationError as exc:
            raise invalid_field(exc) from None
        models.update(new)
        log.info("routing switched to policy %s", new.policy)
        return Response(new.model_dump_json(), media_type="application/json")

    return routes
