"""Key-value operations as plain data, executed on this node's replicas.

The same ``Operation`` is executed locally when this node leads the
partition, or shipped as msgpack to the node that does; the answer comes back
either as a result or as a routing signal that the caller retries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kvcluster.keyspace import META_PARTITION, PartitionDescriptor
from kvcluster.raft import ConfChangeKind
from kvcluster.storage import Command, Delete, Expire, Freeze, Load, Merge, MetaCommand, Put, Split, Unfreeze

from .errors import (
    ApiError,
    BadRequest,
    BusySignal,
    FrozenSignal,
    Internal,
    NotFound,
    NotHereSignal,
    NotLeaderSignal,
    RoutingSignal,
    StaleEpochSignal,
    Timeout,
    Unavailable,
    VersionConflict,
    WrongRangeSignal,
)
from .host import RaftHost


@dataclass(slots=True)
class Operation:
    op: str
    """put | delete | expire | load | get | scan | meta | meta_read | admin"""
    partition: int = 0
    key: bytes = b""
    value: bytes = b""
    if_version: int | None = None
    linearizable: bool = True
    prefix: bytes = b""
    start: bytes = b""
    limit: int = 0
    args: dict[str, Any] | None = None
    """For ``meta`` (a meta command) and ``admin`` (a reshape action on the partition's leader)."""
    rows: list[tuple[bytes, bytes]] | None = None
    """For ``load`` (a restore's batch for one partition)."""

    @property
    def is_write(self) -> bool:
        return self.op in ("put", "delete", "expire")

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Operation:
        return cls(**d)


async def execute_local(host: RaftHost, op: Operation, timeout: float) -> dict[str, Any]:
    """Run ``op`` on this node's replica of ``op.partition``; raises routing signals or API errors."""
    if op.op == "put":
        outcome = await host.propose(op.partition, Put(op.key, op.value, op.if_version), timeout)
    elif op.op == "delete":
        outcome = await host.propose(op.partition, Delete(op.key, op.if_version), timeout)
    elif op.op == "expire":
        outcome = await host.propose(op.partition, Expire(op.key, op.if_version), timeout)
    elif op.op == "load":
        batch = tuple((bytes(k), bytes(v)) for k, v in op.rows or ())
        loaded = await host.propose(op.partition, Load(batch), timeout)
        if loaded.code:
            raise Internal(f"unexpected outcome {loaded.code}")
        answer = loaded.body or {}
        return {
            "loaded": answer.get("loaded", 0),
            "skipped": answer.get("skipped", []),
            "descriptor": loaded.descriptor.to_dict() if loaded.descriptor else None,
        }
    elif op.op == "get":
        row = await host.read(op.partition, op.key, op.linearizable, timeout)
        if row is None:
            return {"found": False}
        return {"found": True, "value": row[0], "version": row[1]}
    elif op.op == "scan":
        desc, rows = await host.scan(op.partition, op.prefix, op.start, op.limit, op.linearizable, timeout)
        return {"descriptor": desc.to_dict(), "rows": [list(r) for r in rows]}
    elif op.op == "meta":
        outcome = await host.propose(META_PARTITION, MetaCommand(op.args or {}), timeout)
        return {"answer": outcome.body}
    elif op.op == "meta_read":
        await host.barrier(META_PARTITION, timeout)
        return {"state": host.meta_state()}
    elif op.op == "admin":
        return await execute_admin(host, op.partition, op.args or {}, timeout)
    else:
        raise ValueError(f"unknown operation {op.op!r}")
    if outcome.code == "version_conflict":
        raise VersionConflict(outcome.version)
    if outcome.code == "not_found":
        raise NotFound("key not found")
    if outcome.code:
        raise Internal(f"unexpected outcome {outcome.code}")
    return {"version": outcome.version}


async def execute_admin(
    host: RaftHost, partition: int, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """One reshape action; membership, split, freeze and merge name the epoch they were planned at."""
    action = args.get("action")
    if action == "progress":
        return host.progress(partition)
    if action == "replica_state":
        return host.replica_state(partition)
    if action == "conf":
        kind = ConfChangeKind[str(args["kind"]).upper()]
        desc = await host.change_membership(partition, kind, int(args["node"]), int(args["epoch"]), timeout)
        return {"descriptor": desc.to_dict()}
    if action == "transfer":
        return {"leader": await host.transfer(partition, int(args["node"]), timeout)}
    if action == "split":
        cmd: Command = Split(int(args["new_id"]), int(args["epoch"]))
    elif action == "freeze":
        cmd = Freeze(int(args["epoch"]))
    elif action == "unfreeze":
        cmd = Unfreeze(int(args["epoch"]))
    elif action == "merge":
        cmd = Merge(
            int(args["right"]), int(args["right_epoch"]), int(args["right_index"]), int(args["epoch"])
        )
    else:
        raise BadRequest(f"unknown admin action {action!r}")
    outcome = await host.propose(partition, cmd, timeout)
    if outcome.code == "stale_epoch" and outcome.descriptor is not None:
        raise StaleEpochSignal(outcome.descriptor)
    if outcome.code:
        raise Internal(f"{action} failed: {outcome.code}")
    return {"descriptor": outcome.descriptor.to_dict() if outcome.descriptor else None, "body": outcome.body}


# ---- the wire form of answers ---------------------------------------------------------------------

_ERRORS: dict[str, type[ApiError]] = {
    cls.code: cls for cls in (BadRequest, NotFound, Timeout, Unavailable, Internal)
}


def encode_failure(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, NotLeaderSignal):
        return {"signal": "not_leader", "leader": exc.leader}
    if isinstance(exc, WrongRangeSignal):
        return {"signal": "wrong_range", "descriptors": [d.to_dict() for d in exc.descriptors]}
    if isinstance(exc, NotHereSignal):
        return {"signal": "not_here"}
    if isinstance(exc, FrozenSignal):
        return {"signal": "frozen"}
    if isinstance(exc, StaleEpochSignal):
        return {"signal": "stale_epoch", "descriptor": exc.descriptor.to_dict()}
    if isinstance(exc, RoutingSignal):
        return {"signal": "busy", "message": str(exc)}
    if isinstance(exc, VersionConflict):
        return {"error": "version_conflict", "current_version": exc.current_version}
    if isinstance(exc, ApiError):
        return {"error": exc.code, "message": exc.message}
    return {"error": "internal", "message": repr(exc)}


def decode_failure(d: dict[str, Any]) -> Exception:
    signal = d.get("signal")
    if signal == "not_leader":
        return NotLeaderSignal(int(d.get("leader") or 0))
    if signal == "wrong_range":
        return WrongRangeSignal([PartitionDescriptor.from_dict(x) for x in d.get("descriptors", [])])
    if signal == "not_here":
        return NotHereSignal("not here")
    if signal == "frozen":
        return FrozenSignal("frozen")
    if signal == "stale_epoch":
        return StaleEpochSignal(PartitionDescriptor.from_dict(d["descriptor"]))
    if signal == "busy":
        return BusySignal(str(d.get("message", "busy")))
    code = str(d.get("error", "internal"))
    if code == "version_conflict":
        return VersionConflict(int(d.get("current_version", 0)))
    return _ERRORS.get(code, Internal)(str(d.get("message", code)))
