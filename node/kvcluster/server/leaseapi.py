"""``/v1/leases``: grant, keep alive and revoke leases (issue 10); see ``leases.py`` for the design."""

from __future__ import annotations

import json

from aiohttp import web

from . import leases
from .errors import BadRequest
from .router import Router


def lease_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest("the lease id must be a positive integer")
    return int(raw)


class LeaseApi:
    def __init__(self, router: Router) -> None:
        self.router = router

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post("/v1/leases", self.grant),
            web.post("/v1/leases/{id}/keepalive", self.keepalive),
            web.delete("/v1/leases/{id}", self.revoke),
        ]

    async def grant(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body must be JSON") from None
        return web.json_response(await leases.grant(self.router, leases.parse_ttl(body)))

    async def keepalive(self, request: web.Request) -> web.Response:
        return web.json_response(await leases.keepalive(self.router, lease_id(request)))

    async def revoke(self, request: web.Request) -> web.Response:
        return web.json_response(await leases.revoke(self.router, lease_id(request)))
