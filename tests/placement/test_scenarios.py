"""The reshapes the product runs, end to end, with their step counts pinned.

Counts are pinned so that a change making plans longer (more copies, more
transfers) is noticed; the numbers are minimal for these shapes (each copy is
learner + promote + remove, each is forced by balance or by the target).
"""

from __future__ import annotations

from kvcluster.keyspace import PartitionMap
from kvcluster.placement import (
    AddLearner,
    Promote,
    RemoveReplica,
    Target,
    TransferLeader,
    map_leader_counts,
    map_replica_counts,
    plan,
)

from .support import Leaders, first_voter_leaders, initial, run_plan, step_counts

State = tuple[PartitionMap, Leaders]


def _reshape(state: State, nodes: list[int], partitions: int, replicas: int) -> tuple[dict[str, int], State]:
    steps, states = run_plan(*state, Target.of(nodes, partitions, replicas))
    return dict(step_counts(steps)), states[-1]


def test_partitions_4_8_16_4() -> None:
    pmap = initial([1, 2, 3], 4, 3)
    state: State = (pmap, first_voter_leaders(pmap))
    counts, state = _reshape(state, [1, 2, 3], 8, 3)
    assert counts == {"split": 4, "transfer_leader": 5}  # all eight start under n1
    counts, state = _reshape(state, [1, 2, 3], 16, 3)
    assert counts == {"split": 8, "transfer_leader": 1}
    counts, state = _reshape(state, [1, 2, 3], 4, 3)
    assert counts == {"merge": 12}
    assert [d.id for d in state[0]] == [1, 2, 3, 4]
    assert [d.range for d in state[0]] == [d.range for d in pmap]


def test_nodes_3_5_replicas_3_5_3_then_drain() -> None:
    pmap = initial([1, 2, 3], 8, 3, [1, 2, 3, 4, 5])
    state: State = (pmap, first_voter_leaders(pmap))
    # Grow: 24 replicas over 5 nodes is 4 or 5 each, so nodes 4 and 5 take 9.
    counts, state = _reshape(state, [1, 2, 3, 4, 5], 8, 3)
    assert counts["add_learner"] == counts["promote"] == counts["remove_replica"] == 9
    assert set(map_replica_counts(state[0], [1, 2, 3, 4, 5]).values()) == {4, 5}
    # More replicas: two more per partition, and the meta group grows to 5.
    counts, state = _reshape(state, [1, 2, 3, 4, 5], 8, 5)
    assert counts == {"add_learner": 18, "promote": 18}
    counts, state = _reshape(state, [1, 2, 3, 4, 5], 8, 3)
    assert counts.get("add_learner", 0) == 0 and counts["remove_replica"] == 18
    # Drain nodes 4 and 5: leaders leave first, then every replica.
    steps, states = run_plan(*state, Target.of([1, 2, 3], 8, 3))
    pmap, leaders = state
    assert pmap.meta is not None
    on_leaving = {d.id for d in [pmap.meta, *pmap] if leaders.get(d.id) in (4, 5)}
    first = steps.steps[: len(on_leaving)]
    assert {s.partition for s in first if isinstance(s, TransferLeader)} == on_leaving
    end = states[-1][0]
    assert map_replica_counts(end, [1, 2, 3]) == {1: 8, 2: 8, 3: 8}
    assert end.meta is not None and end.meta.voters == (1, 2, 3)
    assert sum(isinstance(s, AddLearner) for s in steps) == 9  # exactly what nodes 4 and 5 held
    leader_counts = map_leader_counts(end, states[-1][1], [1, 2, 3])
    assert sorted(leader_counts.values()) == [2, 3, 3]


def test_one_node_cluster_grows_to_three() -> None:
    pmap = initial([1], 4, 1, [1, 2, 3])
    state: State = (pmap, first_voter_leaders(pmap))
    counts, grown = _reshape(state, [1, 2, 3], 4, 3)
    # Every partition gains two replicas, the meta group too; leaders spread 2/1/1.
    assert counts == {"add_learner": 10, "promote": 10, "transfer_leader": 2}
    assert grown[0].meta is not None and grown[0].meta.voters == (1, 2, 3)
    assert sorted(map_leader_counts(grown[0], grown[1], [1, 2, 3]).values()) == [1, 1, 2]
    # Keeping one replica, partitions spread instead: 2/1/1 replicas, moved not copied twice.
    counts, spread = _reshape(state, [1, 2, 3], 4, 1)
    assert counts == {"add_learner": 4, "promote": 4, "remove_replica": 2, "transfer_leader": 2}
    assert sorted(map_replica_counts(spread[0], [1, 2, 3]).values()) == [1, 1, 2]


def test_replacing_a_node_moves_its_leadership_first() -> None:
    pmap = initial([1, 2, 3], 1, 3, [1, 2, 3, 4])
    steps = plan(pmap, {1: 3, 0: 1}, Target.of([1, 2, 4], 1, 3)).steps
    assert steps == (
        TransferLeader(1, 1),  # n3 is leaving: its leadership goes before anything else
        AddLearner(0, 4),  # the meta group next: it holds the map
        Promote(0, 4),
        RemoveReplica(0, 3),
        AddLearner(1, 4),
        Promote(1, 4),
        RemoveReplica(1, 3),
    )


def test_unknown_leaders_are_made_known_before_removals() -> None:
    pmap = initial([1, 2, 3], 3, 3, [1, 2, 3, 4])
    steps, states = run_plan(pmap, {}, Target.of([1, 2, 4], 3, 3))
    for i, step in enumerate(steps.steps):
        if isinstance(step, RemoveReplica):
            before_pmap, before_leaders = states[i]
            desc = before_pmap.meta if step.partition == 0 else before_pmap.partitions[step.partition]
            assert desc is not None
            if step.node in desc.voters:
                assert before_leaders.get(step.partition) not in (None, step.node)
