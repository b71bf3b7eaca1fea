"""Sans-IO Raft: pure state transitions driven by a runtime (see ``node.RaftNode``)."""

from .log import RaftLog
from .node import Config, RaftNode, Status
from .progress import Progress, ProgressState
from .types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "ConfChange",
    "ConfChangeKind",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MessageType",
    "NotLeader",
    "Progress",
    "ProgressState",
    "ProposalDropped",
    "RaftError",
    "RaftLog",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "Status",
]
