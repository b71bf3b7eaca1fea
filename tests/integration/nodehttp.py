"""Small HTTP helpers for tests that talk to nodes directly (no client library in between)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp


def kv_url(base: str, key: bytes | str, **query: Any) -> str:
    raw = key.encode() if isinstance(key, str) else key
    url = f"{base}/v1/kv/{quote(raw, safe='')}"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


async def put(
    session: aiohttp.ClientSession, base: str, key: bytes | str, value: bytes, **query: Any
) -> tuple[int, Any]:
    async with session.put(kv_url(base, key, **query), data=value) as resp:
        return resp.status, await resp.json()


async def get(
    session: aiohttp.ClientSession, base: str, key: bytes | str, **query: Any
) -> tuple[int, bytes, int | None]:
    async with session.get(kv_url(base, key, **query)) as resp:
        body = await resp.read()
        version = resp.headers.get("X-KV-Version")
        return resp.status, body, int(version) if version else None
