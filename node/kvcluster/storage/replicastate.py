"""What a replica has applied, and what is persisted of its Raft state.

``AppliedState`` is immutable: the writer thread produces a new one per
batch and the event loop swaps it in after the commit, so readers on the
loop never see a half-applied state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from kvcluster.keyspace import PartitionDescriptor
from kvcluster.raft import ConfState, Entry, HardState

INITIAL_INDEX = 5
INITIAL_TERM = 5
"""Where a partition born of a split starts its log: every replica of the
parent creates it identically at the split, and a log that does not start at
zero lets a leader tell "needs a snapshot" from "has nothing yet"."""


@dataclass(frozen=True, slots=True)
class AppliedState:
    partition: int
    descriptor: PartitionDescriptor
    revision: int = 0
    applied_index: int = 0
    applied_term: int = 0
    frozen: bool = False
    """A partition about to be merged into its left neighbour refuses writes."""
    meta: dict[str, Any] | None = None
    """Only the meta group: the partition map and reshape jobs (issue 4)."""
    history_floor: int = 0
    """The watch history of this range holds every change after this revision (history.py)."""

    @property
    def conf(self) -> ConfState:
        return ConfState.of(self.descriptor.voters, self.descriptor.learners)

    def advanced(self, index: int, term: int, **changes: Any) -> AppliedState:
        return replace(self, applied_index=index, applied_term=term, **changes)


@dataclass(slots=True)
class ReplicaRecord:
    """Everything needed to rebuild a replica after a restart."""

    applied: AppliedState
    hard_state: HardState
    snap_index: int
    snap_term: int
    entries: list[Entry] = field(default_factory=list)
