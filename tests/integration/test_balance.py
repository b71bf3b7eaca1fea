"""Leaderships pile up on the survivors of a restart; the meta leader spreads them again."""

from __future__ import annotations

from collections import Counter

import pytest

from .conftest import ClusterFactory

pytestmark = pytest.mark.slow


def test_leaders_are_spread_again_after_a_node_restart(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=6, replicas=3, node_args=["--balance-interval", "1"])

    def leader_counts() -> Counter[int]:
        view = cluster.cluster_view()
        return Counter(p["leader"] for p in view["partitions"] if p["leader"] is not None)

    victim = 3
    cluster.stop_node(victim)  # a graceful stop hands every leadership it held to the others
    cluster.wait_for(lambda: sum(leader_counts().values()) == 6, 15, "all partitions led by the survivors")
    assert leader_counts()[victim] == 0
    cluster.start_node(victim)
    cluster.wait_ready(timeout=30)

    def balanced() -> bool:
        counts = leader_counts()
        return sum(counts.values()) == 6 and all(counts[n] == 2 for n in (1, 2, 3))

    cluster.wait_for(balanced, 30, "leaderships spread evenly again")
