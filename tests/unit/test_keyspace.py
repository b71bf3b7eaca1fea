"""Hash ranges, descriptors and the epoch rule that lets stale reports arrive in any order."""

from __future__ import annotations

import itertools
import random

import pytest

from kvcluster.keyspace import (
    HASH_SPACE,
    KeyRange,
    PartitionMap,
    key_hash,
    merge_descriptors,
    split_descriptor,
)


def test_slices_tile_the_space_and_split_halves() -> None:
    for count in (1, 3, 7, 16):
        slices = KeyRange.slices(count)
        assert slices[0].start == 0 and slices[-1].end == HASH_SPACE
        assert all(a.end == b.start for a, b in itertools.pairwise(slices))
    left, right = KeyRange(0, HASH_SPACE).split()
    assert left.size == right.size == HASH_SPACE // 2
    with pytest.raises(ValueError):
        KeyRange(5, 6).split()
    with pytest.raises(ValueError):
        KeyRange(10, 5)


def test_key_hash_is_stable_and_spreads() -> None:
    assert key_hash(b"user/1") == key_hash(b"user/1")
    # 4 partitions, 4000 similar keys: each partition gets a fair share.
    pmap = PartitionMap.initial({1: "a", 2: "b", 3: "c"}, 4, 3)
    counts = dict.fromkeys(pmap.partitions, 0)
    for i in range(4000):
        desc = pmap.lookup_key(f"user/{i}".encode())
        assert desc is not None
        counts[desc.id] += 1
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_initial_layout_is_balanced_and_deterministic() -> None:
    for nodes, parts, reps in ((3, 4, 3), (5, 8, 3), (5, 7, 2), (4, 16, 3), (1, 2, 1)):
        ids = {i: f"http://n{i}" for i in range(1, nodes + 1)}
        pmap = PartitionMap.initial(ids, parts, reps)
        assert (
            pmap.to_dict() == PartitionMap.initial(dict(reversed(list(ids.items()))), parts, reps).to_dict()
        )
        counts = {n: sum(n in d.voters for d in pmap.partitions.values()) for n in ids}
        assert max(counts.values()) - min(counts.values()) <= 1, (nodes, parts, reps, counts)
        assert all(len(set(d.voters)) == reps for d in pmap.partitions.values())
        assert (
            pmap.covers_space()
            and pmap.meta is not None
            and len(pmap.meta.voters) == min(nodes, max(3, reps))
        )


def test_update_keeps_the_newest_descriptor_whatever_the_order() -> None:
    """Reports of splits, merges and membership changes may arrive late, twice or shuffled."""
    truth = PartitionMap.initial({1: "a", 2: "b", 3: "c"}, 2, 3)
    history = list(truth.partitions.values())
    current = dict(truth.partitions)
    rng = random.Random(7)
    for _ in range(30):
        pid = rng.choice(sorted(current))
        desc = current[pid]
        action = rng.choice(["split", "members", "merge"])
        if action == "split" and desc.range.size > 4:
            new_id = max([*current, *(d.id for d in history)]) + 1
            left, right = split_descriptor(desc, new_id)
            del current[pid]
            current[left.id], current[right.id] = left, right
            history += [left, right]
        elif action == "members":
            changed = desc.with_members(desc.voters)
            current[pid] = changed
            history.append(changed)
        else:
            right_desc = next((d for d in current.values() if d.range.start == desc.range.end), None)
            if right_desc is None:
                continue
            merged = merge_descriptors(desc, right_desc)
            del current[right_desc.id]
            current[pid] = merged
            history.append(merged)
    for seed in range(20):
        shuffled = history * 2
        random.Random(seed).shuffle(shuffled)
        pmap = PartitionMap(nodes=dict(truth.nodes), meta=truth.meta)
        for d in shuffled:
            pmap.update(d)
        assert pmap.partitions == current, f"seed {seed}"
        assert pmap.covers_space()


def test_map_round_trips_through_json_safe_dicts() -> None:
    pmap = PartitionMap.initial({1: "a", 2: "b", 3: "c"}, 4, 3)
    d = pmap.to_dict()
    assert all(isinstance(p["end"], str) for p in d["partitions"])  # 2**64 fits neither msgpack nor JS
    assert PartitionMap.from_dict(d).to_dict() == d
