"""Retry policy, failover and error mapping against stub servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from kvcluster.client import (
    AsyncClient,
    BadRequest,
    Item,
    KVError,
    NotFound,
    OutcomeUnknown,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    VersionConflict,
    decode_item,
    parse_retry_after,
    quote_bytes,
)

from .conftest import StubHandler, dead_endpoint

Start = Callable[[StubHandler], Awaitable[str]]


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: object
) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status, headers=headers)


def value(data: bytes, version: int) -> web.Response:
    return web.Response(body=data, headers={"X-KV-Version": str(version)})


@dataclass
class Log:
    """What a stub saw: arrival times, methods and raw paths."""

    times: list[float] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def record(self, request: web.Request) -> int:
        self.times.append(time.monotonic())
        self.requests.append((request.method, request.raw_path))
        return len(self.requests)


# ---- Retry-After and 503 -------------------------------------------------------------------------------


async def test_get_honours_retry_after(stub_server: Start) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        if log.record(request) == 1:
            return error(503, "unavailable", "no leader", headers={"Retry-After": "1"})
        return value(b"v", 7)

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False, timeout=10) as kv:
        assert await kv.get("k") == Item(b"k", b"v", 7)
    assert len(log.requests) == 2
    assert log.times[1] - log.times[0] >= 0.95  # waited as told, not the ~50 ms backoff


async def test_put_retried_after_503(stub_server: Start) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        if log.record(request) == 1:
            return error(503, "unavailable", "no leader", headers={"Retry-After": "0"})
        return web.json_response({"key": "k", "encoding": "utf-8", "version": 3})

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False) as kv:
        assert await kv.put("k", b"v", if_version=2) == 3
    assert log.requests == [("PUT", "/v1/kv/k?if_version=2")] * 2


async def test_retry_after_beyond_the_deadline_gives_up_at_once(stub_server: Start) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        log.record(request)
        return error(503, "unavailable", "no leader", headers={"Retry-After": "30"})

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False, timeout=3.0) as kv:
        started = time.monotonic()
        with pytest.raises(Unavailable) as err:
            await kv.get("k")
    assert time.monotonic() - started < 2.0
    assert err.value.retry_after == 30
    assert err.value.message == "no leader"
    assert len(log.requests) == 1


async def test_503_exhausts_the_retry_budget(stub_server: Start) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        log.record(request)
        return error(503, "unavailable", "no leader", headers={"Retry-After": "0"})

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False, timeout=10.0, retries=3) as kv:
        with pytest.raises(Unavailable):
            await kv.get("k")
    assert len(log.requests) == 4  # the first attempt and three retries


# ---- writes whose outcome is unknown are never retried ----------------------------------------------


@dataclass
class DroppingServer:
    """Reads a whole HTTP request, then closes the connection without answering."""

    url: str = ""
    requests: int = 0


@pytest.fixture
async def dropping_server() -> AsyncIterator[DroppingServer]:
    stub = DroppingServer()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, val = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(val)
        await reader.readexactly(length)
        stub.requests += 1
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    stub.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield stub
    server.close()
    await server.wait_closed()


async def test_dropped_connection_after_a_write_is_outcome_unknown(
    dropping_server: DroppingServer, stub_server: Start
) -> None:
    healthy = Log()

    async def handler(request: web.Request) -> web.Response:
        healthy.record(request)
        return web.json_response({"key": "k", "encoding": "utf-8", "version": 1})

    fallback = await stub_server(handler)
    async with AsyncClient([dropping_server.url, fallback], follow_leaders=False) as kv:
        with pytest.raises(OutcomeUnknown) as err:
            await kv.put("k", b"value")
        assert err.value.code == "connection_lost"
        assert err.value.endpoint == dropping_server.url
        with pytest.raises(OutcomeUnknown):
            await kv.delete("k")
    # Sent exactly once each: neither aiohttp's own resend nor the client's failover repeated them.
    assert dropping_server.requests == 2
    assert healthy.requests == []


async def test_dropped_connection_on_a_read_fails_over(
    dropping_server: DroppingServer, stub_server: Start
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return value(b"v", 1)

    fallback = await stub_server(handler)
    async with AsyncClient([dropping_server.url, fallback], follow_leaders=False) as kv:
        assert await kv.get("k") == Item(b"k", b"v", 1)
        assert kv.preferred_endpoint == fallback
    assert dropping_server.requests >= 1


async def test_write_timeout_is_outcome_unknown(stub_server: Start) -> None:
    log = Log()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        log.record(request)
        await release.wait()
        return web.json_response({"version": 1})

    url = await stub_server(handler)
    try:
        async with AsyncClient([url, url], follow_leaders=False, attempt_timeout=0.5, timeout=5.0) as kv:
            with pytest.raises(OutcomeUnknown) as err:
                await kv.put("k", b"v")
            assert err.value.code == "timeout"
    finally:
        release.set()
    assert len(log.requests) == 1


async def test_read_timeout_is_retried(stub_server: Start) -> None:
    log = Log()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        if log.record(request) == 1:
            await release.wait()
        return value(b"v", 2)

    url = await stub_server(handler)
    try:
        async with AsyncClient([url], follow_leaders=False, attempt_timeout=0.3) as kv:
            assert await kv.get("k") == Item(b"k", b"v", 2)
    finally:
        release.set()
    assert len(log.requests) == 2


async def test_504_on_a_write_is_outcome_unknown(stub_server: Start) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        log.record(request)
        return error(504, "timeout", "the write was proposed but its outcome is unknown")

    url = await stub_server(handler)
    async with AsyncClient([url, url], follow_leaders=False) as kv:
        with pytest.raises(OutcomeUnknown) as err:
            await kv.delete("k")
    assert err.value.status == 504
    assert "outcome is unknown" in err.value.message
    assert len(log.requests) == 1


async def test_refused_connection_write_goes_to_the_next_endpoint(stub_server: Start) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        log.record(request)
        return web.json_response({"key": "k", "encoding": "utf-8", "version": 9})

    url = await stub_server(handler)
    async with AsyncClient([dead_endpoint(), url], follow_leaders=False) as kv:
        assert await kv.put("k", b"v") == 9
        assert kv.preferred_endpoint == url
        assert await kv.put("k", b"v") == 9
    assert len(log.requests) == 2


# ---- error mapping, token, encoding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", BadRequest),
        (401, "unauthorized", Unauthorized),
        (404, "not_found", NotFound),
        (413, "too_large", TooLarge),
        (500, "internal", ServerError),
        (403, "forbidden", KVError),
    ],
)
async def test_errors_map_to_types(stub_server: Start, status: int, code: str, cls: type[KVError]) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        log.record(request)
        return error(status, code, f"the {code} message", hint="extra")

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False) as kv:
        with pytest.raises(KVError) as err:
            await kv.delete("k")
    assert type(err.value) is cls
    assert (err.value.status, err.value.code, err.value.message) == (status, code, f"the {code} message")
    assert err.value.details == {"hint": "extra"}
    assert json.loads(err.value.to_json())["error"]["code"] == code
    assert len(log.requests) == 1  # definite answers are not retried


async def test_version_conflict_carries_the_current_version(stub_server: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return error(
            409, "version_conflict", "version conflict: the current version is 12", current_version=12
        )

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False) as kv:
        with pytest.raises(VersionConflict) as err:
            await kv.put("k", b"v", if_version=3)
    assert err.value.current_version == 12


async def test_non_json_error_bodies_are_tolerated(stub_server: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False, retries=1) as kv:
        with pytest.raises(ServerError) as err:
            await kv.get("k")  # a read retried once, then the proxy's answer is reported
        assert "bad gateway" in err.value.message
        with pytest.raises(OutcomeUnknown):
            await kv.put("k", b"v")  # a proxy failure after a write went out


async def test_token_is_sent_as_bearer(stub_server: Start) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return value(b"v", 1)

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False, token="s3cret") as kv:
        await kv.get("k")
    assert seen == ["Bearer s3cret"]


async def test_keys_are_percent_encoded_in_the_path(stub_server: Start) -> None:
    log = Log()

    async def handler(request: web.Request) -> web.Response:
        log.record(request)
        return web.json_response({"items": [], "count": 0, "next": None})

    url = await stub_server(handler)
    async with AsyncClient([url], follow_leaders=False) as kv:
        with pytest.raises(KVError):  # the stub's answer has no X-KV-Version header
            await kv.get(b"a/b ../%\x00\xff~-_.")
        await kv.scan(prefix=b"p/+", start=b"p/+\x00", limit=5, consistency="stale")
    assert log.requests[0] == ("GET", "/v1/kv/a%2Fb%20%2E%2E%2F%25%00%FF~-_%2E")
    assert log.requests[1] == ("GET", "/v1/kv?limit=5&prefix=p%2F%2B&start=p%2F%2B%00&consistency=stale")


def test_quote_bytes_escapes_all_but_unreserved() -> None:
    assert quote_bytes(b"AZaz09-_~") == "AZaz09-_~"
    assert quote_bytes(b"./ %") == "%2E%2F%20%25"
    assert quote_bytes(bytes([0, 255])) == "%00%FF"


def test_decode_item() -> None:
    assert decode_item({"key": "k", "value": "v", "version": 3, "encoding": "utf-8"}) == Item(b"k", b"v", 3)
    assert decode_item({"key": "/w==", "value": "AA==", "version": 4, "encoding": "base64"}) == Item(
        b"\xff", b"\x00", 4
    )
    with pytest.raises(KVError):
        decode_item({"key": "k", "value": "v", "version": 1, "encoding": "rot13"})


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 31
