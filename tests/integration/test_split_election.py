"""A split's children get their leaders at once, not after an election timeout."""

from __future__ import annotations

import time

import aiohttp
import pytest

from .conftest import ClusterFactory

pytestmark = pytest.mark.slow

ELECTION_S = 100 * 0.05
"""The election timeout of this cluster (100 ticks of 50 ms): 5 to 10 s."""


async def test_the_children_of_a_split_elect_their_leader_well_within_one_election_timeout(
    make_cluster: ClusterFactory,
) -> None:
    # The leader campaigns for each child as soon as it applies the split; its followers create
    # their child replicas a heartbeat later. Their vote requests, arriving in between, must be
    # held for the replica rather than dropped, or the child waits out an election timeout.
    cluster = make_cluster(nodes=3, partitions=2, replicas=3, node_args=["--election-ticks", "100"])

    def leaders() -> dict[int, int] | None:
        found = {int(p["id"]): p["leader"] for p in cluster.cluster_view()["partitions"]}
        return found if all(found.values()) else None

    before = cluster.wait_for(leaders, timeout=30, what="a leader for every partition")
    async with aiohttp.ClientSession() as http:
        for pid in sorted(before):
            async with http.post(f"{cluster.urls()[0]}/v1/admin/partitions/{pid}/split") as resp:
                assert resp.status == 200, await resp.text()
    split_at = time.monotonic()

    def children_led() -> dict[int, int] | None:
        found = leaders()
        return found if found is not None and len(found) == 2 * len(before) else None

    after = cluster.wait_for(children_led, timeout=ELECTION_S * 0.6, what="a leader for every child")
    assert set(before) < set(after)
    assert time.monotonic() - split_at < ELECTION_S
