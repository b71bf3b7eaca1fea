"""AdminClient against the fake nodes: the contract the operator relies on."""

from __future__ import annotations

import aiohttp
import pytest
from conftest import eventually
from fake_admin import FakeNodes
from sts_controller import PodInfo

from kvoperator.admin import AdminClient, AdminError, AdminUnavailable

PEERS = ",".join(f"{i}=http://n{i}" for i in (1, 2, 3))


def pod(ordinal: int, state: str = "new") -> PodInfo:
    env = {
        "KVCLUSTER_PEERS": PEERS,
        "KVCLUSTER_PARTITIONS": "4",
        "KVCLUSTER_REPLICAS": "3",
        "KVCLUSTER_CLUSTER_STATE": state,
    }
    return PodInfo("demo", "kv", f"demo-{ordinal}", ordinal, env, {"token": "secret"})


async def test_contract(nodes: FakeNodes) -> None:
    async with aiohttp.ClientSession() as session:
        admin = AdminClient(session, nodes.url, "secret")
        assert not await admin.ready()
        await nodes.pods_changed("demo", [pod(0), pod(1), pod(2)])
        assert await admin.ready()
        cluster = await admin.cluster()
        assert len(cluster["partitions"]) == 4
        assert (await admin.node(1) or {})["replicas"] == 4
        assert await admin.node(9) is None
        assert (await admin.reshape_status())["state"] == "idle"

        with pytest.raises(AdminError) as info:
            await admin.start_reshape([1, 2], 4, 3)
        assert info.value.status == 400 and info.value.code == "bad_request"

        await nodes.pods_changed("demo", [pod(0), pod(1), pod(2), pod(3, "existing")])
        job = await admin.start_reshape([1, 2, 3, 4], 8, 3)
        assert job.startswith("job-")
        assert nodes.job is not None

        async def finished() -> dict[str, object] | None:
            status = await admin.reshape_status()
            return status if status["state"] != "running" else None

        status = await eventually(finished, what="reshape job finished")
        assert status["state"] == "done" and status["target"] == {
            "nodes": [1, 2, 3, 4],
            "partitions": 8,
            "replicas": 3,
        }
        assert (await admin.node(4) or {})["replicas"] > 0

        await admin.drain(4)
        assert (await admin.node(4) or {})["drained"] is True

        with pytest.raises(AdminError) as info:
            await AdminClient(session, nodes.url, "wrong").partition_map()
        assert info.value.status == 401

    async with aiohttp.ClientSession() as session:
        with pytest.raises(AdminUnavailable):
            await AdminClient(session, "http://127.0.0.1:1", None, timeout=2).cluster()
