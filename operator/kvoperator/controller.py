"""The kopf layer: observe, call :func:`kvoperator.rc.decide`, carry out the plan.

Everything that decides lives in :mod:`kvoperator.reconcile`; this module
only talks to Kubernetes and to the nodes. All handlers funnel into one
:meth:`Operator.reconcile`, serialised per KVCluster with a lock, because
kopf runs a timer concurrently with change handlers of the same object and
two passes interleaving their reads and writes could act on stale status.

Each pass re-reads the KVCluster instead of trusting the body kopf handed
in: that body may predate the previous pass's status write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import kopf

from kvoperator import backupctl, crd
from kvoperator import reconcile as rc
from kvoperator import status as st
from kvoperator.admin import DEFAULT_URL_TEMPLATE, AdminClient, AdminError, AdminUnavailable
from kvoperator.backup import parse_backup, parse_restore
from kvoperator.config import build_configmap
from kvoperator.kube import (
    CONFIGMAPS,
    KVCLUSTERS,
    PDBS,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    Kind,
    KubeClient,
    KubeError,
)
from kvoperator.pdb import build_pdb
from kvoperator.resources import (
    ADMIN_URL_ANNOTATION,
    CLUSTER_SECRET_KEY,
    HASH_ANNOTATION,
    TLS_CA_KEY,
    TOKEN_KEY,
    Body,
    ClusterRef,
    owned_by,
    selector_string,
)
from kvoperator.secret import build_secret, decode_secret_value, generate_credentials
from kvoperator.services import build_client_service, build_headless_service
from kvoperator.spec import ClusterSpec, Layout, SpecError, parse_quantity, parse_spec
from kvoperator.statefulset import build_statefulset, mutable_patch, tls_secret_name
from kvoperator.tlssecret import build_tls_secret, generate_tls_material
from kvoperator.upgrade import PodView, Replication

LoginFn = Callable[..., kopf.ConnectionInfo | None]
DEFAULT_IMAGE = "kvcluster:latest"

LEADERLESS_GRACE_S = 3.0
"""How long a partition may be without a leader before the status calls it one."""


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """Operator-wide settings (command line and environment), not per cluster."""

    default_image: str = DEFAULT_IMAGE
    admin_url_template: str = DEFAULT_URL_TEMPLATE
    """Where a cluster's admin API is: ``{name}`` and ``{namespace}`` are filled in.
    A ``kvcluster.io/admin-url`` annotation on a KVCluster overrides it."""
    poll_interval: float = 10.0
    """Timer period: health re-check and progress of a running reshape."""
    retry_delay: float = 5.0
    max_passes: int = 6
    """Passes per handler call while each pass moves the state machine on."""
    namespaces: tuple[str, ...] = ()
    clusterwide: bool = False
    peering_name: str | None = "kvcluster"
    standalone: bool = False
    priority: int | None = None
    liveness_endpoint: str | None = None
    reporting_instance: str = "kvcluster-operator"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        namespaces = tuple(n for n in env.get("KVOPERATOR_NAMESPACES", "").split(",") if n.strip())
        return cls(
            default_image=env.get("KVOPERATOR_NODE_IMAGE", DEFAULT_IMAGE),
            admin_url_template=env.get("KVOPERATOR_ADMIN_URL_TEMPLATE", DEFAULT_URL_TEMPLATE),
            poll_interval=float(env.get("KVOPERATOR_POLL_INTERVAL", "10")),
            namespaces=tuple(n.strip() for n in namespaces),
            clusterwide=not namespaces,
            peering_name=env.get("KVOPERATOR_PEERING", "kvcluster") or None,
            reporting_instance=env.get("POD_NAME", "kvcluster-operator"),
        )


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account or kubeconfig, through the official client's loader."""
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info


class Operator:
    """One operator process: its API clients, per-cluster locks and kopf handlers."""

    def __init__(self, config: OperatorConfig, *, login: LoginFn = default_login) -> None:
        self.config = config
        self.connection: kopf.ConnectionInfo | None = None
        self._login = login
        self.kube = KubeClient(lambda: self.connection)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._http: aiohttp.ClientSession | None = None
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        self.passes = 0
        self._closed = False
        """Reconcile passes run by this process (lets tests see which peer acts)."""

    # --- kopf wiring ---------------------------------------------------------

    def configure(self, settings: kopf.OperatorSettings) -> None:
        """Operator-specific kopf settings, applied at startup whoever built ``settings``."""
        settings.posting.reporting_component = "kvcluster-operator"
        settings.posting.reporting_instance = self.config.reporting_instance
        settings.posting.level = logging.INFO
        # Keep kopf's progress out of .status: the status is a public API with a schema.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kvcluster.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kvcluster.io")
        settings.persistence.finalizer = "kvcluster.io/operator"
        if self.config.priority is not None:
            settings.peering.priority = self.config.priority
        # On deletion kopf stops the health timer and removes the finalizer only
        # once it has exited. A pass caught mid-flight finishes within a second or
        # two; without these, kopf would re-check only every 60 s.
        settings.background.instant_exit_timeout = 2.0
        settings.background.cancellation_polling = max(0.5, min(5.0, self.config.poll_interval))

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Attach every handler to ``registry`` (a fresh one in tests, the default in main)."""
        res = (crd.GROUP, crd.VERSION, crd.PLURAL)
        retry = self.config.retry_delay

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            info = self._login(**kwargs)
            if info is not None:
                self.connection = info
            return info

        @kopf.on.startup(registry=registry)
        async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
            self.configure(settings)

        @kopf.on.cleanup(registry=registry)
        async def cleanup(**_: Any) -> None:
            await self.close()

        @kopf.on.create(*res, registry=registry, backoff=retry)
        async def created(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
            await self.reconcile_or_retry(namespace, name, logger)

        @kopf.on.resume(*res, registry=registry, backoff=retry)
        async def resumed(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
            await self.reconcile_or_retry(namespace, name, logger)

        @kopf.on.update(*res, field="spec", registry=registry, backoff=retry)
        async def updated(
            name: str, namespace: str | None, body: kopf.Body, diff: kopf.Diff, logger: kopf.Logger, **_: Any
        ) -> None:
            changes = rc.layout_changes([(d.operation, tuple(d.field), d.old, d.new) for d in diff])
            if changes:
                kopf.event(body, type="Normal", reason="SpecChanged", message="; ".join(changes))
            await self.reconcile_or_retry(namespace, name, logger)

        @kopf.on.delete(*res, registry=registry)
        async def deleted(
            name: str, namespace: str | None, body: kopf.Body, logger: kopf.Logger, **_: Any
        ) -> None:
            # Owned objects go with the KVCluster through their owner references;
            # the volumes stay (whenDeleted: Retain). Only our own memory is ours to clean.
            async with self._lock(namespace or "", name):
                kopf.event(
                    body, type="Normal", reason="Deleting", message="owned objects follow; volumes are kept"
                )
            self._locks.pop((namespace or "", name), None)

        @kopf.timer(*res, registry=registry, interval=self.config.poll_interval, initial_delay=0)
        async def health(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
            await self.reconcile_or_retry(namespace, name, logger)

    async def close(self) -> None:
        """Release the HTTP sessions; passes still running afterwards give up quietly."""
        self._closed = True
        await self.kube.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- the reconcile loop ------------------------------------------------

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    async def reconcile_or_retry(self, namespace: str | None, name: str, logger: kopf.Logger) -> None:
        """Reconcile; turn infrastructure errors into kopf retries instead of handler failures."""
        if namespace is None:
            raise kopf.PermanentError("KVCluster is namespaced; got a cluster-scoped object")
        if self._closed:
            return  # the operator is stopping
        try:
            await self.reconcile(namespace, name, logger)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            raise kopf.TemporaryError(f"reconcile interrupted: {exc}", delay=self.config.retry_delay) from exc

    async def reconcile(self, namespace: str, name: str, logger: kopf.Logger) -> rc.Plan | None:
        """Run passes until the state machine stops moving (bounded), return the last plan."""
        plan: rc.Plan | None = None
        async with self._lock(namespace, name):
            for _ in range(self.config.max_passes):
                plan = await self._pass(namespace, name, logger)
                if plan is None or not plan.phase_changed:
                    break
        return plan

    def _admin_url(self, body: Mapping[str, Any], ref: ClusterRef) -> str:
        annotations = body.get("metadata", {}).get("annotations") or {}
        template = annotations.get(ADMIN_URL_ANNOTATION) or self.config.admin_url_template
        return str(template).format(name=ref.name, namespace=ref.namespace)

    async def _admin_tls(self, ref: ClusterRef, spec: ClusterSpec | SpecError) -> ssl.SSLContext | bool:
        """Trust for the nodes' HTTPS: the CA in the cluster's TLS Secret, re-read each pass (rotation)."""
        if not isinstance(spec, ClusterSpec) or not spec.tls_enabled:
            return True
        secret = await self.kube.get(SECRETS.path(ref.namespace, tls_secret_name(ref, spec)))
        ca = decode_secret_value(secret, TLS_CA_KEY) if secret is not None else None
        if not ca:
            return True  # not there yet: calls fail verification against the system store, and retry
        context = self._tls_contexts.get(ca)
        if context is None:
            context = ssl.create_default_context(cadata=ca)
            self._tls_contexts = {ca: context}
        return context

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def _pass(self, namespace: str, name: str, logger: kopf.Logger) -> rc.Plan | None:
        self.passes += 1
        body = await self.kube.get(KVCLUSTERS.path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        ref = ClusterRef.from_body(body)
        status: Mapping[str, Any] = body.get("status") or {}
        wanted = backupctl.Wanted(None, None)
        try:
            raw_spec = body.get("spec") or {}
            spec: ClusterSpec | SpecError = parse_spec(raw_spec, default_image=self.config.default_image)
            wanted = backupctl.Wanted(parse_backup(raw_spec), parse_restore(raw_spec))
        except SpecError as exc:
            spec = exc

        # Observe the owned objects once; the ensure step reuses what was read.
        current = await self._read_owned(ref, spec, status)
        conflicts = tuple(
            f"{o['kind']}/{o['metadata']['name']}" for o in current.values() if o and not owned_by(o, ref)
        )
        sts_body = current.get("StatefulSet")
        sts = rc.StsView.from_body(sts_body) if sts_body and owned_by(sts_body, ref) else None

        secret_name = self._secret_name(ref, spec, status)
        secret = await self.kube.get(SECRETS.path(namespace, secret_name))
        auth_problem: st.Problem | None = None
        token: str | None = None
        if secret is None and secret_name != ref.generated_secret:
            auth_problem = st.Problem("AuthSecretMissing", f"Secret {secret_name} does not exist")
        elif secret is not None:
            token = decode_secret_value(secret, TOKEN_KEY)
            if token is None or decode_secret_value(secret, CLUSTER_SECRET_KEY) is None:
                auth_problem = st.Problem(
                    "AuthSecretInvalid",
                    f"Secret {secret_name} needs keys {TOKEN_KEY!r} and {CLUSTER_SECRET_KEY!r}",
                )

        admin_url, admin_ssl = self._admin_url(body, ref), await self._admin_tls(ref, spec)
        if admin_ssl is not True:
            admin_url = admin_url.replace("http://", "https://", 1)
        admin = AdminClient(self._session(), admin_url, token, ssl=admin_ssl)
        needs = rc.admin_needs(status, sts)
        summary: rc.Summary | None = None
        job: rc.JobView | None = None
        nodes: dict[int, rc.NodeView] = {}
        replication: Replication | None = None
        admin_error: str | None = None
        try:
            # The job before the summary: a job read as done must not meet a
            # summary from before its last step (the pass that sees "done" may
            # complete the reshape and write that summary as the final status).
            if needs.job:
                job = rc.JobView.from_api(await admin.reshape_status())
            if needs.summary:
                view = await admin.cluster()
                summary = rc.Summary.from_cluster(view)
                if summary.leaderless:
                    # A partition born of a split, or one whose leader just stepped down, elects
                    # within an election timeout: look again before calling it a problem.
                    await asyncio.sleep(LEADERLESS_GRACE_S)
                    view = await admin.cluster()
                    summary = rc.Summary.from_cluster(view)
                replication = Replication.from_cluster(view)
            for node_id in needs.nodes:
                info = await admin.node(node_id)
                # A node the cluster does not know holds nothing.
                nodes[node_id] = rc.NodeView.from_api(info) if info else rc.NodeView.unknown(node_id)
        except (AdminError, AdminUnavailable) as exc:
            admin_error = str(exc)
            if needs.summary and summary is None:
                logger.debug(f"admin API unavailable: {exc}")

        obs = rc.Observation(
            generation=int(body["metadata"].get("generation") or 0),
            spec=spec,
            status=status,
            sts=sts,
            now=st.now_rfc3339(),
            auth_problem=auth_problem,
            conflicts=conflicts,
            summary=summary,
            job=job,
            nodes=nodes,
            admin_error=admin_error if needs.summary or needs.job or needs.nodes else None,
            pods=await self._pods(ref) if sts is not None else {},
            replication=replication,
        )
        plan = rc.decide(obs)
        events: list[st.EventSpec] = []
        if isinstance(spec, ClusterSpec):
            rejected_before = _reshape_phase(plan) == "Rejected"
            await self._execute(
                ref=ref,
                spec=spec,
                status=status,
                plan=plan,
                current=current,
                admin=admin,
                events=events,
                logger=logger,
            )
            if _reshape_phase(plan) == "Rejected" and not rejected_before:
                # The nodes refused the target: decide again on the amended status,
                # so conditions and events in this very write already say so.
                amended = {**status, **plan.status}
                again = rc.decide(dataclasses.replace(obs, status=amended))
                plan.status = {**plan.status, **again.status}
                plan.events.extend(again.events)
        if isinstance(spec, ClusterSpec) and (wanted.backup or wanted.restore or status.get("backup")):
            await backupctl.reconcile(
                self.kube,
                ref,
                spec,
                wanted,
                status,
                plan.status,
                events,
                auth_secret=self._secret_name(ref, spec, status),
                tls_secret=tls_secret_name(ref, spec) if spec.tls_enabled else None,
                now=obs.now,
                generation=obs.generation,
            )
        await self._write_status(ref, status, plan)
        for event in [*events, *plan.events]:
            kopf.event(
                kopf.Body(cast(kopf.RawBody, body)),
                type=event.type,
                reason=event.reason,
                message=event.message,
            )
            (logger.warning if event.type == "Warning" else logger.info)(f"{event.reason}: {event.message}")
        return plan

    async def _pods(self, ref: ClusterRef) -> dict[int, PodView]:
        """The StatefulSet's pods by ordinal (a roll compares their revisions with the template's)."""
        prefix = ref.statefulset + "-"
        pods: dict[int, PodView] = {}
        for body in await self.kube.list(PODS.path(ref.namespace), label_selector=selector_string(ref)):
            view = PodView.from_body(body)
            if view is not None and str(body["metadata"]["name"]).startswith(prefix):
                pods[view.ordinal] = view
        return pods

    def _secret_name(self, ref: ClusterRef, spec: ClusterSpec | SpecError, status: Mapping[str, Any]) -> str:
        if isinstance(spec, ClusterSpec):
            return spec.auth_secret or ref.generated_secret
        return str(status.get("authSecretName") or ref.generated_secret)

    async def _read_owned(
        self, ref: ClusterRef, spec: ClusterSpec | SpecError, status: Mapping[str, Any]
    ) -> dict[str, Body | None]:
        ns = ref.namespace
        reads: dict[str, tuple[Kind, str]] = {
            "StatefulSet": (STATEFULSETS, ref.statefulset),
            "ClientService": (SERVICES, ref.client_service),
            "HeadlessService": (SERVICES, ref.headless_service),
            "ConfigMap": (CONFIGMAPS, ref.configmap),
            "PodDisruptionBudget": (PDBS, ref.pdb),
        }
        if self._secret_name(ref, spec, status) == ref.generated_secret:
            reads["Secret"] = (SECRETS, ref.generated_secret)
        if isinstance(spec, ClusterSpec) and spec.tls_enabled and spec.tls_secret is None:
            reads["TlsSecret"] = (SECRETS, ref.generated_tls_secret)
        results = await asyncio.gather(*(self.kube.get(kind.path(ns, name)) for kind, name in reads.values()))
        return dict(zip(reads, results, strict=True))

    async def _execute(
        self,
        *,
        ref: ClusterRef,
        spec: ClusterSpec,
        status: Mapping[str, Any],
        plan: rc.Plan,
        current: dict[str, Body | None],
        admin: AdminClient,
        events: list[st.EventSpec],
        logger: kopf.Logger,
    ) -> None:
        ns = ref.namespace
        initial_raw = plan.status.get("initial") or status.get("initial")
        if plan.ensure_objects and initial_raw:
            initial = Layout.from_dict(initial_raw)
            secret_name = spec.auth_secret or ref.generated_secret
            desired: dict[str, tuple[Kind, Body]] = {
                "ConfigMap": (
                    CONFIGMAPS,
                    build_configmap(ref, initial, bootstrapped=plan.bootstrapped, tls=spec.tls_enabled),
                ),
                "ClientService": (SERVICES, build_client_service(ref)),
                "HeadlessService": (SERVICES, build_headless_service(ref)),
                "PodDisruptionBudget": (PDBS, build_pdb(ref, plan.pdb_replicas)),
                "StatefulSet": (
                    STATEFULSETS,
                    build_statefulset(
                        ref, spec, replicas=plan.sts_replicas or initial.nodes, auth_secret=secret_name
                    ),
                ),
            }
            if secret_name == ref.generated_secret and current.get("Secret") is None:
                # Before the StatefulSet, so that no pod ever waits on a missing mount.
                desired = {"Secret": (SECRETS, build_secret(ref, generate_credentials()))} | desired
            if spec.tls_enabled and spec.tls_secret is None and current.get("TlsSecret") is None:
                tls_secret = build_tls_secret(ref, generate_tls_material(ref))
                desired = {"TlsSecret": (SECRETS, tls_secret)} | desired
            created: list[str] = []
            updated: list[str] = []
            for key, (kind, obj) in desired.items():
                existing = current.get(key)
                label = f"{obj['kind']}/{obj['metadata']['name']}"
                if existing is None:
                    try:
                        current[key] = await self.kube.create(kind.path(ns), obj)
                    except KubeError as exc:
                        if exc.status != 409:
                            raise
                        continue  # appeared meanwhile; the next pass compares it
                    created.append(label)
                elif not owned_by(existing, ref) or key in ("Secret", "TlsSecret"):
                    continue
                elif (
                    existing["metadata"].get("annotations", {}).get(HASH_ANNOTATION)
                    != obj["metadata"]["annotations"][HASH_ANNOTATION]
                ):
                    patch = mutable_patch(obj) if key == "StatefulSet" else _replaceable(obj)
                    current[key] = await self.kube.patch(kind.path(ns, obj["metadata"]["name"]), patch)
                    updated.append(label)
            if created:
                events.append(st.EventSpec("Normal", "Created", "created " + ", ".join(created)))
            if updated:
                events.append(st.EventSpec("Normal", "Updated", "updated " + ", ".join(updated)))

        sts_body = current.get("StatefulSet")
        if plan.sts_replicas is not None and sts_body is not None and owned_by(sts_body, ref):
            have = int(sts_body.get("spec", {}).get("replicas", 0))
            if have != plan.sts_replicas:
                await self.kube.patch(
                    STATEFULSETS.path(ns, ref.statefulset), {"spec": {"replicas": plan.sts_replicas}}
                )
                verb = "ScaledUp" if plan.sts_replicas > have else "ScaledDown"
                events.append(
                    st.EventSpec(
                        "Normal", verb, f"StatefulSet {ref.statefulset}: {have} -> {plan.sts_replicas} pods"
                    )
                )

        if plan.ensure_objects and sts_body is not None and owned_by(sts_body, ref):
            await self._grow_claims(ref, spec, sts_body, plan.sts_replicas or 0, events)

        if plan.start_reshape is not None:
            tgt = plan.start_reshape
            try:
                job = await admin.start_reshape(tgt.node_ids(), tgt.partitions, tgt.replicas)
            except AdminError as exc:
                if exc.status in (400, 422):
                    rc.after_reshape_rejected(plan, exc.code, exc.message)
                    logger.warning(f"reshape rejected: {exc}")
                elif exc.status != 409:  # 409: a job is already running; the next pass follows it
                    raise kopf.TemporaryError(
                        f"reshape request failed: {exc}", delay=self.config.retry_delay
                    ) from exc
            except AdminUnavailable as exc:
                logger.info(f"reshape not started yet, admin API unavailable: {exc}")
            else:
                rc.after_reshape_posted(plan, job)
                events.append(
                    st.EventSpec(
                        "Normal",
                        "ReshapeJobStarted",
                        f"job {job}: {tgt.nodes} nodes, {tgt.partitions} partitions, {tgt.replicas} replicas",
                    )
                )

        for node_id in plan.drain:
            try:
                await admin.drain(node_id)
            except (AdminError, AdminUnavailable) as exc:
                logger.info(f"drain of node {node_id} not requested yet: {exc}")
                reshape = plan.status.get("reshape")
                if isinstance(reshape, dict):
                    reshape["drainRequested"] = [i for i in reshape.get("drainRequested", []) if i != node_id]
            else:
                events.append(
                    st.EventSpec("Normal", "DrainRequested", f"node {node_id} ({ref.pod_name(node_id)})")
                )

        await self._roll(ref, plan, admin, events, logger)

        forgotten: list[str] = []
        for node_id in plan.forget:
            try:
                await admin.forget(node_id)
            except (AdminError, AdminUnavailable) as exc:
                logger.info(f"node {node_id} not removed from the member list yet: {exc}")
            else:
                forgotten.append(str(node_id))
        if forgotten:
            events.append(st.EventSpec("Normal", "NodesRemoved", "left the cluster: " + ", ".join(forgotten)))

    async def _roll(
        self,
        ref: ClusterRef,
        plan: rc.Plan,
        admin: AdminClient,
        events: list[st.EventSpec],
        logger: kopf.Logger,
    ) -> None:
        """One step of a roll: move leaderships off the next pod, or delete it (see kvoperator.upgrade)."""
        for partition, node_id in plan.move_leaders:
            try:
                await admin.transfer_leader(partition, node_id)
            except (AdminError, AdminUnavailable) as exc:
                # Not fatal: the node hands off what it still leads when its pod stops.
                logger.info(f"leadership of partition {partition} not moved: {exc}")
        if plan.delete_pod is not None:
            name = ref.pod_name(plan.delete_pod + 1)
            try:
                await self.kube.delete(PODS.path(ref.namespace, name))
            except KubeError as exc:
                if exc.status != 404:
                    raise
            logger.info(f"rolling upgrade: deleted pod {name}")

    async def _grow_claims(
        self, ref: ClusterRef, spec: ClusterSpec, sts_body: Body, pods: int, events: list[st.EventSpec]
    ) -> None:
        """Grow the volume claims when the spec asks for more than the claim template.

        A StatefulSet's claim template is immutable, so a grown size is applied
        to each claim instead (the storage class must allow expansion); pods
        added later get the template's size and are grown on the next pass.
        """
        want = parse_quantity(spec.storage_size)
        templates = sts_body.get("spec", {}).get("volumeClaimTemplates") or [{}]
        size = templates[0].get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
        if size is None or want <= parse_quantity(str(size)):
            return
        grown: list[str] = []
        for node_id in range(1, pods + 1):
            path = PVCS.path(ref.namespace, ref.pvc_name(node_id))
            pvc = await self.kube.get(path)
            if pvc is None:
                continue
            have = pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
            if have is None or parse_quantity(str(have)) < want:
                await self.kube.patch(
                    path, {"spec": {"resources": {"requests": {"storage": spec.storage_size}}}}
                )
                grown.append(ref.pvc_name(node_id))
        if grown:
            events.append(st.EventSpec("Normal", "VolumesGrown", f"{spec.storage_size}: " + ", ".join(grown)))

    async def _write_status(self, ref: ClusterRef, status: Mapping[str, Any], plan: rc.Plan) -> None:
        patch = dict(plan.status)
        patch["selector"] = selector_string(ref)
        if all(status.get(k) == v for k, v in patch.items()):
            return  # nothing new: no write, no watch event, no churn
        await self.kube.patch(KVCLUSTERS.path(ref.namespace, ref.name, "status"), {"status": patch})


def _reshape_phase(plan: rc.Plan) -> str | None:
    reshape = plan.status.get("reshape")
    return str(reshape.get("phase")) if isinstance(reshape, dict) else None


def _replaceable(obj: Body) -> Body:
    """A merge patch that makes the mutable parts of an object equal to ``obj``."""
    patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = obj["metadata"]
    patch["metadata"] = {"labels": meta["labels"], "annotations": meta.get("annotations", {})}
    return patch


def random_priority() -> int:
    """A distinct kopf peering priority per replica.

    kopf pauses *every* operator that sees a live peer of the same priority,
    so replicas of one Deployment must not share one; the highest acts and
    the others stand by until its keep-alive lapses.
    """
    return random.randint(1, 2**31 - 1)
