"""Applying committed entries to the key-value tables, inside the writer's transaction.

Every replica applies the same entries in the same order and must reach the
same state, so nothing here may depend on anything but the entry bytes and
the replica's own applied state: no clock, no randomness, no node identity.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, replace

from kvcluster.keyspace import PartitionDescriptor, key_hash, merge_descriptors, split_descriptor
from kvcluster.raft import ConfChange, Entry, EntryKind

from . import commands, history
from .commands import Delete, Expire, Freeze, Load, Merge, MetaCommand, Outcome, Put, Split, Unfreeze
from .metastate import apply_meta
from .replicastate import INITIAL_INDEX, INITIAL_TERM, AppliedState
from .schema import to_db_hash


@dataclass(slots=True)
class Applied:
    """The outcome of one entry, for the proposer waiting on (term, index)."""

    term: int
    index: int
    outcome: Outcome
    conf_change: ConfChange | None = None


@dataclass(slots=True)
class ApplyResult:
    state: AppliedState
    applied: list[Applied] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    """Partitions born here (the right half of a split)."""
    destroyed: list[int] = field(default_factory=list)
    """Partitions absorbed here (the right side of a merge)."""


def descriptor_json(desc: PartitionDescriptor) -> str:
    return json.dumps(desc.to_dict())


def read_row(conn: sqlite3.Connection, key: bytes) -> tuple[bytes, int] | None:
    row = conn.execute("SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()
    return (bytes(row[0]), int(row[1])) if row else None


def load_applied(conn: sqlite3.Connection, partition: int) -> AppliedState | None:
    row = conn.execute(
        "SELECT descriptor, revision, applied_index, applied_term, state FROM replica WHERE partition = ?",
        (partition,),
    ).fetchone()
    if row is None:
        return None
    extra = json.loads(row[4]) if row[4] else {}
    return AppliedState(
        partition=partition,
        descriptor=PartitionDescriptor.from_dict(json.loads(row[0])),
        revision=int(row[1]),
        applied_index=int(row[2]),
        applied_term=int(row[3]),
        frozen=bool(extra.get("frozen", False)),
        meta=extra.get("meta"),
        # A database written before the watch history existed has none of the past revisions.
        history_floor=int(extra.get("floor", row[1])),
    )


def save_applied(conn: sqlite3.Connection, state: AppliedState, before: AppliedState | None = None) -> None:
    """Write the replica's applied state; with ``before``, only the columns that moved.

    A run of puts moves only the applied position and the revision. Writing just
    those skips encoding the descriptor and the extra state as JSON (three
    ``json.dumps`` per partition per batch, on every replica), which the apply
    path otherwise paid on each batch.
    """
    if (
        before is not None
        and before.descriptor is state.descriptor
        and before.frozen == state.frozen
        and before.meta is state.meta
        and before.history_floor == state.history_floor
    ):
        conn.execute(
            "UPDATE replica SET applied_index = ?, applied_term = ?, revision = ? WHERE partition = ?",
            (state.applied_index, state.applied_term, state.revision, state.partition),
        )
        return
    extra = {"frozen": state.frozen, "meta": state.meta, "floor": state.history_floor}
    conn.execute(
        "UPDATE replica SET applied_index = ?, applied_term = ?, descriptor = ?, voters = ?, learners = ?, "
        "revision = ?, state = ? WHERE partition = ?",
        (
            state.applied_index,
            state.applied_term,
            descriptor_json(state.descriptor),
            json.dumps(list(state.descriptor.voters)),
            json.dumps(list(state.descriptor.learners)),
            state.revision,
            json.dumps(extra).encode(),
            state.partition,
        ),
    )


def insert_replica(
    conn: sqlite3.Connection,
    state: AppliedState,
    *,
    term: int,
    snap_index: int,
    snap_term: int,
) -> None:
    """Create a replica's row; its Raft log starts empty after ``snap_index``."""
    conn.execute(
        "INSERT INTO replica(partition, term, vote, commit_index, applied_index, applied_term, snap_index, "
        "snap_term, voters, learners, descriptor, revision, state) "
        "VALUES (?, ?, 0, ?, ?, ?, ?, ?, '[]', '[]', '', 0, NULL)",
        (state.partition, term, snap_index, snap_index, snap_term, snap_index, snap_term),
    )
    conn.execute("DELETE FROM tombstone WHERE partition = ?", (state.partition,))
    save_applied(conn, state)


def delete_replica(conn: sqlite3.Connection, partition: int, epoch: int, *, drop_data: bool) -> None:
    """Forget a replica; its id is tombstoned so stale messages cannot resurrect it."""
    if drop_data:
        state = load_applied(conn, partition)
        if state is not None:
            delete_range_rows(conn, state.descriptor)
            history.drop_range(conn, state.descriptor.range)
    conn.execute("DELETE FROM replica WHERE partition = ?", (partition,))
    conn.execute("DELETE FROM raft_log WHERE partition = ?", (partition,))
    conn.execute("INSERT OR REPLACE INTO tombstone(partition, epoch) VALUES (?, ?)", (partition, epoch))


def delete_range_rows(conn: sqlite3.Connection, desc: PartitionDescriptor) -> None:
    if desc.range.size == 0:
        return
    conn.execute(
        "DELETE FROM kv WHERE hash >= ? AND hash <= ?",
        (to_db_hash(desc.range.start), to_db_hash(desc.range.end - 1)),
    )


class StateMachine:
    """Applies one replica's committed entries on the writer connection."""

    def __init__(self, conn: sqlite3.Connection, history_keep: int = history.DEFAULT_KEEP) -> None:
        self.conn = conn
        self.history_keep = history_keep
        self._changes: list[history.Row] = []
        """History rows of the entries being applied, written in one statement at the end."""

    def apply(self, state: AppliedState, entries: list[Entry]) -> ApplyResult:
        """Apply ``entries`` in order; the state is rebuilt once per run of writes, not per entry.

        Writes change only the applied position and the revision, so a run of
        them is tracked in locals and folded into a new ``AppliedState`` before
        any other command (which may read or change the descriptor) and at the end.
        """
        result = ApplyResult(state)
        self._changes = []
        index, term, revision = state.applied_index, state.applied_term, state.revision
        for entry in entries:
            if entry.index <= index:
                continue  # re-delivered after a restart: already in the state
            cmd = commands.decode(entry.data) if entry.kind != EntryKind.CONF_CHANGE else None
            if isinstance(cmd, Put | Delete | Expire):
                outcome, revision = self._apply_write(result.state, revision, cmd)
                index, term = entry.index, entry.term
                result.applied.append(Applied(entry.term, entry.index, outcome))
                continue
            result.state = result.state.advanced(index, term, revision=revision)
            if entry.kind == EntryKind.CONF_CHANGE:
                cc = ConfChange.decode(entry.data)
                result.state = self._apply_conf_change(result.state, cc, entry)
                result.applied.append(Applied(entry.term, entry.index, Outcome(), cc))
            else:
                outcome = Outcome()
                if cmd is not None:
                    outcome = self._apply_command(result, cmd, entry)
                result.state = result.state.advanced(entry.index, entry.term)
                result.applied.append(Applied(entry.term, entry.index, outcome))
            index, term, revision = (
                result.state.applied_index,
                result.state.applied_term,
                result.state.revision,
            )
        if (index, revision) != (result.state.applied_index, result.state.revision):
            result.state = result.state.advanced(index, term, revision=revision)
        if self._changes:
            history.record(self.conn, self._changes)
            self._changes = []
            result.state = self._compact_history(result.state)
        if entries:
            save_applied(self.conn, result.state, before=state)
        return result

    def _compact_history(self, state: AppliedState) -> AppliedState:
        floor = history.compaction_point(state.revision, state.history_floor, self.history_keep)
        if floor is None:
            return state
        history.drop_range(self.conn, state.descriptor.range, upto=floor)
        return replace(state, history_floor=floor)

    def _apply_command(self, result: ApplyResult, cmd: commands.Command, entry: Entry) -> Outcome:
        state = result.state
        match cmd:
            case Put() | Delete() | Expire():
                outcome, revision = self._apply_write(state, state.revision, cmd)
                result.state = state.advanced(state.applied_index, state.applied_term, revision=revision)
                return outcome
            case Split(new_id, epoch):
                if state.frozen or state.descriptor.epoch != epoch:
                    return Outcome(code="stale_epoch", descriptor=state.descriptor)
                left, right = split_descriptor(state.descriptor, new_id)
                result.state = state.advanced(state.applied_index, state.applied_term, descriptor=left)
                if not self._exists_or_tombstoned(new_id):
                    child = AppliedState(
                        new_id,
                        right,
                        revision=state.revision,
                        applied_index=INITIAL_INDEX,
                        applied_term=INITIAL_TERM,
                        history_floor=state.history_floor,  # the history of its range is already here
                    )
                    insert_replica(
                        self.conn, child, term=INITIAL_TERM, snap_index=INITIAL_INDEX, snap_term=INITIAL_TERM
                    )
                    result.created.append(new_id)
                return Outcome(descriptor=left, body={"left": left.to_dict(), "right": right.to_dict()})
            case Freeze(epoch):
                if state.descriptor.epoch != epoch:
                    return Outcome(code="stale_epoch", descriptor=state.descriptor)
                result.state = state.advanced(state.applied_index, state.applied_term, frozen=True)
                return Outcome(body={"index": entry.index})
            case Unfreeze(epoch):
                if not state.frozen or state.descriptor.epoch != epoch:
                    return Outcome(code="stale_epoch", descriptor=state.descriptor)
                desc = replace(state.descriptor, epoch=state.descriptor.epoch + 1)
                result.state = state.advanced(
                    state.applied_index, state.applied_term, frozen=False, descriptor=desc
                )
                return Outcome(descriptor=desc)
            case Merge():
                return self._apply_merge(result, cmd)
            case Load(rows):
                return self._apply_load(result, rows)
            case MetaCommand(body):
                meta, answer = apply_meta(state.meta, body)
                result.state = state.advanced(state.applied_index, state.applied_term, meta=meta)
                return Outcome(body=answer)

    def _apply_write(
        self, state: AppliedState, revision: int, cmd: Put | Delete | Expire
    ) -> tuple[Outcome, int]:
        """One put or delete at the partition's current ``revision``; returns the outcome and the new one.

        ``state`` supplies the descriptor and the frozen flag, which writes never change.
        """
        h = key_hash(cmd.key)
        if not state.descriptor.range.contains(h):
            return Outcome(code="wrong_range", descriptor=state.descriptor), revision
        if state.frozen:
            return Outcome(code="frozen", descriptor=state.descriptor), revision
        if cmd.if_version is not None or isinstance(cmd, Delete | Expire):  # a blind put reads nothing
            row = self.conn.execute("SELECT version FROM kv WHERE key = ?", (cmd.key,)).fetchone()
            current = int(row[0]) if row else 0
            if cmd.if_version is not None and cmd.if_version != current:
                return Outcome(version=current, code="version_conflict"), revision
            if isinstance(cmd, Delete | Expire):
                if row is None:
                    return Outcome(code="not_found"), revision
                revision += 1
                self.conn.execute("DELETE FROM kv WHERE key = ?", (cmd.key,))
                change = history.DELETE if isinstance(cmd, Delete) else history.EXPIRE
                self._changes.append((revision, to_db_hash(h), cmd.key, change, None))
                return Outcome(version=revision), revision
        revision += 1
        db_hash = to_db_hash(h)
        self.conn.execute(
            "INSERT OR REPLACE INTO kv(key, hash, value, version) VALUES (?, ?, ?, ?)",
            (cmd.key, db_hash, cmd.value, revision),
        )
        self._changes.append((revision, db_hash, cmd.key, history.PUT, cmd.value))
        return Outcome(version=revision), revision

    def _apply_load(self, result: ApplyResult, rows: tuple[tuple[bytes, bytes], ...]) -> Outcome:
        state = result.state
        if state.frozen:
            return Outcome(code="frozen", descriptor=state.descriptor)
        revision = state.revision
        skipped: list[int] = []
        params: list[tuple[bytes, int, bytes, int]] = []
        for i, (key, value) in enumerate(rows):
            h = key_hash(key)
            if not state.descriptor.range.contains(h):
                skipped.append(i)
                continue
            revision += 1
            db_hash = to_db_hash(h)
            params.append((key, db_hash, value, revision))
            self._changes.append((revision, db_hash, key, history.PUT, value))
        self.conn.executemany(
            "INSERT OR REPLACE INTO kv(key, hash, value, version) VALUES (?, ?, ?, ?)", params
        )
        result.state = state.advanced(state.applied_index, state.applied_term, revision=revision)
        return Outcome(
            version=revision,
            descriptor=state.descriptor,
            body={"loaded": len(params), "skipped": skipped},
        )

    def _apply_conf_change(self, state: AppliedState, cc: ConfChange, entry: Entry) -> AppliedState:
        """Mirror the membership change into the descriptor, bumping its epoch.

        The new descriptor is computed from the applied one, never taken from
        the proposal, so a split applied between proposal and commit keeps
        its range.
        """
        changed = state.conf.changed(cc)
        if changed == state.conf:
            return state.advanced(entry.index, entry.term)
        desc = state.descriptor.with_members(changed.voters, changed.learners)
        return state.advanced(entry.index, entry.term, descriptor=desc)

    def _apply_merge(self, result: ApplyResult, cmd: Merge) -> Outcome:
        state = result.state
        if state.frozen or state.descriptor.epoch != cmd.epoch:
            return Outcome(code="stale_epoch", descriptor=state.descriptor)
        right = load_applied(self.conn, cmd.right)
        if (
            right is None
            or not right.frozen
            or right.descriptor.epoch != cmd.right_epoch
            or right.applied_index < cmd.right_index
        ):
            # The coordinator checked every replica of the right side before proposing; a replica
            # that fails this has lost durable state, and applying anyway would lose data.
            raise RuntimeError(
                f"partition {state.partition}: cannot merge {cmd.right}: local replica is "
                f"{'missing' if right is None else 'not frozen or not caught up'}"
            )
        merged = merge_descriptors(state.descriptor, right.descriptor)
        result.state = state.advanced(
            state.applied_index,
            state.applied_term,
            descriptor=merged,
            revision=max(state.revision, right.revision),
            history_floor=max(state.history_floor, right.history_floor),
        )
        delete_replica(self.conn, cmd.right, right.descriptor.epoch, drop_data=False)
        result.destroyed.append(cmd.right)
        return Outcome(descriptor=merged, body={"merged": merged.to_dict()})

    def _exists_or_tombstoned(self, partition: int) -> bool:
        return bool(
            self.conn.execute("SELECT 1 FROM replica WHERE partition = ?", (partition,)).fetchone()
            or self.conn.execute("SELECT 1 FROM tombstone WHERE partition = ?", (partition,)).fetchone()
        )
