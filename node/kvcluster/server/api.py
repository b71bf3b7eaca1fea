"""The public HTTP API: keys, listing, cluster view, health, metrics.

Keys travel in the URL path as percent-encoded bytes (``/v1/kv/app/config/db``
is the key ``app/config/db``; ``%00``..``%FF`` are raw bytes), values as raw
request and response bodies. Listings are JSON; a key or value that is not
UTF-8 makes its item ``"encoding": "base64"`` with both key and value
base64-encoded, so any byte string round-trips.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from aiohttp import web

from .config import NodeConfig
from .errors import BadRequest, NotFound, TooLarge
from .leases import put_bound
from .operations import Operation
from .router import Router

KV_PREFIX = "/v1/kv/"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_INT64 = (1 << 63) - 1
"""Versions are SQLite integers: a bigger number can match nothing and would overflow the query."""


def encode_item(key: bytes, value: bytes | None = None) -> dict[str, Any]:
    try:
        item: dict[str, Any] = {"key": key.decode("utf-8"), "encoding": "utf-8"}
        if value is not None:
            item["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        item = {"key": base64.b64encode(key).decode(), "encoding": "base64"}
        if value is not None:
            item["value"] = base64.b64encode(value).decode()
    return item


def raw_query(request: web.Request) -> dict[str, bytes]:
    """Query parameters as bytes: aiohttp decodes them as UTF-8, which would mangle binary keys."""
    out: dict[str, bytes] = {}
    qs = request.raw_path.partition("?")[2]
    for part in qs.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out[unquote_to_bytes(name.replace("+", " ")).decode("utf-8", "replace")] = unquote_to_bytes(
            value.replace("+", " ")
        )
    return out


def int_param(
    params: dict[str, bytes], name: str, default: int | None, lo: int, hi: int | None = None
) -> int | None:
    raw = params.get(name)
    if raw is None or raw == b"":
        return default
    try:
        value = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(f"{name} must be an integer") from None
    top = MAX_INT64 if hi is None else hi
    if value < lo or value > top:
        bounds = f"between {lo} and {top}"
        raise BadRequest(f"{name} must be {bounds}")
    return value


def consistency(params: dict[str, bytes]) -> bool:
    """True for linearizable (the default), False for a replica-local stale read."""
    raw = params.get("consistency", b"linearizable")
    if raw in (b"", b"linearizable", b"strong"):
        return True
    if raw == b"stale":
        return False
    raise BadRequest("consistency must be 'linearizable' or 'stale'")


class KVApi:
    def __init__(self, cfg: NodeConfig, router: Router) -> None:
        self.cfg = cfg
        self.router = router

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.put(KV_PREFIX + "{key:.*}", self.put),
            web.get(KV_PREFIX + "{key:.*}", self.get),
            web.delete(KV_PREFIX + "{key:.*}", self.delete),
            web.get("/v1/kv", self.list),
            web.get("/v1/routing", self.routing),
        ]

    async def routing(self, request: web.Request) -> web.Response:
        """Partition ranges and their leaders' URLs, so that clients can skip the forwarding hop."""
        return web.json_response(self.router.routing())

    def _leader_headers(self, result: dict[str, Any]) -> dict[str, str]:
        """Which node served the request: the partition's leader for writes and linearizable reads."""
        node = result.get("_node")
        url = self.router.node_url(int(node)) if node else None
        return {"X-KV-Leader": url} if url else {}

    def _key(self, request: web.Request) -> bytes:
        path = request.raw_path.partition("?")[0]
        key = unquote_to_bytes(path[len(KV_PREFIX) :])
        if not key:
            raise BadRequest("the key must not be empty")
        if len(key) > self.cfg.max_key_bytes:
            raise TooLarge(f"key is {len(key)} bytes; the limit is {self.cfg.max_key_bytes}")
        return key

    async def _body(self, request: web.Request) -> bytes:
        limit = self.cfg.max_value_bytes
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(f"value is {request.content_length} bytes; the limit is {limit}")
        if request.content_length is not None:
            return await request.read()  # length known and within the limit: one read, no chunk loop
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"value exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def put(self, request: web.Request) -> web.Response:
        key = self._key(request)
        params = raw_query(request)
        if_version = int_param(params, "if_version", None, 0)
        lease = int_param(params, "lease", None, 1)
        value = await self._body(request)
        op = Operation("put", key=key, value=value, if_version=if_version)
        result = await (self.router.execute(op) if lease is None else put_bound(self.router, op, lease))
        return web.json_response(
            {**encode_item(key), "version": result["version"]}, headers=self._leader_headers(result)
        )

    async def get(self, request: web.Request) -> web.Response:
        key = self._key(request)
        linearizable = consistency(raw_query(request))
        result = await self.router.execute(Operation("get", key=key, linearizable=linearizable))
        if not result["found"]:
            raise NotFound("key not found")
        headers = {"X-KV-Version": str(result["version"])}
        if linearizable:
            headers.update(self._leader_headers(result))
        return web.Response(
            body=bytes(result["value"]), content_type="application/octet-stream", headers=headers
        )

    async def delete(self, request: web.Request) -> web.Response:
        key = self._key(request)
        if_version = int_param(raw_query(request), "if_version", None, 0)
        result = await self.router.execute(Operation("delete", key=key, if_version=if_version))
        return web.json_response(
            {**encode_item(key), "deleted": True, "version": result["version"]},
            headers=self._leader_headers(result),
        )

    async def list(self, request: web.Request) -> web.Response:
        params = raw_query(request)
        prefix = params.get("prefix", b"")
        start = params.get("start", b"")
        if len(prefix) > self.cfg.max_key_bytes or len(start) > self.cfg.max_key_bytes + 1:
            raise TooLarge("prefix or start is longer than the key limit")
        limit = int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        assert limit is not None
        rows, more = await self.router.scan(prefix, start, limit, consistency(params))
        items = [{**encode_item(k, v), "version": ver} for k, v, ver in rows]
        nxt = quote(rows[-1][0] + b"\x00", safe="") if more and rows else None
        return web.json_response({"items": items, "count": len(items), "next": nxt})
