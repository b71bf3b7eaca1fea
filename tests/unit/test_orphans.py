"""Which local replicas a node may drop when the map says it no longer holds them.

The case that matters: a merge is applied by the left replica on each node,
reading the right replica's rows on that same node. A node whose left replica
lags must keep the merged-away right one until the merge is applied there, or
the node stops with "cannot merge: local replica is missing" (seen in the
torture reshape runs before this rule).
"""

from __future__ import annotations

from kvcluster.keyspace import (
    EMPTY_RANGE,
    META_PARTITION,
    PartitionDescriptor,
    PartitionMap,
    merge_descriptors,
    split_descriptor,
)
from kvcluster.server.mapsync import orphans

NODE = 1


def two_partitions() -> tuple[PartitionDescriptor, PartitionDescriptor]:
    pmap = PartitionMap.initial({1: "a", 2: "b", 3: "c"}, 2, 3)
    return pmap.partitions[1], pmap.partitions[2]


def map_of(*descs: PartitionDescriptor) -> PartitionMap:
    return PartitionMap(
        partitions={d.id: d for d in descs},
        meta=PartitionDescriptor(META_PARTITION, EMPTY_RANGE, 1, (1, 2, 3)),
    )


def test_merged_away_replica_waits_for_the_local_left_replica_to_apply_the_merge() -> None:
    left, right = two_partitions()
    merged = merge_descriptors(left, right)
    truth = map_of(merged)
    # The left replica here has not applied the merge yet: the right one must stay.
    assert orphans(truth, {1: left, 2: right}, set(), NODE) == []
    # Once it has (the merge itself drops the right replica), or caught up by snapshot, it may go.
    assert orphans(truth, {1: merged, 2: right}, set(), NODE) == [(2, right.epoch)]


def test_merged_away_replica_waits_through_a_split_before_the_merge() -> None:
    left, right = two_partitions()
    a, b = split_descriptor(left, 3)  # the left splits, then its right half absorbs `right`
    merged = merge_descriptors(b, right)
    truth = map_of(a, merged)
    assert orphans(truth, {1: left, 2: right}, set(), NODE) == []
    assert orphans(truth, {1: a, 3: b, 2: right}, set(), NODE) == []
    assert orphans(truth, {1: a, 3: merged, 2: right}, set(), NODE) == [(2, right.epoch)]


def test_replica_moved_off_this_node_goes_at_once_unless_it_leads() -> None:
    left, right = two_partitions()
    moved = right.with_members((2, 3, 4))
    truth = map_of(left, moved)
    assert orphans(truth, {1: left, 2: right}, set(), NODE) == [(2, moved.epoch)]
    assert orphans(truth, {1: left, 2: right}, {2}, NODE) == []
    # A lagging neighbour does not hold back a replica the map moved away.
    assert orphans(map_of(left.with_members((1, 2, 3, 4)), moved), {1: left, 2: right}, set(), NODE) == [
        (2, moved.epoch)
    ]


def test_merged_away_replica_goes_when_no_local_replica_can_absorb_it() -> None:
    left, right = two_partitions()
    merged = merge_descriptors(left, right)
    # This node never held the left side at the merge: nothing here will read the right rows.
    assert orphans(map_of(merged), {2: right}, set(), NODE) == [(2, right.epoch)]


def test_meta_replica_is_dropped_only_when_the_map_moves_it() -> None:
    left, right = two_partitions()
    meta = PartitionDescriptor(META_PARTITION, EMPTY_RANGE, 1, (1, 2, 3))
    truth = map_of(left, right)
    truth.meta = meta.with_members((2, 3, 4))
    assert orphans(truth, {META_PARTITION: meta, 1: left, 2: right}, set(), NODE) == [
        (META_PARTITION, meta.epoch + 1)
    ]
    truth.meta = meta
    assert orphans(truth, {META_PARTITION: meta, 1: left, 2: right}, set(), NODE) == []
