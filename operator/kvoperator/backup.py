"""Scheduled backups (a CronJob) and restore-on-create (a one-shot Job) of a KVCluster.

Why a CronJob running ``kvcluster backup`` rather than the operator taking
backups itself: the schedule then survives operator restarts and upgrades,
Kubernetes keeps the run history (``successfulJobsHistoryLimit``), and a
PVC target is just a volume mount -- the operator never needs the data
path. The operator's part is to render the CronJob from ``spec.backup``,
read back what the runs did, and say so in ``status.backup``, an Event and
the ``BackupFailing`` condition.

The result of a run travels the Kubernetes way: ``kvcluster backup
--summary-file /dev/termination-log`` writes one JSON object, which the
kubelet puts into the pod's ``containerStatuses[].state.terminated.message``
(at most 4 KiB; the summary is far smaller).

Restore: ``spec.restoreFrom`` on a *new* cluster makes the operator run
``kvcluster restore`` once, in a Job, when the cluster has bootstrapped --
the nodes start empty and the file is loaded through the API (which checks
every checksum before writing anything). Whether it ran is recorded in
``status.restore`` so it never runs twice; ``restoreFrom`` added to a
cluster that already exists is refused (it would overwrite live data).

Everything here is pure: builders and status functions; the controller does the I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kvoperator.resources import (
    AUTH_DIR,
    TLS_CA_KEY,
    TLS_DIR,
    TOKEN_KEY,
    Body,
    ClusterRef,
    owner_reference,
)
from kvoperator.spec import ClusterSpec, SpecError

BACKUP_DIR = "/backup"
LABEL = "kvcluster.io/backup-of"
"""Label on the CronJob, its Jobs and their pods: which cluster they back up (or restore)."""
ROLE_LABEL = "kvcluster.io/backup-role"
SUMMARY_FILE = "/dev/termination-log"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?\-]+$")
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where backups go (or where a restore reads from): a PVC path or an S3-compatible bucket."""

    kind: Literal["pvc", "s3"]
    claim_name: str | None = None
    path: str = ""
    bucket: str | None = None
    key: str = ""
    """s3: the prefix for backups, the object key for a restore."""
    endpoint: str | None = None
    region: str | None = None
    secret_name: str | None = None


@dataclass(frozen=True, slots=True)
class BackupSpec:
    schedule: str
    keep: int
    suspend: bool
    target: Target


def _text(d: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        if required:
            raise SpecError("InvalidBackupSpec", f"{where}.{key} is required")
        return None
    if not isinstance(value, str):
        raise SpecError("InvalidBackupSpec", f"{where}.{key} must be a string")
    return value


def parse_target(d: Any, where: str, *, restore: bool) -> Target:
    if not isinstance(d, Mapping):
        raise SpecError("InvalidBackupSpec", f"{where} must be an object")
    kinds = [k for k in ("pvc", "s3") if d.get(k)]
    if len(kinds) != 1:
        raise SpecError("InvalidBackupSpec", f"{where} needs exactly one of pvc or s3")
    body = d[kinds[0]]
    if not isinstance(body, Mapping):
        raise SpecError("InvalidBackupSpec", f"{where}.{kinds[0]} must be an object")
    if kinds[0] == "pvc":
        path = _text(body, "path", f"{where}.pvc", required=restore) or ""
        if ".." in path.split("/"):
            raise SpecError("InvalidBackupSpec", f"{where}.pvc.path must not contain '..'")
        return Target("pvc", claim_name=_text(body, "claimName", f"{where}.pvc", required=True), path=path)
    key_field = "key" if restore else "prefix"
    return Target(
        "s3",
        bucket=_text(body, "bucket", f"{where}.s3", required=True),
        key=_text(body, key_field, f"{where}.s3", required=restore) or "",
        endpoint=_text(body, "endpoint", f"{where}.s3"),
        region=_text(body, "region", f"{where}.s3"),
        secret_name=_text(body, "secretName", f"{where}.s3", required=True),
    )


def parse_backup(spec: Mapping[str, Any]) -> BackupSpec | None:
    """``spec.backup``, validated; None when absent. Raises SpecError (refused, nothing changed)."""
    raw = spec.get("backup")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecError("InvalidBackupSpec", "spec.backup must be an object")
    schedule = _text(raw, "schedule", "spec.backup", required=True) or ""
    fields = schedule.split()
    if not (schedule in _CRON_MACROS or (len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields))):
        raise SpecError(
            "InvalidBackupSpec",
            f"spec.backup.schedule {schedule!r} is not a cron schedule (5 fields or @daily...)",
        )
    keep = raw.get("keep", 7)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise SpecError("InvalidBackupSpec", "spec.backup.keep must be an integer of at least 1")
    return BackupSpec(
        schedule, keep, bool(raw.get("suspend", False)), parse_target(raw, "spec.backup", restore=False)
    )


def parse_restore(spec: Mapping[str, Any]) -> Target | None:
    raw = spec.get("restoreFrom")
    return None if raw is None else parse_target(raw, "spec.restoreFrom", restore=True)


# --- builders -------------------------------------------------------------------------------


def cronjob_name(ref: ClusterRef) -> str:
    return f"{ref.name}-backup"


def restore_job_name(ref: ClusterRef) -> str:
    return f"{ref.name}-restore"


def _labels(ref: ClusterRef, role: str) -> dict[str, str]:
    # Not the node selector labels: a backup pod must not count for the PDB or the Services.
    return {
        "app.kubernetes.io/name": "kvcluster-backup",
        "app.kubernetes.io/instance": ref.name,
        "app.kubernetes.io/managed-by": "kvcluster-operator",
        LABEL: ref.name,
        ROLE_LABEL: role,
    }


def location(target: Target, *, restore: bool) -> str:
    """The DEST / SOURCE argument of ``kvcluster backup|restore`` for a target."""
    if target.kind == "pvc":
        path = target.path.strip("/")
        if restore:
            return f"{BACKUP_DIR}/{path}"
        return f"{BACKUP_DIR}/{path}/" if path else f"{BACKUP_DIR}/"
    key = target.key.strip("/")
    if restore:
        return f"s3://{target.bucket}/{key}"
    return f"s3://{target.bucket}/{key}/" if key else f"s3://{target.bucket}/"


def _pod_spec(
    ref: ClusterRef,
    spec: ClusterSpec,
    auth_secret: str,
    tls_secret: str | None,
    target: Target,
    args: list[str],
) -> Body:
    scheme = "https" if spec.tls_enabled else "http"
    url = f"{scheme}://{ref.client_service}.{ref.namespace}.svc:7000"
    env: list[Body] = [{"name": "KVCLUSTER_TOKEN_FILE", "value": f"{AUTH_DIR}/{TOKEN_KEY}"}]
    # The root filesystem is read-only: /tmp is where an S3 backup is staged and checked before the
    # upload, and where a restore downloads the file before it verifies it.
    mounts: list[Body] = [
        {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    volumes: list[Body] = [
        {"name": "auth", "secret": {"secretName": auth_secret, "defaultMode": 0o440}},
        {"name": "scratch", "emptyDir": {}},
    ]
    if spec.tls_enabled and tls_secret is not None:
        env.append({"name": "KVCLUSTER_CACERT", "value": f"{TLS_DIR}/{TLS_CA_KEY}"})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret, "defaultMode": 0o440}})
    if target.kind == "pvc":
        mounts.append({"name": "backup", "mountPath": BACKUP_DIR})
        volumes.append({"name": "backup", "persistentVolumeClaim": {"claimName": target.claim_name}})
    else:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": target.secret_name, "key": var}}})
        if target.endpoint:
            env.append({"name": "AWS_ENDPOINT_URL", "value": target.endpoint})
        else:  # the Secret may carry it (optional key)
            ref_ = {"name": target.secret_name, "key": "endpoint", "optional": True}
            env.append({"name": "AWS_ENDPOINT_URL", "valueFrom": {"secretKeyRef": ref_}})
        env.append({"name": "AWS_DEFAULT_REGION", "value": target.region or "us-east-1"})
    container: Body = {
        "name": "backup",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["kvcluster", *args[:1], "-e", url, *args[1:]],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": SUMMARY_FILE,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod: Body = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "containers": [container],
        "volumes": volumes,
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    return pod


def build_cronjob(
    ref: ClusterRef, spec: ClusterSpec, backup: BackupSpec, *, auth_secret: str, tls_secret: str | None
) -> Body:
    dest = location(backup.target, restore=False)
    args = ["backup", dest, "--keep", str(backup.keep), "--summary-file", SUMMARY_FILE]
    labels = _labels(ref, "backup")
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(ref),
            "namespace": ref.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(ref)],
        },
        "spec": {
            "schedule": backup.schedule,
            "suspend": backup.suspend,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": 1,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": _pod_spec(ref, spec, auth_secret, tls_secret, backup.target, args),
                    },
                },
            },
        },
    }


def build_restore_job(
    ref: ClusterRef, spec: ClusterSpec, target: Target, *, auth_secret: str, tls_secret: str | None
) -> Body:
    labels = _labels(ref, "restore")
    # --force: the operator creates this Job only for a cluster it has just created, and a retry
    # of the Job (backoffLimit) must be able to finish a load that a crash cut short.
    args = ["restore", location(target, restore=True), "--force"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": restore_job_name(ref),
            "namespace": ref.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(ref)],
        },
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": labels},
                "spec": _pod_spec(ref, spec, auth_secret, tls_secret, target, args),
            },
        },
    }


# --- reading back what the runs did ------------------------------------------------------------


def job_result(job: Mapping[str, Any]) -> Literal["Succeeded", "Failed"] | None:
    """A finished Job's outcome from its conditions (None while it runs)."""
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    return None


def termination_message(pods: Sequence[Mapping[str, Any]], job_name: str) -> str | None:
    """The last terminated container's message of the job's pods (what ``--summary-file`` wrote)."""
    found: list[tuple[str, str]] = []
    for pod in pods:
        owners = pod["metadata"].get("ownerReferences") or []
        if not any(o.get("kind") == "Job" and o.get("name") == job_name for o in owners):
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("message"):
                found.append((str(term.get("finishedAt") or ""), str(term["message"])))
    return max(found)[1] if found else None


def backup_status(
    jobs: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """``status.backup`` from the newest finished backup Job (None: no run has finished yet)."""
    finished = [(j, r) for j in jobs if (r := job_result(j)) is not None]
    if not finished:
        return None
    started = [
        str((j.get("status") or {}).get("startTime") or j["metadata"].get("creationTimestamp") or "")
        for j in jobs
    ]
    job, result = max(finished, key=lambda jr: _age_key(jr[0]))
    status: dict[str, Any] = {
        "lastScheduleTime": max(started) if started else None,
        "lastJob": job["metadata"]["name"],
        "lastResult": result,
        "lastFinishedTime": (job.get("status") or {}).get("completionTime")
        or _failed_at(job)
        or job["metadata"].get("creationTimestamp"),
    }
    successes = [j for j, r in finished if r == "Succeeded"]
    if successes:
        newest_ok = max(successes, key=_age_key)
        status["lastSuccessfulTime"] = (newest_ok.get("status") or {}).get("completionTime")
    message = termination_message(pods, job["metadata"]["name"])
    summary: dict[str, Any] = {}
    if message:
        try:
            parsed = json.loads(message)
            summary = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            summary = {}
    if result == "Succeeded" and summary:
        status.update(
            lastFile=summary.get("file"), lastSize=summary.get("size"), lastKeys=summary.get("keys")
        )
        status["message"] = None
    else:
        status["message"] = (message or "the backup job failed")[-500:] if result == "Failed" else None
    return status


def _failed_at(job: Mapping[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return str(cond.get("lastTransitionTime") or "") or None
    return None


def _age_key(job: Mapping[str, Any]) -> tuple[str, str]:
    """Newest last: by creation time, then by name (a CronJob names its Jobs by schedule time)."""
    return str(job["metadata"].get("creationTimestamp") or ""), str(job["metadata"]["name"])
