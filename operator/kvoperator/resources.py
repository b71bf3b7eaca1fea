"""Names, labels and owner references shared by every object the operator builds.

Every builder is a pure function of the KVCluster's identity and spec, so the
same inputs always give byte-identical objects; the reconciler relies on that
to detect drift by hashing (see :func:`spec_hash`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from kvoperator import crd

NODE_PORT = 7000
PORT_NAME = "http"
DATA_DIR = "/data"
AUTH_DIR = "/etc/kvcluster/auth"
TLS_DIR = "/etc/kvcluster/tls"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
TLS_CA_KEY = "ca.crt"
TOKEN_KEY = "token"
CLUSTER_SECRET_KEY = "cluster-secret"
HASH_ANNOTATION = "kvcluster.io/config-hash"
ADMIN_URL_ANNOTATION = "kvcluster.io/admin-url"
MANAGED_BY = "kvcluster-operator"

Body = dict[str, Any]


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


@dataclass(frozen=True, slots=True)
class ClusterRef:
    """Identity of one KVCluster: enough to name and own its objects."""

    name: str
    namespace: str
    uid: str

    @property
    def statefulset(self) -> str:
        # The StatefulSet carries the cluster's own name so that pods are
        # <name>-0, <name>-1, ... and node ids are the ordinal plus one.
        return self.name

    @property
    def client_service(self) -> str:
        return self.name

    @property
    def headless_service(self) -> str:
        return f"{self.name}-headless"

    @property
    def configmap(self) -> str:
        return f"{self.name}-config"

    @property
    def generated_secret(self) -> str:
        return f"{self.name}-auth"

    @property
    def generated_tls_secret(self) -> str:
        return f"{self.name}-tls"

    @property
    def pdb(self) -> str:
        return self.name

    def pod_name(self, node_id: int) -> str:
        return f"{self.name}-{node_id - 1}"

    def pvc_name(self, node_id: int) -> str:
        return f"data-{self.name}-{node_id - 1}"

    def peer_url(self, node_id: int, scheme: str = "http") -> str:
        return f"{scheme}://{self.pod_name(node_id)}.{self.headless_service}.{self.namespace}.svc:{NODE_PORT}"

    def client_url(self) -> str:
        return f"http://{self.client_service}.{self.namespace}.svc:{NODE_PORT}"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClusterRef:
        meta = body["metadata"]
        return cls(name=str(meta["name"]), namespace=str(meta["namespace"]), uid=str(meta.get("uid", "")))


def selector_labels(ref: ClusterRef) -> dict[str, str]:
    """The labels that select a cluster's pods; immutable in a StatefulSet, so minimal."""
    return {
        "app.kubernetes.io/name": "kvcluster",
        "app.kubernetes.io/instance": ref.name,
    }


def common_labels(ref: ClusterRef, component: str) -> dict[str, str]:
    return selector_labels(ref) | {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector_string(ref: ClusterRef) -> str:
    """The label selector as the scale subresource wants it (for HPA and kubectl)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(ref).items()))


def owner_reference(ref: ClusterRef) -> OwnerReference:
    """The controller reference that lets Kubernetes garbage-collect an object with its cluster.

    Equivalent to ``kopf.build_owner_reference`` but with no kopf import, so
    builders stay pure and usable by tools that never run the operator.
    """
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(ref: ClusterRef, name: str, component: str) -> Body:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": common_labels(ref, component),
        "ownerReferences": [owner_reference(ref)],
    }


def spec_hash(obj: Mapping[str, Any]) -> str:
    """A stable digest of the desired state of an object (excluding the hash itself).

    The API server adds defaults to what it stores, so comparing the stored
    object with the desired one field by field would find a difference every
    time; comparing the digest of what we last sent does not.
    """
    clean = json.loads(json.dumps(obj, sort_keys=True))
    meta = clean.get("metadata", {})
    meta.get("annotations", {}).pop(HASH_ANNOTATION, None)
    if meta.get("annotations") == {}:
        del meta["annotations"]  # "no annotations" and "only the hash" are the same state
    digest = hashlib.sha256(json.dumps(clean, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return digest[:16]


def with_hash(obj: Body) -> Body:
    """Stamp the object with the digest of its own desired state."""
    digest = spec_hash(obj)
    obj.setdefault("metadata", {}).setdefault("annotations", {})[HASH_ANNOTATION] = digest
    return obj


def owned_by(obj: Mapping[str, Any], ref: ClusterRef) -> bool:
    """Whether the object's controller is this very KVCluster (same uid, not a namesake)."""
    for owner in obj.get("metadata", {}).get("ownerReferences") or ():
        if owner.get("controller") and owner.get("uid") == ref.uid:
            return True
    return False
