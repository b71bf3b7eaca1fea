"""The Raft state machine of one replica, with no I/O of its own.

The runtime feeds it messages (``step``), clock ticks (``tick``) and client
requests (``propose``, ``read_index``, ...), then carries out what ``ready``
hands back and acknowledges with ``advance``. Because nothing in here touches
a socket, a file or a clock, a whole cluster of these can be driven
deterministically by the simulation tests, one seed at a time.

Design choices, argued here once:

* **Pre-vote and check-quorum** (Raft thesis §9.6, §6.2). A node that was cut
  off cannot bump the term and depose a healthy leader when it comes back,
  and a leader that loses its quorum steps down after one election timeout,
  so clients are not left waiting on it. Followers that heard from a leader
  within the election timeout ignore vote requests (the "leader lease" of
  §4.2.3), except those carrying ``transfer``.
* **One-server membership changes taking effect on apply**, as etcd does.
  Any majority of C and of C±1 server intersect, so two leaders cannot be
  elected by the old and the new configuration at once. The known hazard of
  this scheme with leader changes (Ongaro, raft-dev 2015) is closed by the
  same rule etcd uses: a leader proposes no change until an entry of its own
  term is applied (``pending_conf_index`` starts at its first entry) and only
  one change is in flight at a time. Joint consensus would let us swap a
  replica in one step, but our planner always adds before it removes, so the
  one-at-a-time scheme costs nothing and is far simpler to get right.
* **Learners** receive the log and snapshots but neither vote nor count for
  commit, so a new replica can catch up without weakening the quorum.
* **ReadIndex** for linearizable reads without a log write (thesis §6.4):
  the leader records its commit index, confirms it is still leader with a
  heartbeat round acknowledged by a quorum, and the read is served once the
  state machine has applied that index. No clock assumption is needed.
* **Leadership transfer** (thesis §3.10): the leader stops taking proposals,
  brings the target up to date and tells it to campaign at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .log import RaftLog
from .progress import Progress, ProgressState
from .types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
)

_VOTE_RESPONSE = {
    MessageType.VOTE: MessageType.VOTE_RESPONSE,
    MessageType.PRE_VOTE: MessageType.PRE_VOTE_RESPONSE,
}


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10
    """Ticks without hearing from a leader before a follower campaigns (randomised up to twice this)."""
    heartbeat_tick: int = 1
    max_message_bytes: int = 1 << 20
    max_inflight: int = 256
    max_apply_bytes: int = 8 << 20
    check_quorum: bool = True
    pre_vote: bool = True


@dataclass(slots=True)
class _ReadRequest:
    index: int
    context: bytes
    acks: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    leader: int
    role: Role
    commit: int
    applied: int
    last_index: int
    first_index: int
    conf: ConfState
    progress: dict[int, tuple[int, int, str]]
    """Only on a leader: node -> (match, next, state)."""
    transferee: int


class RaftNode:
    def __init__(
        self,
        config: Config,
        rng: random.Random,
        conf: ConfState,
        *,
        hard_state: HardState | None = None,
        log: RaftLog | None = None,
        applied: int | None = None,
    ) -> None:
        hard_state = hard_state or HardState()
        self.id = config.id
        self.cfg = config
        self.rng = rng
        self.log = log if log is not None else RaftLog()
        self.log.committed = max(self.log.committed, hard_state.commit)
        if applied is not None:
            self.log.applied = self.log.applying = max(applied, self.log.snap_index)
        self.conf = conf
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.leader = 0
        self.role = Role.FOLLOWER
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.transferee = 0
        self.pending_conf_index = 0
        self.reads: list[_ReadRequest] = []
        self.reads_waiting_for_commit: list[bytes] = []
        self.read_states: list[ReadState] = []
        self.msgs: list[Message] = []
        self.broadcast_pending = False
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft = SoftState(0, Role.FOLLOWER)
        self._become_follower(self.term, 0)

    # ---- public API ------------------------------------------------------------------------

    @property
    def promotable(self) -> bool:
        return self.id in self.conf.voters

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (used by tests and by a single-node bootstrap)."""
        if self.promotable and self.role != Role.LEADER:
            self._campaign(pre=self.cfg.pre_vote, transfer=False)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; returns (term, index) by which its outcome is recognised at apply."""
        return self._propose(Entry(0, 0, EntryKind.NORMAL, data))

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped("a membership change is already in progress")
        if cc.kind == ConfChangeKind.ADD_VOTER and cc.node in self.conf.voters:
            raise ProposalDropped(f"node {cc.node} is already a voter")
        if cc.kind == ConfChangeKind.ADD_LEARNER and cc.node in self.conf.members:
            raise ProposalDropped(f"node {cc.node} is already a member")
        if cc.kind == ConfChangeKind.REMOVE:
            if cc.node not in self.conf.members:
                raise ProposalDropped(f"node {cc.node} is not a member")
            if cc.node == self.id:
                raise ProposalDropped("transfer leadership away before removing the leader")
            if cc.node in self.conf.voters and len(self.conf.voters) == 1:
                raise ProposalDropped("cannot remove the last voter")
        term, index = self._propose(Entry(0, 0, EntryKind.CONF_CHANGE, cc.encode()))
        self.pending_conf_index = index
        return term, index

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Called by the runtime when a committed conf-change entry is applied."""
        if self.log.pending_snapshot is not None:
            # The entry came in a Ready handed out before this node restored a snapshot
            # (messages may be stepped while the runtime writes); the membership already is
            # the snapshot's, which includes this change. Applying it again would corrupt it.
            return self.conf
        changed = self.conf.changed(cc)
        if changed != self.conf:
            self._set_conf(changed)
        return self.conf

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a ReadState with this context comes back in a Ready."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.conf.voters == {self.id}:
            self.read_states.append(ReadState(self.log.committed, context))
        elif not self._committed_in_current_term():
            self.reads_waiting_for_commit.append(context)
        else:
            self._start_read(context)

    def transfer_leadership(self, target: int) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if target not in self.conf.voters:
            raise RaftError(f"node {target} is not a voter")
        if self.transferee == target:
            return
        self.transferee = target
        self.election_elapsed = 0  # the transfer is abandoned after one election timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(Message(MessageType.TIMEOUT_NOW, target, self.id, self.term))
        else:
            self._send_append(target)

    def report_unreachable(self, node: int) -> None:
        pr = self.progress.get(node)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: int, success: bool) -> None:
        pr = self.progress.get(node)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not success:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's response (or a heartbeat) before probing again.
        pr.probe_sent = True

    def request_snapshot(self, node: int) -> None:
        """The follower told the runtime it has no replica of this group at all.

        Appends cannot help a replica that does not exist, so the leader sends a
        snapshot at once (from which the follower creates the replica) instead
        of probing back through the whole log.
        """
        pr = self.progress.get(node)
        if self.role != Role.LEADER or pr is None or node == self.id or pr.state == ProgressState.SNAPSHOT:
            return
        pr.recent_active = True
        self._send_snapshot(node, pr)

    def compact(self, index: int, term: int) -> None:
        self.log.compact(index, term)

    def status(self) -> Status:
        progress = {}
        if self.role == Role.LEADER:
            progress = {n: (p.match, p.next, p.state.name.lower()) for n, p in self.progress.items()}
        return Status(
            id=self.id,
            term=self.term,
            vote=self.vote,
            leader=self.leader,
            role=self.role,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            first_index=self.log.first_index(),
            conf=self.conf,
            progress=progress,
            transferee=self.transferee,
        )

    # ---- Ready handshake ----------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self.broadcast_pending
            or self.read_states
            or self.log.stable < self.log.last_index()
            or self.log.pending_snapshot is not None
            or bool(self.log.next_committed(1))
            or self._hard_state() != self._prev_hard
            or self._soft_state() != self._prev_soft
        )

    def ready(self) -> Ready:
        if self.broadcast_pending:
            self.broadcast_pending = False
            self._broadcast_append()
        rd = Ready()
        soft = self._soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = self._hard_state()
        if hard != self._prev_hard:
            rd.hard_state = hard
        rd.entries = list(self.log.unstable_entries())
        rd.snapshot = self.log.pending_snapshot
        rd.committed_entries = self.log.next_committed(self.cfg.max_apply_bytes)
        if rd.committed_entries:
            self.log.applying = rd.committed_entries[-1].index
        rd.messages, self.msgs = self.msgs, []
        rd.read_states, self.read_states = self.read_states, []
        return rd

    def advance(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            self.log.snapshot_persisted(rd.snapshot)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            self._self_persisted()
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
            if (
                self.role == Role.LEADER
                and self.reads_waiting_for_commit
                and self._committed_in_current_term()
            ):
                waiting, self.reads_waiting_for_commit = self.reads_waiting_for_commit, []
                for ctx in waiting:
                    self.read_index(ctx)

    # ---- message handling ----------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader != 0
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and not m.transfer:
                    return
            if m.type == MessageType.PRE_VOTE or (m.type == MessageType.PRE_VOTE_RESPONSE and not m.reject):
                pass  # pre-votes never change the term
            elif m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
                self._become_follower(m.term, m.sender)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self.term:
            if m.type in (MessageType.APPEND, MessageType.HEARTBEAT):
                # A stale leader cut off by a partition learns the new term and steps down.
                self._send(Message(MessageType.APPEND_RESPONSE, m.sender, self.id, self.term))
            elif m.type == MessageType.PRE_VOTE:
                self._send(Message(MessageType.PRE_VOTE_RESPONSE, m.sender, self.id, self.term, reject=True))
            return

        if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.sender
            or (self.vote == 0 and self.leader == 0)
            or (m.type == MessageType.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(_VOTE_RESPONSE[m.type], m.sender, self.id, m.term))
            if m.type == MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = m.sender
        else:
            self._send(Message(_VOTE_RESPONSE[m.type], m.sender, self.id, self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        if m.type == MessageType.APPEND:
            self.election_elapsed = 0
            self.leader = m.sender
            self._handle_append(m)
        elif m.type == MessageType.HEARTBEAT:
            self.election_elapsed = 0
            self.leader = m.sender
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(
                Message(MessageType.HEARTBEAT_RESPONSE, m.sender, self.id, self.term, context=m.context)
            )
        elif m.type == MessageType.SNAPSHOT:
            self.election_elapsed = 0
            self.leader = m.sender
            self._handle_snapshot(m)
        elif m.type == MessageType.TIMEOUT_NOW and self.promotable:
            self._campaign(pre=False, transfer=True)

    def _step_candidate(self, m: Message) -> None:
        expected = (
            MessageType.PRE_VOTE_RESPONSE if self.role == Role.PRE_CANDIDATE else MessageType.VOTE_RESPONSE
        )
        if m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self._become_follower(self.term, m.sender)
            self._step_follower(m)
        elif m.type == expected:
            self.votes.setdefault(m.sender, not m.reject)
            granted = sum(1 for n, v in self.votes.items() if v and n in self.conf.voters)
            rejected = sum(1 for n, v in self.votes.items() if not v and n in self.conf.voters)
            quorum = len(self.conf.voters) // 2 + 1
            if granted >= quorum:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif rejected >= quorum:
                self._become_follower(self.term, 0)

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        if m.type == MessageType.APPEND_RESPONSE:
            pr.recent_active = True
            if m.reject:
                probe = m.reject_hint
                if m.log_term > 0:
                    probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decrease_to(m.index, probe):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.sender)
                return
            was_paused = pr.is_paused()
            if not pr.maybe_update(m.index):
                return
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
            elif pr.state == ProgressState.REPLICATE:
                pr.free_up_to(m.index)
            # Followers learn the new commit index from the next append or heartbeat; a round of
            # empty appends just to tell them would double the messages of a lightly loaded leader.
            self._maybe_commit()
            if was_paused:
                self._send_append(m.sender)
            while self._send_append(m.sender, send_empty=False):
                pass
            if m.sender == self.transferee and pr.match == self.log.last_index():
                self._send(Message(MessageType.TIMEOUT_NOW, m.sender, self.id, self.term))
        elif m.type == MessageType.HEARTBEAT_RESPONSE:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
                pr.inflight.popleft()  # a lost append must not stall the pipeline forever
            if pr.match < self.log.last_index():
                self._send_append(m.sender)
            if m.context:
                self._ack_read(m.sender, m.context)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(
                Message(MessageType.APPEND_RESPONSE, m.sender, self.id, self.term, index=self.log.committed)
            )
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MessageType.APPEND_RESPONSE, m.sender, self.id, self.term, index=last_new))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._send(
            Message(
                MessageType.APPEND_RESPONSE,
                m.sender,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        if snap.index <= self.log.committed:
            pass
        elif self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)
        else:
            self.log.restore(snap)
            self._set_conf(snap.conf)
        # Acknowledge only what is known to match the leader: the commit index (the snapshot's
        # index after a restore). Entries past it may be a divergent tail of an older term,
        # which the leader would otherwise count as replicated (etcd answers the same).
        self._send(
            Message(MessageType.APPEND_RESPONSE, m.sender, self.id, self.term, index=self.log.committed)
        )

    # ---- roles ---------------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.leader = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)
        self.votes = {}
        self.transferee = 0
        self.reads = []
        self.reads_waiting_for_commit = []
        self.broadcast_pending = False
        last = self.log.last_index()
        self.progress = {
            n: Progress(last + 1, self.cfg.max_inflight, is_learner=n in self.conf.learners)
            for n in self.conf.members
        }
        if self.id in self.progress:
            # Only what is on disk counts towards a commit (see ``advance``).
            self.progress[self.id].match = min(last, self.log.stable)

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        for pr in self.progress.values():
            pr.recent_active = True
        # An empty entry of the new term lets the leader learn what is committed; until it is
        # applied no membership change is proposed (see the module docstring).
        self._append(Entry(self.term, 0))
        self.pending_conf_index = self.log.last_index()
        self._broadcast_append()

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._reset(self.term)
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
            kind = MessageType.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            term = self.term
            kind = MessageType.VOTE
        self.votes = {self.id: True}
        if len(self.conf.voters) == 1:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        for n in sorted(self.conf.voters):
            if n != self.id:
                self._send(
                    Message(
                        kind,
                        n,
                        self.id,
                        term,
                        index=self.log.last_index(),
                        log_term=self.log.last_term(),
                        transfer=transfer,
                    )
                )

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._campaign(pre=self.cfg.pre_vote, transfer=False)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = sum(
                    1
                    for n, p in self.progress.items()
                    if n in self.conf.voters and (n == self.id or p.recent_active)
                )
                if active < len(self.conf.voters) // 2 + 1:
                    self._become_follower(self.term, 0)
                    return
                for n, p in self.progress.items():
                    p.recent_active = n == self.id
            self.transferee = 0
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.reads[-1].context if self.reads else b"")

    # ---- replication -----------------------------------------------------------------------------

    def _propose(self, entry: Entry) -> tuple[int, int]:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.transferee:
            raise ProposalDropped("leadership transfer in progress")
        if self.id not in self.conf.voters:
            raise ProposalDropped("this node is no longer a voter")
        self._append(entry)
        self.broadcast_pending = True
        return self.term, self.log.last_index()

    def _append(self, entry: Entry) -> None:
        entry.term = self.term
        entry.index = self.log.last_index() + 1
        self.log.append([entry])

    def _self_persisted(self) -> None:
        """The leader's own acknowledgement: its entries count once they are on disk, not before.

        So the runtime may send a leader's appends before its own write finishes
        (Raft thesis §10.2.1, etcd's async storage writes): the disk writes of
        leader and followers overlap, and an entry is still only committed when
        a majority holds it durably.
        """
        pr = self.progress.get(self.id) if self.role == Role.LEADER else None
        if pr is not None and pr.maybe_update(self.log.stable):
            self._maybe_commit()

    def _maybe_commit(self) -> bool:
        matches = sorted((p.match for n, p in self.progress.items() if n in self.conf.voters), reverse=True)
        if not matches:
            return False
        committed = matches[len(self.conf.voters) // 2]
        if self.log.maybe_commit(committed, self.term):
            if self.reads_waiting_for_commit and self._committed_in_current_term():
                waiting, self.reads_waiting_for_commit = self.reads_waiting_for_commit, []
                for ctx in waiting:
                    self.read_index(ctx)
            return True
        return False

    def _broadcast_append(self) -> None:
        for n in sorted(self.progress):
            if n != self.id:
                self._send_append(n)

    def _send_append(self, to: int, send_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        entries = self.log.slice(pr.next, self.log.last_index() + 1, self.cfg.max_message_bytes)
        if prev_term is None or entries is None:
            if not pr.recent_active:
                return False
            self._send_snapshot(to, pr)
            return True
        if not entries and not send_empty:
            return False
        self._send(
            Message(
                MessageType.APPEND,
                to,
                self.id,
                self.term,
                index=prev_index,
                log_term=prev_term,
                entries=entries,
                commit=self.log.committed,
            )
        )
        pr.sent(entries[-1].index if entries else prev_index)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        # The runtime fills in the data and may raise the index to what it has applied by then.
        snap = SnapshotMeta(self.log.applied, self.log.term(self.log.applied) or 0, self.conf)
        self._send(Message(MessageType.SNAPSHOT, to, self.id, self.term, snapshot=snap))
        pr.become_snapshot(snap.index)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for n in sorted(self.progress):
            if n != self.id:
                commit = min(self.progress[n].match, self.log.committed)
                self._send(
                    Message(MessageType.HEARTBEAT, n, self.id, self.term, commit=commit, context=context)
                )

    # ---- reads ------------------------------------------------------------------------------------

    def _committed_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _start_read(self, context: bytes) -> None:
        self.reads.append(_ReadRequest(self.log.committed, context, {self.id}))
        self._broadcast_heartbeat(context)

    def _ack_read(self, sender: int, context: bytes) -> None:
        for pos, req in enumerate(self.reads):
            if req.context != context:
                continue
            if sender in self.conf.voters:
                req.acks.add(sender)
            if len(req.acks & self.conf.voters) >= len(self.conf.voters) // 2 + 1:
                # A quorum confirmed leadership after every earlier request was registered too.
                for done in self.reads[: pos + 1]:
                    self.read_states.append(ReadState(done.index, done.context))
                del self.reads[: pos + 1]
            return

    # ---- helpers ----------------------------------------------------------------------------------

    def _set_conf(self, conf: ConfState) -> None:
        self.conf = conf
        last = self.log.last_index()
        for n in conf.members:
            if n not in self.progress:
                pr = Progress(last + 1, self.cfg.max_inflight)
                pr.recent_active = True
                self.progress[n] = pr
            self.progress[n].is_learner = n in conf.learners
        for n in list(self.progress):
            if n not in conf.members:
                del self.progress[n]
        if self.transferee and self.transferee not in conf.voters:
            self.transferee = 0
        if self.role == Role.LEADER:
            if self.id not in conf.voters:
                self._become_follower(self.term, 0)
            elif self._maybe_commit():
                self._broadcast_append()
        elif self.role != Role.FOLLOWER and self.id not in conf.voters:
            self._become_follower(self.term, 0)

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role)
