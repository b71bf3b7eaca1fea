"""Rolling upgrades through the operator, the emulated API, the fake nodes and the test controller."""

from __future__ import annotations

from typing import Any

from conftest import NAMESPACE, eventually, get_cluster
from fake_admin import FakeNodes
from k8s_emulator import K8sEmulator
from operator_harness import OperatorThread
from sts_controller import StatefulSetController
from test_operator import cluster, events, has_events, patch_spec, running

from kvoperator.kube import KVCLUSTERS, PODS, STATEFULSETS, KubeClient


async def upgrade_phase(
    kube: KubeClient, k8s: K8sEmulator, phase: str, timeout: float = 30
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        return body if ((body or {}).get("status", {}).get("upgrade") or {}).get("phase") == phase else None

    return await eventually(check, k8s=k8s, timeout=timeout, what=f"upgrade {phase}")


async def pod_images(kube: KubeClient) -> dict[str, str]:
    return {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
        for p in await kube.list(PODS.path(NAMESPACE))
    }


async def test_image_change_rolls_one_pod_at_a_time_after_moving_leaders(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    sts = await kube.get(STATEFULSETS.path(NAMESPACE, "demo"))
    assert sts is not None and sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    before = len(controller.history)
    await patch_spec(kube, image="kvcluster:v2")
    body = await upgrade_phase(kube, k8s, "Completed")
    upgrade = body["status"]["upgrade"]
    assert upgrade["fromImage"] == "kvcluster:test" and upgrade["toImage"] == "kvcluster:v2"
    assert upgrade["updatedPods"] == upgrade["totalPods"] == 3
    assert await pod_images(kube) == {f"demo-{i}": "kvcluster:v2" for i in range(3)}

    # One pod at a time, highest ordinal first: each one is back before the next one goes.
    rolled = controller.history[before:]
    assert rolled == ["recreate demo-2", "recreate demo-1", "recreate demo-0"], rolled
    # Node 1 (demo-0) led every partition; they moved to other voters before its pod went.
    transfers = [line for line in nodes.log if line.startswith("transfer")]
    assert transfers and all(not line.endswith(" to 1") for line in transfers)
    assert nodes.violations == []
    await has_events(kube, k8s, "UpgradeStarted", "PodReplaced", "PodUpgraded", "UpgradeCompleted")
    body = await running(kube, k8s, nodes=3)
    conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
    assert conditions == {"Ready": "True", "Progressing": "False", "Degraded": "False"}
    assert not await events(kube, "NodesUnavailable"), "a planned replacement is not a degradation"


async def test_the_roll_waits_for_lagging_replicas(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    nodes.lagging.add(2)
    before = len(controller.history)
    await patch_spec(kube, image="kvcluster:v2")

    async def waiting() -> bool:
        body = await get_cluster(kube, "demo")
        upgrade = (body or {}).get("status", {}).get("upgrade") or {}
        return upgrade.get("phase") == "Rolling" and (body or {})["status"].get("phase") == "Upgrading"

    await eventually(waiting, k8s=k8s, what="a roll waiting for replication")
    # Several passes later nothing was deleted: node 2 is far behind its leaders.
    for _ in range(5):
        await k8s.wait_changed(0.3)
    assert controller.history[before:] == []
    nodes.lagging.clear()
    await upgrade_phase(kube, k8s, "Completed")
    assert await pod_images(kube) == {f"demo-{i}": "kvcluster:v2" for i in range(3)}


async def test_a_pod_that_does_not_come_back_stops_the_roll_until_the_image_is_fixed(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster(upgrade={"podReadyTimeoutSeconds": 10}))
    await running(kube, k8s, nodes=3)
    controller.down.add("demo-2")  # the new image crashes on start, say
    await patch_spec(kube, image="kvcluster:broken")
    body = await upgrade_phase(kube, k8s, "Stalled", timeout=40)
    degraded = next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "UpgradeStalled"
    await has_events(kube, k8s, "UpgradeStalled")
    assert [e for e in await events(kube, "UpgradeStalled") if e["type"] == "Warning"]
    # Only the first pod was touched.
    images = await pod_images(kube)
    assert images == {"demo-0": "kvcluster:test", "demo-1": "kvcluster:test", "demo-2": "kvcluster:broken"}

    controller.down.discard("demo-2")
    await patch_spec(kube, image="kvcluster:v3")
    await upgrade_phase(kube, k8s, "Completed", timeout=40)
    assert await pod_images(kube) == {f"demo-{i}": "kvcluster:v3" for i in range(3)}
    await running(kube, k8s, nodes=3)
    assert nodes.violations == []
