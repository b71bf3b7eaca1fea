"""A node restarted with its original peer list must find nodes that joined while it ran.

Found by the reshape torture script: node 2, killed and restarted with ``--peers`` naming
only the first three nodes, never learnt the address of node 4, which by then led the meta
group and other partitions. The lower id dials, so neither side ever connected and node 2's
replicas led by node 4 starved.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from .conftest import ClusterFactory

pytestmark = pytest.mark.slow


def admin_post(url: str, path: str, body: dict[str, Any], attempts: int = 20) -> dict[str, Any]:
    """POST an admin step; a 503 (the group is electing or changing) is retried as it says."""
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as err:
            if err.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(min(float(err.headers.get("Retry-After") or 0.2), 1.0))
    raise AssertionError("unreachable")


def test_restarted_node_finds_a_node_added_after_its_bootstrap(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3, node_args=["--balance-interval", "0"])
    newcomer = cluster.add_node().id
    cluster.wait_ready(timeout=30, nodes=[newcomer])
    base = cluster.nodes[1].url
    # Put the newcomer in every group (meta included) and make it lead them all.
    for pid in (0, 1, 2):
        admin_post(base, f"/v1/admin/partitions/{pid}/replicas", {"add": newcomer})
        admin_post(base, f"/v1/admin/partitions/{pid}/leader", {"node": newcomer})

    def leaders(via: int) -> dict[str, int]:
        status, body = cluster.get_json(via, "/v1/admin/map")
        return dict(body["leaders"]) if status == 200 else {}

    cluster.wait_for(
        lambda: leaders(1) == {"0": newcomer, "1": newcomer, "2": newcomer}, 15, "the newcomer leads all"
    )

    victim = 2
    assert "4=" not in " ".join(cluster.command(cluster.nodes[victim])), "the victim must not be told"
    cluster.kill(victim)
    with urllib.request.urlopen(urllib.request.Request(f"{base}/v1/kv/after", data=b"x", method="PUT")):
        pass
    cluster.start_node(victim)
    cluster.wait_ready(timeout=30, nodes=[victim])

    def caught_up() -> bool:
        view = cluster.cluster_view(via=victim)
        leaders = {p["id"]: p["leader"] for p in view["partitions"]}
        reachable = {n["id"]: n["reachable"] for n in view["nodes"]}
        return leaders == {1: newcomer, 2: newcomer} and reachable.get(newcomer) is True

    cluster.wait_for(caught_up, 20, "the restarted node sees the newcomer lead")
    # A linearizable read through the restarted node is served by the newcomer's groups.
    with urllib.request.urlopen(f"{cluster.nodes[victim].url}/v1/kv/after", timeout=10) as resp:
        assert resp.read() == b"x"
