"""The operations a reshape is made of, and their pure simulation.

Every step is one thing the cluster can do atomically (one Raft membership
change, one leadership transfer, one split or merge), so the executor can run
a plan one step at a time and re-plan from whatever the cluster really looks
like afterwards. ``apply_step`` mirrors what the cluster does to the map, epoch
bumps included, so tests and dry runs see exactly the states the cluster will
pass through.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kvcluster.keyspace import (
    META_PARTITION,
    PartitionDescriptor,
    PartitionMap,
    merge_descriptors,
    split_descriptor,
)

Leaders = Mapping[int, int | None]
"""Partition id -> node believed to lead it; missing or ``None`` when unknown."""


class InvalidStep(ValueError):
    """A step that the cluster would reject (or that would be unsafe) on this map."""


@dataclass(frozen=True, slots=True)
class AddLearner:
    """Start copying a partition to a node without giving it a vote yet.

    A learner catches up without counting for quorum, so adding one never
    makes the group less available.
    """

    kind: ClassVar[str] = "add_learner"
    partition: int
    node: int

    def __str__(self) -> str:
        return f"add learner n{self.node} to p{self.partition}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "partition": self.partition, "node": self.node}


@dataclass(frozen=True, slots=True)
class Promote:
    """Turn a caught-up learner into a voter."""

    kind: ClassVar[str] = "promote"
    partition: int
    node: int

    def __str__(self) -> str:
        return f"promote n{self.node} in p{self.partition}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "partition": self.partition, "node": self.node}


@dataclass(frozen=True, slots=True)
class RemoveReplica:
    """Take a voter or learner out of a partition (never its leader)."""

    kind: ClassVar[str] = "remove_replica"
    partition: int
    node: int

    def __str__(self) -> str:
        return f"remove n{self.node} from p{self.partition}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "partition": self.partition, "node": self.node}


@dataclass(frozen=True, slots=True)
class TransferLeader:
    """Hand leadership of a partition to one of its voters."""

    kind: ClassVar[str] = "transfer_leader"
    partition: int
    node: int

    def __str__(self) -> str:
        return f"transfer leadership of p{self.partition} to n{self.node}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "partition": self.partition, "node": self.node}


@dataclass(frozen=True, slots=True)
class Split:
    """Halve a partition's range; the right half becomes ``new_id``.

    The id is part of the step (not chosen by the executor) so that the plan
    and the cluster agree on which id the following steps talk about.
    """

    kind: ClassVar[str] = "split"
    partition: int
    new_id: int

    def __str__(self) -> str:
        return f"split p{self.partition} (right half becomes p{self.new_id})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "partition": self.partition, "new_id": self.new_id}


@dataclass(frozen=True, slots=True)
class Merge:
    """Fold ``right`` into its left neighbour ``left``; ``right``'s id retires."""

    kind: ClassVar[str] = "merge"
    left: int
    right: int

    def __str__(self) -> str:
        return f"merge p{self.right} into p{self.left}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "left": self.left, "right": self.right}


Step = AddLearner | Promote | RemoveReplica | TransferLeader | Split | Merge

_MEMBER_STEPS: dict[str, type[AddLearner | Promote | RemoveReplica | TransferLeader]] = {
    cls.kind: cls for cls in (AddLearner, Promote, RemoveReplica, TransferLeader)
}


def step_from_dict(d: Mapping[str, Any]) -> Step:
    """Inverse of ``Step.to_dict``, for plans that travel through JSON."""
    kind = d.get("kind")
    if kind in _MEMBER_STEPS:
        return _MEMBER_STEPS[str(kind)](partition=int(d["partition"]), node=int(d["node"]))
    if kind == Split.kind:
        return Split(partition=int(d["partition"]), new_id=int(d["new_id"]))
    if kind == Merge.kind:
        return Merge(left=int(d["left"]), right=int(d["right"]))
    raise ValueError(f"unknown step kind {kind!r}")


@dataclass(frozen=True, slots=True)
class Plan:
    """An ordered list of steps; empty when the cluster already matches the target."""

    steps: tuple[Step, ...] = ()

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def first(self) -> Step | None:
        return self.steps[0] if self.steps else None

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps]}


def copy_map(pmap: PartitionMap) -> PartitionMap:
    """A map that can be changed without touching ``pmap`` (descriptors are immutable)."""
    return PartitionMap(
        partitions=dict(pmap.partitions), nodes=dict(pmap.nodes), meta=pmap.meta, last_id=pmap.last_id
    )


def known_leader(desc: PartitionDescriptor, leaders: Leaders) -> int | None:
    """The leader, if it is known and still a voter (a stale hint is as good as none)."""
    leader = leaders.get(desc.id)
    return leader if leader is not None and leader in desc.voters else None


def next_partition_id(pmap: PartitionMap) -> int:
    """What ``PartitionMap.allocate_id`` would return, without mutating the map."""
    return max([pmap.last_id, *pmap.partitions]) + 1


def _descriptor(pmap: PartitionMap, pid: int) -> PartitionDescriptor:
    if pid == META_PARTITION:
        if pmap.meta is None:
            raise InvalidStep("the map has no meta group")
        return pmap.meta
    try:
        return pmap.partitions[pid]
    except KeyError:
        raise InvalidStep(f"no partition {pid}") from None


def _store(pmap: PartitionMap, desc: PartitionDescriptor) -> None:
    if desc.id == META_PARTITION:
        pmap.meta = desc
    else:
        pmap.partitions[desc.id] = desc


def _change_members(pmap: PartitionMap, leaders: dict[int, int | None], step: Step) -> None:
    assert isinstance(step, AddLearner | Promote | RemoveReplica)
    desc = _descriptor(pmap, step.partition)
    voters, learners = set(desc.voters), set(desc.learners)
    node = step.node
    if isinstance(step, AddLearner):
        if node in voters or node in learners:
            raise InvalidStep(f"{step}: n{node} already holds p{desc.id}")
        learners.add(node)
    elif isinstance(step, Promote):
        if node not in learners:
            raise InvalidStep(f"{step}: n{node} is not a learner of p{desc.id}")
        learners.discard(node)
        voters.add(node)
    elif node in learners:
        learners.discard(node)
    elif node in voters:
        if leaders.get(desc.id) == node:
            raise InvalidStep(f"{step}: n{node} leads p{desc.id}; transfer leadership first")
        if len(voters) == 1:
            raise InvalidStep(f"{step}: n{node} is the last voter of p{desc.id}")
        voters.discard(node)
    else:
        raise InvalidStep(f"{step}: n{node} does not hold p{desc.id}")
    _store(pmap, desc.with_members(voters, learners))


def apply_step(
    pmap: PartitionMap, leaders: Leaders, step: Step
) -> tuple[PartitionMap, dict[int, int | None]]:
    """The map and leaders after ``step``, as the cluster would produce them.

    Inputs are left untouched. Raises ``InvalidStep`` for anything the cluster
    would refuse, including removing a partition's known leader, so a planner
    bug shows up in simulation rather than as an unavailable partition.
    """
    out = copy_map(pmap)
    new_leaders: dict[int, int | None] = dict(leaders)
    if isinstance(step, AddLearner | Promote | RemoveReplica):
        _change_members(out, new_leaders, step)
    elif isinstance(step, TransferLeader):
        desc = _descriptor(out, step.partition)
        if step.node not in desc.voters:
            raise InvalidStep(f"{step}: n{step.node} is not a voter of p{desc.id}")
        new_leaders[desc.id] = step.node
    elif isinstance(step, Split):
        desc = _descriptor(out, step.partition)
        if desc.id == META_PARTITION:
            raise InvalidStep("the meta group is never split")
        if step.new_id < next_partition_id(out):
            raise InvalidStep(f"{step}: id {step.new_id} may already have been used")
        try:
            left, right = split_descriptor(desc, step.new_id)
        except ValueError as exc:
            raise InvalidStep(f"{step}: {exc}") from None
        out.partitions[left.id] = left
        out.partitions[right.id] = right
        out.last_id = step.new_id
        new_leaders[right.id] = new_leaders.get(left.id)
    else:
        left_desc, right_desc = _descriptor(out, step.left), _descriptor(out, step.right)
        if META_PARTITION in (step.left, step.right):
            raise InvalidStep("the meta group is never merged")
        if left_desc.range.end != right_desc.range.start:
            raise InvalidStep(f"{step}: p{step.left} is not the left neighbour of p{step.right}")
        if set(left_desc.voters) != set(right_desc.voters) or set(left_desc.learners) != set(
            right_desc.learners
        ):
            raise InvalidStep(f"{step}: voters and learners differ")
        out.partitions[left_desc.id] = merge_descriptors(left_desc, right_desc)
        del out.partitions[right_desc.id]
        new_leaders.pop(right_desc.id, None)
    return out, new_leaders
