"""Real node processes on 127.0.0.1 with real SQLite files; every process is stopped by pid afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvcluster.local import LocalCluster
from kvcluster.local.ports import free_port_block

FAST_TICKS = ["--tick-ms", "50", "--election-ticks", "10"]


ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    started: list[LocalCluster] = []

    def factory(
        nodes: int = 3,
        partitions: int = 4,
        replicas: int = 3,
        node_args: list[str] | None = None,
        name: str = "c",
    ) -> LocalCluster:
        cluster = LocalCluster(
            tmp_path / name,
            nodes_count=nodes,
            partitions=partitions,
            replicas=replicas,
            base_port=free_port_block(nodes + 4),
            node_args=[*FAST_TICKS, *(node_args or [])],
        )
        started.append(cluster)
        cluster.start()
        cluster.wait_ready(timeout=30)
        return cluster

    yield factory
    for cluster in started:
        cluster.stop()
