"""``examples/counter.py``: 5 processes x N compare-and-set increments give exactly 5N, despite kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from kvcluster.client import SyncClient
from kvcluster.keyspace import key_hash

from .conftest import ClusterFactory
from .test_failover import partition_range

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "counter.py"
KEY = "examples/counter"


def test_counter_is_exact_with_a_leader_killed_half_way(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    workers, n = 5, 40
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "-e",
            ",".join(cluster.urls()),
            "--workers",
            str(workers),
            "-n",
            str(n),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        partition = next(
            p["id"]
            for p in cluster.cluster_view()["partitions"]
            if partition_range(cluster, p["id"]).contains(key_hash(KEY.encode()))
        )
        with SyncClient(cluster.urls()) as kv:
            deadline = time.monotonic() + 90
            while True:
                item = kv.get(KEY)
                if item is not None and json.loads(item.value)["count"] >= workers * n // 2:
                    break
                assert time.monotonic() < deadline and proc.poll() is None, "the counter did not get half-way"
                time.sleep(0.05)
        leader = cluster.wait_for(lambda: cluster.leader_of(partition), 10, "the counter's leader")
        cluster.kill(leader)  # kill -9 of the node leading the counter's partition, half-way
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    alive = [u for i, u in zip(sorted(cluster.nodes), cluster.urls(), strict=True) if i != leader]
    with SyncClient(alive) as kv:
        item = kv.get(KEY)
    assert item is not None and json.loads(item.value)["count"] == workers * n
    print(out.strip(), f"(node {leader} killed half-way)")
