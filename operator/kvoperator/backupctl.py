"""One reconcile pass's backup and restore work: keep the CronJob as the spec says, run a restore
once, and report both in the status (see :mod:`kvoperator.backup` for the why).

Called by the controller after the main state machine has decided; it adds to the same status
patch and event list, so one pass still writes the status once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvoperator import backup as bk
from kvoperator import status as st
from kvoperator.kube import CRONJOBS, JOBS, PODS, KubeClient, KubeError
from kvoperator.resources import HASH_ANNOTATION, ClusterRef, owned_by, with_hash
from kvoperator.spec import ClusterSpec

BACKUP_FAILING = "BackupFailing"
RESTORED = "Restored"


@dataclass(frozen=True, slots=True)
class Wanted:
    backup: bk.BackupSpec | None
    restore: bk.Target | None


def _condition(
    previous: Mapping[str, Mapping[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int,
) -> dict[str, Any]:
    prev = previous.get(ctype)
    same = prev is not None and prev.get("status") == status and prev.get("lastTransitionTime")
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": str(prev["lastTransitionTime"]) if same and prev else now,
        "observedGeneration": generation,
    }


async def reconcile(
    kube: KubeClient,
    ref: ClusterRef,
    spec: ClusterSpec,
    wanted: Wanted,
    status: Mapping[str, Any],
    patch: dict[str, Any],
    events: list[st.EventSpec],
    *,
    auth_secret: str,
    tls_secret: str | None,
    now: str,
    generation: int,
) -> None:
    """Carry out the backup/restore part of a pass; adds to ``patch`` (the status) and ``events``."""
    ns = ref.namespace
    merged = {**status, **patch}
    bootstrapped = bool(merged.get("bootstrapped"))
    previous = {str(c.get("type")): c for c in status.get("conditions") or ()}
    extra: list[dict[str, Any]] = []

    # --- scheduled backups -------------------------------------------------------------------
    existing = await kube.get(CRONJOBS.path(ns, bk.cronjob_name(ref)))
    if wanted.backup is not None and bootstrapped:
        desired = with_hash(
            bk.build_cronjob(ref, spec, wanted.backup, auth_secret=auth_secret, tls_secret=tls_secret)
        )
        if existing is None:
            await kube.create(CRONJOBS.path(ns), desired)
            events.append(st.EventSpec("Normal", "BackupScheduled", f"backups {wanted.backup.schedule}"))
        elif (
            owned_by(existing, ref)
            and (existing["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)
            != desired["metadata"]["annotations"][HASH_ANNOTATION]
        ):
            await kube.patch(
                CRONJOBS.path(ns, bk.cronjob_name(ref)),
                {"metadata": {"annotations": desired["metadata"]["annotations"]}, "spec": desired["spec"]},
            )
    elif wanted.backup is None and existing is not None and owned_by(existing, ref):
        await kube.delete(CRONJOBS.path(ns, bk.cronjob_name(ref)))
        events.append(st.EventSpec("Normal", "BackupUnscheduled", "spec.backup removed: no more backups"))
    if wanted.backup is not None:
        selector = f"{bk.LABEL}={ref.name},{bk.ROLE_LABEL}=backup"
        jobs = [
            j for j in await kube.list(JOBS.path(ns), label_selector=selector) if owned_by_cronjob(j, ref)
        ]
        pods = await kube.list(PODS.path(ns), label_selector=selector)
        last = bk.backup_status(jobs, pods)
        old = status.get("backup") or {}
        # The schedule in the status also tells the next pass that a CronJob may exist to remove.
        patch["backup"] = {"schedule": wanted.backup.schedule, **(last or {})}
        if last is not None and last["lastJob"] != old.get("lastJob"):
            if last["lastResult"] == "Failed":
                events.append(
                    st.EventSpec("Warning", "BackupFailed", f"{last['lastJob']}: {last['message']}")
                )
            else:
                events.append(
                    st.EventSpec(
                        "Normal",
                        "BackupSucceeded",
                        f"{last.get('lastFile')} ({last.get('lastSize')} bytes)",
                    )
                )
        failing = last is not None and last["lastResult"] == "Failed"
        extra.append(
            _condition(
                previous,
                BACKUP_FAILING,
                "True" if failing else "False",
                "BackupFailed" if failing else ("BackupSucceeded" if last else "NoBackupYet"),
                str(last.get("message"))
                if failing and last
                else "the last backup succeeded"
                if last
                else "no backup has run yet",
                now=now,
                generation=generation,
            )
        )
    elif status.get("backup") is not None:
        patch["backup"] = None

    # --- restore on create -------------------------------------------------------------------
    restore = dict(status.get("restore") or {})
    if wanted.restore is not None and not restore:
        if status.get("initial") is None:
            # This pass creates the cluster: the restore belongs to it.
            restore = {"phase": "Pending", "source": bk.location(wanted.restore, restore=True)}
            patch["restore"] = restore
        else:
            message = (
                "spec.restoreFrom was added to a cluster that already exists; it would overwrite live data"
            )
            if (previous.get(RESTORED) or {}).get("reason") != "RestoreRefused":
                events.append(st.EventSpec("Warning", "RestoreRefused", message))
            extra.append(
                _condition(
                    previous, RESTORED, "False", "RestoreRefused", message, now=now, generation=generation
                )
            )
    if restore and wanted.restore is not None:
        phase = restore.get("phase")
        if phase == "Pending" and bootstrapped:
            job = bk.build_restore_job(
                ref, spec, wanted.restore, auth_secret=auth_secret, tls_secret=tls_secret
            )
            try:
                await kube.create(JOBS.path(ns), job)
            except KubeError as exc:
                if exc.status != 409:
                    raise
            restore = {**restore, "phase": "Running", "startedAt": now, "job": bk.restore_job_name(ref)}
            patch["restore"] = restore
            events.append(st.EventSpec("Normal", "RestoreStarted", f"restoring from {restore['source']}"))
        elif phase == "Running":
            job_body = await kube.get(JOBS.path(ns, bk.restore_job_name(ref)))
            result = bk.job_result(job_body) if job_body is not None else "Failed"
            if result is not None:
                restore = {**restore, "phase": result, "finishedAt": now}
                patch["restore"] = restore
                if result == "Succeeded":
                    events.append(
                        st.EventSpec("Normal", "RestoreSucceeded", f"restored from {restore['source']}")
                    )
                else:
                    events.append(
                        st.EventSpec(
                            "Warning", "RestoreFailed", f"the restore from {restore['source']} failed"
                        )
                    )
        phase = restore.get("phase")
        reason = {"Pending": "RestorePending", "Running": "Restoring", "Succeeded": "RestoreSucceeded"}.get(
            str(phase), "RestoreFailed"
        )
        extra.append(
            _condition(
                previous,
                RESTORED,
                "True" if phase == "Succeeded" else "False",
                reason,
                f"restore from {restore.get('source')}: {str(phase).lower()}",
                now=now,
                generation=generation,
            )
        )

    if extra:
        base = patch.get("conditions")
        if base is None:
            base = [
                c for c in status.get("conditions") or () if c.get("type") not in (BACKUP_FAILING, RESTORED)
            ]
        kept = [c for c in base if c.get("type") not in {e["type"] for e in extra}]
        patch["conditions"] = [*kept, *extra]


def owned_by_cronjob(job: Mapping[str, Any], ref: ClusterRef) -> bool:
    return any(
        o.get("kind") == "CronJob" and o.get("name") == bk.cronjob_name(ref)
        for o in job["metadata"].get("ownerReferences") or ()
    )
