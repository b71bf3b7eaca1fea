"""The operator end to end against the emulated API, the fake nodes and the test controller."""

from __future__ import annotations

from typing import Any

from conftest import NAMESPACE, eventually, get_cluster
from fake_admin import FakeNodes
from k8s_emulator import K8sEmulator
from operator_harness import OperatorThread
from sts_controller import StatefulSetController

from kvoperator.kube import CONFIGMAPS, EVENTS, KVCLUSTERS, PDBS, SECRETS, SERVICES, STATEFULSETS, KubeClient


def cluster(name: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvcluster.io/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"nodes": 3, "partitions": 4, "replicas": 3} | spec,
    }


async def running(kube: KubeClient, k8s: K8sEmulator, name: str = "demo", **applied: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await get_cluster(kube, name)
        status = (body or {}).get("status", {})
        ok = status.get("phase") == "Running" and not status.get("reshape")
        ok = ok and all(status.get("applied", {}).get(k) == v for k, v in applied.items())
        return body if ok else None

    return await eventually(check, k8s=k8s, what=f"{name} Running with {applied}")


async def events(kube: KubeClient, reason: str | None = None) -> list[dict[str, Any]]:
    items = await kube.list(EVENTS.path(NAMESPACE))
    return [e for e in items if reason is None or e.get("reason") == reason]


async def has_events(kube: KubeClient, k8s: K8sEmulator, *reasons: str) -> list[dict[str, Any]]:
    """Wait until Events with all these reasons were posted (kopf posts them in the background)."""

    async def check() -> list[dict[str, Any]] | None:
        found = await events(kube)
        return found if set(reasons) <= {e["reason"] for e in found} else None

    return await eventually(check, k8s=k8s, what=f"events {reasons}")


async def patch_spec(kube: KubeClient, name: str = "demo", **spec: Any) -> None:
    await kube.patch(KVCLUSTERS.path(NAMESPACE, name), {"spec": spec})


async def test_create_builds_every_object(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    body = await running(kube, k8s, nodes=3)
    uid = body["metadata"]["uid"]
    status = body["status"]
    assert status["bootstrapped"] is True
    assert status["readyNodes"] == 3 and status["currentNodes"] == 3
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Progressing": "False",
        "Degraded": "False",
    }
    assert status["partitions"]["total"] == 4 and status["partitions"]["leaderless"] == 0
    assert status["observedGeneration"] == body["metadata"]["generation"]

    for kind, name in [
        (STATEFULSETS, "demo"),
        (SERVICES, "demo"),
        (SERVICES, "demo-headless"),
        (CONFIGMAPS, "demo-config"),
        (SECRETS, "demo-auth"),
        (PDBS, "demo"),
    ]:
        obj = await kube.get(kind.path(NAMESPACE, name))
        assert obj is not None, f"{kind.plural}/{name} missing"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid

    sts = await kube.get(STATEFULSETS.path(NAMESPACE, "demo"))
    assert sts is not None and sts["spec"]["replicas"] == 3
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "kvcluster:test"
    cm = await kube.get(CONFIGMAPS.path(NAMESPACE, "demo-config"))
    assert cm is not None and cm["data"]["cluster-state"] == "existing"
    pdb = await kube.get(PDBS.path(NAMESPACE, "demo"))
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1

    # The pods started as a fresh cluster with the initial layout and the generated token.
    assert sorted(p.env["KVCLUSTER_CLUSTER_STATE"] for p in controller.pods.values()) == ["new"] * 3
    assert nodes.pmap is not None and len(nodes.pmap.partitions) == 4
    assert all(p.files["token"] for p in controller.pods.values())
    await has_events(kube, k8s, "Creating", "Created", "Bootstrapped", "ClusterReady")
    assert nodes.violations == []


async def test_scale_up_grows_pods_before_reshaping_onto_them(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    await patch_spec(kube, nodes=5)
    body = await running(kube, k8s, nodes=5)

    # The new pods existed and were ready before the reshape was asked for,
    # and they joined an existing cluster instead of bootstrapping a new one.
    reshape_at = next(i for i, line in enumerate(nodes.log) if line.startswith("reshape"))
    assert nodes.log.index("pod-started 5 existing") < reshape_at
    assert nodes.reshape_requests == [{"nodes": [1, 2, 3, 4, 5], "partitions": 4, "replicas": 3}]
    assert nodes.pmap is not None and all(len(d.voters) == 3 for d in nodes.pmap.partitions.values())
    assert {v for d in nodes.pmap.partitions.values() for v in d.voters} == {1, 2, 3, 4, 5}
    assert body["status"]["lastReshape"]["target"] == {"nodes": 5, "partitions": 4, "replicas": 3}
    await has_events(
        kube, k8s, "SpecChanged", "ReshapeStarted", "ScaledUp", "ReshapeJobStarted", "ReshapeCompleted"
    )
    assert nodes.violations == []


async def test_scale_down_drains_before_shrinking(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster(nodes=5))
    await running(kube, k8s, nodes=5)
    await patch_spec(kube, nodes=3)
    await running(kube, k8s, nodes=3)

    # The reshape off nodes 4 and 5 finished before either pod went away;
    # the fake records a violation if a pod disappears while holding data.
    assert nodes.violations == []
    done_at = next(i for i, line in enumerate(nodes.log) if line.startswith("job-done"))
    assert done_at < nodes.log.index("pod-removed 4") and done_at < nodes.log.index("pod-removed 5")
    assert nodes.reshape_requests == [{"nodes": [1, 2, 3], "partitions": 4, "replicas": 3}]
    sts = await kube.get(STATEFULSETS.path(NAMESPACE, "demo"))
    assert sts is not None and sts["spec"]["replicas"] == 3
    assert controller.history[-2:] == ["delete demo-3", "delete demo-4"] or sorted(
        controller.history[-2:]
    ) == [
        "delete demo-3",
        "delete demo-4",
    ]
    await has_events(kube, k8s, "DrainingNodes", "ScaledDown", "ReshapeCompleted")


async def test_partitions_and_replicas_change_reshapes_in_place(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster(nodes=4))
    await running(kube, k8s, nodes=4)
    await patch_spec(kube, partitions=8, replicas=2)
    body = await running(kube, k8s, nodes=4, partitions=8, replicas=2)
    assert nodes.reshape_requests == [{"nodes": [1, 2, 3, 4], "partitions": 8, "replicas": 2}]
    assert nodes.pmap is not None and len(nodes.pmap.partitions) == 8
    assert all(len(d.voters) == 2 for d in nodes.pmap.partitions.values())
    assert "demo-4" not in controller.pods  # no pod was added or removed
    pdb = await kube.get(PDBS.path(NAMESPACE, "demo"))
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 0  # 2 replicas tolerate no loss
    assert body["status"]["partitions"]["total"] == 8


async def test_unsafe_spec_is_refused_and_nothing_changes(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster(storage={"size": "2Gi"}))
    await running(kube, k8s, nodes=3)
    sts_before = await kube.get(STATEFULSETS.path(NAMESPACE, "demo"))

    async def degraded(reason: str) -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        conds = {c["type"]: c for c in (body or {}).get("status", {}).get("conditions", [])}
        ok = conds.get("Degraded", {}).get("status") == "True" and conds["Degraded"]["reason"] == reason
        return body if ok else None

    # Scaling below the replica count (admission would refuse it; the operator must too).
    await patch_spec(kube, nodes=2)
    body = await eventually(lambda: degraded("InvalidSpec"), k8s=k8s, what="InvalidSpec")
    assert body["status"]["phase"] == "Degraded"
    assert "replicas (3) must not exceed nodes (2)" in next(
        c["message"] for c in body["status"]["conditions"] if c["type"] == "Degraded"
    )
    warnings = await has_events(kube, k8s, "InvalidSpec")
    assert [e["type"] for e in warnings if e["reason"] == "InvalidSpec"] == ["Warning"]

    # Shrinking storage.
    await patch_spec(kube, nodes=3, storage={"size": "1Gi"})
    await eventually(lambda: degraded("UnsafeChange"), k8s=k8s, what="UnsafeChange")
    await has_events(kube, k8s, "UnsafeChange")

    sts_after = await kube.get(STATEFULSETS.path(NAMESPACE, "demo"))
    assert sts_before is not None and sts_after is not None
    assert sts_after["metadata"]["resourceVersion"] == sts_before["metadata"]["resourceVersion"]
    assert nodes.reshape_requests == [] and sorted(controller.pods) == ["demo-0", "demo-1", "demo-2"]

    # Putting the spec back recovers.
    await patch_spec(kube, storage={"size": "2Gi"})
    await running(kube, k8s, nodes=3)
    await has_events(kube, k8s, "Recovered")
    assert (len(await events(kube, "InvalidSpec")), len(await events(kube, "UnsafeChange"))) == (1, 1)


async def test_restarted_operator_resumes_a_running_reshape(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    make_operator: Any,
) -> None:
    async with make_operator(identity="first"):
        await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
        await running(kube, k8s, nodes=3)
        nodes.gate.clear()  # the nodes' job will stop before its first step
        await patch_spec(kube, nodes=4)

        async def reshaping() -> dict[str, Any] | None:
            body = await get_cluster(kube, "demo")
            reshape = (body or {}).get("status", {}).get("reshape") or {}
            return body if reshape.get("phase") == "Reshape" and reshape.get("job") else None

        await eventually(reshaping, k8s=k8s, what="reshape job started")
    # The operator is gone mid-reshape; the nodes finish the job meanwhile.
    nodes.gate.set()
    await eventually(lambda: nodes.job is not None and nodes.job.state == "done", what="job done")

    async with make_operator(identity="second"):
        await running(kube, k8s, nodes=4)
    assert len(nodes.reshape_requests) == 1  # followed the recorded job, did not start another
    assert nodes.violations == []


async def test_rejected_reshape_is_reported_and_not_retried(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    nodes.reject_reason = "the planner cannot place 3 replicas"
    await patch_spec(kube, partitions=16)

    async def rejected() -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        status = (body or {}).get("status", {})
        return body if (status.get("reshape") or {}).get("phase") == "Rejected" else None

    body = await eventually(rejected, k8s=k8s, what="reshape rejected")
    degraded = next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ReshapeRejected"
    assert "cannot place" in degraded["message"]
    await has_events(kube, k8s, "ReshapeRejected")
    assert len(nodes.reshape_requests) == 1

    await patch_spec(kube, partitions=8)  # a different target is tried afresh
    await running(kube, k8s, nodes=3, partitions=8)
    assert len(nodes.reshape_requests) == 2


async def test_timer_reports_unready_nodes(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    controller.down.add("demo-2")

    async def unavailable() -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        conds = {c["type"]: c for c in (body or {}).get("status", {}).get("conditions", [])}
        return body if conds.get("Degraded", {}).get("reason") == "NodesUnavailable" else None

    body = await eventually(unavailable, k8s=k8s, what="NodesUnavailable")
    assert body["status"]["readyNodes"] == 2
    assert next(c for c in body["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
    controller.down.clear()
    await running(kube, k8s, nodes=3)
    await has_events(kube, k8s, "NodesUnavailable", "Recovered")


async def test_delete_lets_owned_objects_go(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    body = await running(kube, k8s, nodes=3)
    assert "kvcluster.io/operator" in body["metadata"]["finalizers"]
    await kube.delete(KVCLUSTERS.path(NAMESPACE, "demo"))
    await eventually(lambda: _gone(kube, KVCLUSTERS.path(NAMESPACE, "demo")), k8s=k8s, what="KVCluster gone")
    for kind, name in [
        (STATEFULSETS, "demo"),
        (SERVICES, "demo"),
        (CONFIGMAPS, "demo-config"),
        (SECRETS, "demo-auth"),
    ]:
        await eventually(
            lambda k=kind, n=name: _gone(kube, k.path(NAMESPACE, n)), k8s=k8s, what=f"{name} collected"
        )
    await has_events(kube, k8s, "Deleting")


async def _gone(kube: KubeClient, path: str) -> bool:
    return await kube.get(path) is None


async def test_peering_lets_one_operator_act(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    make_operator: Any,
) -> None:
    await kube.create(
        "/apis/kopf.dev/v1/namespaces/kv/kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "kvcluster"}},
    )
    high = await make_operator(identity="high", peering="kvcluster", priority=200).start()
    low = await make_operator(identity="low", peering="kvcluster", priority=100).start()
    try:
        await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
        await running(kube, k8s, nodes=3)
        assert high.operator.passes > 0
        # kopf's peering is not a lock: a standby acts until it has read the active operator's
        # presence, which took from under a second to over 30 s against the emulator. Every step
        # is idempotent and checked against the nodes' admin API, so a brief overlap is safe;
        # what must hold is that the steps seen by the nodes never broke a rule.
        assert nodes.violations == []
    finally:
        await high.stop()
    # The standby takes over once the active operator has left.
    try:
        await patch_spec(kube, nodes=4)
        await running(kube, k8s, nodes=4)
        assert low.operator.passes > 0
    finally:
        await low.stop()


async def test_a_reshape_completes_with_the_partitions_of_its_finished_job(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    # The pass that sees the job done completes the reshape and writes the summary it read
    # as the final status, so the summary must be read after the job: here the job ends
    # right after a /v1/cluster answer, between the two reads of one pass.
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    nodes.gate.clear()  # the job parks before its first step
    await patch_spec(kube, partitions=8)
    await eventually(lambda: nodes.job is not None and nodes.job.state == "running", what="job started")
    nodes.finish_after_cluster_read = True
    body = await running(kube, k8s, nodes=3, partitions=8)
    assert not nodes.finish_after_cluster_read, "the job was finished by a /v1/cluster read"
    assert nodes.pmap is not None and len(nodes.pmap.partitions) == 8
    assert body["status"]["partitions"]["total"] == 8
    nodes.gate.set()
    assert nodes.violations == []
