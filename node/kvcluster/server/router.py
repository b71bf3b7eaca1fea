"""Any node accepts any request: find the partition, find its leader, get it there.

The router keeps a cached partition map and leader hints. Every answer that
says "not here" carries what the answering replica knows (its leader, its
fresher descriptor), so the router converges in a retry or two. A write is
only retried when it certainly did not take effect (not proposed, or lost
its log index to another entry); once it may have, a failure to hear back is
reported as a timeout, never silently retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from kvcluster.keyspace import META_PARTITION, PartitionDescriptor, PartitionMap, hash_str
from kvcluster.transport import PeerRPC, PeerUnavailable, pack, unpack

from .config import NodeConfig
from .errors import (
    ApiError,
    BusySignal,
    FrozenSignal,
    NotHereSignal,
    NotLeaderSignal,
    RoutingSignal,
    StaleEpochSignal,
    Timeout,
    Unavailable,
    WrongRangeSignal,
)
from .host import RaftHost
from .metrics import NodeMetrics
from .operations import Operation, decode_failure, encode_failure, execute_local

log = logging.getLogger(__name__)

FORWARD_PATH = "/internal/v1/op"
T = TypeVar("T")


class Router:
    def __init__(
        self, cfg: NodeConfig, host: RaftHost, rpc: PeerRPC, pmap: PartitionMap, metrics: NodeMetrics
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.rpc = rpc
        self.pmap = pmap
        self.metrics = metrics
        self.hints: dict[int, int] = {}
        self._rng = random.Random()
        host.descriptor_listeners.append(self.learn)

    def learn(self, desc: PartitionDescriptor) -> None:
        if self.pmap.update(desc):
            log.debug("learnt %s", desc)

    def routing(self) -> dict[str, Any]:
        """What a client needs to send each key straight to its partition's leader."""
        out = []
        for desc in self.pmap:
            leader = self.leader_hint(desc.id)
            node = self.pmap.nodes.get(leader) if leader else None
            out.append(
                {
                    "id": desc.id,
                    "start": hash_str(desc.range.start),
                    "end": hash_str(desc.range.end),
                    "epoch": desc.epoch,
                    "leader": leader or None,
                    "leader_url": node.url if node else None,
                }
            )
        return {"partitions": out}

    def node_url(self, node: int) -> str | None:
        info = self.pmap.nodes.get(node)
        return info.url if info else (self.cfg.url if node == self.cfg.node_id else None)

    def leader_hint(self, partition: int) -> int:
        r = self.host.replicas.get(partition)
        if r is not None and r.core.leader:
            return r.core.leader
        return self.hints.get(partition, 0)

    # ---- public operations -----------------------------------------------------------------------

    async def execute(self, op: Operation) -> dict[str, Any]:
        def locate() -> PartitionDescriptor | None:
            return self.pmap.lookup_key(op.key)

        return await self._route(op, locate)

    async def scan(
        self, prefix: bytes, start: bytes, limit: int, linearizable: bool
    ) -> tuple[list[tuple[bytes, bytes, int]], bool]:
        """One page of keys across all partitions, in key order; True when more may follow."""
        for _ in range(5):
            plan = list(self.pmap)
            ops = [
                Operation("scan", prefix=prefix, start=start, limit=limit + 1, linearizable=linearizable)
                for _ in plan
            ]
            results = await asyncio.gather(
                *(self._route(op, self._fixed(d.id)) for op, d in zip(ops, plan, strict=True))
            )
            if any(
                PartitionDescriptor.from_dict(res["descriptor"]).range != d.range
                for res, d in zip(results, plan, strict=True)
            ):
                for res in results:
                    self.learn(PartitionDescriptor.from_dict(res["descriptor"]))
                continue  # the layout changed under us: plan the page again
            rows = sorted((bytes(k), bytes(v), int(ver)) for res in results for k, v, ver in res["rows"])
            return rows[:limit], len(rows) > limit
        raise Unavailable("the partition layout kept changing during the scan")

    def _fixed(self, partition: int) -> Callable[[], PartitionDescriptor | None]:
        if partition == META_PARTITION:
            return lambda: self.pmap.meta
        return lambda: self.pmap.partitions.get(partition)

    async def execute_on(self, partition: int, op: Operation) -> dict[str, Any]:
        """Run ``op`` on the leader of a partition named by id (meta and admin operations)."""
        return await self._route(op, self._fixed(partition))

    async def call_node(self, node: int, op: Operation, timeout: float) -> dict[str, Any]:
        """Run ``op`` on one particular node, wherever leadership is (per-replica state)."""
        if node == self.cfg.node_id:
            return await execute_local(self.host, op, timeout)
        return await self._forward(node, op, timeout)

    # ---- routing ------------------------------------------------------------------------------------

    async def _route(self, op: Operation, locate: Callable[[], PartitionDescriptor | None]) -> dict[str, Any]:
        async def attempt(desc: PartitionDescriptor, target: int, remaining: float) -> dict[str, Any]:
            op.partition = desc.id
            if target == self.cfg.node_id:
                result = await execute_local(self.host, op, remaining)
            else:
                result = await self._forward(target, op, remaining)
            result["_node"] = target
            return result

        local_ok = op.op in ("get", "scan") and not op.linearizable
        return await self.on_leader(locate, attempt, write=op.is_write, local_ok=local_ok)

    async def on_leader(
        self,
        locate: Callable[[], PartitionDescriptor | None],
        attempt: Callable[[PartitionDescriptor, int, float], Awaitable[T]],
        *,
        write: bool = False,
        local_ok: bool = False,
    ) -> T:
        """Run ``attempt(descriptor, node, remaining seconds)`` on the partition's leader.

        ``attempt`` raises the routing signals of a replica that cannot serve
        (not the leader, not here, wrong range, busy) and this loop follows
        them until the request timeout. It serves a forwarded operation and a
        backup's partition dump alike.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.request_timeout_s
        avoid: set[int] = set()
        reason = "no replica answered"
        attempt_no = 0
        while (remaining := deadline - loop.time()) > 0:
            desc = locate()
            if desc is None:
                reason = "no partition covers the key in this node's map"
                await asyncio.sleep(min(0.05 * 2**attempt_no, 0.5, remaining))
                attempt_no += 1
                continue
            target = self._pick(desc, avoid, local_ok=local_ok)
            try:
                return await attempt(desc, target, remaining)
            except NotLeaderSignal as s:
                reason = f"node {target} is not the leader of partition {desc.id}"
                avoid.add(target)
                if s.leader and s.leader != target:
                    self.hints[desc.id] = s.leader
                    avoid.discard(s.leader)
                    continue  # go straight to the hinted leader
                self.hints.pop(desc.id, None)
            except WrongRangeSignal as s:
                reason = "stale partition map"
                for d in s.descriptors:
                    self.learn(d)
                continue
            except StaleEpochSignal:
                raise  # a reshape step planned on an old descriptor: its caller re-plans
            except NotHereSignal:
                reason = f"node {target} has no replica of partition {desc.id}"
                avoid.add(target)
                self.hints.pop(desc.id, None)
            except (FrozenSignal, BusySignal) as s:
                reason = str(s) or type(s).__name__
            except PeerUnavailable as exc:
                if write and exc.maybe_delivered:
                    raise Timeout(
                        f"lost contact with node {target} after forwarding the write: {exc}"
                    ) from None
                reason = f"node {target} unreachable"
                avoid.add(target)
                self.hints.pop(desc.id, None)
            except RoutingSignal as s:
                reason = str(s)
            attempt_no += 1
            if len(avoid) >= len(desc.replicas):
                avoid.clear()
            await asyncio.sleep(min(0.02 * 2**attempt_no, 0.3, max(0.0, deadline - loop.time())))
        raise Unavailable(f"partition unavailable: {reason}", retry_after=1)

    def _pick(self, desc: PartitionDescriptor, avoid: set[int], *, local_ok: bool = False) -> int:
        """The node to send an operation to: the leader as far as known.

        A stale read (``local_ok``) is served by this node's own replica when it has
        one: that is the point of asking for one -- no leader round trip, and an answer
        while the leader is unreachable.
        """
        me = self.cfg.node_id
        if local_ok and me not in avoid and me in desc.replicas and desc.id in self.host.replicas:
            return me
        hint = self.leader_hint(desc.id)
        if hint and hint not in avoid and hint in desc.replicas:
            return hint
        candidates = [n for n in desc.voters if n not in avoid] or list(desc.voters)
        if self.cfg.node_id in candidates:
            return self.cfg.node_id
        return self._rng.choice(candidates)

    async def _forward(self, node: int, op: Operation, timeout: float) -> dict[str, Any]:
        self.metrics.forwarded.labels(op.op).inc()
        return await self.call_peer(node, FORWARD_PATH, op.to_wire(), timeout)

    async def call_peer(
        self, node: int, path: str, payload: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Call an internal route answered by :func:`peer_response`; its result, or its failure raised.

        The failure is raised as the signal or error the peer raised, so that
        ``on_leader`` follows it as it would a local one.
        """
        status, body = await self.rpc.call(node, path, pack(payload), timeout + 0.5)
        if status != 200:
            raise PeerUnavailable(f"node {node} answered HTTP {status}", maybe_delivered=status >= 500)
        answer = unpack(body)
        if "result" in answer:
            result: dict[str, Any] = answer["result"]
            return result
        raise decode_failure(answer)


async def peer_response(work: Awaitable[dict[str, Any]]) -> web.Response:
    """The answer of an internal route that :meth:`Router.call_peer` reads: a result or a failure."""
    try:
        body: dict[str, Any] = {"result": await work}
    except (ApiError, RoutingSignal) as exc:
        body = encode_failure(exc)
    return web.Response(body=pack(body), content_type="application/msgpack")
