"""The exact building blocks: even splits and merges, and the balanced assignment."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcluster.keyspace import HASH_SPACE, KeyRange, PartitionDescriptor, PartitionMap
from kvcluster.placement import Target, apply_step, plan
from kvcluster.placement.flow import balanced_assignment
from kvcluster.placement.shape import merge_groups

from .support import first_voter_leaders, initial, run_plan


def _parts(sizes: list[int]) -> list[PartitionDescriptor]:
    total = sum(sizes)
    bounds = [HASH_SPACE * sum(sizes[:i]) // total for i in range(len(sizes) + 1)]
    return [
        PartitionDescriptor(i + 1, KeyRange(bounds[i], bounds[i + 1]), 1, (1,)) for i in range(len(sizes))
    ]


def _range_sizes(pmap: PartitionMap) -> list[int]:
    return [d.range.size for d in pmap]


def test_four_to_six_splits_two_of_the_four() -> None:
    pmap = initial([1, 2, 3], 4, 3)
    steps, states = run_plan(pmap, first_voter_leaders(pmap), Target.of([1, 2, 3], 6, 3))
    splits = [s for s in steps if s.kind == "split"]
    assert [(s.partition, s.new_id) for s in splits] == [(1, 5), (2, 6)]  # type: ignore[union-attr]
    quarter = HASH_SPACE // 4
    assert sorted(_range_sizes(states[-1][0])) == [quarter // 2] * 4 + [quarter] * 2


def test_six_back_to_four_undoes_the_splits() -> None:
    pmap = initial([1, 2, 3], 4, 3)
    leaders = first_voter_leaders(pmap)
    _, states = run_plan(pmap, leaders, Target.of([1, 2, 3], 6, 3))
    steps, states = run_plan(*states[-1], Target.of([1, 2, 3], 4, 3))
    assert [s.kind for s in steps if s.kind != "transfer_leader"] == ["merge", "merge"]
    assert _range_sizes(states[-1][0]) == [HASH_SPACE // 4] * 4


def test_merge_groups_of_equal_ranges_are_even() -> None:
    groups = merge_groups(_parts([1] * 16), 4)
    assert [len(g) for g in groups] == [4, 4, 4, 4]
    groups = merge_groups(_parts([1] * 6), 4)
    assert sorted(len(g) for g in groups) == [1, 1, 2, 2]
    groups = merge_groups(_parts([2, 1, 1, 2, 1, 1]), 4)
    assert [len(g) for g in groups] == [1, 2, 1, 2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=8), st.data())
def test_merge_groups_is_the_leftmost_best_cut(sizes: list[int], data: st.DataObject) -> None:
    parts = _parts(sizes)
    count = data.draw(st.integers(1, len(parts)))
    groups = merge_groups(parts, count)
    assert [p for g in groups for p in g] == parts and all(groups)

    def cost(cut_ends: tuple[int, ...]) -> int:
        return sum(abs(parts[j].range.start * count - (i + 1) * HASH_SPACE) for i, j in enumerate(cut_ends))

    options = list(itertools.combinations(range(1, len(parts)), count - 1))
    best = min(options, key=lambda o: (cost(o), o))
    ends = tuple(itertools.accumulate(len(g) for g in groups))[:-1]
    assert ends == best


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.data())
def test_balanced_assignment_is_optimal_and_unique(rows: int, cols: int, data: st.DataObject) -> None:
    demand = data.draw(st.integers(1, cols))
    costs = [[data.draw(st.none() | st.integers(0, 5)) for _ in range(cols)] for _ in range(rows)]
    total = rows * demand
    lower, upper = total // cols, -(-total // cols)

    def feasible() -> list[tuple[tuple[int, ...], ...]]:
        per_row = [
            [
                c
                for c in itertools.combinations(range(cols), demand)
                if all(costs[r][x] is not None for x in c)
            ]
            for r in range(rows)
        ]
        out = []
        for choice in itertools.product(*per_row):
            used = [sum(x in c for c in choice) for x in range(cols)]
            if all(lower <= u <= upper for u in used):
                out.append(choice)
        return out

    def total_cost(choice: tuple[tuple[int, ...], ...]) -> int:
        return sum(int(costs[r][x] or 0) for r, c in enumerate(choice) for x in c)

    options = feasible()
    try:
        got = balanced_assignment([demand] * rows, costs, lower, upper)
    except ValueError:
        assert not options
        return
    assert options
    got_choice = tuple(tuple(sorted(r)) for r in got)
    assert got_choice in options
    assert total_cost(got_choice) == min(total_cost(o) for o in options)


def test_replicas_copy_the_smallest_partitions() -> None:
    """With byte estimates, balance is reached by moving the cheapest data."""
    pmap = initial([1, 2, 3], 6, 1, [1, 2, 3, 4])
    leaders = first_voter_leaders(pmap)
    sizes = {1: 900, 2: 800, 3: 5, 4: 700, 5: 600, 6: 7}
    steps = plan(pmap, leaders, Target.of([1, 2, 3, 4], 6, 1), sizes)
    moved = {s.partition for s in steps if s.kind == "add_learner"}  # type: ignore[union-attr]
    assert moved == {3}  # node 4 needs one replica (6 over 4 nodes): the 5-byte partition
    state = (pmap, leaders)
    for s in steps:
        state = apply_step(*state, s)
    assert plan(*state, Target.of([1, 2, 3, 4], 6, 1), sizes).steps == ()
