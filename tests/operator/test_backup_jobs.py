"""spec.backup and spec.restoreFrom end to end: the Jobs the operator renders run for real.

Two KVClusters, each behind real node processes (``node_pods``). The
CronJob's Job template is run as a real ``kvcluster backup`` process
(``job_runner``: the Job controller's and kubelet's part) against the first
cluster, into a directory standing in for the PVC; what it leaves (the
termination message) is what the operator turns into ``status.backup``.
A second KVCluster is created with ``spec.restoreFrom`` naming that file: the
operator's restore Job runs the same way, and the new cluster, of another
shape, reads back every key.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import NAMESPACE, eventually, get_cluster
from job_runner import JobRunner
from k8s_emulator import K8sEmulator
from node_pods import NodePods
from operator_harness import OperatorThread
from sts_controller import PodInfo, StatefulSetController
from tests.s3server import KEYS, moto_server, s3_client

from kvcluster.client import AsyncClient
from kvoperator.controller import OperatorConfig
from kvoperator.kube import CRONJOBS, JOBS, KVCLUSTERS, SECRETS, KubeClient
from kvoperator.resources import ADMIN_URL_ANNOTATION

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAMES = ("demo", "copy")


@pytest.fixture
async def clusters(k8s: K8sEmulator, kube: KubeClient, tmp_path: Path) -> AsyncIterator[dict[str, NodePods]]:
    """One NodePods per StatefulSet, and one StatefulSet controller feeding both."""
    pods = {
        name: NodePods(kube, NAMESPACE, tmp_path / name, wait_changed=k8s.wait_changed, statefulset=name)
        for name in NAMES
    }

    async def changed(statefulset: str, infos: list[PodInfo]) -> None:
        await pods[statefulset].pods_changed(statefulset, infos)

    async def ready(pod: PodInfo) -> bool:
        return await pods[pod.statefulset].ready(pod)

    try:
        for p in pods.values():
            await p.__aenter__()
        async with StatefulSetController(
            kube, NAMESPACE, wait_changed=k8s.wait_changed, on_pods_changed=changed, readiness=ready
        ) as ctl:
            yield pods
        assert not ctl.errors, ctl.errors
    finally:
        for p in pods.values():
            await p.close()
            p.kill_all()
    for p in pods.values():
        assert not p.errors, p.errors


@pytest.fixture
async def operator(k8s: K8sEmulator) -> AsyncIterator[OperatorThread]:
    config = OperatorConfig(default_image="kvcluster:test", poll_interval=0.5, retry_delay=0.5)
    op = await OperatorThread(
        str(k8s.url).rstrip("/"), config, namespace=NAMESPACE, identity="backup"
    ).start()
    try:
        yield op
    finally:
        await op.stop()


def kvcluster(name: str, pods: NodePods, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvcluster.io/v1alpha1",
        "kind": "KVCluster",
        # The client Service does not exist here: the admin API is the first pod's.
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {ADMIN_URL_ANNOTATION: pods.url(f"{name}-0")},
        },
        "spec": {"terminationGracePeriodSeconds": 10, **spec},
    }


async def status_where(
    kube: KubeClient, k8s: K8sEmulator, name: str, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await get_cluster(kube, name)
        status = (body or {}).get("status", {})
        return status if check(status) else None

    return await eventually(probe, k8s=k8s, what=what, timeout=90)


def running(nodes: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s.get("phase") == "Running" and s.get("readyNodes") == nodes and not s.get("reshape")


async def test_backup_job_and_restore_job_run_for_real(
    k8s: K8sEmulator,
    kube: KubeClient,
    clusters: dict[str, NodePods],
    operator: OperatorThread,
    tmp_path: Path,
) -> None:
    demo, copy = clusters["demo"], clusters["copy"]
    runner = JobRunner(
        kube,
        NAMESPACE,
        tmp_path / "jobs",
        {f"http://{n}.{NAMESPACE}.svc:7000": clusters[n].urls()[:3] for n in NAMES},
    )
    backup = {"schedule": "@daily", "keep": 2, "pvc": {"claimName": "backups", "path": "nightly"}}
    await kube.create(
        KVCLUSTERS.path(NAMESPACE), kvcluster("demo", demo, nodes=3, partitions=4, replicas=3, backup=backup)
    )
    await status_where(kube, k8s, "demo", running(3), "demo Running")
    token = next(iter(demo.procs.values())).cmd.token
    data = {f"cfg/{i:04d}".encode(): f"value {i}".encode() * (i % 7) for i in range(400)}
    async with AsyncClient(demo.urls()[:3], token=token, timeout=20) as client:
        sem = asyncio.Semaphore(16)

        async def put(k: bytes, v: bytes) -> None:
            async with sem:
                await client.put(k, v)

        await asyncio.gather(*(put(k, v) for k, v in data.items()))

    async def cronjob() -> dict[str, Any] | None:
        return await kube.get(CRONJOBS.path(NAMESPACE, "demo-backup"))

    cj = await eventually(cronjob, k8s=k8s, what="the backup CronJob")
    template = cj["spec"]["jobTemplate"]["spec"]["template"]
    labels = template["metadata"]["labels"]

    # Three scheduled runs, as the CronJob would start them; each one real.
    summaries = []
    for n in (1, 2, 3):
        run = await runner.run(f"demo-backup-{n}", template)
        assert run.exit_code == 0, run.stderr
        summaries.append(json.loads(run.message))
        await runner.record(run, labels, when=f"2026-12-0{n}T03:00:00Z", cronjob=cj)
        status = await status_where(
            kube,
            k8s,
            "demo",
            lambda s, n=n: (s.get("backup") or {}).get("lastJob") == f"demo-backup-{n}",
            f"status.backup from run {n}",
        )
        assert status["backup"]["lastResult"] == "Succeeded"
    last = summaries[-1]
    assert status["backup"]["lastFile"] == last["file"] and status["backup"]["lastSize"] == last["size"]
    assert status["backup"]["lastKeys"] == len(data) == last["keys"]
    claim = tmp_path / "jobs" / "claims" / "backups" / "nightly"
    assert sorted(p.name for p in claim.iterdir()) == sorted(Path(s["file"]).name for s in summaries[1:]), (
        "--keep 2 pruned the oldest"
    )

    # A new cluster of another shape, created from the newest backup.
    source = {"pvc": {"claimName": "backups", "path": f"nightly/{Path(last['file']).name}"}}
    await kube.create(
        KVCLUSTERS.path(NAMESPACE),
        kvcluster("copy", copy, nodes=2, partitions=2, replicas=2, restoreFrom=source),
    )

    async def restore_job() -> dict[str, Any] | None:
        return await kube.get(JOBS.path(NAMESPACE, "copy-restore"))

    job = await eventually(restore_job, k8s=k8s, what="the restore Job", timeout=90)
    run = await runner.run("copy-restore", job["spec"]["template"])
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["keys"] == len(data)
    await runner.record(run, job["spec"]["template"]["metadata"]["labels"], when="2026-12-04T00:00:00Z")
    await status_where(
        kube,
        k8s,
        "copy",
        lambda s: (s.get("restore") or {}).get("phase") == "Succeeded",
        "the restore Succeeded",
    )
    copy_token = next(iter(copy.procs.values())).cmd.token
    async with AsyncClient(copy.urls()[:2], token=copy_token, timeout=20) as client:
        restored = {}
        cursor = None
        while True:
            page = await client.scan(limit=500, cursor=cursor)
            restored.update({item.key: item.value for item in page.items})
            if page.next is None:
                break
            cursor = page.next
    assert restored == data

    # The same cluster's backups switched to an S3-compatible bucket through a Secret of keys:
    # the keys reach the run as environment variables, the file is staged in the pod's /tmp.
    with moto_server() as endpoint:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="kv-backups")
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-keys", "namespace": NAMESPACE},
            "data": {
                k: base64.b64encode(v.encode()).decode() for k, v in KEYS.items() if k.startswith("AWS_")
            },
        }
        await kube.create(SECRETS.path(NAMESPACE), secret)
        target = {"bucket": "kv-backups", "prefix": "demo", "endpoint": endpoint, "secretName": "s3-keys"}
        await kube.patch(
            KVCLUSTERS.path(NAMESPACE, "demo"),
            {"spec": {"backup": {"schedule": "@daily", "keep": 1, "s3": target, "pvc": None}}},  # merge patch
        )

        async def s3_cronjob() -> dict[str, Any] | None:
            body = await kube.get(CRONJOBS.path(NAMESPACE, "demo-backup"))
            pod = body["spec"]["jobTemplate"]["spec"]["template"] if body else None
            return pod if pod and "s3://kv-backups/demo/" in pod["spec"]["containers"][0]["command"] else None

        template = await eventually(s3_cronjob, k8s=k8s, what="the CronJob aimed at S3", timeout=30)
        run = await runner.run("demo-backup-4", template)
        assert run.exit_code == 0, run.stderr
        await runner.record(run, labels, when="2026-12-05T03:00:00Z", cronjob=cj)
        status = await status_where(
            kube,
            k8s,
            "demo",
            lambda s: (s.get("backup") or {}).get("lastJob") == "demo-backup-4",
            "the S3 run",
        )
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="kv-backups", Prefix="demo/")["Contents"]]
        assert [f"s3://kv-backups/{k}" for k in listed] == [status["backup"]["lastFile"]]
        assert status["backup"]["lastKeys"] == len(data)
