"""Membership changes, one server at a time, under faults and in directed scenarios."""

from __future__ import annotations

import random

import pytest

from kvcluster.raft import ConfChange, ConfChangeKind, ProposalDropped, Role

from .sim import (
    Net,
    Options,
    Sim,
    membership_step,
    random_fault,
    random_options,
    replay,
    retire_removed,
    seeds,
)


def run_membership_under_faults(seed: int, epochs: int = 20) -> Sim:
    pick = random.Random(f"membership-{seed}")
    opts = random_options(pick, voters=pick.choice((3, 4, 5)))
    min_voters = pick.choice((1, 3, 3))
    sim = Sim(seed, opts)
    sim.client_rate = 0.05
    sim.read_rate = 0.01
    sim.run_ticks(20)
    for _ in range(epochs):
        if sim.rng.random() < 0.5:
            sim.event("nemesis", random_fault(sim))
        for _ in range(sim.rng.randint(1, 3)):
            sim.event("membership", membership_step(sim, min_voters=min_voters))
            sim.run_ticks(sim.rng.randint(1, 10))
        retire_removed(sim)
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(200, salt=2))
def test_membership_under_faults(seed: int) -> None:
    with replay(seed, "test_membership_under_faults"):
        run_membership_under_faults(seed)


def run_add_catch_up_promote_remove(seed: int) -> Sim:
    """Add a learner, let it catch up (by snapshot: a new replica has no log), promote it,
    then remove an old voter; under mild loss and duplication."""
    sim = Sim(seed, Options(voters=3, compact_prob=0.2), Net(loss=0.05, dup=0.05))
    sim.client_rate = 0.1
    sim.run_until(lambda: sim.leader() is not None, 100, "first leader")
    sim.run_ticks(10)
    ld = sim.leader()
    assert ld is not None
    new = sim.add_node()
    assert sim.propose_conf_change(ld, ConfChange(ConfChangeKind.ADD_LEARNER, new.id)) is not None
    # One change at a time: a second one is refused while the first is not applied.
    with pytest.raises(ProposalDropped):
        ld.r.propose_conf_change(ConfChange(ConfChangeKind.REMOVE, 2 if ld.id != 2 else 3))

    def learner_caught_up() -> bool:
        lead = sim.leader()
        return (
            lead is not None
            and new.id in lead.r.conf.learners
            and new.alive
            and new.r.log.applied >= lead.r.log.committed - 2
        )

    sim.run_until(learner_caught_up, 200, "learner catches up")
    assert new.r.role == Role.FOLLOWER and not new.r.promotable
    assert sim.stats["snapshots_installed"] >= 1, "a brand-new replica must be seeded by a snapshot"

    def promote() -> bool:
        lead = sim.leader()
        if lead is None:
            return False
        if new.id in lead.r.conf.voters:
            return True
        sim.propose_conf_change(lead, ConfChange(ConfChangeKind.ADD_VOTER, new.id))
        return False

    sim.run_until(promote, 200, "learner promoted")
    sim.run_until(lambda: new.r.promotable, 100, "new voter applies its promotion")

    def remove_old() -> bool:
        lead = sim.leader()
        if lead is None:
            return False
        victim = min(n for n in lead.r.conf.voters if n not in (lead.id, new.id))
        if len(lead.r.conf.voters) == 3:
            return True
        sim.propose_conf_change(lead, ConfChange(ConfChangeKind.REMOVE, victim))
        return False

    sim.run_until(remove_old, 200, "old voter removed")
    sim.finish()
    lead = sim.leader()
    assert lead is not None and new.id in lead.r.conf.voters and len(lead.r.conf.voters) == 3
    return sim


@pytest.mark.parametrize("seed", seeds(40, salt=3))
def test_add_catch_up_promote_remove(seed: int) -> None:
    with replay(seed, "test_add_catch_up_promote_remove"):
        run_add_catch_up_promote_remove(seed)


def run_removed_node_stops_counting(seed: int) -> Sim:
    """Voters {1,2,3}; remove a follower R. With R still running and the other follower
    down, the leader alone is not a majority of {leader, other}: nothing may commit."""
    sim = Sim(seed, Options(voters=3, check_quorum=False))
    sim.client_rate = 0.05
    sim.run_until(lambda: sim.leader() is not None, 100, "first leader")
    sim.run_ticks(10)
    ld = sim.leader()
    assert ld is not None
    removed, other = (n for n in (1, 2, 3) if n != ld.id)

    def removal_applied() -> bool:
        if removed not in ld.r.conf.members:
            return True
        sim.propose_conf_change(ld, ConfChange(ConfChangeKind.REMOVE, removed))
        return False

    sim.run_until(removal_applied, 100, "removal applied on the leader")
    assert ld.r.role == Role.LEADER
    assert removed not in ld.r.progress
    sim.client_rate = 0.0
    sim.run_ticks(5)
    sim.crash(other)
    commit = ld.r.log.committed
    placed = sim.propose(ld)
    assert placed is not None
    sim.run_ticks(50)
    assert ld.r.log.committed == commit, "a removed node's acknowledgements must not count"
    sim.restart(other)
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(20, salt=4))
def test_removed_node_stops_counting(seed: int) -> None:
    with replay(seed, "test_removed_node_stops_counting"):
        run_removed_node_stops_counting(seed)
