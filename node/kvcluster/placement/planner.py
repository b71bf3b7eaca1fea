"""The placement planner: current map + target shape -> ordered safe steps.

``plan`` first splits (splits copy nothing and keep replicas, so the halves
can then move independently), then fixes the end layout once (merge groups,
replica sets, leaders, meta voters; see ``balance``), then repeatedly picks
the most urgent step towards it:

1. leaders off nodes leaving the cluster (the node may be switched off soon);
2. the meta group (small, and it holds the map everything else depends on);
3. merges whose two sides already have the same replicas;
4. replica moves: learner -> promote -> remove, one partition at a time,
   finishing a started move before the next, draining nodes first;
5. leadership transfers for balance.

Each membership step is one Raft single-server change, a removal happens only
while the group has more voters than it will keep, and a leader is never
removed (leadership moves first), so no group ever has fewer voters than
``min(now, target)`` or loses quorum.

The executor runs the first step and calls ``plan`` again on the real map.
The end layout is the unique optimum of a cost the planner's own steps lower
most for the layout it chose, so re-planning continues the same plan rather
than starting another (see ``flow``), and planning at the target returns an
empty plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from kvcluster.keyspace import META_PARTITION, PartitionDescriptor, PartitionMap, meta_replica_count

from .balance import Group, leader_layout, map_leader_counts, meta_layout, replica_layout
from .shape import merge_groups, split_candidate
from .steps import (
    AddLearner,
    Leaders,
    Merge,
    Plan,
    Promote,
    RemoveReplica,
    Split,
    Step,
    TransferLeader,
    apply_step,
    copy_map,
    known_leader,
    next_partition_id,
)
from .target import Target, check_target


@dataclass(frozen=True, slots=True)
class _Goal:
    target: Target
    group_of: Mapping[int, int]
    """Current partition id -> id of the end partition it becomes part of."""
    replicas: Mapping[int, frozenset[int]]
    leader: Mapping[int, int]
    meta: frozenset[int]
    meta_count: int


def plan(
    pmap: PartitionMap, leaders: Leaders, target: Target, sizes: Mapping[int, int] | None = None
) -> Plan:
    """Ordered steps from ``pmap`` to ``target``; raises ``Refusal`` when impossible.

    ``leaders`` maps partition ids (0 for meta) to the node believed to lead
    them; unknown entries are fine (the planner makes a leader known before it
    removes a voter). ``sizes`` are per-partition byte estimates; without them
    data is assumed proportional to range size. Pure and deterministic.
    """
    check_target(pmap, target)
    state, lead = copy_map(pmap), dict(leaders)
    est = _estimate_sizes(pmap, sizes)
    steps: list[Step] = []
    while len(state.partitions) < target.partitions:
        desc = split_candidate(state)
        step = Split(desc.id, next_partition_id(state))
        right_share = est[desc.id] * desc.range.split()[1].size // desc.range.size
        est[step.new_id] = right_share
        est[desc.id] -= right_share
        state, lead = apply_step(state, lead, step)
        steps.append(step)

    goal = _goal(state, lead, target, est)
    # A plan touches each (partition, node) pair a few times at most, so this
    # bound is generous: hitting it means a planner bug, not a long plan.
    limit = 64 + 8 * (len(state.partitions) + 1) * (len(state.nodes) + len(target.nodes) + target.replicas)
    for _ in range(limit):
        next_step = _next_step(state, lead, goal)
        if next_step is None:
            return Plan(tuple(steps))
        state, lead = apply_step(state, lead, next_step)
        steps.append(next_step)
        if isinstance(next_step, Merge):
            est[next_step.left] += est.pop(next_step.right)
        elif isinstance(next_step, TransferLeader) and _deviates(next_step, goal):
            # A leader had to go somewhere other than its end node (it was on a
            # leaving node or unknown). Where it now sits is free to keep, so
            # take the layout the executor's re-plan will see from here on.
            goal = _goal(state, lead, target, est)
    raise RuntimeError("placement planner did not converge (bug)")


def _deviates(step: TransferLeader, goal: _Goal) -> bool:
    """Whether the goal computed after ``step`` may differ from ``goal``.

    Only the leader of a group's leftmost member (the one that survives the
    merges) and the meta leader feed into the goal.
    """
    if step.partition == META_PARTITION:
        return True
    group = goal.group_of[step.partition]
    return group == step.partition and goal.leader[group] != step.node


def _estimate_sizes(pmap: PartitionMap, sizes: Mapping[int, int] | None) -> dict[int, int]:
    """Bytes per partition, filling gaps at the average density of the known ones."""
    if not sizes:
        return {d.id: d.range.size for d in pmap.partitions.values()}
    known = [d for d in pmap.partitions.values() if d.id in sizes]
    known_bytes = sum(max(0, sizes[d.id]) for d in known)
    known_span = sum(d.range.size for d in known)
    out: dict[int, int] = {}
    for d in pmap.partitions.values():
        if d.id in sizes:
            out[d.id] = max(0, sizes[d.id])
        elif known_span:
            out[d.id] = known_bytes * d.range.size // known_span
        else:
            out[d.id] = d.range.size
    return out


def _goal(state: PartitionMap, leaders: Leaders, target: Target, sizes: Mapping[int, int]) -> _Goal:
    groups = [Group(g[0].id, tuple(g)) for g in merge_groups(list(state), target.partitions)]
    replicas = replica_layout(groups, sizes, target)
    assert state.meta is not None  # check_target refuses maps without one
    return _Goal(
        target=target,
        group_of={m.id: g.id for g in groups for m in g.members},
        replicas=replicas,
        leader=leader_layout(groups, replicas, leaders, target),
        meta=meta_layout(state.meta, leaders, target, replicas),
        meta_count=meta_replica_count(len(target.nodes), target.replicas),
    )


def _next_step(state: PartitionMap, leaders: Leaders, goal: _Goal) -> Step | None:
    return (
        _leader_off_leaving_node(state, leaders, goal)
        or _meta_step(state, leaders, goal)
        or _merge_step(state, goal)
        or _move_step(state, leaders, goal)
        or _balance_leaders(state, leaders, goal)
    )


def _end_of(desc: PartitionDescriptor, goal: _Goal) -> tuple[frozenset[int], int, int | None]:
    """End voters, voter count and preferred end leader of ``desc``."""
    if desc.id == META_PARTITION:
        # The meta leader is not balanced; any end voter will do, as long as
        # the choice depends on the end set only (its ranking may reorder).
        preferred = min((n for n in goal.meta if n in desc.voters), default=None)
        return goal.meta, goal.meta_count, preferred
    group = goal.group_of[desc.id]
    return goal.replicas[group], goal.target.replicas, goal.leader[group]


def _leader_off_leaving_node(state: PartitionMap, leaders: Leaders, goal: _Goal) -> Step | None:
    """Move leadership off nodes leaving the cluster as soon as a voter can take it."""
    assert state.meta is not None
    load = map_leader_counts(state, leaders, goal.target.nodes)
    for desc in [state.meta, *state]:
        leader = known_leader(desc, leaders)
        if leader is None or leader in goal.target.nodes:
            continue
        end, _, preferred = _end_of(desc, goal)
        if preferred is not None and preferred in desc.voters:
            return TransferLeader(desc.id, preferred)
        for pool in (end, goal.target.nodes):
            candidates = [n for n in desc.voters if n in pool]
            if candidates:
                return TransferLeader(desc.id, min(candidates, key=lambda n: (load[n], n)))
    return None


def _membership_step(desc: PartitionDescriptor, leaders: Leaders, goal: _Goal) -> Step | None:
    """Next single-server change of ``desc`` towards its end replicas.

    Order within a partition: drop stray learners, promote wanted learners,
    remove a voter only while there are more voters than the group keeps, and
    add a learner otherwise. A move is therefore add -> promote -> remove, and
    the voter count never falls below ``min(now, target)``.
    """
    end, count, preferred = _end_of(desc, goal)
    stray = sorted(n for n in desc.learners if n not in end)
    if stray:
        return RemoveReplica(desc.id, stray[0])
    wanted = sorted(n for n in desc.learners if n in end)
    if wanted:
        return Promote(desc.id, wanted[0])
    leaving = sorted((n for n in desc.voters if n not in end), key=lambda n: (n in goal.target.nodes, n))
    if leaving and len(desc.voters) > count:
        leader = known_leader(desc, leaders)
        removable = [n for n in leaving if n != leader]
        if leader is not None and removable:
            return RemoveReplica(desc.id, removable[0])
        staying = [n for n in desc.voters if n in end]
        if staying:
            # Either the leader is the last voter to go (then every end voter,
            # the preferred one included, is already a voter), or nobody knows
            # who leads and a removal might hit the leader: an end voter leads first.
            if preferred is not None and preferred in desc.voters:
                return TransferLeader(desc.id, preferred)
            return TransferLeader(desc.id, staying[0])
        # Unknown leader and no end voter to hand it to yet: add one first.
    missing = sorted(n for n in end if n not in desc.replicas)
    if missing:
        return AddLearner(desc.id, missing[0])
    return None


def _meta_step(state: PartitionMap, leaders: Leaders, goal: _Goal) -> Step | None:
    assert state.meta is not None
    return _membership_step(state.meta, leaders, goal)


def _merge_step(state: PartitionMap, goal: _Goal) -> Step | None:
    """Merge neighbours of one end partition as soon as their replicas agree.

    Merging early means the rest of the alignment moves one partition instead
    of two. Learners must be gone first: a merge with a copy in flight is not
    worth the complexity it would add to the runtime.
    """
    parts = list(state)
    for left, right in pairwise(parts):
        if (
            goal.group_of[left.id] == goal.group_of[right.id]
            and set(left.voters) == set(right.voters)
            and not left.learners
            and not right.learners
        ):
            return Merge(left.id, right.id)
    return None


def _move_step(state: PartitionMap, leaders: Leaders, goal: _Goal) -> Step | None:
    def urgency(desc: PartitionDescriptor) -> tuple[bool, bool, int]:
        started = bool(desc.learners) or len(desc.voters) > goal.target.replicas
        draining = any(n not in goal.target.nodes for n in desc.replicas)
        return (not started, not draining, desc.range.start)

    for desc in sorted(state.partitions.values(), key=urgency):
        step = _membership_step(desc, leaders, goal)
        if step is not None:
            return step
    return None


def _balance_leaders(state: PartitionMap, leaders: Leaders, goal: _Goal) -> Step | None:
    for desc in state:
        wanted = goal.leader[goal.group_of[desc.id]]
        if known_leader(desc, leaders) != wanted:
            return TransferLeader(desc.id, wanted)
    return None
