"""The checker is not vacuous: plant a known bug in the core and the simulation must
report it within a few seeds (with the seed to replay)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kvcluster.raft import Message, MessageType, RaftLog, RaftNode, ReadState

from .sim import InvariantViolation, Sim
from .test_random_faults import run_random_faults
from .test_reads import run_deposed_leader_reads


def _first_violation(run: Callable[[int], object], tries: int) -> str:
    for seed in range(tries):
        try:
            run(seed)
        except InvariantViolation as exc:
            return str(exc)
    raise AssertionError(f"planted bug not detected in {tries} seeds")


def test_detects_votes_for_stale_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Voters ignoring the election restriction elect leaders that lack committed entries."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    msg = _first_violation(run_random_faults, 40)
    assert any(w in msg for w in ("leader completeness", "state machine safety", "committed", "log matching"))


def test_detects_double_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node granting every up-to-date candidate breaks election safety."""
    original = RaftNode._handle_vote_request

    def promiscuous(self: RaftNode, m: Message) -> None:
        if m.type == MessageType.VOTE and self.log.is_up_to_date(m.index, m.log_term):
            self.vote = m.sender
            self._send(Message(MessageType.VOTE_RESPONSE, m.sender, self.id, m.term))
        else:
            original(self, m)

    monkeypatch.setattr(RaftNode, "_handle_vote_request", promiscuous)
    msg = _first_violation(run_random_faults, 40)
    assert "vote" in msg or "election safety" in msg


def test_detects_reads_without_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader confirming reads on any single acknowledgement serves stale reads once deposed."""

    def any_ack(self: RaftNode, sender: int, context: bytes) -> None:
        for pos, req in enumerate(self.reads):
            if req.context == context:
                self.read_states.extend(ReadState(d.index, d.context) for d in self.reads[: pos + 1])
                del self.reads[: pos + 1]
                return

    monkeypatch.setattr(RaftNode, "_ack_read", any_ack)
    msg = _first_violation(run_deposed_leader_reads, 40)
    assert "linearizability" in msg or "deposed leader" in msg


def test_failure_message_names_the_seed() -> None:
    sim = Sim(7)
    with pytest.raises(InvariantViolation, match="seed 7"):
        sim.fail("planted")
