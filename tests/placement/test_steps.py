"""apply_step: the simulation the planner and its tests trust."""

from __future__ import annotations

import pytest

from kvcluster.keyspace import PartitionMap, merge_descriptors, split_descriptor
from kvcluster.placement import (
    AddLearner,
    InvalidStep,
    Merge,
    Plan,
    Promote,
    RemoveReplica,
    Split,
    Step,
    TransferLeader,
    apply_step,
    step_from_dict,
)

from .support import first_voter_leaders, initial


def _cluster() -> tuple[PartitionMap, dict[int, int | None]]:
    pmap = initial([1, 2, 3], 2, 2, [1, 2, 3, 4])
    return pmap, first_voter_leaders(pmap)


def test_membership_steps_bump_the_epoch_once() -> None:
    pmap, leaders = _cluster()
    p1 = pmap.partitions[1]
    assert p1.voters == (1, 2)
    pmap2, _ = apply_step(pmap, leaders, AddLearner(1, 4))
    assert (pmap2.partitions[1].voters, pmap2.partitions[1].learners) == ((1, 2), (4,))
    assert pmap2.partitions[1].epoch == p1.epoch + 1
    pmap3, _ = apply_step(pmap2, leaders, Promote(1, 4))
    assert (pmap3.partitions[1].voters, pmap3.partitions[1].learners) == ((1, 2, 4), ())
    pmap4, _ = apply_step(pmap3, leaders, RemoveReplica(1, 2))
    assert pmap4.partitions[1].voters == (1, 4)
    assert pmap4.partitions[1].epoch == p1.epoch + 3
    # The input is never mutated.
    assert pmap.partitions[1] == p1


def test_meta_membership_is_simulated_too() -> None:
    pmap, leaders = _cluster()
    assert pmap.meta is not None
    out, _ = apply_step(pmap, leaders, AddLearner(0, 4))
    assert out.meta is not None and out.meta.learners == (4,)
    assert out.meta.epoch == pmap.meta.epoch + 1


def test_split_and_merge_match_the_keyspace_helpers() -> None:
    pmap, leaders = _cluster()
    leaders[1] = 2
    split, split_leaders = apply_step(pmap, leaders, Split(1, 3))
    left, right = split_descriptor(pmap.partitions[1], 3)
    assert split.partitions[1] == left and split.partitions[3] == right
    assert split.last_id == 3 and split_leaders[3] == 2  # the right half starts under the same leader
    assert split.covers_space()
    merged, merged_leaders = apply_step(split, split_leaders, Merge(1, 3))
    assert merged.partitions[1] == merge_descriptors(left, right)
    assert 3 not in merged.partitions and 3 not in merged_leaders
    assert merged.last_id == 3  # ids are never reused


def test_transfer_sets_the_leader_without_touching_the_epoch() -> None:
    pmap, leaders = _cluster()
    out, out_leaders = apply_step(pmap, leaders, TransferLeader(1, 2))
    assert out_leaders[1] == 2
    assert out.partitions[1] == pmap.partitions[1]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (AddLearner(1, 1), "already holds"),
        (Promote(1, 4), "not a learner"),
        (RemoveReplica(1, 1), "transfer leadership first"),
        (RemoveReplica(1, 4), "does not hold"),
        (TransferLeader(1, 3), "not a voter"),
        (Split(1, 2), "may already have been used"),
        (Split(0, 9), "never split"),
        (Merge(2, 1), "not the left neighbour"),
        (Merge(1, 2), "voters and learners differ"),
        (AddLearner(7, 1), "no partition 7"),
    ],
)
def test_invalid_steps_are_rejected(step: Step, message: str) -> None:
    pmap, leaders = _cluster()
    with pytest.raises(InvalidStep, match=message):
        apply_step(pmap, leaders, step)


def test_last_voter_cannot_be_removed() -> None:
    pmap = initial([1], 1, 1)
    with pytest.raises(InvalidStep, match="last voter"):
        apply_step(pmap, {}, RemoveReplica(1, 1))


def test_steps_round_trip_through_dicts() -> None:
    steps: list[Step] = [
        AddLearner(1, 2),
        Promote(1, 2),
        RemoveReplica(1, 3),
        TransferLeader(0, 2),
        Split(4, 9),
        Merge(4, 9),
    ]
    assert [step_from_dict(s.to_dict()) for s in steps] == steps
    assert Plan(tuple(steps)).to_dict()["steps"][4] == {"kind": "split", "partition": 4, "new_id": 9}
    assert str(Merge(4, 9)) == "merge p9 into p4"
    with pytest.raises(ValueError, match="unknown step kind"):
        step_from_dict({"kind": "explode"})
