"""The reconciler's state machine: what to do next, given what was observed.

:func:`decide` is pure. The kopf layer (:mod:`kvoperator.operator`) gathers
an :class:`Observation` (the KVCluster, its StatefulSet, and answers from
the node admin API), calls :func:`decide`, carries out the returned
:class:`Plan`, and writes the new status. Because each pass starts from the
recorded status and fresh observations, a pass can be repeated at any time —
after a crash, a restart, or simply on the next timer tick — and it picks up
exactly where the previous one stopped.

A layout change (nodes, partitions, replicas) is a *reshape*, recorded in
``status.reshape`` and walked through these phases, each a stable state:

``GrowNodes``
    scale the StatefulSet up to the target and wait until every pod is ready
    (a reshape onto a node that is not up would stall or fail);
``Reshape``
    ask the nodes (``POST /v1/admin/reshape``) to move to the target layout
    over the target node ids, and follow the job to ``done``. When shrinking,
    the target excludes the highest ordinals, so this moves their replicas
    and leaderships away: the drain happens here;
``Drain``
    check that every node being removed reports ``drained`` (holds no replica
    and no leadership); ask for an explicit drain if one does not;
``ShrinkNodes``
    only now scale the StatefulSet down and wait for the pods to go; then
    remove the nodes from the cluster's member list (``forget``). Not
    earlier: a node that still runs registers itself again.

The StatefulSet never shrinks anywhere else, whatever the spec says: pods
above the target may hold data until the Drain phase has proven otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kvoperator import status as st
from kvoperator import upgrade as up
from kvoperator.spec import AppliedState, ClusterSpec, Layout, SpecError, check_transition

ReshapePhase = Literal["GrowNodes", "Reshape", "Drain", "ShrinkNodes", "Rejected"]
MAX_RESHAPE_ATTEMPTS = 5

_PROGRESS_REASON: dict[str, str] = {
    "GrowNodes": "GrowingNodes",
    "Reshape": "Reshaping",
    "Drain": "DrainingNodes",
    "ShrinkNodes": "ShrinkingNodes",
}


@dataclass(frozen=True, slots=True)
class StsView:
    """The parts of the StatefulSet the state machine looks at."""

    spec_replicas: int
    status_replicas: int
    ready_replicas: int
    update_revision: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> StsView:
        status = body.get("status") or {}
        return cls(
            spec_replicas=int((body.get("spec") or {}).get("replicas", 0)),
            status_replicas=int(status.get("replicas", 0) or 0),
            ready_replicas=int(status.get("readyReplicas", 0) or 0),
            update_revision=status.get("updateRevision") or None,
        )


@dataclass(frozen=True, slots=True)
class JobView:
    """``GET /v1/admin/reshape``: the nodes' current (or last) reshape job."""

    state: str
    target: Layout | None
    steps_total: int = 0
    steps_done: int = 0
    current: str | None = None
    error: str | None = None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> JobView:
        return cls(
            state=str(d.get("state", "idle")),
            target=target_layout(d.get("target")),
            steps_total=int(d.get("steps_total") or 0),
            steps_done=int(d.get("steps_done") or 0),
            current=str(d["current"]) if d.get("current") is not None else None,
            error=str(d["error"]) if d.get("error") else None,
        )


def target_layout(target: Any) -> Layout | None:
    """Normalise a job target (``{"nodes": [ids], ...}``) into a Layout, or None.

    Node ids are contiguous from 1 in Kubernetes, so a list of ids maps to
    a count only when it is exactly ``1..n``; anything else is not ours.
    """
    if not isinstance(target, Mapping):
        return None
    try:
        nodes = target["nodes"]
        if isinstance(nodes, list):
            ids = sorted(int(n) for n in nodes)
            if ids != list(range(1, len(ids) + 1)):
                return Layout(-1, int(target["partitions"]), int(target["replicas"]))
            count = len(ids)
        else:
            count = int(nodes)
        return Layout(count, int(target["partitions"]), int(target["replicas"]))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class NodeView:
    """``GET /v1/admin/nodes/{id}``."""

    id: int
    replicas: int
    leaders: int
    drained: bool
    known: bool = True
    """False when the cluster has no such member (404): it holds nothing, and has not joined."""

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> NodeView:
        return cls(
            id=int(d["id"]),
            replicas=int(d.get("replicas") or 0),
            leaders=int(d.get("leaders") or 0),  # null while the node is unreachable
            drained=bool(d.get("drained", False)),
        )

    @classmethod
    def unknown(cls, node_id: int) -> NodeView:
        return cls(node_id, 0, 0, True, known=False)


@dataclass(frozen=True, slots=True)
class Summary:
    """Partition and leader summary, from ``GET /v1/cluster``."""

    total: int
    leaderless: int
    leaders_per_node: Mapping[int, int]

    @classmethod
    def from_cluster(cls, d: Mapping[str, Any]) -> Summary:
        parts = [p for p in d.get("partitions") or () if int(p.get("id", 1)) != 0]
        leaders: dict[int, int] = {}
        leaderless = 0
        for p in parts:
            leader = p.get("leader")
            if leader in (None, 0):
                leaderless += 1
            else:
                leaders[int(leader)] = leaders.get(int(leader), 0) + 1
        return cls(total=len(parts), leaderless=leaderless, leaders_per_node=leaders)

    def to_status(self) -> dict[str, Any]:
        # No timestamp: an unchanged summary must give an unchanged status, so
        # the health timer writes (and wakes every watcher) only on real change.
        return {
            "total": self.total,
            "withLeader": self.total - self.leaderless,
            "leaderless": self.leaderless,
            "leadersPerNode": {str(k): v for k, v in sorted(self.leaders_per_node.items())},
        }


@dataclass(frozen=True, slots=True)
class Needs:
    """Which admin API answers the next pass needs (the rest are not fetched)."""

    summary: bool = False
    job: bool = False
    nodes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Observation:
    generation: int
    spec: ClusterSpec | SpecError
    status: Mapping[str, Any]
    sts: StsView | None
    now: str
    auth_problem: st.Problem | None = None
    conflicts: tuple[str, ...] = ()
    summary: Summary | None = None
    job: JobView | None = None
    nodes: Mapping[int, NodeView] = field(default_factory=dict)
    admin_error: str | None = None
    pods: Mapping[int, up.PodView] = field(default_factory=dict)
    """The StatefulSet's pods by ordinal: their template revision and readiness (for rolls)."""
    replication: up.Replication | None = None


@dataclass
class Plan:
    """What one pass should do, in this order, then the status to write."""

    ensure_objects: bool = False
    """Create or update the Secret, ConfigMap, Services, PDB and StatefulSet template."""
    sts_replicas: int | None = None
    """The StatefulSet size to apply (None: leave it alone)."""
    bootstrapped: bool = False
    """Which cluster-state the ConfigMap should carry (False: new)."""
    pdb_replicas: int = 1
    start_reshape: Layout | None = None
    drain: list[int] = field(default_factory=list)
    forget: list[int] = field(default_factory=list)
    """Removed nodes to drop from the cluster's member list (their pods are gone)."""
    move_leaders: tuple[tuple[int, int], ...] = ()
    """(partition, new leader): leaderships to move off the node whose pod a roll replaces next."""
    delete_pod: int | None = None
    """The ordinal of the pod a roll replaces now."""
    status: dict[str, Any] = field(default_factory=dict)
    """A merge patch for ``.status`` (None values delete keys)."""
    events: list[st.EventSpec] = field(default_factory=list)
    phase_changed: bool = False
    """The reshape moved to another phase: the caller should run another pass now."""


def applied_state(status: Mapping[str, Any]) -> AppliedState:
    return AppliedState(
        storage_size=status.get("storage"),
        storage_class=status.get("storageClassName"),
        auth_secret=status.get("authSecretName"),
        created=status.get("initial") is not None,
        tls_enabled=status.get("tlsEnabled"),
    )


def admin_needs(status: Mapping[str, Any], sts: StsView | None) -> Needs:
    """What to ask the nodes before deciding; nothing before any pod is ready."""
    if sts is None or sts.ready_replicas == 0:
        return Needs()
    reshape = status.get("reshape") or {}
    phase = reshape.get("phase")
    nodes: tuple[int, ...] = ()
    if phase in ("GrowNodes", "Drain", "ShrinkNodes"):
        frm = Layout.from_dict(reshape["from"])
        tgt = Layout.from_dict(reshape["target"])
        # Growing: the new nodes must have joined; draining: the old ones must hold nothing;
        # shrinking: the removed ones must have left the member list.
        members = int(reshape.get("members", frm.nodes))
        ids = (
            range(members + 1, tgt.nodes + 1) if phase == "GrowNodes" else range(tgt.nodes + 1, frm.nodes + 1)
        )
        nodes = tuple(ids)
    return Needs(summary=True, job=phase == "Reshape", nodes=nodes)


def _health(obs: Observation, *, bootstrapped: bool, **kw: Any) -> st.Health:
    sts = obs.sts
    return st.Health(
        bootstrapped=bootstrapped,
        expected_nodes=sts.spec_replicas if sts else 0,
        ready_nodes=sts.ready_replicas if sts else 0,
        partitions_total=obs.summary.total if obs.summary else None,
        leaderless=obs.summary.leaderless if obs.summary else None,
        admin_error=obs.admin_error,
        **kw,
    )


def _finish(plan: Plan, obs: Observation, health: st.Health, *, reshaping: bool) -> Plan:
    """Add conditions, phase and bookkeeping to the plan's status patch."""
    previous = obs.status.get("conditions") or []
    conditions = st.merge_conditions(
        previous, st.desired_conditions(health), generation=obs.generation, now=obs.now
    )
    plan.events.extend(st.condition_events(previous, conditions))
    plan.status.update(
        {
            "conditions": conditions,
            "phase": st.phase_for(health, reshaping=reshaping),
            "observedGeneration": obs.generation,
            "readyNodes": health.ready_nodes,
            "currentNodes": obs.sts.status_replicas if obs.sts else 0,
        }
    )
    if obs.summary is not None:
        plan.status["partitions"] = obs.summary.to_status()
    return plan


def decide(obs: Observation) -> Plan:
    """One step of the state machine. Never raises for bad input: refusals become status."""
    status = obs.status
    plan = Plan()

    # 1. Refuse a bad spec before touching anything.
    problem: st.Problem | None = None
    spec = obs.spec
    if isinstance(spec, SpecError):
        problem = st.Problem(spec.reason, spec.message)
    else:
        try:
            check_transition(spec, applied_state(status))
        except SpecError as exc:
            problem = st.Problem(exc.reason, exc.message)
    bootstrapped = bool(status.get("bootstrapped"))
    if problem is not None or isinstance(spec, SpecError):
        health = _health(obs, bootstrapped=bootstrapped, spec_problem=problem)
        return _finish(plan, obs, health, reshaping=bool(status.get("reshape")))

    # 2. First pass: record the initial layout, which fixes --peers forever.
    if status.get("initial") is None:
        layout = spec.layout
        plan.ensure_objects = obs.auth_problem is None
        plan.sts_replicas = layout.nodes
        plan.pdb_replicas = layout.replicas
        plan.status.update(
            {
                "initial": layout.to_dict(),
                "applied": layout.to_dict(),
                "storage": spec.storage_size,
                "storageClassName": spec.storage_class,
                "authSecretName": spec.auth_secret,
                "tlsEnabled": spec.tls_enabled,
                "bootstrapped": False,
            }
        )
        if obs.auth_problem is not None:
            # Record nothing yet: the cluster is created once the Secret exists.
            plan.status = {}
            health = _health(obs, bootstrapped=False, operation_problem=obs.auth_problem)
            return _finish(plan, obs, health, reshaping=False)
        plan.events.append(
            st.EventSpec(
                "Normal",
                "Creating",
                f"creating {layout.nodes} nodes with {layout.partitions} partitions"
                f" x {layout.replicas} replicas",
            )
        )
        plan.phase_changed = True
        health = _health(obs, bootstrapped=False, progress=st.Problem("Bootstrapping", "creating the nodes"))
        return _finish(plan, obs, health, reshaping=False)

    initial = Layout.from_dict(status["initial"])
    applied = Layout.from_dict(status["applied"])
    operation_problem = obs.auth_problem
    if operation_problem is None and obs.conflicts:
        operation_problem = st.Problem(
            "ResourceConflict", "not owned by this KVCluster, left alone: " + ", ".join(obs.conflicts)
        )
    plan.ensure_objects = obs.auth_problem is None
    plan.status["storage"] = spec.storage_size
    sts = obs.sts

    # 3. Bootstrap: the initial pods form the cluster; no reshape before that.
    if not bootstrapped:
        plan.sts_replicas = initial.nodes
        plan.pdb_replicas = initial.replicas
        ready = sts is not None and sts.ready_replicas >= initial.nodes
        led = obs.summary is not None and obs.summary.total > 0 and obs.summary.leaderless == 0
        if ready and led:
            plan.bootstrapped = True
            plan.status["bootstrapped"] = True
            plan.phase_changed = True
            plan.events.append(
                st.EventSpec(
                    "Normal", "Bootstrapped", f"{initial.nodes} nodes formed the cluster; new pods will join"
                )
            )
            health = _health(obs, bootstrapped=True, operation_problem=operation_problem)
            return _finish(plan, obs, health, reshaping=False)
        ready_count = sts.ready_replicas if sts else 0
        progress = st.Problem("Bootstrapping", f"{ready_count}/{initial.nodes} initial nodes ready")
        health = _health(obs, bootstrapped=False, progress=progress, operation_problem=operation_problem)
        return _finish(plan, obs, health, reshaping=False)

    plan.bootstrapped = True
    return _decide_reshape(plan, obs, spec, applied, operation_problem)


def _present(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A status object as the API stores it after a merge patch: keys set to None are gone."""
    return None if d is None else {k: v for k, v in d.items() if v is not None}


def _new_reshape(obs: Observation, target: Layout, existing: int, applied: Layout) -> dict[str, Any]:
    frm = Layout(existing, applied.partitions, applied.replicas)
    return {
        # Growing is needed whenever the target names nodes that hold no data
        # yet, even if their pods already exist (left over from a retarget).
        "phase": "GrowNodes" if target.nodes > applied.nodes else "Reshape",
        "members": applied.nodes,
        "from": frm.to_dict(),
        "target": target.to_dict(),
        "generation": obs.generation,
        "startedAt": obs.now,
        "job": None,
        "stepsTotal": 0,
        "stepsDone": 0,
        "current": None,
        "attempts": 0,
        "lastError": None,
        "drainRequested": [],
        "message": None,
    }


def _decide_reshape(
    plan: Plan, obs: Observation, spec: ClusterSpec, applied: Layout, operation_problem: st.Problem | None
) -> Plan:
    sts = obs.sts
    existing = max(applied.nodes, sts.spec_replicas if sts else 0)
    target = spec.layout
    reshape: dict[str, Any] | None = dict(obs.status["reshape"]) if obs.status.get("reshape") else None

    # A rejected target stays rejected until the spec asks for something else.
    if reshape is not None and reshape["phase"] == "Rejected":
        if Layout.from_dict(reshape["target"]) == target:
            plan.sts_replicas = existing
            plan.pdb_replicas = min(applied.replicas, target.replicas)
            problem = st.Problem(
                "ReshapeRejected", str(reshape.get("lastError") or "the nodes refused the layout")
            )
            health = _health(obs, bootstrapped=True, operation_problem=operation_problem or problem)
            return _finish(plan, obs, health, reshaping=False)
        reshape = None
        plan.status["reshape"] = None

    # A roll runs only while no reshape does, and a layout change waits for a running roll.
    idle = target == applied and existing == target.nodes
    rolling = (obs.status.get("upgrade") or {}).get("phase") in ("Rolling", "Stalled")
    if reshape is None and (idle or rolling) and isinstance(obs.spec, ClusterSpec):
        roll = up.decide_roll(
            up.RollInput(
                update_revision=sts.update_revision if sts else None,
                pods=obs.pods,
                expected=existing,
                image=obs.spec.image,
                replication=obs.replication,
                upgrade=obs.status.get("upgrade"),
                now=obs.now,
                pod_ready_timeout_s=float(obs.spec.pod_ready_timeout_s),
            )
        )
        if _present(roll.upgrade) != _present(obs.status.get("upgrade")):
            plan.status["upgrade"] = roll.upgrade
        plan.events.extend(roll.events)
        if roll.rolling:
            plan.sts_replicas = existing
            plan.pdb_replicas = applied.replicas
            plan.move_leaders, plan.delete_pod = roll.move_leaders_from, roll.delete_pod
            if roll.upgrade is not None and not idle:
                roll.upgrade["message"] = roll.upgrade.get("message") or "a layout change waits for this roll"
            health = _health(
                obs,
                bootstrapped=True,
                progress=roll.progress,
                operation_problem=operation_problem or roll.problem,
            )
            return _finish(plan, obs, health, reshaping=False)

    # Nothing to do when idle, except putting back a StatefulSet someone shrank.
    if reshape is None and target == applied and existing == target.nodes:
        plan.sts_replicas = existing
        plan.pdb_replicas = applied.replicas
        health = _health(obs, bootstrapped=True, operation_problem=operation_problem)
        return _finish(plan, obs, health, reshaping=False)

    if reshape is None:
        reshape = _new_reshape(obs, target, existing, applied)
        frm = Layout.from_dict(reshape["from"])
        plan.events.append(
            st.EventSpec(
                "Normal",
                "ReshapeStarted",
                f"reshaping from {frm.nodes} nodes/{frm.partitions} partitions/{frm.replicas} replicas "
                f"to {target.nodes}/{target.partitions}/{target.replicas}",
            )
        )
        plan.phase_changed = True
    elif Layout.from_dict(reshape["target"]) != target:
        # Switching targets is safe whenever no job is moving data: before the
        # first job (growing) or between jobs (the last one failed or ended).
        # Nodes above the new target are then drained by the new reshape.
        between_jobs = reshape["phase"] == "Reshape" and obs.job is not None and obs.job.state != "running"
        if reshape["phase"] == "GrowNodes" or between_jobs:
            reshape = _new_reshape(obs, target, existing, applied)
            plan.events.append(
                st.EventSpec(
                    "Normal",
                    "ReshapeRetargeted",
                    f"spec changed; new target {target.nodes}/{target.partitions}/{target.replicas}",
                )
            )
            plan.phase_changed = True
        else:
            reshape["message"] = "the spec changed; it is applied once this reshape completes"

    frm = Layout.from_dict(reshape["from"])
    tgt = Layout.from_dict(reshape["target"])
    plan.pdb_replicas = max(1, min(frm.replicas, tgt.replicas))
    phase: str = reshape["phase"]
    progress_msg = ""

    if phase == "GrowNodes":
        plan.sts_replicas = max(frm.nodes, tgt.nodes)
        ready = sts is not None and sts.spec_replicas >= tgt.nodes and sts.ready_replicas >= tgt.nodes
        # A ready pod may not be a member yet; a reshape naming it would be refused.
        new_ids = range(int(reshape.get("members", frm.nodes)) + 1, tgt.nodes + 1)
        joined = all((v := obs.nodes.get(i)) is not None and v.known for i in new_ids)
        if ready and joined:
            phase = "Reshape"
        elif ready:
            progress_msg = "waiting for the new nodes to join the cluster"
        else:
            progress_msg = (
                f"waiting for {tgt.nodes} nodes to be ready ({sts.ready_replicas if sts else 0} are)"
            )

    if phase == "Reshape":
        plan.sts_replicas = max(frm.nodes, tgt.nodes)
        phase, progress_msg = _reshape_step(plan, obs, reshape, tgt, frm)

    if phase == "Drain":
        plan.sts_replicas = max(frm.nodes, tgt.nodes)
        removed = list(range(tgt.nodes + 1, frm.nodes + 1))
        known = {i: obs.nodes.get(i) for i in removed}
        if any(v is None for v in known.values()):
            progress_msg = "waiting for the nodes being removed to report their state"
        else:
            busy = [i for i, v in known.items() if v is not None and not v.drained]
            if not busy:
                phase = "ShrinkNodes"
            else:
                requested = set(reshape.get("drainRequested") or ())
                plan.drain = [i for i in busy if i not in requested]
                reshape["drainRequested"] = sorted(requested | set(plan.drain))
                progress_msg = (
                    "waiting for nodes " + ", ".join(map(str, busy)) + " to hand over their replicas"
                )

    if phase == "ShrinkNodes":
        plan.sts_replicas = tgt.nodes
        if sts is not None and sts.spec_replicas == tgt.nodes and sts.status_replicas <= tgt.nodes:
            # The pods are gone; the cluster still lists their nodes as members
            # (each one is reported unreachable and contacted by every status
            # call) until they are forgotten.
            leaving = range(tgt.nodes + 1, frm.nodes + 1)
            plan.forget = [i for i in leaving if (v := obs.nodes.get(i)) is not None and v.known]
            if not plan.forget and obs.admin_error is None:
                return _complete(plan, obs, reshape, tgt, operation_problem)
            progress_msg = "removing nodes " + ", ".join(map(str, leaving)) + " from the member list"
        else:
            progress_msg = f"removing {frm.nodes - tgt.nodes} drained nodes"

    if phase != reshape["phase"]:
        plan.phase_changed = True
        plan.events.append(st.EventSpec("Normal", _PROGRESS_REASON.get(phase, phase), progress_msg or phase))
        reshape["phase"] = phase
    plan.status["reshape"] = reshape

    if phase == "Rejected":
        problem = st.Problem("ReshapeRejected", str(reshape.get("lastError")))
        health = _health(obs, bootstrapped=True, operation_problem=operation_problem or problem)
        return _finish(plan, obs, health, reshaping=False)
    failed = int(reshape.get("attempts") or 0) >= MAX_RESHAPE_ATTEMPTS
    if failed and operation_problem is None:
        operation_problem = st.Problem(
            "ReshapeFailed",
            f"gave up after {reshape['attempts']} attempts: {reshape.get('lastError')};"
            " edit the spec to retry",
        )
    elif reshape.get("lastError") and operation_problem is None:
        operation_problem = st.Problem("ReshapeFailed", f"retrying: {reshape['lastError']}")
    progress = st.Problem(_PROGRESS_REASON.get(phase, phase), progress_msg or phase)
    health = _health(obs, bootstrapped=True, progress=progress, operation_problem=operation_problem)
    return _finish(plan, obs, health, reshaping=True)


def _reshape_step(
    plan: Plan, obs: Observation, reshape: dict[str, Any], tgt: Layout, frm: Layout
) -> tuple[str, str]:
    """Follow (or start) the admin reshape job; return the next phase and a progress message."""
    job = obs.job
    if job is None:
        return "Reshape", "waiting for the nodes' admin API"
    ours = job.target == tgt
    if ours and job.state == "done":
        # ShrinkNodes with nothing to remove completes at once.
        return ("Drain" if tgt.nodes < frm.nodes else "ShrinkNodes"), "the nodes reached the target layout"
    if ours and job.state == "running":
        reshape.update(stepsTotal=job.steps_total, stepsDone=job.steps_done, current=job.current)
        return "Reshape", f"step {job.steps_done}/{job.steps_total}" + (
            f": {job.current}" if job.current else ""
        )
    if job.state == "running":
        return "Reshape", "another reshape job is running on the nodes; waiting for it to finish"
    attempts = int(reshape.get("attempts") or 0)
    if ours and job.state == "failed" and reshape.get("job") is not None:
        attempts += 1
        reshape.update(attempts=attempts, lastError=job.error or "the reshape job failed", job=None)
        plan.events.append(st.EventSpec("Warning", "ReshapeFailed", str(reshape["lastError"])))
    if attempts >= MAX_RESHAPE_ATTEMPTS:
        return "Reshape", "stopped retrying"
    plan.start_reshape = tgt
    return "Reshape", "starting the reshape job"


def _complete(
    plan: Plan,
    obs: Observation,
    reshape: Mapping[str, Any],
    tgt: Layout,
    operation_problem: st.Problem | None,
) -> Plan:
    plan.status.update(
        {
            "applied": tgt.to_dict(),
            "reshape": None,
            "lastReshape": {
                "from": reshape["from"],
                "target": tgt.to_dict(),
                "startedAt": reshape.get("startedAt"),
                "completedAt": obs.now,
            },
        }
    )
    plan.phase_changed = True
    plan.events.append(
        st.EventSpec(
            "Normal",
            "ReshapeCompleted",
            f"now {tgt.nodes} nodes with {tgt.partitions} partitions x {tgt.replicas} replicas",
        )
    )
    health = _health(obs, bootstrapped=True, operation_problem=operation_problem)
    return _finish(plan, obs, health, reshaping=False)


def after_reshape_posted(plan: Plan, job_id: str) -> None:
    """Record the job the nodes accepted, so a restarted operator follows it."""
    reshape = plan.status.get("reshape")
    if isinstance(reshape, dict):
        reshape["job"] = job_id
        reshape["message"] = None


def after_reshape_rejected(plan: Plan, code: str, message: str) -> None:
    """The nodes called the target impossible: park it until the spec changes."""
    reshape = plan.status.get("reshape")
    if isinstance(reshape, dict):
        reshape["phase"] = "Rejected"
        reshape["lastError"] = f"{code}: {message}"
        plan.phase_changed = True


def layout_changes(diff: Sequence[tuple[str, tuple[str, ...], Any, Any]]) -> list[str]:
    """Human-readable field-level changes from a kopf diff (``spec.nodes: 3 -> 5``)."""
    out: list[str] = []
    for _op, path, old, new in diff:
        name = ".".join(("spec", *path)) if path and path[0] != "spec" else ".".join(path) or "spec"
        out.append(f"{name}: {old!r} -> {new!r}")
    return out
