"""The StatefulSet that runs the storage nodes.

Design points, each a lesson of running Raft on Kubernetes:

* ``podManagementPolicy: Parallel``: a node only becomes ready once it can
  reach a quorum of its peers, so the default OrderedReady policy (start
  pod 1 only when pod 0 is ready) would deadlock the bootstrap.
* Replicas are set by the reconciler, never from the spec directly: growing
  must happen before a reshape and shrinking only after a drain.
* Flags that describe the initial layout come from the ConfigMap through
  the environment, so they can change without touching the pod template
  (see :mod:`kvoperator.config`); flags a node needs to restart for
  (durability, limits, image) are in the template and roll the pods.
* ``enableServiceLinks: false``: Kubernetes would otherwise inject
  ``<SERVICE>_PORT``-style variables for every Service in the namespace, and
  a Service called ``kvcluster`` would produce ``KVCLUSTER_*`` variables that
  the node reads as flags.
* ``persistentVolumeClaimRetentionPolicy.whenScaled: Delete``: a node is
  removed only after it holds nothing, and if the ordinal comes back it must
  join empty rather than resurrect a stale replica set. ``whenDeleted:
  Retain`` keeps the data when the KVCluster itself is deleted by accident.
"""

from __future__ import annotations

from typing import Any

from kvoperator import config
from kvoperator.resources import (
    AUTH_DIR,
    CLUSTER_SECRET_KEY,
    DATA_DIR,
    HASH_ANNOTATION,
    NODE_PORT,
    PORT_NAME,
    TLS_CA_KEY,
    TLS_CERT_KEY,
    TLS_DIR,
    TLS_KEY_KEY,
    TOKEN_KEY,
    Body,
    ClusterRef,
    common_labels,
    object_meta,
    selector_labels,
    spec_hash,
)
from kvoperator.spec import ClusterSpec

RUN_AS = 10001
CONTAINER = "node"
DATA_VOLUME = "data"
AUTH_VOLUME = "auth"
TLS_VOLUME = "tls"
TMP_VOLUME = "tmp"


def node_args(ref: ClusterRef, spec: ClusterSpec) -> list[str]:
    """The ``kvcluster node`` command line; ``$(POD_NAME)`` is expanded by the kubelet."""
    scheme = "https" if spec.tls_enabled else "http"
    return [
        "node",
        "--listen",
        f"0.0.0.0:{NODE_PORT}",
        "--advertise-url",
        f"{scheme}://$(POD_NAME).{ref.headless_service}.{ref.namespace}.svc:{NODE_PORT}",
        "--data-dir",
        DATA_DIR,
        "--token-file",
        f"{AUTH_DIR}/{TOKEN_KEY}",
        "--cluster-secret-file",
        f"{AUTH_DIR}/{CLUSTER_SECRET_KEY}",
        "--durability",
        spec.durability,
        "--max-key-bytes",
        str(spec.max_key_bytes),
        "--max-value-bytes",
        str(spec.max_value_bytes),
        *tls_args(spec),
    ]


def tls_args(spec: ClusterSpec) -> list[str]:
    """HTTPS with the mounted Secret, and mutual TLS between nodes against the same CA.

    The HMAC cluster secret stays on as well: a leaked node certificate alone
    does not let anyone speak for a node.
    """
    if not spec.tls_enabled:
        return []
    return [
        "--tls-cert",
        f"{TLS_DIR}/{TLS_CERT_KEY}",
        "--tls-key",
        f"{TLS_DIR}/{TLS_KEY_KEY}",
        "--tls-ca",
        f"{TLS_DIR}/{TLS_CA_KEY}",
        "--peer-tls-ca",
        f"{TLS_DIR}/{TLS_CA_KEY}",
    ]


def tls_secret_name(ref: ClusterRef, spec: ClusterSpec) -> str:
    return spec.tls_secret or ref.generated_tls_secret


def node_env(ref: ClusterRef) -> list[Body]:
    def from_config(var: str, key: str) -> Body:
        return {"name": var, "valueFrom": {"configMapKeyRef": {"name": ref.configmap, "key": key}}}

    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KVCLUSTER_ID_FROM_HOSTNAME", "value": "1"},
        from_config("KVCLUSTER_PEERS", config.KEY_PEERS),
        from_config("KVCLUSTER_PARTITIONS", config.KEY_PARTITIONS),
        from_config("KVCLUSTER_REPLICAS", config.KEY_REPLICAS),
        from_config("KVCLUSTER_CLUSTER_STATE", config.KEY_CLUSTER_STATE),
    ]


def build_affinity(ref: ClusterRef, spec: ClusterSpec) -> Body | None:
    """User affinity, plus pod anti-affinity so one host failure costs one replica.

    An explicit ``affinity.podAntiAffinity`` wins; otherwise ``Preferred``
    (the default) spreads when it can and still schedules on small clusters.
    """
    affinity: Body = dict(spec.scheduling.affinity)
    mode = spec.scheduling.pod_anti_affinity
    if "podAntiAffinity" not in affinity and mode != "None":
        term = {
            "labelSelector": {"matchLabels": selector_labels(ref)},
            "topologyKey": spec.scheduling.topology_key,
        }
        if mode == "Required":
            affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
        else:
            affinity["podAntiAffinity"] = {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
            }
    return affinity or None


def _http_probe(path: str, *, period: int, failures: int, initial_delay: int = 0, tls: bool = False) -> Body:
    # The kubelet does not verify certificates on HTTPS probes, so none has to name the pod IP.
    probe: Body = {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTPS" if tls else "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
    if initial_delay:
        probe["initialDelaySeconds"] = initial_delay
    return probe


def build_pod_template(ref: ClusterRef, spec: ClusterSpec, auth_secret: str) -> Body:
    container: Body = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["kvcluster"],
        "args": node_args(ref, spec),
        "env": node_env(ref),
        "ports": [{"name": PORT_NAME, "containerPort": NODE_PORT, "protocol": "TCP"}],
        # Readiness gates client traffic; liveness restarts a wedged process.
        # The startup probe gives a node replaying a long log time before
        # liveness may kill it.
        "readinessProbe": _http_probe("/readyz", period=5, failures=3, tls=spec.tls_enabled),
        "livenessProbe": _http_probe("/healthz", period=10, failures=6, tls=spec.tls_enabled),
        "startupProbe": _http_probe("/healthz", period=2, failures=150, tls=spec.tls_enabled),
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": AUTH_VOLUME, "mountPath": AUTH_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.tls_enabled:
        # A Secret volume (not subPath) so the kubelet swaps renewed files in and the node reloads them.
        container["volumeMounts"].append({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True})
        pod_spec_volumes_tls: Body | None = {
            "name": TLS_VOLUME,
            "secret": {"secretName": tls_secret_name(ref, spec), "defaultMode": 0o440},
        }
    else:
        pod_spec_volumes_tls = None
    if spec.resources:
        container["resources"] = {k: dict(v) for k, v in spec.resources.items() if isinstance(v, dict)}

    pod_spec: Body = {
        "containers": [container],
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        # Long enough to finish in-flight requests and hand leadership over
        # on SIGTERM, so a rolling restart causes no client-visible errors.
        "terminationGracePeriodSeconds": spec.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": AUTH_VOLUME, "secret": {"secretName": auth_secret, "defaultMode": 0o440}},
            {"name": TMP_VOLUME, "emptyDir": {}},
        ],
    }
    if pod_spec_volumes_tls is not None:
        pod_spec["volumes"].append(pod_spec_volumes_tls)
    affinity = build_affinity(ref, spec)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.scheduling.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.scheduling.tolerations]
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(spec.scheduling.node_selector)
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]

    return {"metadata": {"labels": common_labels(ref, "node")}, "spec": pod_spec}


def build_volume_claim_template(ref: ClusterRef, spec: ClusterSpec) -> Body:
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage_size}},
    }
    if spec.storage_class:
        claim_spec["storageClassName"] = spec.storage_class
    return {
        "metadata": {"name": DATA_VOLUME, "labels": common_labels(ref, "node")},
        "spec": claim_spec,
    }


def build_statefulset(ref: ClusterRef, spec: ClusterSpec, *, replicas: int, auth_secret: str) -> Body:
    """The whole StatefulSet; ``replicas`` comes from the reconciler, not from ``spec.nodes``.

    The drift digest covers only what :func:`mutable_patch` would send, so a
    change of replicas or storage size never looks like template drift.
    """
    sts: Body = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_meta(ref, ref.statefulset, "node"),
        "spec": {
            "replicas": replicas,
            "serviceName": ref.headless_service,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(ref)},
            # The operator replaces pods itself, one at a time (kvoperator.upgrade says why).
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"},
            "template": build_pod_template(ref, spec, auth_secret),
            "volumeClaimTemplates": [build_volume_claim_template(ref, spec)],
        },
    }
    sts["metadata"]["annotations"] = {HASH_ANNOTATION: spec_hash(mutable_patch(sts))}
    return sts


# Fields Kubernetes refuses to change on an existing StatefulSet; they are
# never sent in an update (storage growth is applied to the claims instead).
IMMUTABLE_FIELDS = ("selector", "serviceName", "podManagementPolicy", "volumeClaimTemplates")


def mutable_patch(desired: Body) -> Body:
    """The part of a desired StatefulSet that may be patched onto an existing one.

    ``replicas`` is left out too: the reconciler scales in its own step.
    """
    spec = {k: v for k, v in desired["spec"].items() if k not in (*IMMUTABLE_FIELDS, "replicas")}
    meta = desired["metadata"]
    return {
        "metadata": {"labels": meta["labels"], "annotations": meta.get("annotations", {})},
        "spec": spec,
    }
