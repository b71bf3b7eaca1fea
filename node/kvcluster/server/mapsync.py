"""Keeping a node's picture of the cluster in step with the meta group.

Once a second each node: reads the partition map from the meta group and
folds it into its router's cache (new partitions, new nodes and their
addresses); registers itself if the map does not list it yet (a node that
joined with ``--cluster-state existing``); reports the descriptors of the
partitions it leads when the map lags them (a reshape step whose report was
lost to a crash); and drops replicas that the map says were moved away while
this node was not listening (their removal never reached them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kvcluster.keyspace import META_PARTITION, NodeInfo, PartitionDescriptor, PartitionMap
from kvcluster.transport import PeerLinks, PeerRPC, PeerUnavailable, unpack

from .config import NodeConfig
from .errors import ApiError, RoutingSignal
from .host import RaftHost
from .operations import Operation
from .router import Router

log = logging.getLogger(__name__)

MAP_PATH = "/internal/v1/map"
INTERVAL_S = 1.0
SYNC_ERRORS = (ApiError, RoutingSignal, PeerUnavailable, KeyError, ValueError)
"""What a round of syncing may fail with while the meta group is away or moving."""


class MapSync:
    def __init__(
        self, cfg: NodeConfig, host: RaftHost, router: Router, links: PeerLinks, rpc: PeerRPC
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.router = router
        self.links = links
        self.rpc = rpc
        self.registered = False
        self.last_sync_ok = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._reading = asyncio.Lock()
        """One map read at a time, so the cache absorbs the meta group's maps in the order it
        served them: an older map absorbed after a newer one would undo a membership change."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="mapsync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync_once()
                self.last_sync_ok = True
            except asyncio.CancelledError:
                raise
            except SYNC_ERRORS as exc:
                self.last_sync_ok = False
                log.debug("map sync: %s", exc)
                # The meta leader may be a node whose address this node never learnt (one
                # added while it was down): any peer it can reach knows the addresses.
                with contextlib.suppress(ApiError, PeerUnavailable, KeyError, ValueError):
                    await self._learn_from_peers()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INTERVAL_S)
            self._wake.clear()

    async def sync_once(self) -> None:
        truth = await self.refresh()
        if truth is None:
            return
        if self.cfg.node_id not in truth.nodes:
            await self.router.execute_on(
                META_PARTITION,
                Operation(
                    "meta",
                    partition=META_PARTITION,
                    args={"op": "register_node", "id": self.cfg.node_id, "url": self.cfg.url},
                ),
            )
        else:
            self.registered = True
        await self._report_lagging(truth)
        self._collect_orphans(truth)

    async def refresh(self) -> PartitionMap | None:
        """Read the map from the meta group and fold it into the cache; None before there is one.

        Besides the loop, a caller that must answer with the map as it is now
        (``GET /v1/cluster``, which the operator reads right after a reshape job
        reports done) refreshes first rather than wait for the next round.
        """
        async with self._reading:
            pmap = self.router.pmap
            if pmap.meta is None:
                await self._learn_from_peers()
                if pmap.meta is None:
                    return None
            result = await self.router.execute_on(
                META_PARTITION, Operation("meta_read", partition=META_PARTITION)
            )
            state: dict[str, Any] | None = result.get("state")
            if not state:
                return None
            truth = PartitionMap.from_dict(state["map"])
            self.absorb(truth)
            return truth

    def absorb(self, truth: PartitionMap, *, authoritative: bool = True) -> None:
        """Fold a map into the cache; a peer's copy (not ``authoritative``) only adds nodes,
        since it may be older than what this node knows and must not make it forget one."""
        pmap = self.router.pmap
        if truth.meta is not None:
            pmap.update(truth.meta)
        for desc in truth.partitions.values():
            pmap.update(desc)
        # Drop cached partitions the truth no longer has and whose range it covers more recently.
        for pid in [p for p in pmap.partitions if p not in truth.partitions]:
            stale = pmap.partitions[pid]
            if any(
                d.range.overlaps(stale.range) and d.epoch > stale.epoch for d in truth.partitions.values()
            ):
                del pmap.partitions[pid]
        pmap.last_id = max(pmap.last_id, truth.last_id)
        if truth.nodes:
            pmap.nodes = {**truth.nodes} if authoritative else {**truth.nodes, **pmap.nodes}
            pmap.nodes.setdefault(self.cfg.node_id, NodeInfo(self.cfg.node_id, self.cfg.url))
            self.links.set_peers({n.id: n.url for n in pmap.nodes.values()})

    async def _learn_from_peers(self) -> None:
        """Ask the first peer that answers for its cached map.

        A node that joined empty knows only peer addresses; a node restarted after others
        joined may not know the meta leader's address. Connected peers are tried first.
        """
        order = sorted(self.links.urls, key=lambda n: (not self.links.connected(n), n))
        for node in order:
            try:
                status, body = await self.rpc.call(node, MAP_PATH, b"", timeout=1.5)
            except PeerUnavailable:
                continue
            if status == 200:
                self.absorb(PartitionMap.from_dict(unpack(body)), authoritative=False)
                return

    async def _report_lagging(self, truth: PartitionMap) -> None:
        lagging: list[PartitionDescriptor] = []
        for pid, r in self.host.replicas.items():
            if not r.is_leader or r.removed:
                continue
            known = truth.meta if pid == META_PARTITION else truth.partitions.get(pid)
            probe = PartitionMap.from_dict(truth.to_dict())
            if (known is None or known.epoch < r.state.descriptor.epoch) and probe.update(r.state.descriptor):
                lagging.append(r.state.descriptor)
        if lagging:
            await self.router.execute_on(
                META_PARTITION,
                Operation(
                    "meta",
                    partition=META_PARTITION,
                    args={"op": "report", "descriptors": [d.to_dict() for d in lagging]},
                ),
            )

    def _collect_orphans(self, truth: PartitionMap) -> None:
        local = {pid: r.state.descriptor for pid, r in self.host.replicas.items() if not r.removed}
        leading = {pid for pid, r in self.host.replicas.items() if r.is_leader}
        for pid, epoch in orphans(truth, local, leading, self.cfg.node_id):
            self.host.destroy_replica(pid, epoch)


def orphans(
    truth: PartitionMap,
    local: dict[int, PartitionDescriptor],
    leading: set[int],
    node_id: int,
) -> list[tuple[int, int]]:
    """The local replicas (partition, epoch) the map says this node no longer holds.

    A replica the map moved off this node goes at once. One whose partition the map no
    longer has at all -- merged away -- may still be needed: a merge is applied by the
    left neighbour's replica on this same node, which reads the right replica's rows, and
    a left replica that lags the map has yet to apply it. Dropping the right one first
    would leave that merge unappliable and stop the node. So a merged-away replica waits
    while a local replica ending where it starts still lags the map; once that one has
    caught up (by log or by snapshot) or been dropped itself, nothing local needs it.
    """
    out: list[tuple[int, int]] = []
    for pid, mine in sorted(local.items()):
        if pid in leading:
            continue
        known = truth.meta if pid == META_PARTITION else truth.partitions.get(pid)
        if known is not None:
            if known.epoch > mine.epoch and node_id not in known.replicas:
                out.append((pid, known.epoch))
            continue
        if pid == META_PARTITION:
            continue
        if not any(d.range.overlaps(mine.range) and d.epoch > mine.epoch for d in truth.partitions.values()):
            continue
        if any(
            other not in (pid, META_PARTITION)
            and desc.range.end == mine.range.start
            and _lags(truth, other, desc)
            for other, desc in local.items()
        ):
            continue
        out.append((pid, mine.epoch))
    return out


def _lags(truth: PartitionMap, pid: int, mine: PartitionDescriptor) -> bool:
    known = truth.partitions.get(pid)
    return known is None or known.epoch > mine.epoch
