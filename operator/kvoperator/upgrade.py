"""Rolling upgrades: replace one pod at a time, and only while the cluster can afford to lose it.

Why the operator rolls the pods itself: a StatefulSet's own RollingUpdate
waits only for each new pod's readiness probe, which says the node serves,
not that its replicas have caught up. Replacing the next pod while the last
one is still replaying its log would leave some partitions with a single
up-to-date replica -- one more failure from unavailable, or, with two pods
behind, below quorum. So the StatefulSet uses ``updateStrategy: OnDelete``
(a template change then touches no pod by itself; new pods, from scale-up
or replacement, get the new template) and this module decides, one pass at
a time, which pod to delete next:

1. nothing moves unless every pod is ready and every partition is fully
   replicated (all voters report an applied index near the commit index);
2. the highest out-of-date ordinal goes first (the same order as Kubernetes'
   own rolling update; the lowest ordinals are the initial members);
3. its leaderships are moved to other voters first, so clients see no
   election, only a leader hint change (a node stopping on SIGTERM hands
   off whatever is left, so a leadership that comes back meanwhile is no
   reason to wait forever: one transfer request, then the pod goes);
4. the next pod waits until the replaced one is ready *and* step 1 holds
   again; if it is not ready within the timeout the roll stops with
   Degraded/UpgradeStalled and touches nothing more. A new template (the
   image fixed) restarts the roll toward it.

A reshape and a roll never run together: a layout change waits for the roll
to finish (``rolling`` below), and a roll only starts when no reshape is in
progress. Everything here is pure; the controller observes and executes.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvoperator import status as st

REVISION_LABEL = "controller-revision-hash"
"""The label the StatefulSet controller puts on each pod: the template revision it was made from."""
MAX_APPLIED_LAG = 64
"""Entries a voter may be behind its partition's commit index and still count as caught up."""


@dataclass(frozen=True, slots=True)
class PodView:
    ordinal: int
    revision: str | None
    ready: bool
    image: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView | None:
        name = str(body["metadata"]["name"])
        try:
            ordinal = int(name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return None
        conditions = (body.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        containers = (body.get("spec") or {}).get("containers") or [{}]
        deleting = body["metadata"].get("deletionTimestamp") is not None
        return cls(
            ordinal=ordinal,
            revision=(body["metadata"].get("labels") or {}).get(REVISION_LABEL),
            ready=ready and not deleting,
            image=containers[0].get("image"),
        )


@dataclass(frozen=True, slots=True)
class Replication:
    """Whether every partition has a leader and every voter has caught up, from ``GET /v1/cluster``."""

    complete: bool
    behind: tuple[int, ...] = ()
    """Partitions with a missing leader or a voter behind (for the progress message)."""
    leading: Mapping[int, tuple[tuple[int, tuple[int, ...]], ...]] = field(default_factory=dict)
    """node id -> ((partition, its voters), ...) for every partition that node leads."""

    @classmethod
    def from_cluster(cls, d: Mapping[str, Any]) -> Replication:
        behind: list[int] = []
        leading: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for p in d.get("partitions") or ():
            pid = int(p.get("id", 0))
            voters = tuple(int(v) for v in p.get("voters") or ())
            leader, commit = p.get("leader"), p.get("commit")
            applied = {int(k): v for k, v in (p.get("applied") or {}).items()}
            if leader in (None, 0) or commit is None:
                behind.append(pid)
                continue
            leading.setdefault(int(leader), []).append((pid, voters))
            lagging = [
                v for v in voters if applied.get(v) is None or int(commit) - int(applied[v]) > MAX_APPLIED_LAG
            ]
            if lagging:
                behind.append(pid)
        return cls(not behind, tuple(sorted(behind)), {n: tuple(ps) for n, ps in leading.items()})


@dataclass(frozen=True, slots=True)
class RollInput:
    update_revision: str | None
    """``status.updateRevision`` of the StatefulSet: the revision of its current template."""
    pods: Mapping[int, PodView]
    expected: int
    """Pods the StatefulSet should have (its spec.replicas)."""
    image: str
    replication: Replication | None
    upgrade: Mapping[str, Any] | None
    """``status.upgrade`` as recorded by the previous pass."""
    now: str
    pod_ready_timeout_s: float


@dataclass
class RollDecision:
    upgrade: dict[str, Any] | None
    """The new ``status.upgrade`` (None: no roll is going on)."""
    delete_pod: int | None = None
    move_leaders_from: tuple[tuple[int, int], ...] = ()
    """(partition, new leader): leaderships to move off the pod about to go."""
    events: list[st.EventSpec] = field(default_factory=list)
    progress: st.Problem | None = None
    problem: st.Problem | None = None

    @property
    def rolling(self) -> bool:
        return self.upgrade is not None and self.upgrade.get("phase") in ("Rolling", "Stalled")


def _seconds_since(then: str, now: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    a = datetime.datetime.strptime(then, fmt)
    b = datetime.datetime.strptime(now, fmt)
    return (b - a).total_seconds()


def outdated(inp: RollInput) -> list[int]:
    """Ordinals of existing pods made from another template, highest first."""
    if inp.update_revision is None:
        return []
    return sorted(
        (o for o, p in inp.pods.items() if o < inp.expected and p.revision != inp.update_revision),
        reverse=True,
    )


def decide_roll(inp: RollInput) -> RollDecision:
    """The next step of a roll (see the module docstring); never raises."""
    old = dict(inp.upgrade) if inp.upgrade else None
    stale = outdated(inp)
    active = old is not None and old.get("phase") in ("Rolling", "Stalled")
    if not active and not stale:
        return RollDecision(upgrade=old)

    events: list[st.EventSpec] = []
    if old is None or not active or (stale and old.get("toRevision") != inp.update_revision):
        upgrade: dict[str, Any] = {
            "phase": "Rolling",
            "fromImage": (old or {}).get("toImage") if active else _running_image(inp),
            "toImage": inp.image,
            "toRevision": inp.update_revision,
            "startedAt": inp.now,
            "completedAt": None,
            "pod": None,
            "deletedAt": None,
            "leadersMoved": False,
            "message": None,
        }
        verb = "UpgradeRetargeted" if active else "UpgradeStarted"
        events.append(
            st.EventSpec("Normal", verb, f"rolling {len(stale)} pods to {inp.image}, one at a time")
        )
    else:
        upgrade = old
    upgrade["updatedPods"] = inp.expected - len(stale)
    upgrade["totalPods"] = inp.expected
    decision = RollDecision(upgrade=upgrade, events=events)
    replicated = inp.replication is not None and inp.replication.complete
    behind = list(inp.replication.behind) if inp.replication else []

    in_flight = upgrade.get("pod")
    if in_flight is not None:
        pod = inp.pods.get(int(in_flight))
        if pod is None or not pod.ready or pod.revision != inp.update_revision:
            waited = _seconds_since(str(upgrade["deletedAt"]), inp.now)
            if waited <= inp.pod_ready_timeout_s:
                decision.progress = st.Problem(
                    "RollingUpgrade", f"waiting for pod ordinal {in_flight} to be ready"
                )
                return decision
            message = (
                f"pod ordinal {in_flight} is not ready {waited:.0f}s after its replacement "
                f"(image {inp.image}); the roll is stopped: fix spec.image to resume"
            )
            if upgrade.get("phase") != "Stalled":
                decision.events.append(st.EventSpec("Warning", "UpgradeStalled", message))
            upgrade.update(phase="Stalled", message=message)
            decision.problem = st.Problem("UpgradeStalled", message)
            return decision
        if not replicated:
            decision.progress = st.Problem(
                "RollingUpgrade",
                f"pod ordinal {in_flight} is back; waiting for partitions {behind} to catch up",
            )
            return decision
        decision.events.append(
            st.EventSpec("Normal", "PodUpgraded", f"pod ordinal {in_flight} runs {inp.image}")
        )
        upgrade.update(pod=None, deletedAt=None, leadersMoved=False, phase="Rolling", message=None)

    if not stale:
        if not replicated:
            decision.progress = st.Problem("RollingUpgrade", f"waiting for partitions {behind} to catch up")
            return decision
        upgrade.update(phase="Completed", completedAt=inp.now, message=None)
        decision.events.append(st.EventSpec("Normal", "UpgradeCompleted", f"every pod runs {inp.image}"))
        return decision

    # Between pods: go on only from a whole, caught-up cluster -- except that a single pod
    # which is down *and* out of date is replaced first: it costs no availability, and it
    # is how a roll stalled on a bad image gets going again once the image is fixed.
    not_ready = sorted(o for o in range(inp.expected) if not ((p := inp.pods.get(o)) and p.ready))
    if len(not_ready) == 1 and not_ready[0] in stale and not_ready[0] in inp.pods:
        return _replace(decision, upgrade, not_ready[0], inp)
    if not_ready:
        decision.progress = st.Problem("RollingUpgrade", f"waiting for pods {not_ready} to be ready")
        return decision
    if not replicated or inp.replication is None:
        decision.progress = st.Problem("RollingUpgrade", f"waiting for partitions {behind} to catch up")
        return decision
    nxt = stale[0]
    led = inp.replication.leading.get(nxt + 1, ())  # node ids are ordinals + 1
    # Spread the moved leaderships over the other voters instead of piling them on one.
    movable = tuple(
        (pid, others[pid % len(others)])
        for pid, voters in led
        if (others := [v for v in voters if v != nxt + 1])
    )
    if movable and not upgrade.get("leadersMoved"):
        decision.move_leaders_from = movable
        upgrade["leadersMoved"] = True
        decision.progress = st.Problem(
            "RollingUpgrade", f"moving {len(movable)} leaderships off pod ordinal {nxt}"
        )
        return decision
    return _replace(decision, upgrade, nxt, inp)


def _replace(decision: RollDecision, upgrade: dict[str, Any], ordinal: int, inp: RollInput) -> RollDecision:
    decision.delete_pod = ordinal
    upgrade.update(pod=ordinal, deletedAt=inp.now)
    decision.events.append(
        st.EventSpec("Normal", "PodReplaced", f"replacing pod ordinal {ordinal} with {inp.image}")
    )
    decision.progress = st.Problem("RollingUpgrade", f"replacing pod ordinal {ordinal}")
    return decision


def _running_image(inp: RollInput) -> str | None:
    """The image the out-of-date pods run: what the roll moves away from."""
    stale = outdated(inp)
    return next((p.image for o, p in sorted(inp.pods.items()) if o in stale and p.image), None)
