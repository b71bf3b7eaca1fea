"""The blocking client, from plain synchronous code and from inside a running event loop."""

from __future__ import annotations

import threading

import pytest

from kvcluster.client import Item, NotFound, SyncClient, Unavailable, VersionConflict

from .conftest import NodeCluster, dead_endpoint


def test_sync_client_from_plain_code(cluster: NodeCluster, prefix: bytes) -> None:
    threads_before = threading.active_count()
    with SyncClient([dead_endpoint(), *cluster.endpoints]) as kv:
        assert threading.active_count() == threads_before + 1
        v1 = kv.put(prefix + b"a", b"1")
        assert kv.get(prefix + b"a") == Item(prefix + b"a", b"1", v1)
        with pytest.raises(VersionConflict) as err:
            kv.put(prefix + b"a", b"2", if_version=v1 + 1000)
        assert err.value.current_version == v1
        for i in range(5):
            kv.put(prefix + f"b{i}".encode(), b"x")
        pages = list(kv.scan_all(prefix, page_size=2))
        assert [len(p) for p in pages] == [2, 2, 2]
        assert [i.key for p in pages for i in p.items] == [prefix + b"a"] + [
            prefix + f"b{i}".encode() for i in range(5)
        ]
        assert kv.delete(prefix + b"a") > v1
        with pytest.raises(NotFound):
            kv.delete(prefix + b"a")
        assert len(kv.cluster()["partitions"]) == 4
        assert kv.ready(cluster.endpoints[2])
        assert kv.preferred_endpoint in cluster.endpoints
    # closing stopped the background loop thread
    assert threading.active_count() == threads_before
    kv.close()  # idempotent
    with pytest.raises(RuntimeError):
        kv.get(prefix + b"a")


async def test_sync_client_inside_a_running_loop(cluster: NodeCluster, prefix: bytes) -> None:
    # asyncio.run() would refuse here; the client's private loop does not care.
    with SyncClient(cluster.endpoints) as kv:
        version = kv.put(prefix + b"k", "v")
        assert kv.get(prefix + b"k") == Item(prefix + b"k", b"v", version)


def test_sync_client_errors_propagate(prefix: bytes) -> None:
    with SyncClient([dead_endpoint()], timeout=1.0) as kv, pytest.raises(Unavailable):
        kv.get(prefix + b"k")
