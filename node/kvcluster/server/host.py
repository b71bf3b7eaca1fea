"""The multi-raft host: every partition replica of this node, driven by one loop.

Each loop turn collects a ``Ready`` from every replica that has work and
turns them into a single storage batch (one transaction, one fsync for all
partitions), then sends the messages, settles the proposals and reads whose
entries were applied, and acknowledges the Readies. Ticks are one timer for
the whole node, so heartbeats of all partitions towards a peer leave in the
same frame.

Storage failures are fatal by design (fail-stop): a node that cannot persist
must not answer as if it had, so the host stops and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kvcluster.keyspace import META_PARTITION, PartitionDescriptor, key_hash
from kvcluster.raft import (
    ConfChange,
    ConfChangeKind,
    Config,
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
)
from kvcluster.storage import (
    AppliedState,
    Batch,
    BatchResult,
    Delete,
    Expire,
    GroupWrite,
    Load,
    NewReplica,
    Outcome,
    Put,
    ReplicaRecord,
    Store,
    snapshot_descriptor,
)
from kvcluster.storage import commands as cmd_codec
from kvcluster.storage.dump import PartitionDump
from kvcluster.storage.history import Event, KeyFilter
from kvcluster.transport import Frame, PeerLinks, PeerRPC, PeerUnavailable, pack
from kvcluster.transport.codec import message_to_wire

from .config import NodeConfig
from .errors import (
    BusySignal,
    FrozenSignal,
    NotHereSignal,
    NotLeaderSignal,
    RoutingSignal,
    StaleEpochSignal,
    Timeout,
    Unavailable,
    WrongRangeSignal,
)
from .metrics import NodeMetrics
from .replica import ProposalLost, Replica, ReplicaGone

log = logging.getLogger(__name__)
T = TypeVar("T")

SNAPSHOT_PATH = "/internal/v1/snapshot"
HELD_VOTES_MAX_PARTITIONS = 256
"""At most this many partitions not (yet) here have vote requests held for them (see ``_hold_vote``)."""


class RaftHost:
    def __init__(
        self,
        cfg: NodeConfig,
        store: Store,
        links: PeerLinks,
        rpc: PeerRPC,
        metrics: NodeMetrics,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.store = store
        self.links = links
        self.rpc = rpc
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.replicas: dict[int, Replica] = {}
        self.leader_hints: dict[int, int] = {}
        self.descriptor_listeners: list[Callable[[PartitionDescriptor], None]] = []
        self.fatal: BaseException | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        """Set (and replaced) after every turn that applied entries: what watch reads wait on."""
        self._changes_ended = False
        self._pending_create: list[tuple[NewReplica, Message]] = []
        self._creating: set[int] = set()
        """Partitions whose creation from a snapshot is queued or being written: already "here"."""
        self._pending_destroy: list[tuple[int, int]] = []
        self._held_votes: dict[int, list[tuple[float, Message]]] = {}
        """Vote requests for partitions not here yet, by partition: (arrival, message)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self.turns = 0
        # Read at scrape time, not recomputed every loop turn.
        metrics.replicas.set_function(lambda: len(self.replicas))
        metrics.leaders.set_function(lambda: sum(1 for r in self.replicas.values() if r.is_leader))

    # ---- life cycle -----------------------------------------------------------------------------

    def start(self, records: list[ReplicaRecord]) -> None:
        for rec in records:
            self._add_replica(rec)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="raft-loop"),
            loop.create_task(self._tick(), name="tick"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for r in self.replicas.values():
            r.fail_all(
                Unavailable("node shutting down"),
                Timeout("node shut down before the write's outcome was known"),
            )

    async def hand_over_leadership(self, timeout: float) -> None:
        """Move every leadership this node holds to the most caught-up other voter.

        Clients then see a leader change of a few milliseconds instead of a
        whole election timeout when a node is stopped on purpose.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and self.fatal is None:
            leading = [r for r in self.replicas.values() if r.is_leader and len(r.core.conf.voters) > 1]
            if not leading:
                return
            for r in leading:
                others = [
                    (p.match, n)
                    for n, p in r.core.progress.items()
                    if n != self.node_id and n in r.core.conf.voters
                ]
                if others and not r.core.transferee:
                    r.core.transfer_leadership(max(others)[1])
            self.wake()
            await asyncio.sleep(0.05)

    def wake(self) -> None:
        self._wake.set()

    def _add_replica(self, rec: ReplicaRecord) -> Replica:
        log_ = RaftLog(rec.snap_index, rec.snap_term, rec.entries)
        config = Config(id=self.node_id, election_tick=self.cfg.election_ticks)
        core = RaftNode(
            config,
            random.Random(self._rng.random()),
            rec.applied.conf,
            hard_state=rec.hard_state,
            log=log_,
            applied=rec.applied.applied_index,
        )
        r = Replica(core, rec.applied)
        self.replicas[rec.applied.partition] = r
        self._announce(rec.applied.descriptor)
        horizon = time.monotonic() - self._vote_hold_s
        for arrived, m in self._held_votes.pop(rec.applied.partition, []):
            if arrived >= horizon:
                core.step(m)
        return r

    @property
    def _vote_hold_s(self) -> float:
        """One election timeout: a candidate that waited longer has started a new election."""
        return self.cfg.election_ticks * self.cfg.tick_ms / 1000

    def _hold_vote(self, partition: int, m: Message) -> None:
        """Keep a vote request for a partition this node is about to create, instead of dropping it.

        The leader of a splitting partition campaigns for each child as soon as
        it applies the split, and a follower creates its child replica only
        when it applies the split too, a heartbeat or so later. A vote request
        dropped in between leaves the child without a leader for a whole
        election timeout (1-2 s by default), and every write to its half of the
        range waits that long: under load, nearly the whole cluster stalls.
        Held, it is stepped into the replica when it is created. Raft allows a
        message to arrive late; a candidate that has moved on has a higher term
        by then and the stale request is refused as any late one is.
        """
        held = self._held_votes.get(partition)
        if held is None:
            if len(self._held_votes) >= HELD_VOTES_MAX_PARTITIONS:
                return
            held = self._held_votes[partition] = []
        held.append((time.monotonic(), m))
        del held[:-4]  # a candidate asks once per election; a few suffice

    def _forget_old_votes(self) -> None:
        horizon = time.monotonic() - self._vote_hold_s
        for partition in [p for p, held in self._held_votes.items() if held[-1][0] < horizon]:
            del self._held_votes[partition]

    def _announce(self, desc: PartitionDescriptor) -> None:
        for listener in self.descriptor_listeners:
            listener(desc)

    # ---- timers and messages ---------------------------------------------------------------------

    async def _tick(self) -> None:
        interval = self.cfg.tick_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for r in self.replicas.values():
                r.core.tick()
            if self._held_votes:
                self._forget_old_votes()
            self.wake()

    def on_frame(self, frame: Frame) -> None:
        answered = False
        for partition, m in frame.messages:
            r = self.replicas.get(partition)
            if r is None or r.removed:
                if m.type in (MessageType.APPEND, MessageType.HEARTBEAT) and partition not in self._creating:
                    # Also for a tombstoned id: the replica may have been added back since. The
                    # snapshot that follows is only accepted if its epoch is newer than the tombstone.
                    self.links.send_unknown(frame.sender, partition)
                    answered = True
                elif r is None and m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                    self._hold_vote(partition, m)
                continue
            r.core.step(m)
        for partition in frame.unknown:
            r = self.replicas.get(partition)
            if r is not None and r.is_leader and frame.sender in r.core.conf.members:
                log.debug("node %d has no replica of partition %d yet: snapshot", frame.sender, partition)
                r.core.request_snapshot(frame.sender)
        if answered:
            self.links.flush()
        self.wake()

    def on_unreachable(self, node: int, messages: list[tuple[int, Message]]) -> None:
        for partition in {p for p, _ in messages}:
            r = self.replicas.get(partition)
            if r is not None:
                r.core.report_unreachable(node)

    def receive_snapshot(self, partition: int, m: Message, data: bytes) -> None:
        """A leader sent a snapshot (with its data) for one of this node's replicas, or a new one."""
        if m.snapshot is None:
            raise ValueError("snapshot message without metadata")
        r = self.replicas.get(partition)
        if r is not None and not r.removed:
            r.core.step(m)
            if r.core.log.pending_snapshot == m.snapshot:
                # Raft took it (it restores on the spot): keep the data for the next storage batch.
                # A snapshot it ignored (at or below what it has) must not replace data still pending.
                r.incoming_snapshot = (m.snapshot, data)
            self.wake()
            return
        desc = snapshot_descriptor(data)
        if self.node_id not in desc.replicas:
            raise RoutingSignal(f"node {self.node_id} is not a member of partition {partition}")
        if self.store.is_tombstoned(partition, desc.epoch):
            raise RoutingSignal(f"partition {partition} at epoch {desc.epoch} was removed from this node")
        if any(
            o.state.descriptor.range.overlaps(desc.range) for o in self.replicas.values() if not o.removed
        ):
            raise RoutingSignal("an older local replica still owns part of the range")
        if partition in self._creating:
            return  # a resend of the snapshot we are already installing
        state = AppliedState(partition, desc, applied_index=m.snapshot.index, applied_term=m.snapshot.term)
        new = NewReplica(
            state, term=m.term, snap_index=m.snapshot.index, snap_term=m.snapshot.term, snapshot=data
        )
        self._pending_create.append((new, m))
        self._creating.add(partition)
        self.wake()

    # ---- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._turn()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # fail-stop: see the module docstring
                self._fail(exc)
                return

    def _fail(self, exc: BaseException) -> None:
        log.critical("storage or state-machine failure, stopping this node: %r", exc, exc_info=exc)
        self.fatal = exc
        for r in self.replicas.values():
            r.fail_all(
                Unavailable("node failed: storage error"),
                Timeout("storage failed; the write's outcome is unknown"),
            )
        if self.on_fatal is not None:
            self.on_fatal(exc)

    async def _turn(self) -> None:
        self.turns += 1
        batch = Batch(destroy=self._pending_destroy)
        self._pending_destroy = []
        creates, self._pending_create = self._pending_create, []
        batch.create = [c for c, _ in creates]
        work: list[tuple[Replica, Ready, GroupWrite]] = []
        for r in list(self.replicas.values()):
            r.open_read = None
            if r.removed or not r.core.has_ready():
                continue
            rd = r.core.ready()
            g = GroupWrite(
                r.partition, entries=rd.entries, hard_state=rd.hard_state, committed=rd.committed_entries
            )
            if rd.hard_state is not None:
                g.vote_changed = (rd.hard_state.term, rd.hard_state.vote) != r.persisted_vote
                r.persisted_vote = (rd.hard_state.term, rd.hard_state.vote)
            if rd.snapshot is not None:
                self._prepare_install(r, rd, g, batch)
            if rd.committed_entries:
                g.compact = self._compaction_point(r)
            if any(m.type == MessageType.SNAPSHOT for m in rd.messages):
                batch.export.append(r.partition)
            if g:
                batch.groups.append(g)
            if r.is_leader and not g.vote_changed:
                rd.messages = self._send_ahead(r, rd.messages)
            work.append((r, rd, g))
        if not work and not batch:
            return
        self.links.flush()
        if batch:
            started = time.perf_counter()
            result = await self.store.write(batch)
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_entries.observe(sum(len(g.entries) for g in batch.groups))
        else:
            result = BatchResult()  # only messages and read states: nothing to persist, no thread hop

        for partition, _epoch in batch.destroy:
            gone = self.replicas.pop(partition, None)
            if gone is not None:
                gone.fail_all(ReplicaGone(f"partition {partition} left this node"))
        for new, m in creates:
            self._creating.discard(new.state.partition)
            self._start_from_snapshot(new, m, result.installed.get(new.state.partition))

        lead_children: set[int] = set()
        merged_away = {gone for applied in result.applied.values() for gone in applied.destroyed}
        for gone_id in merged_away:
            gone = self.replicas.pop(gone_id, None)
            if gone is not None:
                gone.fail_all(ReplicaGone(f"partition {gone_id} was merged"))
        for r, rd, g in work:
            if self.replicas.get(r.partition) is not r:
                continue
            installed = result.installed.get(r.partition)
            if installed is not None:
                r.state = installed
                self.metrics.snapshots_installed.inc()
                self._announce(installed.descriptor)
            applied = result.applied.get(r.partition)
            if applied is not None:
                old_desc = r.state.descriptor
                r.state = applied.state
                self.metrics.applied_entries.inc(len(applied.applied))
                for a in applied.applied:
                    if a.conf_change is not None:
                        r.core.apply_conf_change(a.conf_change)
                    r.settle_applied(a.term, a.index, a.outcome)
                if r.state.descriptor != old_desc:
                    self._announce(r.state.descriptor)
                if r.is_leader:
                    lead_children.update(applied.created)
            for m in rd.messages:
                if m.type == MessageType.SNAPSHOT:
                    cut = result.snapshots.get(r.partition)
                    if cut is None:
                        # The partition was merged away in this very batch: nothing left to send.
                        r.core.report_snapshot(m.to, False)
                        continue
                    m.snapshot = cut[0]
                    asyncio.get_running_loop().create_task(self._send_snapshot(r, m, cut[1]))
                else:
                    self.links.send(r.partition, m)
            for rs in rd.read_states:
                r.settle_read(rs.context, rs.index)
            r.core.advance(rd)
            if g.compact is not None:
                r.core.compact(*g.compact)
            if rd.soft_state is not None:
                self._on_soft_state(r, rd)
            r.wake_applied()
            if self.node_id not in r.state.descriptor.replicas and not r.removed:
                # Removed from the group by an applied membership change: drop the data and tombstone the id.
                r.removed = True
                self._pending_destroy.append((r.partition, r.state.descriptor.epoch))
                self.wake()
        if result.applied or result.installed:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
        for rec in result.created:
            if rec.applied.partition not in self.replicas:
                child = self._add_replica(rec)
                if rec.applied.partition in lead_children:
                    child.core.campaign()  # the parent's leader is the most up to date: skip a timeout
        self.links.flush()
        if (
            self._pending_create
            or self._pending_destroy
            or any(r.core.has_ready() for r in self.replicas.values())
        ):
            self.wake()

    def _send_ahead(self, r: Replica, messages: list[Message]) -> list[Message]:
        """Send a leader's appends and heartbeats now, before its own write; return the rest.

        The leader counts its own entries only once they are on disk (the Raft
        core's ``advance``), so followers may persist them at the same time as
        the leader does: one disk write's latency per commit instead of two.
        Its term and vote are already durable (``vote_changed`` is false), which
        is all these messages depend on.
        """
        later: list[Message] = []
        for m in messages:
            if m.type in (MessageType.APPEND, MessageType.HEARTBEAT):
                self.links.send(r.partition, m)
            else:
                later.append(m)
        return later

    def _prepare_install(self, r: Replica, rd: Ready, g: GroupWrite, batch: Batch) -> None:
        incoming = r.incoming_snapshot
        if incoming is None or incoming[0] != rd.snapshot:
            raise RuntimeError(f"partition {r.partition}: Raft restored a snapshot whose data never arrived")
        g.snapshot = incoming
        r.incoming_snapshot = None
        desc = snapshot_descriptor(incoming[1])
        for other in list(self.replicas.values()):
            if other is r or other.removed or not other.state.descriptor.range.overlaps(desc.range):
                continue
            # A newer descriptor covers it (typically it was merged into this one while we lagged).
            other.removed = True
            batch.destroy.append((other.partition, other.state.descriptor.epoch))

    def _compaction_point(self, r: Replica) -> tuple[int, int] | None:
        applied = r.state.applied_index
        if applied - r.core.log.snap_index < self.cfg.snapshot_entries:
            return None
        index = applied - min(self.cfg.snapshot_keep, applied - r.core.log.snap_index - 1)
        term = r.core.log.term(index)
        return (index, term) if term is not None and index > r.core.log.snap_index else None

    def _start_from_snapshot(self, new: NewReplica, m: Message, installed: AppliedState | None) -> None:
        if installed is None or m.snapshot is None:
            return
        rec = ReplicaRecord(
            installed,
            HardState(new.term, 0, new.snap_index),
            new.snap_index,
            new.snap_term,
        )
        r = self._add_replica(rec)
        self.metrics.snapshots_installed.inc()
        r.core.step(m)
        self.wake()

    def _on_soft_state(self, r: Replica, rd: Ready) -> None:
        assert rd.soft_state is not None
        self.metrics.leader_changes.inc()
        if rd.soft_state.leader:
            self.leader_hints[r.partition] = rd.soft_state.leader
        else:
            self.leader_hints.pop(r.partition, None)
        if rd.soft_state.role != Role.LEADER:
            r.lost_leadership()

    async def _send_snapshot(self, r: Replica, m: Message, data: bytes) -> None:
        body = pack({"partition": r.partition, "message": message_to_wire(m), "data": data})
        log.info(
            "sending a snapshot of partition %d at index %d to node %d (%d bytes)",
            r.partition,
            m.snapshot.index if m.snapshot else 0,
            m.to,
            len(data),
        )
        ok = False
        try:
            status, answer = await self.rpc.call(m.to, SNAPSHOT_PATH, body, timeout=120.0)
            ok = status == 200
            if not ok:
                log.info("node %d refused a snapshot of partition %d: %s", m.to, r.partition, answer[:200])
        except PeerUnavailable as exc:
            log.info("snapshot of partition %d to node %d failed: %s", r.partition, m.to, exc)
        finally:
            # The leader holds the follower in snapshot state until it hears how the send went;
            # without a report (even on cancellation or an unexpected error) it would wait forever.
            self.metrics.snapshots_sent.labels("ok" if ok else "failed").inc()
            if self.replicas.get(r.partition) is r:
                r.core.report_snapshot(m.to, ok)
                self.wake()

    # ---- operations for the API -------------------------------------------------------------------

    def _replica(self, partition: int) -> Replica:
        if self.fatal is not None:
            raise Unavailable("node failed: storage error")
        r = self.replicas.get(partition)
        if r is None or r.removed:
            raise NotHereSignal(f"node {self.node_id} has no replica of partition {partition}")
        return r

    def _check_range(self, r: Replica, key: bytes) -> None:
        h = key_hash(key)
        if not r.state.descriptor.range.contains(h):
            owners = [
                o.state.descriptor for o in self.replicas.values() if o.state.descriptor.range.contains(h)
            ]
            raise WrongRangeSignal([r.state.descriptor, *owners])

    async def propose(self, partition: int, cmd: cmd_codec.Command, timeout: float) -> Outcome:
        r = self._replica(partition)
        if isinstance(cmd, Put | Delete | Expire):
            self._check_range(r, cmd.key)
        if isinstance(cmd, Put | Delete | Expire | Load) and r.state.frozen:
            raise FrozenSignal(f"partition {partition} is being merged")
        try:
            term, index = r.core.propose(cmd_codec.encode(cmd))
        except NotLeader as exc:
            raise NotLeaderSignal(exc.leader) from None
        except ProposalDropped as exc:
            raise BusySignal(str(exc)) from None
        self.metrics.proposals.inc()
        fut = r.track_proposal(term, index)
        self.wake()
        return await self._await_outcome(fut, timeout)

    async def _await_outcome(self, fut: asyncio.Future[Outcome], timeout: float) -> Outcome:
        try:
            outcome = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise Timeout("the write was proposed but its outcome is unknown (timed out)") from None
        except ProposalLost as exc:
            raise BusySignal(str(exc)) from None
        except ReplicaGone:
            raise Timeout("the partition moved while the write was pending; its outcome is unknown") from None
        if outcome.code == "wrong_range":
            raise WrongRangeSignal([d for d in [outcome.descriptor] if d is not None])
        if outcome.code == "frozen":
            raise FrozenSignal("partition is being merged")
        return outcome

    async def barrier(self, partition: int, timeout: float) -> Replica:
        """Wait until this leader may serve a linearizable read of the partition (ReadIndex)."""
        r = self._replica(partition)
        fut = r.join_read()
        self.wake()
        try:
            index = await asyncio.wait_for(fut, timeout)
            await asyncio.wait_for(r.wait_applied(index), timeout)
        except TimeoutError:
            raise NotLeaderSignal(r.core.leader if r.core.leader != self.node_id else 0) from None
        except ReplicaGone:
            raise NotHereSignal(f"partition {partition} left this node") from None
        return r

    async def read(
        self, partition: int, key: bytes, linearizable: bool, timeout: float
    ) -> tuple[bytes, int] | None:
        r = await self.barrier(partition, timeout) if linearizable else self._replica(partition)
        self._check_range(r, key)
        return self._read_store(lambda: self.store.get(key))

    async def scan(
        self, partition: int, prefix: bytes, start: bytes, limit: int, linearizable: bool, timeout: float
    ) -> tuple[PartitionDescriptor, list[tuple[bytes, bytes, int]]]:
        r = await self.barrier(partition, timeout) if linearizable else self._replica(partition)
        desc = r.state.descriptor
        return desc, self._read_store(lambda: self.store.scan(desc.range, prefix, start, limit))

    async def open_dump(self, partition: int, timeout: float) -> PartitionDump:
        """A read of the whole partition at a ReadIndex-confirmed point (a backup's section).

        The barrier proves this replica leads and has applied everything
        committed before the call; the dump's transaction starts after it, so
        its rows are at least that fresh, and its applied state says exactly
        which index they are at.
        """
        r = await self.barrier(partition, timeout)
        confirmed = r.state.applied_index
        try:
            dump = self._read_store(lambda: PartitionDump(self.store.path, partition))
        except KeyError:
            raise NotHereSignal(f"partition {partition} left this node") from None
        if dump.state.applied_index < confirmed:  # cannot happen if the host persists before applying
            dump.close()
            raise Unavailable(f"partition {partition}: the store lags the applied state; retry")
        return dump

    def _read_store(self, read: Callable[[], T]) -> T:
        """A read the disk cannot serve means the disk is failing: stop, as for a failed write.

        Answering 500 and carrying on would leave a node up that can neither
        serve nor persist, and hide the fault from the operator's probes.
        """
        try:
            return read()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise Unavailable("the store is busy; retry") from None
            self._fail(exc)
            raise Unavailable("node failed: storage error") from None
        except sqlite3.DatabaseError as exc:
            self._fail(exc)
            raise Unavailable("node failed: storage error") from None

    def end_changes(self) -> None:
        """Answer every waiting watch read now: the node is stopping (see ``changes``)."""
        self._changes_ended = True
        self._changed.set()

    async def changes(
        self, partition: int, start: int, end: int, after: int, keys: KeyFilter, limit: int, wait: float
    ) -> tuple[AppliedState, list[Event]]:
        """The leader's changes at hashes [start, end) after revision ``after`` (a watch's read).

        Waits up to ``wait`` seconds for one to be applied. Answers at once
        with no changes when there is nothing to wait for: ``after`` is below
        the history floor (compacted), negative ("from now"), or the partition
        no longer reaches ``end`` (it split: the caller splits its segment; the
        changes are those of the partition's part only).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            self._leader_replica(partition)  # the freshest replica; a deposed one would stall the watch
            changed = self._changed
            got = self._read_store(lambda: self.store.history(partition, start, end, after, keys, limit))
            if got is None:
                raise NotHereSignal(f"partition {partition} left this node")
            state, events = got
            rng = state.descriptor.range
            if not rng.contains(start):
                raise WrongRangeSignal([state.descriptor])
            remaining = deadline - loop.time()
            if (
                events
                or after < state.history_floor
                or rng.end < end
                or remaining <= 0
                or self._changes_ended
            ):
                return state, events
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # ---- reshaping (issue 4): run on the partition's leader ---------------------------------------

    def _leader_replica(self, partition: int) -> Replica:
        r = self._replica(partition)
        if not r.is_leader:
            raise NotLeaderSignal(r.core.leader)
        return r

    async def change_membership(
        self, partition: int, kind: ConfChangeKind, node: int, epoch: int, timeout: float
    ) -> PartitionDescriptor:
        """One membership change, idempotent: a change already in place answers the descriptor as is.

        ``epoch`` is what the caller planned against; a descriptor that moved
        on since (another change, a split) refuses the request so the caller
        re-plans instead of acting on a stale picture.
        """
        r = self._leader_replica(partition)
        desc = r.state.descriptor
        done = {
            ConfChangeKind.ADD_LEARNER: node in desc.replicas,
            ConfChangeKind.ADD_VOTER: node in desc.voters,
            ConfChangeKind.REMOVE: node not in desc.replicas,
        }[kind]
        if done:
            return desc
        if desc.epoch != epoch:
            raise StaleEpochSignal(desc)
        if r.state.frozen:
            raise BusySignal(f"partition {partition} is frozen for a merge")
        try:
            term, index = r.core.propose_conf_change(ConfChange(kind, node))
        except NotLeader as exc:
            raise NotLeaderSignal(exc.leader) from None
        except ProposalDropped as exc:
            raise BusySignal(str(exc)) from None
        fut = r.track_proposal(term, index)
        self.wake()
        await self._await_outcome(fut, timeout)
        return r.state.descriptor

    async def transfer(self, partition: int, node: int, timeout: float) -> int:
        """Move leadership to ``node``; returns the leader seen at the end (``node`` on success)."""
        r = self._leader_replica(partition)
        if node == self.node_id:
            return node
        try:
            r.core.transfer_leadership(node)
        except RaftError as exc:
            raise BusySignal(str(exc)) from None
        self.wake()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and self.replicas.get(partition) is r:
            if r.core.leader == node:
                return node
            if not r.core.transferee and r.is_leader:
                r.core.transfer_leadership(node)  # the attempt timed out inside Raft; try again
                self.wake()
            await asyncio.sleep(self.cfg.tick_ms / 1000)
        return r.core.leader

    def progress(self, partition: int) -> dict[str, Any]:
        r = self._leader_replica(partition)
        st = r.core.status()
        return {
            "descriptor": r.state.descriptor.to_dict(),
            "leader": self.node_id,
            "commit": st.commit,
            "last_index": st.last_index,
            "match": {str(n): p[0] for n, p in st.progress.items()},
            "frozen": r.state.frozen,
        }

    def replica_state(self, partition: int) -> dict[str, Any]:
        r = self._replica(partition)
        return {
            "descriptor": r.state.descriptor.to_dict(),
            "applied": r.state.applied_index,
            "frozen": r.state.frozen,
            "leader": r.core.leader,
            "role": r.core.role.name.lower(),
        }

    def meta_state(self) -> dict[str, Any] | None:
        r = self.replicas.get(META_PARTITION)
        return r.state.meta if r is not None else None

    def destroy_replica(self, partition: int, epoch: int) -> None:
        """Drop a replica that the cluster no longer counts (its removal never reached it)."""
        r = self.replicas.get(partition)
        if r is None or r.removed or r.is_leader:
            return
        log.info(
            "dropping replica of partition %d: the map at epoch %d no longer lists this node",
            partition,
            epoch,
        )
        r.removed = True
        self._pending_destroy.append((partition, max(epoch, r.state.descriptor.epoch)))
        self.wake()

    # ---- introspection -----------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        out = []
        for pid, r in sorted(self.replicas.items()):
            st = r.core.status()
            out.append(
                {
                    "partition": pid,
                    "descriptor": r.state.descriptor.to_dict(),
                    "role": st.role.name.lower(),
                    "term": st.term,
                    "leader": st.leader,
                    "commit": st.commit,
                    "applied": r.state.applied_index,
                    "last_index": st.last_index,
                    "first_index": st.first_index,
                    "frozen": r.state.frozen,
                    "progress": {
                        str(n): {"match": p[0], "next": p[1], "state": p[2]} for n, p in st.progress.items()
                    },
                }
            )
        return out

    def all_have_leaders(self) -> bool:
        return all(r.core.leader != 0 for r in self.replicas.values() if not r.removed)
