"""Commands carried in Raft entries, and what applying one answers.

Commands are msgpack arrays whose first element is the operation code; they
are decoded by every replica at the same log index, so decoding must never
depend on anything but the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from kvcluster.keyspace import PartitionDescriptor


class Op(IntEnum):
    PUT = 1
    DELETE = 2
    EXPIRE = 3
    SPLIT = 10
    FREEZE = 11
    MERGE = 12
    UNFREEZE = 13
    META = 20
    LOAD = 30


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    if_version: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    if_version: int | None = None


@dataclass(frozen=True, slots=True)
class Expire:
    """Delete a lease-bound key because its lease expired (issue 10).

    Applied exactly like a conditional ``Delete``; it is a distinct command so
    that consumers of the log (the watch feed) can tell an expiry from a
    client's delete: this is the hook for ``expire`` events. ``if_version`` is
    the version the key had when it was bound to the lease, so a key written
    again since (without the lease) survives the expiry.
    """

    key: bytes
    if_version: int | None = None


@dataclass(frozen=True, slots=True)
class Load:
    """Blind puts of many rows at once: how a restore seeds a partition (issue 12).

    One entry per batch instead of one per key, so a restore costs one Raft
    round and one fsync per batch. Each row still gets its own revision, as a
    put would. Rows whose key the partition no longer covers (it split since
    the batch was grouped) are skipped, identically on every replica, and
    reported by position so that the caller can send them on.
    """

    rows: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Split:
    """Split the partition at the middle of its range; the right half becomes ``new_id``.

    ``epoch`` is the epoch the proposer saw: a split of a descriptor that has
    changed since (a concurrent split, merge or membership change) is refused
    at apply, identically on every replica.
    """

    new_id: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Freeze:
    """Stop accepting writes so that the left neighbour can absorb this partition."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Unfreeze:
    """Call off a merge that was never proposed to the left side; bumps the epoch.

    The bump matters: a Merge naming the old epoch can then never absorb this
    partition, so a late duplicate cannot undo the decision.
    """

    epoch: int


@dataclass(frozen=True, slots=True)
class Merge:
    """Absorb the frozen right neighbour ``right`` whose last data write is at ``right_index``."""

    right: int
    right_epoch: int
    right_index: int
    epoch: int


@dataclass(frozen=True, slots=True)
class MetaCommand:
    """An update of the meta group's state (issue 4): a JSON-able body."""

    body: dict[str, Any]


Command = Put | Delete | Expire | Load | Split | Freeze | Unfreeze | Merge | MetaCommand


def encode(cmd: Command) -> bytes:
    match cmd:
        case Put(key, value, if_version):
            fields: list[Any] = [Op.PUT, key, value, if_version]
        case Delete(key, if_version):
            fields = [Op.DELETE, key, if_version]
        case Expire(key, if_version):
            fields = [Op.EXPIRE, key, if_version]
        case Split(new_id, epoch):
            fields = [Op.SPLIT, new_id, epoch]
        case Freeze(epoch):
            fields = [Op.FREEZE, epoch]
        case Unfreeze(epoch):
            fields = [Op.UNFREEZE, epoch]
        case Merge(right, right_epoch, right_index, epoch):
            fields = [Op.MERGE, right, right_epoch, right_index, epoch]
        case MetaCommand(body):
            fields = [Op.META, body]
        case Load(rows):
            fields = [Op.LOAD, [list(r) for r in rows]]
    out: bytes = msgpack.packb(fields, use_bin_type=True)
    return out


def decode(data: bytes) -> Command | None:
    """None for an empty entry (a new leader's no-op)."""
    if not data:
        return None
    fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
    op = Op(fields[0])
    if op == Op.PUT:
        return Put(fields[1], fields[2], fields[3])
    if op == Op.DELETE:
        return Delete(fields[1], fields[2])
    if op == Op.EXPIRE:
        return Expire(fields[1], fields[2])
    if op == Op.SPLIT:
        return Split(fields[1], fields[2])
    if op == Op.FREEZE:
        return Freeze(fields[1])
    if op == Op.UNFREEZE:
        return Unfreeze(fields[1])
    if op == Op.MERGE:
        return Merge(fields[1], fields[2], fields[3], fields[4])
    if op == Op.LOAD:
        return Load(tuple((bytes(k), bytes(v)) for k, v in fields[1]))
    return MetaCommand(fields[1])


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying a command answered; ``code`` is empty on success.

    Codes: ``version_conflict`` (``version`` holds the current version),
    ``not_found``, ``wrong_range`` (``descriptor`` holds this partition's
    current descriptor), ``frozen``, ``stale_epoch``.
    """

    version: int = 0
    code: str = ""
    descriptor: PartitionDescriptor | None = None
    body: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.code
