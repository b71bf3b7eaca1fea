"""The stores a benchmark loop can drive: kvcluster through its client, etcd through its JSON gateway.

Both are driven by the same loops over HTTP/1.1 with one pooled aiohttp session
per process, each store with the client behaviour its users get: kvcluster's
client sends a key to its partition's leader (the routing table), etcd's
clients spread requests over the members (its followers forward to the leader,
and serve linearizable reads themselves after a ReadIndex round).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from kvcluster.client import AsyncClient, KVError

STORES = ("kvcluster", "etcd")


class Store(Protocol):
    async def put(self, key: bytes, value: bytes) -> Any: ...

    async def get(self, key: bytes) -> Any: ...


class EtcdGateway:
    """etcd v3 puts and linearizable ranges over its JSON gateway, round-robin over the members."""

    def __init__(self, endpoints: list[str], timeout: float, pool_size: int) -> None:
        self._next = itertools.cycle(endpoints)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool_size))

    async def _post(self, path: str, body: dict[str, str]) -> dict[str, Any]:
        url = next(self._next) + path
        try:
            async with self._session.post(url, data=json.dumps(body), timeout=self._timeout) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise KVError(f"etcd answered {resp.status}: {data[:200]!r}", code=f"http_{resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KVError(f"etcd request failed: {exc!r}", code="unreachable") from None
        answer: dict[str, Any] = json.loads(data)
        return answer

    async def put(self, key: bytes, value: bytes) -> None:
        await self._post(
            "/v3/kv/put", {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
        )

    async def get(self, key: bytes) -> bytes | None:
        answer = await self._post("/v3/kv/range", {"key": base64.b64encode(key).decode()})
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    async def close(self) -> None:
        await self._session.close()


@contextlib.asynccontextmanager
async def open_store(
    kind: str, endpoints: list[str], token: str | None, timeout: float, pool_size: int
) -> AsyncIterator[Store]:
    if kind == "kvcluster":
        async with AsyncClient(endpoints, token, timeout=timeout, pool_size=pool_size) as kv:
            yield kv
    elif kind == "etcd":
        gw = EtcdGateway(endpoints, timeout, pool_size)
        try:
            yield gw
        finally:
            await gw.close()
    else:
        raise ValueError(f"unknown store {kind!r}; choose from {STORES}")
