"""What a reshape asks for, and why some asks are refused.

Refusing up front (with a sentence an operator can act on) is better than a
plan that stalls half way: the admin API turns ``Refusal.reason`` into a 400.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvcluster.keyspace import PartitionMap

MAX_PARTITIONS = 1024
"""The planner re-runs after every executed step and its exact balancing grows
roughly with the square of the partition count (about 1 s of CPU at 256, 9 s
at 512); beyond this a reshape would spend more time planning than copying."""


@dataclass(frozen=True, slots=True)
class Target:
    """The desired shape: which nodes, how many data partitions, how many replicas each."""

    nodes: frozenset[int]
    partitions: int
    replicas: int

    def __post_init__(self) -> None:
        # Callers naturally have lists (JSON bodies, CLI flags); a frozenset keeps
        # the target hashable and its node order irrelevant.
        if not isinstance(self.nodes, frozenset):
            object.__setattr__(self, "nodes", frozenset(self.nodes))

    @classmethod
    def of(cls, nodes: Iterable[int], partitions: int, replicas: int) -> Target:
        return cls(frozenset(nodes), partitions, replicas)


class Refusal(ValueError):
    """The target cannot be reached from this map; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


def refusal_reason(pmap: PartitionMap, target: Target) -> str | None:
    """Why ``target`` is impossible from ``pmap``, or ``None`` when it is reachable."""
    if not target.nodes:
        return "the target has no nodes"
    bad = [n for n in target.nodes if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad:
        return f"node ids must be positive integers, got {', '.join(repr(n) for n in bad)}"
    unknown = target.nodes - set(pmap.nodes)
    if unknown:
        return (
            f"unknown node id(s) {_ids(unknown)}: a node must join the cluster before it can hold "
            f"replicas (known: {_ids(pmap.nodes) or 'none'})"
        )
    if target.replicas < 1:
        return f"replicas must be at least 1, got {target.replicas}"
    if target.replicas > len(target.nodes):
        return (
            f"replicas ({target.replicas}) cannot exceed the number of target nodes "
            f"({len(target.nodes)}): two replicas of a partition never share a node"
        )
    if target.partitions < 1:
        return f"partitions must be at least 1, got {target.partitions}"
    if pmap.meta is None:
        return "the map has no meta group; bootstrap the cluster first"
    if not pmap.meta.voters:
        return "the meta group has no voters; it cannot commit a membership change"
    if not pmap.partitions:
        return "the map has no data partitions"
    if not pmap.covers_space():
        return "the data partitions do not tile the hash space; refusing to reshape an inconsistent map"
    voterless = [d.id for d in pmap if not d.voters]
    if voterless:
        return f"partition(s) {_ids(voterless)} have no voters and cannot change membership"
    reachable = sum(d.range.size for d in pmap)
    if target.partitions > reachable:
        return (
            f"partitions ({target.partitions}) cannot be reached: the ranges can be split into at "
            f"most {reachable} partitions"
        )
    if target.partitions > MAX_PARTITIONS:
        return f"partitions ({target.partitions}) exceeds the supported maximum of {MAX_PARTITIONS}"
    return None


def check_target(pmap: PartitionMap, target: Target) -> None:
    """Raise ``Refusal`` when ``target`` is impossible from ``pmap``."""
    reason = refusal_reason(pmap, target)
    if reason is not None:
        raise Refusal(reason)
