"""spec.backup and spec.restoreFrom through the operator, the emulated API and the fake nodes.

The emulator has no CronJob or Job controller: the tests play it, creating the Jobs a CronJob
would start and their pods' final states (the termination message ``kvcluster backup
--summary-file /dev/termination-log`` leaves), and check what the operator makes of them.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import NAMESPACE, eventually, get_cluster
from fake_admin import FakeNodes
from k8s_emulator import K8sEmulator
from operator_harness import OperatorThread
from sts_controller import StatefulSetController
from test_operator import cluster, events, has_events, patch_spec, running

from kvoperator import backup as bk
from kvoperator.kube import CRONJOBS, JOBS, KVCLUSTERS, PODS, STATEFULSETS, KubeClient
from kvoperator.resources import ClusterRef
from kvoperator.spec import SpecError, parse_spec

S3 = {
    "s3": {"bucket": "kv-backups", "prefix": "demo", "endpoint": "http://minio:9000", "secretName": "s3-keys"}
}
PVC = {"pvc": {"claimName": "backups", "path": "nightly"}}


async def cronjob(kube: KubeClient, k8s: K8sEmulator, present: bool = True) -> dict[str, Any] | None:
    async def check() -> dict[str, Any] | bool | None:
        body = await kube.get(CRONJOBS.path(NAMESPACE, "demo-backup"))
        return body if present else body is None

    found = await eventually(check, k8s=k8s, what=f"CronJob {'present' if present else 'gone'}")
    return found if isinstance(found, dict) else None


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def test_backup_cronjob_for_an_s3_target(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster(backup={"schedule": "0 3 * * *", "keep": 5, **S3}))
    body = await running(kube, k8s, nodes=3)
    cj = await cronjob(kube, k8s)
    assert cj is not None
    assert cj["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    spec = cj["spec"]
    assert spec["schedule"] == "0 3 * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "kvcluster:test"
    assert container["command"] == [
        "kvcluster", "backup", "-e", "http://demo.kv.svc:7000", "s3://kv-backups/demo/",
        "--keep", "5", "--summary-file", "/dev/termination-log",
    ]  # fmt: skip
    assert container["terminationMessagePath"] == "/dev/termination-log"
    env = env_of(container)
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["KVCLUSTER_TOKEN_FILE"] == "/etc/kvcluster/auth/token"
    assert {"name": "auth", "secret": {"secretName": "demo-auth", "defaultMode": 0o440}} in pod["volumes"]
    # A read-only root filesystem: the S3 staging file needs a writable /tmp.
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]
    # Backup pods are not node pods: not selected by the PDB, the Services or the StatefulSet.
    sts = await kube.get(STATEFULSETS.path(NAMESPACE, "demo"))
    assert sts is not None
    selector = sts["spec"]["selector"]["matchLabels"]
    labels = spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items())
    await has_events(kube, k8s, "BackupScheduled")

    # Changing the schedule updates it; removing spec.backup deletes it.
    await patch_spec(kube, backup={"schedule": "@hourly", "keep": 5, **S3})

    async def hourly() -> bool:
        body = await kube.get(CRONJOBS.path(NAMESPACE, "demo-backup"))
        return body is not None and body["spec"]["schedule"] == "@hourly"

    await eventually(hourly, k8s=k8s, what="the new schedule")
    await kube.patch(KVCLUSTERS.path(NAMESPACE, "demo"), {"spec": {"backup": None}})
    await cronjob(kube, k8s, present=False)
    await has_events(kube, k8s, "BackupUnscheduled")


async def test_an_invalid_backup_spec_is_refused_and_nothing_is_created(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    await patch_spec(kube, backup={"schedule": "every night", **PVC})

    async def refused() -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        conds = {c["type"]: c for c in (body or {}).get("status", {}).get("conditions", [])}
        degraded = conds.get("Degraded") or {}
        return body if degraded.get("reason") == "InvalidBackupSpec" else None

    body = await eventually(refused, k8s=k8s, what="the backup spec refused")
    assert (
        "every night" in next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")["message"]
    )
    await has_events(kube, k8s, "InvalidBackupSpec")
    assert await kube.get(CRONJOBS.path(NAMESPACE, "demo-backup")) is None
    # Both targets at once is refused too, by the same parser the operator uses.
    for bad in (
        {"schedule": "@daily", **PVC, **S3},
        {"schedule": "@daily"},
        {"schedule": "@daily", "keep": 0, **PVC},
    ):
        try:
            bk.parse_backup({"backup": bad})
        except SpecError as exc:
            assert exc.reason == "InvalidBackupSpec"
        else:
            raise AssertionError(f"accepted {bad}")


def job(name: str, created: str, result: str | None) -> dict[str, Any]:
    labels = {bk.LABEL: "demo", bk.ROLE_LABEL: "backup"}
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "CronJob", "name": "demo-backup", "uid": "x"}
            ],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "backup", "image": "x"}]}}},
        "status": {"startTime": created},
    }
    if result == "Complete":
        body["status"] |= {
            "completionTime": created,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": created}],
        }
    elif result == "Failed":
        body["status"]["conditions"] = [{"type": "Failed", "status": "True", "lastTransitionTime": created}]
    return body


def job_pod(job_name: str, message: str, exit_code: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job_name}-pod",
            "labels": {bk.LABEL: "demo", bk.ROLE_LABEL: "backup"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": "y"}],
        },
        "spec": {"containers": [{"name": "backup", "image": "x"}]},
        "status": {
            "containerStatuses": [
                {
                    "name": "backup",
                    "state": {"terminated": {"exitCode": exit_code, "message": message, "finishedAt": "t"}},
                }
            ]
        },
    }


async def add_run(kube: KubeClient, name: str, created: str, result: str, message: str, code: int) -> None:
    """What a CronJob run leaves: the pod terminated with its message, then the Job marked finished."""
    pod = job_pod(name, message, code)
    await kube.create(PODS.path(NAMESPACE), pod)
    await kube.patch(PODS.path(NAMESPACE, pod["metadata"]["name"], "status"), {"status": pod["status"]})
    body = job(name, created, result)
    await kube.create(JOBS.path(NAMESPACE), {**body, "status": {}})
    await kube.patch(JOBS.path(NAMESPACE, name, "status"), {"status": body["status"]})


async def backup_status(kube: KubeClient, k8s: K8sEmulator, job_name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        status = (body or {}).get("status", {})
        return status if (status.get("backup") or {}).get("lastJob") == job_name else None

    return await eventually(check, k8s=k8s, what=f"status.backup from {job_name}")


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


async def test_status_follows_the_backup_runs(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster(backup={"schedule": "@daily", **PVC}))
    await running(kube, k8s, nodes=3)
    await cronjob(kube, k8s)
    summary = {"file": "/backup/nightly/kvcluster-20261206T030000Z.kvbackup", "size": 12345, "keys": 99}
    await add_run(kube, "demo-backup-1", "2026-12-06T03:00:00Z", "Complete", json.dumps(summary), 0)
    status = await backup_status(kube, k8s, "demo-backup-1")
    backup = status["backup"]
    assert backup["lastResult"] == "Succeeded" and backup["lastSize"] == 12345 and backup["lastKeys"] == 99
    assert backup["lastFile"] == summary["file"] and backup["lastSuccessfulTime"] == "2026-12-06T03:00:00Z"
    assert condition(status, "BackupFailing")["status"] == "False"
    await has_events(kube, k8s, "BackupSucceeded")

    await add_run(kube, "demo-backup-2", "2026-12-07T03:00:00Z", "Failed", "unavailable: no leader", 4)
    status = await backup_status(kube, k8s, "demo-backup-2")
    assert status["backup"]["lastResult"] == "Failed" and "no leader" in status["backup"]["message"]
    assert status["backup"]["lastSuccessfulTime"] == "2026-12-06T03:00:00Z"
    failing = condition(status, "BackupFailing")
    assert failing["status"] == "True" and failing["reason"] == "BackupFailed"
    warnings = [e for e in await has_events(kube, k8s, "BackupFailed") if e["reason"] == "BackupFailed"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning" and "no leader" in warnings[0]["message"]
    # The cluster itself is fine: a failed backup is not a degraded store.
    assert condition(status, "Ready")["status"] == "True"

    await add_run(kube, "demo-backup-3", "2026-12-08T03:00:00Z", "Complete", json.dumps(summary), 0)
    status = await backup_status(kube, k8s, "demo-backup-3")
    assert condition(status, "BackupFailing")["status"] == "False"
    await eventually(lambda: _count(kube, "BackupSucceeded", 2), k8s=k8s, what="the second BackupSucceeded")
    assert len([e for e in await events(kube, "BackupFailed") if e["type"] == "Warning"]) == 1


async def test_restore_runs_once_on_a_new_cluster(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    source = {"pvc": {"claimName": "backups", "path": "nightly/kvcluster-20261206T030000Z.kvbackup"}}
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster(restoreFrom=source))
    await running(kube, k8s, nodes=3)

    async def restore_job() -> dict[str, Any] | None:
        return await kube.get(JOBS.path(NAMESPACE, "demo-restore"))

    created = await eventually(restore_job, k8s=k8s, what="the restore Job")
    (container,) = created["spec"]["template"]["spec"]["containers"]
    url, path = "http://demo.kv.svc:7000", "/backup/nightly/kvcluster-20261206T030000Z.kvbackup"
    assert container["command"] == ["kvcluster", "restore", "-e", url, path, "--force"]
    body = await get_cluster(kube, "demo")
    assert body is not None and body["status"]["restore"]["phase"] == "Running"
    done = {"conditions": [{"type": "Complete", "status": "True"}], "completionTime": "2026-12-06T04:00:00Z"}
    await kube.patch(JOBS.path(NAMESPACE, "demo-restore", "status"), {"status": done})

    async def restored() -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        status = (body or {}).get("status", {})
        return status if (status.get("restore") or {}).get("phase") == "Succeeded" else None

    status = await eventually(restored, k8s=k8s, what="the restore Succeeded")
    assert condition(status, "Restored")["status"] == "True"
    await has_events(kube, k8s, "RestoreStarted", "RestoreSucceeded")
    # Never again: the Job is gone (TTL, or deleted by hand) and nothing recreates it.
    await kube.delete(JOBS.path(NAMESPACE, "demo-restore"))
    for _ in range(6):
        await k8s.wait_changed(0.3)
    assert await kube.get(JOBS.path(NAMESPACE, "demo-restore")) is None


async def test_restore_from_added_to_an_existing_cluster_is_refused(
    k8s: K8sEmulator,
    kube: KubeClient,
    nodes: FakeNodes,
    controller: StatefulSetController,
    operator: OperatorThread,
) -> None:
    await kube.create(KVCLUSTERS.path(NAMESPACE), cluster())
    await running(kube, k8s, nodes=3)
    await patch_spec(kube, restoreFrom={"s3": {"bucket": "b", "key": "k.kvbackup", "secretName": "s"}})

    async def refused() -> dict[str, Any] | None:
        body = await get_cluster(kube, "demo")
        conds = {c["type"]: c for c in (body or {}).get("status", {}).get("conditions", [])}
        return (
            conds.get("Restored") if (conds.get("Restored") or {}).get("reason") == "RestoreRefused" else None
        )

    cond = await eventually(refused, k8s=k8s, what="restoreFrom refused")
    assert cond["status"] == "False" and "already exists" in cond["message"]
    await has_events(kube, k8s, "RestoreRefused")
    for _ in range(4):
        await k8s.wait_changed(0.3)
    assert await kube.get(JOBS.path(NAMESPACE, "demo-restore")) is None
    assert len(await events(kube, "RestoreRefused")) == 1


def test_cronjob_with_tls_and_a_pvc_target() -> None:
    ref = ClusterRef(name="demo", namespace="kv", uid="u")
    spec = parse_spec(
        {"nodes": 3, "partitions": 4, "replicas": 3, "tls": {"enabled": True}}, default_image="img"
    )
    backup = bk.parse_backup({"backup": {"schedule": "*/30 * * * *", "keep": 2, **PVC}})
    assert backup is not None
    cj = bk.build_cronjob(ref, spec, backup, auth_secret="demo-auth", tls_secret="demo-tls")
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:5] == [
        "kvcluster",
        "backup",
        "-e",
        "https://demo.kv.svc:7000",
        "/backup/nightly/",
    ]
    assert env_of(container)["KVCLUSTER_CACERT"] == "/etc/kvcluster/tls/ca.crt"
    assert {"name": "backup", "persistentVolumeClaim": {"claimName": "backups"}} in pod["volumes"]
    assert {"name": "tls", "secret": {"secretName": "demo-tls", "defaultMode": 0o440}} in pod["volumes"]
    assert {"name": "backup", "mountPath": "/backup"} in container["volumeMounts"]


async def _count(kube: KubeClient, reason: str, n: int) -> bool:
    return len(await events(kube, reason)) >= n
