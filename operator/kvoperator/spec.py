"""The KVCluster spec as the operator understands it, and its safety rules.

Admission (schema defaults and CEL rules) normally rejects bad specs, but the
operator must not trust it: the CRD may be an older copy, validation may be
disabled, or a rule may need state the API server does not have (what the
data currently looks like). So every rule is enforced here again, before
anything is changed, and defaults are filled in the same way the schema does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from kvcluster.keyspace import HASH_SPACE
from kvcluster.placement import MAX_PARTITIONS  # the planner's limit is the product's limit

DEFAULT_NODES = 3
DEFAULT_PARTITIONS = 8
DEFAULT_REPLICAS = 3
DEFAULT_STORAGE = "1Gi"
DEFAULT_GRACE_SECONDS = 60
MAX_NODES = 255
MAX_REPLICAS = 9

AntiAffinity = Literal["Preferred", "Required", "None"]
Durability = Literal["fsync", "relaxed"]


class SpecError(ValueError):
    """A spec that cannot be applied, with a condition reason for the status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Layout:
    """The shape the data is in: the part of the spec a reshape changes."""

    nodes: int
    partitions: int
    replicas: int

    def to_dict(self) -> dict[str, int]:
        return {"nodes": self.nodes, "partitions": self.partitions, "replicas": self.replicas}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Layout:
        return cls(nodes=int(d["nodes"]), partitions=int(d["partitions"]), replicas=int(d["replicas"]))

    def node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))


DEFAULT_POD_READY_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class Scheduling:
    pod_anti_affinity: AntiAffinity = "Preferred"
    topology_key: str = "kubernetes.io/hostname"
    affinity: Mapping[str, Any] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    priority_class_name: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: int
    partitions: int
    replicas: int
    image: str
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    storage_size: str = DEFAULT_STORAGE
    storage_class: str | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    scheduling: Scheduling = field(default_factory=Scheduling)
    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20
    auth_secret: str | None = None
    durability: Durability = "fsync"
    termination_grace_seconds: int = DEFAULT_GRACE_SECONDS
    tls_enabled: bool = False
    """HTTPS for clients and mutual TLS between nodes."""
    tls_secret: str | None = None
    """A Secret with ``tls.crt``/``tls.key``/``ca.crt`` (cert-manager's layout); generated when absent."""
    pod_ready_timeout_s: int = DEFAULT_POD_READY_TIMEOUT_S
    """How long a rolling upgrade waits for a replaced pod before it stops (Degraded/UpgradeStalled)."""

    @property
    def layout(self) -> Layout:
        return Layout(self.nodes, self.partitions, self.replicas)


_QUANTITY = re.compile(r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)}
_DECIMAL |= {"k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12)}
_DECIMAL |= {"P": Decimal(10**15), "E": Decimal(10**18)}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (``10Gi``, ``500M``, ``1.5e9``) as a number.

    Storage sizes must be compared numerically: ``1024Mi`` equals ``1Gi`` and
    a string comparison would call a grow from ``900Mi`` to ``1Gi`` a shrink.
    """
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = m.group(1), m.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex already excludes these
        raise ValueError(f"not a quantity: {text!r}") from exc
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    return value * Decimal(10) ** int(suffix[1:])


def _int(spec: Mapping[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError("InvalidSpec", f"spec.{key} must be an integer, got {value!r}")
    return value


def parse_spec(spec: Mapping[str, Any], *, default_image: str) -> ClusterSpec:
    """Fill schema defaults and check every rule that needs only the spec itself.

    Raises SpecError with the first problem found; the message is meant for
    a human reading ``kubectl describe``.
    """
    nodes = _int(spec, "nodes", DEFAULT_NODES)
    partitions = _int(spec, "partitions", DEFAULT_PARTITIONS)
    replicas = _int(spec, "replicas", DEFAULT_REPLICAS)
    if not 1 <= nodes <= MAX_NODES:
        raise SpecError("InvalidSpec", f"nodes must be between 1 and {MAX_NODES}, got {nodes}")
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise SpecError("InvalidSpec", f"partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}")
    if partitions > HASH_SPACE:  # pragma: no cover - bounded above; kept as the real limit
        raise SpecError("InvalidSpec", "more partitions than hash values")
    if not 1 <= replicas <= MAX_REPLICAS:
        raise SpecError("InvalidSpec", f"replicas must be between 1 and {MAX_REPLICAS}, got {replicas}")
    if replicas > nodes:
        raise SpecError(
            "InvalidSpec",
            f"replicas ({replicas}) must not exceed nodes ({nodes}): a partition keeps its replicas "
            "on distinct nodes",
        )

    image = spec.get("image") or default_image
    if not isinstance(image, str) or not image:
        raise SpecError("InvalidSpec", "spec.image is empty and the operator has no default image")

    storage = spec.get("storage") or {}
    size = str(storage.get("size") or DEFAULT_STORAGE)
    try:
        amount = parse_quantity(size)
    except ValueError as exc:
        raise SpecError("InvalidSpec", f"storage.size is not a quantity: {size!r}") from exc
    if amount <= 0:
        raise SpecError("InvalidSpec", f"storage.size must be positive, got {size!r}")
    storage_class = storage.get("storageClassName")

    sched = spec.get("scheduling") or {}
    anti = sched.get("podAntiAffinity", "Preferred")
    if anti not in ("Preferred", "Required", "None"):
        raise SpecError(
            "InvalidSpec", f"scheduling.podAntiAffinity must be Preferred, Required or None, got {anti!r}"
        )
    scheduling = Scheduling(
        pod_anti_affinity=anti,
        topology_key=str(sched.get("topologyKey") or "kubernetes.io/hostname"),
        affinity=dict(sched.get("affinity") or {}),
        tolerations=tuple(sched.get("tolerations") or ()),
        node_selector={str(k): str(v) for k, v in (sched.get("nodeSelector") or {}).items()},
        priority_class_name=sched.get("priorityClassName") or None,
    )

    limits = spec.get("limits") or {}
    max_key = _int(limits, "maxKeyBytes", 1024)
    max_value = _int(limits, "maxValueBytes", 1 << 20)
    if max_key < 1 or max_value < 1:
        raise SpecError("InvalidSpec", "limits must be positive")

    durability = spec.get("durability", "fsync")
    if durability not in ("fsync", "relaxed"):
        raise SpecError("InvalidSpec", f"durability must be fsync or relaxed, got {durability!r}")

    grace = _int(spec, "terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    if grace < 5:
        raise SpecError("InvalidSpec", "terminationGracePeriodSeconds must be at least 5")

    pod_ready_timeout = _int(spec.get("upgrade") or {}, "podReadyTimeoutSeconds", DEFAULT_POD_READY_TIMEOUT_S)
    if pod_ready_timeout < 10:
        raise SpecError("InvalidSpec", "upgrade.podReadyTimeoutSeconds must be at least 10")

    policy = spec.get("imagePullPolicy", "IfNotPresent")
    if policy not in ("Always", "IfNotPresent", "Never"):
        raise SpecError("InvalidSpec", f"imagePullPolicy {policy!r} is not valid")

    return ClusterSpec(
        nodes=nodes,
        partitions=partitions,
        replicas=replicas,
        image=image,
        image_pull_policy=policy,
        image_pull_secrets=tuple(str(s["name"]) for s in spec.get("imagePullSecrets") or () if s.get("name")),
        storage_size=size,
        storage_class=str(storage_class) if storage_class else None,
        resources=dict(spec.get("resources") or {}),
        scheduling=scheduling,
        max_key_bytes=max_key,
        max_value_bytes=max_value,
        auth_secret=(spec.get("auth") or {}).get("secretName") or None,
        durability=durability,
        termination_grace_seconds=grace,
        tls_enabled=bool((spec.get("tls") or {}).get("enabled")),
        tls_secret=(spec.get("tls") or {}).get("secretName") or None,
        pod_ready_timeout_s=pod_ready_timeout,
    )


@dataclass(frozen=True, slots=True)
class AppliedState:
    """What the operator has put in place before, as recorded in the status."""

    storage_size: str | None
    storage_class: str | None
    auth_secret: str | None
    created: bool
    tls_enabled: bool | None = None
    """None for clusters created before the operator recorded it."""


def check_transition(new: ClusterSpec, applied: AppliedState) -> None:
    """Refuse changes that are unsafe given what is already running.

    These mirror the CEL transition rules, but compare against the recorded
    state rather than the previous spec: a spec edited twice while the
    operator was down is still checked against what the pods really have.
    """
    if not applied.created:
        return
    if applied.storage_size is not None and parse_quantity(new.storage_size) < parse_quantity(
        applied.storage_size
    ):
        raise SpecError(
            "UnsafeChange",
            f"storage.size cannot shrink from {applied.storage_size} to {new.storage_size}: "
            "volumes cannot be made smaller without losing data",
        )
    if new.storage_class != applied.storage_class:
        raise SpecError(
            "UnsafeChange",
            f"storage.storageClassName is immutable ({applied.storage_class!r} -> {new.storage_class!r})",
        )
    if new.auth_secret != applied.auth_secret:
        raise SpecError(
            "UnsafeChange",
            "auth.secretName is immutable: nodes with different secrets would stop trusting each other",
        )
    if applied.tls_enabled is not None and new.tls_enabled != applied.tls_enabled:
        raise SpecError(
            "UnsafeChange",
            "tls.enabled is fixed at creation: the nodes' stored peer addresses carry the scheme",
        )
