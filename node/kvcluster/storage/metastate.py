"""The meta group's state machine: the cluster's partition map and its reshape job.

Partition 0 replicates one small document, ``{"map": ..., "job": ...}``.
Commands are JSON-able dicts applied identically by every meta replica; the
partition map folds descriptor reports in with the epoch rule of
``PartitionMap.update``, so reports may arrive late, twice or out of order.
"""

from __future__ import annotations

import copy
from typing import Any

from kvcluster.keyspace import NodeInfo, PartitionDescriptor, PartitionMap

from .leasestate import LEASE_OPS, apply_lease


def initial_state(pmap: PartitionMap) -> dict[str, Any]:
    return {"map": pmap.to_dict(), "job": None}


def apply_meta(state: dict[str, Any] | None, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply one command; returns (new state, answer). Never raises on bad input: it answers an error."""
    new: dict[str, Any] = copy.deepcopy(state) if state else {"map": PartitionMap().to_dict(), "job": None}
    pmap = PartitionMap.from_dict(new["map"])
    op = body.get("op")
    answer: dict[str, Any] = {"ok": True}
    if op == "report":
        updated = 0
        for d in body.get("descriptors", []):
            if pmap.update(PartitionDescriptor.from_dict(d)):
                updated += 1
        answer["updated"] = updated
    elif op == "register_node":
        node = NodeInfo(int(body["id"]), str(body["url"]))
        old = pmap.nodes.get(node.id)
        pmap.nodes[node.id] = NodeInfo(node.id, node.url, old.draining if old else False)
    elif op == "forget_node":
        node_id = int(body["id"])
        holding = [
            d.id
            for d in [*pmap.partitions.values(), *([pmap.meta] if pmap.meta else [])]
            if node_id in d.replicas
        ]
        if holding:
            answer = {"ok": False, "error": f"node {node_id} still holds partitions {holding}"}
        else:
            pmap.nodes.pop(node_id, None)
    elif op == "reserve_id":
        pmap.last_id = max(pmap.last_id, int(body["id"]))
    elif op == "set_job":
        current: dict[str, Any] = new.get("job") or {}
        running = current.get("state") == "running"
        if running and body.get("replace") is not True and current.get("id") != body["job"].get("id"):
            answer = {"ok": False, "error": "a reshape is already running", "job": current}
        else:
            new["job"] = body["job"]
    elif op == "update_job":
        job: dict[str, Any] | None = new.get("job")
        if job is None or job.get("id") != body.get("id"):
            answer = {"ok": False, "error": "no such job"}
        else:
            job.update(body.get("fields", {}))
    elif op in LEASE_OPS:
        answer = apply_lease(new, body)
    else:
        answer = {"ok": False, "error": f"unknown meta command {op!r}"}
    new["map"] = pmap.to_dict()
    answer["job"] = new.get("job")
    return new, answer
