"""The change history a watch reads (issue 10): one row per applied write, by revision.

Rows are written in the apply transaction, so the history is exactly as
durable and as replicated as the keys: every replica records the same rows
at the same revisions, and a crash loses none that was applied.

Revisions are per partition, but at every point of the hash space they only
grow: a split's right half inherits the parent's revision counter and a merge
continues from the larger of the two. So "all changes at hashes [s, e) after
revision r" is a well-defined question as long as [s, e) lies inside one
partition, which is what a watch asks of each partition it spans.

The history is bounded: a partition keeps the changes of its last
``keep`` revisions. ``AppliedState.history_floor`` records the point below which
it has been dropped; a watch that wants to resume below it is told it was
compacted. Compaction depends only on the revision, so replicas agree.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from kvcluster.keyspace import KeyRange

from .schema import prefix_upper_bound, to_db_hash

DEFAULT_KEEP = 100_000
"""Revisions of history a partition keeps (``kvcluster node --watch-history``)."""
SNAPSHOT_HISTORY = 10_000
"""Revisions of history a snapshot carries to a new replica: enough for watchers that are
nearly current, without making a snapshot many times the size of the keys."""
READ_BYTES = 4 << 20
"""One history read stops after about this many bytes of values (or ``limit`` rows)."""


class Change(IntEnum):
    PUT = 1
    DELETE = 2
    EXPIRE = 3


PUT, DELETE, EXPIRE = int(Change.PUT), int(Change.DELETE), int(Change.EXPIRE)
"""As plain ints, for the rows the apply path builds (no enum lookup per write)."""

Row = tuple[int, int, bytes, int, bytes | None]
"""(revision, hash as stored, key, change as a plain int, value)."""


def record(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    # OR REPLACE: a leftover of a replica this node once held must not make an apply fail.
    conn.executemany(
        "INSERT OR REPLACE INTO history(revision, hash, key, change, value) VALUES (?, ?, ?, ?, ?)", rows
    )


def drop_range(conn: sqlite3.Connection, rng: KeyRange, upto: int | None = None) -> None:
    """Forget the history of ``rng`` (up to and including revision ``upto``, or all of it)."""
    if rng.size == 0:
        return
    bounds = (to_db_hash(rng.start), to_db_hash(rng.end - 1))
    if upto is None:
        conn.execute("DELETE FROM history WHERE hash >= ? AND hash <= ?", bounds)
    else:
        conn.execute("DELETE FROM history WHERE revision <= ? AND hash >= ? AND hash <= ?", (upto, *bounds))


def compaction_point(revision: int, floor: int, keep: int) -> int | None:
    """The new floor when enough history has piled up beyond ``keep`` to be worth a delete.

    Deleting in steps of a tenth of ``keep`` (at most 1000 revisions) keeps
    each delete small while running only once per step.
    """
    step = max(1, min(1000, keep // 10))
    return revision - keep if revision - floor >= keep + step else None


def export_rows(conn: sqlite3.Connection, rng: KeyRange, after: int) -> list[list[Any]]:
    if rng.size == 0:
        return []
    cur = conn.execute(
        "SELECT revision, key, change, value FROM history WHERE revision > ? AND hash >= ? AND hash <= ? "
        "ORDER BY revision",
        (after, to_db_hash(rng.start), to_db_hash(rng.end - 1)),
    )
    return [[int(r), bytes(k), int(c), None if v is None else bytes(v)] for r, k, c, v in cur]


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Which keys a watch wants: one key, or every key with a prefix (empty: all keys)."""

    key: bytes | None = None
    prefix: bytes = b""


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    change: Change
    key: bytes
    value: bytes | None


def read(
    conn: sqlite3.Connection, start: int, end: int, after: int, upto: int, keys: KeyFilter, limit: int
) -> list[Event]:
    """Changes at hashes [start, end) with ``after`` < revision <= ``upto``, in revision order.

    Stops after ``limit`` rows or about ``READ_BYTES`` of values, but never
    inside a revision: the caller resumes after the last revision returned, and
    after a merge one revision may hold a change of each former half (both
    counted on from the same split). ``limit`` must be positive.
    """
    sql = "SELECT revision, change, key, value FROM history WHERE revision > ? AND revision <= ? "
    sql += "AND hash >= ? AND hash <= ?"
    args: list[Any] = [after, upto, to_db_hash(start), to_db_hash(end - 1)]
    if keys.key is not None:
        sql += " AND key = ?"
        args.append(keys.key)
    elif keys.prefix:
        sql += " AND key >= ?"
        args.append(keys.prefix)
        upper = prefix_upper_bound(keys.prefix)
        if upper is not None:
            sql += " AND key < ?"
            args.append(upper)
    sql += " ORDER BY revision"
    out: list[Event] = []
    size = 0
    for rev, change, raw_key, value in conn.execute(sql, args):
        if out and (len(out) >= limit or size >= READ_BYTES) and rev != out[-1].revision:
            break
        key = bytes(raw_key)
        out.append(Event(int(rev), Change(change), key, None if value is None else bytes(value)))
        size += len(key) + (len(value) if value is not None else 0)
    return out
