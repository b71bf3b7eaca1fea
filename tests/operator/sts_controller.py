"""A test-side StatefulSet controller (and garbage collector) for the emulated API.

The emulator has no controllers, so this plays the parts of kube-controller-
manager and the kubelet that the operator depends on: pods ``<sts>-<i>`` for
every ordinal below ``spec.replicas`` (all at once: the operator asks for
``podManagementPolicy: Parallel``), their claims from the templates, pod
readiness, StatefulSet status, and deletion of objects whose controller
owner is gone.

Each pod's environment is resolved the way the kubelet does when the
container starts (literal values, ``fieldRef``, ``configMapKeyRef``) and its
secret volume is read, so a hook sees what a node process would see. The
``on_pods_changed`` hook is where an end-to-end harness starts and stops real
node processes; ``readiness`` is where it reports their ``/readyz``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvoperator.kube import (
    CONFIGMAPS,
    KVCLUSTERS,
    PDBS,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    KubeClient,
)
from kvoperator.upgrade import REVISION_LABEL


@dataclass
class PodInfo:
    statefulset: str
    namespace: str
    name: str
    ordinal: int
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    ready: bool = False

    @property
    def node_id(self) -> int:
        return self.ordinal + 1


def template_revision(sts: Mapping[str, Any]) -> str:
    """A digest of the pod template: the name of a ControllerRevision in a real cluster."""
    body = json.dumps(sts["spec"]["template"], sort_keys=True).encode()
    return f"{sts['metadata']['name']}-{hashlib.sha256(body).hexdigest()[:10]}"


PodsChanged = Callable[[str, list[PodInfo]], Awaitable[None]]
Readiness = Callable[[PodInfo], bool | Awaitable[bool]]


class StatefulSetController:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        *,
        wait_changed: Callable[[float], Awaitable[None]],
        on_pods_changed: PodsChanged | None = None,
        readiness: Readiness | None = None,
        period: float = 0.2,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.on_pods_changed = on_pods_changed
        self.readiness = readiness
        self.period = period
        self._wait_changed = wait_changed
        self.pods: dict[str, PodInfo] = {}
        self.history: list[str] = []
        """What the controller did, in order (``create demo-3``, ``delete demo-3``)."""
        self.down: set[str] = set()
        """Pods a test wants unready (a crashed node), whatever ``readiness`` says."""
        self._task: asyncio.Task[None] | None = None
        self.errors: list[BaseException] = []

    async def __aenter__(self) -> StatefulSetController:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:  # keep going: a test asserts on `errors`
                self.errors.append(exc)
            await self._wait_changed(self.period)

    async def sync(self) -> None:
        ns = self.namespace
        for sts in await self.kube.list(STATEFULSETS.path(ns)):
            await self._sync_statefulset(sts)
        await self._collect_garbage()

    async def _sync_statefulset(self, sts: dict[str, Any]) -> None:
        ns, name = self.namespace, sts["metadata"]["name"]
        want = int(sts["spec"].get("replicas", 1))
        pods = {
            p["metadata"]["name"]: p
            for p in await self.kube.list(PODS.path(ns))
            if any(o.get("uid") == sts["metadata"]["uid"] for o in p["metadata"].get("ownerReferences", []))
        }
        changed = False
        for ordinal in range(want):
            pod_name = f"{name}-{ordinal}"
            if pod_name not in pods:
                pods[pod_name] = await self._create_pod(sts, ordinal)
                changed = True
        for pod_name in list(pods):
            ordinal = int(pod_name.rsplit("-", 1)[1])
            if ordinal >= want:
                await self.kube.delete(PODS.path(ns, pod_name))
                self.history.append(f"delete {pod_name}")
                self.pods.pop(pod_name, None)
                del pods[pod_name]
                policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy", {})
                if policy.get("whenScaled") == "Delete":
                    for tmpl in sts["spec"].get("volumeClaimTemplates", []):
                        await self.kube.delete(PVCS.path(ns, f"{tmpl['metadata']['name']}-{pod_name}"))
                changed = True
        if changed and self.on_pods_changed is not None:
            await self.on_pods_changed(name, [self.pods[n] for n in sorted(pods) if n in self.pods])

        ready = 0
        for pod_name, pod in pods.items():
            info = self.pods.get(pod_name)
            is_ready = info is not None and pod_name not in self.down and await self._ready(info)
            if info is not None:
                info.ready = is_ready
            ready += is_ready
            conditions = pod.get("status", {}).get("conditions") or []
            if conditions != [{"type": "Ready", "status": str(is_ready)}]:
                status = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(is_ready)}]}
                await self.kube.patch(PODS.path(ns, pod_name, "status"), {"status": status})
        # Revisions as the real controller keeps them: updateRevision names the current
        # template, each pod carries the revision it was made from, and (OnDelete, or a
        # RollingUpdate this emulation does not drive) only a replaced pod gets the new one.
        revision = template_revision(sts)
        updated = sum(
            1 for p in pods.values() if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision
        )
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": len(pods),
            "updatedReplicas": updated,
            "updateRevision": revision,
        }
        if any(sts.get("status", {}).get(k) != v for k, v in status.items()):
            await self.kube.patch(STATEFULSETS.path(ns, name, "status"), {"status": status})

    async def _ready(self, pod: PodInfo) -> bool:
        if self.readiness is None:
            return True
        result = self.readiness(pod)
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    async def _create_pod(self, sts: dict[str, Any], ordinal: int) -> dict[str, Any]:
        ns, sts_name = self.namespace, sts["metadata"]["name"]
        name = f"{sts_name}-{ordinal}"
        template = sts["spec"]["template"]
        container = template["spec"]["containers"][0]
        env: dict[str, str] = {}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "fieldRef" in var.get("valueFrom", {}):
                env[var["name"]] = name
            elif "configMapKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["configMapKeyRef"]
                cm = await self.kube.get(CONFIGMAPS.path(ns, ref["name"]))
                if cm is None or ref["key"] not in cm.get("data", {}):
                    raise RuntimeError(f"{name}: ConfigMap {ref['name']} lacks {ref['key']}")
                env[var["name"]] = cm["data"][ref["key"]]
        files: dict[str, str] = {}
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                secret = await self.kube.get(SECRETS.path(ns, volume["secret"]["secretName"]))
                if secret is None:
                    raise RuntimeError(f"{name}: Secret {volume['secret']['secretName']} is missing")
                files |= {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        for tmpl in sts["spec"].get("volumeClaimTemplates", []):
            claim = f"{tmpl['metadata']['name']}-{name}"
            if await self.kube.get(PVCS.path(ns, claim)) is None:
                await self.kube.create(
                    PVCS.path(ns),
                    {
                        "metadata": {"name": claim, "labels": tmpl["metadata"].get("labels", {})},
                        "spec": tmpl["spec"],
                    },
                )
        owner = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": sts_name,
            "uid": sts["metadata"]["uid"],
            "controller": True,
        }
        pod = await self.kube.create(
            PODS.path(ns),
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": {**template["metadata"]["labels"], REVISION_LABEL: template_revision(sts)},
                    "ownerReferences": [owner],
                },
                "spec": template["spec"],
            },
        )
        # A pod deleted by someone else (a rolling upgrade) comes back under its old name.
        verb = "recreate" if name in self.pods else "create"
        self.pods[name] = PodInfo(sts_name, ns, name, ordinal, env, files)
        self.history.append(f"{verb} {name}")
        return pod

    async def _collect_garbage(self) -> None:
        """Delete objects whose controller owner no longer exists (the GC's job)."""
        ns = self.namespace
        owners = {o["metadata"]["uid"] for o in await self.kube.list(KVCLUSTERS.path(ns))}
        owners |= {o["metadata"]["uid"] for o in await self.kube.list(STATEFULSETS.path(ns))}
        for kind in (STATEFULSETS, SERVICES, CONFIGMAPS, SECRETS, PDBS, PODS):
            for obj in await self.kube.list(kind.path(ns)):
                refs = [r for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")]
                if refs and refs[0]["uid"] not in owners:
                    await self.kube.delete(kind.path(ns, obj["metadata"]["name"]))
                    self.history.append(f"gc {kind.plural}/{obj['metadata']['name']}")
                    if kind is PODS:
                        self.pods.pop(obj["metadata"]["name"], None)
