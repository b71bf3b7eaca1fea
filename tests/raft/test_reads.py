"""ReadIndex linearizability.

The checker records, when a read is requested, the highest commit index known
anywhere in the cluster; the read state must not be below it. That covers the
deposed leader: once a newer leader committed something, a read the old one
registers afterwards can only be confirmed by a quorum that has not moved on,
which does not exist.
"""

from __future__ import annotations

import random

import pytest

from kvcluster.raft import Role

from .sim import Options, Sim, random_fault, random_options, replay, seeds


def run_deposed_leader_reads(seed: int) -> Sim:
    pick = random.Random(f"reads-{seed}")
    voters = pick.choice((3, 5))
    # Without check-quorum the deposed leader keeps believing it leads for as long as
    # the partition lasts, which is the hardest case for ReadIndex.
    opts = Options(voters=voters, check_quorum=pick.random() < 0.3, ready_delay=pick.choice((0, 4, 15)))
    sim = Sim(seed, opts)
    sim.client_rate = 0.1
    sim.read_rate = 0.05
    sim.run_until(lambda: sim.leader() is not None, 100, "first leader")
    sim.run_ticks(10)
    old = sim.leader()
    assert old is not None
    others = sorted(set(sim.nodes) - {old.id})
    pick.shuffle(others)
    minority = [old.id, *others[: voters // 2 - 1]]
    majority = [n for n in sim.nodes if n not in minority]
    sim.client_rate = 0.0
    sim.read_rate = 0.0
    sim.partition(minority, majority)
    old_commit = old.r.log.committed

    def new_leader_committed() -> bool:
        ld = sim.leader()
        if ld is None or ld is old or ld.r.term <= old.r.term:
            ld = next((sim.nodes[n] for n in majority if sim.nodes[n].r.role == Role.LEADER), None)
        if ld is None:
            return False
        if ld.r.log.committed <= old_commit + 1:
            sim.propose(ld)
            return False
        return True

    sim.run_until(new_leader_committed, 100, "new leader commits on the majority side")
    stale: list[bytes] = []
    for _ in range(10):
        if old.r.role == Role.LEADER:
            ctx = sim.read(old)
            if ctx is not None:
                stale.append(ctx)
        sim.run_ticks(2)
    served = [c for c in stale if c not in sim.checker.reads]
    assert not served, f"deposed leader {old.id} served reads {served}"
    if not opts.check_quorum:
        assert stale, "without check-quorum the deposed leader should still take read requests"
    sim.heal()
    sim.client_rate = 0.05
    sim.read_rate = 0.05
    sim.run_ticks(30)
    sim.finish()
    assert sim.checker.reads_served > 0
    return sim


@pytest.mark.parametrize("seed", seeds(60, salt=12))
def test_deposed_leader_never_serves_stale_read(seed: int) -> None:
    with replay(seed, "test_deposed_leader_never_serves_stale_read"):
        run_deposed_leader_reads(seed)


def run_reads_under_faults(seed: int, epochs: int = 12) -> Sim:
    pick = random.Random(f"reads-faults-{seed}")
    sim = Sim(seed, random_options(pick, check_quorum=pick.random() < 0.5))
    sim.client_rate = 0.08
    sim.read_rate = 0.08
    sim.run_ticks(20)
    for _ in range(epochs):
        sim.event("nemesis", random_fault(sim))
        sim.run_ticks(sim.rng.randint(2, 20))
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(150, salt=13))
def test_reads_under_faults(seed: int) -> None:
    with replay(seed, "test_reads_under_faults"):
        run_reads_under_faults(seed)
