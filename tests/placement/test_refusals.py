"""Impossible targets are refused up front, with a reason an operator can act on."""

from __future__ import annotations

import dataclasses

import pytest

from kvcluster.keyspace import HASH_SPACE, KeyRange, PartitionMap
from kvcluster.placement import MAX_PARTITIONS, Refusal, Target, check_target, plan, refusal_reason

from .support import first_voter_leaders, initial


def _map() -> PartitionMap:
    return initial([1, 2, 3], 4, 3, [1, 2, 3, 4, 5])


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (Target.of([], 4, 3), "the target has no nodes"),
        (Target.of([1, 2, 3], 4, 0), "replicas must be at least 1, got 0"),
        (Target.of([1, 2, 3], 4, 4), r"replicas \(4\) cannot exceed the number of target nodes \(3\)"),
        (Target.of([1, 2, 3], 0, 3), "partitions must be at least 1, got 0"),
        (Target.of([1, 2, 3], -2, 3), "partitions must be at least 1, got -2"),
        (Target.of([1, 2, 9], 4, 3), r"unknown node id\(s\) 9: a node must join"),
        (Target.of([0, 1, 2], 4, 3), "node ids must be positive integers, got 0"),
        (Target.of([1, 2, 3], HASH_SPACE + 1, 3), "cannot be reached: the ranges can be split into at most"),
        (Target.of([1, 2, 3], MAX_PARTITIONS + 1, 3), "exceeds the supported maximum"),
    ],
)
def test_impossible_targets_are_refused_with_a_reason(target: Target, reason: str) -> None:
    pmap = _map()
    with pytest.raises(Refusal, match=reason) as info:
        plan(pmap, first_voter_leaders(pmap), target)
    assert info.value.reason == str(info.value)
    assert refusal_reason(pmap, target) == info.value.reason


def test_inconsistent_maps_are_refused() -> None:
    pmap = _map()
    target = Target.of([1, 2, 3], 4, 3)
    no_meta = dataclasses.replace(pmap, meta=None)
    assert refusal_reason(no_meta, target) == "the map has no meta group; bootstrap the cluster first"
    gap = dataclasses.replace(pmap, partitions=dict(pmap.partitions))
    first = gap.partitions[1]
    gap.partitions[1] = dataclasses.replace(first, range=KeyRange(1, first.range.end))
    assert "do not tile the hash space" in (refusal_reason(gap, target) or "")
    voterless = dataclasses.replace(pmap, partitions=dict(pmap.partitions))
    voterless.partitions[2] = dataclasses.replace(voterless.partitions[2], voters=())
    assert refusal_reason(voterless, target) == "partition(s) 2 have no voters and cannot change membership"


def test_reachable_targets_pass() -> None:
    pmap = _map()
    for target in (Target.of([1], 1, 1), Target.of([1, 2, 3, 4, 5], 64, 5), Target.of([4, 5], 3, 2)):
        check_target(pmap, target)
        assert refusal_reason(pmap, target) is None


def test_target_accepts_any_iterable_of_nodes() -> None:
    assert Target([3, 1, 2], 4, 3) == Target(frozenset({1, 2, 3}), 4, 3)  # type: ignore[arg-type]
