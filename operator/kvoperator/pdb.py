"""The PodDisruptionBudget that keeps voluntary evictions from breaking a quorum."""

from __future__ import annotations

from kvoperator.resources import Body, ClusterRef, object_meta, selector_labels, with_hash


def max_unavailable(replicas: int) -> int:
    """How many nodes may be evicted at once without any partition losing its quorum.

    A partition with ``r`` voters needs ``floor(r/2) + 1`` of them, so it
    survives ``floor((r-1)/2)`` losses. Replicas of one partition sit on
    distinct nodes, so taking down that many *nodes* — whichever they are —
    removes at most that many voters from any partition. The count does not
    depend on the number of nodes, which is why the budget is expressed as
    ``maxUnavailable`` (it stays right while the cluster scales) rather than
    ``minAvailable``. Pods already down for other reasons count against the
    budget too, which is what we want: evictions stop while a node is sick.

    The meta group has ``min(nodes, max(3, replicas))`` voters, never fewer
    than a data partition, so it tolerates at least as much.

    With one replica the answer is 0: every eviction takes a partition away,
    so ``kubectl drain`` blocks until someone scales or accepts the outage.

    During a reshape the planner adds a voter before removing one, so a
    partition briefly has ``r+1`` voters; ``r+1`` voters minus
    ``floor((r-1)/2)`` still meets the ``r+1`` quorum. The caller passes the
    smaller of the old and new replica counts while a reshape runs.
    """
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    return (replicas - 1) // 2


def build_pdb(ref: ClusterRef, replicas: int) -> Body:
    return with_hash(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": object_meta(ref, ref.pdb, "disruption-budget"),
            "spec": {
                "maxUnavailable": max_unavailable(replicas),
                "selector": {"matchLabels": selector_labels(ref)},
            },
        }
    )
