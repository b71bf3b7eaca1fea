"""Crash a leader with kill -9 under write load; nothing acknowledged may be lost."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from kvcluster.keyspace import KeyRange, key_hash
from kvcluster.local import LocalCluster

from .conftest import ClusterFactory
from .nodehttp import get, kv_url

pytestmark = pytest.mark.slow


@dataclass
class Load:
    """Writers putting unique keys; records what was acknowledged and when."""

    urls: list[str]
    acked: dict[bytes, bytes] = field(default_factory=dict)
    ack_times: list[tuple[float, float, bytes]] = field(default_factory=list)
    """(started, acknowledged, key)"""
    failures: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def writer(self, session: aiohttp.ClientSession, wid: int) -> None:
        n = 0
        while not self.stop.is_set():
            key = f"w{wid}/{n}".encode()
            value = f"value-{wid}-{n}".encode()
            n += 1
            url = self.urls[(wid + n) % len(self.urls)]
            started = time.monotonic()
            try:
                async with session.put(
                    kv_url(url, key), data=value, timeout=aiohttp.ClientTimeout(total=10)
                ) as r:
                    if r.status == 200:
                        self.acked[key] = value
                        self.ack_times.append((started, time.monotonic(), key))
                    else:
                        self.failures += 1
            except (aiohttp.ClientError, TimeoutError):
                self.failures += 1  # the node we asked was the one killed; the outcome is unknown

    def acked_in(self, rng: KeyRange, after: float) -> int:
        return sum(1 for s, _, k in self.ack_times if s > after and rng.contains(key_hash(k)))


def partition_range(cluster: LocalCluster, partition: int) -> KeyRange:
    for p in cluster.cluster_view()["partitions"]:
        if p["id"] == partition:
            return KeyRange(int(p["range"]["start"], 16), int(p["range"]["end"], 16))
    raise KeyError(partition)


def applied_on(cluster: LocalCluster, node: int, partition: int) -> int | None:
    status, view = cluster.get_json(node, "/v1/cluster", timeout=5.0)
    if status != 200:
        return None
    for p in view["partitions"]:
        if p["id"] == partition:
            value = p["applied"].get(str(node))
            return int(value) if value is not None else None
    return None


async def write_acknowledged(
    session: aiohttp.ClientSession, urls: list[str], prefix: str, count: int
) -> dict[bytes, bytes]:
    """Put ``count`` keys round-robin over ``urls``; every one must be acknowledged."""
    written: dict[bytes, bytes] = {}

    async def write(i: int) -> None:
        key, value = f"{prefix}/{i}".encode(), f"v{i}".encode()
        async with session.put(kv_url(urls[i % len(urls)], key), data=value) as resp:
            assert resp.status == 200
            written[key] = value

    await asyncio.gather(*(write(i) for i in range(count)))
    return written


async def verify_all_readable(
    session: aiohttp.ClientSession, cluster: LocalCluster, acked: dict[bytes, bytes]
) -> None:
    urls = cluster.urls()
    sem = asyncio.Semaphore(32)

    async def check(i: int, key: bytes, value: bytes) -> None:
        async with sem:
            status, body, _ = await get(session, urls[i % len(urls)], key)
            assert (status, body) == (200, value), (
                f"acknowledged write {key!r} lost or wrong: {status} {body!r}"
            )

    await asyncio.gather(*(check(i, k, v) for i, (k, v) in enumerate(acked.items())))


async def test_kill_leader_under_load_then_catch_up(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    load = Load(cluster.urls())
    async with aiohttp.ClientSession() as session:
        writers = [asyncio.create_task(load.writer(session, i)) for i in range(8)]
        await asyncio.sleep(0)
        deadline = time.monotonic() + 20
        while len(load.acked) < 200:
            assert time.monotonic() < deadline, "the cluster did not take writes"
            await asyncio.sleep(0.05)
        leader = cluster.wait_for(lambda: cluster.leader_of(1), 10, "a leader of partition 1")
        rng = partition_range(cluster, 1)
        killed_at = time.monotonic()
        cluster.kill(leader)
        # Writes to the crashed leader's partition must succeed again within a few seconds.
        while load.acked_in(rng, killed_at) < 20:
            assert time.monotonic() - killed_at < 10, "partition 1 did not recover from losing its leader"
            await asyncio.sleep(0.05)
        recovery = (
            min(a for s, a, k in load.ack_times if s > killed_at and rng.contains(key_hash(k))) - killed_at
        )
        new_leader = cluster.wait_for(
            lambda: cluster.leader_of(1, via=next(n for n in (1, 2, 3) if n != leader)), 10, "new leader"
        )
        assert new_leader != leader
        cluster.start_node(leader)
        await asyncio.sleep(1.0)  # keep writing while the restarted node catches up
        load.stop.set()
        await asyncio.gather(*writers)
        cluster.wait_ready(timeout=30)

        def caught_up() -> bool:
            target = applied_on(cluster, new_leader, 1)
            mine = applied_on(cluster, leader, 1)
            return target is not None and mine is not None and mine >= target

        cluster.wait_for(caught_up, 20, "the restarted node to catch up")
        await verify_all_readable(session, cluster, load.acked)
        # The restarted replica itself serves every acknowledged key of its partitions (stale read = local).
        restarted = cluster.nodes[leader].url
        for key, value in list(load.acked.items())[:300]:
            status, body, _ = await get(session, restarted, key, consistency="stale")
            assert (status, body) == (200, value)
    print(
        f"acknowledged {len(load.acked)} writes, {load.failures} failed/unknown; "
        "the first write issued after kill -9 to the leaderless partition was acknowledged "
        f"{recovery:.2f}s after the kill"
    )


async def test_follower_behind_compacted_log_catches_up_by_snapshot(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=1, replicas=3, node_args=["--snapshot-entries", "50"])
    leader = cluster.wait_for(lambda: cluster.leader_of(1), 10, "a leader")
    follower = next(n for n in (1, 2, 3) if n != leader)
    cluster.kill(follower)
    live = [cluster.nodes[n].url for n in (1, 2, 3) if n != follower]
    written: dict[bytes, bytes] = {}
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(16)

        async def write(i: int) -> None:
            key, value = f"snap/{i}".encode(), f"v{i}".encode() * 10
            async with sem, session.put(kv_url(live[i % 2], key), data=value) as resp:
                assert resp.status == 200
                written[key] = value

        await asyncio.gather(*(write(i) for i in range(400)))
        leader_db = cluster.nodes[leader].data_dir / "kv.db"

        def compacted() -> bool:
            conn = sqlite3.connect(f"file:{leader_db}?mode=ro", uri=True)
            try:
                first = conn.execute("SELECT MIN(idx) FROM raft_log WHERE partition = 1").fetchone()[0]
                snap = conn.execute("SELECT snap_index FROM replica WHERE partition = 1").fetchone()[0]
            finally:
                conn.close()
            return snap > 0 and (first is None or first > 1)

        cluster.wait_for(compacted, 10, "the leader to compact its log")
        cluster.start_node(follower)
        cluster.wait_ready(timeout=30, nodes=[follower])

        def caught_up() -> bool:
            target = applied_on(cluster, leader, 1)
            mine = applied_on(cluster, follower, 1)
            return target is not None and mine is not None and mine >= target

        cluster.wait_for(caught_up, 20, "the follower to catch up")
        async with session.get(cluster.nodes[follower].url + "/metrics") as resp:
            metrics = await resp.text()
        installed = [
            line
            for line in metrics.splitlines()
            if line.startswith("kvcluster_raft_snapshots_installed_total")
        ]
        assert installed and float(installed[0].split()[-1]) >= 1, installed
        for key, value in written.items():
            status, body, _ = await get(session, cluster.nodes[follower].url, key, consistency="stale")
            assert (status, body) == (200, value)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
async def test_restart_of_all_nodes_keeps_every_acknowledged_write(
    make_cluster: ClusterFactory, how: str
) -> None:
    cluster = make_cluster(nodes=3, partitions=4, replicas=3, name=how)
    async with aiohttp.ClientSession() as session:
        written = await write_acknowledged(session, cluster.urls(), "restart", 150)
        for node in (1, 2, 3):
            if how == "kill9":
                cluster.kill(node)
            else:
                assert cluster.stop_node(node) == 0
        cluster.start()
        cluster.wait_ready(timeout=30)
        await verify_all_readable(session, cluster, written)
