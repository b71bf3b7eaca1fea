"""The node's SQLite database: one file, all partitions, WAL.

One database (not one per partition) so that a loop turn of the multi-raft
host commits every partition's entries and applied commands with a single
fsync, and so that a split needs no data copy: a partition's keys are the
rows whose hash falls in its range.

The schema is created with sqlite-utils (readable, introspectable); the hot
paths use the standard library's sqlite3 directly.
"""

from __future__ import annotations

import sqlite3
from enum import StrEnum
from pathlib import Path

import sqlite_utils

SCHEMA_VERSION = 1
HASH_OFFSET = 1 << 63
"""SQLite integers are signed 64-bit; hashes are stored shifted so ranges compare in order."""


class Durability(StrEnum):
    FSYNC = "fsync"
    """synchronous=FULL: every commit is fsynced before a write is acknowledged."""
    RELAXED = "relaxed"
    """synchronous=NORMAL: survives a crash of the process, not of the machine."""


def to_db_hash(h: int) -> int:
    return h - HASH_OFFSET


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """Smallest byte string greater than every string starting with ``prefix``."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


def create_schema(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    db.table("node").create({"key": str, "value": str}, pk="key", not_null=["value"], if_not_exists=True)
    db.table("replica").create(
        {
            "partition": int,
            "term": int,
            "vote": int,
            "commit_index": int,
            "applied_index": int,
            "applied_term": int,
            "snap_index": int,
            "snap_term": int,
            "voters": str,
            "learners": str,
            "descriptor": str,
            "revision": int,
            "state": bytes,
        },
        pk="partition",
        not_null=["term", "vote", "commit_index", "applied_index", "applied_term", "snap_index", "snap_term"],
        defaults={
            "term": 0,
            "vote": 0,
            "commit_index": 0,
            "applied_index": 0,
            "applied_term": 0,
            "snap_index": 0,
            "snap_term": 0,
            "revision": 0,
        },
        if_not_exists=True,
    )
    db.table("raft_log").create(
        {"partition": int, "idx": int, "term": int, "kind": int, "data": bytes},
        pk=("partition", "idx"),
        not_null=["term", "kind", "data"],
        if_not_exists=True,
    )
    db.table("kv").create(
        {"key": bytes, "hash": int, "value": bytes, "version": int},
        pk="key",
        not_null=["hash", "value", "version"],
        if_not_exists=True,
    )
    db.table("tombstone").create(
        {"partition": int, "epoch": int}, pk="partition", not_null=["epoch"], if_not_exists=True
    )
    db.table("kv").create_index(["hash"], index_name="kv_hash", if_not_exists=True)
    # The watch history (history.py): a rowid table, as values may be large, indexed by
    # (revision, hash) because reads scan forward from a revision. Added without a version
    # bump: an older database simply gains the table (and a history that starts now).
    conn.execute(
        "CREATE TABLE IF NOT EXISTS history (revision INTEGER NOT NULL, hash INTEGER NOT NULL, "
        "key BLOB NOT NULL, change INTEGER NOT NULL, value BLOB)"
    )
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS history_revision ON history(revision, hash)")
    conn.execute(
        "INSERT OR IGNORE INTO node(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )


def connect(path: Path, durability: Durability, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection in autocommit mode; transactions are explicit BEGIN/COMMIT."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {path} to WAL (got {mode})")
    conn.execute("PRAGMA synchronous = " + ("FULL" if durability == Durability.FSYNC else "NORMAL"))
    return conn
