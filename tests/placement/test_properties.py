"""Property tests: random clusters, random targets, every intermediate state checked."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcluster.keyspace import PartitionMap
from kvcluster.placement import AddLearner, RemoveReplica, Target, apply_step, map_replica_counts, plan

from .support import (
    Leaders,
    check_end,
    cluster_states,
    first_voter_leaders,
    initial,
    run_plan,
    step_counts,
    targets,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _end_owner(end: PartitionMap, start: int) -> frozenset[int]:
    desc = end.lookup(start)
    assert desc is not None
    return frozenset(desc.replicas)


@SETTINGS
@given(cluster_states(), targets())
def test_plan_is_safe_reaches_target_and_is_idempotent(
    state: tuple[PartitionMap, Leaders], target: Target
) -> None:
    pmap, leaders = state
    snapshot = (pmap.to_dict(), dict(leaders))
    steps, states = run_plan(pmap, leaders, target)
    end, end_leaders = states[-1]
    assert plan(end, end_leaders, target).steps == ()
    # Pure: the inputs are left alone, and the same inputs give the same plan.
    assert (pmap.to_dict(), leaders) == snapshot
    assert plan(pmap, leaders, target) == steps


@SETTINGS
@given(cluster_states(), targets())
def test_nothing_moves_twice(state: tuple[PartitionMap, Leaders], target: Target) -> None:
    """A copy is only ever made to a node that keeps it, a replica only dropped where it is not kept."""
    pmap, leaders = state
    steps, states = run_plan(pmap, leaders, target)
    end = states[-1][0]
    assert end.meta is not None
    for (before, _), step in zip(states, steps.steps, strict=False):
        if isinstance(step, AddLearner | RemoveReplica):
            if step.partition == 0:
                kept = step.node in end.meta.replicas
            else:
                kept = step.node in _end_owner(end, before.partitions[step.partition].range.start)
            assert kept == isinstance(step, AddLearner), step


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_states(), targets(), st.data())
def test_replanning_continues_the_same_plan(
    state: tuple[PartitionMap, Leaders], target: Target, data: st.DataObject
) -> None:
    """What the executor does: run a prefix, re-read the map, plan again."""
    pmap, leaders = state
    steps, states = run_plan(pmap, leaders, target)
    if not steps:
        return
    prefixes = data.draw(st.lists(st.integers(0, len(steps)), min_size=1, max_size=4, unique=True))
    for k in prefixes:
        assert plan(*states[k], target).steps == steps.steps[k:], k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_states(), targets())
def test_executor_loop_converges(state: tuple[PartitionMap, Leaders], target: Target) -> None:
    """Execute only the first step of each fresh plan; it must end at the target in as many steps."""
    pmap, leaders = state
    steps, states = run_plan(pmap, leaders, target)
    cur = states[0]
    for _ in range(len(steps)):
        first = plan(*cur, target).first
        assert first is not None
        cur = apply_step(*cur, first)
    assert plan(*cur, target).steps == ()
    check_end(*cur, target)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(range(1, 8)), min_size=1, max_size=6, unique=True),
    st.integers(1, 12),
    st.data(),
)
def test_bootstrap_layout_moves_only_the_excess(
    nodes: list[int], partitions: int, data: st.DataObject
) -> None:
    """From the bootstrap layout, copies are exactly those balance forces; none when it is balanced."""
    replicas = data.draw(st.integers(1, len(nodes)))
    pmap = initial(nodes, partitions, replicas)
    steps, _ = run_plan(pmap, first_voter_leaders(pmap), Target.of(nodes, partitions, replicas))
    counts = map_replica_counts(pmap, nodes)
    lo, hi = partitions * replicas // len(nodes), -(-partitions * replicas // len(nodes))
    needed = max(sum(max(0, c - hi) for c in counts.values()), sum(max(0, lo - c) for c in counts.values()))
    kinds = step_counts(steps)
    assert kinds["add_learner"] == kinds["promote"] == kinds["remove_replica"] == needed
    assert kinds["transfer_leader"] <= partitions + needed
    assert len(steps) == 3 * needed + kinds["transfer_leader"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_states(), targets(), st.data())
def test_size_estimates_keep_plans_safe(
    state: tuple[PartitionMap, Leaders], target: Target, data: st.DataObject
) -> None:
    pmap, leaders = state
    ids = sorted(pmap.partitions)
    known = data.draw(st.lists(st.sampled_from(ids), unique=True))
    sizes = {pid: data.draw(st.integers(0, 10**9)) for pid in known}
    run_plan(pmap, leaders, target, sizes)
