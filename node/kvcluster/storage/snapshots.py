"""Snapshots of one replica: its applied state and the rows of its range.

There is no separate snapshot file: the key-value table *is* the state, so a
snapshot is cut on demand from it, at the applied index, inside one read of
the writer connection (nothing changes underneath it).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgpack

from kvcluster.keyspace import PartitionDescriptor, key_hash
from kvcluster.raft import ConfState, SnapshotMeta

from .replicastate import AppliedState
from .schema import to_db_hash
from .statemachine import delete_range_rows, load_applied, save_applied

FORMAT = 1


def export_snapshot(conn: sqlite3.Connection, partition: int) -> tuple[SnapshotMeta, bytes]:
    state = load_applied(conn, partition)
    if state is None:
        raise KeyError(f"no replica of partition {partition}")
    rows: list[list[Any]] = []
    rng = state.descriptor.range
    if rng.size:
        cur = conn.execute(
            "SELECT key, value, version FROM kv WHERE hash >= ? AND hash <= ? ORDER BY key",
            (to_db_hash(rng.start), to_db_hash(rng.end - 1)),
        )
        rows = [[bytes(k), bytes(v), int(ver)] for k, v, ver in cur]
    body = {
        "format": FORMAT,
        "descriptor": state.descriptor.to_dict(),
        "revision": state.revision,
        "frozen": state.frozen,
        "meta": state.meta,
        "rows": rows,
    }
    meta = SnapshotMeta(state.applied_index, state.applied_term, state.conf)
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return meta, data


def snapshot_descriptor(data: bytes) -> PartitionDescriptor:
    body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return PartitionDescriptor.from_dict(body["descriptor"])


def install_snapshot(
    conn: sqlite3.Connection, partition: int, meta: SnapshotMeta, data: bytes
) -> AppliedState:
    """Replace the replica's range and state by the snapshot's; the caller persists the Raft state.

    Rows of the replica's old range that the new range no longer covers are
    dropped too: after a snapshot the node holds exactly the ranges of the
    replicas it hosts.
    """
    body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if body.get("format") != FORMAT:
        raise ValueError(f"unsupported snapshot format {body.get('format')}")
    desc = PartitionDescriptor.from_dict(body["descriptor"])
    old = load_applied(conn, partition)
    if old is not None:
        delete_range_rows(conn, old.descriptor)
    delete_range_rows(conn, desc)
    conn.executemany(
        "INSERT OR REPLACE INTO kv(key, hash, value, version) VALUES (?, ?, ?, ?)",
        ((k, to_db_hash(key_hash(k)), v, ver) for k, v, ver in body["rows"]),
    )
    state = AppliedState(
        partition=partition,
        descriptor=desc,
        revision=int(body["revision"]),
        applied_index=meta.index,
        applied_term=meta.term,
        frozen=bool(body.get("frozen", False)),
        meta=body.get("meta"),
    )
    if ConfState.of(desc.voters, desc.learners) != meta.conf:
        raise ValueError("snapshot descriptor and membership disagree")
    conn.execute(
        "UPDATE replica SET snap_index = ?, snap_term = ?, commit_index = MAX(commit_index, ?) "
        "WHERE partition = ?",
        (meta.index, meta.term, meta.index, partition),
    )
    conn.execute("DELETE FROM raft_log WHERE partition = ?", (partition,))
    save_applied(conn, state)
    return state


def describe(data: bytes) -> dict[str, Any]:
    """A small summary for logs and the admin API."""
    body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return {"descriptor": body["descriptor"], "rows": len(body["rows"]), "bytes": len(data)}
