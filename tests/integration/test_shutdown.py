"""A graceful stop that cannot finish is given up after --shutdown-timeout, and loses nothing."""

from __future__ import annotations

import os
import signal

import aiohttp
import pytest

from kvcluster.server.node import GAVE_UP_STOP

from .conftest import ClusterFactory
from .test_failover import verify_all_readable, write_acknowledged

pytestmark = pytest.mark.slow


async def test_a_stop_past_its_deadline_exits_cleanly_and_keeps_every_acknowledged_write(
    make_cluster: ClusterFactory,
) -> None:
    # The stopping node leads partitions whose followers are frozen (SIGSTOP): its leadership
    # hand-over cannot finish, and it keeps leading until check-quorum (an election timeout,
    # 500 ms here) makes it step down. A 0.2 s deadline is therefore always overrun.
    cluster = make_cluster(nodes=3, partitions=4, replicas=3, node_args=["--shutdown-timeout", "0.2"])
    async with aiohttp.ClientSession() as session:
        written = await write_acknowledged(session, cluster.urls(), "deadline", 100)

        def leaders() -> list[int] | None:
            found = [p["leader"] for p in cluster.cluster_view()["partitions"]]
            return found if all(found) else None

        led = cluster.wait_for(leaders, timeout=20, what="a leader for every partition")
        victim = max(set(led), key=led.count)
        frozen = [n for n in cluster.nodes if n != victim]
        pids = {n: cluster.nodes[n].pid for n in frozen}
        for n in frozen:
            os.kill(pids[n] or 0, signal.SIGSTOP)
        try:
            assert cluster.stop_node(victim, timeout=10) == 0
        finally:
            for n in frozen:
                os.kill(pids[n] or 0, signal.SIGCONT)
        log = cluster.nodes[victim].log_path.read_text()
        assert f"{GAVE_UP_STOP} after 0.2s" in log
        assert "Tasks, threads:" in log

        cluster.start_node(victim)
        cluster.wait_ready(timeout=30)
        await verify_all_readable(session, cluster, written)
