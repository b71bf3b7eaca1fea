"""Hash ranges, partition descriptors and the partition map.

Pure data with no I/O: the planner, the node, the client and the operator all
reason about the same shapes, so they live at the bottom of the layer stack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

HASH_SPACE = 1 << 64
META_PARTITION = 0


def key_hash(key: bytes) -> int:
    """Position of a key in the 64-bit hash space.

    blake2b is in the standard library, stable across platforms and versions,
    and spreads similar keys (``user/1``, ``user/2``) evenly.
    """
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True, order=True)
class KeyRange:
    """Half-open range ``[start, end)`` of the hash space."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end <= HASH_SPACE:
            raise ValueError(f"invalid key range [{self.start}, {self.end})")

    @property
    def size(self) -> int:
        return self.end - self.start

    def contains(self, h: int) -> bool:
        return self.start <= h < self.end

    def overlaps(self, other: KeyRange) -> bool:
        return self.start < other.end and other.start < self.end

    def covers(self, other: KeyRange) -> bool:
        return self.start <= other.start and other.end <= self.end

    def midpoint(self) -> int:
        return self.start + self.size // 2

    def split(self) -> tuple[KeyRange, KeyRange]:
        if self.size < 2:
            raise ValueError("range too small to split")
        mid = self.midpoint()
        return KeyRange(self.start, mid), KeyRange(mid, self.end)

    def merge(self, right: KeyRange) -> KeyRange:
        if self.end != right.start:
            raise ValueError("ranges are not adjacent")
        return KeyRange(self.start, right.end)

    @staticmethod
    def slices(count: int) -> list[KeyRange]:
        """Cut the whole space into ``count`` near-equal contiguous slices."""
        if count < 1:
            raise ValueError("need at least one slice")
        bounds = [HASH_SPACE * i // count for i in range(count + 1)]
        return [KeyRange(bounds[i], bounds[i + 1]) for i in range(count)]


EMPTY_RANGE = KeyRange(0, 0)


def hash_str(h: int) -> str:
    """Hash positions travel as hex strings: 2**64 fits neither msgpack nor a JavaScript number."""
    return f"{h:#018x}"


def parse_hash(v: int | str) -> int:
    return v if isinstance(v, int) else int(v, 16)


@dataclass(frozen=True, slots=True)
class PartitionDescriptor:
    """Which replica set serves which range, at which epoch.

    ``voters`` and ``learners`` are node ids. The meta group uses
    ``EMPTY_RANGE``: it owns no keys.
    """

    id: int
    range: KeyRange
    epoch: int
    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()

    @property
    def replicas(self) -> tuple[int, ...]:
        return self.voters + self.learners

    def with_members(self, voters: Iterable[int], learners: Iterable[int] = ()) -> PartitionDescriptor:
        return replace(
            self, voters=tuple(sorted(voters)), learners=tuple(sorted(learners)), epoch=self.epoch + 1
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start": hash_str(self.range.start),
            "end": hash_str(self.range.end),
            "epoch": self.epoch,
            "voters": list(self.voters),
            "learners": list(self.learners),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartitionDescriptor:
        return cls(
            id=int(d["id"]),
            range=KeyRange(parse_hash(d["start"]), parse_hash(d["end"])),
            epoch=int(d["epoch"]),
            voters=tuple(int(v) for v in d["voters"]),
            learners=tuple(int(v) for v in d.get("learners", ())),
        )


def split_descriptor(
    desc: PartitionDescriptor, new_id: int
) -> tuple[PartitionDescriptor, PartitionDescriptor]:
    """Left keeps the id, right gets ``new_id``; both on the same replicas."""
    left_range, right_range = desc.range.split()
    epoch = desc.epoch + 1
    return (
        replace(desc, range=left_range, epoch=epoch),
        replace(desc, id=new_id, range=right_range, epoch=epoch),
    )


def merge_descriptors(left: PartitionDescriptor, right: PartitionDescriptor) -> PartitionDescriptor:
    if set(left.replicas) != set(right.replicas):
        raise ValueError("merge needs identical replica sets")
    return replace(left, range=left.range.merge(right.range), epoch=max(left.epoch, right.epoch) + 1)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    id: int
    url: str
    draining: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "draining": self.draining}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeInfo:
        return cls(id=int(d["id"]), url=str(d["url"]), draining=bool(d.get("draining", False)))


def meta_replica_count(node_count: int, replicas: int) -> int:
    """The meta group tolerates at least as many failures as the data groups."""
    return min(node_count, max(3, replicas))


@dataclass
class PartitionMap:
    """Data partitions sorted by range, the meta group, and the known nodes."""

    partitions: dict[int, PartitionDescriptor] = field(default_factory=dict)
    nodes: dict[int, NodeInfo] = field(default_factory=dict)
    meta: PartitionDescriptor | None = None
    last_id: int = 0
    """Highest partition id ever handed out; ids are never reused, so a stale
    message for a merged-away partition can never reach its successor."""

    @classmethod
    def initial(cls, nodes: Mapping[int, str], partitions: int, replicas: int) -> PartitionMap:
        """The layout every initial node computes identically at bootstrap.

        Replica slots are dealt round-robin over the sorted node ids, so that
        no two nodes hold more than one replica apart.
        """
        ids = sorted(nodes)
        if not ids:
            raise ValueError("no nodes")
        if not 1 <= replicas <= len(ids):
            raise ValueError(f"replicas must be between 1 and the node count ({len(ids)})")
        pmap = cls(nodes={i: NodeInfo(i, nodes[i]) for i in ids})
        for n, rng in enumerate(KeyRange.slices(partitions)):
            voters = tuple(sorted(ids[(n * replicas + j) % len(ids)] for j in range(replicas)))
            pmap.partitions[n + 1] = PartitionDescriptor(n + 1, rng, 1, voters)
        meta_voters = tuple(ids[: meta_replica_count(len(ids), replicas)])
        pmap.meta = PartitionDescriptor(META_PARTITION, EMPTY_RANGE, 1, meta_voters)
        pmap.last_id = partitions
        return pmap

    def __iter__(self) -> Iterator[PartitionDescriptor]:
        return iter(sorted(self.partitions.values(), key=lambda d: d.range.start))

    def lookup(self, h: int) -> PartitionDescriptor | None:
        for desc in self.partitions.values():
            if desc.range.contains(h):
                return desc
        return None

    def lookup_key(self, key: bytes) -> PartitionDescriptor | None:
        return self.lookup(key_hash(key))

    def update(self, desc: PartitionDescriptor) -> bool:
        """Fold in a descriptor learnt from anywhere; return whether it was news.

        The newer truth for any part of the space is the descriptor with the
        higher epoch, so one newer than everything it overlaps replaces them
        all, and one older than anything it overlaps is stale and ignored.
        """
        if desc.id == META_PARTITION:
            if self.meta is None or desc.epoch > self.meta.epoch:
                self.meta = desc
                return True
            return False
        if self.partitions.get(desc.id) == desc:
            return False
        overlapping = [d for d in self.partitions.values() if d.id == desc.id or d.range.overlaps(desc.range)]
        if any(d.epoch >= desc.epoch for d in overlapping):
            return False
        for d in overlapping:
            del self.partitions[d.id]
        self.partitions[desc.id] = desc
        self.last_id = max(self.last_id, desc.id)
        return True

    def covers_space(self) -> bool:
        """True when the data partitions tile the whole hash space with no gap."""
        pos = 0
        for desc in self:
            if desc.range.start != pos:
                return False
            pos = desc.range.end
        return pos == HASH_SPACE

    def allocate_id(self) -> int:
        self.last_id = max([self.last_id, *self.partitions]) + 1
        return self.last_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "partitions": [d.to_dict() for d in self],
            "meta": self.meta.to_dict() if self.meta else None,
            "nodes": [n.to_dict() for n in sorted(self.nodes.values(), key=lambda n: n.id)],
            "last_id": self.last_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartitionMap:
        pmap = cls(
            partitions={int(p["id"]): PartitionDescriptor.from_dict(p) for p in d.get("partitions", ())},
            nodes={int(n["id"]): NodeInfo.from_dict(n) for n in d.get("nodes", ())},
            last_id=int(d.get("last_id", 0)),
        )
        if d.get("meta"):
            pmap.meta = PartitionDescriptor.from_dict(d["meta"])
        return pmap
