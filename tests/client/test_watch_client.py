"""The watch iterator: exactly-once across reconnects (stub servers that resend), and the sync face."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from kvcluster.client import AsyncClient, BadRequest, SyncClient, WatchEvent
from kvcluster.client.watchtoken import Segment, encode
from kvcluster.keyspace import HASH_SPACE, key_hash

from .conftest import NodeCluster

Start = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]


def put(key: str, rev: int) -> dict[str, Any]:
    return {
        "type": "put",
        "key": key,
        "encoding": "utf-8",
        "value": f"v{rev}",
        "version": rev,
        "revision": rev,
    }


async def stream(request: web.Request, lines: list[dict[str, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for line in lines:
        await resp.write(json.dumps(line).encode() + b"\n")
    return resp  # ends the stream: the client reconnects


async def test_events_resent_after_the_token_are_yielded_once(stub_server: Start) -> None:
    froms: list[str | None] = []

    async def first(request: web.Request) -> web.StreamResponse:
        froms.append(request.query.get("from"))
        return await stream(
            request,
            [put("a", 1), put("b", 1), {"type": "progress", "token": "1.T1"}, put("a", 2), put("c", 1)],
        )

    async def second(request: web.Request) -> web.StreamResponse:
        froms.append(request.query.get("from"))
        # Resumed from T1: a@2 and c@1 come again, then what is new, and a binary key.
        return await stream(
            request,
            [
                put("a", 2),
                put("c", 1),
                put("a", 3),
                {"type": "progress", "token": "1.T2"},
                {"type": "delete", "key": "/w==", "encoding": "base64", "version": 4, "revision": 4},
                {"type": "compacted", "revision": 9},
            ],
        )

    urls = [await stub_server(first), await stub_server(second)]
    async with AsyncClient(urls) as kv:
        watch = kv.watch(prefix="")
        got = [await anext(watch) for _ in range(7)]
        assert watch.token == "1.T2"
        await watch.aclose()
    assert [(e.type, e.key, e.revision) for e in got] == [
        ("put", b"a", 1),
        ("put", b"b", 1),
        ("put", b"a", 2),
        ("put", b"c", 1),
        ("put", b"a", 3),
        ("delete", b"\xff", 4),
        ("compacted", b"", 9),
    ]
    assert got[0].value == b"v1" and got[5].value is None
    assert froms == [None, "1.T1"]


async def test_a_refused_watch_raises_and_a_failing_node_is_skipped(stub_server: Start) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": "unavailable", "message": "down"}}, status=503)

    async def refusing(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": "bad_request", "message": "from: bad token"}}, status=400)

    urls = [await stub_server(broken), await stub_server(refusing)]
    async with AsyncClient(urls) as kv:
        with pytest.raises(BadRequest, match="bad token"):
            await anext(kv.watch(key="k", start="1.x"))
    with pytest.raises(ValueError):
        AsyncClient(urls).watch(key="k", prefix="p")


def test_sync_watch_on_a_real_cluster(cluster: NodeCluster, prefix: bytes) -> None:
    with SyncClient(cluster.endpoints) as kv:
        versions = [kv.put(prefix + f"{i}".encode(), b"x") for i in range(3)]
        with kv.watch(prefix=prefix, start=0) as watch:
            got: list[WatchEvent] = [next(watch) for _ in range(3)]
            later = kv.put(prefix + b"0", b"y")
            live = next(watch)
        assert sorted((e.key, e.revision) for e in got) == sorted(
            (prefix + f"{i}".encode(), v) for i, v in enumerate(versions)
        )
        assert (live.type, live.key, live.value, live.revision) == ("put", prefix + b"0", b"y", later)


async def test_a_token_that_does_not_cover_a_change_yet_keeps_it_remembered(stub_server: Start) -> None:
    """After a resume, the first tokens may stand at the old position in partitions not heard from yet."""
    ha, hb = key_hash(b"a"), key_hash(b"b")
    cut = (ha + hb) // 2 + 1  # a and b in different segments
    low, high = ("a", "b") if ha < hb else ("b", "a")

    def token(low_rev: int, high_rev: int) -> str:
        return encode([Segment(0, cut, low_rev), Segment(cut, HASH_SPACE, high_rev)])

    revs = {"a": 5, "b": 7}
    t0 = token(0, 0)
    t1 = token(revs[low], 0)  # covers the low key's change only
    t2 = token(revs[low], revs[high])

    async def first(request: web.Request) -> web.StreamResponse:
        return await stream(request, [{"type": "progress", "token": t0}, put("a", 5), put("b", 7)])

    async def second(request: web.Request) -> web.StreamResponse:
        assert request.query["from"] == t0
        lines = [put(low, revs[low]), {"type": "progress", "token": t1}, put(high, revs[high])]
        return await stream(request, [*lines, {"type": "progress", "token": t2}, put("a", 9)])

    urls = [await stub_server(first), await stub_server(second)]
    async with AsyncClient(urls) as kv:
        watch = kv.watch(prefix="")
        got = [await anext(watch) for _ in range(3)]
        await watch.aclose()
    assert [(e.key, e.revision) for e in got] == [(b"a", 5), (b"b", 7), (b"a", 9)]
