"""How many partitions, and which ranges: the split and merge half of a reshape.

Both choices depend only on the ranges, never on replicas or leaders, so they
are unaffected by the membership steps interleaved with them, and re-planning
part way through picks the same splits and the same merge groups.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvcluster.keyspace import HASH_SPACE, PartitionDescriptor, PartitionMap


def split_candidate(pmap: PartitionMap) -> PartitionDescriptor:
    """The partition to split next: the largest range, leftmost among equals.

    Always halving the largest range keeps sizes as even as midpoint splits
    allow (4 equal ranges -> 6 splits two of them), and the choice made after
    a split is the one the same rule would have made next before it.
    """
    return min(pmap.partitions.values(), key=lambda d: (-d.range.size, d.range.start))


def merge_groups(parts: Sequence[PartitionDescriptor], count: int) -> list[list[PartitionDescriptor]]:
    """Cut the sorted, space-tiling ``parts`` into ``count`` runs of neighbours to merge.

    The runs end at the existing boundaries closest to the ideal cuts
    ``i * 2**64 / count`` (least summed displacement, each ideal cut its own
    boundary), so merging undoes earlier splits where it can and otherwise
    keeps sizes as even as the boundaries allow. Ties go to the leftmost
    boundary. The cost and the tie-break are in hash-space positions, so after
    merging inside a run the chosen cuts are still the best of the fewer
    boundaries left: merges never make the planner change its mind.
    """
    n = len(parts)
    if not 1 <= count <= n:
        raise ValueError(f"cannot group {n} partitions into {count}")
    if count == n:
        return [[p] for p in parts]
    cuts = count - 1
    bounds = [p.range.start for p in parts[1:]]
    slack = len(bounds) - cuts
    # best[i][s]: least cost of placing cuts i.. when cut i may use bounds[i + s:]
    # (cut i at bounds[i + s'] for some s' >= s); the band keeps it O(count * slack).
    inf = 1 << 200
    best = [[inf] * (slack + 2) for _ in range(cuts + 1)]
    take = [[False] * (slack + 1) for _ in range(cuts)]
    for s in range(slack + 1):
        best[cuts][s] = 0
    for i in range(cuts - 1, -1, -1):
        ideal = (i + 1) * HASH_SPACE
        for s in range(slack, -1, -1):
            here = abs(bounds[i + s] * count - ideal) + best[i + 1][s]
            later = best[i][s + 1]
            # "<=": on a tie prefer the leftmost boundary.
            take[i][s] = here <= later
            best[i][s] = here if here <= later else later
    groups: list[list[PartitionDescriptor]] = []
    start, s = 0, 0
    for i in range(cuts):
        while not take[i][s]:
            s += 1
        end = i + s + 1
        groups.append(list(parts[start:end]))
        start = end
    groups.append(list(parts[start:]))
    return groups
