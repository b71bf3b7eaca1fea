"""Shared generators and invariant checks for the placement tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

from hypothesis import strategies as st

from kvcluster.keyspace import META_PARTITION, NodeInfo, PartitionDescriptor, PartitionMap, meta_replica_count
from kvcluster.placement import (
    AddLearner,
    Merge,
    Plan,
    Promote,
    RemoveReplica,
    Split,
    Step,
    Target,
    TransferLeader,
    apply_step,
    map_leader_counts,
    map_replica_counts,
    plan,
)
from kvcluster.placement.steps import known_leader, next_partition_id

POOL = tuple(range(1, 8))
"""Every node id the generators use; all are registered in generated maps."""

Leaders = dict[int, int | None]


def initial(nodes: Sequence[int], partitions: int, replicas: int, pool: Sequence[int] = ()) -> PartitionMap:
    pmap = PartitionMap.initial({n: f"http://n{n}" for n in nodes}, partitions, replicas)
    for n in pool:
        pmap.nodes.setdefault(n, NodeInfo(n, f"http://n{n}"))
    return pmap


def first_voter_leaders(pmap: PartitionMap) -> Leaders:
    assert pmap.meta is not None
    out: Leaders = {d.id: d.voters[0] for d in pmap.partitions.values()}
    out[META_PARTITION] = pmap.meta.voters[0]
    return out


def descriptors(pmap: PartitionMap) -> dict[int, PartitionDescriptor]:
    assert pmap.meta is not None
    return {META_PARTITION: pmap.meta, **pmap.partitions}


def _random_op(draw: st.DrawFn, pmap: PartitionMap, leaders: Leaders) -> Step | None:
    descs = list(descriptors(pmap).values())
    desc = draw(st.sampled_from(descs))
    kind = draw(st.sampled_from(["split", "merge", "add", "promote", "remove", "transfer", "forget"]))
    if kind == "split":
        if desc.id == META_PARTITION or desc.range.size < 2 or len(pmap.partitions) >= 12:
            return None
        return Split(desc.id, next_partition_id(pmap))
    if kind == "merge":
        parts = list(pmap)
        pairs = [
            (a, b)
            for a, b in pairwise(parts)
            if set(a.voters) == set(b.voters) and set(a.learners) == set(b.learners)
        ]
        if not pairs:
            return None
        a, b = draw(st.sampled_from(pairs))
        return Merge(a.id, b.id)
    if kind == "add":
        free = [n for n in POOL if n not in desc.replicas]
        return AddLearner(desc.id, draw(st.sampled_from(free))) if free else None
    if kind == "promote":
        return Promote(desc.id, draw(st.sampled_from(desc.learners))) if desc.learners else None
    if kind == "remove":
        leader = known_leader(desc, leaders)
        options = list(desc.learners)
        if len(desc.voters) > 1:
            options += [n for n in desc.voters if n != leader]
        return RemoveReplica(desc.id, draw(st.sampled_from(options))) if options else None
    if kind == "transfer":
        return TransferLeader(desc.id, draw(st.sampled_from(desc.voters)))
    leaders[desc.id] = None
    return None


@st.composite
def cluster_states(draw: st.DrawFn, max_ops: int = 25) -> tuple[PartitionMap, Leaders]:
    """A map reached from a bootstrap layout by random valid operations.

    Covers what an interrupted reshape (or an operator's manual commands)
    can leave behind: uneven ranges, learners, over- and under-replicated
    partitions, replicas on any node, unknown leaders.
    """
    nodes = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=5, unique=True))
    partitions = draw(st.integers(1, 6))
    replicas = draw(st.integers(1, len(nodes)))
    pmap = initial(nodes, partitions, replicas, POOL)
    leaders = first_voter_leaders(pmap)
    for _ in range(draw(st.integers(0, max_ops))):
        step = _random_op(draw, pmap, leaders)
        if step is not None:
            pmap, leaders = apply_step(pmap, leaders, step)
    return pmap, leaders


@st.composite
def targets(draw: st.DrawFn, max_partitions: int = 10) -> Target:
    nodes = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=6, unique=True))
    return Target.of(nodes, draw(st.integers(1, max_partitions)), draw(st.integers(1, len(nodes))))


def simulate(
    pmap: PartitionMap, leaders: Leaders, steps: Sequence[Step]
) -> list[tuple[PartitionMap, Leaders]]:
    """Every state along ``steps``, the starting one first."""
    states = [(pmap, dict(leaders))]
    for step in steps:
        states.append(apply_step(*states[-1], step))
    return states


def wanted_voters(pid: int, target: Target) -> int:
    if pid == META_PARTITION:
        return meta_replica_count(len(target.nodes), target.replicas)
    return target.replicas


def check_transition(
    before: tuple[PartitionMap, Leaders], after: tuple[PartitionMap, Leaders], step: Step, target: Target
) -> None:
    """The safety invariants every single step must keep."""
    (old, old_leaders), (new, new_leaders) = before, after
    assert new.covers_space(), step
    old_d, new_d = descriptors(old), descriptors(new)
    changed = [
        pid
        for pid in old_d.keys() & new_d.keys()
        if (old_d[pid].voters, old_d[pid].learners) != (new_d[pid].voters, new_d[pid].learners)
    ]
    if isinstance(step, AddLearner | Promote | RemoveReplica):
        assert changed == [step.partition], step  # one membership change at a time
    else:
        assert changed == [], step
    for pid in old_d.keys() & new_d.keys():
        a, b = old_d[pid], new_d[pid]
        ov, nv = set(a.voters), set(b.voters)
        assert len(nv) >= 1
        assert len(nv) >= min(len(ov), wanted_voters(pid, target)), (step, a, b)
        assert len(ov ^ nv) <= 1, step
        # Any majority of the old voters meets any majority of the new ones.
        assert (len(ov) // 2 + 1) + (len(nv) // 2 + 1) > len(ov | nv), step
        if pid in changed:
            assert b.epoch == a.epoch + 1
        # Nodes leaving the target only ever lose replicas.
        assert set(b.replicas) - set(a.replicas) <= target.nodes, step
    for pid, desc in new_d.items():
        assert not (set(desc.voters) & set(desc.learners))
        leader = new_leaders.get(pid)
        if isinstance(step, RemoveReplica) and pid == step.partition:
            assert old_leaders.get(pid) != step.node, "removed the leader"
        if leader is not None and pid in old_d and old_leaders.get(pid) in old_d[pid].voters:
            assert leader in desc.voters, (step, desc, leader)
    if isinstance(step, Merge):
        left, right = old_d[step.left], old_d[step.right]
        assert set(left.voters) == set(right.voters) and set(left.learners) == set(right.learners)
        assert left.range.end == right.range.start
    if isinstance(step, Split):
        assert step.new_id > max([old.last_id, *old.partitions])
    if isinstance(step, TransferLeader):
        assert new_leaders[step.partition] == step.node
        assert step.node in target.nodes, "leadership handed to a leaving node"


def check_end(pmap: PartitionMap, leaders: Leaders, target: Target) -> None:
    """The end state is the target, balanced."""
    assert pmap.covers_space()
    assert len(pmap.partitions) == target.partitions
    for desc in pmap.partitions.values():
        assert len(desc.voters) == target.replicas, desc
        assert set(desc.voters) <= target.nodes, desc
        assert not desc.learners, desc
        assert known_leader(desc, leaders) is not None, desc
    assert pmap.meta is not None
    assert len(pmap.meta.voters) == meta_replica_count(len(target.nodes), target.replicas)
    assert set(pmap.meta.voters) <= target.nodes
    assert not pmap.meta.learners
    assert_balanced(map_replica_counts(pmap, target.nodes), target)
    assert_balanced(map_leader_counts(pmap, leaders, target.nodes), target)


def assert_balanced(counts: dict[int, int], target: Target) -> None:
    """Every target node within one of the mean (and of each other); nothing elsewhere."""
    assert set(counts) == set(target.nodes), counts
    mean = sum(counts.values()) / len(counts)
    assert all(abs(c - mean) <= 1 for c in counts.values()), counts
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def run_plan(
    pmap: PartitionMap, leaders: Leaders, target: Target, sizes: dict[int, int] | None = None
) -> tuple[Plan, list[tuple[PartitionMap, Leaders]]]:
    """Plan, simulate with every invariant checked, and check the end state."""
    steps = plan(pmap, leaders, target, sizes)
    states = simulate(pmap, leaders, steps.steps)
    for i, step in enumerate(steps.steps):
        check_transition(states[i], states[i + 1], step, target)
    check_end(*states[-1], target)
    assert plan(*states[-1], target, sizes).steps == (), "the end state is not at the target"
    return steps, states


def step_counts(steps: Plan) -> Counter[str]:
    return Counter(s.kind for s in steps)
