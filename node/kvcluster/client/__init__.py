"""Python client of kvcluster: :class:`AsyncClient` (asyncio) and :class:`SyncClient` (blocking).

It sits low in the layer stack (the standard library and aiohttp, with
aiohttp's own ``yarl`` for pre-encoded URLs; never ``kvcluster.server``), so
the CLI, the benchmarks, the torture tests and the operator can all use it
without pulling in the server.

    async with AsyncClient(["http://127.0.0.1:7001"]) as kv:
        version = await kv.put("app/config", b"...")
        item = await kv.get("app/config")          # Item(key, value, version) or None
        await kv.put("app/config", b"new", if_version=item.version)   # compare-and-set
"""

from .aio import AsyncClient, Consistency, normalise_endpoint, parse_retry_after
from .codec import Item, Key, Page, decode_item, encode_item, quote_bytes
from .errors import (
    BadRequest,
    Conflict,
    KVError,
    NotFound,
    OutcomeUnknown,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    VersionConflict,
)
from .sync import SyncClient
from .watch import Watch, WatchEvent

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Conflict",
    "Consistency",
    "Item",
    "KVError",
    "Key",
    "NotFound",
    "OutcomeUnknown",
    "Page",
    "ServerError",
    "SyncClient",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "VersionConflict",
    "Watch",
    "WatchEvent",
    "decode_item",
    "encode_item",
    "normalise_endpoint",
    "parse_retry_after",
    "quote_bytes",
]
