"""Phase and conditions of a KVCluster, computed from what the operator observed.

Pure functions only: the reconciler gathers a :class:`Health` snapshot, and
everything a user sees in ``kubectl get``/``describe`` is derived from it
here, so the rules can be tested without a cluster.

Conditions follow the Kubernetes API conventions: one entry per type with
``status`` True/False/Unknown, a CamelCase ``reason``, a human ``message``,
the ``observedGeneration`` it describes, and a ``lastTransitionTime`` that
moves only when ``status`` flips (a new reason or message is not a
transition; tools measure "how long has it been Ready" from that field).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED)

Phase = Literal["Pending", "Bootstrapping", "Running", "Reshaping", "Upgrading", "Degraded"]
EventType = Literal["Normal", "Warning"]


class Condition(TypedDict):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


@dataclass(frozen=True, slots=True)
class Problem:
    """A reason (CamelCase, for machines) and a message (for humans)."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A Kubernetes Event the reconciler should post on the KVCluster."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Health:
    """Everything the conditions depend on, as observed in one reconcile pass."""

    bootstrapped: bool
    expected_nodes: int
    ready_nodes: int
    partitions_total: int | None = None
    leaderless: int | None = None
    admin_error: str | None = None
    progress: Problem | None = None
    """Set while bootstrapping or reshaping: what is being done right now."""
    spec_problem: Problem | None = None
    """A refused spec (invalid or unsafe): nothing is being changed."""
    operation_problem: Problem | None = None
    """A step that failed or cannot proceed (reshape rejected, object conflict...)."""


def now_rfc3339(now: datetime.datetime | None = None) -> str:
    moment = now or datetime.datetime.now(tz=datetime.UTC)
    return moment.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _growing(h: Health) -> bool:
    """Pods still starting hold no data yet, nor does the one a roll replaces: the cluster serves on."""
    if h.progress is None:
        return False
    if h.progress.reason == "RollingUpgrade":
        # The one pod being replaced is expected to be down; a second one is not.
        return h.ready_nodes >= h.expected_nodes - 1
    return h.progress.reason in ("GrowingNodes", "Bootstrapping")


def _ready(h: Health) -> tuple[str, Problem]:
    if not h.bootstrapped:
        return "False", Problem(
            "NotBootstrapped", f"{h.ready_nodes}/{h.expected_nodes} nodes ready, bootstrapping"
        )
    if h.ready_nodes < h.expected_nodes and not _growing(h):
        return "False", Problem("NodesNotReady", f"{h.ready_nodes}/{h.expected_nodes} nodes ready")
    if h.admin_error is not None:
        return "Unknown", Problem("NodesUnreachable", f"cannot read the cluster state: {h.admin_error}")
    if h.leaderless:
        return "False", Problem(
            "PartitionsWithoutLeader", f"{h.leaderless} of {h.partitions_total} partitions have no leader"
        )
    partitions = f", {h.partitions_total} partitions led" if h.partitions_total is not None else ""
    return "True", Problem("ClusterReady", f"{h.ready_nodes}/{h.expected_nodes} nodes ready{partitions}")


def _progressing(h: Health) -> tuple[str, Problem]:
    if h.spec_problem is not None:
        return "False", Problem("SpecRefused", "the spec was refused; nothing is being changed")
    if h.progress is not None:
        return "True", h.progress
    return "False", Problem("ReconcileComplete", "the cluster matches the spec")


def _degraded(h: Health) -> tuple[str, Problem]:
    if h.spec_problem is not None:
        return "True", h.spec_problem
    if h.operation_problem is not None:
        return "True", h.operation_problem
    if h.bootstrapped and h.ready_nodes < h.expected_nodes and not _growing(h):
        return "True", Problem(
            "NodesUnavailable",
            f"{h.expected_nodes - h.ready_nodes} of {h.expected_nodes} nodes are not ready",
        )
    if h.bootstrapped and h.leaderless:
        return "True", Problem("PartitionsWithoutLeader", f"{h.leaderless} partitions have no leader")
    return "False", Problem("AsExpected", "no problems detected")


def desired_conditions(h: Health) -> dict[str, tuple[str, Problem]]:
    return {READY: _ready(h), PROGRESSING: _progressing(h), DEGRADED: _degraded(h)}


def merge_conditions(
    previous: Iterable[Mapping[str, Any]],
    desired: Mapping[str, tuple[str, Problem]],
    *,
    generation: int,
    now: str,
) -> list[Condition]:
    """New condition list; ``lastTransitionTime`` is kept unless the status flipped."""
    old = {str(c.get("type")): c for c in previous}
    result: list[Condition] = []
    for ctype in CONDITION_TYPES:
        status, problem = desired[ctype]
        prev = old.get(ctype)
        keep_time = prev is not None and prev.get("status") == status and prev.get("lastTransitionTime")
        result.append(
            {
                "type": ctype,
                "status": status,
                "reason": problem.reason,
                "message": problem.message,
                "lastTransitionTime": str(prev["lastTransitionTime"]) if keep_time and prev else now,
                "observedGeneration": generation,
            }
        )
    return result


def phase_for(h: Health, *, reshaping: bool) -> Phase:
    """A one-word summary for ``kubectl get``; the conditions hold the detail."""
    if desired_conditions(h)[DEGRADED][0] == "True":
        return "Degraded"
    if reshaping:
        return "Reshaping"
    if h.progress is not None and h.progress.reason == "RollingUpgrade":
        return "Upgrading"
    if h.bootstrapped:
        return "Running"
    return "Bootstrapping" if h.ready_nodes > 0 else "Pending"


def condition_events(previous: Sequence[Mapping[str, Any]], current: Sequence[Condition]) -> list[EventSpec]:
    """Events for condition changes worth a human's attention, and only for changes.

    The reconciler runs on a timer; deriving events from transitions (not
    from the state itself) is what keeps a refused spec from posting the
    same warning every few seconds.
    """
    old = {str(c.get("type")): c for c in previous}
    events: list[EventSpec] = []
    for cond in current:
        prev = old.get(cond["type"])
        same = (
            prev is not None and prev.get("status") == cond["status"] and prev.get("reason") == cond["reason"]
        )
        if same:
            continue
        if cond["type"] == DEGRADED:
            if cond["status"] == "True":
                events.append(EventSpec("Warning", cond["reason"], cond["message"]))
            elif prev is not None and prev.get("status") == "True":
                events.append(EventSpec("Normal", "Recovered", f"no longer degraded: {cond['message']}"))
        elif cond["type"] == READY:
            if cond["status"] == "True":
                events.append(EventSpec("Normal", "ClusterReady", cond["message"]))
            elif prev is not None and prev.get("status") == "True":
                events.append(EventSpec("Warning", cond["reason"], cond["message"]))
    return events
