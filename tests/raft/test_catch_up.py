"""Catching up: InstallSnapshot for a follower behind the compacted log, and the fast
back-off that lets a follower with a long divergent tail converge in a few round trips."""

from __future__ import annotations

import random

import pytest

from kvcluster.raft import Message, MessageType, Role

from .sim import Net, Options, Sim, SimNode, replay, seeds


def run_snapshot_catch_up(seed: int) -> Sim:
    """A follower cut off (or crashed) while the others commit and compact past its log
    gets an InstallSnapshot, installs it and carries on with appends."""
    pick = random.Random(f"snap-{seed}")
    crash = pick.random() < 0.5
    sim = Sim(
        seed,
        Options(
            voters=pick.choice((3, 5)),
            compact_prob=0.3,
            compact_keep=pick.choice((0, 5)),
            ready_delay=pick.choice((0, 4, 15)),
        ),
        Net(loss=pick.choice((0.0, 0.05)), dup=pick.choice((0.0, 0.05))),
    )
    sim.client_rate = 0.1
    ld = sim.steady_leader()
    lagger = sim.nodes[pick.choice(sorted(ld.r.conf.voters - {ld.id}))]
    if crash:
        sim.crash(lagger.id)
    else:
        sim.isolate(lagger.id)
    sim.run_ticks(pick.randint(15, 40))
    for node in sim.alive():
        if node is not lagger:
            sim.compact(node)
    now_leader = sim.leader()
    assert now_leader is not None
    ld = now_leader
    behind = lagger.store.last_index()
    assert ld.r.log.first_index() > behind + 1, "the leader should have compacted past the lagger"
    snapshots: list[int] = []

    def spy(to: int, m: Message) -> None:
        if to == lagger.id and m.type == MessageType.SNAPSHOT and m.snapshot is not None:
            snapshots.append(m.snapshot.index)

    sim.on_message = spy
    sim.heal()
    if crash:
        sim.restart(lagger.id)
    sim.run_until(
        lambda: lagger.alive and lagger.r.log.applied >= ld.r.log.first_index(), 100, "lagger catches up"
    )
    assert snapshots and max(snapshots) > behind, "catch-up should have needed a snapshot"
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(60, salt=14))
def test_snapshot_catch_up(seed: int) -> None:
    with replay(seed, "test_snapshot_catch_up"):
        run_snapshot_catch_up(seed)


def run_fast_back_off(seed: int) -> tuple[int, int]:
    """The old leader, cut off, appends a long tail nobody else has; the majority elects a
    new leader, commits a long stretch and (to start a probe at the end of its long log)
    hands leadership to another node. After healing, the old leader's divergent tail must
    be found in a few rejected appends. Returns (rejections, divergent tail length)."""
    pick = random.Random(f"backoff-{seed}")
    opts = Options(voters=pick.choice((3, 5)), max_message_bytes=pick.choice((300, 1 << 20)))
    sim = Sim(seed, opts)
    sim.client_rate = 0.1
    old = sim.steady_leader()
    sim.client_rate = 0.0
    sim.run_ticks(3)
    sim.isolate(old.id)
    tail = pick.randint(60, 150)
    for _ in range(tail):
        assert sim.propose(old) is not None
    sim.process()

    def other_leader() -> SimNode | None:
        ld = sim.leader()
        return ld if ld is not None and ld is not old else None

    sim.run_until(lambda: other_leader() is not None, 100, "majority elects a leader")
    mid = other_leader()
    assert mid is not None
    for _ in range(pick.randint(60, 150)):
        sim.propose(mid)
    sim.run_until(lambda: mid.r.log.committed == mid.r.log.last_index(), 50, "majority commits")
    target = pick.choice(sorted(mid.r.conf.voters - {mid.id, old.id}))
    mid.r.transfer_leadership(target)
    sim.dirty.add(mid.id)
    sim.run_until(lambda: sim.nodes[target].r.role == Role.LEADER, 30, "transfer")
    ld = sim.nodes[target]
    sim.run_until(
        lambda: old.r.role != Role.LEADER, 2 * opts.election_tick, "check-quorum deposes the old leader"
    )
    assert old.r.log.last_index() > ld.r.log.first_index()
    rejects = 0

    def spy(to: int, m: Message) -> None:
        nonlocal rejects
        if m.sender == old.id and m.type == MessageType.APPEND_RESPONSE and m.reject:
            rejects += 1

    sim.on_message = spy
    # A fixed delay keeps each link FIFO: with reordering, pipelined appends overtaking
    # one another are rejected too, which is not what this test measures.
    sim.net = Net(min_delay=5, max_delay=5)
    sim.heal()
    sim.run_until(
        lambda: old.r.log.last_term() == ld.r.term and old.r.log.committed == ld.r.log.committed,
        60,
        "old leader converges",
    )
    sim.on_message = None
    sim.finish()
    return rejects, tail


@pytest.mark.parametrize("seed", seeds(60, salt=15))
def test_fast_back_off(seed: int) -> None:
    with replay(seed, "test_fast_back_off"):
        rejects, tail = run_fast_back_off(seed)
        assert rejects <= 2, f"{rejects} rejected appends to skip a divergent tail of {tail} entries"
