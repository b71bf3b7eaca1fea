"""``GET /v1/cluster`` answers with the partitions the meta group holds now, on every node."""

from __future__ import annotations

import aiohttp
import pytest

from .conftest import ClusterFactory

pytestmark = pytest.mark.slow


async def test_every_node_lists_a_split_partition_as_soon_as_the_split_is_acknowledged(
    make_cluster: ClusterFactory,
) -> None:
    # With one replica each, a node learns of a split of a partition it does not hold only
    # from the meta group. Its cached map catches up once a second; the operator reads
    # /v1/cluster right after a reshape job reports done and writes what it gets as the
    # final status, so the answer must not trail the acknowledged split.
    cluster = make_cluster(nodes=3, partitions=3, replicas=1)

    def led() -> dict[int, list[int]] | None:
        view = cluster.cluster_view()
        if not all(p["leader"] for p in view["partitions"]):
            return None
        return {int(p["id"]): p["voters"] for p in view["partitions"]}

    placed = cluster.wait_for(led, timeout=30, what="a leader for every partition")
    known = set(placed)
    stale: list[str] = []
    async with aiohttp.ClientSession() as http:
        for pid, voters in sorted(placed.items()):
            async with http.post(f"{cluster.urls()[0]}/v1/admin/partitions/{pid}/split") as resp:
                assert resp.status == 200, await resp.text()
            for node in sorted(set(cluster.nodes) - set(voters)):
                listed = {int(p["id"]) for p in cluster.cluster_view(via=node)["partitions"]}
                if not (known < listed and len(listed) == len(known) + 1):
                    stale.append(f"after splitting {pid}, node {node} listed {sorted(listed)}")
            known = listed | known
    assert not stale, stale
    assert len(known) == 2 * len(placed)
