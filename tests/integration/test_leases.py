"""Leases on real node processes: bad input, expiry after the owner stops, revoke, leader change."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from kvcluster.client import AsyncClient, Consistency, NotFound, SyncClient
from kvcluster.local import LocalCluster

from .conftest import ClusterFactory

KEYS = [f"lease-test/{i}".encode() for i in range(8)]  # spread over both partitions


def meta_leader(cluster: LocalCluster, via: int = 1) -> int | None:
    status, body = cluster.get_json(via, "/v1/admin/map")
    if status != 200:
        return None
    leader = body["leaders"].get("0")
    return int(leader) if leader else None


async def present(kv: AsyncClient, consistency: Consistency = "linearizable") -> list[bool]:
    return [await kv.get(k, consistency=consistency) is not None for k in KEYS]


async def assert_held_until(
    readers: list[AsyncClient], until: float, why: str, consistency: Consistency = "linearizable"
) -> int:
    """Every key reads back until ``until``; a read counts only if it *finished* before then.

    (A read that started in time but finished later, e.g. waiting out an
    election, may rightly see the keys gone.) Returns how many reads counted.
    """
    in_time = 0
    while time.monotonic() < until:
        for kv, k in [(kv, k) for kv in readers for k in KEYS]:
            found = await kv.get(k, consistency=consistency) is not None
            assert found or time.monotonic() >= until, f"{k!r}: {why}"
            in_time += time.monotonic() < until
        await asyncio.sleep(0.1)
    return in_time


async def test_bad_lease_input_is_refused_and_stores_nothing(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    url = cluster.urls()[0]
    async with aiohttp.ClientSession() as s:
        for body in [
            b"",
            b"not json",
            b"{}",
            b'{"ttl": -1}',
            b'{"ttl": 1e12}',
            b'{"ttl": "5"}',
            b'{"ttl": true}',
        ]:
            async with s.post(url + "/v1/leases", data=body) as r:
                assert r.status == 400, body
                assert (await r.json())["error"]["code"] == "bad_request"
        async with s.post(url + "/v1/leases/999/keepalive") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        async with s.delete(url + "/v1/leases/abc") as r:
            assert r.status == 400
        async with s.put(url + "/v1/kv/orphan?lease=999", data=b"x") as r:
            assert r.status == 404 and (await r.json())["error"]["lease"] == 999
        async with s.put(url + "/v1/kv/orphan?lease=abc", data=b"x") as r:
            assert r.status == 400
    async with AsyncClient(cluster.urls()) as kv:
        assert await kv.get("orphan") is None


async def test_lease_keys_live_while_kept_alive_and_expire_after_owner_stops(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    ttl = 2.0
    async with AsyncClient(cluster.urls()) as kv:
        lease = await kv.lease_grant(ttl)
        for k in KEYS:
            await kv.put(k, b"held", lease=lease)
        await kv.put("lease-test/rewritten", b"v1", lease=lease)
        await kv.put("lease-test/rewritten", b"v2")  # written again without the lease: survives
        # Kept alive for well past one ttl: nothing expires.
        until = time.monotonic() + 2.5 * ttl
        while time.monotonic() < until:
            await kv.lease_keepalive(lease)
            assert all(await present(kv)), "a kept-alive lease expired"
            await asyncio.sleep(ttl / 4)
        last_keepalive = time.monotonic()
        await kv.lease_keepalive(lease)
        # The owner stops: the keys stay for (at least) ttl after the last keep-alive ...
        await assert_held_until([kv], last_keepalive + ttl - 0.3, "expired before its ttl ran out")
        # ... and are then deleted on every replica by the logged expiry.
        deadline = last_keepalive + ttl + 10
        while any(await present(kv)):
            assert time.monotonic() < deadline, "lease keys outlived the lease"
            await asyncio.sleep(0.1)
        expired_after = time.monotonic() - last_keepalive
        item = await kv.get("lease-test/rewritten")
        assert item is not None and item.value == b"v2"
        try:
            await kv.lease_keepalive(lease)
            raise AssertionError("keep-alive of an expired lease succeeded")
        except NotFound:
            pass
        # Every replica deleted them (stale reads are served locally).
        for url in cluster.urls():
            async with AsyncClient([url]) as one:
                assert all([await one.get(k, consistency="stale") is None for k in KEYS])
    print(f"lease with ttl {ttl}s: keys gone {expired_after:.2f}s after the last keep-alive")


async def test_revoke_deletes_keys_at_once(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    async with AsyncClient(cluster.urls()) as kv:
        lease = await kv.lease_grant(60)
        for k in KEYS:
            await kv.put(k, b"held", lease=lease)
        assert await kv.lease_revoke(lease) == len(KEYS)
        assert not any(await present(kv))
        try:
            await kv.put("lease-test/late", b"x", lease=lease)
            raise AssertionError("put bound to a revoked lease succeeded")
        except NotFound:
            pass
        assert await kv.get("lease-test/late") is None


async def test_no_early_expiry_when_the_meta_leader_is_paused(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    ttl = 4.0
    leader = cluster.wait_for(lambda: meta_leader(cluster), 10, "a meta leader")
    others = [u for n, u in zip(sorted(cluster.nodes), cluster.urls(), strict=True) if n != leader]
    async with AsyncClient(others, follow_leaders=False) as kv:
        lease = await kv.lease_grant(ttl)
        for k in KEYS:
            await kv.put(k, b"held", lease=lease)
        # Every replica holds every key before the pause, so a stale read that misses one later
        # means a delete was applied there -- not a follower that had not caught up yet.
        deadline = time.monotonic() + 10
        for url in cluster.urls():
            async with AsyncClient([url], follow_leaders=False) as one:
                while not all(await present(one, "stale")):
                    assert time.monotonic() < deadline, f"{url} never applied the lease-bound puts"
                    await asyncio.sleep(0.05)
        await kv.lease_keepalive(lease)
        paused_at = time.monotonic()
        cluster.pause(leader)
        try:
            # A new meta leader is elected; it must grant a fresh full ttl, never expire early.
            # Stale reads on both survivors, served by their own replicas: they do not wait out the
            # paused node as linearizable reads forwarded to it would, and (every key having been
            # applied everywhere before the pause) a key missing on either was deleted there.
            survivors = [AsyncClient([u], follow_leaders=False) for u in others]
            reads = await assert_held_until(
                survivors, paused_at + ttl - 0.3, "lease expired early across the leader change", "stale"
            )
            for c in survivors:
                await c.close()
            assert reads >= 2 * len(KEYS), f"only {reads} reads finished in time: the check proved nothing"
            new_leader = cluster.wait_for(
                lambda: meta_leader(cluster, via=3 if leader != 3 else 2) not in (None, leader),
                10,
                "a new meta leader",
            )
            assert new_leader
            # Stale reads on one live node: its own replicas apply the logged deletes too, and the
            # client's cached routes to the paused node would only slow linearizable reads down.
            other = AsyncClient(others[:1], follow_leaders=False)
            deadline = paused_at + 2 * ttl + 15
            while any([await other.get(k, consistency="stale") is not None for k in KEYS]):
                assert time.monotonic() < deadline, "the new meta leader never expired the lease"
                await asyncio.sleep(0.1)
            gone_after = time.monotonic() - paused_at
            await other.close()
        finally:
            cluster.resume(leader)
    print(
        f"ttl {ttl}s, meta leader paused: {reads} reads in time saw the keys; "
        f"keys gone {gone_after:.2f}s after the pause"
    )


def test_lock_command_excludes_a_second_holder_and_frees_on_exit(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    trace = tmp_path / "trace"
    body = (
        "import sys, time; f = open(sys.argv[1], 'a'); f.write('start\\n'); f.flush(); "
        "time.sleep(1.5); f.write('end\\n'); f.close(); sys.exit(7)"
    )
    base = [sys.executable, "-m", "kvcluster", "lock", "-e", ",".join(cluster.urls()), "--ttl", "3"]
    holders = [
        subprocess.Popen([*base, "job", "--", sys.executable, "-c", body, str(trace)]) for _ in range(2)
    ]
    try:
        codes = [p.wait(timeout=60) for p in holders]
    finally:
        for p in holders:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [7, 7]  # each ran CMD and passed its exit code on
    assert trace.read_text() == "start\nend\nstart\nend\n", "the two holders overlapped"
    with SyncClient(cluster.urls()) as kv:
        assert kv.get("locks/job") is None  # released (revoked) on exit
        out = subprocess.run(
            [sys.executable, "-m", "kvcluster", "lease", "grant", "-e", cluster.urls()[0], "30"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        lease = int(out.stdout)
        kv.put("lease-test/cli", b"x", lease=lease)
        gone = subprocess.run(
            [sys.executable, "-m", "kvcluster", "lease", "revoke", "-e", cluster.urls()[0], str(lease)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (gone.returncode, gone.stdout.strip()) == (0, "1")
        assert kv.get("lease-test/cli") is None
