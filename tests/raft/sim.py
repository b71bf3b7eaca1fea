"""Deterministic simulation of a cluster of sans-IO Raft nodes.

Everything is driven by one ``random.Random(seed)`` and an integer simulated
clock, so a seed replays exactly. The simulator plays the runtime's part of
the ``Ready`` contract for every node: persist -> send -> apply -> ``advance``
(optionally applying before sending, as the host does, and optionally with a
delay between ``ready()`` and the rest, during which the node keeps stepping
messages and ticking, as it does while the host awaits its storage batch).
It keeps, per node, a *store* holding only what that contract persisted:

* the hard state, the log entries (a Ready's entries replace stored entries
  from their first index on), the last snapshot's meta and state-machine image;
* the state machine (the full list of applied entries), its applied index and
  the membership it derived from the entries it applied. Nodes with
  ``durable_sm`` keep it in the store (like the SQLite runtime, which writes
  applied commands and the applied index in one transaction); the others
  rebuild it from the snapshot at restart and re-apply the log.

A crash drops the ``RaftNode`` object, its undelivered inbound messages, the
Ready it was carrying out and anything it had not persisted; it may strike
between persisting a Ready and sending it, or before applying. A restart
rebuilds ``RaftLog`` + ``RaftNode`` from the store. The network delays each
message by a random amount (so it reorders, unless ``Net.fifo``), loses and
duplicates messages and honours partitions given as a set of cut directed
links (so asymmetric and bridge partitions are just sets of links); the
transport reports some failed sends (``report_unreachable``). Snapshot
messages are filled in a little after the Ready from the sender's state
machine (raising the index to what it has applied by then, at random) and
reported with ``report_snapshot``. Nodes compact at (or a little below) their
applied index at random, so lagging and restarted followers need snapshots.
Initial replicas start from a snapshot at (5, 5) like the runtime's; new
replicas start empty, knowing no membership, and are seeded by a snapshot.

``Checker`` verifies the Raft safety properties continuously (see its
docstring). A failing check raises ``SimFailure`` whose message carries the
seed and the tail of the event trace.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from kvcluster.raft import (
    ConfChange,
    ConfChangeKind,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    RaftError,
    RaftLog,
    RaftNode,
    Ready,
    Role,
    SnapshotMeta,
)

TICK = 10
"""Simulated time units per node tick (message delays are in the same units)."""

INITIAL_INDEX = 5
INITIAL_TERM = 5
"""Like the runtime (``storage.replicastate``): every initial replica starts from a
snapshot at (5, 5), so a brand-new replica with an empty log always needs a snapshot."""

AppliedRec = tuple[int, int, int, bytes]
"""(index, term, kind, data) of one applied entry."""

Image = tuple[AppliedRec, ...]


# ---- seeds ---------------------------------------------------------------------------------------


def seeds(default: int, salt: int = 0) -> list[int]:
    """Seeds for a parametrised test.

    ``RAFT_SIM_SEED=1234`` replays one seed; ``RAFT_SIM_SEEDS=2000`` runs that many
    seeds per scenario instead of the default (for long local runs).
    """
    one = os.environ.get("RAFT_SIM_SEED")
    if one:
        return [int(one)]
    count = int(os.environ.get("RAFT_SIM_SEEDS", default))
    base = salt * 1_000_003
    return [base + i for i in range(count)]


@contextmanager
def replay(seed: int, test: str) -> Iterator[None]:
    """Turn any failure into an assertion naming the seed to replay."""
    try:
        yield
    except Exception as exc:
        raise AssertionError(
            f"{type(exc).__name__}: {exc}\n\nreplay with RAFT_SIM_SEED={seed} "
            f".venv/bin/pytest tests/raft -k '{test}'"
        ) from exc


# ---- failures ------------------------------------------------------------------------------------


class SimFailure(AssertionError):
    pass


class InvariantViolation(SimFailure):
    pass


class LivenessFailure(SimFailure):
    pass


# ---- configuration -------------------------------------------------------------------------------


@dataclass
class Options:
    voters: int = 3
    election_tick: int = 10
    heartbeat_tick: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    max_message_bytes: int = 300
    """Small, so that appends carry a handful of entries and catch-up takes several rounds."""
    max_inflight: int = 4
    max_apply_bytes: int = 400
    durable_sm: bool | None = None
    """None: chosen at random per node."""
    compact_prob: float = 0.0
    """Per processed Ready, the chance that the node compacts its log at its applied index."""
    compact_min: int = 4
    compact_keep: int = 0
    """Compact up to this many entries below the applied index (as the runtime keeps a few
    entries so that slightly lagging followers catch up without a snapshot)."""
    crash_in_ready: float = 0.0
    """Chance, per Ready, of crashing after persisting it (before sending) or before applying."""
    ready_delay: int = 0
    """Up to this many time units between ``ready()`` and the rest of the cycle, during which
    the node keeps stepping messages and ticking (storage writes in the background, as the
    runtime's writer thread does). 0: the whole cycle runs at once."""
    apply_before_send: bool = False
    """Apply in the storage transaction, before sending (what the runtime's host does)."""
    send_ahead: bool = True
    """A leader whose term and vote are already persisted sends its appends and heartbeats
    right at ``ready()``, before persisting its own new entries (what the runtime's host does)."""
    raise_snapshot: float = 0.5
    """Chance that the runtime raises an outgoing snapshot's index to what it has applied."""
    skew: bool = True
    """Nodes tick every 9, 10 or 11 time units instead of all every 10."""


@dataclass
class Net:
    loss: float = 0.0
    dup: float = 0.0
    min_delay: int = 1
    max_delay: int = 12
    spike: float = 0.0
    """Chance that a message is delayed by up to ``spike_delay`` (deep reordering)."""
    spike_delay: int = 80
    report_unreachable: float = 0.3
    """Chance that a message dropped by a cut link is reported by the transport."""
    fifo: bool = False
    """Keep each link in order (like one TCP connection per peer): delays vary, order does not."""


def random_options(pick: random.Random, **fixed: Any) -> Options:
    """A random configuration of cluster size, timing, flow control, compaction, storage
    behaviour and protocol options; ``fixed`` overrides any of them."""
    election_tick, heartbeat_tick = pick.choice(((10, 2), (10, 2), (10, 1), (6, 1), (20, 5)))
    opts = Options(
        voters=pick.choice((3, 3, 5)),
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        pre_vote=pick.random() < 0.8,
        check_quorum=pick.random() < 0.8,
        max_message_bytes=pick.choice((300, 300, 1 << 20)),
        max_inflight=pick.choice((1, 4, 64)),
        compact_prob=pick.choice((0.0, 0.05, 0.3)),
        compact_keep=pick.choice((0, 0, 5)),
        crash_in_ready=pick.choice((0.0, 0.01, 0.03)),
        ready_delay=pick.choice((0, 0, 4, 15)),
        apply_before_send=pick.random() < 0.3,
        send_ahead=pick.random() < 0.8,
    )
    for name, value in fixed.items():
        setattr(opts, name, value)
    return opts


# ---- per-node state ------------------------------------------------------------------------------


@dataclass
class StateMachine:
    applied: int
    log: list[AppliedRec]
    conf: ConfState

    def image(self, upto: int | None = None) -> Image:
        if upto is None or upto >= self.applied:
            return tuple(self.log)
        return tuple(r for r in self.log if r[0] <= upto)


@dataclass
class Store:
    """What survives a crash."""

    hard: HardState
    snap: SnapshotMeta
    snap_image: Image
    entries: list[Entry]
    sm: StateMachine | None = None
    """The state machine when the node keeps it durable."""

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap.index

    def term(self, index: int) -> int | None:
        if index == self.snap.index:
            return self.snap.term
        if index < self.snap.index or index > self.last_index():
            return None
        return self.entries[index - self.snap.index - 1].term


def _copy_entry(e: Entry) -> Entry:
    return Entry(e.term, e.index, e.kind, e.data)


def _copy_msg(m: Message) -> Message:
    return replace(m, entries=[_copy_entry(e) for e in m.entries])


class SimNode:
    def __init__(self, node_id: int, store: Store, durable_sm: bool, period: int, phase: int) -> None:
        self.id = node_id
        self.store = store
        self.durable_sm = durable_sm
        self.period = period
        self.phase = phase
        self.raft: RaftNode | None = None
        self.sm = store.sm if store.sm is not None else self._sm_from_snapshot()
        self.incarnation = 0
        self.decommissioned = False
        self.snap_data: dict[tuple[int, int], Image] = {}
        """Images of snapshots received and not yet installed (memory only)."""
        self.proposals: dict[tuple[int, int], bytes] = {}
        """(term, index) -> data of this incarnation's proposals still waiting for their outcome."""
        self.seen_commit = 0
        self.last_commit = 0
        self.inflight: Ready | None = None
        """A Ready taken but not yet carried out (only with ``Options.ready_delay``)."""
        self.ready_delay: int | None = None
        """Overrides ``Options.ready_delay`` for this node with this exact delay."""

    def _sm_from_snapshot(self) -> StateMachine:
        return StateMachine(self.store.snap.index, list(self.store.snap_image), self.store.snap.conf)

    @property
    def alive(self) -> bool:
        return self.raft is not None

    @property
    def r(self) -> RaftNode:
        assert self.raft is not None, f"node {self.id} is down"
        return self.raft

    def applied_record(self, index: int) -> AppliedRec | None:
        pos = index - INITIAL_INDEX - 1
        if 0 <= pos < len(self.sm.log):
            return self.sm.log[pos]
        return None


@dataclass
class _Read:
    node: int
    incarnation: int
    min_index: int
    time: int


# ---- invariants ----------------------------------------------------------------------------------


class Checker:
    """Raft's safety properties, checked as the simulation runs.

    * election safety: at most one leader per term over the whole run (``leaders``),
      and a node never votes for two candidates in one term, across restarts;
    * log matching: an (index, term) pair always names the same entry with the same
      predecessor term (incrementally, on every Ready), and pairwise over all logs
      (in memory for live nodes, stored for crashed ones) on their overlapping ranges;
    * leader completeness: an entry observed committed by a node at term t (through its
      persisted commit index, or a snapshot image it installed) is in the log (or under
      the snapshot) of every leader of a term > t, whether that leader was elected
      before or after the observation; two different entries are never committed at
      one index;
    * state-machine safety: every application of an index, and every snapshot image,
      agrees with every other one; a node applies indices in order without gaps and
      only entries it has persisted;
    * the core's membership equals the one the runtime derived from the entries and
      snapshots it applied, whenever no Ready or snapshot installation is pending;
    * commit never decreases on a running node, applied <= commit, persisted term
      and commit never decrease, a proposal acknowledged to its client (applied by
      its proposer with the (term, index) ``propose`` returned) stays applied at that
      index everywhere;
    * ReadIndex: a read state's index is >= every commit index known anywhere when
      the read was requested, so a deposed leader cannot serve a stale read.
    """

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.leaders: dict[int, int] = {}
        self.leader_logs: dict[int, tuple[int, list[int]]] = {}
        """term -> (snap_index, terms of entries after it) of that term's leader at election."""
        self.votes: dict[tuple[int, int], int] = {}
        self.entries: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.committed: dict[int, tuple[int, int, bytes, int]] = {}
        """index -> (term, kind, data, lowest term at which it was observed committed)."""
        self.applied_at: dict[int, AppliedRec] = {}
        self.max_commit = INITIAL_INDEX
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.reads: dict[bytes, _Read] = {}
        self.reads_served = 0
        self.reads_checked_stale = 0

    def fail(self, msg: str) -> None:
        self.sim.fail(msg)

    # -- election safety --------------------------------------------------------------------------

    def after_call(self, node: SimNode) -> None:
        r = node.raft
        if r is None:
            return
        log = r.log
        if log.committed < node.last_commit:
            self.fail(f"node {node.id}: commit went back from {node.last_commit} to {log.committed}")
        node.last_commit = log.committed
        if log.applied > log.committed:
            self.fail(f"node {node.id}: applied {log.applied} > commit {log.committed}")
        if log.committed > log.last_index():
            self.fail(f"node {node.id}: commit {log.committed} beyond last index {log.last_index()}")
        if r.role == Role.LEADER:
            prev = self.leaders.get(r.term)
            if prev is None:
                self._new_leader(node)
            elif prev != node.id:
                self.fail(f"election safety: nodes {prev} and {node.id} both leaders of term {r.term}")

    def _new_leader(self, node: SimNode) -> None:
        r = node.r
        self.sim.event("leader", node.id, r.term)
        self.leaders[r.term] = node.id
        self.sim.stats["elections"] += 1
        view = (r.log.snap_index, [e.term for e in r.log.entries])
        self.leader_logs[r.term] = view
        for index, (term, _kind, _data, cterm) in self.committed.items():
            if cterm < r.term:
                self._check_leader_has(r.term, view, index, term)

    def _check_leader_has(self, lterm: int, view: tuple[int, list[int]], index: int, term: int) -> None:
        snap_index, terms = view
        if index <= snap_index:
            return
        pos = index - snap_index - 1
        if pos >= len(terms) or terms[pos] != term:
            have = terms[pos] if pos < len(terms) else None
            self.fail(
                f"leader completeness: leader of term {lterm} lacks committed entry "
                f"{index}@{term} (has {have}, log ends at {snap_index + len(terms)})"
            )

    def _observe_commit(self, node: SimNode) -> None:
        """Entries up to the persisted commit index are committed (observed at its term).

        The in-memory commit index is not used: a single voter counts itself before its
        entries are on disk, so it may commit in memory what a crash then loses (nothing
        of it is visible outside before it is persisted).
        """
        st = node.store
        hi = st.hard.commit
        if hi <= node.seen_commit:
            return
        for index in range(max(node.seen_commit, st.snap.index) + 1, hi + 1):
            e = st.entries[index - st.snap.index - 1]
            self._record_committed(index, e.term, int(e.kind), e.data, st.hard.term)
        node.seen_commit = hi
        self.max_commit = max(self.max_commit, hi)

    def _record_committed(self, index: int, term: int, kind: int, data: bytes, observer_term: int) -> None:
        prev = self.committed.get(index)
        if prev is not None:
            if (prev[0], prev[1], prev[2]) != (term, kind, data):
                self.fail(
                    f"two different entries committed at {index}: {prev[0]}:{prev[2]!r} and {term}:{data!r}"
                )
            if observer_term >= prev[3]:
                return
        self.committed[index] = (term, kind, data, observer_term)
        for lterm, view in self.leader_logs.items():
            if lterm > observer_term:
                self._check_leader_has(lterm, view, index, term)

    # -- persistence ----------------------------------------------------------------------------------

    def on_persist(self, node: SimNode, before: HardState, hs: HardState) -> None:
        """A Ready's hard state reached the disk (after its entries and snapshot)."""
        if hs.term < before.term:
            self.fail(f"node {node.id}: persisted term goes back {before.term} -> {hs.term}")
        if hs.commit < before.commit:
            self.fail(f"node {node.id}: persisted commit goes back {before.commit} -> {hs.commit}")
        if hs.term == before.term and before.vote and hs.vote != before.vote:
            self.fail(f"node {node.id}: vote changed within term {hs.term}: {before.vote} -> {hs.vote}")
        if hs.vote:
            prev = self.votes.setdefault((node.id, hs.term), hs.vote)
            if prev != hs.vote:
                self.fail(f"node {node.id} voted for {prev} and {hs.vote} in term {hs.term}")
        if hs.commit > node.store.last_index():
            self.fail(f"node {node.id}: persisted commit {hs.commit} beyond its persisted log")
        self._observe_commit(node)

    def on_ready(self, node: SimNode, rd: Ready) -> None:
        """Checks when the Ready is handed out (before it is carried out)."""
        r = node.r
        st = node.store
        if rd.entries:
            first = rd.entries[0].index
            base = rd.snapshot.index if rd.snapshot is not None else st.snap.index
            last = rd.snapshot.index if rd.snapshot is not None else st.last_index()
            if first <= base or first > last + 1:
                self.fail(f"node {node.id}: entries from {first} do not fit the store ({base}, {last}]")
            for pos, e in enumerate(rd.entries):
                if e.index != first + pos:
                    self.fail(f"node {node.id}: Ready entries not contiguous at {e.index}")
                prev_term = r.log.term(e.index - 1)
                if prev_term is None:
                    self.fail(f"node {node.id}: no term for the predecessor of entry {e.index}")
                    return
                self._record_entry(e, prev_term)
        for e in rd.committed_entries:
            if e.index > r.log.committed:
                self.fail(f"node {node.id}: entry {e.index} handed out for apply beyond commit")

    def _record_entry(self, e: Entry, prev_term: int) -> None:
        key = (e.index, e.term)
        val = (int(e.kind), e.data, prev_term)
        prev = self.entries.setdefault(key, val)
        if prev != val:
            self.fail(f"log matching: two different entries at {e.index}@{e.term}: {prev} vs {val}")

    # -- state machine -------------------------------------------------------------------------------

    def on_apply(self, node: SimNode, rec: AppliedRec) -> None:
        prev = self.applied_at.setdefault(rec[0], rec)
        if prev != rec:
            self.fail(f"state machine safety: index {rec[0]} applied as {prev} and as {rec} (node {node.id})")
        c = self.committed.get(rec[0])
        if c is not None and (c[0], c[1], c[2]) != rec[1:]:
            self.fail(f"node {node.id} applied {rec} but {c} was committed there")

    def on_image(self, node: SimNode, image: Image, meta: SnapshotMeta) -> None:
        expect = INITIAL_INDEX + 1
        for rec in image:
            if rec[0] != expect:
                self.fail(f"snapshot image for node {node.id} has a gap at {expect}")
            expect += 1
            prev = self.applied_at.setdefault(rec[0], rec)
            if prev != rec:
                self.fail(f"state machine safety: snapshot image has {rec} where {prev} was applied")
        if expect - 1 != meta.index:
            self.fail(f"snapshot image ends at {expect - 1}, meta says {meta.index}")
        if image and image[-1][1] != meta.term:
            self.fail(f"snapshot meta term {meta.term} != term of its last entry {image[-1][1]}")
        for rec in image:
            self._record_committed(rec[0], rec[1], rec[2], rec[3], node.r.term)

    # -- reads -------------------------------------------------------------------------------------------

    def on_read_state(self, node: SimNode, index: int, ctx: bytes) -> None:
        req = self.reads.pop(ctx, None)
        if req is None:
            self.fail(f"node {node.id}: read state for unknown or already served context {ctx!r}")
            return
        if req.node != node.id or req.incarnation != node.incarnation:
            self.fail(f"node {node.id}: read state for a request made to node {req.node}")
        if index < req.min_index:
            self.fail(
                f"linearizability: node {node.id} (term {node.r.term}) returned read index {index} for "
                f"{ctx!r} requested at t={req.time} when {req.min_index} was already committed"
            )
        if index > node.r.log.committed:
            self.fail(f"read index {index} beyond the reader's commit {node.r.log.committed}")
        self.reads_served += 1

    # -- whole-cluster checks ------------------------------------------------------------------------

    def full_check(self) -> None:
        views = []
        for node in self.sim.nodes.values():
            if node.raft is not None:
                log = node.raft.log
                views.append((node.id, log.snap_index, log.entries))
                for pos, e in enumerate(log.entries):
                    if e.index != log.snap_index + 1 + pos:
                        self.fail(f"node {node.id}: in-memory log index {e.index} at position {pos}")
                settled = node.inflight is None and log.pending_snapshot is None
                if settled and node.sm.applied != log.applied:
                    self.fail(f"node {node.id}: state machine at {node.sm.applied}, core says {log.applied}")
                if settled and node.raft.conf != node.sm.conf:
                    self.fail(
                        f"node {node.id}: core membership {node.raft.conf.to_lists()} differs from the one "
                        f"applied at {node.sm.applied}: {node.sm.conf.to_lists()}"
                    )
            else:
                views.append((node.id, node.store.snap.index, node.store.entries))
            st = node.store
            if st.hard.commit > st.last_index():
                self.fail(f"node {node.id}: persisted commit {st.hard.commit} beyond stored log")
        for a, b in itertools.combinations(views, 2):
            self._check_pair(a, b)

    def _check_pair(self, a: tuple[int, int, list[Entry]], b: tuple[int, int, list[Entry]]) -> None:
        ida, sa, ea = a
        idb, sb, eb = b
        lo = max(sa, sb) + 1
        hi = min(sa + len(ea), sb + len(eb))
        i = hi
        while i >= lo and ea[i - sa - 1].term != eb[i - sb - 1].term:
            i -= 1
        for j in range(lo, i + 1):
            x, y = ea[j - sa - 1], eb[j - sb - 1]
            if x.term != y.term or x.data != y.data or x.kind != y.kind:
                self.fail(
                    f"log matching: nodes {ida} and {idb} agree at {i} but differ at {j}: "
                    f"{x.term}:{x.data!r} vs {y.term}:{y.data!r}"
                )

    def final_check(self) -> None:
        self.full_check()
        for node in self.sim.nodes.values():
            expect = INITIAL_INDEX + 1
            for rec in node.sm.log:
                if rec[0] != expect:
                    self.fail(f"node {node.id}: state machine has a gap at {expect}")
                expect += 1
                if self.applied_at.get(rec[0]) != rec:
                    self.fail(f"node {node.id}: state machine differs at {rec[0]}")
        live = self.sim.live_members()
        for data, (term, index) in self.acked.items():
            for node in live:
                got = node.applied_record(index)
                if got is None or got[1] != term or got[3] != data:
                    self.fail(
                        f"acknowledged proposal {data!r} at {index}@{term} lost on node {node.id}: {got}"
                    )


# ---- the simulator ---------------------------------------------------------------------------------


class Sim:
    def __init__(self, seed: int, opts: Options | None = None, net: Net | None = None) -> None:
        self.seed = seed
        self.opts = opts or Options()
        self.net = net or Net()
        self.rng = random.Random(seed)
        self.now = 0
        self.queue: list[tuple[int, int, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.cut: set[tuple[int, int]] = set()
        self._link_clock: dict[tuple[int, int], int] = {}
        self.nodes: dict[int, SimNode] = {}
        self.trace: deque[tuple[Any, ...]] = deque(maxlen=400)
        self.stats: Counter[str] = Counter()
        self.checker = Checker(self)
        self.client_rate = 0.0
        self.read_rate = 0.0
        self.removed: set[int] = set()
        self.dirty: set[int] = set()
        self.on_message: Callable[[int, Message], None] | None = None
        """Test hook, called for every delivered message (receiver, message)."""
        self._counter = 0
        self._next_id = self.opts.voters + 1
        conf = ConfState.of(range(1, self.opts.voters + 1))
        for i in range(1, self.opts.voters + 1):
            store = Store(
                HardState(INITIAL_TERM, 0, INITIAL_INDEX),
                SnapshotMeta(INITIAL_INDEX, INITIAL_TERM, conf),
                (),
                [],
            )
            self._create(i, store)

    # -- bookkeeping ---------------------------------------------------------------------------------

    def event(self, *ev: Any) -> None:
        self.trace.append((self.now, *ev))

    def fail(self, msg: str) -> None:
        tail = "\n".join(f"  t={ev[0]} " + " ".join(map(str, ev[1:])) for ev in list(self.trace)[-40:])
        raise InvariantViolation(f"{msg}\n(seed {self.seed}, t={self.now})\nlast events:\n{tail}")

    def describe(self) -> str:
        lines = []
        for n in self.nodes.values():
            if n.raft is None:
                lines.append(f"  node {n.id}: down{' (decommissioned)' if n.decommissioned else ''}")
            else:
                s = n.raft.status()
                lines.append(
                    f"  node {n.id}: {s.role.name} term={s.term} leader={s.leader} commit={s.commit} "
                    f"applied={s.applied} log=[{s.first_index},{s.last_index}] conf={s.conf.to_lists()} "
                    f"progress={s.progress} transferee={s.transferee}"
                )
        lines.append(f"  cut={sorted(self.cut)} net={self.net}")
        return "\n".join(lines)

    def _create(self, node_id: int, store: Store) -> SimNode:
        durable = self.opts.durable_sm
        if durable is None:
            durable = self.rng.random() < 0.5
        if durable and store.sm is None:
            store.sm = StateMachine(store.snap.index, list(store.snap_image), store.snap.conf)
        period = self.rng.choice((TICK - 1, TICK, TICK + 1)) if self.opts.skew else TICK
        node = SimNode(node_id, store, durable, period, self.rng.randrange(period))
        self.nodes[node_id] = node
        self._start(node)
        return node

    def _config(self, node_id: int) -> Config:
        o = self.opts
        return Config(
            id=node_id,
            election_tick=o.election_tick,
            heartbeat_tick=o.heartbeat_tick,
            max_message_bytes=o.max_message_bytes,
            max_inflight=o.max_inflight,
            max_apply_bytes=o.max_apply_bytes,
            check_quorum=o.check_quorum,
            pre_vote=o.pre_vote,
        )

    def _start(self, node: SimNode) -> None:
        st = node.store
        if not node.durable_sm:
            node.sm = node._sm_from_snapshot()
        else:
            assert st.sm is not None
            node.sm = st.sm
        node.incarnation += 1
        rng = random.Random(self.seed * 7919 + node.id * 104729 + node.incarnation)
        log = RaftLog(st.snap.index, st.snap.term, [_copy_entry(e) for e in st.entries])
        node.raft = RaftNode(
            self._config(node.id),
            rng,
            node.sm.conf,
            hard_state=st.hard,
            log=log,
            applied=node.sm.applied,
        )
        node.snap_data = {}
        node.proposals = {}
        node.inflight = None
        node.seen_commit = node.last_commit = node.raft.log.committed
        self.event("start", node.id, f"inc={node.incarnation}", f"hs={st.hard}", f"applied={node.sm.applied}")

    # -- node lifecycle --------------------------------------------------------------------------------

    def crash(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.raft is None:
            return
        self.event("crash", node_id)
        self.stats["crashes"] += 1
        node.raft = None
        node.snap_data = {}
        node.proposals = {}
        node.inflight = None
        self.dirty.discard(node_id)

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.raft is not None or node.decommissioned:
            return
        self._start(node)

    def decommission(self, node_id: int) -> None:
        self.crash(node_id)
        self.nodes[node_id].decommissioned = True

    def add_node(self) -> SimNode:
        """A brand-new replica: empty log, knows no membership until a snapshot arrives."""
        node_id = self._next_id
        self._next_id += 1
        store = Store(HardState(), SnapshotMeta(0, 0, ConfState(frozenset())), (), [])
        return self._create(node_id, store)

    def alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def leader(self) -> SimNode | None:
        """The live leader with the highest term (stale leaders may linger briefly)."""
        best: SimNode | None = None
        for n in self.alive():
            if n.r.role == Role.LEADER and (best is None or n.r.term > best.r.term):
                best = n
        return best

    def steady_leader(self, ticks: int = 10) -> SimNode:
        """Wait for a first leader, let the cluster run ``ticks`` more, return the leader."""
        self.run_until(lambda: self.leader() is not None, 100, "first leader")
        self.run_ticks(ticks)
        ld = self.leader()
        assert ld is not None, f"no leader (seed {self.seed})\n{self.describe()}"
        return ld

    def live_members(self) -> list[SimNode]:
        ld = self.leader()
        if ld is None:
            return []
        return [self.nodes[i] for i in sorted(ld.r.conf.members) if i in self.nodes and self.nodes[i].alive]

    # -- network ------------------------------------------------------------------------------------------

    def _push(self, at: int, ev: tuple[Any, ...]) -> None:
        heapq.heappush(self.queue, (at, next(self._seq), ev))

    def _delay(self) -> int:
        net = self.net
        if net.spike and self.rng.random() < net.spike:
            return self.rng.randint(net.min_delay, net.spike_delay)
        return self.rng.randint(net.min_delay, net.max_delay)

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[int]) -> None:
        gs = [set(g) for g in groups]
        for a, b in itertools.permutations(range(len(gs)), 2):
            for x in gs[a]:
                for y in gs[b]:
                    self.cut.add((x, y))

    def heal(self) -> None:
        self.cut.clear()

    def _send(self, src: SimNode, m: Message) -> None:
        if m.type == MessageType.SNAPSHOT:
            # Snapshots stream in the background: the runtime reads its state machine a
            # little later, and may by then have applied (and thus raise the index) further.
            self._push(
                self.now + self.rng.randint(0, 2 * TICK), ("snapshot_send", src.id, src.incarnation, m)
            )
            return
        self._transmit(src, m, None)

    def _transmit(self, src: SimNode, m: Message, payload: Image | None) -> None:
        self.stats["sent"] += 1
        link = (src.id, m.to)
        dst = self.nodes.get(m.to)
        if link in self.cut or dst is None:
            self._dropped(src, m, "cut")
            if self.net.report_unreachable and self.rng.random() < self.net.report_unreachable:
                self._push(self.now + self._delay(), ("unreachable", src.id, src.incarnation, m.to))
            return
        if self.net.loss and self.rng.random() < self.net.loss:
            self._dropped(src, m, "lost")
            return
        copies = 2 if self.net.dup and self.rng.random() < self.net.dup else 1
        for copy in range(copies):
            ev = ("msg", src.id, src.incarnation, dst.incarnation, _copy_msg(m), payload, copy == 0)
            at = self.now + self._delay()
            if self.net.fifo:
                at = max(at, self._link_clock.get(link, 0))
                self._link_clock[link] = at
            self._push(at, ev)

    def _dropped(self, src: SimNode, m: Message, why: str) -> None:
        self.stats["dropped"] += 1
        if m.type == MessageType.SNAPSHOT:
            self._push(self.now + self._delay(), ("snapshot_report", src.id, src.incarnation, m.to, False))

    def drop_queued(self, pos: int) -> None:
        """Lose one message already in flight, picked by ``pos``.

        A lost snapshot is reported failed to its sender, as the runtime's transport does: it
        streams a snapshot over one request and always learns how that request ended.
        """
        msgs = [i for i, ev in enumerate(self.queue) if ev[2][0] == "msg"]
        if not msgs:
            return
        _, _, ev = self.queue.pop(msgs[pos % len(msgs)])
        heapq.heapify(self.queue)
        self.stats["dropped"] += 1
        _, src_id, src_inc, _, m, _, primary = ev
        if m.type == MessageType.SNAPSHOT and primary:
            self._push(self.now + self._delay(), ("snapshot_report", src_id, src_inc, m.to, False))

    def _fill_snapshot(self, src: SimNode, m: Message) -> tuple[Message, Image]:
        meta = m.snapshot
        if meta is None:
            self.fail(f"node {src.id} sent a SNAPSHOT message without meta")
            raise AssertionError
        sm = src.sm
        r = src.r
        if meta.index > sm.applied:
            self.fail(f"node {src.id}: snapshot meta {meta} beyond its applied index {sm.applied}")
        if meta.index == sm.applied and meta.conf != sm.conf:
            self.fail(f"node {src.id}: snapshot conf {meta.conf} != conf {sm.conf} at {meta.index}")
        if meta.index < sm.applied and self.rng.random() < self.opts.raise_snapshot:
            term = r.log.term(sm.applied)
            assert term is not None
            meta = SnapshotMeta(sm.applied, term, sm.conf)
            m = replace(m, snapshot=meta)
        self.stats["snapshots_sent"] += 1
        self.event("snapshot->", src.id, m.to, meta.index, meta.term)
        return m, sm.image(meta.index)

    def _deliver_due(self) -> None:
        q = self.queue
        while q and q[0][0] <= self.now:
            _, _, ev = heapq.heappop(q)
            kind = ev[0]
            if kind == "msg":
                self._deliver(*ev[1:])
            elif kind == "snapshot_send":
                _, sender, inc, m = ev
                node = self.nodes[sender]
                if node.raft is not None and node.incarnation == inc:
                    m, payload = self._fill_snapshot(node, m)
                    self._transmit(node, m, payload)
            elif kind == "snapshot_report":
                _, sender, inc, to, ok = ev
                node = self.nodes[sender]
                if node.raft is not None and node.incarnation == inc:
                    node.raft.report_snapshot(to, ok)
                    self.dirty.add(sender)
            elif kind == "ready_done":
                _, node_id, inc = ev
                node = self.nodes[node_id]
                rd = node.inflight
                if node.raft is not None and node.incarnation == inc and rd is not None:
                    node.inflight = None
                    self._handle_ready(node, node.raft, rd)
                    self.dirty.add(node_id)
            elif kind == "no_replica":
                _, sender, inc, to = ev
                node = self.nodes[sender]
                if node.raft is not None and node.incarnation == inc:
                    node.raft.request_snapshot(to)
                    self.dirty.add(sender)
            elif kind == "unreachable":
                _, sender, inc, to = ev
                node = self.nodes[sender]
                if node.raft is not None and node.incarnation == inc:
                    node.raft.report_unreachable(to)
                    self.dirty.add(sender)

    def _deliver(
        self, src_id: int, src_inc: int, dst_inc: int, m: Message, payload: Image | None, primary: bool
    ) -> None:
        dst = self.nodes[m.to]
        ok = dst.raft is not None and dst.incarnation == dst_inc and (src_id, m.to) not in self.cut
        if m.type == MessageType.SNAPSHOT and primary:
            self._push(self.now, ("snapshot_report", src_id, src_inc, m.to, ok))
        if not ok:
            self.stats["dropped"] += 1
            return
        if payload is not None and m.snapshot is not None:
            dst.snap_data[(m.snapshot.index, m.snapshot.term)] = payload
        self.stats["delivered"] += 1
        self.event(
            "deliver",
            src_id,
            "->",
            m.to,
            m.type.name,
            f"t{m.term}",
            f"i{m.index}",
            f"lt{m.log_term}",
            f"n{len(m.entries)}",
            f"c{m.commit}",
            "R" if m.reject else "",
            m.reject_hint,
        )
        if self.on_message is not None:
            self.on_message(m.to, m)
        log = dst.r.log
        if m.type in (MessageType.APPEND, MessageType.HEARTBEAT) and log.snap_index == 0 and not log.entries:
            # Like the host, which answers "no replica here" and has the leader send a snapshot
            # (the answer travels like any message: late, sometimes very late).
            self._push(self.now + self._delay(), ("no_replica", src_id, src_inc, m.to))
        dst.r.step(m)
        self.checker.after_call(dst)
        self.dirty.add(dst.id)

    # -- the runtime loop -------------------------------------------------------------------------------

    def run(self, units: int) -> None:
        for _ in range(units):
            self.now += 1
            self._deliver_due()
            for node in self.nodes.values():
                if node.raft is not None and (self.now - node.phase) % node.period == 0:
                    node.raft.tick()
                    self.checker.after_call(node)
                    self.dirty.add(node.id)
            if self.client_rate and self.rng.random() < self.client_rate:
                self.client_propose()
            if self.read_rate and self.rng.random() < self.read_rate:
                self.client_read()
            self.process()
            if self.now % (TICK * 5) == 0:
                self.checker.full_check()

    def run_ticks(self, ticks: int) -> None:
        self.run(ticks * TICK)

    def run_until(self, pred: Callable[[], bool], ticks: int, what: str) -> int:
        """Run until ``pred()``; returns the ticks it took, fails after ``ticks``."""
        for t in range(ticks * TICK):
            if pred():
                return t // TICK
            self.run(1)
        if pred():
            return ticks
        raise LivenessFailure(
            f"{what}: not reached within {ticks} ticks (seed {self.seed})\n{self.describe()}"
        )

    def process(self) -> None:
        while self.dirty:
            for node_id in sorted(self.dirty):
                self.dirty.discard(node_id)
                node = self.nodes[node_id]
                if node.raft is not None:
                    self._process_node(node)

    def _process_node(self, node: SimNode) -> None:
        for _ in range(10_000):
            r = node.raft
            if r is None or node.inflight is not None or not r.has_ready():
                return
            rd = r.ready()
            self.checker.on_ready(node, rd)
            if (
                self.opts.send_ahead
                and r.role == Role.LEADER
                and (
                    rd.hard_state is None
                    or (rd.hard_state.term, rd.hard_state.vote)
                    == (node.store.hard.term, node.store.hard.vote)
                )
            ):
                early = (MessageType.APPEND, MessageType.HEARTBEAT)
                ahead = [m for m in rd.messages if m.type in early]
                rd.messages = [m for m in rd.messages if m.type not in early]
                for m in ahead:
                    self._send(node, m)
            if node.ready_delay is not None:
                delay = node.ready_delay
            else:
                delay = self.rng.randint(0, self.opts.ready_delay) if self.opts.ready_delay else 0
            if delay:
                node.inflight = rd
                self._push(self.now + delay, ("ready_done", node.id, node.incarnation))
                return
            self._handle_ready(node, r, rd)
        self.fail(f"node {node.id}: has_ready() never settles")

    def _handle_ready(self, node: SimNode, r: RaftNode, rd: Ready) -> None:
        st = node.store
        # 1. persist
        if rd.snapshot is not None:
            self._install_snapshot(node, rd.snapshot)
        if rd.entries:
            first = rd.entries[0].index
            if first <= st.hard.commit and any(
                st.term(e.index) not in (None, e.term) for e in rd.entries if e.index <= st.hard.commit
            ):
                self.fail(f"node {node.id}: Ready overwrites persisted committed entries from {first}")
            del st.entries[first - st.snap.index - 1 :]
            st.entries.extend(_copy_entry(e) for e in rd.entries)
        if rd.hard_state is not None:
            before, st.hard = st.hard, rd.hard_state
            self.checker.on_persist(node, before, rd.hard_state)
        if rd.must_sync and self.opts.crash_in_ready and self.rng.random() < self.opts.crash_in_ready:
            self.event("crash-point", node.id, "after persist")
            self.crash(node.id)
            return
        # 2. send and 3. apply (or the other way round)
        if not self.opts.apply_before_send:
            for m in rd.messages:
                self._send(node, m)
        if rd.committed_entries and self.opts.crash_in_ready and self.rng.random() < self.opts.crash_in_ready:
            self.event("crash-point", node.id, "before apply")
            self.crash(node.id)
            return
        for e in rd.committed_entries:
            self._apply(node, r, e)
        if self.opts.apply_before_send:
            for m in rd.messages:
                self._send(node, m)
        for rs in rd.read_states:
            self.checker.on_read_state(node, rs.index, rs.context)
        # 4. advance
        r.advance(rd)
        self.checker.after_call(node)
        if (
            self.opts.compact_prob
            and node.sm.applied - r.log.snap_index >= self.opts.compact_min
            and self.rng.random() < self.opts.compact_prob
        ):
            keep = self.rng.randint(0, self.opts.compact_keep) if self.opts.compact_keep else 0
            self.compact(node, keep)

    def _install_snapshot(self, node: SimNode, meta: SnapshotMeta) -> None:
        image = node.snap_data.get((meta.index, meta.term))
        if image is None:
            self.fail(f"node {node.id}: Ready.snapshot {meta} that this incarnation never received")
            return
        if meta.index <= node.sm.applied:
            self.fail(f"node {node.id}: snapshot {meta.index} would roll back applied {node.sm.applied}")
        self.checker.on_image(node, image, meta)
        self.event("install", node.id, meta.index, meta.term, meta.conf.to_lists())
        self.stats["snapshots_installed"] += 1
        st = node.store
        st.snap = meta
        st.snap_image = image
        st.entries = []
        sm = StateMachine(meta.index, list(image), meta.conf)
        if node.durable_sm:
            st.sm = sm
        node.sm = sm
        node.snap_data = {k: v for k, v in node.snap_data.items() if k[0] > meta.index}
        for key in [k for k in node.proposals if k[1] <= meta.index]:
            rec = node.applied_record(key[1])
            if rec is not None and rec[1] == key[0]:
                self._ack(node, key, rec)
            del node.proposals[key]

    def _apply(self, node: SimNode, r: RaftNode, e: Entry) -> None:
        sm = node.sm
        if e.index != sm.applied + 1:
            self.fail(f"node {node.id}: applies {e.index} after {sm.applied}")
        if node.store.term(e.index) != e.term:
            self.fail(f"node {node.id}: applies {e.index}@{e.term} that is not what it persisted")
        if e.kind == EntryKind.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            # The runtime keeps its own membership, derived from what it applies like the rest
            # of its state (with the shared rule, as the storage state machine does); the
            # checker compares it with the core's (``Checker.full_check``).
            sm.conf = sm.conf.changed(cc)
            r.apply_conf_change(cc)
            self.event("conf", node.id, e.index, cc.kind.name, cc.node, sm.conf.to_lists())
            if cc.kind == ConfChangeKind.REMOVE:
                self.removed.add(cc.node)
        rec = (e.index, e.term, int(e.kind), e.data)
        self.checker.on_apply(node, rec)
        sm.log.append(rec)
        sm.applied = e.index
        key = (e.term, e.index)
        if key in node.proposals:
            self._ack(node, key, rec)
            del node.proposals[key]
        self.checker.after_call(node)

    def _ack(self, node: SimNode, key: tuple[int, int], rec: AppliedRec) -> None:
        data = node.proposals[key]
        if rec[3] != data:
            self.fail(f"node {node.id}: proposal {data!r} at {key} applied as {rec}")
        self.checker.acked[data] = key
        self.stats["acked"] += 1

    def compact(self, node: SimNode, keep: int = 0) -> None:
        """Compact the log (in the core and in the store) at ``keep`` entries below applied."""
        r = node.r
        sm = node.sm
        index = sm.applied - keep
        recent = sm.log[len(sm.log) - keep :] if keep else []
        if any(rec[2] == EntryKind.CONF_CHANGE for rec in recent):
            index = sm.applied  # the membership at ``index`` would differ from the current one
        term = r.log.term(index)
        if term is None or index <= r.log.snap_index:
            return
        r.compact(index, term)
        st = node.store
        st.entries = [e for e in st.entries if e.index > index]
        st.snap = SnapshotMeta(index, term, sm.conf)
        st.snap_image = sm.image(index)
        self.stats["compactions"] += 1

    # -- clients --------------------------------------------------------------------------------------

    def propose(self, node: SimNode, data: bytes | None = None) -> tuple[int, int] | None:
        if data is None:
            self._counter += 1
            data = b"c%d" % self._counter
        try:
            term, index = node.r.propose(data)
        except (NotLeader, ProposalDropped):
            return None
        node.proposals[(term, index)] = data
        self.event("propose", node.id, term, index, data)
        self.stats["proposed"] += 1
        self.checker.after_call(node)
        self.dirty.add(node.id)
        return term, index

    def client_propose(self) -> None:
        alive = self.alive()
        if not alive:
            return
        node = self.rng.choice(alive)
        if node.r.role != Role.LEADER:
            try:
                node.r.propose(b"never")
            except NotLeader as e:
                hint = self.nodes.get(e.leader)
                if hint is None or hint.raft is None:
                    return
                node = hint
            except ProposalDropped:
                return
            else:
                self.fail(f"node {node.id} ({node.r.role.name}) accepted a proposal")
        self.propose(node)

    def read(self, node: SimNode) -> bytes | None:
        self._counter += 1
        ctx = b"r%d" % self._counter
        # Every commit index known anywhere: durable ones, and in-memory ones except a single
        # voter's (it counts itself before its entries are on disk).
        min_index = max(
            [
                self.checker.max_commit,
                *(
                    n.r.log.committed
                    for n in self.alive()
                    if len(n.r.conf.voters) > 1 or n.r.role != Role.LEADER
                ),
            ]
        )
        try:
            node.r.read_index(ctx)
        except NotLeader:
            return None
        self.checker.reads[ctx] = _Read(node.id, node.incarnation, min_index, self.now)
        self.event("read", node.id, ctx, min_index)
        self.checker.after_call(node)
        self.dirty.add(node.id)
        return ctx

    def client_read(self) -> None:
        alive = [n for n in self.alive() if n.r.role == Role.LEADER]
        if alive:
            self.read(self.rng.choice(alive))

    # -- membership -------------------------------------------------------------------------------------

    def propose_conf_change(self, node: SimNode, cc: ConfChange) -> tuple[int, int] | None:
        try:
            term, index = node.r.propose_conf_change(cc)
        except RaftError:
            return None
        node.proposals[(term, index)] = cc.encode()
        self.event("propose-cc", node.id, term, index, cc.kind.name, cc.node)
        self.stats["conf_changes_proposed"] += 1
        self.checker.after_call(node)
        self.dirty.add(node.id)
        return term, index

    # -- healing and liveness -------------------------------------------------------------------------

    def quiesce_faults(self) -> None:
        self.net = Net(max_delay=min(self.net.max_delay, 12), fifo=self.net.fifo)
        self.heal()
        self.opts.crash_in_ready = 0.0
        self.client_rate = 0.0
        self.read_rate = 0.0
        for node in self.nodes.values():
            if not node.alive and not node.decommissioned:
                self.restart(node.id)

    def check_liveness(self, ticks: int | None = None) -> int:
        """With faults stopped: a leader appears and a new proposal commits on all live members.

        Returns the ticks it took; raises ``LivenessFailure`` beyond ``ticks`` (by default 30
        election timeouts: without pre-vote, a voter that cannot win keeps bumping the term,
        and two voters can duel for a dozen timeouts; with pre-vote it is a few).
        """
        if ticks is None:
            ticks = 30 * self.opts.election_tick
        self.quiesce_faults()
        start = self.now
        deadline = self.now + ticks * TICK
        self._counter += 1
        data = b"live%d" % self._counter
        placed: tuple[int, int] | None = None
        while self.now < deadline:
            self.run(1)
            ld = self.leader()
            if ld is None:
                continue
            if placed is not None:
                rec = self.checker.applied_at.get(placed[1])
                if (rec is not None and rec[3] != data) or (
                    placed[1] > ld.r.log.snap_index and ld.r.log.term(placed[1]) != placed[0]
                ):
                    placed = None  # lost with its leader: propose again
            if placed is None:
                placed = self.propose(ld, data)
                continue
            members = self.live_members()
            if members and all(
                (rec := n.applied_record(placed[1])) is not None and rec[3] == data for n in members
            ):
                return (self.now - start) // TICK
        raise LivenessFailure(
            f"no proposal committed on all live members within {ticks} ticks after healing "
            f"(seed {self.seed}, placed={placed})\n{self.describe()}"
        )

    def finish(self, ticks: int | None = None) -> int:
        took = self.check_liveness(ticks)
        self.run_ticks(5)
        self.checker.final_check()
        return took


# ---- fault injection --------------------------------------------------------------------------------


def random_fault(sim: Sim, crash: bool = True) -> str:
    """One random nemesis action; returns its name."""
    rng = sim.rng
    ids = [n.id for n in sim.nodes.values() if not n.decommissioned]
    roll = rng.random()
    if roll < 0.15:
        sim.heal()
        return "heal"
    if roll < 0.27:
        rng.shuffle(ids)
        k = rng.randint(1, max(1, len(ids) // 2))
        sim.heal()
        sim.partition(ids[:k], ids[k:])
        return f"partition {sorted(ids[:k])} | {sorted(ids[k:])}"
    if roll < 0.37:
        ld = sim.leader()
        sim.heal()
        if ld is not None:
            sim.isolate(ld.id)
            return f"isolate leader {ld.id}"
        return "heal"
    if roll < 0.45 and len(ids) >= 3:
        rng.shuffle(ids)
        bridge = ids[0]
        rest = ids[1:]
        k = rng.randint(1, len(rest) - 1)
        sim.heal()
        sim.partition(rest[:k], rest[k:])
        return f"bridge {bridge} between {sorted(rest[:k])} and {sorted(rest[k:])}"
    if roll < 0.55 and len(ids) >= 2:
        for _ in range(rng.randint(1, 3)):
            a, b = rng.sample(ids, 2)
            sim.cut.add((a, b))
        return "asymmetric cuts"
    if roll < 0.68:
        sim.net = Net(
            loss=rng.choice((0.0, 0.02, 0.1, 0.3)),
            dup=rng.choice((0.0, 0.05, 0.2)),
            max_delay=rng.choice((3, 12, 25)),
            spike=rng.choice((0.0, 0.02, 0.1)),
            fifo=rng.random() < 0.3,
        )
        return f"net {sim.net}"
    if crash and roll < 0.82:
        alive = [n for n in sim.alive() if not n.decommissioned]
        if alive:
            ld = sim.leader()
            victim = ld if ld is not None and rng.random() < 0.4 else rng.choice(alive)
            sim.crash(victim.id)
            return f"crash {victim.id}"
    if roll < 0.88:
        ld = sim.leader()
        if ld is not None and len(ld.r.progress) > 1:
            # A stale "no replica here" report reaching the leader long after the fact.
            to = rng.choice(sorted(set(ld.r.progress) - {ld.id}))
            ld.r.request_snapshot(to)
            sim.dirty.add(ld.id)
            return f"request_snapshot {ld.id} -> {to}"
    if roll < 0.95:
        down = [n for n in sim.nodes.values() if not n.alive and not n.decommissioned]
        if down:
            node = rng.choice(down)
            sim.restart(node.id)
            return f"restart {node.id}"
    return "nothing"


def membership_step(sim: Sim, max_voters: int = 5, min_voters: int = 3, max_learners: int = 2) -> str:
    """One random one-at-a-time membership change proposed to the current leader."""
    ld = sim.leader()
    if ld is None:
        return "no leader"
    r = ld.r
    conf = r.conf
    rng = sim.rng
    choices: list[str] = []
    caught_up = [
        n for n in sorted(conf.learners) if n in r.progress and r.progress[n].match >= r.log.committed
    ]
    if caught_up and len(conf.voters) < max_voters:
        choices += ["promote"] * 3
    if len(conf.learners) < max_learners:
        choices.append("add")
    if len(conf.voters) > min_voters:
        choices.append("remove_voter")
    if conf.learners:
        choices.append("remove_learner")
    if not choices:
        return "nothing to change"
    what = rng.choice(choices)
    if what == "promote":
        cc = ConfChange(ConfChangeKind.ADD_VOTER, rng.choice(caught_up))
    elif what == "add":
        node = sim.add_node()
        cc = ConfChange(ConfChangeKind.ADD_LEARNER, node.id)
    elif what == "remove_voter":
        cc = ConfChange(ConfChangeKind.REMOVE, rng.choice(sorted(conf.voters - {ld.id})))
    else:
        cc = ConfChange(ConfChangeKind.REMOVE, rng.choice(sorted(conf.learners)))
    placed = sim.propose_conf_change(ld, cc)
    return f"{what} {cc.node}: {'proposed' if placed else 'refused'}"


def retire_removed(sim: Sim) -> None:
    """Stop some replicas whose removal was applied somewhere (the rest linger as zombies)."""
    for node_id in sorted(sim.removed):
        node = sim.nodes.get(node_id)
        if node is not None and not node.decommissioned and sim.rng.random() < 0.5:
            sim.decommission(node_id)
