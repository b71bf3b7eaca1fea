"""Where replicas and leaders should end up.

The end layout is decided once, exactly, before any step is chosen: replicas
so that every target node holds ``floor`` or ``ceil`` of the mean while as few
bytes as possible are copied, then leaders so that every node leads ``floor``
or ``ceil`` of the mean while as few leaderships as possible move. Steps then
only ever walk towards that layout, which is what keeps plans short (nothing
moves twice) and re-planning stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kvcluster.keyspace import PartitionDescriptor, PartitionMap, meta_replica_count

from .flow import balanced_assignment
from .steps import Leaders, known_leader
from .target import Target


@dataclass(frozen=True, slots=True)
class Group:
    """A partition of the end state and the current partitions that will form it.

    ``id`` is the leftmost member's id: a merge keeps the left id, so the
    group's id (and its leader hint) survive every merge on the way.
    """

    id: int
    members: tuple[PartitionDescriptor, ...]


def floor_ceil(total: int, bins: int) -> tuple[int, int]:
    """Per-bin bounds of the most even spread: what "balanced" means here.

    Every node then sits within one of the mean, and no two nodes differ by
    more than one. (A looser "within one of the mean" band would allow 2, 1,
    1, 1, 0 for five partitions on five nodes: one copy saved, one idle node.)
    """
    return total // bins, -(-total // bins)


def replica_layout(
    groups: Sequence[Group], sizes: Mapping[int, int], target: Target
) -> dict[int, frozenset[int]]:
    """End replica set of every group.

    Placing a group on a node costs the bytes of every member that node does
    not hold yet (a learner counts as holding: its copy is under way), plus
    one so that moving even an empty partition is never free. The cheapest
    balanced layout therefore keeps every replica that can stay and moves the
    smallest partitions when balance needs something to move. The extra one is
    per (group, node), not per member, so merging two members that agree on
    the node leaves the cost unchanged and the layout stable.
    """
    nodes = sorted(target.nodes)
    lo, hi = floor_ceil(len(groups) * target.replicas, len(nodes))
    costs: list[list[int | None]] = []
    for group in groups:
        row: list[int | None] = []
        for node in nodes:
            lacking = [sizes[m.id] for m in group.members if node not in m.replicas]
            row.append(sum(lacking) + 1 if lacking else 0)
        costs.append(row)
    chosen = balanced_assignment([target.replicas] * len(groups), costs, lo, hi)
    return {g.id: frozenset(nodes[c] for c in cols) for g, cols in zip(groups, chosen, strict=True)}


def leader_layout(
    groups: Sequence[Group], layout: Mapping[int, frozenset[int]], leaders: Leaders, target: Target
) -> dict[int, int]:
    """End leader of every group, among its end voters.

    A balanced leader layout always exists once replicas are balanced: the
    fractional one (each voter leads 1/R of its partition) gives every node
    between floor(P/N) and ceil(P/N) leaders, and flows with integer bounds
    have integral optima. Keeping current leaders where balance allows means
    fewer transfers.
    """
    nodes = sorted(target.nodes)
    lo, hi = floor_ceil(len(groups), len(nodes))
    costs: list[list[int | None]] = []
    for group in groups:
        current = known_leader(group.members[0], leaders)
        costs.append([None if n not in layout[group.id] else int(n != current) for n in nodes])
    chosen = balanced_assignment([1] * len(groups), costs, lo, hi)
    return {g.id: nodes[cols[0]] for g, cols in zip(groups, chosen, strict=True)}


def meta_layout(
    meta: PartitionDescriptor, leaders: Leaders, target: Target, layout: Mapping[int, frozenset[int]]
) -> frozenset[int]:
    """End voters of the meta group.

    Ranks the meta voters that stay first (its leader before the others),
    then its learners, then the target nodes with the fewest data replicas,
    and keeps the top ``meta_replica_count``. Adding or promoting a chosen
    node only moves it up the ranking, so re-planning keeps the same set.
    """
    count = meta_replica_count(len(target.nodes), target.replicas)
    leader = known_leader(meta, leaders)
    load = replica_counts(layout.values(), target.nodes)
    voters = sorted((n for n in meta.voters if n in target.nodes), key=lambda n: (n != leader, n))
    learners = sorted(n for n in meta.learners if n in target.nodes)
    others = sorted((n for n in target.nodes if n not in meta.replicas), key=lambda n: (load[n], n))
    return frozenset((voters + learners + others)[:count])


def replica_counts(replica_sets: Iterable[Iterable[int]], nodes: Iterable[int]) -> dict[int, int]:
    counts = dict.fromkeys(nodes, 0)
    for replicas in replica_sets:
        for n in replicas:
            counts[n] = counts.get(n, 0) + 1
    return counts


def map_replica_counts(pmap: PartitionMap, nodes: Iterable[int] = ()) -> dict[int, int]:
    """Data replicas (voters and learners) per node; ``nodes`` are reported even at zero."""
    return replica_counts((d.replicas for d in pmap.partitions.values()), nodes)


def map_leader_counts(pmap: PartitionMap, leaders: Leaders, nodes: Iterable[int] = ()) -> dict[int, int]:
    """Known data-partition leaders per node; ``nodes`` are reported even at zero."""
    counts = dict.fromkeys(nodes, 0)
    for desc in pmap.partitions.values():
        leader = known_leader(desc, leaders)
        if leader is not None:
            counts[leader] = counts.get(leader, 0) + 1
    return counts
