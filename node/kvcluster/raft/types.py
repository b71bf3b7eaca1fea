"""Values that cross the boundary between the Raft core and its runtime.

Everything here is plain data: the runtime encodes messages for the wire,
writes entries and hard state to storage, and the core never sees either.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum


class EntryKind(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        return len(self.data) + 24


class MessageType(IntEnum):
    APPEND = 1
    APPEND_RESPONSE = 2
    VOTE = 3
    VOTE_RESPONSE = 4
    PRE_VOTE = 5
    PRE_VOTE_RESPONSE = 6
    HEARTBEAT = 7
    HEARTBEAT_RESPONSE = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class ConfState:
    """Membership as of the last applied configuration change."""

    voters: frozenset[int]
    learners: frozenset[int] = frozenset()

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    def to_lists(self) -> tuple[list[int], list[int]]:
        return sorted(self.voters), sorted(self.learners)

    @classmethod
    def of(cls, voters: Iterable[int], learners: Iterable[int] = ()) -> ConfState:
        return cls(frozenset(voters), frozenset(learners))

    def changed(self, cc: ConfChange) -> ConfState:
        """The membership after ``cc``; the core and the state machine must agree on it exactly.

        A change that would leave no voter is ignored (proposals refuse it, so
        it can only come from a corrupt log, and a group without voters can
        never recover).
        """
        voters, learners = set(self.voters), set(self.learners)
        if cc.kind == ConfChangeKind.ADD_VOTER:
            learners.discard(cc.node)
            voters.add(cc.node)
        elif cc.kind == ConfChangeKind.ADD_LEARNER:
            if cc.node not in voters:
                learners.add(cc.node)
        else:
            voters.discard(cc.node)
            learners.discard(cc.node)
        return ConfState.of(voters, learners) if voters else self


class ConfChangeKind(IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE = 2


_CC_HEAD = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One-server membership change.

    ``context`` is opaque to the core; the runtime carries the partition's new
    descriptor in it so that every replica learns the new epoch at the same
    log index as the membership itself.
    """

    kind: ConfChangeKind
    node: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CC_HEAD.pack(self.kind, self.node) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        kind, node = _CC_HEAD.unpack_from(data)
        return cls(ConfChangeKind(kind), node, bytes(data[_CC_HEAD.size :]))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(slots=True)
class Message:
    type: MessageType
    to: int
    sender: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None
    transfer: bool = False
    """On VOTE / PRE_VOTE: a leadership transfer, which may break a leader lease."""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message depending on it leaves."""

    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    leader: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine applied ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """One batch of work for the runtime, to be carried out in this order.

    1. persist ``snapshot`` (with its data), ``entries`` and ``hard_state``
       (entries replace any stored entries from the first one's index on);
    2. send ``messages``;
    3. apply ``committed_entries`` and serve ``read_states``;
    4. call ``RaftNode.advance(ready)``.

    While the runtime carries a Ready out (say, awaiting its disk write) it may
    go on stepping messages, ticking and proposing; what that produces goes
    into the next Ready. Everything handed out here stays valid: entries
    overwritten meanwhile are simply not marked stable by ``advance``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    @property
    def must_sync(self) -> bool:
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


class RaftError(Exception):
    """A request the core cannot take in its current state; nothing changed."""


class NotLeader(RaftError):
    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    pass
