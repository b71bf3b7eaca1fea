"""The replicated log as the core sees it: in memory, compacted from the front.

The runtime loads persisted entries into it at start and trims it through
``compact`` after a snapshot, so the core never reads storage. Entries past
``stable`` have been handed out for persistence but not yet acknowledged.
"""

from __future__ import annotations

from .types import Entry, SnapshotMeta


class RaftLog:
    def __init__(self, snap_index: int = 0, snap_term: int = 0, entries: list[Entry] | None = None) -> None:
        self.snap_index = snap_index
        self.snap_term = snap_term
        self.entries: list[Entry] = list(entries or [])
        if self.entries and self.entries[0].index != snap_index + 1:
            raise ValueError("entries must follow the snapshot index")
        self.committed = snap_index
        self.applied = snap_index
        self.stable = self.last_index()
        """Highest index known to be on disk."""
        self.pending_snapshot: SnapshotMeta | None = None
        """A snapshot received from the leader, not yet persisted."""
        self.applying = snap_index
        """Highest index handed out for application and not yet acknowledged."""

    # ---- positions -------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.snap_index + 1

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or not yet written."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index():
            return None
        return self.entries[index - self.snap_index - 1].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's election restriction: a voter only backs a candidate whose log is no older."""
        return last_term > self.last_term() or (
            last_term == self.last_term() and last_index >= self.last_index()
        )

    # ---- reading ---------------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        """Entries [lo, hi), at least one when any, at most ``max_bytes`` beyond the first.

        None when ``lo`` was compacted away: the follower needs a snapshot.
        """
        if lo <= self.snap_index:
            return None
        hi = min(hi, self.last_index() + 1)
        out: list[Entry] = []
        size = 0
        for i in range(lo, hi):
            e = self.entries[i - self.snap_index - 1]
            size += e.size()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable - self.snap_index :] if self.stable < self.last_index() else []

    def has_next_committed(self) -> bool:
        return self.committed > self.applying and self.pending_snapshot is None

    def next_committed(self, max_bytes: int) -> list[Entry]:
        """Committed entries not yet handed out; only those already on disk.

        Applying an entry this node has not persisted could make a crash
        forget something the state machine already exposed.
        """
        if self.pending_snapshot is not None:
            return []
        hi = min(self.committed, self.stable)
        if hi <= self.applying:
            return []
        return self.slice(self.applying + 1, hi + 1, max_bytes) or []

    # ---- writing ---------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first <= self.committed:
            raise AssertionError(f"refusing to overwrite committed entry {first} (commit {self.committed})")
        keep = first - self.snap_index - 1
        del self.entries[keep:]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)
        return self.last_index()

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first entry that is new or disagrees with ours, 0 if none."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, and that term.

        This is the fast back-off: one round trip skips a whole term of
        divergent entries instead of one entry.
        """
        index = min(index, self.last_index())
        while index > self.snap_index:
            t = self.term(index)
            if t is not None and t <= term:
                return index, t
            index -= 1
        return self.snap_index, self.snap_term

    def maybe_append(self, index: int, log_term: int, committed: int, entries: list[Entry]) -> int | None:
        """Follower side of AppendEntries; the new last index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise AssertionError(
                    f"entry {conflict} conflicts with committed entry (commit {self.committed})"
                )
            self.append(entries[conflict - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} is beyond the last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit by counting replicas only for entries of the leader's own term (Raft §5.4.2)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        if self.term(index) == term and index > self.stable:
            self.stable = index

    def applied_to(self, index: int) -> None:
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, index)

    def restore(self, snapshot: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self.entries = []
        self.snap_index = snapshot.index
        self.snap_term = snapshot.term
        self.committed = snapshot.index
        self.stable = snapshot.index
        self.pending_snapshot = snapshot

    def snapshot_persisted(self, snapshot: SnapshotMeta) -> None:
        if self.pending_snapshot == snapshot:
            self.pending_snapshot = None
            self.applied = max(self.applied, snapshot.index)
            self.applying = max(self.applying, snapshot.index)

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to ``index``; the runtime has made them part of a snapshot."""
        if index <= self.snap_index:
            return
        if index > self.applied:
            raise AssertionError(f"cannot compact {index} beyond the applied index {self.applied}")
        actual = self.term(index)
        if actual is not None and actual != term:
            raise AssertionError(f"compaction term mismatch at {index}: {actual} != {term}")
        del self.entries[: index - self.snap_index]
        self.snap_index = index
        self.snap_term = term
