"""``kvcluster reshape`` against real node processes: -e URL with partial targets, --status,
--no-wait then --wait, refusals, growing onto and shrinking off (then --forget) a node the user
runs; and the --data-dir mode of a local cluster."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner, Result

from kvcluster.cli.main import cli
from kvcluster.client import SyncClient
from kvcluster.local import LocalCluster

from .conftest import ClusterFactory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

KEYS = {f"reshape-cli/{i}".encode(): f"value-{i}".encode() for i in range(20)}


def reshape(*args: str) -> Result:
    return CliRunner().invoke(cli, ["reshape", *args], catch_exceptions=False)


def shape(kv: SyncClient) -> tuple[list[int], int, set[int]]:
    """Nodes, partition count and the replica counts of the map now."""
    amap = kv.admin_map()
    return (
        sorted(n["id"] for n in amap["nodes"]),
        len(amap["partitions"]),
        {len(p["voters"]) for p in amap["partitions"]},
    )


def assert_keys_readable(kv: SyncClient) -> None:
    for key, value in KEYS.items():
        item = kv.get(key)
        assert item is not None and item.value == value, key


def test_partial_targets_status_wait_and_refusals(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=8, replicas=3)
    url = cluster.urls()[0]
    with SyncClient(cluster.urls()) as kv:
        for key, value in KEYS.items():
            kv.put(key, value)

        idle = reshape("-e", url, "--status")
        assert idle.exit_code == 0, idle.output
        assert "reshape: no job" in idle.stdout
        assert "cluster now: nodes [1, 2, 3], 8 partitions, 3 replicas" in idle.stdout

        # Refused by the planner: its reason, exit 2, and nothing recorded.
        refused = reshape("-e", url, "--replicas", "5")
        assert refused.exit_code == 2, refused.output
        assert "refused:" in refused.stderr and "cannot exceed the number of target nodes" in refused.stderr
        assert "nothing was changed" in refused.stderr
        # More nodes than have joined: with -e the command cannot start them.
        too_many = reshape("-e", url, "--nodes", "5")
        assert too_many.exit_code == 2 and "knows only nodes [1, 2, 3]" in too_many.stderr
        not_joined = reshape("-e", url, "--nodes", "1,2,7")
        assert not_joined.exit_code == 2 and "have not joined" in not_joined.stderr
        assert kv.reshape_status() == {"state": "idle"}
        assert shape(kv) == ([1, 2, 3], 8, {3})

        # Only the partition count changes; submit, then follow with --wait.
        submitted = reshape("-e", url, "--partitions", "16", "--no-wait")
        assert submitted.exit_code == 0, submitted.output
        job_id = submitted.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{12}", job_id), submitted.stdout
        assert "-> nodes [1, 2, 3], 16 partitions, 3 replicas" in submitted.stderr
        status = reshape("-e", url, "--status")
        assert status.exit_code == 0, status.output
        assert re.search(rf"reshape job {job_id}: (running|done)", status.stdout), status.stdout
        assert "target    nodes [1, 2, 3], 16 partitions, 3 replicas" in status.stdout
        waited = reshape("-e", url, "--wait")
        assert waited.exit_code == 0, waited.output
        assert "done" in waited.stderr
        assert shape(kv) == ([1, 2, 3], 16, {3})
        finished = reshape("-e", url, "--status")
        assert f"reshape job {job_id}: done" in finished.stdout
        assert "cluster now: nodes [1, 2, 3], 16 partitions, 3 replicas" in finished.stdout
        assert_keys_readable(kv)

        # Only the replica count changes, followed to the end by the same command.
        fewer = reshape("-e", ",".join(cluster.urls()), "--replicas", "2")
        assert fewer.exit_code == 0, fewer.output
        assert "done" in fewer.stderr
        assert shape(kv) == ([1, 2, 3], 16, {2})
        assert_keys_readable(kv)


def test_data_dir_mode_takes_a_partial_target(make_cluster: ClusterFactory) -> None:
    cluster: LocalCluster = make_cluster(nodes=3, partitions=4, replicas=3)
    result = reshape("--data-dir", str(cluster.base_dir), "--partitions", "6")
    assert result.exit_code == 0, result.output
    with SyncClient(cluster.urls()) as kv:
        assert shape(kv) == ([1, 2, 3], 6, {3})
    listed = reshape("--data-dir", str(cluster.base_dir), "--nodes", "1,2")
    assert listed.exit_code == 2 and "--nodes is a count" in listed.stderr


def test_grow_and_shrink_while_the_user_runs_the_node_processes(make_cluster: ClusterFactory) -> None:
    """With -e the command never starts or stops a node: the user does (here: the test)."""
    cluster = make_cluster(nodes=3, partitions=4, replicas=3)
    url = cluster.urls()[0]
    with SyncClient(cluster.urls()) as kv:
        for key, value in KEYS.items():
            kv.put(key, value)
        added = cluster.add_node()  # joins holding nothing
        cluster.wait_ready(nodes=[added.id])
        cluster.wait_for(lambda: added.id in shape(kv)[0], 30, "node 4 to join")

        grow = reshape("-e", url, "--nodes", "4")
        assert grow.exit_code == 0, grow.output
        assert "-> nodes [1, 2, 3, 4], 4 partitions, 3 replicas" in grow.stderr
        node4 = kv.admin_node(added.id)
        assert node4 is not None and node4["replicas"] > 0, node4

        shrink = reshape("-e", url, "--nodes", "3")
        assert shrink.exit_code == 0, shrink.output
        assert "nodes [4] hold no data now: stop their processes" in shrink.stderr
        assert "--forget 4" in shrink.stderr
        node4 = kv.admin_node(added.id)
        assert node4 is not None and node4["replicas"] == 0, node4
        assert added.alive(), "the command stopped a node process it does not own"
        assert_keys_readable(kv)

        # Forgetting a node whose process still runs is refused: it would register again.
        early = reshape("-e", url, "--forget", "4")
        assert early.exit_code == 2 and "still answers" in early.stderr, early.output
        assert 4 in shape(kv)[0]
        cluster.stop_node(added.id)
        forgot = reshape("-e", url, "--forget", "4")
        assert forgot.exit_code == 0, forgot.output
        assert "forgot node 4" in forgot.stderr
        assert shape(kv) == ([1, 2, 3], 4, {3})
