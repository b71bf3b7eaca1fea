"""The SQLite store: group commit, apply, compaction, snapshots, reload after restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kvcluster.keyspace import KeyRange, PartitionDescriptor, PartitionMap, key_hash
from kvcluster.raft import ConfChange, ConfChangeKind, Entry, EntryKind, HardState, SnapshotMeta
from kvcluster.storage import (
    INITIAL_INDEX,
    AppliedState,
    Batch,
    Delete,
    Freeze,
    GroupWrite,
    Merge,
    NewReplica,
    Put,
    Split,
    Store,
    Unfreeze,
)
from kvcluster.storage import commands as cmds
from kvcluster.storage.metastate import apply_meta, initial_state
from kvcluster.storage.snapshots import export_snapshot


def whole_space(pid: int = 1, voters: tuple[int, ...] = (1, 2, 3)) -> PartitionDescriptor:
    return PartitionDescriptor(pid, KeyRange.slices(1)[0], 1, voters)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    s.write_sync(
        Batch(create=[NewReplica(AppliedState(1, whole_space()), term=0, snap_index=0, snap_term=0)])
    )
    yield s
    s.close()


def entry(index: int, cmd: cmds.Command | None, term: int = 1) -> Entry:
    return Entry(term, index, EntryKind.NORMAL, cmds.encode(cmd) if cmd is not None else b"")


def apply(store: Store, *entries: Entry) -> list[cmds.Outcome]:
    result = store.write_sync(
        Batch(groups=[GroupWrite(1, entries=list(entries), hard_state=HardState(1, 1, entries[-1].index))])
    )
    assert not result.applied  # persisted, not yet applied: commit comes with the next batch
    result = store.write_sync(Batch(groups=[GroupWrite(1, committed=list(entries))]))
    return [a.outcome for a in result.applied[1].applied]


def test_put_cas_delete_and_versions(store: Store) -> None:
    out = apply(
        store,
        entry(1, None),
        entry(2, Put(b"k", b"v1")),
        entry(3, Put(b"k", b"v2", if_version=0)),
        entry(4, Put(b"k", b"v3", if_version=1)),
        entry(5, Delete(b"missing")),
        entry(6, Delete(b"k", if_version=1)),
        entry(7, Delete(b"k", if_version=2)),
        entry(8, Put(b"k", b"again")),
    )
    assert [o.code for o in out] == ["", "", "version_conflict", "", "not_found", "version_conflict", "", ""]
    assert out[1].version == 1 and out[2].version == 1 and out[3].version == 2
    assert out[6].version == 3
    assert out[7].version == 4, "a recreated key never reuses a version (no ABA)"
    assert store.get(b"k") == (b"again", 4)


def test_reapplying_after_restart_is_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.write_sync(
        Batch(create=[NewReplica(AppliedState(1, whole_space()), term=0, snap_index=0, snap_term=0)])
    )
    entries = [entry(1, Put(b"a", b"1")), entry(2, Put(b"a", b"2"))]
    s.write_sync(Batch(groups=[GroupWrite(1, entries=entries, hard_state=HardState(1, 1, 2), committed=[])]))
    s.write_sync(Batch(groups=[GroupWrite(1, committed=entries)]))
    s.close()
    s = Store(tmp_path)
    (rec,) = s.load()
    assert rec.applied.applied_index == 2 and rec.hard_state == HardState(1, 1, 2)
    assert [e.index for e in rec.entries] == [1, 2]
    result = s.write_sync(Batch(groups=[GroupWrite(1, committed=entries)]))  # Raft hands them out again
    assert result.applied[1].applied == []
    assert s.get(b"a") == (b"2", 2)
    s.close()


def test_conflicting_entries_replace_the_stored_tail(store: Store) -> None:
    store.write_sync(Batch(groups=[GroupWrite(1, entries=[entry(i, None, term=1) for i in range(1, 6)])]))
    store.write_sync(Batch(groups=[GroupWrite(1, entries=[entry(3, None, term=2)])]))
    (rec,) = [r for r in store.load() if r.applied.partition == 1]
    assert [(e.index, e.term) for e in rec.entries] == [(1, 1), (2, 1), (3, 2)]


def test_wrong_range_and_split(store: Store, tmp_path: Path) -> None:
    apply(store, *(entry(i + 1, Put(f"key{i}".encode(), b"x")) for i in range(40)))
    outcomes = apply(store, entry(41, Split(new_id=2, epoch=1)), entry(42, Split(new_id=3, epoch=1)))
    assert outcomes[0].ok and outcomes[1].code == "stale_epoch"
    left = outcomes[0].body["left"]
    right = PartitionDescriptor.from_dict(outcomes[0].body["right"])
    assert right.id == 2 and right.epoch == 2 and left["epoch"] == 2
    records = {r.applied.partition: r for r in store.load()}
    assert records[2].applied.applied_index == INITIAL_INDEX and records[2].snap_index == INITIAL_INDEX
    assert records[2].applied.revision == records[1].applied.revision, "the right half inherits the revision"
    moved = next(f"key{i}".encode() for i in range(40) if right.range.contains(key_hash(f"key{i}".encode())))
    out = apply(store, entry(43, Put(moved, b"y")))
    assert out[0].code == "wrong_range", "the left half no longer owns keys of the right half"
    assert store.get(moved) == (b"x", store.get(moved)[1])  # type: ignore[index]


def test_freeze_merge_unfreeze(tmp_path: Path) -> None:
    s = Store(tmp_path)
    left_r, right_r = KeyRange(0, 2**63), KeyRange(2**63, 2**64)
    s.write_sync(
        Batch(
            create=[
                NewReplica(
                    AppliedState(1, PartitionDescriptor(1, left_r, 3, (1,))),
                    term=0,
                    snap_index=0,
                    snap_term=0,
                ),
                NewReplica(
                    AppliedState(2, PartitionDescriptor(2, right_r, 5, (1,))),
                    term=0,
                    snap_index=0,
                    snap_term=0,
                ),
            ]
        )
    )

    def run(pid: int, *es: Entry) -> list[cmds.Outcome]:
        s.write_sync(Batch(groups=[GroupWrite(pid, entries=list(es))]))
        res = s.write_sync(Batch(groups=[GroupWrite(pid, committed=list(es))]))
        return [a.outcome for a in res.applied[pid].applied]

    assert run(2, entry(1, Freeze(epoch=4)))[0].code == "stale_epoch"
    frozen = run(2, entry(2, Freeze(epoch=5)))[0]
    assert frozen.body == {"index": 2}
    assert run(2, entry(3, Put(b"r", b"x")))[0].code in ("frozen", "wrong_range")
    unfrozen = run(2, entry(4, Unfreeze(epoch=5)))[0]
    assert unfrozen.descriptor is not None and unfrozen.descriptor.epoch == 6
    frozen = run(2, entry(5, Freeze(epoch=6)))[0]
    merged = run(1, entry(1, Merge(right=2, right_epoch=6, right_index=5, epoch=3)))[0]
    assert merged.descriptor is not None and merged.descriptor.range == KeyRange(0, 2**64)
    assert merged.descriptor.epoch == 7
    assert {r.applied.partition for r in s.load()} == {1}
    assert s.is_tombstoned(2, 6) and not s.is_tombstoned(2, 7)
    s.close()


def test_snapshot_export_install_and_compaction(store: Store, tmp_path: Path) -> None:
    apply(store, *(entry(i + 1, Put(f"s{i}".encode(), bytes([i]))) for i in range(30)))
    store.write_sync(Batch(groups=[GroupWrite(1, compact=(20, 1))]))
    meta, data = export_snapshot(store._writer, 1)
    assert meta == SnapshotMeta(30, 1, meta.conf) and meta.conf.voters == {1, 2, 3}
    (rec,) = store.load()
    assert rec.snap_index == 20 and [e.index for e in rec.entries] == list(range(21, 31))
    other = Store(tmp_path / "other")
    try:
        other.write_sync(
            Batch(
                create=[
                    NewReplica(
                        AppliedState(1, whole_space()), term=3, snap_index=30, snap_term=1, snapshot=data
                    )
                ]
            )
        )
        assert [other.get(f"s{i}".encode()) for i in range(30)] == [
            store.get(f"s{i}".encode()) for i in range(30)
        ]
        (rec2,) = other.load()
        assert rec2.applied.applied_index == 30 and rec2.hard_state.term == 3 and rec2.entries == []
    finally:
        other.close()


def test_conf_change_moves_the_descriptor_epoch(store: Store) -> None:
    cc = Entry(1, 1, EntryKind.CONF_CHANGE, ConfChange(ConfChangeKind.ADD_LEARNER, 4).encode())
    store.write_sync(Batch(groups=[GroupWrite(1, entries=[cc])]))
    res = store.write_sync(Batch(groups=[GroupWrite(1, committed=[cc])]))
    state = res.applied[1].state
    assert state.descriptor.learners == (4,) and state.descriptor.epoch == 2
    assert res.applied[1].applied[0].conf_change == ConfChange(ConfChangeKind.ADD_LEARNER, 4)


def test_durability_setting_reaches_sqlite(tmp_path: Path) -> None:
    from kvcluster.storage import Durability

    for durability, expected in ((Durability.FSYNC, 2), (Durability.RELAXED, 1)):
        s = Store(tmp_path / durability.value, durability)
        assert s._writer.execute("PRAGMA synchronous").fetchone()[0] == expected
        assert s._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        s.close()


def test_meta_state_machine() -> None:
    pmap = PartitionMap.initial({1: "a", 2: "b", 3: "c"}, 2, 3)
    state = initial_state(pmap)
    state, ans = apply_meta(state, {"op": "register_node", "id": 4, "url": "http://d"})
    assert ans["ok"] and any(n["id"] == 4 for n in state["map"]["nodes"])
    state, ans = apply_meta(state, {"op": "forget_node", "id": 1})
    assert not ans["ok"], "a node that still holds replicas cannot be forgotten"
    state, ans = apply_meta(state, {"op": "forget_node", "id": 4})
    assert ans["ok"] and all(n["id"] != 4 for n in state["map"]["nodes"])
    job = {"id": "a", "state": "running"}
    state, ans = apply_meta(state, {"op": "set_job", "job": job})
    state, ans = apply_meta(state, {"op": "set_job", "job": {"id": "b", "state": "running"}})
    assert not ans["ok"] and state["job"]["id"] == "a"
    state, ans = apply_meta(state, {"op": "update_job", "id": "a", "fields": {"steps_done": 3}})
    assert state["job"]["steps_done"] == 3
    state, ans = apply_meta(state, {"op": "reserve_id", "id": 40})
    assert state["map"]["last_id"] == 40
    state2, ans = apply_meta(state, {"op": "bogus"})
    assert not ans["ok"] and state2 == state


def test_database_is_plain_sqlite(store: Store) -> None:
    apply(store, entry(1, Put(b"x", b"y")))
    conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT value, version FROM kv WHERE key = ?", (b"x",)).fetchone() == (b"y", 1)
    finally:
        conn.close()


def test_only_log_entries_snapshots_and_votes_are_fsynced(store: Store) -> None:
    """Applying can be redone from the log after a crash, so it does not wait for a disk flush."""
    e = entry(1, Put(b"a", b"1"))
    before = store.synced_batches
    store.write_sync(Batch(groups=[GroupWrite(1, entries=[e], hard_state=HardState(1, 1, 0))]))
    assert store.synced_batches == before + 1
    store.write_sync(Batch(groups=[GroupWrite(1, hard_state=HardState(1, 1, 1), committed=[e])]))
    assert store.synced_batches == before + 1, "an apply-only batch skipped the fsync"
    store.write_sync(Batch(groups=[GroupWrite(1, hard_state=HardState(2, 3, 1), vote_changed=True)]))
    assert store.synced_batches == before + 2
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_load_writes_rows_skips_foreign_keys_and_respects_freeze(store: Store, tmp_path: Path) -> None:
    apply(store, entry(1, Put(b"old", b"1")))
    apply(store, entry(2, Split(new_id=2, epoch=1)))
    left = {r.applied.partition: r for r in store.load()}[1].applied.descriptor
    keys = [f"row{i}".encode() for i in range(20)]
    rows = tuple((k, b"v" + k) for k in keys)
    out = apply(store, entry(3, cmds.Load(rows)))[0]
    mine = [i for i, k in enumerate(keys) if left.range.contains(key_hash(k))]
    assert out.ok and out.body is not None
    assert out.body["loaded"] == len(mine) and out.body["skipped"] == [i for i in range(20) if i not in mine]
    assert 0 < len(mine) < 20, "the sample must straddle the split"
    versions = [store.get(keys[i]) for i in mine]
    assert [v[0] for v in versions if v] == [b"v" + keys[i] for i in mine]
    assert len({v[1] for v in versions if v}) == len(mine), "every row gets its own revision"
    assert all(store.get(keys[i]) is None for i in range(20) if i not in mine)
    assert cmds.decode(cmds.encode(cmds.Load(rows))) == cmds.Load(rows)
    frozen = apply(store, entry(4, Freeze(epoch=2)), entry(5, cmds.Load(((b"late", b"x"),))))
    assert frozen[1].code == "frozen" and store.get(b"late") is None


def test_a_dump_reads_one_point_of_history_while_writes_go_on(store: Store) -> None:
    from kvcluster.storage.dump import PartitionDump

    apply(store, *(entry(i + 1, Put(f"k{i:03d}".encode(), b"before")) for i in range(250)))
    dump = PartitionDump(store.path, 1)
    try:
        assert dump.state.applied_index == 250
        first = dump.fetch(100)
        apply(store, entry(251, Put(b"k000", b"after")), entry(252, Put(b"new", b"after")))
        rest = dump.fetch(1000)
        assert dump.fetch(10) == []
    finally:
        dump.close()
    rows = first + rest
    assert len(rows) == 250 and {v for _, v, _ in rows} == {b"before"}
    assert store.get(b"new") is not None  # the writer was never blocked


def test_applied_state_survives_restart_whether_a_batch_moved_only_the_position_or_more(
    tmp_path: Path,
) -> None:
    """Puts write only the applied position and revision; a freeze or unfreeze after them must still land."""

    def reopened(s: Store) -> tuple[Store, AppliedState]:
        s.close()
        s = Store(tmp_path)
        (rec,) = s.load()
        return s, rec.applied

    s = Store(tmp_path)
    s.write_sync(
        Batch(create=[NewReplica(AppliedState(1, whole_space()), term=0, snap_index=0, snap_term=0)])
    )
    apply(s, entry(1, Put(b"a", b"1")))
    apply(s, entry(2, Put(b"b", b"2")))  # the second batch of this process: the short write
    s, state = reopened(s)
    assert (state.applied_index, state.applied_term, state.revision) == (2, 1, 2)
    assert state.descriptor == whole_space() and not state.frozen
    apply(s, entry(3, Put(b"c", b"3")))
    apply(s, entry(4, Put(b"d", b"4")), entry(5, Freeze(epoch=1)))
    s, state = reopened(s)
    assert (state.applied_index, state.revision, state.frozen) == (5, 4, True)
    apply(s, entry(6, Freeze(epoch=1)))
    apply(s, entry(7, Unfreeze(epoch=1)))
    s, state = reopened(s)
    assert (state.applied_index, state.frozen, state.descriptor.epoch) == (7, False, 2)
    s.close()
