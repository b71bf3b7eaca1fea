"""Hypothesis drives the simulator one fault at a time; the checker's invariants are
verified after every step and liveness after healing at the end of each run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvcluster.raft import ConfChange, ConfChangeKind, RaftError, Role

from .sim import Options, Sim


class RaftCluster(RuleBasedStateMachine):
    sim: Sim

    @initialize(
        seed=st.integers(0, 2**31),
        voters=st.sampled_from((3, 5)),
        ready_delay=st.sampled_from((0, 6)),
        compact_prob=st.sampled_from((0.0, 0.2)),
    )
    def setup(self, seed: int, voters: int, ready_delay: int, compact_prob: float) -> None:
        self.sim = Sim(seed, Options(voters=voters, ready_delay=ready_delay, compact_prob=compact_prob))
        self.sim.run_ticks(15)

    def _ids(self) -> list[int]:
        return sorted(n.id for n in self.sim.nodes.values() if not n.decommissioned)

    @rule(count=st.integers(1, 5))
    def propose(self, count: int) -> None:
        for _ in range(count):
            self.sim.client_propose()
        self.sim.process()

    @rule()
    def read(self) -> None:
        self.sim.client_read()
        self.sim.process()

    @rule(ticks=st.integers(1, 12))
    def tick(self, ticks: int) -> None:
        self.sim.run_ticks(ticks)

    @rule(units=st.integers(1, 5))
    def deliver(self, units: int) -> None:
        self.sim.run(units)

    @precondition(lambda self: bool(self.sim.queue))
    @rule(pos=st.integers(0, 1000))
    def drop(self, pos: int) -> None:
        self.sim.drop_queued(pos)

    @precondition(lambda self: bool(self.sim.queue))
    @rule(pos=st.integers(0, 1000), later=st.integers(0, 40))
    def duplicate(self, pos: int, later: int) -> None:
        q = self.sim.queue
        msgs = [ev for ev in q if ev[2][0] == "msg"]
        if msgs:
            at, _, ev = msgs[pos % len(msgs)]
            self.sim._push(at + later, (*ev[:-1], False))

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        ids = self._ids()
        side = data.draw(st.lists(st.sampled_from(ids), unique=True, min_size=1, max_size=len(ids) - 1))
        self.sim.heal()
        self.sim.partition(side, [i for i in ids if i not in side])

    @rule(data=st.data())
    def cut_one_way(self, data: st.DataObject) -> None:
        a, b = data.draw(st.lists(st.sampled_from(self._ids()), unique=True, min_size=2, max_size=2))
        self.sim.cut.add((a, b))

    @rule()
    def heal(self) -> None:
        self.sim.heal()

    @precondition(lambda self: bool(self.sim.alive()))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.sim.alive()))
        self.sim.crash(node.id)

    @precondition(lambda self: any(not n.alive and not n.decommissioned for n in self.sim.nodes.values()))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        down = [n.id for n in self.sim.nodes.values() if not n.alive and not n.decommissioned]
        self.sim.restart(data.draw(st.sampled_from(down)))
        self.sim.process()

    @rule()
    def add_learner(self) -> None:
        ld = self.sim.leader()
        if ld is not None and len(ld.r.conf.members) < 7:
            node = self.sim.add_node()
            self.sim.propose_conf_change(ld, ConfChange(ConfChangeKind.ADD_LEARNER, node.id))
            self.sim.process()

    @rule()
    def promote(self) -> None:
        ld = self.sim.leader()
        if ld is not None and ld.r.conf.learners:
            node = min(ld.r.conf.learners)
            self.sim.propose_conf_change(ld, ConfChange(ConfChangeKind.ADD_VOTER, node))
            self.sim.process()

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        ld = self.sim.leader()
        if ld is None:
            return
        others = sorted(ld.r.conf.members - {ld.id})
        if others and len(ld.r.conf.voters) > 2:
            victim = data.draw(st.sampled_from(others))
            self.sim.propose_conf_change(ld, ConfChange(ConfChangeKind.REMOVE, victim))
            self.sim.process()

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        ld = self.sim.leader()
        if ld is None:
            return
        target = data.draw(st.sampled_from(sorted(ld.r.conf.voters)))
        try:
            ld.r.transfer_leadership(target)
        except RaftError:
            return
        self.sim.dirty.add(ld.id)
        self.sim.process()

    @rule(data=st.data())
    def stale_no_replica_report(self, data: st.DataObject) -> None:
        ld = self.sim.leader()
        if ld is None or len(ld.r.progress) < 2:
            return
        ld.r.request_snapshot(data.draw(st.sampled_from(sorted(set(ld.r.progress) - {ld.id}))))
        self.sim.dirty.add(ld.id)
        self.sim.process()

    @invariant()
    def safety(self) -> None:
        if hasattr(self, "sim"):
            self.sim.checker.full_check()
            for node in self.sim.alive():
                if node.r.role == Role.LEADER:
                    assert node.r.log.committed <= node.r.log.last_index()

    def teardown(self) -> None:
        if hasattr(self, "sim"):
            self.sim.finish()


_examples = int(os.environ.get("RAFT_HYPOTHESIS_EXAMPLES", "100"))
RaftCluster.TestCase.settings = settings(
    max_examples=_examples,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRaftCluster = RaftCluster.TestCase
