"""The watch history (storage/history.py) on a real store: recording, filtered reads, compaction,
split and merge, snapshots, and databases written before the history existed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from kvcluster.keyspace import HASH_SPACE, KeyRange, PartitionDescriptor, key_hash
from kvcluster.raft import Entry, EntryKind
from kvcluster.storage import (
    INITIAL_INDEX,
    AppliedState,
    Batch,
    Delete,
    Expire,
    Freeze,
    GroupWrite,
    Load,
    Merge,
    NewReplica,
    Outcome,
    Put,
    Split,
    Store,
    history,
)
from kvcluster.storage import commands as cmds
from kvcluster.storage.history import Change, Event, KeyFilter, compaction_point
from kvcluster.storage.schema import to_db_hash
from kvcluster.storage.snapshots import export_snapshot

ALL = KeyFilter()


def whole_space(pid: int = 1) -> PartitionDescriptor:
    return PartitionDescriptor(pid, KeyRange(0, HASH_SPACE), 1, (1, 2, 3))


class Node:
    """A store with one replica of the whole space, and the next log index of each partition."""

    def __init__(
        self, path: Path, history_keep: int = history.DEFAULT_KEEP, *, bootstrap: bool = True
    ) -> None:
        self.store = Store(path, history_keep=history_keep)
        self.next: dict[int, int] = {}
        if bootstrap:
            self.store.write_sync(
                Batch(create=[NewReplica(AppliedState(1, whole_space()), term=0, snap_index=0, snap_term=0)])
            )
            self.next[1] = 1

    def apply(self, pid: int, *commands: cmds.Command) -> list[Outcome]:
        """Append ``commands`` to the partition's log, then apply them in the next batch."""
        first = self.next[pid]
        entries = [Entry(1, first + i, EntryKind.NORMAL, cmds.encode(c)) for i, c in enumerate(commands)]
        self.next[pid] = first + len(entries)
        self.store.write_sync(Batch(groups=[GroupWrite(pid, entries=entries)]))
        result = self.store.write_sync(Batch(groups=[GroupWrite(pid, committed=entries)]))
        for child in result.applied[pid].created:
            self.next[child] = INITIAL_INDEX + 1
        return [a.outcome for a in result.applied[pid].applied]

    def state(self, pid: int) -> AppliedState:
        return {r.applied.partition: r.applied for r in self.store.load()}[pid]

    def events(
        self,
        pid: int = 1,
        after: int = 0,
        keys: KeyFilter = ALL,
        limit: int = 10_000,
        start: int = 0,
        end: int = HASH_SPACE,
    ) -> list[Event]:
        answer = self.store.history(pid, start, end, after, keys, limit)
        assert answer is not None
        return answer[1]

    def rows(self) -> list[tuple[int, int, bytes, int, bytes | None]]:
        cur = self.store._writer.execute(
            "SELECT revision, hash, key, change, value FROM history ORDER BY revision"
        )
        return [(int(r), int(h), bytes(k), int(c), None if v is None else bytes(v)) for r, h, k, c, v in cur]

    def create_from(self, meta: Any, data: bytes, state: AppliedState | None = None) -> None:
        """Create replica 1 here from a snapshot, as a node joining a group does."""
        replica = NewReplica(
            state or AppliedState(1, whole_space()),
            term=2,
            snap_index=meta.index,
            snap_term=meta.term,
            snapshot=data,
        )
        self.store.write_sync(Batch(create=[replica]))

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "n")
    yield n
    n.close()


def test_every_kind_of_write_is_recorded_at_the_version_it_answered(node: Node) -> None:
    out = node.apply(
        1,
        Put(b"a", b"1"),
        Put(b"b", b"2"),
        Put(b"a", b"3"),
        Delete(b"b"),
        Put(b"c", b"4"),
        Expire(b"c", if_version=5),
        Load(((b"d", b"5"), (b"e", b"6"))),
    )
    assert [o.code for o in out] == [""] * 7
    assert [o.version for o in out] == [1, 2, 3, 4, 5, 6, 8]
    assert node.events() == [
        Event(1, Change.PUT, b"a", b"1"),
        Event(2, Change.PUT, b"b", b"2"),
        Event(3, Change.PUT, b"a", b"3"),
        Event(4, Change.DELETE, b"b", None),
        Event(5, Change.PUT, b"c", b"4"),
        Event(6, Change.EXPIRE, b"c", None),
        Event(7, Change.PUT, b"d", b"5"),
        Event(8, Change.PUT, b"e", b"6"),
    ]
    # The rows are stored at the key's hash, so that a range read finds them.
    assert [(h, k) for _, h, k, _, _ in node.rows()] == [
        (to_db_hash(key_hash(k)), k) for k in (b"a", b"b", b"a", b"b", b"c", b"c", b"d", b"e")
    ]
    answer = node.store.history(1, 0, HASH_SPACE, 0, ALL, 100)
    assert answer is not None and answer[0].revision == 8


def test_refused_writes_leave_no_history(node: Node) -> None:
    node.apply(1, Put(b"k", b"v"))
    out = node.apply(
        1,
        Delete(b"missing"),
        Expire(b"missing"),
        Put(b"k", b"x", if_version=7),
        Delete(b"k", if_version=7),
        Expire(b"k", if_version=7),  # written again since it was bound to the lease: it survives
    )
    assert [o.code for o in out] == ["not_found", "not_found"] + ["version_conflict"] * 3
    assert node.events() == [Event(1, Change.PUT, b"k", b"v")]
    assert node.store.get(b"k") == (b"v", 1)


def test_a_write_to_a_frozen_partition_is_not_recorded(node: Node) -> None:
    node.apply(1, Put(b"k", b"v"), Freeze(epoch=1))
    out = node.apply(1, Put(b"k", b"w"), Delete(b"k"), Load(((b"x", b"y"),)))
    assert [o.code for o in out] == ["frozen"] * 3
    assert node.events() == [Event(1, Change.PUT, b"k", b"v")]


def test_reads_filter_by_prefix_key_revision_and_limit(node: Node) -> None:
    writes = [
        Put(b"app/1", b"a"),  # 1
        Put(b"apple", b"b"),  # 2
        Put(b"app/2", b"c"),  # 3
        Put(b"ap", b"d"),  # 4
        Put(b"b/1", b"e"),  # 5
        Put(b"app/1", b"f"),  # 6
        Delete(b"app/2"),  # 7
        Put(b"app0", b"g"),  # 8: the byte after "/" is "0", outside the prefix
        Put(b"app/", b"h"),  # 9: the prefix itself is a key with the prefix
    ]
    for w in writes:  # one batch each, so the order of batches does not matter either
        node.apply(1, w)
    prefix = KeyFilter(prefix=b"app/")
    assert node.events(keys=prefix) == [
        Event(1, Change.PUT, b"app/1", b"a"),
        Event(3, Change.PUT, b"app/2", b"c"),
        Event(6, Change.PUT, b"app/1", b"f"),
        Event(7, Change.DELETE, b"app/2", None),
        Event(9, Change.PUT, b"app/", b"h"),
    ]
    assert node.events(keys=KeyFilter(key=b"app/1")) == [
        Event(1, Change.PUT, b"app/1", b"a"),
        Event(6, Change.PUT, b"app/1", b"f"),
    ]
    assert node.events(keys=KeyFilter(key=b"app")) == [], "a key filter is exact, not a prefix"
    # Only revisions after ``after``, with every filter.
    assert [e.revision for e in node.events(after=3)] == [4, 5, 6, 7, 8, 9]
    assert [e.revision for e in node.events(after=6, keys=prefix)] == [7, 9]
    assert [e.revision for e in node.events(after=1, keys=KeyFilter(key=b"app/1"))] == [6]
    assert node.events(after=9) == []
    # The limit cuts the answer; resuming after its last revision gives the rest.
    first = node.events(keys=prefix, limit=2)
    assert [e.revision for e in first] == [1, 3]
    rest = node.events(after=first[-1].revision, keys=prefix, limit=2)
    assert [e.revision for e in rest] == [6, 7]
    assert [e.revision for e in node.events(limit=1)] == [1]


def test_a_prefix_of_ff_bytes_has_no_upper_bound(node: Node) -> None:
    node.apply(
        1, Put(b"\xff\xff", b"1"), Put(b"\xff\xfe", b"2"), Put(b"\xff\xff\x00\x01", b"3"), Put(b"\xff", b"4")
    )
    assert [e.key for e in node.events(keys=KeyFilter(prefix=b"\xff\xff"))] == [
        b"\xff\xff",
        b"\xff\xff\x00\x01",
    ]
    assert [e.key for e in node.events(keys=KeyFilter(prefix=b"\xff"))] == [
        b"\xff\xff",
        b"\xff\xfe",
        b"\xff\xff\x00\x01",
        b"\xff",
    ]


def test_reads_cover_only_the_hashes_asked_for(node: Node) -> None:
    keys = [f"k{i}".encode() for i in range(40)]
    for k in keys:
        node.apply(1, Put(k, b"v"))
    lo, hi = HASH_SPACE // 4, HASH_SPACE // 2
    inside = [k for k in keys if lo <= key_hash(k) < hi]
    assert 0 < len(inside) < len(keys), "the sample must straddle the bounds"
    assert [e.key for e in node.events(start=lo, end=hi)] == inside
    point = key_hash(keys[7])
    assert [e.key for e in node.events(start=point, end=point + 1)] == [keys[7]]


def test_history_of_an_unknown_partition_is_none(node: Node) -> None:
    assert node.store.history(99, 0, HASH_SPACE, 0, ALL, 10) is None


def expected_floor(batch_revisions: list[int], keep: int, floor: int = 0) -> int:
    """The floor ``compaction_point`` reaches when a compaction is tried at the end of each batch."""
    for rev in batch_revisions:
        point = compaction_point(rev, floor, keep)
        if point is not None:
            floor = point
    return floor


def test_compaction_point() -> None:
    assert compaction_point(21, 0, 20) is None
    assert compaction_point(22, 0, 20) == 2  # a step is a tenth of keep
    assert compaction_point(23, 2, 20) is None
    assert compaction_point(24, 2, 20) == 4
    assert compaction_point(100, 0, 1) == 99
    assert compaction_point(110_999, 10_000, 100_000) is None
    assert compaction_point(111_000, 10_000, 100_000) == 11_000  # the step is at most 1000


def test_compaction_drops_what_is_below_the_floor(tmp_path: Path) -> None:
    n = Node(tmp_path, history_keep=20)
    try:
        for i in range(100):
            n.apply(1, Put(f"k{i % 7}".encode(), str(i).encode()))
        state = n.state(1)
        floor = expected_floor(list(range(1, 101)), 20)
        assert state.revision == 100 and state.history_floor == floor
        assert floor == 100 - 20, "with a step of 2 and one write a batch, the last compaction was at 100"
        revisions = [r for r, *_ in n.rows()]
        assert revisions == list(range(floor + 1, 101)), "rows at or below the floor are gone, the rest kept"
        # Resuming below the floor: nothing, and the state says why.
        for after in (0, 1, floor - 1):
            answer = n.store.history(1, 0, HASH_SPACE, after, ALL, 1000)
            assert answer is not None
            got_state, events = answer
            assert events == [] and got_state.history_floor == floor and after < got_state.history_floor
        # From the floor on, everything is there.
        assert [e.revision for e in n.events(after=floor)] == list(range(floor + 1, 101))
        assert [e.value for e in n.events(after=98)] == [b"98", b"99"]
    finally:
        n.close()
    # The floor is durable.
    n = Node(tmp_path, history_keep=20, bootstrap=False)
    try:
        assert n.state(1).history_floor == floor
    finally:
        n.close()


def test_compaction_runs_once_per_batch(tmp_path: Path) -> None:
    n = Node(tmp_path, history_keep=20)
    try:
        n.apply(1, *(Put(f"k{i}".encode(), b"x") for i in range(21)))
        assert n.state(1).history_floor == 0, "21 revisions are below keep plus a step"
        n.apply(1, *(Put(f"k{i}".encode(), b"y") for i in range(50)))
        state = n.state(1)
        assert state.revision == 71 and state.history_floor == 51 == expected_floor([21, 71], 20)
        assert [r for r, *_ in n.rows()] == list(range(52, 72))
        n.apply(1, Put(b"z", b"1"))  # 72: 21 above the floor, short of keep plus a step
        assert n.state(1).history_floor == 51 == expected_floor([21, 71, 72], 20)
        n.apply(1, Put(b"z", b"2"))  # 73
        assert n.state(1).history_floor == 53 == expected_floor([21, 71, 72, 73], 20)
        assert [r for r, *_ in n.rows()] == list(range(54, 74))
    finally:
        n.close()


def test_split_child_inherits_the_floor_and_the_parent_reads_are_clipped(tmp_path: Path) -> None:
    n = Node(tmp_path, history_keep=20)
    try:
        keys = [f"key{i}".encode() for i in range(40)]
        for k in keys:
            n.apply(1, Put(k, b"v" + k))
        parent = n.state(1)
        floor = parent.history_floor
        assert floor == expected_floor(list(range(1, 41)), 20) > 0
        out = n.apply(1, Split(new_id=2, epoch=1))
        assert out[0].ok
        left = PartitionDescriptor.from_dict(out[0].body["left"])
        right = PartitionDescriptor.from_dict(out[0].body["right"])
        child = n.state(2)
        assert child.history_floor == floor, "the child holds the same history of its range as the parent"
        assert child.revision == parent.revision == 40
        assert n.state(1).history_floor == floor

        def kept(rng: KeyRange) -> list[Event]:
            return [
                Event(i + 1, Change.PUT, k, b"v" + k)
                for i, k in enumerate(keys)
                if i + 1 > floor and rng.contains(key_hash(k))
            ]

        in_left, in_right = kept(left.range), kept(right.range)
        assert in_left and in_right, "the kept history must straddle the split"
        assert n.events(2, after=floor, start=right.range.start) == in_right
        # The parent is asked for the whole space: only its own range comes back.
        assert n.events(1, after=floor) == in_left
        # Asked from a hash it no longer holds: nothing (that is the child's to answer).
        assert n.events(1, after=floor, start=right.range.start) == []
        assert n.events(2, after=floor, start=0) == []
        # Both halves go on from the parent's revision; neither sees the other's writes.
        moved = next(k for k in keys if right.range.contains(key_hash(k)))
        stayed = next(k for k in keys if left.range.contains(key_hash(k)))
        assert n.apply(2, Put(moved, b"child"))[0].version == 41
        assert n.apply(1, Put(stayed, b"parent"))[0].version == 41
        assert n.events(2, after=40, start=right.range.start) == [Event(41, Change.PUT, moved, b"child")]
        assert n.events(1, after=40) == [Event(41, Change.PUT, stayed, b"parent")]
        # The parent compacting its range leaves the child's history alone.
        for i in range(30):
            n.apply(1, Put(stayed, str(i).encode()))
        assert n.state(1).history_floor > floor
        assert n.state(2).history_floor == floor
        assert n.events(2, after=floor, start=right.range.start) == [
            *in_right,
            Event(41, Change.PUT, moved, b"child"),
        ]
        assert all(e.revision > n.state(1).history_floor for e in n.events(1, after=n.state(1).history_floor))
        left_rows = [r for r, h, *_ in n.rows() if left.range.contains(h - to_db_hash(0))]
        assert min(left_rows) > n.state(1).history_floor
    finally:
        n.close()


def test_merge_takes_the_higher_floor_and_keeps_the_right_history(tmp_path: Path) -> None:
    n = Node(tmp_path, history_keep=20)
    try:
        keys = [f"m{i}".encode() for i in range(30)]
        for k in keys:
            n.apply(1, Put(k, b"1"))
        out = n.apply(1, Split(new_id=2, epoch=1))
        left = PartitionDescriptor.from_dict(out[0].body["left"])
        right = PartitionDescriptor.from_dict(out[0].body["right"])
        stayed = next(k for k in keys if left.range.contains(key_hash(k)))
        moved = next(k for k in keys if right.range.contains(key_hash(k)))
        for i in range(40):  # the left half races ahead (revisions 31..70) and compacts further
            n.apply(1, Put(stayed, str(i).encode()))
        for i in range(25):  # the right half writes 31..55
            n.apply(2, Put(moved, f"r{i}".encode()))
        lf, rf = n.state(1).history_floor, n.state(2).history_floor
        split_floor = expected_floor(list(range(1, 31)), 20)
        assert lf == expected_floor([*range(1, 31), *range(31, 71)], 20) == 50
        assert rf == expected_floor(list(range(31, 56)), 20, split_floor) == 34
        frozen = n.apply(2, Freeze(epoch=right.epoch))
        assert frozen[0].ok
        merged = n.apply(
            1, Merge(right=2, right_epoch=right.epoch, right_index=n.next[2] - 1, epoch=left.epoch)
        )
        assert merged[0].ok, merged[0]
        state = n.state(1)
        assert state.descriptor.range == KeyRange(0, HASH_SPACE)
        assert state.history_floor == max(lf, rf) == 50 and state.revision == 70
        answer = n.store.history(1, 0, HASH_SPACE, lf - 1, ALL, 100)
        assert answer is not None and answer[1] == [], "below the merged floor is compacted"
        assert answer[0].history_floor == lf
        # The right half's history above the merged floor is still there, now read through the left.
        assert n.events(1, after=lf, start=right.range.start) == [
            Event(rev, Change.PUT, moved, f"r{rev - 31}".encode()) for rev in range(51, 56)
        ]
        # Both halves used revisions 51..55: a read of the whole range has both, in revision order.
        merged_events = n.events(1, after=lf)
        assert [e.revision for e in merged_events] == sorted(e.revision for e in merged_events)
        assert sorted((e.revision, e.key) for e in merged_events) == sorted(
            [(rev, stayed) for rev in range(51, 71)] + [(rev, moved) for rev in range(51, 56)]
        )
        # A write of the right half's range after the merge continues from the larger revision.
        assert n.apply(1, Put(moved, b"after"))[0].version == 71
        assert n.events(1, after=70) == [Event(71, Change.PUT, moved, b"after")]
        assert n.store.history(2, 0, HASH_SPACE, 0, ALL, 10) is None, "the right half is gone"
    finally:
        n.close()


def test_installing_drops_leftover_history_of_the_snapshot_range(tmp_path: Path) -> None:
    """Rows some earlier replica left in the range (not the replaced replica's own) do not survive."""
    src = Node(tmp_path / "src")
    dst = Node(tmp_path / "dst", bootstrap=False)
    try:
        src.apply(1, Put(b"a", b"1"), Put(b"b", b"2"))
        meta, data = export_snapshot(src.store._writer, 1)
        stale = b"stale"
        dst.store._writer.execute(
            "INSERT INTO history(revision, hash, key, change, value) VALUES (?, ?, ?, ?, ?)",
            (1, to_db_hash(key_hash(stale)), stale, int(Change.PUT), b"x"),
        )
        elsewhere = KeyRange(0, 1) if key_hash(stale) != 0 else KeyRange(1, 2)
        placeholder = AppliedState(1, PartitionDescriptor(1, elsewhere, 1, (1, 2, 3)))
        dst.create_from(meta, data, placeholder)
        assert dst.state(1).descriptor.range == KeyRange(0, HASH_SPACE)
        assert [k for _, _, k, _, _ in dst.rows()] == [b"a", b"b"]
        assert dst.events() == src.events()
    finally:
        src.close()
        dst.close()


def test_a_snapshot_without_history_starts_the_history_at_its_revision(tmp_path: Path) -> None:
    src = Node(tmp_path / "src")
    dst = Node(tmp_path / "dst", bootstrap=False)
    try:
        src.apply(1, Put(b"a", b"1"), Put(b"b", b"2"))
        meta, data = export_snapshot(src.store._writer, 1)
        body = snapshot_body(data)
        assert [row[0] for row in body["history"]] == [1, 2] and body["history_floor"] == 0
        del body["history"], body["history_floor"]  # as a node from before the history sends it
        old = msgpack.packb(body, use_bin_type=True)
        dst.create_from(meta, old)
        state = dst.state(1)
        assert state.revision == 2 and state.history_floor == 2
        assert dst.rows() == [] and dst.store.get(b"b") == (b"2", 2)
    finally:
        src.close()
        dst.close()


def test_destroying_a_replica_drops_its_history(node: Node) -> None:
    node.apply(1, Put(b"a", b"1"), Put(b"b", b"2"))
    assert len(node.rows()) == 2
    node.store.write_sync(Batch(destroy=[(1, 1)]))
    assert node.rows() == []
    assert node.store.history(1, 0, HASH_SPACE, 0, ALL, 10) is None


def test_a_read_stops_after_about_read_bytes(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    node.apply(1, *(Put(f"k{i}".encode(), b"123456") for i in range(5)))  # 2 + 6 bytes a row
    monkeypatch.setattr(history, "READ_BYTES", 10)
    assert [e.revision for e in node.events()] == [1, 2]
    assert [e.revision for e in node.events(after=2)] == [3, 4]
    monkeypatch.setattr(history, "READ_BYTES", 8)
    assert [e.revision for e in node.events(after=4)] == [5]


def snapshot_body(data: bytes) -> dict[str, Any]:
    body: dict[str, Any] = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return body


def test_snapshot_carries_the_history_above_its_floor(tmp_path: Path) -> None:
    src = Node(tmp_path / "src", history_keep=20)
    dst = Node(tmp_path / "dst", bootstrap=False)
    try:
        for i in range(50):
            src.apply(1, Put(f"s{i % 9}".encode(), str(i).encode()))
        src.apply(1, Delete(b"s3"), Expire(b"s4"))
        state = src.state(1)
        floor = state.history_floor
        assert floor > 0 and state.revision == 52
        meta, data = export_snapshot(src.store._writer, 1)
        body = snapshot_body(data)
        assert body["history_floor"] == floor
        assert [row[0] for row in body["history"]] == list(range(floor + 1, 53))
        assert body["history"][-2:] == [
            [51, b"s3", int(Change.DELETE), None],
            [52, b"s4", int(Change.EXPIRE), None],
        ]
        dst.create_from(meta, data)
        installed = dst.state(1)
        assert installed.history_floor == floor and installed.revision == 52
        assert dst.rows() == src.rows()
        assert dst.events(after=floor) == src.events(after=floor)
        assert len(dst.events(after=floor)) == 52 - floor
        answer = dst.store.history(1, 0, HASH_SPACE, floor - 1, ALL, 100)
        assert answer is not None and answer[1] == [] and answer[0].history_floor == floor
    finally:
        src.close()
        dst.close()


def test_snapshot_history_is_bounded_and_replaces_what_was_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "SNAPSHOT_HISTORY", 5)
    src = Node(tmp_path / "src")
    dst = Node(tmp_path / "dst")
    try:
        for i in range(12):
            src.apply(1, Put(f"s{i}".encode(), b"src"))
        for i in range(3):  # history the snapshot must replace, at revisions the source also used
            dst.apply(1, Put(f"old{i}".encode(), b"dst"))
        assert src.state(1).history_floor == 0
        meta, data = export_snapshot(src.store._writer, 1)
        assert snapshot_body(data)["history_floor"] == 12 - 5
        dst.store.write_sync(Batch(groups=[GroupWrite(1, snapshot=(meta, data))]))
        state = dst.state(1)
        assert state.history_floor == 7 and state.revision == 12
        assert [(r, k) for r, _, k, _, _ in dst.rows()] == [(r, f"s{r - 1}".encode()) for r in range(8, 13)]
        assert dst.events(after=7) == [
            Event(r, Change.PUT, f"s{r - 1}".encode(), b"src") for r in range(8, 13)
        ]
        assert dst.events(after=6) == [], "below the snapshot's floor is compacted"
        assert dst.store.get(b"old0") is None
        # The installed replica goes on recording from the snapshot's revision.
        dst.next[1] = meta.index + 1
        assert dst.apply(1, Put(b"new", b"n"))[0].version == 13
        assert dst.events(after=12) == [Event(13, Change.PUT, b"new", b"n")]
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("stored", ["no_floor", "null"])
def test_a_database_from_before_the_history_starts_its_history_now(tmp_path: Path, stored: str) -> None:
    n = Node(tmp_path)
    try:
        n.apply(1, Put(b"a", b"1"), Put(b"b", b"2"), Put(b"a", b"3"), Freeze(epoch=1))
    finally:
        n.close()
    conn = sqlite3.connect(tmp_path / "kv.db")
    try:
        (raw,) = conn.execute("SELECT state FROM replica WHERE partition = 1").fetchone()
        extra = json.loads(raw)
        assert extra["floor"] == 0 and extra["frozen"] is True
        del extra["floor"]
        new = json.dumps(extra).encode() if stored == "no_floor" else None
        conn.execute("UPDATE replica SET state = ? WHERE partition = 1", (new,))
        conn.execute("DROP TABLE history")  # an old database had no such table either
        conn.commit()
    finally:
        conn.close()
    n = Node(tmp_path, bootstrap=False)
    try:
        state = n.state(1)
        assert state.revision == 3 and state.history_floor == 3
        assert state.frozen is (stored == "no_floor")
        assert n.rows() == []
        answer = n.store.history(1, 0, HASH_SPACE, 0, ALL, 100)
        assert answer is not None and answer[1] == [] and answer[0].history_floor == 3
        assert n.events(after=3) == []
    finally:
        n.close()


def test_an_old_database_records_new_writes(tmp_path: Path) -> None:
    n = Node(tmp_path)
    try:
        n.apply(1, Put(b"a", b"1"), Put(b"b", b"2"))
    finally:
        n.close()
    conn = sqlite3.connect(tmp_path / "kv.db")
    try:
        conn.execute(
            "UPDATE replica SET state = ? WHERE partition = 1", (b'{"frozen": false, "meta": null}',)
        )
        conn.commit()
    finally:
        conn.close()
    n = Node(tmp_path, bootstrap=False)
    try:
        assert n.state(1).history_floor == 2
        n.next[1] = 3
        assert n.apply(1, Put(b"c", b"3"))[0].version == 3
        assert n.events(after=2) == [Event(3, Change.PUT, b"c", b"3")]
        assert n.state(1).history_floor == 2, "saved with the floor from now on"
    finally:
        n.close()


def test_a_read_cut_by_its_limit_never_splits_a_revision(node: Node) -> None:
    """After a merge one revision can hold a change of each former half; paging must not lose one."""
    out = node.apply(1, Split(new_id=2, epoch=1))
    left = PartitionDescriptor.from_dict(out[0].body["left"])
    right = PartitionDescriptor.from_dict(out[0].body["right"])
    keys = [f"k{i}".encode() for i in range(100)]
    lk = next(k for k in keys if left.range.contains(key_hash(k)))
    rk = next(k for k in keys if right.range.contains(key_hash(k)))
    assert node.apply(1, Put(lk, b"L1"))[0].version == node.apply(2, Put(rk, b"R1"))[0].version
    node.apply(2, Freeze(epoch=right.epoch))
    node.apply(1, Merge(right=2, right_epoch=right.epoch, right_index=node.next[2] - 1, epoch=left.epoch))
    node.apply(1, Put(lk, b"L2"))
    whole = node.events(1, after=0)
    assert len(whole) == 3
    paged: list[Any] = []
    after = 0
    while page := node.events(1, after=after, limit=1):
        paged += page
        after = page[-1].revision
    assert paged == whole
