"""Real node processes on 127.0.0.1 with real SQLite files; every process is stopped by pid afterwards."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvcluster.local import LocalCluster

FAST_TICKS = ["--tick-ms", "50", "--election-ticks", "10"]


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port with ``count`` consecutive free ports after it."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            base = s.getsockname()[1]
        if base + count >= 65000:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


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
