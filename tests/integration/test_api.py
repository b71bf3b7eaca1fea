"""The HTTP API end to end on a real 3-node cluster, including every documented error."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import sqlite3
import time

import aiohttp
import pytest

from kvcluster.local import LocalCluster

from .conftest import ClusterFactory
from .nodehttp import get, kv_url, put

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(make_cluster: ClusterFactory) -> LocalCluster:
    return make_cluster(nodes=3, partitions=4, replicas=3, node_args=["--max-value-bytes", "4096"])


async def assert_still_serving(session: aiohttp.ClientSession, cluster: LocalCluster) -> None:
    """After an error, the node answers normal traffic again."""
    url = cluster.urls()[0]
    status, body = await put(session, url, "after-error", b"fine")
    assert status == 200, body
    status, value, _ = await get(session, cluster.urls()[-1], "after-error")
    assert (status, value) == (200, b"fine")


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, object]:
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


async def test_put_get_delete_through_any_node(cluster: LocalCluster) -> None:
    n1, n2, n3 = cluster.urls()
    async with aiohttp.ClientSession() as s:
        status, body = await put(s, n1, "greeting", b"hello")
        assert status == 200 and body["key"] == "greeting" and body["version"] > 0
        version = body["version"]
        assert await get(s, n2, "greeting") == (200, b"hello", version)
        # A stale read is served by whichever replica it reaches; it converges once that replica applied.
        deadline = time.monotonic() + 5
        while (stale := await get(s, n3, "greeting", consistency="stale")) != (200, b"hello", version):
            assert time.monotonic() < deadline, stale
            await asyncio.sleep(0.05)
        # keys may hold slashes and arbitrary bytes
        for key in (b"app/config/db", b"sp ace", b"pct%2F", b"\x00\xff\xfe", "ключ".encode()):
            st, b = await put(s, n3, key, key * 2)
            assert st == 200, b
            st, value, _ = await get(s, n1, key)
            assert (st, value) == (200, key * 2)
        async with s.get(f"{n1}/v1/kv/app/config/db") as resp:  # an unescaped slash is part of the key
            assert resp.status == 200 and await resp.read() == b"app/config/dbapp/config/db"
        async with s.delete(kv_url(n2, "greeting")) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["deleted"] is True and body["version"] > version
        assert (await get(s, n1, "greeting"))[0] == 404


async def test_compare_and_set_and_create_only(cluster: LocalCluster) -> None:
    n1, n2, _ = cluster.urls()
    async with aiohttp.ClientSession() as s:
        st, body = await put(s, n1, "cas", b"v1", if_version=0)
        assert st == 200
        v1 = body["version"]
        async with s.put(kv_url(n2, "cas", if_version=0), data=b"again") as resp:
            err = await error_of(resp)
            assert resp.status == 409 and err["code"] == "version_conflict" and err["current_version"] == v1
        async with s.put(kv_url(n2, "cas", if_version=v1 + 1000), data=b"wrong") as resp:
            assert resp.status == 409
        st, body = await put(s, n2, "cas", b"v2", if_version=v1)
        assert st == 200 and body["version"] > v1
        assert (await get(s, n1, "cas"))[1] == b"v2"  # the failed CAS stored nothing
        async with s.delete(kv_url(n1, "cas", if_version=v1)) as resp:
            assert resp.status == 409
        assert (await get(s, n1, "cas"))[1] == b"v2"


async def test_listing_paginates_in_key_order_and_round_trips_binary(cluster: LocalCluster) -> None:
    n1, n2, _ = cluster.urls()
    keys = [*sorted(f"list/{i:03d}".encode() for i in range(57)), b"list/\xff\x00bin"]
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(put(s, n1, k, b"value-" + k) for k in keys))
        await put(s, n1, "other/x", b"not listed")
        seen: list[bytes] = []
        start = ""
        pages = 0
        while True:
            async with s.get(f"{n2}/v1/kv?prefix=list/&limit=10&start={start}") as resp:
                assert resp.status == 200
                page = await resp.json()
            pages += 1
            assert page["count"] == len(page["items"]) <= 10
            for item in page["items"]:
                if item["encoding"] == "base64":
                    key, value = base64.b64decode(item["key"]), base64.b64decode(item["value"])
                else:
                    key, value = item["key"].encode(), item["value"].encode()
                assert value == b"value-" + key
                assert item["version"] > 0
                seen.append(key)
            if page["next"] is None:
                break
            start = page["next"]
        assert seen == sorted(keys) and pages == 6


async def test_bad_input_answers_json_errors_and_keeps_serving(cluster: LocalCluster) -> None:
    n1 = cluster.urls()[0]
    async with aiohttp.ClientSession() as s:
        cases = [
            ("PUT", f"{n1}/v1/kv/k?if_version=abc", b"x", 400, "bad_request"),
            ("PUT", f"{n1}/v1/kv/k?if_version=-1", b"x", 400, "bad_request"),
            ("GET", f"{n1}/v1/kv/k?consistency=sometimes", None, 400, "bad_request"),
            ("GET", f"{n1}/v1/kv?limit=0", None, 400, "bad_request"),
            ("GET", f"{n1}/v1/kv?limit=many", None, 400, "bad_request"),
            ("PUT", f"{n1}/v1/kv/", b"x", 400, "bad_request"),
            ("GET", f"{n1}/v1/kv/never-written", None, 404, "not_found"),
            ("DELETE", f"{n1}/v1/kv/never-written", None, 404, "not_found"),
            ("GET", f"{n1}/v1/nothing-here", None, 404, "no_such_endpoint"),
            ("POST", f"{n1}/v1/kv/k", b"x", 405, "method_not_allowed"),
            ("PUT", f"{n1}/v1/kv/{'k' * 1025}", b"x", 413, "too_large"),
            ("PUT", f"{n1}/v1/kv/big", b"x" * 4097, 413, "too_large"),
        ]
        for method, url, data, status, code in cases:
            async with s.request(method, url, data=data) as resp:
                err = await error_of(resp)
                assert (resp.status, err["code"]) == (status, code), (method, url, err)

        async def chunked() -> object:
            for _ in range(5):
                yield b"y" * 1000

        async with s.put(f"{n1}/v1/kv/big-chunked", data=chunked()) as resp:  # no Content-Length
            assert resp.status == 413 and (await error_of(resp))["code"] == "too_large"
        for key in ("k", "big", "big-chunked"):
            assert (await get(s, n1, key))[0] == 404, "nothing may be stored on error"
        async with s.get(f"{n1}/healthz") as resp:
            assert resp.status == 200
        await assert_still_serving(s, cluster)


async def test_unavailable_when_no_quorum_then_recovers(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(
        nodes=3, partitions=2, replicas=3, node_args=["--request-timeout", "1"], name="noquorum"
    )
    n1 = cluster.urls()[0]
    cluster.kill(2)
    cluster.kill(3)
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.put(kv_url(n1, "no-quorum"), data=b"x") as resp:
            err = await error_of(resp)
            # Node 1 leading: the write is pending when quorum goes (504); otherwise no leader took it (503).
            assert resp.status in (503, 504), err
            if resp.status == 503:
                assert err["code"] == "unavailable" and int(resp.headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 10
        async with s.get(kv_url(n1, "no-quorum")) as resp:
            assert resp.status == 503 and (await error_of(resp))["code"] == "unavailable"
            assert "Retry-After" in resp.headers
        async with s.get(f"{n1}/healthz") as resp:
            assert resp.status == 200  # alive, just not ready
        cluster.start_node(2)
        cluster.start_node(3)
        cluster.wait_ready(timeout=30)
        await assert_still_serving(s, cluster)


async def test_cluster_view_metrics_and_readiness(cluster: LocalCluster) -> None:
    n1 = cluster.urls()[0]
    async with aiohttp.ClientSession() as s:
        await put(s, n1, "m", b"1")
        async with s.get(f"{n1}/v1/cluster") as resp:
            view = await resp.json()
        assert [n["id"] for n in view["nodes"]] == [1, 2, 3] and all(n["reachable"] for n in view["nodes"])
        assert len(view["partitions"]) == 4
        ends = [(int(p["range"]["start"], 16), int(p["range"]["end"], 16)) for p in view["partitions"]]
        assert ends[0][0] == 0 and ends[-1][1] == 2**64
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ends))
        for p in view["partitions"]:
            assert p["voters"] == [1, 2, 3] and p["leader"] in (1, 2, 3) and p["term"] >= 1
            assert p["commit"] >= 1 and set(p["applied"]) == {"1", "2", "3"}
        async with s.get(f"{n1}/metrics") as resp:
            text = await resp.text()
        for name in (
            "kvcluster_http_requests_total",
            "kvcluster_storage_batch_seconds_count",
            "kvcluster_leaders",
        ):
            assert name in text
        async with s.get(f"{n1}/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["replicas"] == 5  # 4 data partitions + meta


async def test_bearer_token_and_peer_secret(make_cluster: ClusterFactory, tmp_path: object) -> None:
    from pathlib import Path

    secrets = Path(str(tmp_path)) / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("s3cret-token\n")
    (secrets / "peer").write_text("peer-secret\n")
    cluster = make_cluster(
        nodes=3,
        partitions=2,
        node_args=["--token-file", str(secrets / "token"), "--cluster-secret-file", str(secrets / "peer")],
        name="auth",
    )
    n1, n2, _ = cluster.urls()
    good = {"Authorization": "Bearer s3cret-token"}
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            async with s.put(kv_url(n1, "secure"), data=b"x", headers=headers) as resp:
                assert resp.status == 401 and (await error_of(resp))["code"] == "unauthorized"
        async with s.put(kv_url(n1, "secure"), data=b"x", headers=good) as resp:
            assert resp.status == 200  # forwarded between nodes with signed peer requests
        async with s.get(kv_url(n2, "secure"), headers=good) as resp:
            assert resp.status == 200 and await resp.read() == b"x"
        async with s.get(f"{n1}/healthz") as resp:
            assert resp.status == 200  # probes need no token
        async with s.get(f"{n1}/metrics") as resp:
            assert resp.status == 200  # nor does Prometheus (the chart's ServiceMonitor sends none)
        # A stranger who knows the protocol but not the secret cannot write through the peer endpoint...
        op = {
            "op": "put",
            "partition": 1,
            "key": b"evil",
            "value": b"x",
            "if_version": None,
            "linearizable": True,
            "prefix": b"",
            "start": b"",
            "limit": 0,
        }
        import msgpack

        headers = {
            "X-KV-Node": "2",
            "X-KV-Time": str(time.time()),
            "X-KV-Nonce": "abc",
            "X-KV-Signature": "00",
        }
        async with s.post(f"{n1}/internal/v1/op", data=msgpack.packb(op), headers=headers) as resp:
            assert resp.status == 401
        # ...nor join the Raft traffic.
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await s.ws_connect(f"{n1}/internal/v1/raft", headers=headers)
        assert exc.value.status == 401
        async with s.get(kv_url(n1, "evil"), headers=good) as resp:
            assert resp.status == 404


def test_data_lands_in_sqlite_wal(cluster: LocalCluster) -> None:
    status, _ = cluster.get_json(1, "/readyz")
    assert status == 200
    db = cluster.nodes[1].data_dir / "kv.db"
    assert db.exists()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"raft_log", "replica", "kv", "node"} <= tables
        descriptors = [json.loads(d) for (d,) in conn.execute("SELECT descriptor FROM replica")]
        assert sorted(d["id"] for d in descriptors) == [0, 1, 2, 3, 4]  # 0: the meta group
    finally:
        conn.close()
