"""Pure placement planning: which steps take the cluster to a target shape.

Used by ``kvcluster local`` and the operator alike; imports nothing but the
standard library and ``kvcluster.keyspace``, so it runs anywhere the map can be
read.
"""

from .balance import map_leader_counts, map_replica_counts
from .planner import plan
from .steps import (
    AddLearner,
    InvalidStep,
    Leaders,
    Merge,
    Plan,
    Promote,
    RemoveReplica,
    Split,
    Step,
    TransferLeader,
    apply_step,
    step_from_dict,
)
from .target import MAX_PARTITIONS, Refusal, Target, check_target, refusal_reason

__all__ = [
    "MAX_PARTITIONS",
    "AddLearner",
    "InvalidStep",
    "Leaders",
    "Merge",
    "Plan",
    "Promote",
    "Refusal",
    "RemoveReplica",
    "Split",
    "Step",
    "Target",
    "TransferLeader",
    "apply_step",
    "check_target",
    "map_leader_counts",
    "map_replica_counts",
    "plan",
    "refusal_reason",
    "step_from_dict",
]
