"""The status page at ``/ui``: static files shipped in the package, reading the JSON API from the browser.

The page needs nothing the API does not already answer (``/v1/cluster``, ``/v1/admin/reshape``), so the
server only hands out files; there is no template and no build step.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from .errors import NotFound

UI_PREFIX = "/ui"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _asset(name: str) -> web.Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    files = resources.files(__package__).joinpath("ui")
    if suffix not in _TYPES or "/" in name or name.startswith("."):
        raise NotFound(f"no such file: {UI_PREFIX}/{name}")
    target = files.joinpath(name)
    if not target.is_file():
        raise NotFound(f"no such file: {UI_PREFIX}/{name}")
    return web.Response(
        body=target.read_bytes(),
        content_type=_TYPES[suffix],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def index(request: web.Request) -> web.Response:
    return _asset("index.html")


async def asset(request: web.Request) -> web.Response:
    return _asset(request.match_info["name"])


def routes() -> list[web.AbstractRouteDef]:
    return [
        web.get(UI_PREFIX, index),
        web.get(UI_PREFIX + "/", index),
        web.get(UI_PREFIX + "/{name}", asset),
    ]
