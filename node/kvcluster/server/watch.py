"""Watch (issue 10): a stream of a key's or a prefix's changes, resumable by token.

``GET /v1/watch?prefix=P`` (or ``key=K``) ``&from=REV|TOKEN`` answers one long
newline-delimited JSON response. The node serving it holds no state a client
depends on: the changes come from each partition's history table
(``storage/history.py``), read on the partition's leader, and where the watch
stands is the token it sends (``client/watchtoken.py``). Any node can resume it.

One reader per segment of the watched hash range asks the leader of the
partition covering it for the changes after the segment's revision (a long
poll: the leader answers when one is applied, or after ``POLL_S``). The stream
writes each answer's events, then a ``progress`` line with the new token. So
the client can always resume from the last token it read and see every
change after it exactly once (the events it read after that token come again,
and ``client`` skips them by revision). A split shows up as an answer whose
partition ends before the segment does: the segment is cut there and a new
reader covers the rest, from the same revision. A merge needs nothing.

Nothing is buffered per watcher beyond two answers per segment (the one being
written, and the next read, which waits for that write to finish before it is
taken). A slow watcher therefore costs writers nothing; it lags, and if it
lags past the retained history it is told ``compacted``. A watcher that
stops reading altogether is cut off after ``--watch-stall-timeout`` (its
connection is dropped; its client resumes from the last token it read).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from kvcluster.client.watchtoken import NOW, Segment, TokenError, decode, encode, watched_range
from kvcluster.keyspace import PartitionDescriptor
from kvcluster.storage.history import Change, Event, KeyFilter
from kvcluster.transport import PeerRPC, PeerUnavailable, unpack

from .api import encode_item, int_param, raw_query
from .config import NodeConfig
from .errors import ApiError, BadRequest, RoutingSignal, TooLarge, Unavailable
from .host import RaftHost
from .metrics import NodeMetrics
from .router import Router, peer_response

log = logging.getLogger(__name__)

HISTORY_PATH = "/internal/v1/history"
POLL_S = 3.0
"""How long a leader holds a history read open waiting for a change."""
KEEPALIVE_S = 5.0
"""An idle stream writes a ``progress`` line this often (a keep-alive that also carries the token)."""
READ_LIMIT = 1000
"""Events per history read."""
RETRY_S = 1.0
MAX_STREAMS = 1000

CHANGE_TYPES = {Change.PUT: "put", Change.DELETE: "delete", Change.EXPIRE: "expire"}


def event_line(ev: Event) -> dict[str, Any]:
    return {
        "type": CHANGE_TYPES[ev.change],
        **encode_item(ev.key, ev.value),
        "version": ev.revision,
        "revision": ev.revision,
    }


class WatchApi:
    def __init__(
        self, cfg: NodeConfig, host: RaftHost, router: Router, rpc: PeerRPC, metrics: NodeMetrics
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.host = host
        self.router = router
        self.rpc = rpc
        self.streams: set[asyncio.Task[Any]] = set()
        self.closing = False

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/v1/watch", self.watch)]

    def internal_routes(self) -> list[web.AbstractRouteDef]:
        return [web.post(HISTORY_PATH, self.history)]

    async def close(self) -> None:
        """End every open stream (a graceful shutdown would otherwise wait on them)."""
        self.closing = True
        self.host.end_changes()
        for task in list(self.streams):
            task.cancel()
        for task in list(self.streams):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- the leader's side: one segment's changes ------------------------------------------------

    async def _read(self, req: dict[str, Any]) -> dict[str, Any]:
        keys = KeyFilter(key=req.get("key"), prefix=req.get("prefix") or b"")
        state, events = await self.host.changes(
            int(req["partition"]),
            int(req["start"]),
            int(req["last"]) + 1,
            int(req["after"]),
            keys,
            READ_LIMIT,
            float(req["wait"]),
        )
        return {
            "descriptor": state.descriptor.to_dict(),
            "revision": state.revision,
            "floor": state.history_floor,
            "events": [[e.revision, int(e.change), e.key, e.value] for e in events],
        }

    async def history(self, request: web.Request) -> web.Response:
        return await peer_response(self._read(unpack(await request.read())))

    async def _fetch(self, seg: Segment, keys: KeyFilter) -> dict[str, Any]:
        """One answer for ``seg`` from its partition's leader, found as any request finds one."""

        async def attempt(desc: PartitionDescriptor, target: int, remaining: float) -> dict[str, Any]:
            req = {
                "partition": desc.id,
                "start": seg.start,
                "last": seg.end - 1,  # inclusive: 2**64 does not fit msgpack
                "after": seg.revision,
                "key": keys.key,
                "prefix": keys.prefix,
                "wait": max(0.0, min(POLL_S, remaining - 1.0)),
            }
            if target == self.cfg.node_id:
                return await self._read(req)
            return await self.router.call_peer(target, HISTORY_PATH, req, remaining)

        return await self.router.on_leader(lambda: self.router.pmap.lookup(seg.start), attempt)

    # ---- the watcher's side: the stream -------------------------------------------------------------

    def _parse(self, request: web.Request) -> tuple[KeyFilter, list[Segment]]:
        params = raw_query(request)
        key, prefix = params.get("key"), params.get("prefix")
        if (key is None) == (prefix is None):
            raise BadRequest("give exactly one of key= or prefix=")
        if key is not None and not key:
            raise BadRequest("the key must not be empty")
        watched = key if key is not None else prefix
        assert watched is not None
        if len(watched) > self.cfg.max_key_bytes:
            raise TooLarge(f"the key or prefix is longer than the key limit ({self.cfg.max_key_bytes} bytes)")
        keys = KeyFilter(key=key, prefix=prefix or b"")
        start, end = watched_range(key)
        raw = params.get("from")
        if raw is None or raw == b"":
            return keys, [Segment(start, end, NOW)]
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("from must be a revision or a watch token") from None
        if text.isdigit():
            revision = int_param(params, "from", None, 0)
            assert revision is not None
            return keys, [Segment(start, end, revision)]
        try:
            return keys, decode(text, start, end)
        except TokenError as exc:
            raise BadRequest(f"from: {exc}") from None

    async def watch(self, request: web.Request) -> web.StreamResponse:
        keys, segments = self._parse(request)
        if self.closing:
            raise Unavailable("node shutting down", retry_after=1)
        if len(self.streams) >= MAX_STREAMS:
            raise Unavailable(f"this node serves {MAX_STREAMS} watches already; try another", retry_after=1)
        resp = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self.streams.add(task)
        try:
            await _Stream(self, resp, request.transport, keys, segments).run()
        except (asyncio.CancelledError, ConnectionResetError):
            pass  # the watcher went away, or this node is stopping: the token it has resumes elsewhere
        finally:
            self.streams.discard(task)
        return resp


class _Stream:
    def __init__(
        self,
        api: WatchApi,
        resp: web.StreamResponse,
        transport: asyncio.Transport | None,
        keys: KeyFilter,
        segments: list[Segment],
    ) -> None:
        self.api = api
        self.resp = resp
        self.transport = transport
        self.last_write = 0.0
        self.keys = keys
        self.segments = segments
        self.reads: dict[asyncio.Task[dict[str, Any]], Segment] = {}

    def _read(self, seg: Segment, delay: float = 0.0) -> None:
        async def run() -> dict[str, Any]:
            if delay:
                await asyncio.sleep(delay)
            return await self.api._fetch(seg, self.keys)

        self.reads[asyncio.get_running_loop().create_task(run())] = seg

    async def _write(self, lines: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        stall = self.api.cfg.watch_stall_s
        try:
            await asyncio.wait_for(self.resp.write(data), stall)
        except TimeoutError:
            log.info("cutting off a watcher that has not read for %.0f s", stall)
            self.api.metrics.watch_cut_off.inc()
            self._cut_off()
            raise ConnectionResetError("slow watcher") from None
        self.last_write = asyncio.get_running_loop().time()

    def _cut_off(self) -> None:
        """Drop the connection of a watcher that stopped reading.

        No last line can tell it why: the bytes it has not read are in the way,
        and keeping them until it reads would be the unbounded buffer this
        avoids. Nothing is lost: its client resumes from the last token it
        read (``client.Watch`` does so by itself), and the cut is logged and
        counted (``kvcluster_watch_cut_off_total``).
        """
        if self.transport is not None:
            self.transport.abort()

    def _progress(self) -> dict[str, Any]:
        return {"type": "progress", "token": encode(self.segments)}

    def _cut_at_partitions(self) -> None:
        """Cut the segments where the map's partitions end: one reader each from the start.

        Without it the segments would be discovered one answer at a time. A
        stale map only costs a cut that is not needed, or one found later.
        """
        bounds = sorted(d.range.end for d in self.api.router.pmap)
        cut: list[Segment] = []
        for seg in self.segments:
            start = seg.start
            for b in bounds:
                if start < b < seg.end:
                    cut.append(Segment(start, b, seg.revision))
                    start = b
            cut.append(Segment(start, seg.end, seg.revision))
        self.segments[:] = cut

    async def run(self) -> None:
        self._cut_at_partitions()
        for seg in self.segments:
            self._read(seg)
        try:
            await self._loop()
        finally:
            for t in self.reads:
                t.cancel()
            await asyncio.gather(*self.reads, return_exceptions=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        started = False  # the first token goes out once every segment knows where it starts
        while True:
            done, _ = await asyncio.wait(self.reads, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
            lines: list[dict[str, Any]] = []
            for task in done:
                seg = self.reads.pop(task)
                try:
                    answer = task.result()
                except (ApiError, RoutingSignal, PeerUnavailable) as exc:
                    log.debug("watch read of [%d, %d) failed: %s; retrying", seg.start, seg.end, exc)
                    self._read(seg, RETRY_S)
                    continue
                except Exception:
                    log.exception("watch read of [%d, %d) failed; retrying", seg.start, seg.end)
                    self._read(seg, RETRY_S)
                    continue
                lines.extend(self._take(seg, answer))
                self._read(seg)
            first = not started and all(s.revision != NOW for s in self.segments)
            started = started or first
            if started and (lines or first or loop.time() - self.last_write >= KEEPALIVE_S):
                lines.append(self._progress())
                await self._write(lines)

    def _take(self, seg: Segment, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """Fold one answer into ``seg`` (cutting it where its partition ends); the lines to write."""
        desc = PartitionDescriptor.from_dict(answer["descriptor"])
        self.api.router.learn(desc)
        if desc.range.end < seg.end:
            rest = Segment(desc.range.end, seg.end, seg.revision)
            seg.end = desc.range.end
            self.segments.insert(self.segments.index(seg) + 1, rest)
            self._read(rest)
        revision, floor = int(answer["revision"]), int(answer["floor"])
        if seg.revision == NOW:
            seg.revision = revision
            return []
        if seg.revision < floor:
            seg.revision = max(seg.revision, revision)
            return [{"type": "compacted", "revision": floor}]
        events = answer["events"]
        lines = [
            event_line(Event(int(rev), Change(change), bytes(key), None if value is None else bytes(value)))
            for rev, change, key, value in events
        ]
        # After a full answer the segment stands at its last event (more may follow at once);
        # otherwise at the partition's revision. Never backwards: a new leader may lag a little.
        seg.revision = max(seg.revision, int(events[-1][0]) if events else revision)
        return lines
