"""The async client against a real 3-node cluster: the key-value API end to end."""

from __future__ import annotations

import asyncio
import time

import pytest

from kvcluster.client import (
    AsyncClient,
    Item,
    NotFound,
    TooLarge,
    Unavailable,
    VersionConflict,
)
from kvcluster.keyspace import key_hash

from .conftest import MAX_KEY_BYTES, MAX_VALUE_BYTES, NodeCluster, dead_endpoint

ODD_KEYS = [
    b"a/b/c",
    b"/leading/slash",
    b"trailing/",
    b"100%",
    b"%2F-literally",
    b"with space",
    b"plus+sign",
    b"q?x=1&y=2#frag",
    b"\xff\xfe\x80 not utf-8",
    b"nul\x00inside",
    b"\x00",
    b"..",
    b".",
    b"a/../b",
    b"a//b",
    "ünïcødé ✓".encode(),
]


async def test_put_get_delete_round_trip(client: AsyncClient, prefix: bytes) -> None:
    key = prefix + b"greeting"
    v1 = await client.put(key, b"hello")
    assert v1 > 0
    assert await client.get(key) == Item(key, b"hello", v1)
    v2 = await client.put(key.decode(), "hi again")  # str key and value: UTF-8
    assert v2 > v1
    assert await client.get(key) == Item(key, b"hi again", v2)
    dv = await client.delete(key)
    assert dv > v2
    assert await client.get(key) is None
    with pytest.raises(NotFound) as err:
        await client.delete(key)
    assert err.value.status == 404
    assert err.value.code == "not_found"


async def test_get_missing_key_is_none(client: AsyncClient, prefix: bytes) -> None:
    assert await client.get(prefix + b"never-written") is None
    assert await client.get(prefix + b"never-written", consistency="stale") is None


@pytest.mark.parametrize("raw", ODD_KEYS, ids=repr)
async def test_binary_keys_and_values_round_trip(client: AsyncClient, raw: bytes) -> None:
    value = b"\x00\xff" + raw + bytes(range(256))
    version = await client.put(raw, value)
    try:
        assert await client.get(raw) == Item(raw, value, version)
        page = await client.scan(prefix=raw, limit=1)
        assert page.items[0] == Item(raw, value, version)  # the first key with this prefix is itself
    finally:
        await client.delete(raw)
    assert await client.get(raw) is None


async def test_listing_decodes_utf8_and_base64_items(client: AsyncClient, prefix: bytes) -> None:
    written = {
        prefix + b"text": b"plain text",
        prefix + b"binary-value": b"\xff\x00\x01",  # UTF-8 key, binary value: both base64
        prefix + b"\xc3\x28 bad utf-8": b"text value",
        prefix + b"slash/and space": "ünï".encode(),
    }
    versions = {k: await client.put(k, v) for k, v in written.items()}
    page = await client.scan(prefix=prefix)
    assert page.next is None
    assert [(i.key, i.value, i.version) for i in page.items] == [
        (k, written[k], versions[k]) for k in sorted(written)
    ]


async def test_compare_and_set(client: AsyncClient, prefix: bytes) -> None:
    key = prefix + b"cas"
    v1 = await client.put(key, b"one")
    v2 = await client.put(key, b"two", if_version=v1)
    assert v2 > v1
    with pytest.raises(VersionConflict) as err:
        await client.put(key, b"stale writer", if_version=v1)
    assert err.value.current_version == v2
    assert err.value.status == 409
    assert err.value.to_dict()["error"]["current_version"] == v2
    assert await client.get(key) == Item(key, b"two", v2)  # the losing write changed nothing
    with pytest.raises(VersionConflict) as err:
        await client.delete(key, if_version=v1)
    assert err.value.current_version == v2
    assert await client.delete(key, if_version=v2) > v2
    assert await client.get(key) is None


async def test_if_version_zero_creates_only(client: AsyncClient, prefix: bytes) -> None:
    key = prefix + b"create-once"
    v1 = await client.put(key, b"first", if_version=0)
    with pytest.raises(VersionConflict) as err:
        await client.put(key, b"second", if_version=0)
    assert err.value.current_version == v1
    assert (await client.get(key)) == Item(key, b"first", v1)


async def test_invalid_if_version_is_refused_client_side(client: AsyncClient, prefix: bytes) -> None:
    with pytest.raises(ValueError):
        await client.put(prefix + b"k", b"v", if_version=-1)


async def test_too_large_key_and_value(client: AsyncClient, prefix: bytes) -> None:
    at_limit = b"k" * MAX_KEY_BYTES
    assert await client.put(at_limit, b"ok") > 0
    await client.delete(at_limit)
    with pytest.raises(TooLarge) as err:
        await client.put(b"k" * (MAX_KEY_BYTES + 1), b"v")
    assert err.value.status == 413
    assert "limit" in err.value.message
    with pytest.raises(TooLarge):
        await client.get(b"\xff" * (MAX_KEY_BYTES + 1))  # escaped to 3 URL chars per byte
    key = prefix + b"big"
    assert await client.put(key, b"v" * MAX_VALUE_BYTES) > 0
    with pytest.raises(TooLarge) as err:
        await client.put(key, b"v" * (MAX_VALUE_BYTES + 1))
    assert err.value.code == "too_large"
    item = await client.get(key)
    assert item is not None and len(item.value) == MAX_VALUE_BYTES  # the refused write changed nothing


async def test_scan_pages_cover_every_key_once_in_order(
    client: AsyncClient, cluster: NodeCluster, prefix: bytes
) -> None:
    keys = [prefix + f"item-{i:04d}".encode() for i in range(230)]
    sem = asyncio.Semaphore(32)

    async def put(k: bytes) -> None:
        async with sem:
            await client.put(k, b"value of " + k)

    await asyncio.gather(*(put(k) for k in keys))
    # Neighbours that share a prefix with ours but must not show up.
    outside = [prefix[:-1] + b"-sibling", prefix[:-1], b"\x00" + prefix]
    for k in outside:
        await client.put(k, b"outside")

    # The keys really live in every partition, so pages are merged across partitions.
    ranges = [
        (int(p["range"]["start"], 16), int(p["range"]["end"], 16))
        for p in (await client.cluster())["partitions"]
    ]
    owners = {next(i for i, (s, e) in enumerate(ranges) if s <= key_hash(k) < e) for k in keys}
    assert len(owners) == 4

    pages = [page async for page in client.scan_all(prefix, page_size=50)]
    assert len(pages) == 5
    assert all(len(p) == 50 for p in pages[:-1]) and len(pages[-1]) == 30
    assert all(p.next for p in pages[:-1]) and pages[-1].next is None
    listed = [i.key for p in pages for i in p.items]
    assert listed == sorted(keys)
    assert all(i.value == b"value of " + i.key for p in pages for i in p.items)

    # Manual paging with the cursor, and an explicit start key.
    first = await client.scan(prefix=prefix, limit=100)
    second = await client.scan(prefix=prefix, limit=100, cursor=first.next)
    assert [i.key for i in first.items + second.items] == sorted(keys)[:200]
    from_start = await client.scan(prefix=prefix, start=keys[123], limit=10)
    assert [i.key for i in from_start.items] == sorted(keys)[123:133]

    for k in outside:
        await client.delete(k)


async def test_stale_read_catches_up(client: AsyncClient, prefix: bytes) -> None:
    key = prefix + b"stale"
    version = await client.put(key, b"v")
    deadline = time.monotonic() + 10
    while (item := await client.get(key, consistency="stale")) != Item(key, b"v", version):
        assert time.monotonic() < deadline, f"stale read still {item}"
        await asyncio.sleep(0.02)  # poll interval, bounded by the deadline


async def test_cluster_metrics_ready(client: AsyncClient, cluster: NodeCluster) -> None:
    view = await client.cluster()
    assert [n["id"] for n in view["nodes"]] == [1, 2, 3]
    assert all(n["reachable"] for n in view["nodes"])
    assert len(view["partitions"]) == 4
    assert all(p["leader"] in (1, 2, 3) for p in view["partitions"])
    text = await client.metrics(cluster.endpoints[1])
    assert "# TYPE" in text
    for endpoint in cluster.endpoints:
        assert await client.ready(endpoint)
    assert not await client.ready(dead_endpoint())


async def test_failover_past_a_dead_endpoint(cluster: NodeCluster, prefix: bytes) -> None:
    dead = dead_endpoint()
    async with AsyncClient([dead, *cluster.endpoints]) as kv:
        version = await kv.put(prefix + b"k", b"v")  # connection refused: certainly not sent, retried
        assert kv.preferred_endpoint == cluster.endpoints[0]
        assert await kv.get(prefix + b"k") == Item(prefix + b"k", b"v", version)
        # Exactly one write took effect: the next write bumps the version once.
        assert await kv.put(prefix + b"k", b"w", if_version=version) > version


async def test_no_endpoint_reachable(prefix: bytes) -> None:
    async with AsyncClient([dead_endpoint(), dead_endpoint()], timeout=2.0) as kv:
        started = time.monotonic()
        with pytest.raises(Unavailable) as err:
            await kv.get(prefix + b"k")
        assert err.value.code == "unreachable"
        with pytest.raises(Unavailable):  # never sent: Unavailable, not OutcomeUnknown
            await kv.put(prefix + b"k", b"v")
        assert time.monotonic() - started < 6.0


@pytest.mark.slow
async def test_failover_when_a_node_dies(own_cluster: NodeCluster, prefix: bytes) -> None:
    async with AsyncClient(own_cluster.endpoints, timeout=20.0, follow_leaders=False) as kv:
        before = {
            prefix + f"{i}".encode(): await kv.put(prefix + f"{i}".encode(), b"before") for i in range(8)
        }
        assert kv.preferred_endpoint == own_cluster.endpoints[0]
        own_cluster.kill(1)  # node 1 leads some partitions; the others must elect new leaders
        for key, version in before.items():
            assert await kv.get(key) == Item(key, b"before", version)
            assert await kv.put(key, b"after", if_version=version) > version
        assert kv.preferred_endpoint != own_cluster.endpoints[0]
        page = await kv.scan(prefix=prefix)
        assert sorted(i.key for i in page.items) == sorted(before)
        assert {i.value for i in page.items} == {b"after"}


async def test_client_goes_straight_to_the_partition_leader(cluster: NodeCluster) -> None:
    """Writes sent to one node land on the leaders directly once the routing table is known."""
    async with AsyncClient(cluster.endpoints[:1], timeout=15.0) as kv:
        for i in range(40):
            await kv.put(f"route/{i}", b"x")
        table = kv._routes
        assert table is not None and all(url is not None for url in table.leaders)
        forwarded_before = await _forwarded_total(kv, cluster)
        for i in range(40):
            await kv.put(f"route/{i}", b"y")
        assert await _forwarded_total(kv, cluster) == forwarded_before, "a write was forwarded between nodes"
    async with AsyncClient(cluster.endpoints[:1], timeout=15.0, follow_leaders=False) as plain:
        for i in range(40):
            await plain.put(f"route/{i}", b"z")
        assert await _forwarded_total(plain, cluster) > forwarded_before, "the control run never forwarded"


async def _forwarded_total(kv: AsyncClient, cluster: NodeCluster) -> float:
    total = 0.0
    for endpoint in cluster.endpoints:
        for line in (await kv.metrics(endpoint)).splitlines():
            if line.startswith('kvcluster_forwarded_requests_total{op="put"}'):
                total += float(line.split()[-1])
    return total
