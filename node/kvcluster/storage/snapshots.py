"""Snapshots of one replica: its applied state and the rows of its range.

There is no separate snapshot file: the key-value table *is* the state, so a
snapshot is cut on demand from it, at the applied index, inside one read of
the writer connection (nothing changes underneath it). It also carries the
recent watch history of its range (``history.SNAPSHOT_HISTORY`` revisions), so
that a new replica can serve watchers that are nearly current.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgpack

from kvcluster.keyspace import PartitionDescriptor, key_hash
from kvcluster.raft import ConfState, SnapshotMeta

from . import history
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
    floor = max(state.history_floor, state.revision - history.SNAPSHOT_HISTORY)
    body = {
        "format": FORMAT,
        "descriptor": state.descriptor.to_dict(),
        "revision": state.revision,
        "frozen": state.frozen,
        "meta": state.meta,
        "rows": rows,
        "history_floor": floor,
        "history": history.export_rows(conn, rng, floor),
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
        history.drop_range(conn, old.descriptor.range)
    delete_range_rows(conn, desc)
    history.drop_range(conn, desc.range)
    conn.executemany(
        "INSERT OR REPLACE INTO kv(key, hash, value, version) VALUES (?, ?, ?, ?)",
        ((k, to_db_hash(key_hash(k)), v, ver) for k, v, ver in body["rows"]),
    )
    history.record(
        conn,
        ((rev, to_db_hash(key_hash(k)), k, change, v) for rev, k, change, v in body.get("history", ())),
    )
    revision = int(body["revision"])
    state = AppliedState(
        partition=partition,
        descriptor=desc,
        revision=revision,
        applied_index=meta.index,
        applied_term=meta.term,
        frozen=bool(body.get("frozen", False)),
        meta=body.get("meta"),
        history_floor=int(body.get("history_floor", revision)),  # a snapshot without history: none here
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
