"""The asyncio client: one pooled aiohttp session, endpoint failover, safe retries.

Any node accepts any request and forwards it to the partition's leader
itself, so "following leader hints" is the server's job; the client's job is
to keep talking to *some* live node. It remembers the endpoint that answered
last (the preferred one), rotates to the next endpoint when one cannot be
reached, and retries with exponential backoff and jitter within one overall
deadline per call.

Retries must never apply a write twice. Reads and listings are idempotent
and are retried on 503, 504, timeouts and connection failures. A write
(``put``/``delete``) is retried only when it certainly did not take effect:

* the request never left this process (connection refused, DNS failure,
  connect timeout, a pool-wait timeout): an aiohttp trace hook records the
  moment headers start to go out, so "not sent" is known, not guessed;
* a 503 answer: the server answers 503 only when no leader took the request.

After a write was sent, a timeout, a reset or a dropped connection raise
:class:`OutcomeUnknown`. aiohttp would by itself resend PUT and DELETE once
when a connection drops (HTTP calls them idempotent); a request middleware
switches that off for writes, because a compare-and-set resent after it
succeeded would report a spurious conflict, and an unconditional put resent
later could overwrite another client's newer value.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import email.utils
import json
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Any, Literal

import aiohttp
import msgpack
from yarl import URL

from kvcluster.keyspace import key_hash

from .codec import Item, Key, Page, decode_page, quote_bytes, quote_cursor, to_bytes
from .errors import (
    KVError,
    NotFound,
    OutcomeUnknown,
    Unavailable,
    error_from_response,
)
from .watch import Watch

Consistency = Literal["linearizable", "stale"]

DEFAULT_TIMEOUT = 15.0
"""Overall deadline of one call, retries included (the server's own request timeout is 5 s)."""
DEFAULT_ATTEMPT_TIMEOUT = 7.0
"""Per attempt: longer than the server's request timeout, so the server answers (503: safe to
retry, 504: unknown) before the client gives up on a write, which it then cannot retry."""
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_RETRIES = 8
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0


def normalise_endpoint(endpoint: str) -> str:
    """``host:port`` -> ``http://host:port``; no trailing slash."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise ValueError("empty endpoint")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return endpoint


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(slots=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    endpoint: str


class _AttemptState:
    """Per-request trace context: did any byte of the request start to go out?"""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


class _DroppedAfterSend(aiohttp.ClientConnectionError):
    """Stands in for ServerDisconnectedError/ClientOSError on writes so aiohttp does not resend them."""


async def _no_resend(
    req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    try:
        return await handler(req)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise  # never connected: aiohttp does not retry these, and we may
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        raise _DroppedAfterSend(f"{type(exc).__name__}: {exc}") from exc


async def _on_headers_sent(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    state = ctx.trace_request_ctx
    if isinstance(state, _AttemptState):
        state.sent = True


ROUTES_TTL_S = 10.0
UNREACHABLE_FOR_S = 30.0


class RoutingTable:
    """Hash ranges of the partitions and the URL of each one's leader (a hint, not the truth)."""

    def __init__(self, starts: list[int], ends: list[int], leaders: list[str | None]) -> None:
        self.starts, self.ends, self.leaders = starts, ends, leaders

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RoutingTable:
        parts = sorted(body["partitions"], key=lambda p: int(p["start"], 16))
        return cls(
            [int(p["start"], 16) for p in parts],
            [int(p["end"], 16) for p in parts],
            [p.get("leader_url") for p in parts],
        )

    def _index(self, h: int) -> int | None:
        i = bisect.bisect_right(self.starts, h) - 1
        return i if i >= 0 and h < self.ends[i] else None

    def leader_of(self, h: int) -> str | None:
        i = self._index(h)
        return self.leaders[i] if i is not None else None

    def learn(self, h: int, url: str) -> None:
        i = self._index(h)
        if i is not None:
            self.leaders[i] = url


class AsyncClient:
    """Async client of a kvcluster cluster.

    Give it one or more node URLs (any node serves any key). Use it as an
    async context manager, or call :meth:`close`. Keys and values are
    ``bytes`` or ``str`` (UTF-8). All methods are safe to call concurrently
    from many tasks; they share one connection pool of ``pool_size``.

    ``timeout`` bounds a whole call including retries; ``retries`` bounds the
    number of further attempts after the first.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        *,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        pool_size: int = 100,
        rng: random.Random | None = None,
        follow_leaders: bool = True,
        cacert: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self.endpoints = [normalise_endpoint(e) for e in endpoints]
        if not self.endpoints:
            raise ValueError("at least one endpoint is required")
        if timeout <= 0 or attempt_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.attempt_timeout = attempt_timeout
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self._rng = rng or random.Random()
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.follow_leaders = follow_leaders
        # HTTPS endpoints are verified against this CA bundle instead of the system store.
        self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=cacert) if cacert else True
        self._routes: RoutingTable | None = None
        self._routes_at = float("-inf")
        self._routes_refresh: asyncio.Task[None] | None = None
        self._unreachable: dict[str, float] = {}

    # ---- life cycle ---------------------------------------------------------------------------

    @property
    def preferred_endpoint(self) -> str:
        """The endpoint that answered last: where the next call goes first."""
        return self.endpoints[self._preferred]

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running loop, and the client object
        # may be built outside of it (e.g. by SyncClient before its loop thread runs).
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_headers_sent)
            headers = {"User-Agent": "kvcluster-client"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=0, ssl=self.ssl),
                headers=headers,
                trace_configs=[trace],
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        self._closed = True
        refresh, self._routes_refresh = self._routes_refresh, None
        if refresh is not None and not refresh.done():
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await refresh
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- the key-value API ----------------------------------------------------------------------

    async def put(self, key: Key, value: Key, if_version: int | None = None, lease: int | None = None) -> int:
        """Write ``value`` under ``key``; returns the new version.

        With ``if_version`` the write is a compare-and-set: it succeeds only if
        the key's current version is ``if_version`` (0: only if absent), else
        raises :class:`VersionConflict` with the current version. With ``lease``
        the key is deleted when that lease expires or is revoked (unknown
        lease: :class:`NotFound`, nothing written).
        """
        query = _if_version_query(if_version)
        if lease is not None:
            query += ("&" if query else "?") + f"lease={int(lease)}"
        answer = await self._call(
            "PUT", _kv_path(key) + query, body=to_bytes(value), write=True, first=await self._leader_url(key)
        )
        self._learn_leader(key, answer)
        return int(_json(answer)["version"])

    async def get(self, key: Key, consistency: Consistency = "linearizable") -> Item | None:
        """The key's value and version, or None if absent.

        ``linearizable`` (default) reflects every write acknowledged before the
        call; ``stale`` is answered by any replica without a round to the
        leader, and may miss recent writes.
        """
        stale = _check_consistency(consistency) == "stale"
        query = "?consistency=stale" if stale else ""
        leader = None if stale else await self._leader_url(key)
        try:
            answer = await self._call("GET", _kv_path(key) + query, write=False, first=leader)
        except NotFound:
            return None
        self._learn_leader(key, answer)
        version = answer.headers.get("X-KV-Version")
        if version is None:
            raise KVError("the answer has no X-KV-Version header", code="bad_response")
        return Item(to_bytes(key), answer.body, int(version))

    async def delete(self, key: Key, if_version: int | None = None) -> int:
        """Delete the key; returns the version of the deletion.

        Raises :class:`NotFound` if the key is absent, :class:`VersionConflict`
        if ``if_version`` is given and does not match.
        """
        query = _if_version_query(if_version)
        answer = await self._call(
            "DELETE", _kv_path(key) + query, write=True, first=await self._leader_url(key)
        )
        self._learn_leader(key, answer)
        return int(_json(answer)["version"])

    async def lease_grant(self, ttl: float) -> int:
        """``POST /v1/leases``: a new lease that expires ``ttl`` seconds after its last keep-alive.

        Retried like a read: a duplicate grant only leaves an unused lease that expires.
        """
        body = json.dumps({"ttl": ttl}).encode()
        return int(_json(await self._call("POST", "/v1/leases", body=body, write=False))["id"])

    async def lease_keepalive(self, lease: int) -> float:
        """Restart the lease's countdown; returns its ttl. :class:`NotFound` once it expired."""
        path = f"/v1/leases/{int(lease)}/keepalive"
        return float(_json(await self._call("POST", path, body=b"", write=False))["ttl"])

    async def lease_revoke(self, lease: int) -> int:
        """Revoke the lease and delete its keys; returns how many keys were deleted."""
        answer = await self._call("DELETE", f"/v1/leases/{int(lease)}", write=True)
        return int(_json(answer)["deleted"])

    async def scan(
        self,
        prefix: Key = b"",
        start: Key = b"",
        limit: int = 100,
        consistency: Consistency = "linearizable",
        cursor: str | None = None,
    ) -> Page:
        """One page of keys in byte order: those starting with ``prefix``, from ``start`` on.

        ``cursor`` (a page's ``next``) continues a listing and replaces ``start``.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        params = [f"limit={limit}"]
        if prefix:
            params.append("prefix=" + quote_bytes(to_bytes(prefix)))
        if cursor is not None:
            params.append("start=" + quote_cursor(cursor))
        elif start:
            params.append("start=" + quote_bytes(to_bytes(start)))
        if _check_consistency(consistency) == "stale":
            params.append("consistency=stale")
        answer = await self._call("GET", "/v1/kv?" + "&".join(params), write=False)
        return decode_page(_json(answer))

    async def scan_all(
        self,
        prefix: Key = b"",
        start: Key = b"",
        page_size: int = 100,
        consistency: Consistency = "linearizable",
    ) -> AsyncIterator[Page]:
        """Every page of the listing, following the ``next`` cursor until the end.

        Each page is consistent on its own; the listing as a whole is not a
        snapshot (writes between pages may or may not show up).
        """
        page = await self.scan(prefix, start, page_size, consistency)
        yield page
        while page.next is not None:
            page = await self.scan(prefix, limit=page_size, consistency=consistency, cursor=page.next)
            yield page

    async def cluster(self) -> dict[str, Any]:
        """``GET /v1/cluster``: nodes and partitions as the answering node sees them."""
        return _json(await self._call("GET", "/v1/cluster", write=False))

    async def metrics(self, endpoint: str | None = None) -> str:
        """Prometheus text of one node (``endpoint``, else whichever answers)."""
        endpoints = [normalise_endpoint(endpoint)] if endpoint else None
        answer = await self._call("GET", "/metrics", write=False, endpoints=endpoints)
        return answer.body.decode("utf-8", "replace")

    async def ready(self, endpoint: str | None = None) -> bool:
        """Whether one node (default: the preferred one) answers ``/readyz`` with 200; never raises."""
        url = URL(normalise_endpoint(endpoint or self.preferred_endpoint) + "/readyz", encoded=True)
        try:
            async with self._get_session().get(
                url, timeout=aiohttp.ClientTimeout(total=min(self.attempt_timeout, 5.0))
            ) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    # ---- leader routing -----------------------------------------------------------------------

    async def _leader_url(self, key: Key) -> str | None:
        """The URL of the key's partition leader if known and reachable; refreshed every few seconds.

        Any node serves any key by forwarding to the leader; going there directly
        saves that hop. The table is a hint: when it is stale the node reached
        forwards as usual and its answer names the real leader.
        """
        if not self.follow_leaders:
            return None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._routes_at > ROUTES_TTL_S and (
            self._routes_refresh is None or self._routes_refresh.done()
        ):
            self._routes_at = now
            self._routes_refresh = loop.create_task(self._refresh_routes())
            if self._routes is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._routes_refresh), self.attempt_timeout)
        if self._routes is None:
            return None
        url = self._routes.leader_of(key_hash(to_bytes(key)))
        if url is None or self._unreachable.get(url, 0.0) > now:
            return None
        return url

    async def _refresh_routes(self) -> None:
        try:
            answer = await self._call("GET", "/v1/routing", write=False)
            self._routes = RoutingTable.from_json(_json(answer))
        except (KVError, ValueError, KeyError, RuntimeError):
            pass  # keep the previous table (or none): routing hints are optional; closed meanwhile

    def _learn_leader(self, key: Key, answer: _Answer) -> None:
        url = answer.headers.get("X-KV-Leader")
        if url and self._routes is not None:
            self._routes.learn(key_hash(to_bytes(key)), url)

    # ---- admin API (reshaping) -----------------------------------------------------------------

    async def admin_map(self) -> dict[str, Any]:
        """``GET /v1/admin/map``: partitions, meta group, nodes and current leaders."""
        return _json(await self._call("GET", "/v1/admin/map", write=False))

    async def admin_node(self, node_id: int) -> dict[str, Any] | None:
        """``GET /v1/admin/nodes/{id}``: what the node holds; None if the cluster does not know it."""
        try:
            return _json(await self._call("GET", f"/v1/admin/nodes/{int(node_id)}", write=False))
        except NotFound:
            return None

    async def reshape(self, nodes: list[int], partitions: int, replicas: int) -> dict[str, Any]:
        """``POST /v1/admin/reshape``: record a target shape; the cluster works towards it.

        Submitting the same target twice is harmless (the job is replaced by an
        equal one), so this call may be retried like a read.
        """
        body = json.dumps({"nodes": sorted(nodes), "partitions": partitions, "replicas": replicas}).encode()
        return _json(await self._call("POST", "/v1/admin/reshape", body=body, write=False))

    async def reshape_status(self) -> dict[str, Any]:
        """``GET /v1/admin/reshape``: ``state`` idle|running|done|failed, target, steps done/total."""
        return _json(await self._call("GET", "/v1/admin/reshape", write=False))

    async def drain(self, node_id: int) -> dict[str, Any]:
        """``POST /v1/admin/nodes/{id}/drain``: move everything off the node (a reshape job)."""
        return _json(await self._call("POST", f"/v1/admin/nodes/{int(node_id)}/drain", body=b"", write=False))

    async def forget_node(self, node_id: int) -> dict[str, Any]:
        """``POST /v1/admin/nodes/{id}/forget``: drop a drained node from the cluster's node list."""
        return _json(
            await self._call("POST", f"/v1/admin/nodes/{int(node_id)}/forget", body=b"", write=False)
        )

    # ---- watch (issue 10) -----------------------------------------------------------------------

    def watch(
        self, *, key: Key | None = None, prefix: Key | None = None, start: int | str | None = None
    ) -> Watch:
        """Changes of one key or of every key with ``prefix``, as they are applied.

        ``start``: None for changes from now on; a revision ``R`` for every
        change after ``R`` (in each partition); or a token (``Watch.token``) to
        resume an earlier watch. The iterator reconnects by itself and yields
        every change exactly once; a ``compacted`` event says changes were lost
        to history compaction (re-read the keys). A bad request or token raises
        :class:`BadRequest`.
        """
        return Watch(self, key, prefix, start)

    # ---- backup and restore (issue 12) -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def backup_stream(self, idle_timeout: float = 60.0) -> AsyncIterator[AsyncIterator[bytes]]:
        """``POST /v1/admin/backup``: the backup file's bytes as the node streams them.

        Endpoints are tried in turn until one starts the stream; once it has
        started, a failure ends it (the file's own checks then refuse it) and
        the caller starts over. ``idle_timeout`` bounds a silence, not the whole
        backup, which takes as long as the data does.
        """
        error: KVError | None = None
        for endpoint in self.endpoints:
            try:
                resp = await self._get_session().post(
                    URL(endpoint + "/v1/admin/backup", encoded=True),
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=self.connect_timeout, sock_read=idle_timeout
                    ),
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = Unavailable(f"cannot reach {endpoint}: {_describe(exc)}", code="unreachable")
                continue
            try:
                if resp.status != 200:
                    body = await resp.read()
                    error = error_from_response(resp.status, body, endpoint=endpoint)
                    if resp.status < 500:
                        raise error
                    continue
                yield resp.content.iter_any()
                return
            finally:
                resp.release()
        raise error or Unavailable("no endpoint to back up from")

    async def restore_rows(self, rows: list[tuple[bytes, bytes]]) -> int:
        """``POST /v1/admin/restore/rows``: load a batch of rows; answers how many were written.

        Loading the same row twice writes the same value twice, so this call
        is retried like a read.
        """
        body = msgpack.packb({"rows": [list(r) for r in rows]}, use_bin_type=True)
        answer = await self._call("POST", "/v1/admin/restore/rows", body=body, write=False)
        return int(_json(answer)["loaded"])

    # ---- requests, retries, failover ------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        write: bool,
        endpoints: list[str] | None = None,
        first: str | None = None,
    ) -> _Answer:
        """Send one logical request, with failover and the retry policy of the module docstring.

        ``first`` (the partition leader's URL, when known) is tried once before
        the endpoints; a leader that cannot be reached is avoided for a while.
        """
        pinned = endpoints is not None
        targets = endpoints if endpoints is not None else self.endpoints
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        index = 0 if pinned else self._preferred
        failed_this_round = 0
        backoff_step = 0
        attempt = 0
        while True:
            use_first = first is not None and attempt == 0
            endpoint = first if use_first and first is not None else targets[index % len(targets)]
            remaining = deadline - loop.time()
            retry_after: float | None = None
            try:
                answer = await self._attempt(
                    method, endpoint, path, body, min(remaining, self.attempt_timeout)
                )
            except _NotSent as exc:
                if use_first:
                    self._unreachable[endpoint] = loop.time() + UNREACHABLE_FOR_S
                error: KVError = Unavailable(
                    f"cannot reach {endpoint}: {exc}", code="unreachable", endpoint=endpoint
                )
            except _MaybeSent as exc:
                if write:
                    raise OutcomeUnknown(
                        f"{method} sent to {endpoint} but {exc}; it may or may not have taken effect",
                        code=exc.code,
                        endpoint=endpoint,
                    ) from None
                error = Unavailable(f"{endpoint}: {exc}", code=exc.code, endpoint=endpoint)
            else:
                if answer.status < 300:
                    if not pinned and not use_first:
                        self._preferred = index % len(targets)
                    return answer
                retry_after = parse_retry_after(answer.headers.get("Retry-After"))
                error = error_from_response(
                    answer.status, answer.body, endpoint=endpoint, retry_after=retry_after
                )
                if write and answer.status == 502:
                    # A proxy lost its upstream: the write may have reached a node.
                    error = OutcomeUnknown(error.message, code="bad_gateway", status=502, endpoint=endpoint)
                if not _retryable_status(answer.status, write):
                    if answer.status < 500 and not pinned:
                        self._preferred = index % len(targets)  # a definite answer: this node works
                    raise error
            # Retry, if the policy, the retry budget and the deadline allow.
            attempt += 1
            if attempt > self.retries:
                raise error
            if use_first:
                continue  # the leader was a shortcut; the endpoints proper start now, without a pause
            index += 1
            failed_this_round += 1
            delay = 0.0
            if failed_this_round >= len(targets):
                # Every endpoint failed once since the last pause: back off before the next round.
                delay = self._backoff(backoff_step)
                backoff_step += 1
                failed_this_round = 0
            if retry_after is not None:
                delay = max(delay, retry_after)
            if loop.time() + delay >= deadline:
                raise error
            if delay > 0:
                await asyncio.sleep(delay)

    def _backoff(self, step: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so clients spread out."""
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2**step)
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    async def _attempt(
        self, method: str, endpoint: str, path: str, body: bytes | None, timeout: float
    ) -> _Answer:
        """One HTTP exchange; connection-level failures become _NotSent or _MaybeSent."""
        state = _AttemptState()
        url = URL(endpoint + path, encoded=True)
        write = method in ("PUT", "DELETE")
        try:
            async with self._get_session().request(
                method,
                url,
                data=body,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=self.connect_timeout),
                trace_request_ctx=state,
                middlewares=(_no_resend,) if write else None,
                allow_redirects=not write,  # a redirected write would be sent twice
            ) as resp:
                data = await resp.read()
                return _Answer(resp.status, resp.headers, data, endpoint)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _NotSent(_describe(exc)) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if not state.sent:
                raise _NotSent(_describe(exc)) from exc
            if isinstance(exc, TimeoutError):
                raise _MaybeSent("timed out", "timeout") from exc
            raise _MaybeSent(f"the connection failed ({_describe(exc)})", "connection_lost") from exc


class _NotSent(Exception):
    """The request never left: safe to retry anything."""


class _MaybeSent(Exception):
    """The request may have reached a server: only idempotent calls may be retried."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retryable_status(status: int, write: bool) -> bool:
    if status == 503:
        return True  # no leader took it: safe even for writes
    # 502/504 from a node or a proxy: a read can simply be asked again; a write's outcome is unknown.
    return not write and status in (502, 504)


def _check_consistency(consistency: str) -> str:
    if consistency not in ("linearizable", "stale"):
        raise ValueError("consistency must be 'linearizable' or 'stale'")
    return consistency


def _kv_path(key: Key) -> str:
    return "/v1/kv/" + quote_bytes(to_bytes(key))


def _if_version_query(if_version: int | None) -> str:
    if if_version is None:
        return ""
    if isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0:
        raise ValueError("if_version must be an integer >= 0")
    return f"?if_version={if_version}"


def _json(answer: _Answer) -> dict[str, Any]:
    try:
        parsed = json.loads(answer.body)
    except ValueError:
        raise KVError(
            f"{answer.endpoint} answered with invalid JSON", code="bad_response", endpoint=answer.endpoint
        ) from None
    if not isinstance(parsed, dict):
        raise KVError(f"{answer.endpoint} answered {parsed!r}", code="bad_response", endpoint=answer.endpoint)
    return parsed
