"""A partition's rows read out in bounded batches, all from one point of its history (issue 12).

A backup must not hold a partition in memory (the Raft snapshot in
``snapshots.py`` does, which is fine for installing one replica but not for
streaming a whole cluster to a file), and it must not block the writer. So a
dump opens its own read-only connection and one read transaction: under WAL
the transaction sees the database as of its first read, while the writer
carries on committing, and the applied state read inside it names exactly the
index the rows belong to.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .replicastate import AppliedState
from .schema import Durability, connect, to_db_hash
from .statemachine import load_applied


class PartitionDump:
    """Open at construction; read ``state`` then ``fetch`` until it returns no rows; ``close``."""

    def __init__(self, path: Path, partition: int) -> None:
        self._conn: sqlite3.Connection | None = connect(path, Durability.RELAXED, readonly=True)
        try:
            self._conn.execute("BEGIN")
            state = load_applied(self._conn, partition)
            if state is None:
                raise KeyError(f"no replica of partition {partition}")
            self.state: AppliedState = state
            rng = state.descriptor.range
            self._cursor = self._conn.execute(
                "SELECT key, value, version FROM kv WHERE hash >= ? AND hash <= ? ORDER BY hash, key",
                (to_db_hash(rng.start), to_db_hash(rng.end - 1)) if rng.size else (1, 0),
            )
        except BaseException:
            self.close()
            raise

    def fetch(self, count: int) -> list[tuple[bytes, bytes, int]]:
        return [(bytes(k), bytes(v), int(ver)) for k, v, ver in self._cursor.fetchmany(count)]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
