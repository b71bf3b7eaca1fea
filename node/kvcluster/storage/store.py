"""The node's durable store: one writer thread, one transaction per batch.

The multi-raft host hands over one ``Batch`` per loop turn holding every
partition's new entries, hard states, snapshots to install and committed
entries to apply. The writer thread commits it as a single transaction with a
single fsync (group commit) while the event loop keeps accepting requests,
which pile up into the next batch. Reads run on a separate connection on the
event loop: WAL lets them proceed while the writer commits.

A failure to write is not survivable: the caller must stop serving (see
``server.host``), because continuing would acknowledge what is not on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvcluster.keyspace import KeyRange, PartitionDescriptor
from kvcluster.raft import Entry, EntryKind, HardState, SnapshotMeta

from . import history
from .replicastate import AppliedState, ReplicaRecord
from .schema import Durability, connect, create_schema, prefix_upper_bound, to_db_hash
from .snapshots import export_snapshot, install_snapshot
from .statemachine import (
    ApplyResult,
    StateMachine,
    delete_replica,
    insert_replica,
    load_applied,
    save_applied,
)

log = logging.getLogger(__name__)

WAL_SIZE_LIMIT = 16 << 20
INLINE_MAX_ENTRIES = 64
"""At most this many entries in a batch committed on the event loop's thread (see ``Store._inline``)."""


@dataclass(slots=True)
class GroupWrite:
    """One partition's share of a batch, in the order the Ready contract asks."""

    partition: int
    snapshot: tuple[SnapshotMeta, bytes] | None = None
    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState | None = None
    committed: list[Entry] = field(default_factory=list)
    compact: tuple[int, int] | None = None
    vote_changed: bool = False
    """Term or vote moved: these must be on disk before any message depending on them leaves."""

    def __bool__(self) -> bool:
        return bool(
            self.entries
            or self.snapshot is not None
            or self.hard_state is not None
            or self.committed
            or self.compact
        )

    @property
    def must_sync(self) -> bool:
        """Log entries, snapshots and votes need an fsync before acknowledging; applies do not.

        The state machine can always be rebuilt from the log, so a batch that
        only applies committed entries (and notes the commit index, which a
        restarted node relearns from its leader) is committed without fsync; the
        next synced commit covers it too, as WAL frames are synced in order.
        """
        return bool(self.entries) or self.snapshot is not None or self.vote_changed


@dataclass(slots=True)
class NewReplica:
    """A replica created here: at bootstrap (empty log) or from a snapshot."""

    state: AppliedState
    term: int
    snap_index: int
    snap_term: int
    snapshot: bytes | None = None


@dataclass(slots=True)
class Batch:
    create: list[NewReplica] = field(default_factory=list)
    groups: list[GroupWrite] = field(default_factory=list)
    destroy: list[tuple[int, int]] = field(default_factory=list)
    """(partition, epoch) of replicas removed from their group: data dropped, id tombstoned."""
    export: list[int] = field(default_factory=list)
    """Partitions to cut a snapshot of after the commit, for followers that need one."""
    node_values: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.create or self.groups or self.destroy or self.export or self.node_values)

    @property
    def must_sync(self) -> bool:
        return bool(self.create or self.destroy or self.node_values) or any(g.must_sync for g in self.groups)


@dataclass(slots=True)
class BatchResult:
    applied: dict[int, ApplyResult] = field(default_factory=dict)
    installed: dict[int, AppliedState] = field(default_factory=dict)
    snapshots: dict[int, tuple[SnapshotMeta, bytes]] = field(default_factory=dict)
    created: list[ReplicaRecord] = field(default_factory=list)
    """Replicas born of a split in this batch, for the host to start."""


class Store:
    def __init__(
        self,
        data_dir: Path,
        durability: Durability = Durability.FSYNC,
        history_keep: int = history.DEFAULT_KEEP,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "kv.db"
        self.durability = durability
        self._writer = connect(self.path, durability)
        create_schema(self._writer)
        # SQLite's own checkpoints (every 1000 WAL pages, inside a commit) keep the WAL at a few MB.
        # A background checkpointer was tried: under steady load it fell behind and the WAL grew
        # by tens of MB a minute, which a small data volume does not survive.
        self._writer.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        self._reader = connect(self.path, durability)
        self._writer_thread = _WriterThread(self._write)
        self._sm = StateMachine(self._writer, history_keep)
        self._states: dict[int, AppliedState] = {}
        self._synchronous_full = durability == Durability.FSYNC
        self.synced_batches = 0
        self.closed = False

    # ---- node-level facts ----------------------------------------------------------------

    def get_node_value(self, key: str) -> str | None:
        row = self._reader.execute("SELECT value FROM node WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_node_values(self, values: dict[str, str]) -> None:
        with _transaction(self._writer):
            self._writer.executemany(
                "INSERT OR REPLACE INTO node(key, value) VALUES (?, ?)", list(values.items())
            )

    # ---- start-up ----------------------------------------------------------------------------

    def load(self) -> list[ReplicaRecord]:
        """Every replica's record; each row's applied state is written back whole once.

        A database from an older version lacks columns of the state that loading
        fills with defaults (the watch history's floor). Writing them now keeps
        the row equal to the state in memory, which the apply path relies on when
        it writes only the columns that moved (``save_applied``).
        """
        partitions = [p for (p,) in self._writer.execute("SELECT partition FROM replica ORDER BY partition")]
        with _transaction(self._writer):
            records = [self._record(self._writer, p) for p in partitions]
            for rec in records:
                save_applied(self._writer, rec.applied)
        return records

    def _record(self, conn: sqlite3.Connection, partition: int) -> ReplicaRecord:
        term, vote, commit, snap_index, snap_term = conn.execute(
            "SELECT term, vote, commit_index, snap_index, snap_term FROM replica WHERE partition = ?",
            (partition,),
        ).fetchone()
        state = load_applied(conn, partition)
        assert state is not None
        entries = [
            Entry(int(t), int(i), EntryKind(k), bytes(d))
            for i, t, k, d in conn.execute(
                "SELECT idx, term, kind, data FROM raft_log WHERE partition = ? AND idx > ? ORDER BY idx",
                (partition, snap_index),
            )
        ]
        _check_contiguous(partition, snap_index, entries)
        last = entries[-1].index if entries else snap_index
        commit = max(min(int(commit), last), state.applied_index)
        self._states[partition] = state
        return ReplicaRecord(state, HardState(term, vote, commit), snap_index, snap_term, entries)

    def is_tombstoned(self, partition: int, epoch: int) -> bool:
        row = self._reader.execute("SELECT epoch FROM tombstone WHERE partition = ?", (partition,)).fetchone()
        return row is not None and int(row[0]) >= epoch

    # ---- the write path ------------------------------------------------------------------------

    async def write(self, batch: Batch) -> BatchResult:
        if self._inline(batch):
            return self._write(batch)
        return await self._writer_thread.submit(batch)

    def _inline(self, batch: Batch) -> bool:
        """Whether ``batch`` is cheap enough to commit on the event loop's own thread.

        A batch that needs no fsync and only applies a few committed entries
        (the turn after a commit, at low load) takes tens of microseconds;
        handing it to the writer thread and back costs more than that in CPU
        and latency. The host runs one batch at a time, so the writer connection
        is never used from two threads at once. Anything that syncs, or may be
        large (snapshots, compaction, creating or dropping replicas), still goes
        to the writer thread.
        """
        if self.durability == Durability.FSYNC and batch.must_sync:
            return False
        if batch.create or batch.destroy or batch.export or batch.node_values:
            return False
        budget = INLINE_MAX_ENTRIES
        for g in batch.groups:
            if g.snapshot is not None or g.compact is not None:
                return False
            budget -= len(g.entries) + len(g.committed)
            if budget < 0:
                return False
        return True

    def write_sync(self, batch: Batch) -> BatchResult:
        return self._writer_thread.submit_sync(batch)

    def _write(self, batch: Batch) -> BatchResult:
        result = BatchResult()
        conn = self._writer
        sync = self.durability == Durability.FSYNC and batch.must_sync
        if sync != self._synchronous_full:
            conn.execute("PRAGMA synchronous = " + ("FULL" if sync else "NORMAL"))
            self._synchronous_full = sync
        if sync:
            self.synced_batches += 1
        with _transaction(conn):
            if batch.node_values:
                conn.executemany(
                    "INSERT OR REPLACE INTO node(key, value) VALUES (?, ?)", list(batch.node_values.items())
                )
            for partition, epoch in batch.destroy:
                delete_replica(conn, partition, epoch, drop_data=True)
                self._states.pop(partition, None)
            for new in batch.create:
                exists = conn.execute("SELECT 1 FROM replica WHERE partition = ?", (new.state.partition,))
                if exists.fetchone():
                    continue  # created meanwhile (a duplicate request): the existing replica wins
                insert_replica(
                    conn, new.state, term=new.term, snap_index=new.snap_index, snap_term=new.snap_term
                )
                self._states[new.state.partition] = new.state
                if new.snapshot is not None:
                    meta = SnapshotMeta(new.snap_index, new.snap_term, new.state.conf)
                    self._states[new.state.partition] = install_snapshot(
                        conn, new.state.partition, meta, new.snapshot
                    )
                    result.installed[new.state.partition] = self._states[new.state.partition]
            for g in batch.groups:
                if g.partition not in self._states:
                    continue  # destroyed earlier in this batch or before
                self._write_group(conn, g, result)
        for partition in batch.export:
            if partition in self._states:
                result.snapshots[partition] = export_snapshot(conn, partition)
        return result

    def _write_group(self, conn: sqlite3.Connection, g: GroupWrite, result: BatchResult) -> None:
        p = g.partition
        if g.snapshot is not None:
            meta, data = g.snapshot
            self._states[p] = install_snapshot(conn, p, meta, data)
            result.installed[p] = self._states[p]
        if g.entries:
            conn.execute("DELETE FROM raft_log WHERE partition = ? AND idx >= ?", (p, g.entries[0].index))
            conn.executemany(
                "INSERT INTO raft_log(partition, idx, term, kind, data) VALUES (?, ?, ?, ?, ?)",
                [(p, e.index, e.term, int(e.kind), e.data) for e in g.entries],
            )
        if g.hard_state is not None:
            hs = g.hard_state
            conn.execute(
                "UPDATE replica SET term = ?, vote = ?, commit_index = ? WHERE partition = ?",
                (hs.term, hs.vote, hs.commit, p),
            )
        if g.committed:
            applied = self._sm.apply(self._states[p], g.committed)
            self._states[p] = applied.state
            result.applied[p] = applied
            for child in applied.created:
                result.created.append(self._record(conn, child))
            for gone in applied.destroyed:
                self._states.pop(gone, None)
        if g.compact is not None:
            index, term = g.compact
            conn.execute("DELETE FROM raft_log WHERE partition = ? AND idx <= ?", (p, index))
            conn.execute(
                "UPDATE replica SET snap_index = ?, snap_term = ? WHERE partition = ? AND snap_index < ?",
                (index, term, p, index),
            )

    # ---- reads (event-loop thread) ------------------------------------------------------------

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        row = self._reader.execute("SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()
        return (bytes(row[0]), int(row[1])) if row else None

    def scan(self, rng: KeyRange, prefix: bytes, start: bytes, limit: int) -> list[tuple[bytes, bytes, int]]:
        """Keys of one partition's range, in key order, from ``start`` (inclusive), with ``prefix``."""
        if rng.size == 0 or limit <= 0:
            return []
        lo = max(prefix, start)
        sql = "SELECT key, value, version FROM kv WHERE key >= ? AND hash >= ? AND hash <= ?"
        args: list[Any] = [lo, to_db_hash(rng.start), to_db_hash(rng.end - 1)]
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            sql += " AND key < ?"
            args.append(upper)
        sql += " ORDER BY key LIMIT ?"
        args.append(limit)
        return [(bytes(k), bytes(v), int(ver)) for k, v, ver in self._reader.execute(sql, args)]

    def history(
        self, partition: int, start: int, end: int, after: int, keys: history.KeyFilter, limit: int
    ) -> tuple[AppliedState, list[history.Event]] | None:
        """A replica's applied state and its changes at hashes [start, end) after ``after``, up to it.

        ``end`` is clipped to the replica's range; nothing is read when the range
        does not hold ``start``.

        One read transaction, so the changes are exactly those up to the
        revision returned (later commits are not half in it) and a compaction
        cannot slip between checking the floor and reading. None when the
        replica is gone; no changes when ``after`` is below the floor (the
        caller compares).
        """
        conn = self._reader
        conn.execute("BEGIN")
        try:
            state = load_applied(conn, partition)
            if state is None:
                return None
            rng = state.descriptor.range
            if after < state.history_floor or not rng.contains(start):
                return state, []
            # Clipped to the range inside this transaction: past its end, hashes belong to
            # another partition, whose revisions are not comparable with this one's.
            end = min(end, rng.end)
            return state, history.read(conn, start, end, after, state.revision, keys, limit)
        finally:
            conn.execute("COMMIT")

    def stats(self) -> dict[str, int]:
        keys = self._reader.execute("SELECT COUNT(*) FROM kv").fetchone()[0]
        log = self._reader.execute("SELECT COUNT(*) FROM raft_log").fetchone()[0]
        return {"keys": int(keys), "log_entries": int(log)}

    def descriptor_rows(self) -> list[PartitionDescriptor]:
        return [
            PartitionDescriptor.from_dict(json.loads(d))
            for (d,) in self._reader.execute("SELECT descriptor FROM replica ORDER BY partition")
        ]

    def close(self, timeout: float | None = None) -> None:
        """Finish the batches handed over, then close; ``timeout`` bounds the wait for them.

        A writer still busy after ``timeout`` keeps its connection: closing it
        under a running statement is not safe, and the process is exiting anyway.
        """
        if self.closed:
            return
        self.closed = True
        if not self._writer_thread.stop(timeout):
            log.warning("the writer thread was still committing after %ss; leaving it to the exit", timeout)
            return
        self._reader.close()
        self._writer.close()


class _WriterThread:
    """The one thread that commits batches, fed by a queue, answering on the caller's loop.

    It stands in for a one-worker ``ThreadPoolExecutor``: measured on this
    2-core machine, the executor's submit (work item, locks, idle-thread
    bookkeeping) and its future chaining cost about 90 µs of CPU per hop; a
    C-implemented ``SimpleQueue`` and one ``call_soon_threadsafe`` cost about
    50. The host hands over a batch every loop turn, so the difference is paid
    hundreds of times a second. Batches run strictly in submission order.
    """

    def __init__(self, write: Callable[[Batch], BatchResult]) -> None:
        self._write = write
        self._queue: queue.SimpleQueue[tuple[Batch, Callable[[_Outcome], None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kv-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> asyncio.Future[BatchResult]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[BatchResult] = loop.create_future()

        def settle(outcome: _Outcome) -> None:
            # Runs on the writer thread: the waiting loop settles its own future.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_settle, fut, outcome)

        self._queue.put((batch, settle))
        return fut

    def submit_sync(self, batch: Batch) -> BatchResult:
        done: Future[BatchResult] = Future()
        self._queue.put((batch, lambda outcome: _settle(done, outcome)))
        return done.result()

    def stop(self, timeout: float | None = None) -> bool:
        """Finish what was submitted, then end the thread; False if it had not ended by ``timeout``."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            batch, settle = item
            try:
                outcome: _Outcome = self._write(batch)
            except BaseException as exc:  # handed to the waiter, who stops the node (fail-stop)
                outcome = exc
            settle(outcome)


_Outcome = BatchResult | BaseException


def _settle(fut: asyncio.Future[BatchResult] | Future[BatchResult], outcome: _Outcome) -> None:
    if fut.done():
        return  # the waiter was cancelled
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def _check_contiguous(partition: int, snap_index: int, entries: list[Entry]) -> None:
    for offset, e in enumerate(entries):
        if e.index != snap_index + 1 + offset:
            raise RuntimeError(f"partition {partition}: raft log has a gap before index {e.index}")
