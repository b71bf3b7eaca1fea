"""Store bugs the torture runs found, each pinned down to a deterministic reproduction.

These tests reach into the server on purpose (tests are not bound by the
package layering): a torture run shows *that* something breaks, these show
*where*, in milliseconds instead of minutes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack

from kvcluster.keyspace import KeyRange, PartitionDescriptor
from kvcluster.raft import ConfState, Message, MessageType, SnapshotMeta
from kvcluster.server.config import NodeConfig
from kvcluster.server.host import RaftHost
from kvcluster.server.metrics import NodeMetrics
from kvcluster.storage import Store
from kvcluster.storage.store import Batch, BatchResult


class _Links:
    """Peer links that go nowhere: the test only looks at what the host persists."""

    def send(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _SlowStore(Store):
    """A store whose next write waits for the test's signal: the host loop is inside ``await store.write``."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.hold_next = False

    async def write(self, batch: Batch) -> BatchResult:
        if self.hold_next:
            self.hold_next = False
            self.entered.set()
            await self.release.wait()
        return await super().write(batch)


def _snapshot(node: int, partition: int, index: int) -> tuple[Message, bytes]:
    """A leader's InstallSnapshot for a partition this node was just added to (as a learner)."""
    desc = PartitionDescriptor(partition, KeyRange(0, 1 << 62), epoch=3, voters=(1, 2, 3), learners=(node,))
    body = {
        "format": 1,
        "descriptor": desc.to_dict(),
        "revision": 7,
        "frozen": False,
        "meta": None,
        "rows": [],
    }
    meta = SnapshotMeta(index, 2, ConfState.of([1, 2, 3], [node]))
    message = Message(MessageType.SNAPSHOT, to=node, sender=1, term=2, snapshot=meta)
    return message, msgpack.packb(body, use_bin_type=True)


async def test_a_resent_snapshot_while_the_new_replica_is_being_written_creates_it_once(
    tmp_path: Path,
) -> None:
    """Found by the first soak (seed 1234) and by ``--nemesis reshape:replicas --nodes 5 --partitions 8``
    (seeds 77, 78, 80, 81): the node exited 70 on ``UNIQUE constraint failed: replica.partition``.
    Fixed in 6dabf5f (``RaftHost._creating``)."""
    node = 4
    store = _SlowStore(tmp_path / "data")
    cfg = NodeConfig(node_id=node, data_dir=tmp_path / "data", peers={i: f"http://n{i}" for i in range(1, 6)})
    host = RaftHost(cfg, store, _Links(), _Links(), NodeMetrics())  # type: ignore[arg-type]
    try:
        first, data = _snapshot(node, partition=9, index=193)
        host.receive_snapshot(9, first, data)
        store.hold_next = True
        turn = asyncio.create_task(host._turn())  # creates the replica: one batch, one transaction
        await asyncio.wait_for(store.entered.wait(), 10)
        # The leader has not heard back yet and sends the snapshot again (the soak's logs show resends
        # 84 ms apart), while the batch that creates the replica is still being written.
        again, data2 = _snapshot(node, partition=9, index=194)
        host.receive_snapshot(9, again, data2)
        store.release.set()
        await asyncio.wait_for(turn, 10)
        # The next loop turn must not try to create partition 9 a second time (before the fix:
        # sqlite3.IntegrityError: UNIQUE constraint failed: replica.partition -> the node exits 70).
        await asyncio.wait_for(host._turn(), 10)
        assert list(host.replicas) == [9]
    finally:
        store.close()
