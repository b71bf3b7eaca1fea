"""Backup and restore over the admin API (issue 12).

``POST /v1/admin/backup`` streams one backup file (``client/backupfile.py``).
The node that takes the request walks the hash space from 0 upwards: for the
partition covering the current position it asks the partition's leader for a
dump (``/internal/v1/dump``, or its own replica when it leads), which the
leader reads at a ReadIndex-confirmed applied index in one read transaction,
and writes the rows to the response chunk by chunk as they arrive. Walking
positions instead of a fixed list makes the backup correct while the cluster
reshapes: a partition found split since the map was read covers less, and
the next position is looked up again; one found merged covers rows already
written, and those are trimmed. Memory is one chunk per stream, whatever the
partition's size.

Each section is consistent on its own (one partition at one index), as the
issue asks; the file is not one cut across partitions, which would need a
cross-partition transaction the store does not have.

``POST /v1/admin/restore/rows`` loads a batch of rows: grouped by partition
with this node's map, each group one ``Load`` entry on its leader; rows a
partition no longer covers come back skipped and are sent on after the map
is refreshed. A load is an upsert of the same value, so a retried batch
changes nothing but revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

from kvcluster.client.backupfile import SUFFIX, BackupWriter, Batcher, Row, rows_within
from kvcluster.keyspace import HASH_SPACE, PartitionDescriptor, PartitionMap
from kvcluster.storage.leasestate import leases_of
from kvcluster.storage.replicastate import AppliedState
from kvcluster.transport import PeerRPC, PeerUnavailable, pack, unpack

from .config import NodeConfig
from .errors import (
    ApiError,
    BadRequest,
    RoutingSignal,
    Unavailable,
)
from .host import RaftHost
from .operations import Operation, decode_failure, encode_failure
from .reshape import Reshaper
from .router import Router

log = logging.getLogger(__name__)

DUMP_PATH = "/internal/v1/dump"
FETCH_ROWS = 64
"""Rows read from SQLite at a time: with 1 MiB values, 64 MiB at the very most."""
IDLE_TIMEOUT_S = 30.0
LAYOUT_ATTEMPTS = 20
"""Lookups of a position (or regroupings of a batch) before a layout that keeps changing fails the request."""
MAX_LOAD_ROWS = 10_000


def _state_dict(state: AppliedState) -> dict[str, Any]:
    return {
        "descriptor": state.descriptor.to_dict(),
        "applied_index": state.applied_index,
        "applied_term": state.applied_term,
        "revision": state.revision,
    }


class BackupApi:
    def __init__(
        self, cfg: NodeConfig, host: RaftHost, router: Router, rpc: PeerRPC, reshaper: Reshaper
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.router = router
        self.rpc = rpc
        self.reshaper = reshaper

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post("/v1/admin/backup", self.backup),
            web.post("/v1/admin/restore/rows", self.restore_rows),
        ]

    def internal_routes(self) -> list[web.AbstractRouteDef]:
        return [web.post(DUMP_PATH, self.dump)]

    # ---- the leader's side: one partition's rows -------------------------------------------------

    async def _local_dump(self, partition: int) -> AsyncGenerator[dict[str, Any], None]:
        """``{"state"}``, then ``{"rows"}`` batches of about a chunk, then ``{"end": count}``."""
        dump = await self.host.open_dump(partition, self.cfg.request_timeout_s)
        try:
            yield {"state": _state_dict(dump.state)}
            count = 0
            batcher: Batcher[Row] = Batcher()
            while rows := await asyncio.to_thread(dump.fetch, FETCH_ROWS):
                for row in rows:
                    if (full := batcher.add(row)) is not None:
                        count += len(full)
                        yield {"rows": full}
            if rest := batcher.take():
                count += len(rest)
                yield {"rows": rest}
            yield {"end": count}
        finally:
            dump.close()

    async def dump(self, request: web.Request) -> web.StreamResponse:
        partition = int(unpack(await request.read())["partition"])
        dump = self._local_dump(partition)
        try:
            first = await anext(dump)
        except (ApiError, RoutingSignal) as exc:
            return web.Response(
                body=pack({"failure": encode_failure(exc)}), content_type="application/msgpack"
            )
        resp = web.StreamResponse()
        resp.content_type = "application/msgpack"
        try:
            await resp.prepare(request)
            await resp.write(pack(first))
            async for item in dump:
                await resp.write(pack(item))
            await resp.write_eof()
        finally:
            await dump.aclose()
        return resp

    async def _remote_dump(self, node: int, partition: int) -> AsyncGenerator[dict[str, Any], None]:
        timeout = aiohttp.ClientTimeout(total=None, connect=1.0, sock_read=IDLE_TIMEOUT_S)
        async with self.rpc.stream(node, DUMP_PATH, pack({"partition": partition}), timeout) as resp:
            if resp.status != 200:
                raise PeerUnavailable(f"node {node} answered HTTP {resp.status}")
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=256 << 20)
            async for data in resp.content.iter_any():
                unpacker.feed(data)
                for obj in unpacker:
                    if "failure" in obj:
                        raise decode_failure(obj["failure"])
                    yield obj

    # ---- the coordinator's side: the whole file --------------------------------------------------

    async def _open_section(
        self, desc: PartitionDescriptor
    ) -> tuple[int, dict[str, Any], AsyncGenerator[dict[str, Any], None]]:
        """A dump stream from the partition's leader, found as the router finds one for any request.

        The stream counts as open once its first item (the applied state) has
        arrived: until then a replica may still answer that it does not lead.
        """

        async def attempt(
            current: PartitionDescriptor, target: int, remaining: float
        ) -> tuple[int, dict[str, Any], AsyncGenerator[dict[str, Any], None]]:
            local = target == self.cfg.node_id
            stream = self._local_dump(current.id) if local else self._remote_dump(target, current.id)
            try:
                first = await anext(stream)
            except BaseException:
                await stream.aclose()
                raise
            return target, first["state"], stream

        return await self.router.on_leader(lambda: desc, attempt)

    async def _write_section(
        self, resp: web.StreamResponse, writer: BackupWriter, pos: int, ephemeral: dict[bytes, int]
    ) -> int:
        """Write the section starting at hash ``pos``; returns where the next one starts.

        ``ephemeral`` maps lease-bound keys to the version they were bound at:
        those rows are left out (a key written again since, without a lease, is kept).
        """
        for _ in range(LAYOUT_ATTEMPTS):
            desc = self.router.pmap.lookup(pos)
            if desc is None:
                await self._refresh_map()
                continue
            node, state, stream = await self._open_section(desc)
            actual = PartitionDescriptor.from_dict(state["descriptor"])
            self.router.learn(actual)
            if not actual.range.contains(pos):
                await stream.aclose()  # the map was stale: look the position up again
                continue
            count, ended = 0, False
            try:
                async for obj in stream:
                    if "rows" in obj:
                        rows: list[Row] = [(bytes(k), bytes(v), int(ver)) for k, v, ver in obj["rows"]]
                        if actual.range.start < pos:  # merged since: rows below pos are written already
                            rows = rows_within(rows, pos, actual.range.end)
                        if ephemeral:
                            kept = [r for r in rows if ephemeral.get(r[0]) != r[2]]
                            writer.ephemeral += len(rows) - len(kept)
                            rows = kept
                        if rows:
                            count += len(rows)
                            await resp.write(writer.chunk(actual.id, rows))
                    elif "end" in obj:
                        ended = True
            finally:
                await stream.aclose()
            if not ended:
                raise Unavailable(f"the dump of partition {actual.id} from node {node} broke off")
            section = {
                "partition": actual.id,
                "from": pos,
                "to": actual.range.end,
                "rows": count,
                "leader": node,
                **state,
            }
            await resp.write(writer.section(section))
            return actual.range.end
        raise Unavailable("the partition layout kept changing during the backup; retry")

    async def _refresh_map(self, state: dict[str, Any] | None = None) -> PartitionMap:
        pmap = PartitionMap.from_dict((state or await self.reshaper.meta_state())["map"])
        for desc in pmap:
            self.router.learn(desc)
        return pmap

    async def backup(self, request: web.Request) -> web.StreamResponse:
        state = await self.reshaper.meta_state()  # before the response starts: a failure is a plain error
        pmap = await self._refresh_map(state)
        started = time.time()
        writer = BackupWriter(uuid.uuid4().hex, started)
        # Lease-bound keys are left out: their owners hold leases of this cluster, which the restored
        # one will not know, so restored they would never expire (a lock held forever).
        ephemeral = {
            bytes.fromhex(key): int(version)
            for lease in leases_of(state).values()
            for key, version in (lease.get("keys") or {}).items()
        }
        stamp = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/x-tar",
                "Content-Disposition": f'attachment; filename="kvcluster-{stamp}{SUFFIX}"',
                "X-KV-Backup-Id": writer.backup_id,
            }
        )
        with contextlib.suppress(ConnectionResetError):  # the client went away: nothing to tell it
            await resp.prepare(request)
            await resp.write(writer.header(pmap.to_dict(), node=self.cfg.node_id))
            try:
                pos = 0
                while pos < HASH_SPACE:
                    pos = await self._write_section(resp, writer, pos, ephemeral)
            except (ApiError, RoutingSignal, PeerUnavailable) as exc:
                log.warning("backup %s failed: %s", writer.backup_id, exc)
                await resp.write(writer.error(getattr(exc, "code", "unavailable"), str(exc)))
            else:
                await resp.write(writer.manifest())
                log.info(
                    "backup %s: %d keys in %d sections, %d bytes, %.1f s",
                    writer.backup_id,
                    writer.keys,
                    len(writer.sections),
                    writer.size,
                    time.time() - started,
                )
            await resp.write_eof()
        return resp

    # ---- restore: load a batch of rows -------------------------------------------------------------

    async def restore_rows(self, request: web.Request) -> web.Response:
        rows = self._parse_rows(await request.read())
        loaded = 0
        pending = rows
        for _ in range(LAYOUT_ATTEMPTS):
            groups: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in pending:
                desc = self.router.pmap.lookup_key(key)
                if desc is None:
                    raise Unavailable(
                        "this node's partition map does not cover the key space yet", retry_after=1
                    )
                groups.setdefault(desc.id, []).append((key, value))
            results = await asyncio.gather(
                *(self.router.execute_on(pid, Operation("load", rows=group)) for pid, group in groups.items())
            )
            pending = []
            for group, result in zip(groups.values(), results, strict=True):
                loaded += int(result["loaded"])
                pending.extend(group[i] for i in result["skipped"])
                if result.get("descriptor"):
                    self.router.learn(PartitionDescriptor.from_dict(result["descriptor"]))
            if not pending:
                return web.json_response({"loaded": loaded})
            await self._refresh_map()
        raise Unavailable("the partition layout kept changing during the load; retry", retry_after=1)

    def _parse_rows(self, data: bytes) -> list[tuple[bytes, bytes]]:
        try:
            body = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException):
            raise BadRequest('the body must be msgpack: {"rows": [[key, value], ...]}') from None
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows or len(rows) > MAX_LOAD_ROWS:
            raise BadRequest(f"'rows' must be a list of 1 to {MAX_LOAD_ROWS} [key, value] pairs")
        out: list[tuple[bytes, bytes]] = []
        for row in rows:
            if (
                not isinstance(row, list | tuple)
                or len(row) != 2
                or not all(isinstance(x, bytes) for x in row)
                or not 0 < len(row[0]) <= self.cfg.max_key_bytes
                or len(row[1]) > self.cfg.max_value_bytes
            ):
                raise BadRequest(
                    "every row must be [key, value] as msgpack binaries, the key non-empty and "
                    f"at most {self.cfg.max_key_bytes} bytes, the value at most {self.cfg.max_value_bytes}"
                )
            out.append((row[0], row[1]))
        return out
