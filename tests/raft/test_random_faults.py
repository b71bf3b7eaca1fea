"""Random faults: loss, duplication, reordering, partitions (symmetric, isolated leader,
bridge, asymmetric), crashes at any point of the Ready cycle, compaction, with clients
proposing and reading throughout. Safety is checked all along; liveness after healing."""

from __future__ import annotations

import random

import pytest

from .sim import Sim, random_fault, random_options, replay, seeds


def run_random_faults(seed: int, epochs: int = 20) -> Sim:
    opts = random_options(random.Random(f"opts-{seed}"))
    sim = Sim(seed, opts)
    sim.client_rate = 0.05
    sim.read_rate = 0.01
    sim.run_ticks(20)
    for _ in range(epochs):
        sim.event("nemesis", random_fault(sim))
        sim.run_ticks(sim.rng.randint(2, 25))
    sim.finish()
    return sim


@pytest.mark.parametrize("seed", seeds(500, salt=1))
def test_random_faults(seed: int) -> None:
    with replay(seed, "test_random_faults"):
        run_random_faults(seed)
