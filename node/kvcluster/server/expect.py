"""``Expect:`` headers answered in the API's JSON error shape.

aiohttp checks ``Expect`` before any middleware runs and answers an unknown one in plain text, so the
error middleware never sees it; every match gets this handler instead (found by the API fuzzer).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractMatchInfo

from .errors import ApiError


class ExpectationFailed(ApiError):
    status = 417
    code = "bad_request"


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    expect = request.headers.get("Expect", "")
    if request.version >= (1, 1) and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response's size
        return None
    if request.version < (1, 1):
        return None  # HTTP/1.0 has no Expect; ignore it, as aiohttp does
    err = ExpectationFailed(f"unsupported Expect header {expect!r}; only '100-continue' is understood")
    return web.json_response(err.body(), status=err.status)


def install(app: web.Application) -> None:
    """Answer ``Expect`` with :func:`expect_continue` on every route, the unmatched ones included.

    Routes take their expect handler only at creation, and an unmatched path gets a fresh system
    route per request, so the router's resolution is wrapped to hand each match this handler.
    """
    resolve = app.router.resolve

    async def resolve_with_json_expect(request: web.Request) -> AbstractMatchInfo:
        info = await resolve(request)
        route = getattr(info, "route", None)
        if route is not None:
            route._expect_handler = expect_continue
        return info

    setattr(app.router, "resolve", resolve_with_json_expect)  # noqa: B010 - no public hook exists
