"""Durable state of a node: Raft logs, hard states and the key-value tables in one SQLite file."""

from .commands import Command, Delete, Expire, Freeze, Load, Merge, MetaCommand, Outcome, Put, Split, Unfreeze
from .replicastate import INITIAL_INDEX, INITIAL_TERM, AppliedState, ReplicaRecord
from .schema import Durability
from .snapshots import snapshot_descriptor
from .statemachine import Applied, ApplyResult
from .store import Batch, BatchResult, GroupWrite, NewReplica, Store

__all__ = [
    "INITIAL_INDEX",
    "INITIAL_TERM",
    "Applied",
    "AppliedState",
    "ApplyResult",
    "Batch",
    "BatchResult",
    "Command",
    "Delete",
    "Durability",
    "Expire",
    "Freeze",
    "GroupWrite",
    "Load",
    "Merge",
    "MetaCommand",
    "NewReplica",
    "Outcome",
    "Put",
    "ReplicaRecord",
    "Split",
    "Store",
    "Unfreeze",
    "snapshot_descriptor",
]
