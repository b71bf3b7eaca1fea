"""GET /metrics of real nodes: Prometheus conventions, the documented families, and values that move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import aiohttp
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from kvcluster.local import LocalCluster
from kvcluster.server.metrics import OPERATIONS
from tests import metricsdoc

from .conftest import ClusterFactory
from .nodehttp import get, kv_url, put

pytestmark = pytest.mark.slow

Scrape = dict[str, Metric]


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[str, Scrape]:
    async with session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    return text, {metricsdoc.exposed_name(f): f for f in text_string_to_metric_families(text)}


async def scrape_all(session: aiohttp.ClientSession, cluster: LocalCluster) -> list[tuple[str, Scrape]]:
    return [await scrape(session, url) for url in cluster.urls()]


def value(families: Scrape, name: str, sample: str | None = None, **labels: str) -> float:
    """One sample's value (0 when absent, as Prometheus' rate() would see a new series)."""
    family = families.get(name)
    if family is None:
        return 0.0
    wanted = sample or (name if family.type != "histogram" else f"{name}_count")
    return sum(s.value for s in family.samples if s.name == wanted and labels.items() <= s.labels.items())


def total(scrapes: Iterable[Scrape], name: str, **labels: str) -> float:
    return sum(value(s, name, **labels) for s in scrapes)


def samples(scrapes: Iterable[Scrape], name: str) -> list[dict[str, str]]:
    return [s.labels for fams in scrapes if name in fams for s in fams[name].samples]


def one_leader_each(scrapes: list[Scrape], partitions: int) -> bool:
    """Exactly one node leads each partition, and one (the meta leader) reports the reshape job."""
    leaders = dict.fromkeys(map(str, range(partitions)), 0)
    for fams in scrapes:
        for s in fams["kvcluster_partition_is_leader"].samples:
            leaders[s.labels["partition"]] = leaders.get(s.labels["partition"], 0) + int(s.value)
    return set(leaders.values()) == {1} and len(samples(scrapes, "kvcluster_reshape_job_state")) == 4


async def scrape_until(
    session: aiohttp.ClientSession,
    cluster: LocalCluster,
    settled: Callable[[list[Scrape]], bool],
    timeout: float = 15.0,
) -> list[tuple[str, Scrape]]:
    """Scrape every node until the condition holds of the scrapes together (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        scrapes = await scrape_all(session, cluster)
        if settled([fams for _, fams in scrapes]) or time.monotonic() > deadline:
            return scrapes
        await asyncio.sleep(0.1)


async def wait_reshape_done(session: aiohttp.ClientSession, url: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    job: dict[str, object] = {}
    while time.monotonic() < deadline:
        async with session.get(f"{url}/v1/admin/reshape") as resp:
            if resp.status == 200:
                job = await resp.json()
                if job["state"] in ("done", "failed"):
                    return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"reshape not finished after {timeout}s: {job}")


async def test_metrics_follow_the_conventions_and_move(make_cluster: ClusterFactory) -> None:
    started = time.time()
    cluster = make_cluster(nodes=3, partitions=4, replicas=3)
    n1 = cluster.urls()[0]
    async with aiohttp.ClientSession() as session:
        # Settled after readiness: every partition (4 + meta) has exactly one leader (a deposed
        # one may not know it for a moment), which reports the lag of its two followers.
        before_text = await scrape_until(session, cluster, lambda s: one_leader_each(s, 5))
        before = [fams for _, fams in before_text]
        lag = samples(before, "kvcluster_raft_follower_lag_entries")
        assert len(lag) == 5 * 2 and {(x["partition"]) for x in lag} == {str(p) for p in range(5)}
        assert one_leader_each(before, 5), samples(before, "kvcluster_partition_is_leader")
        assert total(before, "kvcluster_leaders") == 5 and total(before, "kvcluster_replicas") == 15
        assert total(before, "kvcluster_partitions_without_leader") == 0
        assert total(before, "kvcluster_storage_failed") == 0
        for fams in before:
            assert value(fams, "kvcluster_peers_connected") >= 1
            assert started - 60 <= value(fams, "kvcluster_node_start_time_seconds") <= time.time()
        # Before any job the meta leader, alone, reports the reshape as idle.
        assert samples(before, "kvcluster_reshape_job_state").count({"state": "idle"}) == 1
        assert total(before, "kvcluster_reshape_job_state", state="idle") == 1

        # Traffic through node 1: 20 puts, 10 gets, 1 get of a missing key, 5 deletes, 2 lists.
        for i in range(20):
            assert (await put(session, n1, f"m{i}", b"v"))[0] == 200
        for i in range(10):
            assert (await get(session, n1, f"m{i}"))[0] == 200
        assert (await get(session, n1, "missing"))[0] == 404
        for i in range(5):
            async with session.delete(kv_url(n1, f"m{i}")) as resp:
                assert resp.status == 200
        for _ in range(2):
            async with session.get(f"{n1}/v1/kv", params={"prefix": "m"}) as resp:
                assert resp.status == 200

        # A leader change: move partition 1's leadership to another node.
        leader = cluster.leader_of(1)
        assert leader is not None
        target = 2 if leader != 2 else 3
        async with session.post(f"{n1}/v1/admin/partitions/1/leader", json={"node": target}) as resp:
            assert resp.status == 200, await resp.text()

        # A reshape from 4 to 5 partitions (one split at least).
        body = {"nodes": [1, 2, 3], "partitions": 5, "replicas": 3}
        async with session.post(f"{n1}/v1/admin/reshape", json=body) as resp:
            assert resp.status == 202, await resp.text()
        job = await wait_reshape_done(session, n1, timeout=60)
        assert job["state"] == "done", job

        # The meta leader reports the job; leadership may be moving (leader balancing) for a moment.
        after_text = await scrape_until(
            session, cluster, lambda s: len(samples(s, "kvcluster_reshape_steps_completed")) == 1
        )
        after = [fams for _, fams in after_text]

    # Conventions, on every family every node serves.
    for _, fams in [*before_text, *after_text]:
        assert metricsdoc.convention_problems(fams.values()) == []
    # The documented families are exactly those served, with the documented types.
    served = {name: f.type for fams in [*before, *after] for name, f in fams.items()}
    assert served == metricsdoc.documented()

    # Request counters and histograms moved by exactly the traffic sent to node 1.
    b1, a1 = before[0], after[0]
    http = "kvcluster_http_requests_total"
    dur = "kvcluster_http_request_duration_seconds"
    for op, code, count in (("put", "200", 20), ("get", "200", 10), ("get", "404", 1), ("delete", "200", 5)):
        assert value(a1, http, op=op, code=code) - value(b1, http, op=op, code=code) == count, (op, code)
    assert value(a1, http, op="list", code="200") - value(b1, http, op="list", code="200") == 2
    assert value(a1, dur, op="put", status_class="2xx") - value(b1, dur, op="put", status_class="2xx") == 20
    assert value(a1, dur, op="get", status_class="4xx") - value(b1, dur, op="get", status_class="4xx") == 1
    inf = value(a1, dur, f"{dur}_bucket", op="put", status_class="2xx", le="+Inf")
    assert inf == value(a1, dur, op="put", status_class="2xx")
    assert value(a1, dur, f"{dur}_sum", op="put", status_class="2xx") > 0
    assert {x["op"] for x in samples([a1], http)} <= {*OPERATIONS.values(), "admin", "other"}

    # Raft: the 25 writes were proposed by leaders and applied by all three replicas.
    assert (
        total(after, "kvcluster_raft_proposals_total") - total(before, "kvcluster_raft_proposals_total") >= 25
    )
    applied = total(after, "kvcluster_raft_applied_entries_total")
    assert applied - total(before, "kvcluster_raft_applied_entries_total") >= 2 * 25  # a majority at least
    assert total(after, "kvcluster_raft_leader_changes_total") > total(
        before, "kvcluster_raft_leader_changes_total"
    )
    assert total(after, "kvcluster_storage_batch_seconds") > total(before, "kvcluster_storage_batch_seconds")
    for fams in after:
        commit = {s.labels["partition"]: s.value for s in fams["kvcluster_partition_commit_index"].samples}
        applied_ix = {
            s.labels["partition"]: s.value for s in fams["kvcluster_partition_applied_index"].samples
        }
        lag_ix = {
            s.labels["partition"]: s.value for s in fams["kvcluster_partition_apply_lag_entries"].samples
        }
        assert commit.keys() == applied_ix.keys() == lag_ix.keys()
        assert all(lag_ix[p] == max(0, commit[p] - applied_ix[p]) for p in commit)
    assert sum(value(a, "kvcluster_partition_commit_index") for a in after) > sum(
        value(b, "kvcluster_partition_commit_index") for b in before
    )

    # Reshape progress, from the meta leader only: done, every planned step completed.
    assert samples(after, "kvcluster_reshape_job_state").count({"state": "done"}) == 1
    assert total(after, "kvcluster_reshape_job_state", state="done") == 1
    assert total(after, "kvcluster_reshape_job_state", state="running") == 0
    completed = total(after, "kvcluster_reshape_steps_completed")
    assert completed >= 1 and completed == total(after, "kvcluster_reshape_steps_planned")

    # Last, promtool's own linter (Debian package prometheus): without it the checks above have run
    # and the test skips with the reason (fails where scripts/setup-system.sh must have installed it).
    metricsdoc.require_promtool("promtool check metrics")
    for text, _ in [*before_text, *after_text]:
        result = metricsdoc.run_promtool(["check", "metrics"], stdin=text)
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


async def test_stale_reads_are_served_by_the_local_replica(make_cluster: ClusterFactory) -> None:
    """A stale read never pays the forwarding hop (nor waits on an unreachable leader) when the
    node it reaches holds a replica; a linearizable read there is forwarded to the leader."""
    cluster = make_cluster(nodes=3, partitions=4, replicas=3)
    keys = [f"stale/{i}" for i in range(24)]
    async with aiohttp.ClientSession() as s:
        for k in keys:
            assert (await put(s, cluster.urls()[0], k, b"v"))[0] == 200
        before = [
            value(fams, "kvcluster_forwarded_requests_total", op="get")
            for _, fams in await scrape_all(s, cluster)
        ]
        for url in cluster.urls():
            for k in keys:
                assert (await get(s, url, k, consistency="stale"))[0] in (200, 404)
        after = [
            value(fams, "kvcluster_forwarded_requests_total", op="get")
            for _, fams in await scrape_all(s, cluster)
        ]
        assert after == before, (before, after)
        for url in cluster.urls():
            for k in keys:
                assert (await get(s, url, k))[0] == 200
        forwarded = [
            value(fams, "kvcluster_forwarded_requests_total", op="get")
            for _, fams in await scrape_all(s, cluster)
        ]
    # Each partition has one leader, so the other two nodes forward their linearizable reads of it.
    assert sum(forwarded) - sum(after) >= 2 * len(keys), (after, forwarded)
