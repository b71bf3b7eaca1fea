"""One partition replica at run time: its Raft core and who is waiting on it.

Proposals wait on the log index they were given: when that index is applied
with the proposal's term the outcome is theirs; with another term, a
different entry won the index and the proposal definitely did not happen.
Reads wait first for their ReadIndex round, then for the state machine to
reach the index it returned.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from kvcluster.raft import Message, RaftNode, Role, SnapshotMeta
from kvcluster.storage import AppliedState, Outcome

from .errors import NotLeaderSignal

_read_ids = itertools.count(1)


class ProposalLost(Exception):
    """Another entry was committed at the proposal's index: it did not take effect."""


class ReplicaGone(Exception):
    """The replica was removed or merged away while the request waited."""


@dataclass(eq=False)
class Replica:
    core: RaftNode
    state: AppliedState
    proposals: dict[int, tuple[int, asyncio.Future[Outcome]]] = field(default_factory=dict)
    """index -> (term, future)."""
    open_read: bytes | None = None
    """Context of the ReadIndex round that new reads may still join (until the next loop turn)."""
    reads: dict[bytes, list[asyncio.Future[int]]] = field(default_factory=dict)
    applied_waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    incoming_snapshot: tuple[SnapshotMeta, bytes] | None = None
    removed: bool = False
    persisted_vote: tuple[int, int] = (-1, -1)
    """(term, vote) as last handed to storage; a change forces an fsync."""
    snapshot_targets: set[int] = field(default_factory=set)

    @property
    def partition(self) -> int:
        return self.state.partition

    @property
    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER

    def track_proposal(self, term: int, index: int) -> asyncio.Future[Outcome]:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.proposals[index] = (term, fut)
        return fut

    def join_read(self) -> asyncio.Future[int]:
        """Join the open ReadIndex round, or open one; raises NotLeaderSignal."""
        if not self.is_leader:
            raise NotLeaderSignal(self.core.leader)
        if self.open_read is None:
            ctx = next(_read_ids).to_bytes(8, "big")
            self.core.read_index(ctx)
            self.open_read = ctx
            self.reads[ctx] = []
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reads[self.open_read].append(fut)
        return fut

    def wait_applied(self, index: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.state.applied_index >= index:
            fut.set_result(None)
        else:
            self.applied_waiters.append((index, fut))
        return fut

    def settle_applied(self, term: int, index: int, outcome: Outcome) -> None:
        waiting = self.proposals.pop(index, None)
        if waiting is None:
            return
        want_term, fut = waiting
        if fut.done():
            return
        if want_term == term:
            fut.set_result(outcome)
        else:
            _fail(fut, ProposalLost(f"index {index} was taken by term {term}"))

    def settle_read(self, context: bytes, index: int) -> None:
        for fut in self.reads.pop(context, []):
            if not fut.done():
                fut.set_result(index)

    def wake_applied(self) -> None:
        applied = self.state.applied_index
        still: list[tuple[int, asyncio.Future[None]]] = []
        for index, fut in self.applied_waiters:
            if fut.done():
                continue
            if index <= applied:
                fut.set_result(None)
            else:
                still.append((index, fut))
        self.applied_waiters = still

    def lost_leadership(self) -> None:
        """Pending reads cannot be confirmed by a deposed leader; they are retried elsewhere."""
        self.open_read = None
        for futs in self.reads.values():
            for fut in futs:
                if not fut.done():
                    _fail(fut, NotLeaderSignal(self.core.leader))
        self.reads.clear()

    def fail_all(self, exc: Exception, proposals_exc: Exception | None = None) -> None:
        """Fail every waiter; proposals get ``proposals_exc`` (their outcome is unknown, not refused)."""
        self.lost_leadership()
        for _, fut in self.proposals.values():
            if not fut.done():
                _fail(fut, proposals_exc or exc)
        self.proposals.clear()
        for _, wfut in self.applied_waiters:
            if not wfut.done():
                _fail(wfut, exc)
        self.applied_waiters.clear()

    def needs_snapshot_for(self, messages: list[Message]) -> bool:
        return any(m.snapshot is not None for m in messages)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail a waiter whose caller may have stopped waiting (a request that timed out).

    Marking the exception as retrieved keeps asyncio from logging "Future exception was never
    retrieved" for those; a caller still awaiting it gets the exception all the same.
    """
    fut.set_exception(exc)
    fut.exception()
