"""Leadership transfer, check-quorum and pre-vote."""

from __future__ import annotations

import random

import pytest

from kvcluster.raft import ProposalDropped, Role

from .sim import Net, Options, Sim, random_fault, random_options, replay, seeds

# ---- leadership transfer -----------------------------------------------------------------------


def run_transfer(seed: int, lagging: bool) -> Sim:
    pick = random.Random(f"transfer-{seed}")
    opts = Options(
        voters=pick.choice((3, 5)),
        compact_prob=pick.choice((0.0, 0.2)),
        ready_delay=pick.choice((0, 4)),
        skew=False,
    )
    # Links keep their order here (as TCP does): over a reordering network, pipelined appends
    # overtaking each other are rejected and catch-up can take longer than the transfer may.
    sim = Sim(seed, opts, Net(fifo=True))
    sim.client_rate = 0.1
    ld = sim.steady_leader()
    target = sim.nodes[pick.choice(sorted(ld.r.conf.voters - {ld.id}))]
    if lagging:
        # The target misses a stretch of the log while the others keep committing.
        sim.cut.add((ld.id, target.id))
        for _ in range(pick.randint(5, 25)):
            sim.propose(ld)
        sim.run_ticks(pick.randint(3, 8))
        sim.heal()
        assert target.r.log.last_index() < ld.r.log.last_index(), "target should lag behind"
    sim.client_rate = 0.0
    old_term = ld.r.term
    attempts = 0

    def transferred() -> bool:
        nonlocal attempts
        if target.r.role == Role.LEADER:
            return True
        if ld.r.role == Role.LEADER and ld.r.transferee == 0:
            # Not started yet, or abandoned after an election timeout because the target
            # could not catch up in time (as an operator's tool would, try again).
            attempts += 1
            ld.r.transfer_leadership(target.id)
            sim.checker.after_call(ld)
            sim.dirty.add(ld.id)
            with pytest.raises(ProposalDropped):
                ld.r.propose(b"during transfer")
        return False

    # The leader sends TIMEOUT_NOW within its election timeout (or abandons the transfer);
    # the target's election then takes about a round trip.
    took = sim.run_until(transferred, 3 * (opts.election_tick + 3), "transfer target becomes leader")
    assert attempts <= (1 if not lagging else 3), attempts
    assert target.r.term == old_term + 1, "a transfer is a single election at the next term"
    assert sim.propose(target) is not None
    sim.event("transfer took", took)
    sim.finish()
    assert ld.r.role == Role.FOLLOWER or sim.leader() is not ld
    return sim


@pytest.mark.parametrize("seed", seeds(60, salt=5))
def test_transfer_to_up_to_date_follower(seed: int) -> None:
    with replay(seed, "test_transfer_to_up_to_date_follower"):
        run_transfer(seed, lagging=False)


@pytest.mark.parametrize("seed", seeds(60, salt=6))
def test_transfer_to_lagging_follower(seed: int) -> None:
    with replay(seed, "test_transfer_to_lagging_follower"):
        run_transfer(seed, lagging=True)


def run_transfer_abandoned(seed: int) -> Sim:
    """A transfer to an unreachable target is abandoned after an election timeout:
    the leader keeps its term and takes proposals again."""
    opts = Options(voters=3, skew=False)
    sim = Sim(seed, opts)
    sim.client_rate = 0.05
    ld = sim.steady_leader()
    target = next(n for n in sorted(ld.r.conf.voters) if n != ld.id)
    sim.isolate(target)
    term = ld.r.term
    ld.r.transfer_leadership(target)
    sim.dirty.add(ld.id)
    with pytest.raises(ProposalDropped):
        ld.r.propose(b"during transfer")
    sim.run_until(lambda: ld.r.transferee == 0, opts.election_tick + 1, "transfer abandoned")
    assert ld.r.role == Role.LEADER and ld.r.term == term
    assert sim.propose(ld) is not None
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(20, salt=7))
def test_transfer_abandoned(seed: int) -> None:
    with replay(seed, "test_transfer_abandoned"):
        run_transfer_abandoned(seed)


def run_transfers_under_faults(seed: int, epochs: int = 12) -> Sim:
    pick = random.Random(f"transfer-faults-{seed}")
    sim = Sim(seed, random_options(pick))
    sim.client_rate = 0.05
    sim.read_rate = 0.01
    sim.run_ticks(20)
    for _ in range(epochs):
        if sim.rng.random() < 0.6:
            sim.event("nemesis", random_fault(sim))
        ld = sim.leader()
        if ld is not None:
            target = sim.rng.choice(sorted(ld.r.conf.voters))
            ld.r.transfer_leadership(target)
            sim.event("transfer", ld.id, "->", target)
            sim.checker.after_call(ld)
            sim.dirty.add(ld.id)
            if target != ld.id:
                with pytest.raises(ProposalDropped):
                    ld.r.propose(b"during transfer")
        sim.run_ticks(sim.rng.randint(2, 20))
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(150, salt=8))
def test_transfers_under_faults(seed: int) -> None:
    with replay(seed, "test_transfers_under_faults"):
        run_transfers_under_faults(seed)


# ---- check quorum ----------------------------------------------------------------------------------


def run_check_quorum(seed: int) -> Sim:
    """An isolated leader steps down by itself: at most two election timeouts of its own
    ticks (the check runs once per election timeout and the window in which the
    isolation starts may still count earlier activity), while the rest elect a new one."""
    pick = random.Random(f"cq-{seed}")
    opts = Options(voters=pick.choice((3, 5)), check_quorum=True, skew=False, ready_delay=pick.choice((0, 4)))
    sim = Sim(seed, opts)
    sim.client_rate = 0.05
    ld = sim.steady_leader(ticks=pick.randint(5, 20))
    sim.isolate(ld.id)
    took = sim.run_until(
        lambda: ld.r.role != Role.LEADER, 2 * opts.election_tick + 1, "isolated leader steps down"
    )
    assert took <= 2 * opts.election_tick
    sim.run_until(
        lambda: (n := sim.leader()) is not None and n is not ld,
        6 * opts.election_tick,
        "majority elects a leader",
    )
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(60, salt=9))
def test_check_quorum_isolated_leader_steps_down(seed: int) -> None:
    with replay(seed, "test_check_quorum_isolated_leader_steps_down"):
        run_check_quorum(seed)


# ---- pre-vote ----------------------------------------------------------------------------------------


def run_pre_vote_rejoin(seed: int, pre_vote: bool = True) -> tuple[int, int]:
    """A follower cut off for many election timeouts rejoins. With pre-vote it never
    bumped its term, so the leader keeps its term; returns (term before, term after)."""
    pick = random.Random(f"prevote-{seed}")
    opts = Options(
        voters=pick.choice((3, 5)), pre_vote=pre_vote, check_quorum=True, ready_delay=pick.choice((0, 4))
    )
    sim = Sim(seed, opts)
    sim.client_rate = 0.05
    ld = sim.steady_leader()
    sim.client_rate = 0.0
    sim.run_ticks(5)
    x = sim.nodes[pick.choice(sorted(ld.r.conf.voters - {ld.id}))]
    term = ld.r.term
    assert x.r.term == term
    sim.isolate(x.id)
    sim.run_ticks(pick.randint(5, 10) * opts.election_tick)
    if pre_vote:
        assert x.r.term == term, "pre-vote must not bump the term of a cut-off node"
    sim.heal()
    sim.run_ticks(4 * opts.election_tick)
    after = ld.r.term
    if pre_vote:
        assert ld.r.role == Role.LEADER and after == term, "the rejoining node disrupted the leader"
        assert x.r.leader == ld.id and x.r.term == term
    sim.finish()
    return term, after


@pytest.mark.parametrize("seed", seeds(50, salt=10))
def test_pre_vote_rejoining_node_does_not_disrupt(seed: int) -> None:
    with replay(seed, "test_pre_vote_rejoining_node_does_not_disrupt"):
        run_pre_vote_rejoin(seed, pre_vote=True)


@pytest.mark.parametrize("seed", seeds(5, salt=11))
def test_without_pre_vote_rejoining_node_disrupts(seed: int) -> None:
    """Control: the scenario above is sensitive to pre-vote."""
    with replay(seed, "test_without_pre_vote_rejoining_node_disrupts"):
        before, after = run_pre_vote_rejoin(seed, pre_vote=False)
        assert after > before
